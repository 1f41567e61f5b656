/*
 * kvmsave_lazy.c: a lazy restore, whose guest runs as soon as its
 * devices are loaded while kvmsave-pagesrv serves its memory
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kvmsave_lazy.h"
#include "kvmsave_event.h"
#include "kvmsave_imageindex.h"
#include "kvmsave_monitor.h"
#include "kvmsave_pagesrv.h"
#include "kvmsave_multifd.h"
#include "kvmsave_qmp.h"
#include "kvmsave_sparse.h"
#include "kvmsave_util.h"
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
/* QEMU answers an out-of-band command at once. */
#define KVMSAVE_LAZY_RECOVER_QMP_TIMEOUT_MS (30 * 1000)
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


/* What a page server is started with: the image on its standard input,
 * @sock its end of QEMU's migration (-1: it recovers QEMU's paused one),
 * @qmpfd the monitor it recovers through, @lockfd the lock of its status
 * file when kvmsave took it (-1: the server takes it). */
typedef struct {
    const char *statusPath;
    const char *recoverPath;
    const char *path;
    int imagefd;
    int sock;
    int qmpfd;
    int lockfd;
} kvmsaveLazyServerArgs;


/* Start kvmsave-pagesrv, detached from the client. Its messages go
 * beside its status file, after those of the server it replaces. */
static int
kvmsaveLazyRunServer(const kvmsaveLazyServerArgs *a)
{
    g_autofree char *logPath = g_strdup_printf("%s.log", a->statusPath);
    g_autofree char *qmpArg = g_strdup_printf("%d", a->qmpfd);
    int logFlags = O_WRONLY | O_CREAT | O_CLOEXEC | (a->sock < 0 ? O_APPEND : O_TRUNC);
    g_autoptr(virCommand) cmd = NULL;
    VIR_AUTOCLOSE logfd = -1;

    if ((logfd = open(logPath, logFlags, 0600)) < 0) {
        virReportSystemError(errno, _("cannot create '%s'"), logPath);
        return -1;
    }
    cmd = virCommandNewArgList(kvmsaveLazyHelperPath(), "--qmp-fd", qmpArg,
                               "--recover-socket", a->recoverPath,
                               "--status", a->statusPath, NULL);
    if (a->sock >= 0) {
        virCommandAddArg(cmd, "--socket-fd");
        virCommandAddArgFormat(cmd, "%d", a->sock);
        virCommandPassFD(cmd, a->sock, 0);
    } else {
        virCommandAddArg(cmd, "--recover");
    }
    if (a->lockfd >= 0) {
        virCommandAddArg(cmd, "--lock-fd");
        virCommandAddArgFormat(cmd, "%d", a->lockfd);
        virCommandPassFD(cmd, a->lockfd, 0);
    }
    virCommandAddArg(cmd, a->path);
    virCommandPassFD(cmd, a->qmpfd, 0);
    virCommandSetInputFD(cmd, a->imagefd);
    virCommandSetOutputFD(cmd, &logfd);
    virCommandSetErrorFD(cmd, &logfd);
    virCommandDaemonize(cmd);
    return virCommandRun(cmd, NULL);
}


/* Beside the status file, what a later connection needs to start a new
 * page server when this one is lost with its supervisor: the image
 * (checked to be the same file then), the directory of QEMU's sockets,
 * the guest's name, QEMU's pid and the inode of the page server's end
 * of kvmsave's own monitor, whose copy QEMU keeps. */
