/*
 * kvmsave_multifd.c: the socket QEMU's multifd streams go through
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "tempname.h"

#include "kvmsave_multifd.h"
#include "kvmsave_xml.h"
#include "virerror.h"
#include "virfile.h"
#include "virstring.h"
#include "virlog.h"
#include "virprocess.h"
#include "virutil.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.multifd");

/* Recovery removes only directories named so. */
#define KVMSAVE_MULTIFD_PREFIX "kvmsave-mfd-"
#define KVMSAVE_MULTIFD_SOCKET "s"

struct _kvmsaveMultifd {
    char *dir;
    char *path;
    uid_t uid;                  /* QEMU's user and group */
    gid_t gid;
    int listenfd;
    pid_t peer;                 /* QEMU, the listener we connected to */
};


/* See kvmsaveMultifdDestroyIncoming: libvirt reaches its SIGTERM, and a
 * QEMU that heeds it exits, in milliseconds. */
#define KVMSAVE_MULTIFD_KILL_GRACE_MS 500
/* How long a SIGKILLed QEMU may take to exit (its memory freed). */
#define KVMSAVE_MULTIFD_KILL_WAIT_MS 5000


/* The user QEMU runs as: the DAC label libvirt gave it, else ours. */
static int
kvmsaveMultifdQemuUser(virDomainPtr dom, uid_t *uid, gid_t *gid)
{
    g_autofree char *xml = NULL;
    g_autofree char *label = NULL;

    *uid = geteuid();
    *gid = getegid();
    if (!(xml = virDomainGetXMLDesc(dom, 0)))
        return -1;
    if (!(label = kvmsaveXMLGetDACLabel(xml)))
        return 0;
    if (virParseOwnershipIds(label, uid, gid) < 0)
        return -1;
    return 0;
}


/* The user the QEMU of guest @xml, not started yet, will run as on
 * @conn: the DAC label of its XML, else the driver's base label for
 * guests of its type, else ours. */
static int
kvmsaveMultifdQemuUserOfXML(virConnectPtr conn, const char *xml,
                            uid_t *uid, gid_t *gid)
{
    g_autofree char *label = NULL;
    g_autofree char *type = NULL;
    g_autofree char *caps = NULL;
    g_autofree char *expr = NULL;

    *uid = geteuid();
    *gid = getegid();
    if (!(label = kvmsaveXMLGetDACLabel(xml))) {
        if (!(type = kvmsaveXMLGetString(xml, "domain", "/domain/@type")) ||
            !(caps = virConnectGetCapabilities(conn)))
            return type ? -1 : 0;
        expr = g_strdup_printf("/capabilities/host/secmodel[model='dac']/baselabel[@type='%s']",
                               type);
        if (!(label = kvmsaveXMLGetString(caps, "capabilities", expr)))
            return 0;
    }
    if (virParseOwnershipIds(label, uid, gid) < 0)
        return -1;
    return 0;
}


char *
kvmsaveMultifdDirName(void)
{
    g_autofree char *dir = g_build_filename(g_get_tmp_dir(),
                                            KVMSAVE_MULTIFD_PREFIX "XXXXXX", NULL);

    if (gen_tempname(dir, 0, 0, GT_NOCREATE) < 0) {
        virReportSystemError(errno,
                             _("cannot create a directory for QEMU's multifd sockets in '%s'"),
                             g_get_tmp_dir());
        return NULL;
    }
    return g_steal_pointer(&dir);
}


static kvmsaveMultifd *
kvmsaveMultifdNewDir(const char *dir, uid_t uid, gid_t gid, bool qemuListens)
{
    g_autoptr(kvmsaveMultifd) m = g_new0(kvmsaveMultifd, 1);
    g_autofree char *sub = NULL;
    struct sockaddr_un sa;

    m->listenfd = -1;
    m->uid = uid;
    m->gid = gid;
    /* Not under the root: its run directory is root's alone, and a unix
     * socket's path must be short. The outer directory, @dir (named by
     * kvmsaveMultifdDirName, and by the caller's journal before it exists),
     * is root's and cannot be listed (0711); the inner one, of a random
     * name nobody else can learn, holds the socket. It is QEMU's only when
     * QEMU must create its listening socket there; else root's too, so
     * that nobody can swap the socket for a symbolic link while we give it
     * to QEMU's user. A directory already there is not ours: EEXIST. */
    if (mkdir(dir, 0700) < 0) {
        virReportSystemError(errno,
                             _("cannot create a directory for QEMU's multifd sockets in '%s'"),
                             g_get_tmp_dir());
        return NULL;
    }
    m->dir = g_strdup(dir);
    sub = g_build_filename(m->dir, "XXXXXX", NULL);
    if (!g_mkdtemp_full(sub, 0700)) {
        virReportSystemError(errno,
                             _("cannot create a directory for QEMU's multifd sockets in '%s'"),
                             m->dir);
        return NULL;
    }
    if ((qemuListens ? chown(sub, m->uid, m->gid) : chmod(sub, 0711)) < 0 ||
        chmod(m->dir, 0711) < 0) {
        virReportSystemError(errno,
                             _("cannot give directory '%s' to QEMU's user %u"),
                             sub, (unsigned int) m->uid);
        return NULL;
    }
    m->path = g_build_filename(sub, KVMSAVE_MULTIFD_SOCKET, NULL);
    if (strlen(m->path) >= sizeof(sa.sun_path)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("socket path '%s' is too long for a unix socket; set TMPDIR to a shorter directory"),
                       m->path);
        return NULL;
    }
    return g_steal_pointer(&m);
}


