/*
 * kvmsave-pagesrv: the page server of one lazy restore
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 *   kvmsave-pagesrv [--recover] [--status FILE] --socket-fd N
 *                   [--qmp-fd M --recover-socket PATH] IMAGE
 *   kvmsave-pagesrv --recover --status FILE [--lock-fd L]
 *                   --qmp-fd M --recover-socket PATH IMAGE
 *
 * Started by kvmsave per lazy restore, with the image open on standard
 * input and its end of QEMU's incoming migration socket as descriptor N;
 * it outlives the client that started it and ends once QEMU has every
 * page. --recover continues a migration QEMU paused after its previous
 * page server was lost. --status FILE is rewritten (atomically, by
 * rename) as the pages go: "state pages total asked", then the error.
 * IMAGE names the image in messages; it is never opened by path.
 *
 * With --qmp-fd, a QEMU monitor connection that negotiated out-of-band
 * commands, the pages are served by a child process, and this one
 * supervises it: when the child is killed, QEMU pauses the migration
 * (postcopy-paused); the supervisor tells QEMU out of band to listen on
 * PATH (migrate-recover), connects, and starts a child that recovers.
 * Out of band, because QEMU's main loop may itself wait for a page that
 * only a page server can send. Without --socket-fd, it starts so: a
 * later kvmsave connection found the supervisor of a restore lost too.
 * --lock-fd: the status file's lock, which that connection took.
 */
#include <config.h>

#include <fcntl.h>
#include <getopt.h>
#include <libintl.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvmsave_multifd.h"
#include "kvmsave_pagesrv.h"
#include "kvmsave_qmp.h"
#include "kvmsave_util.h"
#include "virerror.h"
#include "virfile.h"
#include "virstring.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

#define STATUS_INTERVAL_US (200 * 1000)
/* QEMU answers an out-of-band command at once; a paused migration is
 * seen within milliseconds of its source's end. */
#define QMP_TIMEOUT_MS (30 * 1000)
#define PAUSE_WAIT_US (10 * 1000)
#define PAUSE_WAIT_TRIES 3000

typedef struct {
    kvmsavePageServer *ps;
    const char *status;
    GMutex lock;
    GCond cond;
    bool ended;
} Progress;


static void
writeStatusCounts(const char *path, const char *state, uint64_t done,
                  uint64_t total, uint64_t asked, const char *error)
{
    g_autofree char *text = NULL;

    if (!path)
        return;
    text = g_strdup_printf("%s %llu %llu %llu\n%s\n", state,
                           (unsigned long long) done, (unsigned long long) total,
                           (unsigned long long) asked, error ? error : "");
    if (kvmsaveReplaceFile(path, text, strlen(text)) < 0)
        fprintf(stderr, "kvmsave-pagesrv: cannot write %s: %s\n", path,
                g_strerror(errno));
}


static void
writeStatus(const char *path, const char *state, kvmsavePageServer *ps,
            const char *error)
{
    uint64_t total = 0, done = 0, asked = 0;

    if (ps) {
        done = kvmsavePageServerDone(ps, &total);
        asked = kvmsavePageServerAsked(ps);
    }
    writeStatusCounts(path, state, done, total, asked, error);
}


/* QEMU had every page before the page server that sent them ended:
 * done, with that server's last counts. */
static void
writeStatusDone(const char *path)
{
    g_autofree char *text = NULL;
    unsigned long long done = 0, total = 0, asked = 0;

    if (path && g_file_get_contents(path, &text, NULL, NULL) &&
        sscanf(text, "%*s %llu %llu %llu", &done, &total, &asked) != 3)
        total = asked = 0;
    writeStatusCounts(path, "done", total, total, asked, NULL);
}


static gpointer
progressThread(gpointer opaque)
{
    Progress *p = opaque;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&p->lock);

    while (!p->ended) {
        gint64 until = g_get_monotonic_time() + STATUS_INTERVAL_US;

        writeStatus(p->status, "serving", p->ps, NULL);
        while (!p->ended && g_cond_wait_until(&p->cond, &p->lock, until))
            ;
    }
    return NULL;
}


static void
usage(FILE *out)
{
    fprintf(out, "%s", _("usage: kvmsave-pagesrv [--recover] [--status FILE] --socket-fd N [--qmp-fd M --recover-socket PATH] IMAGE\n"
                         "       kvmsave-pagesrv --recover --status FILE [--lock-fd L] --qmp-fd M --recover-socket PATH IMAGE\n"));
}