static int
kvmsaveLazyWriteSource(const char *statusPath, int imagefd, const char *image,
                       const char *sockdir, const char *name, int qmpfd)
{
    g_autofree char *path = g_strdup_printf("%s.source", statusPath);
    g_autoptr(GKeyFile) kf = g_key_file_new();
    g_autofree char *data = NULL;
    struct ucred cred;
    socklen_t credlen = sizeof(cred);
    struct stat sb;
    struct stat qsb;
    gsize len;

    if (fstat(imagefd, &sb) < 0) {
        virReportSystemError(errno, _("cannot stat save image '%s'"), image);
        return -1;
    }
    if (fstat(qmpfd, &qsb) < 0 ||
        getsockopt(qmpfd, SOL_SOCKET, SO_PEERCRED, &cred, &credlen) < 0) {
        virReportSystemError(errno, "%s", _("cannot identify QEMU's monitor connection"));
        return -1;
    }
    g_key_file_set_int64(kf, "restore", "qemu-pid", cred.pid);
    g_key_file_set_uint64(kf, "restore", "qmp-inode", qsb.st_ino);
    g_key_file_set_string(kf, "restore", "image", image);
    g_key_file_set_string(kf, "restore", "sockets", sockdir);
    g_key_file_set_string(kf, "restore", "name", name);
    g_key_file_set_uint64(kf, "restore", "device", sb.st_dev);
    g_key_file_set_uint64(kf, "restore", "inode", sb.st_ino);
    g_key_file_set_uint64(kf, "restore", "size", sb.st_size);
    g_key_file_set_uint64(kf, "restore", "mtime",
                          sb.st_mtim.tv_sec * 1000000000ULL + sb.st_mtim.tv_nsec);
    data = g_key_file_to_data(kf, &len, NULL);
    return kvmsaveReplaceFile(path, data, len);
}


/* Start the page server of @lz on the image of @reader, for guest @name:
 * @sock its end of QEMU's migration, @qmpfd the monitor it recovers
 * through. */
static int
kvmsaveLazySpawn(kvmsaveLazy *lz, kvmsaveImageReader *reader, const char *path,
                 const char *name, int sock, int qmpfd)
{
    g_autofree char *self = kvmsaveImageReaderSelfPath(reader);
    g_autofree char *sockdir = g_path_get_dirname(lz->qmpPath);
    g_autofree char *image = NULL;
    kvmsaveLazyServerArgs a = {
        .statusPath = lz->statusPath, .recoverPath = lz->recoverPath,
        .path = path, .sock = sock, .qmpfd = qmpfd, .lockfd = -1,
    };
    VIR_AUTOCLOSE imagefd = -1;

    if ((imagefd = open(self, O_RDONLY | O_CLOEXEC)) < 0) {
        virReportSystemError(errno, _("cannot open save image '%s'"), path);
        return -1;
    }
    /* The file itself, wherever the client named it from. */
    if (!(image = g_file_read_link(self, NULL)))
        image = g_strdup(path);
    unlink(lz->statusPath);
    if (kvmsaveLazyWriteSource(lz->statusPath, imagefd, image, sockdir, name, qmpfd) < 0)
        return -1;
    a.imagefd = imagefd;
    return kvmsaveLazyRunServer(&a);
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


/* Give QEMU a copy of @qmp's own end: the connection then outlives the
 * page server, and a new one takes it from QEMU (kvmsaveLazyTakeQmp). */
static int
kvmsaveLazyQmpToQemu(kvmsaveQmp *qmp)
{
    g_autoptr(virJSONValue) args = NULL;
    g_autofree char *qemuError = NULL;
    int rc;

    if (virJSONValueObjectAdd(&args, "s:fdname", KVMSAVE_PAGESRV_QMP_FDNAME, NULL) < 0 ||
        (rc = kvmsaveQmpCommandFD(qmp, "getfd", g_steal_pointer(&args), false,
                                  kvmsaveQmpFD(qmp), &qemuError)) < 0)
        return -1;
    if (rc > 0) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("QEMU did not keep a copy of kvmsave's monitor connection: %s"),
                       qemuError);
        return -1;
    }
    return 0;
}


