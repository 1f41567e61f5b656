/*
 * kvmsave_embed.c: the embedded QEMU driver's background work in a client
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * libvirt's QEMU driver, embedded in a client such as virsh, goes on
 * working in threads of its own after the calls return: at the first open
 * in a process it reconnects to every running QEMU in one thread per guest
 * ("init-NAME"), and each guest's monitor events run in another
 * ("vm-NAME") and in the driver's worker pool. libvirt never stops them in
 * embedded mode, so a client that exits while one of them runs has
 * exit() run the libraries' destructors under it. libnuma's destructor
 * frees numa_nodes_ptr, which the reconnect reads through
 * virDomainCgroupConnectCgroup -> virNumaGetHostMemoryNodeset: SIGSEGV at
 * exit (docs/architecture.md, "Embedded mode at exit"). A reconnect still
 * running also races the next API call: virDomainDestroy kills QEMU before
 * it waits for the reconnect's job, the reconnect then fails and stops the
 * guest, and destroy reports "domain is not running".
 *
 * So the first kvmsave connection of a process returns only once every
 * reconnect is done, and exit() first stops the driver's threads as a
 * daemon does before it exits (virStateShutdownPrepare/Wait); the guests
 * keep running.
 */
#include <config.h>

#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "kvmsave_embed.h"
#include "datatypes.h"
#include "qemu/qemu_conf.h"
#include "virdomainjob.h"
#include "virdomainobjlist.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"
#include "virpidfile.h"
#include "virxml.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.embed");


/* A start killed before QEMU ran (the client died between the async
 * job's first status and QEMU's pid, which comes before QEMU's exec)
 * leaves a status that says "starting up" with pid 0 and a start job
 * nobody owns. libvirt does not reconnect to a pid 0, so nothing ever
 * ends that job: every later job on the guest, destroy too, times out.
 * No QEMU runs: the guest is shut off, as libvirt stops a guest whose
 * reconnect it cannot start. Called with @vm locked and ref'd. */
static void
kvmsaveEmbedForgetDeadStart(virQEMUDriver *driver, virDomainObj *vm)
{
    g_autofree char *status = NULL;
    g_autofree char *pidfile = NULL;

    virMutexLock(&driver->lock);
    status = virDomainConfigFile(driver->config->stateDir, vm->def->name);
    pidfile = virPidFileBuildPath(driver->config->stateDir, vm->def->name);
    virMutexUnlock(&driver->lock);

    VIR_WARN("guest %s was left starting up with no QEMU by a client killed while it started it; it is shut off",
             vm->def->name);
    virDomainObjResetJob(vm->job);
    virDomainObjResetAsyncJob(vm->job);
    virDomainObjSetState(vm, VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_SHUTOFF_FAILED);
    vm->def->id = -1;
    if (unlink(status) < 0 && errno != ENOENT)
        VIR_WARN("cannot remove %s: %s", status, g_strerror(errno));
    if (virPidFileDeletePath(pidfile) < 0)
        VIR_WARN("cannot remove %s: %s", pidfile, g_strerror(errno));
    if (vm->persistent)
        virDomainObjRemoveTransientDef(vm);
    else
        virDomainObjListRemove(driver->domains, vm);
}


/* Wait for the reconnect of @vm. Its thread took the domain's lock before
 * the driver's open returned and starts its job before it lets the lock go,
 * so a job of ours begins only after the reconnect has ended. */
static void
kvmsaveEmbedWaitReconnect(virQEMUDriver *driver, virDomainObj *vm)
{
    virObjectLock(vm);
    if (virDomainObjIsActive(vm) && vm->pid == 0) {
        kvmsaveEmbedForgetDeadStart(driver, vm);
    } else if (virDomainObjIsActive(vm)) {
        if (virDomainObjBeginJob(vm, VIR_JOB_QUERY) < 0) {
            VIR_WARN("guest %s is still being reconnected to: %s",
                     vm->def->name, virGetLastErrorMessage());
            virResetLastError();
        } else {
            virDomainObjEndJob(vm);
        }
    }
    virObjectUnlock(vm);
}


