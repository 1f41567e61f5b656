/*
 * kvmsave_journal.c: job journals, and recovery after a killed client
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * One small text file per running job, ROOT/run/kvmsave/jobs/UUID.job
 * (/run/kvmsave/jobs/UUID.job over a daemon, see kvmsaveJournalDir),
 * "key=value" lines (values escaped as C strings), rewritten in place at
 * each phase. The job holds an open file description lock on it
 * (F_OFD_SETLK) from creation to removal; a journal that can be locked
 * belongs to a dead process. Page cache is enough: the journal only has
 * to outlive the process, not the host (a host crash takes QEMU with it).
 */
#include <config.h>

#include <fcntl.h>
#include <dirent.h>
#include <ftw.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvmsave_journal.h"
#include "kvmsave_image.h"
#include "kvmsave_job.h"
#include "kvmsave_monitor.h"
#include "kvmsave_multifd.h"
#include "kvmsave_save.h"
#include "kvmsave_util.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"
#include "viruuid.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.journal");

struct _kvmsaveJournal {
    int fd;
    char *path;
    kvmsaveJournalKind kind;
    GString *fields;            /* "key=value\n" set so far */
};


static const char *
kvmsaveJournalKindName(kvmsaveJournalKind kind)
{
    return kind == KVMSAVE_JOURNAL_SAVE ? "save" : "restore";
}


/* An embedded inner driver's guests belong to this root alone. A daemon's
 * guests may be reached through any kvmsave root: their journals are the
 * host's, so that jobs of clients of different roots exclude each other
 * and any client recovers a killed one's. (Only root can write there; a
 * client of another user keeps them under its root.) */
#define KVMSAVE_JOURNAL_HOST_DIR "/run/kvmsave/jobs"

static char *
kvmsaveJournalDir(kvmsaveConn *priv)
{
    if (!priv->embedded && geteuid() == 0)
        return g_strdup(KVMSAVE_JOURNAL_HOST_DIR);
    return g_build_filename(priv->root, "run", "kvmsave", "jobs", NULL);
}


/* The inner connection a journal's job used: only a client of the same
 * one may recover it. */
static char *
kvmsaveJournalInner(kvmsaveConn *priv)
{
    char *uri = virConnectGetURI(priv->inner);

    virResetLastError();
    return uri ? uri : g_strdup("");
}


enum {
    KVMSAVE_JOURNAL_LOCK_HELD = 0,      /* another process holds it: live */
    KVMSAVE_JOURNAL_LOCK_OURS = 1,      /* ours now, and still named @path */
    KVMSAVE_JOURNAL_LOCK_GONE = 2,      /* ours, but removed meanwhile */
};

/* Lock @fd, opened from @path; -1 on error. A file another process
 * recovered or ended between our open and our lock is no longer @path's:
 * it must not be recovered (again), nor @path removed for it. */
static int
kvmsaveJournalLock(int fd, const char *path)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    struct stat fsb;
    struct stat psb;

    if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
        if (errno == EAGAIN || errno == EACCES)
            return KVMSAVE_JOURNAL_LOCK_HELD;
        virReportSystemError(errno, _("cannot lock job journal '%s'"), path);
        return -1;
    }
    if (fstat(fd, &fsb) < 0 || stat(path, &psb) < 0 ||
        fsb.st_ino != psb.st_ino || fsb.st_dev != psb.st_dev)
        return KVMSAVE_JOURNAL_LOCK_GONE;
    return KVMSAVE_JOURNAL_LOCK_OURS;
}


static bool kvmsaveJournalRecoverOne(kvmsaveConn *priv, const char *path, int fd,
                                     char **foreign);


