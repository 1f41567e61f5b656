/*
 * kvmsave_monitor.c: QMP commands sent through libvirt's monitor
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <libvirt/libvirt-qemu.h>

#include "kvmsave_monitor.h"
#include "virerror.h"

#define VIR_FROM_THIS VIR_FROM_QEMU


void
kvmsaveMigrationStatusClear(kvmsaveMigrationStatus *st)
{
    g_clear_pointer(&st->status, g_free);
    g_clear_pointer(&st->error, g_free);
    memset(st, 0, sizeof(*st));
}


virJSONValue *
kvmsaveMonitorCommand(virDomainPtr dom, const char *cmd,
                      virJSONValue *args, int *fds, unsigned int nfds)
{
    g_autoptr(virJSONValue) req = NULL;
    g_autoptr(virJSONValue) reply = NULL;
    g_autoptr(virJSONValue) argsp = args;
    g_autofree char *reqstr = NULL;
    g_autofree char *replystr = NULL;
    virJSONValue *err;
    virJSONValue *ret;

    if (virJSONValueObjectAdd(&req,
                              "s:execute", cmd,
                              "A:arguments", &argsp,
                              NULL) < 0)
        return NULL;
    if (!(reqstr = virJSONValueToString(req, false)))
        return NULL;

    if (virDomainQemuMonitorCommandWithFiles(dom, reqstr, nfds, fds,
                                             NULL, NULL, &replystr, 0) < 0)
        return NULL;

    if (!(reply = virJSONValueFromString(replystr)))
        return NULL;

    if ((err = virJSONValueObjectGetObject(reply, "error"))) {
        const char *desc = virJSONValueObjectGetString(err, "desc");
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("QEMU refused '%s': %s"), cmd, NULLSTR(desc));
        return NULL;
    }
    if (!(ret = virJSONValueObjectGet(reply, "return"))) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("QEMU's reply to '%s' has no return value"), cmd);
        return NULL;
    }
    return virJSONValueCopy(ret);
}


static int
kvmsaveMonitorCommandNoReply(virDomainPtr dom, const char *cmd,
                             virJSONValue *args, int *fds, unsigned int nfds)
{
    g_autoptr(virJSONValue) ret = kvmsaveMonitorCommand(dom, cmd, args,
                                                        fds, nfds);

    return ret ? 0 : -1;
}


int
kvmsaveMonitorGetFd(virDomainPtr dom, const char *fdname, int fd)
{
    g_autoptr(virJSONValue) args = NULL;

    if (virJSONValueObjectAdd(&args, "s:fdname", fdname, NULL) < 0)
        return -1;
    return kvmsaveMonitorCommandNoReply(dom, "getfd", g_steal_pointer(&args), &fd, 1);
}


int
kvmsaveMonitorCloseFd(virDomainPtr dom, const char *fdname)
{
    g_autoptr(virJSONValue) args = NULL;

    if (virJSONValueObjectAdd(&args, "s:fdname", fdname, NULL) < 0)
        return -1;
    return kvmsaveMonitorCommandNoReply(dom, "closefd", g_steal_pointer(&args), NULL, 0);
}


int
kvmsaveMonitorSetUnlimitedBandwidth(virDomainPtr dom)
{
    g_autoptr(virJSONValue) args = NULL;
    /* The largest value QEMU takes that libvirt also uses: INT64_MAX
     * rounded down to whole MiB (QEMU_DOMAIN_MIG_BANDWIDTH_MAX). */
    unsigned long long unlimited = (unsigned long long) (INT64_MAX >> 20) << 20;

    if (virJSONValueObjectAdd(&args, "U:max-bandwidth", unlimited, NULL) < 0)
        return -1;
    return kvmsaveMonitorCommandNoReply(dom, "migrate-set-parameters",
                                        g_steal_pointer(&args), NULL, 0);
}


static int
kvmsaveMonitorMigrateURI(virDomainPtr dom, const char *cmd, const char *uri)
{
    g_autoptr(virJSONValue) args = NULL;

    if (virJSONValueObjectAdd(&args, "s:uri", uri, NULL) < 0)
        return -1;
    return kvmsaveMonitorCommandNoReply(dom, cmd, g_steal_pointer(&args), NULL, 0);
}


int
kvmsaveMonitorMigrate(virDomainPtr dom, const char *scheme, const char *target)
{
    g_autofree char *uri = g_strdup_printf("%s:%s", scheme, target);

    return kvmsaveMonitorMigrateURI(dom, "migrate", uri);
}


int
kvmsaveMonitorMigrateIncoming(virDomainPtr dom, const char *scheme,
                              const char *target)
{
    g_autofree char *uri = g_strdup_printf("%s:%s", scheme, target);

    return kvmsaveMonitorMigrateURI(dom, "migrate-incoming", uri);
}