int
kvmsaveLazyStart(kvmsaveLazy *lz, virDomainPtr dom, kvmsaveImageReader *reader,
                 const char *path, kvmsaveJob *job)
{
    g_autoptr(kvmsaveQmp) qmp = NULL;
    int sv[2] = { -1, -1 };
    int rc;

    if (kvmsaveLazyEnablePostcopy(dom) < 0 ||
        !(qmp = kvmsaveQmpConnect(lz->qmpPath, KVMSAVE_LAZY_QMP_TIMEOUT_MS)) ||
        kvmsaveLazyQmpToQemu(qmp) < 0)
        return -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        virReportSystemError(errno, "%s", _("cannot create a socket pair"));
        return -1;
    }
    rc = kvmsaveMonitorGetFd(dom, KVMSAVE_LAZY_FDNAME, sv[0]);
    VIR_FORCE_CLOSE(sv[0]);
    if (rc < 0 ||
        kvmsaveMonitorMigrateIncoming(dom, "fd", KVMSAVE_LAZY_FDNAME) < 0 ||
        kvmsaveLazySpawn(lz, reader, path, dom->name, sv[1], kvmsaveQmpFD(qmp)) < 0) {
        VIR_FORCE_CLOSE(sv[1]);
        return -1;
    }
    VIR_FORCE_CLOSE(sv[1]);
    /* The page server removes the sockets' directory when it ends. */
    kvmsaveMultifdKeep(lz->dir);
    return kvmsaveLazyWaitRunning(lz, dom, job);
}


/* Whether @fd is still the image file the restore's record @kf names. */
static bool
kvmsaveLazySameImage(GKeyFile *kf, int fd)
{
    struct stat sb;

    return fstat(fd, &sb) == 0 &&
        g_key_file_get_uint64(kf, "restore", "device", NULL) == sb.st_dev &&
        g_key_file_get_uint64(kf, "restore", "inode", NULL) == sb.st_ino &&
        g_key_file_get_uint64(kf, "restore", "size", NULL) == (guint64) sb.st_size &&
        g_key_file_get_uint64(kf, "restore", "mtime", NULL) ==
        sb.st_mtim.tv_sec * 1000000000ULL + sb.st_mtim.tv_nsec;
}


/* The negotiated monitor connection of the restore of @kf, from the copy
 * QEMU keeps: out-of-band commands need no main loop, while negotiating
 * a new connection does, and QEMU's may wait for a page. -2 if that QEMU
 * ended. Needs the right to trace QEMU, which root has. */
static int
kvmsaveLazyTakeQmp(GKeyFile *kf, kvmsaveQmp **qmp)
{
    pid_t pid = g_key_file_get_int64(kf, "restore", "qemu-pid", NULL);
    g_autofree char *want = g_strdup_printf("socket:[%llu]", (unsigned long long)
                                            g_key_file_get_uint64(kf, "restore", "qmp-inode", NULL));
    g_autofree char *fddir = g_strdup_printf("/proc/%lld/fd", (long long) pid);
    g_autoptr(GDir) d = pid > 0 ? g_dir_open(fddir, 0, NULL) : NULL;
    VIR_AUTOCLOSE pidfd = -1;
    const char *entry;
    int target = -1;
    int fd;

    while (d && target < 0 && (entry = g_dir_read_name(d))) {
        g_autofree char *link = g_build_filename(fddir, entry, NULL);
        g_autofree char *what = g_file_read_link(link, NULL);

        if (STREQ_NULLABLE(what, want))
            target = atoi(entry);
    }
    if (target < 0)
        return -2;
    if ((pidfd = syscall(SYS_pidfd_open, pid, 0)) < 0 ||
        (fd = syscall(SYS_pidfd_getfd, pidfd, target, 0)) < 0) {
        virReportSystemError(errno, _("cannot take kvmsave's monitor connection from QEMU process %lld"),
                             (long long) pid);
        return -1;
    }
    /* pidfd_getfd sets close-on-exec */
    *qmp = kvmsaveQmpAdopt(fd, KVMSAVE_LAZY_RECOVER_QMP_TIMEOUT_MS);
    return 0;
}


/* The guest of a lost page server ended too: nothing to recover, and
 * nobody else removes the directory of its sockets. */
static void
kvmsaveLazyForget(GKeyFile *kf, const char *sourcePath)
{
    g_autofree char *sockets = g_key_file_get_string(kf, "restore", "sockets", NULL);
    g_autofree char *rundir = sockets ? g_path_get_dirname(sockets) : NULL;

    if (rundir)
        kvmsaveMultifdRemoveDir(rundir);
    unlink(sourcePath);
}


/* Start a page server that recovers the restore of the record @kf, whose
 * status file @statusPath is locked by @lockfd (taken). */
