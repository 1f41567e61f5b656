/*
 * kvmsave_driver.c: driver table and entry points
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * libvirt loads this module for kvmsave:///embed?root=DIR. Opening it opens
 * an inner connection (libvirt's QEMU driver embedded under DIR, or the
 * URI given as uri=...) and serves every API from it, except those kvmsave
 * implements: save, restore, the save-image calls, managed save, domain
 * creation and definition (migrateFrom), jobs and lifecycle events.
 */
#include <config.h>

#include <fcntl.h>
#include <libintl.h>
#include <stdlib.h>
#include <unistd.h>

#include "kvmsave_driver.h"
#include "kvmsave_args.h"
#include "kvmsave_conn.h"
#include "kvmsave_embed.h"
#include "kvmsave_event.h"
#include "kvmsave_image.h"
#include "kvmsave_job.h"
#include "kvmsave_jobboard.h"
#include "kvmsave_journal.h"
#include "kvmsave_lazy.h"
#include "viruuid.h"
#include "kvmsave_managed.h"
#include "kvmsave_restore.h"
#include "kvmsave_save.h"
#include "kvmsave_saveimage.h"
#include "kvmsave_uri.h"
#include "kvmsave_util.h"
#include "kvmsave_xml.h"
#include "datatypes.h"
#include "driver.h"
#include "virerror.h"
#include "virfile.h"
#include "virconf.h"
#include "virlog.h"
#include "viruri.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.driver");

#define KVMSAVE_SCHEME "kvmsave"


/* ---- save and restore ---------------------------------------------- */

static int
kvmsaveDomainSaveAs(kvmsaveConn *priv, virDomainPtr dom, const char *to,
                    const char *dxml, int format, int channels,
                    unsigned int flags)
{
    g_autofree char *path = NULL;

    if (kvmsaveCheckSaveFlags(flags, KVMSAVE_SAVE_FLAGS, __func__) < 0 ||
        !(path = kvmsaveAbsPath(to)))
        return -1;
    return kvmsaveSaveDomain(priv, dom->uuid, path, dxml, format, channels,
                             flags);
}


static int
kvmsaveDomainSaveFlags(virDomainPtr dom, const char *to, const char *dxml,
                       unsigned int flags)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(dom->conn);

    return kvmsaveDomainSaveAs(priv, dom, to, dxml, priv->imageFormat, 0, flags);
}


static int
kvmsaveDomainSave(virDomainPtr dom, const char *to)
{
    return kvmsaveDomainSaveFlags(dom, to, NULL, 0);
}


static int
kvmsaveDomainSaveParams(virDomainPtr dom, virTypedParameterPtr params,
                        int nparams, unsigned int flags)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(dom->conn);
    const char *file;
    const char *dxml;
    const char *formatName;
    int format = priv->imageFormat;
    int channels;

    if (kvmsaveCheckSaveFlags(flags, KVMSAVE_SAVE_FLAGS, __func__) < 0 ||
        kvmsaveParseSaveParams(params, nparams, &file, &dxml, &formatName, NULL,
                               &channels) < 0)
        return -1;
    if (formatName &&
        (format = kvmsaveImageFormatFromString(formatName)) < 0) {
        virReportError(VIR_ERR_INVALID_ARG,
                       _("unknown image format '%s': kvmsave writes 'raw', 'zstd' or 'sparse'"),
                       formatName);
        return -1;
    }
    if (!file) {
        /* As libvirt does: no file means a managed save. */
        if (dxml) {
            virReportError(VIR_ERR_INVALID_ARG, "%s",
                           _("a managed save (no 'file' parameter) takes no 'dxml'"));
            return -1;
        }
        return kvmsaveManagedSaveAs(priv, dom, format, channels, flags);
    }
    return kvmsaveDomainSaveAs(priv, dom, file, dxml, format, channels, flags);
}