/* Run by exit() before the libraries' destructors (they are run after the
 * atexit handlers registered later than libc's start-up). */
static void
kvmsaveEmbedQuiesce(void)
{
    VIR_DEBUG("stopping the embedded QEMU driver's threads");
    if (virStateShutdownPrepare() < 0 || virStateShutdownWait() < 0)
        virResetLastError();
}


void
kvmsaveEmbedSettle(virConnectPtr inner)
{
    static gsize settled;
    virQEMUDriver *driver = inner->privateData;
    g_autofree virDomainObj **vms = NULL;
    size_t nvms = 0;
    size_t i;

    if (!g_once_init_enter(&settled))
        return;

    virDomainObjListCollectAll(driver->domains, &vms, &nvms);
    for (i = 0; i < nvms; i++) {
        kvmsaveEmbedWaitReconnect(driver, vms[i]);
        virObjectUnref(vms[i]);
    }
    if (atexit(kvmsaveEmbedQuiesce) != 0)
        VIR_WARN("cannot register the embedded driver's exit handler");
    g_once_init_leave(&settled, 1);
}


/* Whether process @pid is gone or is the QEMU of guest @name (libvirt
 * doubles a comma in the name it gives QEMU): only then may libvirt,
 * which kills a status's pid when it stops its guest, have it back. */
static bool
kvmsaveEmbedPidIsGuestOrGone(long long pid, const char *name)
{
    g_autofree char *path = g_strdup_printf("/proc/%lld/cmdline", pid);
    g_auto(GStrv) parts = g_strsplit(name, ",", -1);
    g_autofree char *escaped = g_strjoinv(",,", parts);
    g_autofree char *want = g_strdup_printf("guest=%s,", escaped);
    g_autofree char *cmdline = NULL;
    gsize len = 0;
    gsize i;

    if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH))
        return true;
    if (!g_file_get_contents(path, &cmdline, &len, NULL))
        return false;
    for (i = 0; i < len; i += strlen(cmdline + i) + 1) {
        if (STRPREFIX(cmdline + i, want))
            return true;
    }
    return false;
}


/* libvirt 9.0's qemuProcessStop clears the monitor's config and then
 * unlocks the guest while it stops the guest's event thread, whose last
 * work saves the status. A client killed from then until the status is
 * removed (after the labels are restored and the cgroup removed) leaves a
 * status libvirt cannot load ("no monitor path"): it forgets the guest and
 * nobody finishes the stop. The guest's files keep QEMU's owner and
 * libvirt's remembered-owner references, and its next start fails with
 * "Setting different DAC user or group on ... which is already in use".
 * (libvirt 11.3 stops that thread before it clears the config.) Given back
 * the monitor path QEMU had, the status loads, the reconnect finds no
 * monitor, and libvirt finishes the stop itself. */
static void
kvmsaveEmbedRepairStatus(const char *path)
{
    g_autoptr(xmlDoc) doc = NULL;
    g_autoptr(xmlXPathContext) ctxt = NULL;
    g_autofree char *libdir = NULL;
    g_autofree char *name = NULL;
    g_autofree char *monitor = NULL;
    xmlChar *text = NULL;
    long long pid = 0;
    xmlNodePtr node;
    int len = 0;
    int rc;

    if (!(doc = virXMLParse(path, NULL, NULL, "domstatus", &ctxt, NULL, false))) {
        virResetLastError();
        return;
    }
    if (virXPathBoolean("boolean(./monitor)", ctxt) != 0 ||
        !(libdir = virXPathString("string(./libDir/@path)", ctxt)) ||
        !(name = virXPathString("string(./domain/name)", ctxt)) ||
        virXPathLongLong("string(./@pid)", ctxt, &pid) < 0)
        return;
    if (!kvmsaveEmbedPidIsGuestOrGone(pid, name)) {
        VIR_WARN("the status of guest %s lacks its monitor, but its pid %lld is another process: left as it is",
                 name, pid);
        return;
    }

    monitor = g_strdup_printf("%s/monitor.sock", libdir);
    node = xmlNewChild(ctxt->node, NULL, BAD_CAST "monitor", NULL);
    xmlNewProp(node, BAD_CAST "path", BAD_CAST monitor);
    xmlNewProp(node, BAD_CAST "type", BAD_CAST "unix");
    xmlDocDumpMemory(doc, &text, &len);
    rc = text ? virFileRewriteStr(path, S_IRUSR | S_IWUSR, (const char *) text) : -1;
    xmlFree(text);
    if (rc < 0) {
        VIR_WARN("cannot give the status of guest %s back its monitor: %s",
                 name, virGetLastErrorMessage());
        virResetLastError();
        return;
    }
    VIR_WARN("guest %s was left half stopped by a client killed while it stopped it; libvirt finishes the stop",
             name);
}


