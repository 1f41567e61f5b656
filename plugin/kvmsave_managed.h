/*
 * kvmsave_managed.h: managed save, kvmsave's own
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "kvmsave_conn.h"

/* Driver entry points. */
int kvmsaveDomainManagedSave(virDomainPtr dom, unsigned int flags);
int kvmsaveDomainHasManagedSaveImage(virDomainPtr dom, unsigned int flags);
int kvmsaveDomainManagedSaveRemove(virDomainPtr dom, unsigned int flags);
char *kvmsaveDomainManagedSaveGetXMLDesc(virDomainPtr dom, unsigned int flags);
int kvmsaveDomainManagedSaveDefineXML(virDomainPtr dom, const char *dxml,
                                      unsigned int flags);
int kvmsaveDomainUndefine(virDomainPtr dom);
int kvmsaveDomainUndefineFlags(virDomainPtr dom, unsigned int flags);
int kvmsaveConnectListAllDomains(virConnectPtr conn, virDomainPtr **domains,
                                 unsigned int flags);

/* A managed save writing chunks in @format (KVMSAVE_IMAGE_ENCODING_*)
 * over @channels QEMU multifd channels (0 or 1: one stream). */
int kvmsaveManagedSaveAs(kvmsaveConn *priv, virDomainPtr dom, int format,
                         int channels, unsigned int flags);

/* Start @dom from its managed save image: 1 if restored, 0 if it has none
 * (or --force-boot discarded it), -1 on error (the image is kept). */
int kvmsaveManagedSaveStart(kvmsaveConn *priv, virDomainPtr dom,
                            unsigned int flags);
