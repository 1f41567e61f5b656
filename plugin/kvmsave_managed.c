/*
 * kvmsave_managed.c: managed save, kvmsave's own
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Managed save images are kvmsave images kept under the connection's root,
 * ROOT/lib/kvmsave/managed-save/UUID.save, whatever the inner driver:
 * start restores from one (and removes it once the guest runs),
 * --force-boot discards it, undefine refuses while one exists, and domain
 * lists filter on them.
 */
#include <config.h>

#include <unistd.h>

#include "kvmsave_managed.h"
#include "kvmsave_args.h"
#include "kvmsave_job.h"
#include "kvmsave_restore.h"
#include "kvmsave_save.h"
#include "kvmsave_saveimage.h"
#include "virerror.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.managed");


/* The domain's managed save image, or NULL (no error) when it has none. */
static char *
kvmsaveManagedSaveImage(kvmsaveConn *priv, virDomainPtr dom)
{
    g_autofree char *path = kvmsaveConnManagedSavePath(priv, dom->uuid);

    if (access(path, F_OK) < 0)
        return NULL;
    return g_steal_pointer(&path);
}


static char *
kvmsaveManagedSaveImageRequired(kvmsaveConn *priv, virDomainPtr dom)
{
    char *path = kvmsaveManagedSaveImage(priv, dom);

    if (!path)
        virReportError(VIR_ERR_OPERATION_INVALID,
                       _("domain '%s' does not have a managed save image"),
                       dom->name);
    return path;
}


int
kvmsaveDomainManagedSave(virDomainPtr dom, unsigned int flags)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(dom->conn);

    return kvmsaveManagedSaveAs(priv, dom, priv->imageFormat, 0, flags);
}


int
kvmsaveManagedSaveAs(kvmsaveConn *priv, virDomainPtr dom, int format,
                     int channels, unsigned int flags)
{
    g_autoptr(virDomain) inner = NULL;
    g_autofree char *path = NULL;
    int persistent;

    if (kvmsaveCheckSaveFlags(flags, KVMSAVE_SAVE_FLAGS, __func__) < 0 ||
        !(inner = kvmsaveConnLookupInner(priv, dom->uuid)) ||
        (persistent = virDomainIsPersistent(inner)) < 0)
        return -1;
    if (!persistent) {
        virReportError(VIR_ERR_OPERATION_INVALID, "%s",
                       _("cannot do managed save for transient domain"));
        return -1;
    }
    if (kvmsaveConnManagedSaveDir(priv) < 0)
        return -1;
    path = kvmsaveConnManagedSavePath(priv, dom->uuid);
    return kvmsaveSaveDomain(priv, dom->uuid, path, NULL, format, channels,
                             flags);
}


int
kvmsaveDomainHasManagedSaveImage(virDomainPtr dom, unsigned int flags)
{
    g_autofree char *path = NULL;

    virCheckFlags(0, -1);
    path = kvmsaveManagedSaveImage(kvmsaveConnFromConnect(dom->conn), dom);
    return path ? 1 : 0;
}


int
kvmsaveDomainManagedSaveRemove(virDomainPtr dom, unsigned int flags)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(dom->conn);
    g_autofree char *path = NULL;

    virCheckFlags(0, -1);
    path = kvmsaveConnManagedSavePath(priv, dom->uuid);
    if (unlink(path) < 0 && errno != ENOENT) {
        virReportSystemError(errno, _("cannot remove managed save image '%s'"),
                             path);
        return -1;
    }
    return 0;
}


char *
kvmsaveDomainManagedSaveGetXMLDesc(virDomainPtr dom, unsigned int flags)
{
    g_autofree char *path = NULL;

    virCheckFlags(VIR_DOMAIN_SAVE_IMAGE_XML_SECURE, NULL);
    if (!(path = kvmsaveManagedSaveImageRequired(kvmsaveConnFromConnect(dom->conn),
                                                 dom)))
        return NULL;
    return kvmsaveRestoreImageXML(path, flags);
}


