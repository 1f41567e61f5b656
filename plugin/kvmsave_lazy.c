/*
 * kvmsave_lazy.c: a lazy restore, whose guest runs as soon as its
 * devices are loaded while kvmsave-pagesrv serves its memory
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvmsave_lazy.h"
#include "kvmsave_event.h"
#include "kvmsave_imageindex.h"
#include "kvmsave_monitor.h"
#include "kvmsave_pagesrv.h"
#include "kvmsave_multifd.h"
#include "kvmsave_qmp.h"
#include "kvmsave_sparse.h"
#include "kvmsave_xml.h"
#include "vircommand.h"
#include "virerror.h"
#include "virevent.h"
#include "virfile.h"
#include "virlog.h"
#include "virtypedparam.h"
#include "viruuid.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.lazy");

#define KVMSAVE_LAZY_FDNAME "kvmsave-lazy"
/* QEMU answers its monitor at once while it waits for its state. */
#define KVMSAVE_LAZY_QMP_TIMEOUT_MS (30 * 1000)
/* How often (ms) this process looks whether a lazy restore it started
 * has its last page in. */
#define KVMSAVE_LAZY_WATCH_MS 200

struct _kvmsaveLazy {
    kvmsaveMultifd *dir;        /* QEMU's monitor and recovery sockets */
    char *qmpPath;
    char *recoverPath;
    char *statusPath;
    char *args[5];
};


bool
kvmsaveLazyPossible(kvmsaveImageReader *reader, const char *path)
{
    g_autofree unsigned char *buf = NULL;
    g_autoptr(kvmsavePageIndex) idx = NULL;
    size_t len;
    int rc;

    if (kvmsaveImageReaderMappedTable(reader))
        return true;
    /* Checked here, so that a damaged index does not start a QEMU. */
    if ((rc = kvmsaveImageIndexLoad(reader, path, &buf, &len, &idx)) > 0) {
        uint64_t devices = kvmsaveImageReaderTrailer(reader)->streamBytes -
            kvmsavePageIndexDevStart(idx);

        if (devices <= KVMSAVE_PAGESRV_DEVICE_MAX)
            return true;
        VIR_WARN("save image '%s' cannot be restored lazily: its devices' state and QEMU's description of them are %llu bytes, more than the %d a lazy restore loads at once; restoring it eagerly",
                 path, (unsigned long long) devices, KVMSAVE_PAGESRV_DEVICE_MAX);
        return false;
    }
    if (rc < 0) {
        VIR_WARN("save image '%s' cannot be restored lazily: %s; restoring it eagerly",
                 path, virGetLastErrorMessage());
        virResetLastError();
        return false;
    }
    VIR_WARN("save image '%s' cannot be restored lazily: it does not say where each page is (only sparse images, and images of one stream in chunks with a page index, of format 1.5, do); restoring it eagerly",
             path);
    return false;
}


/* The sysctl that lets an unprivileged process open userfaultfd with
 * the system call, the only way QEMU before 8.1 knows. */
#define KVMSAVE_LAZY_UFFD_SYSCTL "/proc/sys/vm/unprivileged_userfaultfd"
#define KVMSAVE_LAZY_UFFD_DEV_QEMU_MIN 8001000

int
kvmsaveLazyCheckHost(virConnectPtr inner)
{
    unsigned long version = kvmsaveSparseQemuVersion(inner);
    g_autofree char *value = NULL;

    if (version == 0 || version >= KVMSAVE_LAZY_UFFD_DEV_QEMU_MIN)
        return 0;
    /* A kernel without the sysctl lets everyone open userfaultfd. */
    if (virFileReadValueString(&value, KVMSAVE_LAZY_UFFD_SYSCTL) < 0) {
        virResetLastError();
        return 0;
    }
    if (STRNEQ(value, "0"))
        return 0;
    /* QEMU's own refusal would only say that postcopy is not supported. */
    virReportError(VIR_ERR_OPERATION_UNSUPPORTED,
                   _("a lazy restore needs userfaultfd, which QEMU %lu.%lu.%lu can only use with the sysctl vm.unprivileged_userfaultfd=1, and this host has 0: set it (sysctl -w vm.unprivileged_userfaultfd=1, and in /etc/sysctl.d/ to keep it), or restore with restore_mode 'eager'"),
                   version / 1000000, version / 1000 % 1000, version % 1000);
    return -1;
}


