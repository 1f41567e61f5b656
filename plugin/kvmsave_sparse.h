/*
 * kvmsave_sparse.h: sparse save images, which QEMU writes and reads
 * itself: stock libvirt's, and kvmsave's own
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * libvirt 11.2 and later save with save_image_format "sparse" (format 6)
 * through QEMU's mapped-ram capability (QEMU 9.0 and later): every RAM
 * page at a fixed file offset, holes for zero pages. Such a stream cannot
 * pass through a pipe; QEMU reads the file itself, here from a descriptor
 * kvmsave hands it in an fdset, as libvirt 11.3 does
 * (qemuProcessIncomingDefNew): no path reaches QEMU.
 *
 * kvmsave's own sparse images (image format "sparse") hold the same kind
 * of stream, which QEMU writes into kvmsave's temporary file the same way,
 * with multifd channels writing in parallel and O_DIRECT for
 * --bypass-cache; kvmsave_mapped.h checksums it.
 */
#pragma once

#include "internal.h"

/* QEMU 9.0 brought mapped-ram and file: migration from an fdset, 9.1
 * direct-io. */
#define KVMSAVE_SPARSE_QEMU_MIN 9000000
#define KVMSAVE_SPARSE_DIRECT_QEMU_MIN 9001000

/* QEMU versions as libvirt counts them: major * 1000000 + minor * 1000 +
 * micro. That of @inner (its default emulator, before a QEMU runs), or 0
 * with an error. */
unsigned long kvmsaveSparseQemuVersion(virConnectPtr inner);
/* That of a query-version text ("9.2.1 Debian..."), or 0. */
unsigned long kvmsaveSparseParseVersion(const char *text);
/* That of the QEMU running @dom, or 0 with an error. */
unsigned long kvmsaveSparseDomainVersion(virDomainPtr dom);

/* Whether QEMU @version can save a sparse image (with O_DIRECT when
 * @direct): 0, or -1 with VIR_ERR_OPERATION_UNSUPPORTED. */
int kvmsaveSparseCheckSave(unsigned long version, bool direct);

/* Have @dom's QEMU, of @version, save into @path, a temporary image whose
 * header is written, from @offset: mapped-ram and @channels multifd
 * channels on, direct-io as @direct, the file in a new fdset. Returns the
 * fdset's ID (to remove once saved), or -1. */
int kvmsaveSparseMigrate(virDomainPtr dom, const char *path, uint64_t offset,
                         unsigned int channels, bool direct,
                         unsigned long version);

/* Turn mapped-ram and direct-io off again on @dom's QEMU of @version, if
 * it has them: QEMU keeps them from one migration to the next, and
 * neither a save into a socket nor stock libvirt's own saves expect
 * them. */
int kvmsaveSparseReset(virDomainPtr dom, unsigned long version);

/* Have @dom's QEMU (waiting with "-incoming defer") load the sparse image
 * at @path (@label in errors), stock's or kvmsave's, from @offset: with
 * mapped-ram, @channels multifd channels, and direct-io when @direct and
 * the QEMU of @version has it. Returns the fdset's ID, or -1. */
int kvmsaveSparseIncomingImage(virDomainPtr dom, const char *path,
                               const char *label, uint64_t offset,
                               unsigned int channels, bool direct,
                               unsigned long version);

/* Whether the QEMU of @inner can load the sparse image @path: 0, or -1
 * with VIR_ERR_OPERATION_UNSUPPORTED saying what is needed. */
int kvmsaveSparseCheckQemu(virConnectPtr inner, const char *path);
/* The same for kvmsave's own sparse image @path. */
int kvmsaveSparseCheckQemuImage(virConnectPtr inner, const char *path);
