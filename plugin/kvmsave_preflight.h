/*
 * kvmsave_preflight.h: what a restore checks before it starts QEMU
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * A save records the guest's local disks as QEMU left them; a restore
 * refuses disks that changed since (a guest resumed over them would
 * corrupt them), and a machine type or CPU model this host's QEMU cannot
 * provide (QEMU would start and then fail to load the state, or worse).
 */
#pragma once

#include "internal.h"
#include "kvmsave_image.h"

/* The DISKS header field for the local disks of @domxml as they are now:
 * one line per disk, "TARGET SIZE MTIME INODE PATH" (docs/image-format.md).
 * Numbers have a fixed width, so the field can be recorded again after the
 * migration without changing the header's size. *disks is NULL when the
 * guest has no local disk. */
int kvmsavePreflightRecordDisks(const char *domxml, char **disks);

/* The same disks (@disks, a DISKS field) as they are now: same lines,
 * same length, for a header that must keep its size. A disk that cannot
 * be stat-ed now keeps its earlier record. */
int kvmsavePreflightRecordDisksAgain(const char *disks, char **again);

/* The DISKS field @disks for people: a line per disk (NULL if corrupt). */
char *kvmsavePreflightDescribeDisks(const char *disks);

/* Before starting the guest of @hdr with @domxml: VIR_ERR_CONFIG_UNSUPPORTED
 * when @inner cannot provide its machine type or CPU model, and
 * VIR_ERR_OPERATION_INVALID when a disk changed since the save, unless
 * @forceDisks. @path names the image in messages. */
int kvmsavePreflightCheck(virConnectPtr inner, const kvmsaveImageHeader *hdr,
                          const char *domxml, const char *path,
                          bool forceDisks);