int
kvmsaveMonitorSetCapability(virDomainPtr dom, const char *name, bool state)
{
    g_autoptr(virJSONValue) caps = virJSONValueNewArray();
    g_autoptr(virJSONValue) cap = NULL;
    g_autoptr(virJSONValue) args = NULL;

    if (virJSONValueObjectAdd(&cap, "s:capability", name,
                              "b:state", state, NULL) < 0 ||
        virJSONValueArrayAppend(caps, &cap) < 0 ||
        virJSONValueObjectAdd(&args, "a:capabilities", &caps, NULL) < 0)
        return -1;
    return kvmsaveMonitorCommandNoReply(dom, "migrate-set-capabilities",
                                        g_steal_pointer(&args), NULL, 0);
}


int
kvmsaveMonitorSetMultifd(virDomainPtr dom, unsigned int channels)
{
    g_autoptr(virJSONValue) params = NULL;

    if (kvmsaveMonitorSetCapability(dom, "multifd", channels > 0) < 0)
        return -1;
    if (channels == 0)
        return 0;
    if (virJSONValueObjectAdd(&params, "i:multifd-channels", channels, NULL) < 0)
        return -1;
    return kvmsaveMonitorCommandNoReply(dom, "migrate-set-parameters",
                                        g_steal_pointer(&params), NULL, 0);
}


int
kvmsaveMonitorSetParameterBool(virDomainPtr dom, const char *name, bool state)
{
    g_autoptr(virJSONValue) params = virJSONValueNewObject();

    if (virJSONValueObjectAppendBoolean(params, name, state) < 0)
        return -1;
    return kvmsaveMonitorCommandNoReply(dom, "migrate-set-parameters",
                                        g_steal_pointer(&params), NULL, 0);
}


int
kvmsaveMonitorAddFd(virDomainPtr dom, int fd, const char *opaque, int *fdset)
{
    g_autoptr(virJSONValue) args = NULL;
    g_autoptr(virJSONValue) ret = NULL;

    if (virJSONValueObjectAdd(&args, "k:fdset-id", *fdset,
                              "S:opaque", opaque, NULL) < 0)
        return -1;
    ret = kvmsaveMonitorCommand(dom, "add-fd", g_steal_pointer(&args), &fd, 1);
    if (!ret)
        return -1;
    if (virJSONValueObjectGetNumberInt(ret, "fdset-id", fdset) < 0) {
        virReportError(VIR_ERR_INTERNAL_ERROR, "%s",
                       _("QEMU's reply to add-fd lacks 'fdset-id'"));
        return -1;
    }
    return 0;
}


/* Whether fdset @set holds a descriptor added with @opaque. */
static bool
kvmsaveMonitorFdsetHas(virJSONValue *set, const char *opaque)
{
    virJSONValue *fds = virJSONValueObjectGetArray(set, "fds");
    size_t i;

    for (i = 0; fds && i < virJSONValueArraySize(fds); i++) {
        virJSONValue *fd = virJSONValueArrayGet(fds, i);

        if (STREQ_NULLABLE(virJSONValueObjectGetString(fd, "opaque"), opaque))
            return true;
    }
    return false;
}


int
kvmsaveMonitorRemoveFdsetsOf(virDomainPtr dom, const char *opaque)
{
    g_autoptr(virJSONValue) sets = kvmsaveMonitorCommand(dom, "query-fdsets",
                                                         NULL, NULL, 0);
    size_t i;

    if (!sets)
        return -1;
    for (i = 0; i < virJSONValueArraySize(sets); i++) {
        virJSONValue *set = virJSONValueArrayGet(sets, i);
        int id;

        if (kvmsaveMonitorFdsetHas(set, opaque) &&
            virJSONValueObjectGetNumberInt(set, "fdset-id", &id) == 0 &&
            kvmsaveMonitorRemoveFd(dom, id) < 0)
            return -1;
    }
    return 0;
}


int
kvmsaveMonitorRemoveFd(virDomainPtr dom, int fdset)
{
    g_autoptr(virJSONValue) args = NULL;

    if (virJSONValueObjectAdd(&args, "i:fdset-id", fdset, NULL) < 0)
        return -1;
    return kvmsaveMonitorCommandNoReply(dom, "remove-fd", g_steal_pointer(&args), NULL, 0);
}


int
kvmsaveMonitorMigrateCancel(virDomainPtr dom)
{
    return kvmsaveMonitorCommandNoReply(dom, "migrate_cancel", NULL, NULL, 0);
}


/* How long QEMU may take to end a cancelled migration once its peer has
 * closed the streams: this only bounds the wait on a QEMU that is stuck. */
#define KVMSAVE_MIGRATE_END_TIMEOUT (10 * G_USEC_PER_SEC)

/* Wait until QEMU's cancelled migration has ended. Until it has, QEMU
 * refuses every capability change ("There's a migration process in
 * progress"): a reset after a sparse save, and the guest's next save. */