static int
kvmsaveDomainRestoreAs(virConnectPtr conn, const char *from, const char *dxml,
                       int channels, unsigned int flags)
{
    g_autofree char *path = NULL;
    g_autoptr(virDomain) dom = NULL;

    if (kvmsaveCheckSaveFlags(flags & ~(KVMSAVE_RESTORE_LAZY | KVMSAVE_RESTORE_EAGER),
                              KVMSAVE_RESTORE_FLAGS, __func__) < 0 ||
        !(path = kvmsaveAbsPath(from)))
        return -1;
    if (!(dom = kvmsaveRestoreDomain(kvmsaveConnFromConnect(conn), path,
                                     dxml, channels, flags)))
        return -1;
    return 0;
}


static int
kvmsaveDomainRestoreFlags(virConnectPtr conn, const char *from,
                          const char *dxml, unsigned int flags)
{
    return kvmsaveDomainRestoreAs(conn, from, dxml, 0, flags);
}


static int
kvmsaveDomainRestore(virConnectPtr conn, const char *from)
{
    return kvmsaveDomainRestoreFlags(conn, from, NULL, 0);
}


static int
kvmsaveDomainRestoreParams(virConnectPtr conn, virTypedParameterPtr params,
                           int nparams, unsigned int flags)
{
    const char *file;
    const char *dxml;
    const char *modeName;
    int channels;
    int mode;

    if (kvmsaveCheckSaveFlags(flags, KVMSAVE_RESTORE_FLAGS, __func__) < 0 ||
        kvmsaveParseSaveParams(params, nparams, &file, &dxml, NULL, &modeName,
                               &channels) < 0)
        return -1;
    if (modeName) {
        if ((mode = kvmsaveRestoreModeFromString(modeName)) < 0) {
            virReportError(VIR_ERR_INVALID_ARG,
                           _("unknown restore mode '%s': kvmsave restores 'eager' or 'lazy'"),
                           modeName);
            return -1;
        }
        flags |= mode == KVMSAVE_RESTORE_MODE_LAZY ?
            KVMSAVE_RESTORE_LAZY : KVMSAVE_RESTORE_EAGER;
    }
    if (!file) {
        virReportError(VIR_ERR_INVALID_ARG,
                       _("missing the '%s' parameter: kvmsave needs the path of the image to restore"),
                       VIR_DOMAIN_SAVE_PARAM_FILE);
        return -1;
    }
    return kvmsaveDomainRestoreAs(conn, file, dxml, channels, flags);
}


static char *
kvmsaveDomainSaveImageGetXMLDesc(virConnectPtr conn G_GNUC_UNUSED,
                                 const char *file, unsigned int flags)
{
    g_autofree char *path = NULL;

    virCheckFlags(VIR_DOMAIN_SAVE_IMAGE_XML_SECURE, NULL);
    if (!(path = kvmsaveAbsPath(file)))
        return NULL;
    return kvmsaveRestoreImageXML(path, flags);
}


static int
kvmsaveDomainSaveImageDefineXML(virConnectPtr conn G_GNUC_UNUSED,
                                const char *file, const char *dxml,
                                unsigned int flags)
{
    g_autofree char *path = NULL;

    if (kvmsaveCheckSaveFlags(flags, KVMSAVE_IMAGE_DEFINE_FLAGS, __func__) < 0 ||
        !(path = kvmsaveAbsPath(file)))
        return -1;
    return kvmsaveSaveImageDefine(path, dxml, flags);
}


/* ---- domain creation: the migrateFrom extension ---------------------- */

static virDomainPtr
kvmsaveDomainCreateXML(virConnectPtr conn, const char *xml, unsigned int flags)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(conn);
    g_autofree char *image = NULL;
    int rc;

    if ((rc = kvmsaveXMLGetMigrateFrom(xml, &image)) < 0)
        return NULL;
    if (rc == 0)
        return priv->innerDriver->domainCreateXML(conn, xml, flags);

    /* The guest comes from the image, described by this XML. */
    if (kvmsaveCheckStartFlags(flags, "<kvmsave:migrateFrom>") < 0)
        return NULL;
    return kvmsaveRestoreDomain(priv, image, xml, 0,
                                kvmsaveStartToRestoreFlags(flags));
}