static char *
kvmsaveLazyStatusDir(kvmsaveConn *priv)
{
    return g_build_filename(priv->root, "run", "kvmsave", "lazy", NULL);
}


static char *
kvmsaveLazyStatusPath(kvmsaveConn *priv, const unsigned char *uuid)
{
    g_autofree char *dir = kvmsaveLazyStatusDir(priv);
    char uuidstr[VIR_UUID_STRING_BUFLEN];
    g_autofree char *name = NULL;

    virUUIDFormat(uuid, uuidstr);
    name = g_strdup_printf("%s.status", uuidstr);
    return g_build_filename(dir, name, NULL);
}


void
kvmsaveLazyFree(kvmsaveLazy *lz)
{
    size_t i;

    if (!lz)
        return;
    kvmsaveMultifdFree(lz->dir);
    g_free(lz->qmpPath);
    g_free(lz->recoverPath);
    g_free(lz->statusPath);
    for (i = 0; i < G_N_ELEMENTS(lz->args); i++)
        g_free(lz->args[i]);
    g_free(lz);
}


kvmsaveLazy *
kvmsaveLazyNew(kvmsaveConn *priv, const char *xml, const unsigned char *uuid,
               const char *dir)
{
    g_autoptr(kvmsaveLazy) lz = g_new0(kvmsaveLazy, 1);
    g_autofree char *statusDir = kvmsaveLazyStatusDir(priv);
    g_autofree char *sockdir = NULL;

    if (g_mkdir_with_parents(statusDir, 0700) < 0) {
        virReportSystemError(errno, _("cannot create directory '%s'"), statusDir);
        return NULL;
    }
    /* QEMU creates its monitor's socket, and later the one it recovers
     * on, in a directory of its user's that nobody else can reach. */
    if (!(lz->dir = kvmsaveMultifdNewIncoming(priv->inner, xml, dir)))
        return NULL;
    sockdir = g_path_get_dirname(kvmsaveMultifdPath(lz->dir));
    lz->qmpPath = g_build_filename(sockdir, "q", NULL);
    lz->recoverPath = g_build_filename(sockdir, "r", NULL);
    lz->statusPath = kvmsaveLazyStatusPath(priv, uuid);
    lz->args[0] = g_strdup("-chardev");
    lz->args[1] = g_strdup_printf(KVMSAVE_XML_LAZY_CHARDEV_PREFIX
                                  "path=%s,server=on,wait=off", lz->qmpPath);
    lz->args[2] = g_strdup("-mon");
    lz->args[3] = g_strdup(KVMSAVE_XML_LAZY_MON);
    return g_steal_pointer(&lz);
}


const char *const *
kvmsaveLazyQemuArgs(kvmsaveLazy *lz)
{
    return (const char *const *) lz->args;
}


/* QEMU takes pages on demand through userfaultfd, which it checks when
 * the capability is set: say what the host lacks. */
static int
kvmsaveLazyEnablePostcopy(virDomainPtr dom)
{
    g_autofree char *reason = NULL;

    if (kvmsaveMonitorSetCapability(dom, "postcopy-ram", true) == 0)
        return 0;
    reason = g_strdup(virGetLastErrorMessage());
    virReportError(VIR_ERR_OPERATION_UNSUPPORTED,
                   _("a lazy restore needs userfaultfd, which QEMU cannot use on this host (%s): let QEMU's user open /dev/userfaultfd, or set the sysctl vm.unprivileged_userfaultfd=1, or restore with restore_mode 'eager'"),
                   reason);
    return -1;
}


static const char *
kvmsaveLazyHelperPath(void)
{
    const char *path = getenv("KVMSAVE_PAGESRV");

    return path && *path ? path : PKGLIBEXECDIR "/kvmsave-pagesrv";
}


/* Start kvmsave-pagesrv, detached from the client: its stdin the image,
 * @sock its end of QEMU's migration, @qmpfd the monitor it recovers
 * through. Its messages go beside its status file. */