static int
serve(const char *image, int sock, bool recover, const char *status)
{
    g_autoptr(kvmsavePageServer) ps = NULL;
    Progress p = { .status = status };
    GThread *t = NULL;
    int rc;

    if (!(ps = kvmsavePageServerOpen(image, STDIN_FILENO)))
        return -1;
    g_mutex_init(&p.lock);
    g_cond_init(&p.cond);
    p.ps = ps;
    if (status)
        t = g_thread_new("kvmsave-status", progressThread, &p);
    rc = kvmsavePageServerRun(ps, sock, recover);
    if (t) {
        g_mutex_lock(&p.lock);
        p.ended = true;
        g_cond_signal(&p.cond);
        g_mutex_unlock(&p.lock);
        g_thread_join(t);
    }
    writeStatus(status, rc == 0 ? "done" : "failed", ps,
                rc == 0 ? NULL : virGetLastErrorMessage());
    g_mutex_clear(&p.lock);
    g_cond_clear(&p.cond);
    return rc;
}


/* Connect to the socket QEMU listens on for the recovered migration. */
static int
connectRecoverSocket(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    if (virStrcpyStatic(sa.sun_path, path) < 0) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("socket path '%s' is too long"), path);
        return -1;
    }
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
        connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
        virReportSystemError(errno, _("cannot connect to QEMU's recovery socket '%s'"),
                             path);
        VIR_FORCE_CLOSE(fd);
        return -1;
    }
    return fd;
}


/* Have QEMU, which paused the migration when its page server was lost,
 * listen on @path for a new one, and connect to it: 0 and the connection
 * in *@sock. QEMU refuses until it has seen the old connection end; 1 if
 * it had every page by then, and the migration is complete. */
static int
recoverMigration(kvmsaveQmp *qmp, const char *path, int *sock)
{
    g_autofree char *uri = g_strdup_printf("unix:%s", path);
    unsigned int tries;

    for (tries = 0; ; tries++) {
        g_autoptr(virJSONValue) args = NULL;
        g_autofree char *qemuError = NULL;
        const char *status;
        int rc;

        if (virJSONValueObjectAdd(&args, "s:uri", uri, NULL) < 0 ||
            (rc = kvmsaveQmpCommand(qmp, "migrate-recover", g_steal_pointer(&args),
                                    true, &qemuError)) < 0)
            return -1;
        if (rc == 0)
            break;
        status = kvmsaveQmpMigrationStatus(qmp);
        if (STREQ_NULLABLE(status, "completed"))
            return 1;
        if (STREQ_NULLABLE(status, "failed") || tries >= PAUSE_WAIT_TRIES) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("QEMU did not take a new page server after the last one ended (migration %s): %s"),
                           NULLSTR(status), qemuError);
            return -1;
        }
        g_usleep(PAUSE_WAIT_US);
    }
    return (*sock = connectRecoverSocket(path)) < 0 ? -1 : 0;
}


/* Serve in a child process, which takes @sock; 0 once it served every
 * page, 1 if it was killed, -1 if it failed (its status says why). */
static int
serveInChild(const char *image, int sock, bool recover, const char *status,
             int qmpfd)
{
    pid_t pid;
    int st;

    if ((pid = fork()) < 0) {
        virReportSystemError(errno, "%s", _("cannot start a page server"));
        VIR_FORCE_CLOSE(sock);
        return -1;
    }
    if (pid == 0) {
        VIR_FORCE_CLOSE(qmpfd);
        if (serve(image, sock, recover, status) < 0) {
            fprintf(stderr, "kvmsave-pagesrv: %s: %s\n", image, virGetLastErrorMessage());
            _exit(EXIT_FAILURE);
        }
        _exit(EXIT_SUCCESS);
    }
    /* QEMU must see the connection end when the child does. */
    VIR_FORCE_CLOSE(sock);
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) {
            virReportSystemError(errno, "%s", _("cannot wait for the page server"));
            return -1;
        }
    }
    if (WIFSIGNALED(st)) {
        fprintf(stderr, "kvmsave-pagesrv: page server %lld killed by signal %d; recovering\n",
                (long long) pid, WTERMSIG(st));
        return 1;
    }
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}


/* Hold a lock on STATUS.lock for as long as this process or a child
 * serves: readers of a status that says "serving" tell from it whether
 * a page server still does. */
static int
lockStatus(const char *status)
{
    g_autofree char *path = g_strdup_printf("%s.lock", status);
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    int fd;

    if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0 ||
        fcntl(fd, F_OFD_SETLK, &fl) < 0) {
        virReportSystemError(errno, _("cannot lock '%s'"), path);
        VIR_FORCE_CLOSE(fd);
        return -1;
    }
    return fd;
}