static int
kvmsaveDomainCreateWithFlags(virDomainPtr dom, unsigned int flags)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(dom->conn);
    g_autoptr(virDomain) inner = NULL;
    g_autoptr(virDomain) restored = NULL;
    g_autofree char *xml = NULL;
    g_autofree char *image = NULL;
    int rc;

    if (kvmsaveJobCheckIdle(dom->uuid) < 0)
        return -1;
    if ((rc = kvmsaveManagedSaveStart(priv, dom, flags)) != 0)
        return rc < 0 ? -1 : 0;
    if (!(inner = kvmsaveConnLookupInner(priv, dom->uuid)))
        return -1;
    /* Migratable, like the XML kept in images, so the ABI check compares
     * like with like (no implicit default devices). */
    if (!(xml = virDomainGetXMLDesc(inner, VIR_DOMAIN_XML_INACTIVE |
                                    VIR_DOMAIN_XML_SECURE |
                                    VIR_DOMAIN_XML_MIGRATABLE)))
        return -1;
    if ((rc = kvmsaveXMLGetMigrateFrom(xml, &image)) < 0)
        return -1;
    if (rc == 0 || (flags & VIR_DOMAIN_START_FORCE_BOOT))
        return priv->innerDriver->domainCreateWithFlags(dom, flags);

    if (kvmsaveCheckStartFlags(flags, "<kvmsave:migrateFrom>") < 0)
        return -1;
    if (!(restored = kvmsaveRestoreDomain(priv, image, xml, 0,
                                          kvmsaveStartToRestoreFlags(flags))))
        return -1;
    dom->id = restored->id;

    /* Restore from it once: the definition boots normally next time. The
     * guest runs now, so a failure here is worth a warning, not an error. */
    if (virDomainSetMetadata(inner, VIR_DOMAIN_METADATA_ELEMENT, NULL,
                             NULL, KVMSAVE_XML_NS_URI,
                             VIR_DOMAIN_AFFECT_CONFIG) < 0) {
        VIR_WARN("domain %s restored, but <kvmsave:migrateFrom> could not be removed from its definition: %s",
                 dom->name, virGetLastErrorMessage());
        virResetLastError();
    }
    return 0;
}


/* What libvirt itself says when a driver lacks an entry. */
static void
kvmsaveReportInnerUnsupported(const char *api)
{
    virReportError(VIR_ERR_NO_SUPPORT,
                   _("this function is not supported by the connection driver: %s"),
                   api);
}


/* Passing file descriptors to a guest that is restored is not possible:
 * its devices come back from the image. */
static int
kvmsaveRefuseFilesWithMigrateFrom(const char *xml)
{
    g_autofree char *image = NULL;
    int rc;

    if ((rc = kvmsaveXMLGetMigrateFrom(xml, &image)) <= 0)
        return rc;
    virReportError(VIR_ERR_OPERATION_UNSUPPORTED, "%s",
                   _("file descriptors cannot be passed to a domain that restores from <kvmsave:migrateFrom>"));
    return -1;
}


static virDomainPtr
kvmsaveDomainCreateXMLWithFiles(virConnectPtr conn, const char *xml,
                                unsigned int nfiles, int *files,
                                unsigned int flags)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(conn);

    if (kvmsaveRefuseFilesWithMigrateFrom(xml) < 0)
        return NULL;
    if (!priv->innerDriver->domainCreateXMLWithFiles) {
        kvmsaveReportInnerUnsupported("virDomainCreateXMLWithFiles");
        return NULL;
    }
    return priv->innerDriver->domainCreateXMLWithFiles(conn, xml, nfiles,
                                                       files, flags);
}


static int
kvmsaveDomainCreateWithFiles(virDomainPtr dom, unsigned int nfiles,
                             int *files, unsigned int flags)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(dom->conn);
    g_autoptr(virDomain) inner = NULL;
    g_autofree char *xml = NULL;

    if (kvmsaveJobCheckIdle(dom->uuid) < 0)
        return -1;
    if (!(inner = kvmsaveConnLookupInner(priv, dom->uuid)) ||
        !(xml = virDomainGetXMLDesc(inner, VIR_DOMAIN_XML_INACTIVE)))
        return -1;
    if (!(flags & VIR_DOMAIN_START_FORCE_BOOT) &&
        kvmsaveRefuseFilesWithMigrateFrom(xml) < 0)
        return -1;
    if (!priv->innerDriver->domainCreateWithFiles) {
        kvmsaveReportInnerUnsupported("virDomainCreateWithFiles");
        return -1;
    }
    return priv->innerDriver->domainCreateWithFiles(dom, nfiles, files, flags);
}