kvmsaveJournal *
kvmsaveJournalBegin(kvmsaveConn *priv, const unsigned char *uuid,
                    kvmsaveJournalKind kind, bool *recovered)
{
    g_autofree char *dir = kvmsaveJournalDir(priv);
    g_autofree char *tmp = NULL;
    g_autofree char *path = NULL;
    char uuidstr[VIR_UUID_STRING_BUFLEN];
    g_autofree char *inner = kvmsaveJournalInner(priv);
    kvmsaveJournal *j;
    VIR_AUTOCLOSE fd = -1;
    VIR_AUTOCLOSE old = -1;

    virUUIDFormat(uuid, uuidstr);
    if (g_mkdir_with_parents(dir, 0700) < 0) {
        virReportSystemError(errno, _("cannot create the job journal directory '%s'"),
                             dir);
        return NULL;
    }
    path = g_strdup_printf("%s/%s.job", dir, uuidstr);

    /* Another process's job on this guest, or the journal of a dead one. */
    if ((old = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW)) >= 0) {
        int rc = kvmsaveJournalLock(old, path);

        if (rc < 0)
            return NULL;
        if (rc == KVMSAVE_JOURNAL_LOCK_HELD) {
            virReportError(VIR_ERR_OPERATION_INVALID, "%s",
                           _("another save/restore job is running for this guest (in another process)"));
            return NULL;
        }
        if (rc == KVMSAVE_JOURNAL_LOCK_OURS) {
            g_autofree char *foreign = NULL;

            if (!kvmsaveJournalRecoverOne(priv, path, old, &foreign)) {
                virReportError(VIR_ERR_OPERATION_INVALID,
                               _("a killed kvmsave client of connection '%s' left the job journal '%s' of this guest; connect through that URI to recover its job, or remove the file if that connection is gone"),
                               foreign, path);
                return NULL;
            }
            if (recovered)
                *recovered = true;
        }
    }

    /* Locked before it has its name, so no job sees it unlocked; recovery
     * leaves young unnamed journals alone (kvmsaveJournalRecover). */
    tmp = g_strdup_printf("%s/.%s-XXXXXX", dir, uuidstr);
    if ((fd = g_mkstemp_full(tmp, O_RDWR | O_CLOEXEC, 0600)) < 0) {
        virReportSystemError(errno, _("cannot create a job journal in '%s'"), dir);
        return NULL;
    }
    if (kvmsaveJournalLock(fd, tmp) != KVMSAVE_JOURNAL_LOCK_OURS) {
        if (virGetLastErrorCode() == VIR_ERR_OK)
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("cannot lock job journal '%s'"), tmp);
        unlink(tmp);
        return NULL;
    }
    if (link(tmp, path) < 0) {
        int err = errno;

        unlink(tmp);
        if (err == EEXIST) {
            virReportError(VIR_ERR_OPERATION_INVALID, "%s",
                           _("another save/restore job is running for this guest (in another process)"));
        } else {
            virReportSystemError(err, _("cannot create job journal '%s'"), path);
        }
        return NULL;
    }
    unlink(tmp);

    j = g_new0(kvmsaveJournal, 1);
    j->fd = fd;
    fd = -1;
    j->path = g_steal_pointer(&path);
    j->kind = kind;
    j->fields = g_string_new(NULL);
    kvmsaveJournalSet(j, "uuid", uuidstr);
    kvmsaveJournalSet(j, "inner", inner);
    return j;
}


void
kvmsaveJournalSet(kvmsaveJournal *j, const char *key, const char *value)
{
    g_autofree char *esc = g_strescape(value ? value : "", NULL);

    g_string_append_printf(j->fields, "%s=%s\n", key, esc);
}


void
kvmsaveJournalSetInt(kvmsaveJournal *j, const char *key, long long value)
{
    g_autofree char *s = g_strdup_printf("%lld", value);

    kvmsaveJournalSet(j, key, s);
}


/* The first line checks the rest: a rewrite cut short by a kill (a write
 * can stop between pages) mixes new and old text and must not be read. */
#define KVMSAVE_JOURNAL_CHECK_FMT "check=%08x %zu\n"

int
kvmsaveJournalWrite(kvmsaveJournal *j, const char *phase)
{
    g_autofree char *body = g_strdup_printf("kind=%s\nphase=%s\n%s",
                                            kvmsaveJournalKindName(j->kind),
                                            phase, j->fields->str);
    size_t blen = strlen(body);
    g_autofree char *text = g_strdup_printf(KVMSAVE_JOURNAL_CHECK_FMT "%s",
                                            kvmsaveCrc32c(0, body, blen),
                                            blen, body);
    size_t len = strlen(text);
    ssize_t n = pwrite(j->fd, text, len, 0);

    if (n >= 0 && n != (ssize_t) len)
        errno = EIO;
    if (n != (ssize_t) len || ftruncate(j->fd, len) < 0) {
        virReportSystemError(errno, _("cannot write job journal '%s'"), j->path);
        return -1;
    }
    return 0;
}


void
kvmsaveJournalEnd(kvmsaveJournal *j)
{
    if (!j)
        return;
    /* Removed while still locked: nobody recovers a job that ended. */
    if (unlink(j->path) < 0 && errno != ENOENT)
        VIR_WARN("cannot remove job journal %s: %s", j->path, g_strerror(errno));
    VIR_FORCE_CLOSE(j->fd);
    g_string_free(j->fields, TRUE);
    g_free(j->path);
    g_free(j);
}


