/*
 * kvmsave_conn.c: a kvmsave connection, layered over an inner one
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <unistd.h>

#include "kvmsave_conn.h"
#include "kvmsave_args.h"
#include "kvmsave_image.h"
#include "virconf.h"
#include "virerror.h"
#include "viruuid.h"

#define VIR_FROM_THIS VIR_FROM_QEMU


kvmsaveConn *
kvmsaveConnFromConnect(virConnectPtr conn)
{
    /* conn->driver points at the table embedded first in kvmsaveConn. */
    return G_STRUCT_MEMBER_P(conn->driver, -G_STRUCT_OFFSET(kvmsaveConn, table));
}


virDomainPtr
kvmsaveConnLookupInner(kvmsaveConn *priv, const unsigned char *uuid)
{
    virDomainPtr dom;

    if (!(dom = virDomainLookupByUUID(priv->inner, uuid))) {
        char uuidstr[VIR_UUID_STRING_BUFLEN];
        virUUIDFormat(uuid, uuidstr);
        virReportError(VIR_ERR_NO_DOMAIN,
                       _("no domain with matching uuid '%s'"), uuidstr);
    }
    return dom;
}


virDomainPtr
kvmsaveConnOuterDomain(kvmsaveConn *priv, virDomainPtr inner)
{
    return virGetDomain(priv->outer, inner->name, inner->uuid, inner->id);
}


static char *
kvmsaveConnManagedSaveDirPath(kvmsaveConn *priv)
{
    return g_build_filename(priv->root, "lib", "kvmsave", "managed-save", NULL);
}


char *
kvmsaveConnManagedSavePath(kvmsaveConn *priv, const unsigned char *uuid)
{
    g_autofree char *dir = kvmsaveConnManagedSaveDirPath(priv);
    g_autofree char *name = NULL;
    char uuidstr[VIR_UUID_STRING_BUFLEN];

    virUUIDFormat(uuid, uuidstr);
    name = g_strdup_printf("%s.save", uuidstr);
    return g_build_filename(dir, name, NULL);
}


int
kvmsaveConnManagedSaveDir(kvmsaveConn *priv)
{
    g_autofree char *dir = kvmsaveConnManagedSaveDirPath(priv);

    if (g_mkdir_with_parents(dir, 0700) < 0) {
        virReportSystemError(errno, _("cannot create managed save directory '%s'"),
                             dir);
        return -1;
    }
    return 0;
}


int
kvmsaveConnLoadConfig(kvmsaveConn *priv)
{
    g_autofree char *path = g_build_filename(priv->root, "etc", "kvmsave.conf",
                                             NULL);
    g_autoptr(virConf) conf = NULL;
    g_autofree char *format = NULL;
    g_autofree char *mode = NULL;

    priv->imageFormat = KVMSAVE_IMAGE_ENCODING_RAW;
    priv->restoreMode = KVMSAVE_RESTORE_MODE_EAGER;
    if (access(path, F_OK) < 0)
        return 0;
    if (!(conf = virConfReadFile(path, 0)))
        return -1;
    if (virConfGetValueString(conf, "image_format", &format) < 0)
        return -1;
    if (format &&
        (priv->imageFormat = kvmsaveImageFormatFromString(format)) < 0) {
        virReportError(VIR_ERR_CONF_SYNTAX,
                       _("invalid image_format '%s' in '%s': kvmsave writes 'raw', 'zstd' or 'sparse'"),
                       format, path);
        return -1;
    }
    if (virConfGetValueString(conf, "restore_mode", &mode) < 0)
        return -1;
    if (mode && (priv->restoreMode = kvmsaveRestoreModeFromString(mode)) < 0) {
        virReportError(VIR_ERR_CONF_SYNTAX,
                       _("invalid restore_mode '%s' in '%s': kvmsave restores 'eager' or 'lazy'"),
                       mode, path);
        return -1;
    }
    return 0;
}
