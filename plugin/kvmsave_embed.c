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

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "kvmsave_embed.h"
#include "datatypes.h"
#include "qemu/qemu_conf.h"
#include "virdomainjob.h"
#include "virdomainobjlist.h"
#include "virerror.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.embed");


/* Wait for the reconnect of @vm. Its thread took the domain's lock before
 * the driver's open returned and starts its job before it lets the lock go,
 * so a job of ours begins only after the reconnect has ended. */
static void
kvmsaveEmbedWaitReconnect(virDomainObj *vm)
{
    virObjectLock(vm);
    if (virDomainObjIsActive(vm)) {
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
        kvmsaveEmbedWaitReconnect(vms[i]);
        virObjectUnref(vms[i]);
    }
    if (atexit(kvmsaveEmbedQuiesce) != 0)
        VIR_WARN("cannot register the embedded driver's exit handler");
    g_once_init_leave(&settled, 1);
}


/* The name of process @pid, or "?". */
static char *
kvmsaveEmbedProcessName(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%lld/comm", (long long) pid);
    char *comm = NULL;

    if (!g_file_get_contents(path, &comm, NULL, NULL))
        return g_strdup("?");
    return g_strchomp(comm);
}


int
kvmsaveEmbedCheckFree(const char *root)
{
    g_autofree char *path = g_build_filename(root, "run", "qemu", "driver.pid", NULL);
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    VIR_AUTOCLOSE fd = open(path, O_RDONLY | O_CLOEXEC);
    g_autofree char *comm = NULL;

    if (fd < 0 || fcntl(fd, F_GETLK, &fl) < 0 || fl.l_type == F_UNLCK)
        return 0;
    comm = kvmsaveEmbedProcessName(fl.l_pid);
    virReportError(VIR_ERR_RESOURCE_BUSY,
                   _("kvmsave root '%s' is in use by process %lld (%s): an embedded root serves one process at a time; wait for it to exit, or use kvmsave over a daemon (uri=qemu:///system), whose guests and jobs every client sees"),
                   root, (long long) fl.l_pid, comm);
    return -1;
}
