/*
 * kvmsave_qmp.c: a QMP connection of kvmsave's own, with out-of-band
 * commands
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "kvmsave_qmp.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"
#include "virstring.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.qmp");

struct _kvmsaveQmp {
    int fd;
    int timeout;                /* milliseconds per answer */
    unsigned long long serial;
    GString *in;                /* read, not yet a whole line */
    char *migration;            /* status of the last MIGRATION event */
};


void
kvmsaveQmpFree(kvmsaveQmp *qmp)
{
    if (!qmp)
        return;
    VIR_FORCE_CLOSE(qmp->fd);
    g_string_free(qmp->in, TRUE);
    g_free(qmp->migration);
    g_free(qmp);
}


int
kvmsaveQmpFD(kvmsaveQmp *qmp)
{
    return qmp->fd;
}


const char *
kvmsaveQmpMigrationStatus(kvmsaveQmp *qmp)
{
    return qmp->migration;
}


/* Keep what an event says of the migration: its state changes come
 * only as events while QEMU's main loop may be waiting for a page. */
static void
kvmsaveQmpNoteEvent(kvmsaveQmp *qmp, virJSONValue *msg)
{
    virJSONValue *data = virJSONValueObjectGetObject(msg, "data");
    const char *status = data ? virJSONValueObjectGetString(data, "status") : NULL;

    if (STRNEQ_NULLABLE(virJSONValueObjectGetString(msg, "event"), "MIGRATION") ||
        !status)
        return;
    VIR_DEBUG("QEMU's migration is %s", status);
    g_free(qmp->migration);
    qmp->migration = g_strdup(status);
}


static void
kvmsaveQmpReportClosed(void)
{
    virReportError(VIR_ERR_OPERATION_FAILED, "%s",
                   _("QEMU closed its monitor: the guest's QEMU is gone"));
}


/* The next whole line QEMU sent, parsed; NULL with an error on EOF, a
 * timeout or a line that is not JSON. */
static virJSONValue *
kvmsaveQmpReadMessage(kvmsaveQmp *qmp)
{
    for (;;) {
        char *nl = memchr(qmp->in->str, '\n', qmp->in->len);
        struct pollfd pfd = { .fd = qmp->fd, .events = POLLIN };
        char buf[4096];
        ssize_t got;
        int rc;

        if (nl) {
            g_autofree char *line = g_strndup(qmp->in->str, nl - qmp->in->str);
            virJSONValue *msg;

            g_string_erase(qmp->in, 0, nl - qmp->in->str + 1);
            if (!(msg = virJSONValueFromString(line)))
                return NULL;
            return msg;
        }
        while ((rc = poll(&pfd, 1, qmp->timeout)) < 0 && errno == EINTR)
            ;
        if (rc == 0) {
            virReportError(VIR_ERR_OPERATION_TIMEOUT,
                           _("QEMU's monitor did not answer within %d ms"),
                           qmp->timeout);
            return NULL;
        }
        while ((got = read(qmp->fd, buf, sizeof(buf))) < 0 && errno == EINTR)
            ;
        if (got < 0) {
            virReportSystemError(errno, "%s", _("cannot read from QEMU's monitor"));
            return NULL;
        }
        if (got == 0) {
            kvmsaveQmpReportClosed();
            return NULL;
        }
        g_string_append_len(qmp->in, buf, got);
    }
}


/* A QEMU that went away is an error, not a SIGPIPE. */
/* One sendmsg of @len bytes of @text with @passfd attached. */
static ssize_t
kvmsaveQmpSendWithFD(int fd, const char *text, size_t len, int passfd)
{
    char control[CMSG_SPACE(sizeof(int))] = { 0 };
    struct iovec iov = { .iov_base = (void *) text, .iov_len = len };
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = control, .msg_controllen = sizeof(control),
    };
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);

    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &passfd, sizeof(int));
    return sendmsg(fd, &msg, MSG_NOSIGNAL);
}


/* Send @text; @passfd (-1: none) goes with its first bytes. */
static int
kvmsaveQmpSend(int fd, const char *text, int passfd)
{
    size_t len = strlen(text);

    while (len > 0) {
        ssize_t n;

        if (passfd >= 0)
            n = kvmsaveQmpSendWithFD(fd, text, len, passfd);
        else
            n = send(fd, text, len, MSG_NOSIGNAL);
        if (n >= 0)
            passfd = -1;

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        text += n;
        len -= n;
    }
    return 0;
}