/* A define replaces the definition of the guest with the XML's UUID, or
 * else of the guest with its name: neither may be saved or restored now.
 * XML that does not parse is left to the inner driver to refuse. */
static int
kvmsaveDefineCheckIdle(kvmsaveConn *priv, const char *xml)
{
    g_autofree char *uuidstr = kvmsaveXMLGetUUID(xml);
    g_autofree char *name = NULL;
    g_autoptr(virDomain) dom = NULL;
    unsigned char uuid[VIR_UUID_BUFLEN];

    if (uuidstr && virUUIDParse(uuidstr, uuid) == 0)
        return kvmsaveJobCheckIdle(uuid);
    if ((name = kvmsaveXMLGetName(xml)) &&
        (dom = virDomainLookupByName(priv->inner, name)))
        return kvmsaveJobCheckIdle(dom->uuid);
    virResetLastError();
    return 0;
}


/* A restored guest's live XML carries kvmsave's "-incoming defer"; a
 * definition made from it must not, or the next plain start would wait
 * for a migration forever. */
static virDomainPtr
kvmsaveDomainDefineXMLFlags(virConnectPtr conn, const char *xml,
                            unsigned int flags)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(conn);
    g_autofree char *clean = NULL;

    if (kvmsaveDefineCheckIdle(priv, xml) < 0)
        return NULL;
    if (kvmsaveXMLHasIncoming(xml) && !(clean = kvmsaveXMLWithoutIncoming(xml)))
        return NULL;
    return priv->innerDriver->domainDefineXMLFlags(conn, clean ? clean : xml,
                                                   flags);
}


static virDomainPtr
kvmsaveDomainDefineXML(virConnectPtr conn, const char *xml)
{
    return kvmsaveDomainDefineXMLFlags(conn, xml, 0);
}


static int
kvmsaveDomainCreate(virDomainPtr dom)
{
    return kvmsaveDomainCreateWithFlags(dom, 0);
}


/* A destroy would pull the guest from under a save or restore. */
static int
kvmsaveDomainDestroyFlags(virDomainPtr dom, unsigned int flags)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(dom->conn);

    if (kvmsaveJobCheckIdle(dom->uuid) < 0)
        return -1;
    return priv->innerDriver->domainDestroyFlags(dom, flags);
}


static int
kvmsaveDomainDestroy(virDomainPtr dom)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(dom->conn);

    if (kvmsaveJobCheckIdle(dom->uuid) < 0)
        return -1;
    return priv->innerDriver->domainDestroy(dom);
}


/* ---- jobs: progress and cancel of kvmsave's own save and restore ------ */

static int
kvmsaveDomainGetJobInfo(virDomainPtr dom, virDomainJobInfoPtr info)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(dom->conn);
    kvmsaveJobFigures fig = { 0 };
    g_autofree char *error = NULL;

    if (kvmsaveJobGetInfo(dom->uuid, info) > 0 ||
        kvmsaveJobBoardGetInfo(priv, dom->uuid, info) > 0)
        return 0;
    /* A lazy restore goes on in its page server, after the call. */
    if (kvmsaveLazyGetJob(priv, dom->uuid, &fig, &error) == KVMSAVE_LAZY_SERVING) {
        memset(info, 0, sizeof(*info));
        info->type = VIR_DOMAIN_JOB_UNBOUNDED;
        info->dataTotal = info->memTotal = fig.total;
        info->dataProcessed = info->memProcessed = fig.processed;
        info->dataRemaining = info->memRemaining = fig.total - fig.processed;
        return 0;
    }
    return priv->innerDriver->domainGetJobInfo(dom, info);
}


/* The statistics of a lazy restore: one still serving pages, or with
 * @completed, one that ended; 0 if there is none. */
static int
kvmsaveDomainGetLazyJobStats(kvmsaveConn *priv, virDomainPtr dom,
                             bool completed, int *type,
                             virTypedParameterPtr *params, int *nparams)
{
    kvmsaveJobFigures fig = { 0 };
    g_autofree char *error = NULL;
    kvmsaveLazyState state = kvmsaveLazyGetJob(priv, dom->uuid, &fig, &error);

    if (state == KVMSAVE_LAZY_NONE || completed != fig.ended)
        return 0;
    if (kvmsaveJobFiguresToParams(&fig, params, nparams) < 0)
        return -1;
    *type = kvmsaveJobFiguresType(&fig);
    return 1;
}


