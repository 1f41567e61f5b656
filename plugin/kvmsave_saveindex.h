/*
 * kvmsave_saveindex.h: the save's stream, read into chunks and indexed
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "internal.h"
#include "kvmsave_imagewriter.h"
#include "kvmsave_pageindex.h"
#include "kvmsave_vmstream.h"

/* Read up to @size bytes of QEMU's stream on @fd into @buf: 0 with *@fill
 * bytes (fewer only at its end, *@eof), 1 when @wakefd says to stop, -1 on
 * error. */
int kvmsaveSaveStreamRead(int fd, int wakefd, unsigned char *buf, size_t size,
                          size_t *fill, bool *eof);

/* Copy QEMU's stream on @fd into chunks of @chunk bytes of @writer up to
 * its device state, walking it into @builder, and queue every chunk read.
 * *@vm is the walk's result, or NULL (with a warning) when the stream
 * cannot be indexed; the caller copies the rest unless *@eof.
 * Returns 0, 1 when @wakefd says to stop, -1 on error. */
int kvmsaveSaveIndexStream(kvmsaveImageWriter *writer, size_t chunk, int fd,
                           int wakefd, const char *path,
                           kvmsavePageIndexBuilder *builder,
                           kvmsaveVMStream **vm, bool *eof);