/* ---- recovery ----------------------------------------------------------- */

/* The fields of a journal, or NULL if it is empty, torn or unreadable. */
static GHashTable *
kvmsaveJournalParse(int fd)
{
    g_autoptr(GHashTable) kv = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                     g_free, g_free);
    g_autofree char *buf = NULL;
    g_auto(GStrv) lines = NULL;
    struct stat sb;
    const char *body;
    unsigned int crc;
    size_t blen;
    ssize_t n;
    size_t i;

    if (fstat(fd, &sb) < 0 || sb.st_size == 0 || sb.st_size > 1024 * 1024)
        return NULL;
    buf = g_new0(char, sb.st_size + 1);
    if ((n = pread(fd, buf, sb.st_size, 0)) != sb.st_size ||
        sscanf(buf, "check=%08x %zu\n", &crc, &blen) != 2 ||
        !(body = strchr(buf, '\n')) ||
        strlen(++body) != blen || kvmsaveCrc32c(0, body, blen) != crc)
        return NULL;
    lines = g_strsplit(body, "\n", -1);
    for (i = 0; lines[i]; i++) {
        char *eq = strchr(lines[i], '=');

        if (!eq)
            continue;
        *eq = '\0';
        g_hash_table_replace(kv, g_strdup(lines[i]), g_strcompress(eq + 1));
    }
    return g_steal_pointer(&kv);
}


static long long
kvmsaveJournalInt(GHashTable *kv, const char *key)
{
    const char *v = g_hash_table_lookup(kv, key);

    return v ? g_ascii_strtoll(v, NULL, 10) : -1;
}


/* The guest's QEMU, if the domain still runs one. */
static virDomainPtr
kvmsaveJournalActiveDomain(kvmsaveConn *priv, GHashTable *kv)
{
    const char *uuidstr = g_hash_table_lookup(kv, "uuid");
    unsigned char uuid[VIR_UUID_BUFLEN];
    virDomainPtr dom;

    if (!uuidstr || virUUIDParse(uuidstr, uuid) < 0)
        return NULL;
    if (!(dom = virDomainLookupByUUID(priv->inner, uuid))) {
        virResetLastError();
        return NULL;
    }
    if (virDomainIsActive(dom) != 1) {
        virResetLastError();
        virObjectUnref(dom);
        return NULL;
    }
    return dom;
}


static bool
kvmsaveJournalIsPaused(virDomainPtr dom)
{
    int state;

    if (virDomainGetState(dom, &state, NULL, 0) < 0) {
        virResetLastError();
        return false;
    }
    return state == VIR_DOMAIN_PAUSED;
}


/* A save: before its image was complete, undo it (migration cancelled,
 * the guest resumed if the save paused it, the temporary file removed);
 * once complete ("committed"), finish it (image in place, guest stopped). */
static void
kvmsaveJournalRecoverSave(kvmsaveConn *priv, GHashTable *kv, const char *phase)
{
    const char *name = g_hash_table_lookup(kv, "name");
    const char *target = g_hash_table_lookup(kv, "target");
    const char *temp = g_hash_table_lookup(kv, "temp");
    g_autoptr(virDomain) dom = kvmsaveJournalActiveDomain(priv, kv);
    bool committed = STREQ(phase, "committed");

    if (committed && temp && target && access(temp, F_OK) == 0) {
        g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(temp, KVMSAVE_IMAGE_IO_CACHED);

        if (!r || kvmsaveCommitTemp(temp, target) < 0) {
            VIR_WARN("interrupted save of guest %s: its finished image %s cannot be put in place (%s); undoing the save",
                     NULLSTR(name), temp, virGetLastErrorMessage());
            virResetLastError();
            committed = false;
        }
    }

    if (committed) {
        if (dom && virDomainDestroy(dom) < 0) {
            VIR_WARN("interrupted save of guest %s: the image %s is complete, but the guest cannot be stopped: %s",
                     NULLSTR(name), NULLSTR(target), virGetLastErrorMessage());
            virResetLastError();
            return;
        }
        VIR_WARN("recovered an interrupted save of guest %s: the image %s is complete, the guest %s",
                 NULLSTR(name), NULLSTR(target),
                 dom ? "was stopped" : "was already stopped");
        return;
    }

    if (temp && unlink(temp) < 0 && errno != ENOENT)
        VIR_WARN("cannot remove %s: %s", temp, g_strerror(errno));
    if (dom && STRNEQ(phase, "prepared")) {
        ignore_value(kvmsaveMonitorMigrateCancel(dom));
        virResetLastError();
        if (kvmsaveJournalInt(kv, "paused") == 1 && kvmsaveJournalIsPaused(dom) &&
            virDomainResume(dom) < 0) {
            VIR_WARN("interrupted save of guest %s: cannot resume the guest: %s",
                     NULLSTR(name), virGetLastErrorMessage());
            virResetLastError();
            return;
        }
    }
    VIR_WARN("recovered an interrupted save of guest %s: no image was made, the temporary file is removed, the guest %s",
             NULLSTR(name), dom ? "runs on as before" : "is not running");
}