static int
kvmsaveDomainGetJobStats(virDomainPtr dom, int *type,
                         virTypedParameterPtr *params, int *nparams,
                         unsigned int flags)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(dom->conn);
    int rc;

    rc = kvmsaveJobGetStats(dom->uuid,
                            !!(flags & VIR_DOMAIN_JOB_STATS_COMPLETED),
                            !!(flags & VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED),
                            type, params, nparams);
    if (rc == 0)
        rc = kvmsaveJobBoardGetStats(priv, dom->uuid,
                                     !!(flags & VIR_DOMAIN_JOB_STATS_COMPLETED),
                                     !!(flags & VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED),
                                     type, params, nparams);
    if (rc == 0)
        rc = kvmsaveDomainGetLazyJobStats(priv, dom,
                                          !!(flags & VIR_DOMAIN_JOB_STATS_COMPLETED),
                                          type, params, nparams);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    return priv->innerDriver->domainGetJobStats(dom, type, params, nparams,
                                                flags);
}


static int
kvmsaveDomainAbortJobFlags(virDomainPtr dom, unsigned int flags)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(dom->conn);

    /* The job stops at its next poll; the call that runs it reports.
     * Flags (postcopy) concern migrations only: the inner driver's. */
    if (flags == 0) {
        kvmsaveJobFigures fig = { 0 };
        g_autofree char *error = NULL;
        int rc = kvmsaveJobAbort(dom->uuid);

        if (rc == 0)
            rc = kvmsaveJobBoardAbort(priv, dom->uuid);
        if (rc != 0)
            return rc < 0 ? -1 : 0;
        if (kvmsaveLazyGetJob(priv, dom->uuid, &fig, &error) == KVMSAVE_LAZY_SERVING) {
            virReportError(VIR_ERR_OPERATION_INVALID, "%s",
                           _("cannot abort a lazy restore once its guest runs: part of the guest's memory is still only in the image; wait for the job to end, or destroy the guest"));
            return -1;
        }
        return priv->innerDriver->domainAbortJob(dom);
    }
    return priv->innerDriver->domainAbortJobFlags(dom, flags);
}


static int
kvmsaveDomainAbortJob(virDomainPtr dom)
{
    return kvmsaveDomainAbortJobFlags(dom, 0);
}


/* ---- connection ------------------------------------------------------ */

/* Free @priv: its event callbacks, its inner connection, its root. */
static void
kvmsaveConnFree(kvmsaveConn *priv)
{
    virErrorPtr saved = NULL;

    if (!priv)
        return;
    /* Closing must not hide the error that made an open fail. */
    virErrorPreserveLast(&saved);
    kvmsaveEventsFree(priv->events);
    if (priv->inner)
        virConnectClose(priv->inner);
    virErrorRestore(&saved);
    g_free(priv->root);
    g_free(priv);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveConn, kvmsaveConnFree);


static int
kvmsaveConnectClose(virConnectPtr conn)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(conn);

    /* The inner driver's per-connection cleanup (close callbacks of
     * domains started through this connection) runs for this connection
     * only when the driver runs in this process; its shared state is
     * released once, by closing the inner connection. */
    if (STREQ(priv->innerDriver->name, "QEMU"))
        priv->innerDriver->connectClose(conn);
    conn->privateData = NULL;
    conn->driver = NULL;
    kvmsaveConnFree(priv);
    return 0;
}