static int
kvmsaveLazyRecoverServer(GKeyFile *kf, const char *statusPath, int lockfd)
{
    g_autofree char *image = g_key_file_get_string(kf, "restore", "image", NULL);
    g_autofree char *sockets = g_key_file_get_string(kf, "restore", "sockets", NULL);
    g_autofree char *recoverPath = NULL;
    g_autoptr(kvmsaveQmp) qmp = NULL;
    kvmsaveLazyServerArgs a = { .statusPath = statusPath, .sock = -1, .lockfd = lockfd };
    VIR_AUTOCLOSE imagefd = -1;
    VIR_AUTOCLOSE lock = lockfd;    /* the new server holds its own copy */
    int rc;

    if (!image || !sockets) {
        virReportError(VIR_ERR_INTERNAL_ERROR, _("'%s.source' names no image"), statusPath);
        return -1;
    }
    if ((rc = kvmsaveLazyTakeQmp(kf, &qmp)) < 0)
        return rc;
    if ((imagefd = open(image, O_RDONLY | O_CLOEXEC)) < 0) {
        virReportSystemError(errno, _("cannot open save image '%s'"), image);
        return -1;
    }
    if (!kvmsaveLazySameImage(kf, imagefd)) {
        virReportError(VIR_ERR_OPERATION_INVALID,
                       _("save image '%s' is not the file the guest was restored from any more"),
                       image);
        return -1;
    }
    recoverPath = g_build_filename(sockets, "r", NULL);
    a.recoverPath = recoverPath;
    a.path = image;
    a.imagefd = imagefd;
    a.qmpfd = kvmsaveQmpFD(qmp);
    return kvmsaveLazyRunServer(&a);
}


/* The restore of @statusPath, if its page server is gone with the
 * migration unfinished: QEMU waits in postcopy-paused for a new one. */
static void
kvmsaveLazyRecoverOne(const char *statusPath)
{
    g_autofree char *lockPath = g_strdup_printf("%s.lock", statusPath);
    g_autofree char *sourcePath = g_strdup_printf("%s.source", statusPath);
    g_autoptr(GKeyFile) kf = g_key_file_new();
    g_autofree char *state = NULL;
    g_autofree char *name = NULL;
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    unsigned long long total = 0, done = 0;
    int lockfd;
    int rc;

    state = kvmsaveLazyReadStatus(statusPath, &total, &done, NULL);
    if (STRNEQ_NULLABLE(state, "serving") ||
        !g_key_file_load_from_file(kf, sourcePath, G_KEY_FILE_NONE, NULL))
        return;
    /* Held by a page server for its whole life. */
    if ((lockfd = open(lockPath, O_RDWR | O_CLOEXEC)) < 0)
        return;
    if (fcntl(lockfd, F_OFD_SETLK, &fl) < 0) {
        VIR_FORCE_CLOSE(lockfd);
        return;
    }
    name = g_key_file_get_string(kf, "restore", "name", NULL);
    if ((rc = kvmsaveLazyRecoverServer(kf, statusPath, lockfd)) == -2) {
        VIR_DEBUG("the QEMU of guest %s ended with its page server", NULLSTR(name));
        virResetLastError();
        kvmsaveLazyForget(kf, sourcePath);
        return;
    }
    if (rc < 0) {
        VIR_WARN("cannot recover the lazy restore of guest %s, whose page server was lost: %s",
                 NULLSTR(name), virGetLastErrorMessage());
        virResetLastError();
        return;
    }
    VIR_WARN("recovering the lazy restore of guest %s: its page server was lost, a new one serves the rest of its memory",
             NULLSTR(name));
}


void
kvmsaveLazyRecoverServers(kvmsaveConn *priv)
{
    g_autofree char *dir = kvmsaveLazyStatusDir(priv);
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *entry;

    while (d && (entry = g_dir_read_name(d))) {
        g_autofree char *path = NULL;

        if (!g_str_has_suffix(entry, ".status"))
            continue;
        path = g_build_filename(dir, entry, NULL);
        kvmsaveLazyRecoverOne(path);
    }
}