/* libvirt's machine name for guest @name of the embedded root: the
 * characters virDomainDriverGenerateMachineName keeps. */
static void
kvmsaveJournalMachineNameAppend(GString *buf, const char *name)
{
    bool skip = true;

    for (; *name && buf->len < 64; name++) {
        if (*name == '.' || *name == '-') {
            if (!skip)
                g_string_append_c(buf, *name);
            skip = true;
        } else if (g_ascii_isalnum(*name)) {
            g_string_append_c(buf, *name);
            skip = false;
        }
    }
    while (buf->len > 0 && strchr("-.", buf->str[buf->len - 1]))
        g_string_truncate(buf, buf->len - 1);
}


static int
kvmsaveJournalRmdir(const char *path, const struct stat *sb G_GNUC_UNUSED,
                    int type, struct FTW *ftw G_GNUC_UNUSED)
{
    if (type == FTW_DP)
        ignore_value(rmdir(path));      /* fails while a task is in it */
    return 0;
}


/* libvirt 9.0 makes a cgroup v1 cpuset group with mkdir and only then
 * copies its parent's CPUs and memory nodes into it. A client killed in
 * between leaves an empty cpuset that the next start of the guest reuses
 * as it is, and fails ("Unable to write to '.../tasks': No space left on
 * device"). The kill may come while QEMU already runs (its vcpu groups
 * are made after it starts), and libvirt's destroy leaves such a group
 * too. Once the guest is known not to run, its groups go. */
static void
kvmsaveJournalRemoveStaleCgroups(kvmsaveConn *priv, const char *name)
{
    g_autofree char *hash = g_compute_checksum_for_string(G_CHECKSUM_SHA256,
                                                          priv->root, -1);
    g_autoptr(GString) machine = g_string_new(NULL);
    g_autofree char *pattern = NULL;
    glob_t g = { 0 };
    size_t i;

    if (!hash || !name)
        return;
    kvmsaveJournalMachineNameAppend(machine, name);
    pattern = g_strdup_printf("/sys/fs/cgroup/*/machine/qemu-embed-%.8s-*-%s.libvirt-qemu",
                              hash, machine->str);
    if (glob(pattern, GLOB_NOSORT | GLOB_ONLYDIR, NULL, &g) == 0) {
        for (i = 0; i < g.gl_pathc; i++) {
            ignore_value(nftw(g.gl_pathv[i], kvmsaveJournalRmdir, 8,
                              FTW_DEPTH | FTW_PHYS));
            if (access(g.gl_pathv[i], F_OK) < 0)
                VIR_WARN("removed the cgroup %s that a killed start of guest %s left",
                         g.gl_pathv[i], name);
        }
    }
    globfree(&g);
}


/* A restore: a guest whose state was not all loaded is stopped (the image
 * was only ever read); a loaded one is resumed as the restore would have. */
static void
kvmsaveJournalRecoverRestore(kvmsaveConn *priv, GHashTable *kv, const char *phase)
{
    const char *image = g_hash_table_lookup(kv, "image");
    g_autoptr(virDomain) dom = kvmsaveJournalActiveDomain(priv, kv);
    long long domid = kvmsaveJournalInt(kv, "domid");
    const char *name = dom ? virDomainGetName(dom) : NULL;

    if (!dom) {
        kvmsaveJournalRemoveStaleCgroups(priv, g_hash_table_lookup(kv, "name"));
        VIR_WARN("recovered an interrupted restore from %s: the guest is not running, the image is intact",
                 NULLSTR(image));
        return;
    }
    /* Only the QEMU this restore started (a "starting" restore died
     * before it knew the ID: the guest is then paused waiting for it). */
    if (domid >= 0 ? virDomainGetID(dom) != (unsigned int) domid :
        !kvmsaveJournalIsPaused(dom)) {
        VIR_WARN("interrupted restore from %s: guest %s runs, but not from this restore; left alone",
                 NULLSTR(image), name);
        return;
    }
    if (STREQ(phase, "loaded")) {
        if (kvmsaveJournalInt(kv, "running") == 1 && kvmsaveJournalIsPaused(dom) &&
            virDomainResume(dom) < 0) {
            VIR_WARN("interrupted restore from %s: cannot resume guest %s: %s",
                     NULLSTR(image), name, virGetLastErrorMessage());
            virResetLastError();
            return;
        }
        VIR_WARN("recovered an interrupted restore from %s: its state was loaded, guest %s %s",
                 NULLSTR(image), name,
                 kvmsaveJournalInt(kv, "running") == 1 ? "resumed" : "stays paused");
        return;
    }
    if (virDomainDestroy(dom) < 0) {
        VIR_WARN("interrupted restore from %s: cannot stop the half-restored guest %s: %s",
                 NULLSTR(image), name, virGetLastErrorMessage());
        virResetLastError();
        return;
    }
    kvmsaveJournalRemoveStaleCgroups(priv, name);
    VIR_WARN("recovered an interrupted restore from %s: the half-restored guest %s was stopped, the image is intact",
             NULLSTR(image), name);
}