static void
kvmsaveConnectInstallTable(kvmsaveConn *priv)
{
    virHypervisorDriver *t = &priv->table;

    *t = *priv->innerDriver;
    t->connectClose = kvmsaveConnectClose;
    t->domainSave = kvmsaveDomainSave;
    t->domainSaveFlags = kvmsaveDomainSaveFlags;
    t->domainSaveParams = kvmsaveDomainSaveParams;
    t->domainRestore = kvmsaveDomainRestore;
    t->domainRestoreFlags = kvmsaveDomainRestoreFlags;
    t->domainRestoreParams = kvmsaveDomainRestoreParams;
    t->domainSaveImageGetXMLDesc = kvmsaveDomainSaveImageGetXMLDesc;
    t->domainSaveImageDefineXML = kvmsaveDomainSaveImageDefineXML;
    t->domainCreateXML = kvmsaveDomainCreateXML;
    t->domainCreate = kvmsaveDomainCreate;
    t->domainCreateWithFlags = kvmsaveDomainCreateWithFlags;
    t->domainCreateXMLWithFiles = kvmsaveDomainCreateXMLWithFiles;
    t->domainCreateWithFiles = kvmsaveDomainCreateWithFiles;
    t->domainDefineXML = kvmsaveDomainDefineXML;
    t->domainDefineXMLFlags = kvmsaveDomainDefineXMLFlags;
    t->domainManagedSave = kvmsaveDomainManagedSave;
    t->domainHasManagedSaveImage = kvmsaveDomainHasManagedSaveImage;
    t->domainManagedSaveRemove = kvmsaveDomainManagedSaveRemove;
    t->domainManagedSaveGetXMLDesc = kvmsaveDomainManagedSaveGetXMLDesc;
    t->domainManagedSaveDefineXML = kvmsaveDomainManagedSaveDefineXML;
    t->domainDestroy = kvmsaveDomainDestroy;
    t->domainDestroyFlags = kvmsaveDomainDestroyFlags;
    t->domainUndefine = kvmsaveDomainUndefine;
    t->domainUndefineFlags = kvmsaveDomainUndefineFlags;
    t->connectListAllDomains = kvmsaveConnectListAllDomains;
    t->connectDomainEventRegister = kvmsaveEventsRegister;
    t->connectDomainEventDeregister = kvmsaveEventsDeregister;
    t->connectDomainEventRegisterAny = kvmsaveEventsRegisterAny;
    t->connectDomainEventDeregisterAny = kvmsaveEventsDeregisterAny;
    t->domainGetJobInfo = kvmsaveDomainGetJobInfo;
    t->domainGetJobStats = kvmsaveDomainGetJobStats;
    t->domainAbortJob = kvmsaveDomainAbortJob;
    t->domainAbortJobFlags = kvmsaveDomainAbortJobFlags;
}


/* The inner URI: uri=..., or the QEMU driver embedded under the root. A
 * local daemon's URI (qemu:///system) is made to reach the daemon that
 * serves it, as from a plain client (kvmsave_uri.h). */
static char *
kvmsaveConnectInnerURI(virConnectPtr conn, virConf *conf, const char *root,
                       unsigned int flags, bool *embedded)
{
    const char *uri = NULL;
    g_autofree char *alias = NULL;
    g_autofree char *confMode = NULL;
    g_autofree char *daemon = NULL;
    g_autofree char *escaped = NULL;
    size_t i;

    for (i = 0; i < conn->uri->paramsCount; i++) {
        virURIParam *p = &conn->uri->params[i];

        if (STREQ(p->name, "root"))
            continue;
        if (STREQ(p->name, "uri")) {
            uri = p->value;
            continue;
        }
        virReportError(VIR_ERR_INVALID_ARG,
                       _("unknown parameter '%s' in kvmsave URI (it takes 'root' and 'uri')"),
                       p->name);
        return NULL;
    }

    *embedded = !uri;
    if (uri) {
        /* An alias is resolved here, so that its socket is chosen too. */
        if (conf && virURIResolveAlias(conf, uri, &alias) < 0)
            return NULL;
        if (alias)
            uri = alias;
        if (g_str_has_prefix(uri, KVMSAVE_SCHEME ":")) {
            virReportError(VIR_ERR_INVALID_ARG, "%s",
                           _("the inner URI of a kvmsave connection cannot be a kvmsave URI"));
            return NULL;
        }
        if (conf && virConfGetValueString(conf, "remote_mode", &confMode) < 0)
            return NULL;
        if (kvmsaveURIForDaemon(uri, confMode, !!(flags & VIR_CONNECT_RO),
                                KVMSAVE_DAEMON_SOCKET_DIR, &daemon) < 0)
            return NULL;
        return daemon ? g_steal_pointer(&daemon) : g_strdup(uri);
    }
    escaped = g_uri_escape_string(root, "/", false);
    return g_strdup_printf("qemu:///embed?root=%s", escaped);
}


