/*
 * kvmsave_sparse.c: restoring stock libvirt's sparse save images
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <unistd.h>

#include "kvmsave_sparse.h"
#include "kvmsave_monitor.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.sparse");


int
kvmsaveSparseCheckQemu(virConnectPtr inner, const char *path)
{
    unsigned long version = 0;

    if (virConnectGetVersion(inner, &version) < 0)
        return -1;
    if (version >= KVMSAVE_SPARSE_QEMU_MIN)
        return 0;
    virReportError(VIR_ERR_OPERATION_UNSUPPORTED,
                   _("save image '%s' is a sparse save image of stock libvirt (save_image_format \"sparse\", QEMU's mapped-ram format), which only QEMU 9.0 or later can load, but this host has QEMU %lu.%lu.%lu; restore it on a host with QEMU 9.0 or later (e.g. Debian 13), or have stock libvirt save in another format"),
                   path, version / 1000000, version / 1000 % 1000, version % 1000);
    return -1;
}


int
kvmsaveSparseIncoming(virDomainPtr dom, kvmsaveStockImage *s)
{
    const kvmsaveStockInfo *info = kvmsaveStockImageInfo(s);
    g_autofree char *target = NULL;
    VIR_AUTOCLOSE fd = -1;
    int fdset = -1;

    /* Set before migrate-incoming, as libvirt's qemuMigrationDstRun does:
     * QEMU reads the stream's layout from it. */
    if (kvmsaveMonitorSetCapability(dom, "mapped-ram", true) < 0 ||
        (fd = kvmsaveStockImageReopen(s)) < 0 ||
        kvmsaveMonitorAddFd(dom, fd, &fdset) < 0)
        return -1;
    VIR_DEBUG("image %s in fdset %d", NULLSTR(virDomainGetName(dom)), fdset);
    /* The stream's offsets are the file's, so QEMU gets the whole file
     * and where the stream begins. */
    target = g_strdup_printf("/dev/fdset/%d,offset=%#llx", fdset,
                             (unsigned long long) info->streamOffset);
    if (kvmsaveMonitorMigrateIncoming(dom, "file", target) < 0) {
        ignore_value(kvmsaveMonitorRemoveFd(dom, fdset));
        return -1;
    }
    return fdset;
}
