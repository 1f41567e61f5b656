/*
 * kvmsave_sparse.c: sparse save images, which QEMU writes and reads
 * itself: stock libvirt's, and kvmsave's own
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "kvmsave_sparse.h"
#include "kvmsave_monitor.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.sparse");


unsigned long
kvmsaveSparseQemuVersion(virConnectPtr inner)
{
    unsigned long version = 0;

    if (virConnectGetVersion(inner, &version) < 0)
        return 0;
    return version;
}


unsigned long
kvmsaveSparseParseVersion(const char *text)
{
    unsigned long major;
    unsigned long minor;
    unsigned long micro;

    if (!text || sscanf(text, "%lu.%lu.%lu", &major, &minor, &micro) != 3)
        return 0;
    return major * 1000000 + minor * 1000 + micro;
}


unsigned long
kvmsaveSparseDomainVersion(virDomainPtr dom)
{
    g_autofree char *text = kvmsaveMonitorQemuVersion(dom);

    return kvmsaveSparseParseVersion(text);
}


int
kvmsaveSparseCheckSave(unsigned long version, bool direct)
{
    if (version < KVMSAVE_SPARSE_QEMU_MIN) {
        virReportError(VIR_ERR_OPERATION_UNSUPPORTED,
                       _("image format 'sparse' needs QEMU 9.0 or later (QEMU's mapped-ram), but the guest runs in QEMU %lu.%lu.%lu; save with image format 'raw' or 'zstd'"),
                       version / 1000000, version / 1000 % 1000, version % 1000);
        return -1;
    }
    if (direct && version < KVMSAVE_SPARSE_DIRECT_QEMU_MIN) {
        virReportError(VIR_ERR_OPERATION_UNSUPPORTED,
                       _("a sparse save that bypasses the cache needs QEMU 9.1 or later (QEMU's direct-io), but the guest runs in QEMU %lu.%lu.%lu; save without bypassing the cache, or with image format 'raw'"),
                       version / 1000000, version / 1000 % 1000, version % 1000);
        return -1;
    }
    return 0;
}


/* Whether the QEMU of @inner can load the sparse image @path, stock's
 * (@stock) or kvmsave's. */
static int
kvmsaveSparseCheckLoad(virConnectPtr inner, const char *path, bool stock)
{
    unsigned long version;

    if (!(version = kvmsaveSparseQemuVersion(inner)))
        return -1;
    if (version >= KVMSAVE_SPARSE_QEMU_MIN)
        return 0;
    if (stock)
        virReportError(VIR_ERR_OPERATION_UNSUPPORTED,
                       _("save image '%s' is a sparse save image of stock libvirt (save_image_format \"sparse\", QEMU's mapped-ram format), which only QEMU 9.0 or later can load, but this host has QEMU %lu.%lu.%lu; restore it on a host with QEMU 9.0 or later (e.g. Debian 13), or have stock libvirt save in another format"),
                       path, version / 1000000, version / 1000 % 1000, version % 1000);
    else
        virReportError(VIR_ERR_OPERATION_UNSUPPORTED,
                       _("save image '%s' is a sparse kvmsave image (QEMU's mapped-ram format), which only QEMU 9.0 or later can load, but this host has QEMU %lu.%lu.%lu; restore it on a host with QEMU 9.0 or later (e.g. Debian 13)"),
                       path, version / 1000000, version / 1000 % 1000, version % 1000);
    return -1;
}


int
kvmsaveSparseCheckQemuImage(virConnectPtr inner, const char *path)
{
    return kvmsaveSparseCheckLoad(inner, path, false);
}


int
kvmsaveSparseCheckQemu(virConnectPtr inner, const char *path)
{
    return kvmsaveSparseCheckLoad(inner, path, true);
}


/* Open @path as @oflags into fdset *@fdset (-1: a new one), labelled
 * with @label: recovery finds what a killed client left by it. */