kvmsaveMultifd *
kvmsaveMultifdNew(virDomainPtr dom, const char *dir)
{
    uid_t uid;
    gid_t gid;

    if (kvmsaveMultifdQemuUser(dom, &uid, &gid) < 0)
        return NULL;
    return kvmsaveMultifdNewDir(dir, uid, gid, false);
}


kvmsaveMultifd *
kvmsaveMultifdNewPrivate(const char *dir)
{
    return kvmsaveMultifdNewDir(dir, geteuid(), getegid(), false);
}


kvmsaveMultifd *
kvmsaveMultifdNewIncoming(virConnectPtr conn, const char *xml,
                          const char *dir)
{
    uid_t uid;
    gid_t gid;

    if (kvmsaveMultifdQemuUserOfXML(conn, xml, &uid, &gid) < 0)
        return NULL;
    return kvmsaveMultifdNewDir(dir, uid, gid, true);
}


void
kvmsaveMultifdRemove(kvmsaveMultifd *m)
{
    if (!m->dir)
        return;
    kvmsaveMultifdRemoveDir(m->dir);
    g_clear_pointer(&m->dir, g_free);
}


void
kvmsaveMultifdKeep(kvmsaveMultifd *m)
{
    g_clear_pointer(&m->dir, g_free);
}


void
kvmsaveMultifdFree(kvmsaveMultifd *m)
{
    if (!m)
        return;
    VIR_FORCE_CLOSE(m->listenfd);
    kvmsaveMultifdRemove(m);
    g_free(m->path);
    g_free(m);
}


const char *
kvmsaveMultifdDir(kvmsaveMultifd *m)
{
    return m->dir;
}


const char *
kvmsaveMultifdPath(kvmsaveMultifd *m)
{
    return m->path;
}


static void
kvmsaveMultifdAddress(kvmsaveMultifd *m, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, m->path, strlen(m->path)); /* length checked in New */
}


/* Only QEMU's user (or root) may be at the other end; its pid in
 * *@pid unless NULL. */
static int
kvmsaveMultifdCheckPeer(kvmsaveMultifd *m, int fd, pid_t *pid)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        virReportSystemError(errno, _("cannot identify the peer on socket '%s'"),
                             m->path);
        return -1;
    }
    if (cred.uid != m->uid) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("unexpected peer on multifd socket '%s': process %lld of user %u, not QEMU's user %u"),
                       m->path, (long long) cred.pid,
                       (unsigned int) cred.uid, (unsigned int) m->uid);
        return -1;
    }
    if (pid)
        *pid = cred.pid;
    return 0;
}


