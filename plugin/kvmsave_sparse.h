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
#include "kvmsave_stock.h"

/* QEMU 9.0 brought mapped-ram and file: migration from an fdset, 9.1
 * direct-io. */
#define KVMSAVE_SPARSE_QEMU_MIN 9000000
#define KVMSAVE_SPARSE_DIRECT_QEMU_MIN 9001000

/* The QEMU version of @inner, as libvirt gives it (major * 1000000 +
 * minor * 1000 + micro), or 0 with an error. */
unsigned long kvmsaveSparseQemuVersion(virConnectPtr inner);

/* Whether the QEMU of @inner can save a sparse image (with O_DIRECT when
 * @direct): 0, or -1 with VIR_ERR_OPERATION_UNSUPPORTED. */
int kvmsaveSparseCheckSave(virConnectPtr inner, bool direct);

/* Have @dom's QEMU save into @path, a temporary image whose header is
 * written, from @offset: mapped-ram and @channels multifd channels on,
 * direct-io as @direct, the file in a new fdset. Returns the fdset's ID
 * (to remove once saved), or -1. */
int kvmsaveSparseMigrate(virDomainPtr dom, const char *path, uint64_t offset,
                         unsigned int channels, bool direct);

/* Turn mapped-ram off again for a save into a socket, on a QEMU that
 * has it (of @version): QEMU keeps it from one migration to the next. */
int kvmsaveSparseReset(virDomainPtr dom, unsigned long version);

/* Have @dom's QEMU (waiting with "-incoming defer") load kvmsave's sparse
 * image @path from @offset, with @channels multifd channels and
 * direct-io when @direct and the QEMU of @version has it. Returns the
 * fdset's ID, or -1. */
int kvmsaveSparseIncomingImage(virDomainPtr dom, const char *path,
                               uint64_t offset, unsigned int channels,
                               bool direct, unsigned long version);

/* Whether the QEMU of @inner can load the sparse image @path: 0, or -1
 * with VIR_ERR_OPERATION_UNSUPPORTED saying what is needed. */
int kvmsaveSparseCheckQemu(virConnectPtr inner, const char *path);
/* The same for kvmsave's own sparse image @path. */
int kvmsaveSparseCheckQemuImage(virConnectPtr inner, const char *path);

/* Have @dom's QEMU (waiting with "-incoming defer") load @s: mapped-ram
 * on, @s's file in a new fdset, migrate-incoming from it past the stock
 * header. Returns the fdset's ID (to remove once loaded), or -1. */
int kvmsaveSparseIncoming(virDomainPtr dom, kvmsaveStockImage *s);