int
kvmsaveMonitorMigrateWaitEnd(virDomainPtr dom)
{
    gint64 deadline = g_get_monotonic_time() + KVMSAVE_MIGRATE_END_TIMEOUT;
    kvmsaveMigrationStatus st = { 0 };
    unsigned int delay = 1000;
    int ret = -1;

    for (;;) {
        if (kvmsaveMonitorQueryMigrate(dom, &st) < 0)
            goto cleanup;
        if (st.state != KVMSAVE_MIGRATION_ACTIVE)
            break;
        if (g_get_monotonic_time() > deadline) {
            virReportError(VIR_ERR_OPERATION_TIMEOUT,
                           _("QEMU of guest '%s' still has its migration in state '%s' %d seconds after it was cancelled; destroy the guest if it does not end"),
                           virDomainGetName(dom), st.status,
                           (int) (KVMSAVE_MIGRATE_END_TIMEOUT / G_USEC_PER_SEC));
            goto cleanup;
        }
        g_usleep(delay);
        delay = MIN(delay * 2, 50000);
    }
    ret = 0;

 cleanup:
    kvmsaveMigrationStatusClear(&st);
    return ret;
}


int
kvmsaveMonitorQueryMigrate(virDomainPtr dom, kvmsaveMigrationStatus *st)
{
    g_autoptr(virJSONValue) ret = NULL;
    virJSONValue *ram;
    const char *status;
    const char *err;

    kvmsaveMigrationStatusClear(st);
    if (!(ret = kvmsaveMonitorCommand(dom, "query-migrate", NULL, NULL, 0)))
        return -1;

    status = virJSONValueObjectGetString(ret, "status");
    st->status = g_strdup(NULLSTR_EMPTY(status));
    if ((err = virJSONValueObjectGetString(ret, "error-desc")))
        st->error = g_strdup(err);

    if (!status || STREQ(status, "none"))
        st->state = KVMSAVE_MIGRATION_NONE;
    else if (STREQ(status, "completed"))
        st->state = KVMSAVE_MIGRATION_COMPLETED;
    else if (STREQ(status, "failed") || STREQ(status, "cancelled"))
        st->state = KVMSAVE_MIGRATION_FAILED;
    else
        st->state = KVMSAVE_MIGRATION_ACTIVE;

    if ((ram = virJSONValueObjectGetObject(ret, "ram"))) {
        ignore_value(virJSONValueObjectGetNumberUlong(ram, "transferred",
                                                      &st->transferred));
        ignore_value(virJSONValueObjectGetNumberUlong(ram, "total",
                                                      &st->total));
        ignore_value(virJSONValueObjectGetNumberUlong(ram, "remaining",
                                                      &st->remaining));
        ignore_value(virJSONValueObjectGetNumberDouble(ram, "mbps", &st->mbps));
    }
    return 0;
}


char *
kvmsaveMonitorQemuVersion(virDomainPtr dom)
{
    g_autoptr(virJSONValue) ret = NULL;
    virJSONValue *qemu;
    unsigned long long major = 0, minor = 0, micro = 0;
    const char *package;

    if (!(ret = kvmsaveMonitorCommand(dom, "query-version", NULL, NULL, 0)))
        return NULL;
    if ((qemu = virJSONValueObjectGetObject(ret, "qemu"))) {
        ignore_value(virJSONValueObjectGetNumberUlong(qemu, "major", &major));
        ignore_value(virJSONValueObjectGetNumberUlong(qemu, "minor", &minor));
        ignore_value(virJSONValueObjectGetNumberUlong(qemu, "micro", &micro));
    }
    package = virJSONValueObjectGetString(ret, "package");
    return g_strdup_printf("%llu.%llu.%llu%s%s", major, minor, micro,
                           package && *package ? " " : "",
                           package ? package : "");
}


int
kvmsaveMonitorWaitMigration(virDomainPtr dom, const char *what,
                            kvmsaveMigrationPoll poll, void *opaque)
{
    kvmsaveMigrationStatus st = { 0 };
    /* Microseconds, growing to 10 ms: a later look at a finished stream
     * is time lost on every save and restore (50 ms cost some 40 ms
     * each), a look costs a QMP round trip of a fraction of that. */
    unsigned int delay = 1000;
    int ret = -1;

    for (;;) {
        if (kvmsaveMonitorQueryMigrate(dom, &st) < 0)
            goto cleanup;
        if (st.state == KVMSAVE_MIGRATION_COMPLETED) {
            /* Let the caller see the final figures too (all of it done). */
            if (poll)
                ignore_value(poll(&st, opaque));
            break;
        }
        if (st.state == KVMSAVE_MIGRATION_FAILED) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("%s failed in QEMU: migration %s%s%s"),
                           what, st.status, st.error ? ": " : "",
                           NULLSTR_EMPTY(st.error));
            goto cleanup;
        }
        if (poll && poll(&st, opaque)) {
            ret = -2; /* the caller reports why */
            goto cleanup;
        }
        g_usleep(delay);
        delay = MIN(delay * 2, 10000);
    }
    ret = 0;

 cleanup:
    kvmsaveMigrationStatusClear(&st);
    return ret;
}