static int
kvmsaveLazySpawn(kvmsaveLazy *lz, kvmsaveImageReader *reader,
                 const char *path, int sock, int qmpfd)
{
    g_autofree char *self = kvmsaveImageReaderSelfPath(reader);
    g_autofree char *logPath = g_strdup_printf("%s.log", lz->statusPath);
    g_autofree char *sockArg = g_strdup_printf("%d", sock);
    g_autofree char *qmpArg = g_strdup_printf("%d", qmpfd);
    g_autoptr(virCommand) cmd = NULL;
    VIR_AUTOCLOSE imagefd = -1;
    VIR_AUTOCLOSE logfd = -1;

    if ((imagefd = open(self, O_RDONLY | O_CLOEXEC)) < 0) {
        virReportSystemError(errno, _("cannot open save image '%s'"), path);
        return -1;
    }
    if ((logfd = open(logPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
        virReportSystemError(errno, _("cannot create '%s'"), logPath);
        return -1;
    }
    unlink(lz->statusPath);
    cmd = virCommandNewArgList(kvmsaveLazyHelperPath(),
                               "--socket-fd", sockArg, "--qmp-fd", qmpArg,
                               "--recover-socket", lz->recoverPath,
                               "--status", lz->statusPath, path, NULL);
    virCommandPassFD(cmd, sock, 0);
    virCommandPassFD(cmd, qmpfd, 0);
    virCommandSetInputFD(cmd, imagefd);
    virCommandSetOutputFD(cmd, &logfd);
    virCommandSetErrorFD(cmd, &logfd);
    virCommandDaemonize(cmd);
    return virCommandRun(cmd, NULL);
}


/* The page server's last word: its state, and its error if it failed. */
static char *
kvmsaveLazyReadStatus(const char *path, unsigned long long *total,
                      unsigned long long *done, char **error)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    char state[16];

    if (!g_file_get_contents(path, &text, NULL, NULL))
        return NULL;
    lines = g_strsplit(text, "\n", 3);
    if (!lines[0] ||
        sscanf(lines[0], "%15s %llu %llu", state, done, total) != 3)
        return NULL;
    if (error)
        *error = lines[1] && *lines[1] ? g_strdup(lines[1]) : NULL;
    return g_strdup(state);
}


typedef struct {
    kvmsaveLazy *lz;
    kvmsaveJob *job;
    bool running;
} kvmsaveLazyWait;


/* QEMU takes the devices' state, then runs the migration in postcopy:
 * from then on, the guest can run. */
static bool
kvmsaveLazyPoll(const kvmsaveMigrationStatus *st, void *opaque)
{
    kvmsaveLazyWait *w = opaque;
    unsigned long long total = 0, done = 0;
    g_autofree char *state = NULL;

    if (STREQ_NULLABLE(st->status, "postcopy-active")) {
        w->running = true;
        return true;
    }
    state = kvmsaveLazyReadStatus(w->lz->statusPath, &total, &done, NULL);
    return STREQ_NULLABLE(state, "failed") || kvmsaveJobIsCancelled(w->job);
}


static int
kvmsaveLazyWaitRunning(kvmsaveLazy *lz, virDomainPtr dom, kvmsaveJob *job)
{
    kvmsaveLazyWait w = { .lz = lz, .job = job };
    unsigned long long total = 0, done = 0;
    g_autofree char *state = NULL;
    g_autofree char *failed = NULL;
    int rc;

    rc = kvmsaveMonitorWaitMigration(dom, _("restoring the guest's devices"),
                                     kvmsaveLazyPoll, &w);
    if (rc == 0 || w.running) {
        /* The guest may run: the restore cannot be undone now. */
        if (!kvmsaveJobCommit(job)) {
            kvmsaveJobReportCancelled(job);
            return -1;
        }
        return 0;
    }
    /* When QEMU lost its source, the page server's error says why. */
    state = kvmsaveLazyReadStatus(lz->statusPath, &total, &done, &failed);
    if (STREQ_NULLABLE(state, "failed") && failed)
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("the page server of the restore failed: %s"), failed);
    else if (rc == -2)
        kvmsaveJobReportCancelled(job);
    return -1;
}


/* Whether no page server holds the lock beside the status file @path
 * any more: it ended without saying so (killed). */
