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
#include <sys/stat.h>
#include <unistd.h>

#include "kvmsave_journal.h"
#include "kvmsave_jobboard.h"
#include "kvmsave_recover.h"
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

char *
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


/* A new journal file in @dir, locked before it is named @path, so that
 * no job sees it unlocked. It has no name before (O_TMPFILE), so that a
 * kill leaves nothing; where the file system cannot, it is made as
 * .UUID-XXXXXX first, which recovery leaves alone for a minute (its job
 * may not have locked it yet, kvmsaveJournalRecover). */
static int
kvmsaveJournalCreate(const char *dir, const char *uuidstr, const char *path)
{
    g_autofree char *tmp = NULL;
    g_autofree char *self = NULL;
    VIR_AUTOCLOSE fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    int rc;

    if (fd < 0) {
        tmp = g_strdup_printf("%s/.%s-XXXXXX", dir, uuidstr);
        fd = g_mkstemp_full(tmp, O_RDWR | O_CLOEXEC, 0600);
    }
    if (fd < 0) {
        virReportSystemError(errno, _("cannot create a job journal in '%s'"), dir);
        return -1;
    }
    if (tmp ? kvmsaveJournalLock(fd, tmp) != KVMSAVE_JOURNAL_LOCK_OURS :
        fcntl(fd, F_OFD_SETLK, &fl) < 0) {
        if (virGetLastErrorCode() == VIR_ERR_OK)
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("cannot lock job journal '%s'"), path);
        if (tmp)
            unlink(tmp);
        return -1;
    }
    self = g_strdup_printf("/proc/self/fd/%d", fd);
    rc = tmp ? link(tmp, path) :
        linkat(AT_FDCWD, self, AT_FDCWD, path, AT_SYMLINK_FOLLOW);
    if (rc < 0) {
        int err = errno;

        if (tmp)
            unlink(tmp);
        if (err == EEXIST) {
            virReportError(VIR_ERR_OPERATION_INVALID, "%s",
                           _("another save/restore job is running for this guest (in another process)"));
        } else {
            virReportSystemError(err, _("cannot create job journal '%s'"), path);
        }
        return -1;
    }
    if (tmp)
        unlink(tmp);
    rc = fd;
    fd = -1;
    return rc;
}


kvmsaveJournal *
kvmsaveJournalBegin(kvmsaveConn *priv, const unsigned char *uuid,
                    kvmsaveJournalKind kind, bool *recovered)
{
    g_autofree char *dir = kvmsaveJournalDir(priv);
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

            if (!kvmsaveRecoverJob(priv, inner, path, old, &foreign)) {
                virReportError(VIR_ERR_OPERATION_INVALID,
                               _("a killed kvmsave client of connection '%s' left the job journal '%s' of this guest; connect through that URI to recover its job, or remove the file if that connection is gone"),
                               foreign, path);
                return NULL;
            }
            if (recovered)
                *recovered = true;
        }
    }

    if ((fd = kvmsaveJournalCreate(dir, uuidstr, path)) < 0)
        return NULL;

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


bool
kvmsaveJournalIsLive(const char *path)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    VIR_AUTOCLOSE fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

    return fd >= 0 && fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
}


/* Call @fn on every journal of @priv whose job is dead, open and locked
 * by us; @unnamed for those that died before they had a name too. */
static void
kvmsaveJournalForEachDead(kvmsaveConn *priv, bool unnamed,
                          void (*fn)(kvmsaveConn *priv, const char *ours,
                                     const char *name, const char *path, int fd))
{
    g_autofree char *dir = kvmsaveJournalDir(priv);
    g_autofree char *ours = kvmsaveJournalInner(priv);
    g_autoptr(DIR) dh = NULL;
    struct dirent *ent;

    if (!(dh = opendir(dir)))
        return;
    while ((ent = readdir(dh))) {
        g_autofree char *path = g_build_filename(dir, ent->d_name, NULL);
        VIR_AUTOCLOSE fd = -1;

        if (STREQ(ent->d_name, ".") || STREQ(ent->d_name, "..") ||
            (!unnamed && ent->d_name[0] == '.'))
            continue;
        if ((fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW)) < 0)
            continue;
        if (kvmsaveJournalLock(fd, path) != KVMSAVE_JOURNAL_LOCK_OURS) {
            virResetLastError();
            continue;           /* a live job, or one just ended */
        }
        fn(priv, ours, ent->d_name, path, fd);
    }
}


static void
kvmsaveJournalRecoverOne(kvmsaveConn *priv, const char *ours,
                         const char *name, const char *path, int fd)
{
    g_autofree char *foreign = NULL;
    struct stat sb;

    if (name[0] == '.') {
        /* Died before its journal had a name; a young one may be a live
         * job between creating and locking it. */
        if (fstat(fd, &sb) == 0 && sb.st_mtime < time(NULL) - 60)
            unlink(path);
        return;
    }
    /* What the killed job last showed other clients goes with it. */
    if (kvmsaveRecoverJob(priv, ours, path, fd, &foreign))
        kvmsaveJobBoardForget(path);
}


void
kvmsaveJournalRecover(kvmsaveConn *priv)
{
    kvmsaveJournalForEachDead(priv, true, kvmsaveJournalRecoverOne);
}


static void
kvmsaveJournalKillLoader(kvmsaveConn *priv G_GNUC_UNUSED, const char *ours,
                         const char *name G_GNUC_UNUSED, const char *path, int fd)
{
    kvmsaveRecoverKillLoader(ours, path, fd);
}


void
kvmsaveJournalKillLoaders(kvmsaveConn *priv)
{
    kvmsaveJournalForEachDead(priv, false, kvmsaveJournalKillLoader);
}
