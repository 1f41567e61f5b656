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
#include "virlog.h"
#include "virpidfile.h"

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
