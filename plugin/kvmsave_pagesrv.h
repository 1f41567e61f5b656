/*
 * kvmsave_pagesrv.h: the postcopy source of a lazy restore, serving a
 * sparse image's pages to QEMU
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * QEMU gets the devices' state first and runs the guest; every page the
 * guest touches before it arrives is asked for on the return path and
 * sent ahead of the rest, which streams in behind. Each page comes out of
 * a 1 MiB block of the image checked against the image's table just
 * before, so no byte reaches QEMU unchecked; a block that fails ends the
 * migration, which leaves QEMU paused in postcopy (kvmsave_postcopy.h).
 */
#pragma once

#include "internal.h"

/* The most bytes of device state a lazy restore loads: QEMU gets them in
 * one package, which the server holds in memory. */
#define KVMSAVE_PAGESRV_DEVICE_MAX (16 * 1024 * 1024)

/* QEMU keeps a copy of the page server's end of kvmsave's own monitor
 * under this name (getfd on that monitor), so that the negotiated
 * connection outlives a page server killed with its supervisor; the
 * page server closes it once every page is in. */
#define KVMSAVE_PAGESRV_QMP_FDNAME "kvmsave-lazy-qmp"

typedef struct _kvmsavePageServer kvmsavePageServer;

/* Open the sparse kvmsave image @path (through @fd if >= 0) and read its
 * layout: header, trailer, table and QEMU's stream are checked. */
kvmsavePageServer *kvmsavePageServerOpen(const char *path, int fd);
void kvmsavePageServerFree(kvmsavePageServer *ps);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsavePageServer, kvmsavePageServerFree);

/* Be the source of QEMU's incoming migration on socket @sock (a postcopy
 * migration from its start), or, if @recover, of the rest of one QEMU
 * has paused after its source was lost. Returns 0 once QEMU has every
 * page and said so, -1 with an error. */
int kvmsavePageServerRun(kvmsavePageServer *ps, int sock, bool recover);

/* The pages QEMU has, of @total. Any thread. */
uint64_t kvmsavePageServerDone(kvmsavePageServer *ps, uint64_t *total);

/* Pages sent because QEMU asked for them. */
uint64_t kvmsavePageServerAsked(kvmsavePageServer *ps);
