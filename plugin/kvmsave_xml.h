/*
 * kvmsave_xml.h: the kvmsave domain XML extension and XML rewriting
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "internal.h"
#include "virconftypes.h"

#define KVMSAVE_XML_NS_URI "urn:kvmsave:domain:1"
#define KVMSAVE_XML_NS_PREFIX "kvmsave"

/* Find <kvmsave:migrateFrom> in the <metadata> of @domxml and validate it
 * against the schema. Returns 1 and sets *path when present, 0 when the
 * XML carries none, -1 with an error reported. */
int kvmsaveXMLGetMigrateFrom(const char *domxml, char **path);
/* ...and whether it says force="disks" (restore over changed disks), and
 * its mode attribute ("eager" or "lazy"; NULL if it has none), if @mode
 * is not NULL. */
int kvmsaveXMLGetMigrateFromForce(const char *domxml, char **path,
                                  bool *forceDisks, char **mode);

/* Whether @path can be written in XML at all (UTF-8, no control
 * characters but tab, CR and LF). */
bool kvmsaveXMLPathIsRepresentable(const char *path);

/* The element to store with virDomainSetMetadata() for @path. */
char *kvmsaveXMLFormatMigrateFrom(const char *path);

/* @domxml with the kvmsave metadata and kvmsave's own "-incoming defer"
 * QEMU arguments removed: what a save image keeps. */
char *kvmsaveXMLForImage(const char *domxml);

/* Whether @domxml ends its QEMU command line with kvmsave's own
 * "-incoming defer", and @domxml without it. */
bool kvmsaveXMLHasIncoming(const char *domxml);
char *kvmsaveXMLWithoutIncoming(const char *domxml);

/* @domxml with the arguments @extra (NULL-terminated, or NULL) and
 * "-incoming defer" added to the QEMU command line, so the domain starts
 * waiting for its state. Of extra arguments, only a lazy restore's
 * monitor (below) is stripped again with "-incoming defer". */
char *kvmsaveXMLWithIncoming(const char *domxml, const char *const *extra);

/* A lazy restore's own QMP monitor: "-chardev
 * KVMSAVE_XML_LAZY_CHARDEV_PREFIX"path=...,server=on,wait=off" and "-mon
 * KVMSAVE_XML_LAZY_MON". */
#define KVMSAVE_XML_LAZY_CHARDEV_PREFIX "socket,id=kvmsave-qmp,"
#define KVMSAVE_XML_LAZY_MON "chardev=kvmsave-qmp,mode=control"

/* @domxml with its <cpu> replaced by the one in @cookie, the save cookie
 * of a stock libvirt image (the CPU as QEMU ran it, which stock libvirt
 * restores with); unchanged when the cookie has none. */
char *kvmsaveXMLWithCookieCPU(const char *domxml, const char *cookie);

/* @domxml without security-sensitive data (graphics passwords). */
char *kvmsaveXMLStripSecure(const char *domxml);

/* Fail with VIR_ERR_CONFIG_UNSUPPORTED unless @newxml describes a guest
 * whose ABI matches the one saved with @savedxml. */
int kvmsaveXMLCheckABI(const char *savedxml, const char *newxml);

/* The <name> and <uuid> of @domxml, or NULL (also when it does not parse:
 * the error is then reported). */
char *kvmsaveXMLGetName(const char *domxml);
char *kvmsaveXMLGetUUID(const char *domxml);

/* The <os><type machine=...> of @domxml, or NULL. */
char *kvmsaveXMLGetMachine(const char *domxml);
/* The user:group a running guest's QEMU runs as (its live XML's DAC
 * label, "+UID:+GID"), or NULL when it has none. */
char *kvmsaveXMLGetDACLabel(const char *domxml);

/* The string value of XPath @expr in @xml, whose root element is
 * @rootName; NULL when empty (or, with an error, when @xml does not parse). */
char *kvmsaveXMLGetString(const char *xml, const char *rootName,
                          const char *expr);

/* @domxml parsed by libvirt as an inactive definition (no validation
 * against a hypervisor's capabilities), or NULL with an error. */
virDomainDef *kvmsaveXMLParseDef(const char *domxml);

/* The host CPU model in capabilities XML @capsxml, or NULL. */
char *kvmsaveXMLGetHostCPUModel(const char *capsxml);