/* The embedded QEMU driver runs without daemons, so on first use of a root
 * kvmsave gives it a qemu.conf that needs no virtlogd. A file the user
 * wrote is never replaced. */
static int
kvmsaveConnectSeedQemuConf(const char *root)
{
    static const char conf[] =
        "# Written by kvmsave on first use of this root; kvmsave never\n"
        "# changes it again. The embedded QEMU driver runs with no daemons,\n"
        "# so QEMU's output goes to files instead of virtlogd.\n"
        "stdio_handler = \"file\"\n";
    g_autofree char *dir = g_build_filename(root, "etc", NULL);
    g_autofree char *path = g_build_filename(dir, "qemu.conf", NULL);
    VIR_AUTOCLOSE fd = -1;

    if (g_mkdir_with_parents(dir, 0755) < 0) {
        virReportSystemError(errno, _("cannot create directory '%s'"), dir);
        return -1;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        if (errno == EEXIST)
            return 0;
        virReportSystemError(errno, _("cannot create '%s'"), path);
        return -1;
    }
    if (safewrite(fd, conf, strlen(conf)) < 0 || VIR_CLOSE(fd) < 0) {
        virReportSystemError(errno, _("cannot write '%s'"), path);
        unlink(path);
        return -1;
    }
    return 0;
}


static virDrvOpenStatus
kvmsaveConnectOpen(virConnectPtr conn, virConnectAuthPtr auth,
                   virConf *conf, unsigned int flags)
{
    g_autoptr(kvmsaveConn) priv = NULL;
    g_autofree char *inner = NULL;
    const char *root;
    bool embedded;

    virCheckFlags(VIR_CONNECT_RO, VIR_DRV_OPEN_ERROR);

    if (!conn->uri || STRNEQ_NULLABLE(conn->uri->scheme, KVMSAVE_SCHEME))
        return VIR_DRV_OPEN_DECLINED;
    if (STRNEQ(conn->uri->path, "/embed") || conn->uri->server) {
        virReportError(VIR_ERR_INVALID_ARG, "%s",
                       _("kvmsave runs embedded: use kvmsave:///embed?root=DIR"));
        return VIR_DRV_OPEN_ERROR;
    }
    if (!(root = virURIGetParam(conn->uri, "root")))
        return VIR_DRV_OPEN_ERROR;
    if (!(inner = kvmsaveConnectInnerURI(conn, conf, root, flags, &embedded)))
        return VIR_DRV_OPEN_ERROR;
    if (embedded &&
        (kvmsaveEmbedCheckFree(root) < 0 || kvmsaveConnectSeedQemuConf(root) < 0))
        return VIR_DRV_OPEN_ERROR;
    if (embedded)
        kvmsaveEmbedRepairStatuses(root);

    priv = g_new0(kvmsaveConn, 1);
    priv->root = g_strdup(root);
    priv->embedded = embedded;
    if (kvmsaveConnLoadConfig(priv) < 0)
        return VIR_DRV_OPEN_ERROR;
    VIR_DEBUG("opening inner connection %s", inner);
    if (auth)
        priv->inner = virConnectOpenAuth(inner, auth, flags);
    else if (flags & VIR_CONNECT_RO)
        priv->inner = virConnectOpenReadOnly(inner);
    else
        priv->inner = virConnectOpen(inner);
    if (!priv->inner)
        return VIR_DRV_OPEN_ERROR;

    priv->outer = conn;
    if (!(priv->events = kvmsaveEventsNew(conn, priv->inner)))
        return VIR_DRV_OPEN_ERROR;
    priv->innerDriver = priv->inner->driver;
    /* Before the embedded driver's reconnects are waited for: QEMU's main
     * loop may itself wait for a page only a page server can send. */
    if (!(flags & VIR_CONNECT_RO))
        kvmsaveLazyRecoverServers(priv);
    /* ...or for streams that are gone: libvirt would wait for it. */
    if (embedded && !(flags & VIR_CONNECT_RO))
        kvmsaveJournalKillLoaders(priv);
    if (embedded)
        kvmsaveEmbedSettle(priv->inner);
    /* Jobs of clients that were killed: finish or undo them first. */
    if (!(flags & VIR_CONNECT_RO))
        kvmsaveJournalRecover(priv);
    kvmsaveConnectInstallTable(priv);

    /* Serve everything else from the inner connection's drivers. */
    conn->driver = &priv->table;
    conn->networkDriver = priv->inner->networkDriver;
    conn->interfaceDriver = priv->inner->interfaceDriver;
    conn->storageDriver = priv->inner->storageDriver;
    conn->nodeDeviceDriver = priv->inner->nodeDeviceDriver;
    conn->secretDriver = priv->inner->secretDriver;
    conn->nwfilterDriver = priv->inner->nwfilterDriver;
    conn->privateData = priv->inner->privateData;
    g_steal_pointer(&priv);
    return VIR_DRV_OPEN_SUCCESS;
}