void
kvmsaveEmbedRepairStatuses(const char *root)
{
    static gsize repaired;
    g_autofree char *dir = g_build_filename(root, "run", "qemu", NULL);
    g_autoptr(DIR) dh = NULL;
    struct dirent *ent;

    /* The driver loads the statuses at the first open in a process. */
    if (!g_once_init_enter(&repaired))
        return;
    if (virDirOpenQuiet(&dh, dir) > 0) {
        while (virDirRead(dh, &ent, NULL) > 0) {
            g_autofree char *path = NULL;

            if (!g_str_has_suffix(ent->d_name, ".xml"))
                continue;
            path = g_build_filename(dir, ent->d_name, NULL);
            kvmsaveEmbedRepairStatus(path);
        }
    }
    virResetLastError();
    g_once_init_leave(&repaired, 1);
}


/* The name of process @pid, or "?". */
static char *
kvmsaveEmbedProcessName(long long pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%lld/comm", pid);
    char *comm = NULL;

    if (!g_file_get_contents(path, &comm, NULL, NULL))
        return g_strdup("?");
    return g_strchomp(comm);
}


/* The process that holds a POSIX lock on @path, other than this one,
 * from /proc/locks: 0 if none, -1 if one holds it that this process cannot
 * see (another pid namespace). @path is not opened to ask (F_GETLK): its
 * close would drop this process's own lock on it, libvirt's. */
static long long
kvmsaveEmbedLockHolder(const char *path)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    struct stat sb;
    size_t i;

    if (stat(path, &sb) < 0 ||
        !g_file_get_contents("/proc/locks", &text, NULL, NULL))
        return 0;
    lines = g_strsplit(text, "\n", -1);
    for (i = 0; lines[i]; i++) {
        char kind[16];
        long long pid;
        unsigned int maj, min;
        unsigned long long ino;

        /* "1: POSIX  ADVISORY  WRITE 2999 fd:01:123456 0 0"; a waiter's
         * line has "->" where the kind is. */
        if (sscanf(lines[i], "%*d: %15s %*s %*s %lld %x:%x:%llu",
                   kind, &pid, &maj, &min, &ino) != 5 ||
            STRNEQ(kind, "POSIX") || maj != major(sb.st_dev) ||
            min != minor(sb.st_dev) || ino != (unsigned long long) sb.st_ino ||
            pid == (long long) getpid())
            continue;
        return pid > 0 ? pid : -1;
    }
    return 0;
}


int
kvmsaveEmbedCheckFree(const char *root)
{
    g_autofree char *path = g_build_filename(root, "run", "qemu", "driver.pid", NULL);
    long long pid = kvmsaveEmbedLockHolder(path);
    g_autofree char *comm = NULL;

    if (pid == 0)
        return 0;
    comm = pid > 0 ? kvmsaveEmbedProcessName(pid) : g_strdup("?");
    virReportError(VIR_ERR_RESOURCE_BUSY,
                   _("kvmsave root '%s' is in use by process %lld (%s): an embedded root serves one process at a time; wait for it to exit, or use kvmsave over a daemon (uri=qemu:///system), whose guests and jobs every client sees"),
                   root, pid, comm);
    return -1;
}