int
kvmsaveMultifdListen(kvmsaveMultifd *m, unsigned int backlog)
{
    struct sockaddr_un sa;

    kvmsaveMultifdAddress(m, &sa);
    if ((m->listenfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
        bind(m->listenfd, (struct sockaddr *) &sa, sizeof(sa)) < 0 ||
        chown(m->path, m->uid, m->gid) < 0 ||
        chmod(m->path, 0600) < 0 ||
        listen(m->listenfd, backlog) < 0) {
        virReportSystemError(errno, _("cannot listen on socket '%s' for QEMU's multifd streams"),
                             m->path);
        return -1;
    }
    return 0;
}


int
kvmsaveMultifdAccept(kvmsaveMultifd *m, int timeout)
{
    struct pollfd pfd = { .fd = m->listenfd, .events = POLLIN };
    int fd;
    int rc;

    while ((rc = poll(&pfd, 1, timeout)) < 0 && errno == EINTR)
        ;
    if (rc < 0) {
        virReportSystemError(errno, _("cannot wait for QEMU on socket '%s'"),
                             m->path);
        return -1;
    }
    if (rc == 0)
        return -2;
    if ((fd = accept4(m->listenfd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
        virReportSystemError(errno, _("cannot accept QEMU's connection on socket '%s'"),
                             m->path);
        return -1;
    }
    if (kvmsaveMultifdCheckPeer(m, fd, NULL) < 0) {
        VIR_FORCE_CLOSE(fd);
        return -1;
    }
    return fd;
}


int
kvmsaveMultifdConnect(kvmsaveMultifd *m)
{
    struct sockaddr_un sa;
    int fd;

    kvmsaveMultifdAddress(m, &sa);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
        connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
        virReportSystemError(errno, _("cannot connect to QEMU's multifd socket '%s'"),
                             m->path);
        VIR_FORCE_CLOSE(fd);
        return -1;
    }
    if (kvmsaveMultifdCheckPeer(m, fd, &m->peer) < 0) {
        VIR_FORCE_CLOSE(fd);
        return -1;
    }
    return fd;
}


int
kvmsaveMultifdPeerPidfd(kvmsaveMultifd *m, long long *pid,
                        unsigned long long *start)
{
    int pidfd;

    if (m->peer <= 0)
        return -1;
    if ((pidfd = pidfd_open(m->peer, 0)) < 0) {
        VIR_DEBUG("cannot hold QEMU's process %lld: %s",
                  (long long) m->peer, g_strerror(errno));
        return -1;
    }
    *pid = m->peer;
    if (virProcessGetStartTime(m->peer, start) < 0) {
        virResetLastError();
        *pid = 0;
    }
    return pidfd;
}


int
kvmsaveMultifdPidfdOf(long long pid, unsigned long long start)
{
    unsigned long long now;
    int pidfd;

    if (pid <= 0 || (pidfd = pidfd_open(pid, 0)) < 0)
        return -1;
    /* Opened first: a start time that still matches is that process's. */
    if (virProcessGetStartTime(pid, &now) < 0 || now != start) {
        virResetLastError();
        VIR_FORCE_CLOSE(pidfd);
    }
    return pidfd;
}


int
kvmsaveMultifdKillIncoming(int qemuPidfd)
{
    struct pollfd pfd = { .fd = qemuPidfd, .events = POLLIN };
    int rc;

    if (pidfd_send_signal(qemuPidfd, SIGKILL, NULL, 0) < 0)
        return -1;
    while ((rc = poll(&pfd, 1, KVMSAVE_MULTIFD_KILL_WAIT_MS)) < 0 && errno == EINTR)
        ;
    if (rc == 0)
        errno = ETIMEDOUT;
    return rc == 1 ? 0 : -1;
}


static gpointer
kvmsaveMultifdKillLate(gpointer opaque)
{
    int pidfd = GPOINTER_TO_INT(opaque);
    struct pollfd pfd = { .fd = pidfd, .events = POLLIN };
    int rc;

    while ((rc = poll(&pfd, 1, KVMSAVE_MULTIFD_KILL_GRACE_MS)) < 0 &&
           errno == EINTR)
        ;
    if (rc == 0 && pidfd_send_signal(pidfd, SIGKILL, NULL, 0) == 0)
        VIR_DEBUG("QEMU, still loading, outlived SIGTERM by %d ms: killed",
                  KVMSAVE_MULTIFD_KILL_GRACE_MS);
    return NULL;
}


int
kvmsaveMultifdDestroyIncoming(virDomainPtr dom, int qemuPidfd)
{
    GThread *killer = NULL;
    int rc;

    if (qemuPidfd >= 0)
        killer = g_thread_try_new("kvmsave-kill", kvmsaveMultifdKillLate,
                                  GINT_TO_POINTER(qemuPidfd), NULL);
    rc = virDomainDestroy(dom);
    if (killer)
        g_thread_join(killer);
    return rc;
}


/* Empty directory @name in @parentfd (no symbolic link followed: QEMU's
 * user may own it), then remove it. */
static void
kvmsaveMultifdRemoveInner(int parentfd, const char *name)
{
    g_autoptr(DIR) dh = NULL;
    struct dirent *ent;
    int fd;

    if ((fd = openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
        return;
    if (!(dh = fdopendir(fd))) {
        VIR_FORCE_CLOSE(fd);
        return;
    }
    while ((ent = readdir(dh))) {
        if (STRNEQ(ent->d_name, ".") && STRNEQ(ent->d_name, "..") &&
            unlinkat(dirfd(dh), ent->d_name, 0) < 0)
            VIR_WARN("cannot remove %s in a multifd socket directory: %s",
                     ent->d_name, g_strerror(errno));
    }
    if (unlinkat(parentfd, name, AT_REMOVEDIR) < 0)
        VIR_WARN("cannot remove multifd socket directory %s: %s",
                 name, g_strerror(errno));
}


void
kvmsaveMultifdRemoveDir(const char *dir)
{
    g_autofree char *base = g_path_get_basename(dir);
    g_autoptr(DIR) dh = NULL;
    struct dirent *ent;
    struct stat sb;
    int fd;

    if (!g_str_has_prefix(base, KVMSAVE_MULTIFD_PREFIX))
        return;
    /* Ours: a real directory of root's, not a link someone put there. */
    if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
        return;
    if (fstat(fd, &sb) < 0 || sb.st_uid != geteuid() || !(dh = fdopendir(fd))) {
        VIR_FORCE_CLOSE(fd);
        return;
    }
    while ((ent = readdir(dh))) {
        if (STRNEQ(ent->d_name, ".") && STRNEQ(ent->d_name, ".."))
            kvmsaveMultifdRemoveInner(dirfd(dh), ent->d_name);
    }
    if (rmdir(dir) < 0 && errno != ENOENT)
        VIR_WARN("cannot remove multifd directory %s: %s", dir, g_strerror(errno));
}
