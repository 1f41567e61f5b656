/*
 * kvmsave_sparse.h: restoring stock libvirt's sparse save images
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * libvirt 11.2 and later save with save_image_format "sparse" (format 6)
 * through QEMU's mapped-ram capability (QEMU 9.0 and later): every RAM
 * page at a fixed file offset, holes for zero pages. Such a stream cannot
 * pass through a pipe; QEMU reads the file itself, here from a descriptor
 * kvmsave hands it in an fdset, as libvirt 11.3 does
 * (qemuProcessIncomingDefNew): no path reaches QEMU.
 */
#pragma once

#include "internal.h"
#include "kvmsave_stock.h"

/* QEMU 9.0 brought mapped-ram and file: migration from an fdset. */
#define KVMSAVE_SPARSE_QEMU_MIN 9000000

/* Whether the QEMU of @inner can load the sparse image @path: 0, or -1
 * with VIR_ERR_OPERATION_UNSUPPORTED saying what is needed. */
int kvmsaveSparseCheckQemu(virConnectPtr inner, const char *path);

/* Have @dom's QEMU (waiting with "-incoming defer") load @s: mapped-ram
 * on, @s's file in a new fdset, migrate-incoming from it past the stock
 * header. Returns the fdset's ID (to remove once loaded), or -1. */
int kvmsaveSparseIncoming(virDomainPtr dom, kvmsaveStockImage *s);