static bool
kvmsaveLazyServerGone(const char *path)
{
    g_autofree char *lock = g_strdup_printf("%s.lock", path);
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    VIR_AUTOCLOSE fd = open(lock, O_RDONLY | O_CLOEXEC);

    if (fd < 0 || fcntl(fd, F_OFD_GETLK, &fl) < 0)
        return fd < 0 && errno == ENOENT;
    return fl.l_type == F_UNLCK;
}


void
kvmsaveLazyRecoverDir(kvmsaveConn *priv, const unsigned char *uuid,
                      const char *dir)
{
    g_autofree char *status = kvmsaveLazyStatusPath(priv, uuid);

    /* A page server takes its lock before it serves a page: one that
     * holds it may still need the directory (to recover QEMU's
     * migration), and removes it itself when it ends. One that was
     * spawned but has not taken the lock yet serves a QEMU that recovery
     * has just stopped: it ends at once, and finds no directory. */
    if (!kvmsaveLazyServerGone(status)) {
        VIR_DEBUG("leaving %s to the page server of %s", dir, status);
        return;
    }
    kvmsaveMultifdRemoveDir(dir);
}


/* The state of the lazy restore whose page server reports in @path. */
static kvmsaveLazyState
kvmsaveLazyGetStateAt(const char *path, unsigned long long *total,
                      unsigned long long *done, char **error)
{
    g_autofree char *state = NULL;
    const unsigned long long page = 4096;

    *total = *done = 0;
    if (!(state = kvmsaveLazyReadStatus(path, total, done, error)))
        return KVMSAVE_LAZY_NONE;
    *total *= page;
    *done *= page;
    if (STREQ(state, "done"))
        return KVMSAVE_LAZY_DONE;
    if (STREQ(state, "failed"))
        return KVMSAVE_LAZY_FAILED;
    if (kvmsaveLazyServerGone(path)) {
        g_free(*error);
        *error = g_strdup(_("the page server ended before the last page: the guest waits for its memory in QEMU's postcopy-paused state and can only be destroyed"));
        return KVMSAVE_LAZY_FAILED;
    }
    return KVMSAVE_LAZY_SERVING;
}


/* The job of the lazy restore whose page server reports in @path, as
 * @fig; @fig->errmsg points into *@error. */
static kvmsaveLazyState
kvmsaveLazyGetJobAt(const char *path, kvmsaveJobFigures *fig, char **error)
{
    kvmsaveLazyState state = kvmsaveLazyGetStateAt(path, &fig->total,
                                                   &fig->processed, error);

    fig->operation = VIR_DOMAIN_JOB_OPERATION_RESTORE;
    fig->ended = state != KVMSAVE_LAZY_SERVING;
    fig->ok = state == KVMSAVE_LAZY_DONE;
    fig->errmsg = *error;
    return state;
}


kvmsaveLazyState
kvmsaveLazyGetJob(kvmsaveConn *priv, const unsigned char *uuid,
                  kvmsaveJobFigures *fig, char **error)
{
    g_autofree char *path = kvmsaveLazyStatusPath(priv, uuid);

    return kvmsaveLazyGetJobAt(path, fig, error);
}


/* A lazy restore this process started, watched until its last page. */
typedef struct {
    char *statusPath;
    unsigned char uuid[VIR_UUID_BUFLEN];
    char *name;
    int id;
    int timer;
} kvmsaveLazyWatchData;

/* The watch of each guest's restore, by UUID string: a new restore of the
 * guest ends the watch of the last one, whose status file it replaces. */
static GMutex kvmsaveLazyWatchLock;
static GHashTable *kvmsaveLazyWatches;


static void
kvmsaveLazyWatchFree(void *opaque)
{
    kvmsaveLazyWatchData *w = opaque;

    g_free(w->statusPath);
    g_free(w->name);
    g_free(w);
}


/* Forget @w's timer, unless a newer watch took its place. */
static void
kvmsaveLazyWatchForget(kvmsaveLazyWatchData *w)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveLazyWatchLock);
    char uuidstr[VIR_UUID_STRING_BUFLEN];

    virUUIDFormat(w->uuid, uuidstr);
    if (GPOINTER_TO_INT(g_hash_table_lookup(kvmsaveLazyWatches, uuidstr)) == w->timer)
        g_hash_table_remove(kvmsaveLazyWatches, uuidstr);
}


