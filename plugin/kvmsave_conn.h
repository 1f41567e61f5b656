/*
 * kvmsave_conn.h: a kvmsave connection, layered over an inner one
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The outer connection (the one the user opened) runs on a copy of the
 * inner driver's hypervisor table with kvmsave's entries put in, and shares
 * the inner connection's private data; so every API kvmsave does not
 * implement is served by the inner driver itself.
 */
#pragma once

#include "internal.h"
#include "datatypes.h"
#include "driver.h"
/* g_autoptr(virDomain) */
#include "kvmsave_compat.h"

typedef struct _kvmsaveEvents kvmsaveEvents;

typedef struct _kvmsaveConn kvmsaveConn;
struct _kvmsaveConn {
    virHypervisorDriver table;      /* the outer connection's driver table */
    virHypervisorDriver *innerDriver;
    virConnectPtr outer;            /* not referenced: it owns us */
    virConnectPtr inner;
    kvmsaveEvents *events;          /* lifecycle callbacks of @outer */
    char *root;
    bool embedded;                  /* the inner driver is embedded under root */
    int imageFormat;                /* default KVMSAVE_IMAGE_ENCODING_* */
    int restoreMode;                /* default KVMSAVE_RESTORE_MODE_* */
};

/* The kvmsave connection behind @conn, an outer connection. */
kvmsaveConn *kvmsaveConnFromConnect(virConnectPtr conn);

/* The inner driver's domain with @uuid, or NULL with VIR_ERR_NO_DOMAIN. */
virDomainPtr kvmsaveConnLookupInner(kvmsaveConn *priv,
                                    const unsigned char *uuid);

/* The user-facing (outer) domain object for an inner one. */
virDomainPtr kvmsaveConnOuterDomain(kvmsaveConn *priv, virDomainPtr inner);

/* Where the managed save image of guest @uuid lives: under the kvmsave
 * root whatever the inner driver, ROOT/lib/kvmsave/managed-save/UUID.save. */
char *kvmsaveConnManagedSavePath(kvmsaveConn *priv, const unsigned char *uuid);

/* Create the managed save directory (0700: images hold guest memory). */
int kvmsaveConnManagedSaveDir(kvmsaveConn *priv);

/* Read ROOT/etc/kvmsave.conf, if there is one, into @priv: the default
 * image format (image_format = "raw" | "zstd" | "sparse"; raw without the file). */
int kvmsaveConnLoadConfig(kvmsaveConn *priv);