static int
kvmsaveSparseAddFile(virDomainPtr dom, const char *path, const char *label,
                     int oflags, int *fdset)
{
    VIR_AUTOCLOSE fd = open(path, oflags | O_CLOEXEC | O_NOCTTY);

    if (fd < 0) {
        virReportSystemError(errno, _("cannot open save image '%s'%s"), label,
                             (oflags & O_DIRECT) ?
                             _(" for direct I/O (bypass cache)") : "");
        return -1;
    }
    return kvmsaveMonitorAddFd(dom, fd, label, fdset);
}


/* @path in a new fdset, opened as @mode; with direct-io QEMU also needs
 * it with O_DIRECT, for the multifd channels' aligned pages, beside the
 * buffered one for the rest of the stream. */
static int
kvmsaveSparseFdset(virDomainPtr dom, const char *path, const char *label,
                   int mode, bool direct)
{
    int fdset = -1;

    if (kvmsaveSparseAddFile(dom, path, label, mode, &fdset) < 0)
        return -1;
    if (direct &&
        kvmsaveSparseAddFile(dom, path, label, mode | O_DIRECT, &fdset) < 0) {
        ignore_value(kvmsaveMonitorRemoveFd(dom, fdset));
        return -1;
    }
    return fdset;
}


static int
kvmsaveSparseSetup(virDomainPtr dom, unsigned int channels, bool direct,
                   bool haveDirect)
{
    if (kvmsaveMonitorSetCapability(dom, "mapped-ram", true) < 0 ||
        kvmsaveMonitorSetMultifd(dom, channels) < 0)
        return -1;
    if (haveDirect &&
        kvmsaveMonitorSetParameterBool(dom, "direct-io", direct) < 0)
        return -1;
    return 0;
}


/* migrate, or migrate-incoming, to the file in @fdset from @offset:
 * @fdset, or -1 with the fdset removed. */
static int
kvmsaveSparseStart(virDomainPtr dom, int fdset, uint64_t offset, bool incoming)
{
    g_autofree char *target = g_strdup_printf("/dev/fdset/%d,offset=%#llx", fdset,
                                              (unsigned long long) offset);
    int rc = incoming ? kvmsaveMonitorMigrateIncoming(dom, "file", target) :
        kvmsaveMonitorMigrate(dom, "file", target);

    if (rc < 0) {
        ignore_value(kvmsaveMonitorRemoveFd(dom, fdset));
        return -1;
    }
    return fdset;
}


int
kvmsaveSparseMigrate(virDomainPtr dom, const char *path, uint64_t offset,
                     unsigned int channels, bool direct, unsigned long version)
{
    int fdset;

    if (kvmsaveSparseSetup(dom, channels, direct,
                           version >= KVMSAVE_SPARSE_DIRECT_QEMU_MIN) < 0 ||
        (fdset = kvmsaveSparseFdset(dom, path, path, O_WRONLY, direct)) < 0)
        return -1;
    return kvmsaveSparseStart(dom, fdset, offset, false);
}


int
kvmsaveSparseReset(virDomainPtr dom, unsigned long version)
{
    if (version < KVMSAVE_SPARSE_QEMU_MIN)
        return 0;
    if (kvmsaveMonitorSetCapability(dom, "mapped-ram", false) < 0)
        return -1;
    if (version < KVMSAVE_SPARSE_DIRECT_QEMU_MIN)
        return 0;
    return kvmsaveMonitorSetParameterBool(dom, "direct-io", false);
}


int
kvmsaveSparseIncomingImage(virDomainPtr dom, const char *path,
                           const char *label, uint64_t offset,
                           unsigned int channels, bool direct,
                           unsigned long version)
{
    bool haveDirect = version >= KVMSAVE_SPARSE_DIRECT_QEMU_MIN;
    int fdset;

    direct = direct && haveDirect;
    if (kvmsaveSparseSetup(dom, channels, direct, haveDirect) < 0 ||
        (fdset = kvmsaveSparseFdset(dom, path, label, O_RDONLY, direct)) < 0)
        return -1;
    return kvmsaveSparseStart(dom, fdset, offset, true);
}