/* @fd is @path's, locked by us. False (and the journal's connection in
 * *foreign) when it is another connection's job, left alone. */
static bool
kvmsaveJournalRecoverOne(kvmsaveConn *priv, const char *path, int fd,
                         char **foreign)
{
    g_autoptr(GHashTable) kv = kvmsaveJournalParse(fd);
    g_autofree char *ours = kvmsaveJournalInner(priv);
    const char *kind = kv ? g_hash_table_lookup(kv, "kind") : NULL;
    const char *phase = kv ? g_hash_table_lookup(kv, "phase") : NULL;
    const char *multifd = kv ? g_hash_table_lookup(kv, "multifd") : NULL;
    const char *inner = kv ? g_hash_table_lookup(kv, "inner") : NULL;

    /* Its guest lives behind another connection: not ours to touch,
     * unless ours has that very guest (the same daemon, spelled another
     * way). */
    if (inner && STRNEQ(inner, ours)) {
        const char *uuidstr = g_hash_table_lookup(kv, "uuid");
        unsigned char uuid[VIR_UUID_BUFLEN];
        g_autoptr(virDomain) dom = NULL;

        if (!uuidstr || virUUIDParse(uuidstr, uuid) < 0 ||
            !(dom = virDomainLookupByUUID(priv->inner, uuid))) {
            virResetLastError();
            VIR_DEBUG("leaving job journal %s of connection %s", path, inner);
            *foreign = g_strdup(inner);
            return false;
        }
    }
    if (!kv)
        VIR_WARN("removing job journal %s: it is empty or was cut short by the kill; check the guest and the target directory of its job",
                 path);
    else if (!kind || !phase)
        VIR_WARN("removing job journal %s: it records nothing yet", path);
    else if (STREQ(kind, "save"))
        kvmsaveJournalRecoverSave(priv, kv, phase);
    else if (STREQ(kind, "restore"))
        kvmsaveJournalRecoverRestore(priv, kv, phase);
    else
        VIR_WARN("removing job journal %s of unknown kind '%s'", path, kind);
    /* The sockets of QEMU's multifd streams, if it died connecting them. */
    if (multifd)
        kvmsaveMultifdRemoveDir(multifd);
    if (unlink(path) < 0 && errno != ENOENT)
        VIR_WARN("cannot remove job journal %s: %s", path, g_strerror(errno));
    return true;
}


void
kvmsaveJournalRecover(kvmsaveConn *priv)
{
    g_autofree char *dir = kvmsaveJournalDir(priv);
    g_autoptr(DIR) dh = NULL;
    struct dirent *ent;
    struct stat sb;

    if (!(dh = opendir(dir)))
        return;
    while ((ent = readdir(dh))) {
        g_autofree char *path = g_build_filename(dir, ent->d_name, NULL);
        VIR_AUTOCLOSE fd = -1;

        if (STREQ(ent->d_name, ".") || STREQ(ent->d_name, ".."))
            continue;
        if ((fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW)) < 0)
            continue;
        if (kvmsaveJournalLock(fd, path) != KVMSAVE_JOURNAL_LOCK_OURS) {
            virResetLastError();
            continue;           /* a live job, or one just ended */
        }
        if (ent->d_name[0] == '.') {
            /* Died before its journal had a name; a young one may be a
             * live job between creating and locking it. */
            if (fstat(fd, &sb) == 0 && sb.st_mtime < time(NULL) - 60)
                unlink(path);
        } else {
            g_autofree char *foreign = NULL;

            ignore_value(kvmsaveJournalRecoverOne(priv, path, fd, &foreign));
        }
    }
}
