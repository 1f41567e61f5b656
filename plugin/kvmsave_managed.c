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
 *
 * The inner driver may have a managed save image of its own (a daemon's
 * save at host shutdown): the queries count it too, the calls on one image
 * take kvmsave's first and otherwise pass to the inner driver, and a start
 * that finds both refuses, as one of them is stale.
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


/* Whether the inner driver has a managed save image of its own for @dom:
 * 1, 0 or -1 (reported). */
static int
kvmsaveManagedSaveInner(kvmsaveConn *priv, virDomainPtr dom)
{
    if (!priv->innerDriver->domainHasManagedSaveImage)
        return 0;
    return priv->innerDriver->domainHasManagedSaveImage(dom, 0);
}


/* For a call on the managed save image where kvmsave has none: 0 if the
 * inner driver has one, else -1 (reported). */
static int
kvmsaveManagedSaveInnerRequired(kvmsaveConn *priv, virDomainPtr dom)
{
    int inner = kvmsaveManagedSaveInner(priv, dom);

    if (inner == 0)
        virReportError(VIR_ERR_OPERATION_INVALID,
                       _("domain '%s' does not have a managed save image"),
                       dom->name);
    return inner > 0 ? 0 : -1;
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
    kvmsaveConn *priv = kvmsaveConnFromConnect(dom->conn);
    g_autofree char *path = NULL;

    virCheckFlags(0, -1);
    if ((path = kvmsaveManagedSaveImage(priv, dom)))
        return 1;
    return kvmsaveManagedSaveInner(priv, dom);
}


/* kvmsave's image is removed first; without one, the inner driver's. */
int
kvmsaveDomainManagedSaveRemove(virDomainPtr dom, unsigned int flags)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(dom->conn);
    g_autofree char *path = NULL;
    int inner;

    virCheckFlags(0, -1);
    if ((path = kvmsaveManagedSaveImage(priv, dom))) {
        if (unlink(path) < 0 && errno != ENOENT) {
            virReportSystemError(errno, _("cannot remove managed save image '%s'"),
                                 path);
            return -1;
        }
        return 0;
    }
    if ((inner = kvmsaveManagedSaveInner(priv, dom)) <= 0)
        return inner;
    return priv->innerDriver->domainManagedSaveRemove(dom, flags);
}


char *
kvmsaveDomainManagedSaveGetXMLDesc(virDomainPtr dom, unsigned int flags)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(dom->conn);
    g_autofree char *path = NULL;

    virCheckFlags(VIR_DOMAIN_SAVE_IMAGE_XML_SECURE, NULL);
    if ((path = kvmsaveManagedSaveImage(priv, dom)))
        return kvmsaveRestoreImageXML(path, flags);
    if (kvmsaveManagedSaveInnerRequired(priv, dom) < 0)
        return NULL;
    return priv->innerDriver->domainManagedSaveGetXMLDesc(dom, flags);
}


int
kvmsaveDomainManagedSaveDefineXML(virDomainPtr dom, const char *dxml,
                                  unsigned int flags)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(dom->conn);
    g_autofree char *path = NULL;

    if (kvmsaveCheckSaveFlags(flags, KVMSAVE_IMAGE_DEFINE_FLAGS, __func__) < 0)
        return -1;
    if ((path = kvmsaveManagedSaveImage(priv, dom)))
        return kvmsaveSaveImageDefine(path, dxml, flags);
    if (kvmsaveManagedSaveInnerRequired(priv, dom) < 0)
        return -1;
    return priv->innerDriver->domainManagedSaveDefineXML(dom, dxml, flags);
}


/* Both kvmsave and the inner driver have a managed save image: the guest
 * was started behind kvmsave's back and saved again, so one is stale, and
 * which one the user wants kvmsave cannot know. */
static int
kvmsaveManagedSaveCheckSingle(kvmsaveConn *priv, virDomainPtr dom,
                              const char *path)
{
    int inner = kvmsaveManagedSaveInner(priv, dom);

    if (inner <= 0)
        return inner;
    virReportError(VIR_ERR_OPERATION_INVALID,
                   _("domain '%s' has two managed save images, kvmsave's '%s' and one of the inner driver's own, and one of them holds an older state; remove the one not wanted ('managedsave-remove' through kvmsave removes kvmsave's, through the inner URI the inner driver's), or start with --force-boot to discard both"),
                   dom->name, path);
    return -1;
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
    if (kvmsaveCheckStartFlags(flags, _("its managed save image")) < 0 ||
        kvmsaveManagedSaveCheckSingle(priv, dom, path) < 0)
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

    /* kvmsave's images are its own, so it filters on them itself. */
    if (ms == 0 || ms == both)
        return priv->innerDriver->connectListAllDomains(conn, domains,
                                                        flags & ~both);
    if ((n = priv->innerDriver->connectListAllDomains(conn, &doms,
                                                      flags & ~both)) < 0)
        return -1;
    for (i = 0; i < n; i++) {
        int has = kvmsaveDomainHasManagedSaveImage(doms[i], 0);

        if (has < 0) {
            for (; i < n; i++)
                virObjectUnref(doms[i]);
            doms[kept] = NULL;
            virObjectListFree(doms);
            return -1;
        }
        if (has == !!(ms & VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE))
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