int
kvmsaveDomainManagedSaveDefineXML(virDomainPtr dom, const char *dxml,
                                  unsigned int flags)
{
    g_autofree char *path = NULL;

    if (kvmsaveCheckSaveFlags(flags, KVMSAVE_IMAGE_DEFINE_FLAGS, __func__) < 0 ||
        !(path = kvmsaveManagedSaveImageRequired(kvmsaveConnFromConnect(dom->conn),
                                                 dom)))
        return -1;
    return kvmsaveSaveImageDefine(path, dxml, flags);
}


/* Start from the managed save image: 1 if restored, 0 if there is none,
 * -1 on error (the image is kept). */
int
kvmsaveManagedSaveStart(kvmsaveConn *priv, virDomainPtr dom, unsigned int flags)
{
    g_autofree char *path = kvmsaveManagedSaveImage(priv, dom);
    g_autoptr(virDomain) restored = NULL;
    unsigned int restoreFlags;

    if (!path)
        return 0;
    if (flags & VIR_DOMAIN_START_FORCE_BOOT) {
        if (unlink(path) < 0 && errno != ENOENT) {
            virReportSystemError(errno, _("cannot remove managed save image '%s'"),
                                 path);
            return -1;
        }
        return 0;
    }
    /* TRANSLATORS: what the domain restores from, in "restores from %s" */
    if (kvmsaveCheckStartFlags(flags, _("its managed save image")) < 0)
        return -1;
    /* As stock libvirt: running if it ran when saved, unless asked paused. */
    restoreFlags = kvmsaveStartToRestoreFlags(flags) & ~VIR_DOMAIN_SAVE_RUNNING;
    if (!(restored = kvmsaveRestoreDomain(priv, path, NULL, 0, restoreFlags)))
        return -1;
    dom->id = restored->id;
    /* The guest runs from it now: the image has served. */
    if (unlink(path) < 0)
        VIR_WARN("cannot remove used managed save image %s: %s", path,
                 g_strerror(errno));
    return 1;
}


int
kvmsaveDomainUndefineFlags(virDomainPtr dom, unsigned int flags)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(dom->conn);
    g_autofree char *path = NULL;

    if (kvmsaveJobCheckIdle(dom->uuid) < 0)
        return -1;
    if ((path = kvmsaveManagedSaveImage(priv, dom))) {
        if (!(flags & VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)) {
            virReportError(VIR_ERR_OPERATION_INVALID, "%s",
                           _("Refusing to undefine while domain managed save image exists"));
            return -1;
        }
        if (unlink(path) < 0 && errno != ENOENT) {
            virReportSystemError(errno, _("cannot remove managed save image '%s'"),
                                 path);
            return -1;
        }
    }
    return priv->innerDriver->domainUndefineFlags(dom, flags);
}


int
kvmsaveDomainUndefine(virDomainPtr dom)
{
    return kvmsaveDomainUndefineFlags(dom, 0);
}


int
kvmsaveConnectListAllDomains(virConnectPtr conn, virDomainPtr **domains,
                             unsigned int flags)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(conn);
    unsigned int both = VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE |
        VIR_CONNECT_LIST_DOMAINS_NO_MANAGEDSAVE;
    unsigned int ms = flags & both;
    virDomainPtr *doms = NULL;
    int n;
    int i;
    int kept = 0;

    /* Managed save images are kvmsave's, so it filters on them itself. */
    if (ms == 0 || ms == both)
        return priv->innerDriver->connectListAllDomains(conn, domains,
                                                        flags & ~both);
    if ((n = priv->innerDriver->connectListAllDomains(conn, &doms,
                                                      flags & ~both)) < 0)
        return -1;
    for (i = 0; i < n; i++) {
        g_autofree char *path = kvmsaveManagedSaveImage(priv, doms[i]);

        if (!!path == !!(ms & VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE))
            doms[kept++] = doms[i];
        else
            virObjectUnref(doms[i]);
    }
    doms[kept] = NULL;
    if (domains)
        *domains = doms;
    else
        virObjectListFree(doms);
    return kept;
}
