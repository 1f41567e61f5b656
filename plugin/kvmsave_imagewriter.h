/*
 * kvmsave_imagewriter.h: writing a kvmsave save image
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The caller fills chunk buffers with QEMU's stream; workers encode and
 * checksum them in parallel; a writer thread puts them on disk in order,
 * through an aligned buffer where O_DIRECT needs one.
 */
#pragma once

#include "kvmsave_image.h"

typedef struct _kvmsaveImageWriter kvmsaveImageWriter;

kvmsaveImageWriter *kvmsaveImageWriterNew(int fd, const char *path,
                                          bool direct);
void kvmsaveImageWriterFree(kvmsaveImageWriter *w);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveImageWriter, kvmsaveImageWriterFree);

/* Encode the chunks that follow with @format (KVMSAVE_IMAGE_ENCODING_*); a
 * chunk that does not shrink is stored raw. */
void kvmsaveImageWriterSetFormat(kvmsaveImageWriter *w, int format);
int kvmsaveImageWriteHeader(kvmsaveImageWriter *w, kvmsaveImageHeader *hdr);
/* The buffer for the next chunk's raw bytes (KVMSAVE_IMAGE_CHUNK_MAX
 * long), waiting while the disk is behind; NULL with an error when writing
 * failed. The same buffer is returned until it is queued. */
unsigned char *kvmsaveImageWriterNextBuffer(kvmsaveImageWriter *w);
/* Queue the first @len bytes of that buffer as the next chunk. Workers
 * encode chunks in parallel and a writer thread puts them on disk in
 * order; a failure there shows in a later call. */
int kvmsaveImageWriterQueue(kvmsaveImageWriter *w, size_t len);
/* NextBuffer, a copy of @data, Queue, as a chunk of stream @stream.
 * Callers in several threads may call this at once (and only this). */
int kvmsaveImageWriteChunk(kvmsaveImageWriter *w, unsigned int stream,
                           const void *data, size_t len);
/* Have Finish write @hdr over the header written first: a header known
 * only once QEMU is done (the disks as it left them, the page index). It
 * must encode to the same size; the header is then kept by the caller
 * until Finish. */
int kvmsaveImageWriterReplaceHeader(kvmsaveImageWriter *w,
                                    kvmsaveImageHeader *hdr);
/* Record where each chunk queued from now on goes: its file offset less
 * the header's size (the page index's chunk directory). */
void kvmsaveImageWriterRecordChunks(kvmsaveImageWriter *w);
/* Raw bytes of QEMU's stream queued so far. */
uint64_t kvmsaveImageWriterStreamBytes(kvmsaveImageWriter *w);
/* Wait for every queued chunk to be written; none may be queued after.
 * Then the chunk offsets are known, and a header made from them can
 * replace the first one. */
int kvmsaveImageWriterDrain(kvmsaveImageWriter *w);
/* After Drain: the recorded chunk offsets, *@n of them (g_free them), and
 * recording ends; NULL when none were recorded. */
uint64_t *kvmsaveImageWriterTakeChunkOffsets(kvmsaveImageWriter *w, size_t *n);
/* Drain, write padding and trailer, fdatasync. */
int kvmsaveImageWriterFinish(kvmsaveImageWriter *w);
/* Finish a sparse image instead, whose stream of @streamBytes QEMU wrote
 * at @hdr's mappedOffset (or kvmsaveMappedCopy copied): the header, the
 * checksum @table after the stream, padding and trailer, fdatasync. */
int kvmsaveImageWriterFinishMapped(kvmsaveImageWriter *w,
                                   const kvmsaveImageHeader *hdr,
                                   uint64_t streamBytes, const uint32_t *table);