/* Only used until connectOpen installs the layered table. */
static virHypervisorDriver kvmsaveHypervisorDriver = {
    .name = "kvmsave",
    .connectOpen = kvmsaveConnectOpen,
};

static virConnectDriver kvmsaveConnectDriver = {
    .localOnly = true,
    .embeddable = true,
    .uriSchemes = (const char *[]){ KVMSAVE_SCHEME, NULL },
    .hypervisorDriver = &kvmsaveHypervisorDriver,
};


/* ---- state driver: embedded root and logging ---------------------------- */

/* libvirt's routine warnings (taint notes and the like) go to a log file
 * under the root, not the user's terminal, unless the user set up logging.
 * Children libvirt forks (security labelling in the guest's namespace)
 * drop outputs and filters but keep the default priority: raising that
 * to "error" keeps their warnings off the terminal too, while a filter
 * still lets this process's warnings into the file. */
static void
kvmsaveStateSetupLogging(const char *root)
{
    g_autofree char *dir = g_build_filename(root, "log", NULL);
    g_autofree char *outputs = NULL;

    if (getenv("LIBVIRT_LOG_OUTPUTS") || getenv("LIBVIRT_DEBUG") ||
        virLogGetNbOutputs() > 0)
        return;
    if (g_mkdir_with_parents(dir, 0755) < 0) {
        VIR_WARN("cannot create log directory %s: %s", dir, g_strerror(errno));
        return;
    }
    outputs = g_strdup_printf("3:file:%s/kvmsave.log", dir);
    if (virLogSetOutputs(outputs) < 0 ||
        virLogSetFilters("3:*") < 0 ||
        virLogSetDefaultPriority(VIR_LOG_ERROR) < 0)
        virResetLastError();
}


static virDrvStateInitResult
kvmsaveStateInitialize(bool privileged G_GNUC_UNUSED, const char *root,
                       bool monolithic G_GNUC_UNUSED,
                       virStateInhibitCallback callback G_GNUC_UNUSED,
                       void *opaque G_GNUC_UNUSED)
{
    if (!root)
        return VIR_DRV_STATE_INIT_SKIPPED;
    if (g_mkdir_with_parents(root, 0755) < 0) {
        virReportSystemError(errno, _("cannot create the root directory '%s'"),
                             root);
        return VIR_DRV_STATE_INIT_ERROR;
    }
    kvmsaveStateSetupLogging(root);
    return VIR_DRV_STATE_INIT_COMPLETE;
}


static virStateDriver kvmsaveStateDriver = {
    .name = "kvmsave",
    .stateInitialize = kvmsaveStateInitialize,
};


int
kvmsaveRegister(void)
{
    /* ./run points this at the build tree's catalogs (uninstalled use). */
    const char *localedir = getenv("KVMSAVE_LOCALEDIR");

    bindtextdomain(PACKAGE, localedir && *localedir ? localedir : LOCALEDIR);
    bind_textdomain_codeset(PACKAGE, "UTF-8");
    if (virRegisterConnectDriver(&kvmsaveConnectDriver, false) < 0)
        return -1;
    if (virRegisterStateDriver(&kvmsaveStateDriver) < 0)
        return -1;
    return 0;
}