int
kvmsaveQmpCommand(kvmsaveQmp *qmp, const char *cmd, virJSONValue *args,
                  bool oob, char **qemuError)
{
    return kvmsaveQmpCommandFD(qmp, cmd, args, oob, -1, qemuError);
}


int
kvmsaveQmpCommandFD(kvmsaveQmp *qmp, const char *cmd, virJSONValue *args,
                    bool oob, int passfd, char **qemuError)
{
    g_autoptr(virJSONValue) argsp = args;
    g_autoptr(virJSONValue) req = NULL;
    /* A connection may pass to another process with a stale answer in it. */
    g_autofree char *id = g_strdup_printf("kvmsave-%lld-%llu", (long long) getpid(),
                                          ++qmp->serial);
    g_autofree char *text = NULL;

    if (virJSONValueObjectAdd(&req, "s:id", id,
                              "S:execute", oob ? NULL : cmd,
                              "S:exec-oob", oob ? cmd : NULL,
                              "A:arguments", &argsp, NULL) < 0 ||
        !(text = virJSONValueToString(req, false)))
        return -1;
    VIR_DEBUG("QMP%s: %s", oob ? " out of band" : "", text);
    if (kvmsaveQmpSend(qmp->fd, text, passfd) < 0 || kvmsaveQmpSend(qmp->fd, "\n", -1) < 0) {
        if (errno == EPIPE || errno == ECONNRESET)
            kvmsaveQmpReportClosed();
        else
            virReportSystemError(errno, _("cannot send '%s' to QEMU's monitor"), cmd);
        return -1;
    }
    for (;;) {
        g_autoptr(virJSONValue) msg = kvmsaveQmpReadMessage(qmp);
        virJSONValue *err;

        if (!msg)
            return -1;
        /* Events, and answers to commands that timed out before. */
        if (STRNEQ_NULLABLE(virJSONValueObjectGetString(msg, "id"), id)) {
            kvmsaveQmpNoteEvent(qmp, msg);
            continue;
        }
        if ((err = virJSONValueObjectGetObject(msg, "error"))) {
            *qemuError = g_strdup(NULLSTR(virJSONValueObjectGetString(err, "desc")));
            return 1;
        }
        return 0;
    }
}


static kvmsaveQmp *
kvmsaveQmpNew(int fd, int timeout)
{
    kvmsaveQmp *qmp = g_new0(kvmsaveQmp, 1);

    qmp->fd = fd;
    qmp->timeout = timeout;
    qmp->in = g_string_new(NULL);
    return qmp;
}


kvmsaveQmp *
kvmsaveQmpAdopt(int fd, int timeout)
{
    return kvmsaveQmpNew(fd, timeout);
}


kvmsaveQmp *
kvmsaveQmpConnect(const char *path, int timeout)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    g_autoptr(kvmsaveQmp) qmp = NULL;
    g_autoptr(virJSONValue) greeting = NULL;
    g_autoptr(virJSONValue) args = NULL;
    g_autoptr(virJSONValue) enable = virJSONValueNewArray();
    g_autofree char *qemuError = NULL;
    int fd;
    int rc;

    if (virStrcpyStatic(sa.sun_path, path) < 0) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("monitor socket path '%s' is too long"), path);
        return NULL;
    }
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
        virReportSystemError(errno, "%s", _("cannot create a socket"));
        return NULL;
    }
    qmp = kvmsaveQmpNew(fd, timeout);
    if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
        virReportSystemError(errno, _("cannot connect to QEMU's monitor '%s'"), path);
        return NULL;
    }
    if (!(greeting = kvmsaveQmpReadMessage(qmp)))
        return NULL;
    if (virJSONValueArrayAppendString(enable, "oob") < 0 ||
        virJSONValueObjectAdd(&args, "a:enable", &enable, NULL) < 0)
        return NULL;
    if ((rc = kvmsaveQmpCommand(qmp, "qmp_capabilities", g_steal_pointer(&args),
                                false, &qemuError)) < 0)
        return NULL;
    if (rc > 0) {
        virReportError(VIR_ERR_OPERATION_UNSUPPORTED,
                       _("QEMU's monitor refused out-of-band commands: %s"),
                       qemuError);
        return NULL;
    }
    return g_steal_pointer(&qmp);
}