/* Have QEMU close its copy of the monitor connection (kvmsave_lazy.c). */
static void
releaseQmp(kvmsaveQmp *qmp)
{
    g_autoptr(virJSONValue) args = NULL;
    g_autofree char *qemuError = NULL;

    if (virJSONValueObjectAdd(&args, "s:fdname", KVMSAVE_PAGESRV_QMP_FDNAME, NULL) < 0 ||
        kvmsaveQmpCommand(qmp, "closefd", g_steal_pointer(&args), false, &qemuError) != 0) {
        fprintf(stderr, "kvmsave-pagesrv: QEMU keeps its copy of the monitor connection: %s\n",
                qemuError ? qemuError : virGetLastErrorMessage());
        virResetLastError();
    }
}


/* After the page server was lost: a new connection in *@sock, and 1; 0
 * if QEMU needs none (it had every page); -1 on error. The status file
 * says which. */
static int
recoverAfterLoss(kvmsaveQmp *qmp, const char *recoverPath, const char *status,
                 int *sock)
{
    int rc = recoverMigration(qmp, recoverPath, sock);

    if (rc < 0) {
        writeStatus(status, "failed", NULL, virGetLastErrorMessage());
        return -1;
    }
    if (rc == 1) {
        fprintf(stderr, "%s", "kvmsave-pagesrv: QEMU had every page when its page server ended\n");
        writeStatusDone(status);
        return 0;
    }
    return 1;
}


/* Serve through children, each replacing the last one killed. @sock -1:
 * start by recovering the migration QEMU paused. */
static int
supervise(const char *image, int sock, int qmpfd, int lock,
          const char *recoverPath, const char *status)
{
    g_autoptr(kvmsaveQmp) qmp = kvmsaveQmpAdopt(qmpfd, QMP_TIMEOUT_MS);
    g_autofree char *sockdir = g_path_get_dirname(recoverPath);
    g_autofree char *rundir = g_path_get_dirname(sockdir);
    VIR_AUTOCLOSE lockfd = lock >= 0 ? lock : status ? lockStatus(status) : -1;
    bool recover = sock < 0;
    int rc;

    if (status && lockfd < 0)
        return -1;
    rc = recover ? recoverAfterLoss(qmp, recoverPath, status, &sock) : 1;
    while (rc == 1) {
        /* serveInChild closes the connection, whatever happens */
        if ((rc = serveInChild(image, sock, recover, status, qmpfd)) == 1)
            rc = recoverAfterLoss(qmp, recoverPath, status, &sock);
        recover = true;
    }
    /* Every page is in: nobody needs the connection any more, and QEMU
     * would hold what it says to nobody. */
    if (rc == 0)
        releaseQmp(qmp);
    /* kvmsave's directory of the restore's sockets (it checks that it is). */
    kvmsaveMultifdRemoveDir(rundir);
    if (rc < 0) {
        /* The child's own error is in the status file. */
        virReportError(VIR_ERR_OPERATION_FAILED, "%s",
                       _("the page server failed; its status file says why"));
    }
    return rc == 0 ? 0 : -1;
}


int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "recover", no_argument, NULL, 'r' },
        { "status", required_argument, NULL, 's' },
        { "socket-fd", required_argument, NULL, 'f' },
        { "qmp-fd", required_argument, NULL, 'q' },
        { "recover-socket", required_argument, NULL, 'p' },
        { "lock-fd", required_argument, NULL, 'l' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *localedir = getenv("KVMSAVE_LOCALEDIR");
    const char *status = NULL;
    const char *recoverPath = NULL;
    bool recover = false;
    int sock = -1;
    int qmpfd = -1;
    int lockfd = -1;
    int rc;
    int c;

    setlocale(LC_ALL, "");
    bindtextdomain(PACKAGE, localedir && *localedir ? localedir : LOCALEDIR);
    textdomain(PACKAGE);
    signal(SIGPIPE, SIG_IGN);
    if (virErrorInitialize() < 0)
        return EXIT_FAILURE;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            recover = true;
            break;
        case 's':
            status = optarg;
            break;
        case 'f':
            sock = atoi(optarg);
            break;
        case 'q':
            qmpfd = atoi(optarg);
            break;
        case 'p':
            recoverPath = optarg;
            break;
        case 'l':
            lockfd = atoi(optarg);
            break;
        case 'h':
            usage(stdout);
            return EXIT_SUCCESS;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1 || (qmpfd >= 0) != !!recoverPath ||
        (sock < 0 && !(recover && qmpfd >= 0 && status)) ||
        (lockfd >= 0 && sock >= 0)) {
        usage(stderr);
        return 2;
    }
    if (qmpfd >= 0)
        rc = supervise(argv[optind], sock, qmpfd, lockfd, recoverPath, status);
    else
        rc = serve(argv[optind], sock, recover, status);
    if (rc < 0) {
        fprintf(stderr, "kvmsave-pagesrv: %s: %s\n", argv[optind],
                virGetLastErrorMessage());
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}