/* On the client's event loop: once the page server has sent the last
 * page, the restore's JOB_COMPLETED; a failure ends the watch alone
 * (QEMU's postcopy pause brings its own SUSPENDED event). */
static void
kvmsaveLazyWatchTick(int timer, void *opaque)
{
    kvmsaveLazyWatchData *w = opaque;
    kvmsaveJobFigures fig = { 0 };
    g_autofree char *error = NULL;
    kvmsaveLazyState state = kvmsaveLazyGetJobAt(w->statusPath, &fig, &error);
    virTypedParameterPtr params = NULL;
    int nparams = 0;

    if (state == KVMSAVE_LAZY_SERVING)
        return;
    if (state == KVMSAVE_LAZY_DONE) {
        if (kvmsaveJobFiguresToParams(&fig, &params, &nparams) == 0)
            kvmsaveEventsJobCompleted(w->uuid, w->name, w->id, params, nparams);
        virTypedParamsFree(params, nparams);
        virResetLastError();
    }
    VIR_DEBUG("lazy restore of %s ended in state %d", w->name, state);
    kvmsaveLazyWatchForget(w);
    virEventRemoveTimeout(timer);
}


void
kvmsaveLazyWatch(kvmsaveConn *priv, virDomainPtr dom)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveLazyWatchLock);
    kvmsaveLazyWatchData *w = g_new0(kvmsaveLazyWatchData, 1);
    char uuidstr[VIR_UUID_STRING_BUFLEN];
    gpointer old;

    w->statusPath = kvmsaveLazyStatusPath(priv, dom->uuid);
    memcpy(w->uuid, dom->uuid, VIR_UUID_BUFLEN);
    w->name = g_strdup(dom->name);
    w->id = dom->id;
    virUUIDFormat(dom->uuid, uuidstr);
    if (!kvmsaveLazyWatches)
        kvmsaveLazyWatches = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                   g_free, NULL);
    if ((old = g_hash_table_lookup(kvmsaveLazyWatches, uuidstr))) {
        virEventRemoveTimeout(GPOINTER_TO_INT(old));
        g_hash_table_remove(kvmsaveLazyWatches, uuidstr);
    }
    if ((w->timer = virEventAddTimeout(KVMSAVE_LAZY_WATCH_MS, kvmsaveLazyWatchTick,
                                       w, kvmsaveLazyWatchFree)) < 0) {
        VIR_DEBUG("no event loop: the end of %s's lazy restore sends no event",
                  w->name);
        kvmsaveLazyWatchFree(w);
        return;
    }
    g_hash_table_insert(kvmsaveLazyWatches, g_strdup(uuidstr),
                        GINT_TO_POINTER(w->timer));
}


int
kvmsaveLazyStart(kvmsaveLazy *lz, virDomainPtr dom, kvmsaveImageReader *reader,
                 const char *path, kvmsaveJob *job)
{
    g_autoptr(kvmsaveQmp) qmp = NULL;
    int sv[2] = { -1, -1 };
    int rc;

    if (kvmsaveLazyEnablePostcopy(dom) < 0 ||
        !(qmp = kvmsaveQmpConnect(lz->qmpPath, KVMSAVE_LAZY_QMP_TIMEOUT_MS)))
        return -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        virReportSystemError(errno, "%s", _("cannot create a socket pair"));
        return -1;
    }
    rc = kvmsaveMonitorGetFd(dom, KVMSAVE_LAZY_FDNAME, sv[0]);
    VIR_FORCE_CLOSE(sv[0]);
    if (rc < 0 ||
        kvmsaveMonitorMigrateIncoming(dom, "fd", KVMSAVE_LAZY_FDNAME) < 0 ||
        kvmsaveLazySpawn(lz, reader, path, sv[1], kvmsaveQmpFD(qmp)) < 0) {
        VIR_FORCE_CLOSE(sv[1]);
        return -1;
    }
    VIR_FORCE_CLOSE(sv[1]);
    /* The page server removes the sockets' directory when it ends. */
    kvmsaveMultifdKeep(lz->dir);
    return kvmsaveLazyWaitRunning(lz, dom, job);
}
