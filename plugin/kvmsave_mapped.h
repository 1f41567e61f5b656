/*
 * kvmsave_mapped.h: the stream of kvmsave's sparse images and the table
 * of block checksums that covers it
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * QEMU writes and reads a mapped-ram stream itself, at offsets of its own
 * choosing, so kvmsave cannot check it as it passes. Instead the save
 * checksums the stream's bytes block by block once QEMU is done, holes
 * included (they read as zeros), and the restore checks every block while
 * QEMU loads, before the guest may run (docs/image-format.md).
 */
#pragma once

#include "kvmsave_imagebackend.h"

/* The checksum of a block of @block zeros, which is how a hole reads. */
uint32_t kvmsaveMappedZeroCrc(uint32_t block);

/* Blocks of @bytes in blocks of @block. */
uint64_t kvmsaveMappedBlocks(uint64_t bytes, uint32_t block);

/* Where the table of an image whose stream has @streamBytes begins, and
 * where it ends: the trailer's data end. */
uint64_t kvmsaveMappedTableOffset(const kvmsaveImageHeader *hdr,
                                  uint64_t streamBytes);
uint64_t kvmsaveMappedDataEnd(const kvmsaveImageHeader *hdr,
                              uint64_t streamBytes);

/* Read the checksum table of the sparse image open in @f, after its
 * header and trailer were checked; check it against the trailer. */
int kvmsaveMappedReadTable(kvmsaveImageFile *f, const kvmsaveImageHeader *hdr,
                           const kvmsaveImageTrailer *tr, uint32_t **table);

/* Encode @blocks checksums for the file (little-endian). */
unsigned char *kvmsaveMappedTableEncode(const uint32_t *table, uint64_t blocks,
                                        size_t *len);

typedef struct _kvmsaveMappedSum kvmsaveMappedSum;

/* Checksum the stream of @hdr's image, [mappedOffset, + @streamBytes) of
 * @fd (read with O_DIRECT's alignment if @direct), in @threads threads
 * in the background: into a new table, or against @expect. @path names
 * the file in errors. */
kvmsaveMappedSum *kvmsaveMappedSumStart(int fd, const char *path, bool direct,
                                        const kvmsaveImageHeader *hdr,
                                        uint64_t streamBytes,
                                        const uint32_t *expect, size_t threads);
/* Bytes checksummed so far. */
uint64_t kvmsaveMappedSumDone(kvmsaveMappedSum *m);
/* Whether a block failed, so that Finish will fail. */
bool kvmsaveMappedSumFailed(kvmsaveMappedSum *m);
/* Wait for the pass, calling @poll with the bytes done every 100 ms;
 * when it returns true, stop the pass. Then as Finish. */
typedef bool (*kvmsaveMappedSumPoll)(uint64_t done, void *opaque);
int kvmsaveMappedSumWait(kvmsaveMappedSum *m, kvmsaveMappedSumPoll poll,
                         void *opaque, uint32_t **table);
/* Wait for the threads, stopping them first if @stop: 0 with the table
 * in *@table when one was computed, -1 with the first error, or 1 when
 * stopped before the end without an error. Frees @m. */
int kvmsaveMappedSumFinish(kvmsaveMappedSum *m, bool stop, uint32_t **table);

/* Read block @i of the stream of @hdr's image in @fd (buffered) into
 * @buf (hdr->mappedBlock bytes) and check it against @table: 0 with its
 * bytes in @buf and their count in *@len, else -1. */
int kvmsaveMappedReadBlock(int fd, const char *path, const kvmsaveImageHeader *hdr,
                           uint64_t streamBytes, const uint32_t *table,
                           uint64_t i, unsigned char *buf, size_t *len);
/* Check block @i as ReadBlock does, but a hole without reading it: its
 * checksum is @zeroCrc (kvmsaveMappedZeroCrc); @buf is scratch space of
 * hdr->mappedBlock bytes. */
int kvmsaveMappedCheckBlock(int fd, const char *path, const kvmsaveImageHeader *hdr,
                            uint64_t streamBytes, const uint32_t *table,
                            uint64_t i, uint32_t zeroCrc, unsigned char *buf);

/* Check every block of the stream of @hdr's image in @fd against @table,
 * in the caller's thread and its helpers. */
int kvmsaveMappedVerify(int fd, const char *path, bool direct,
                        const kvmsaveImageHeader *hdr, uint64_t streamBytes,
                        const uint32_t *table, size_t threads);

/* Copy the stream of @hdr's image from @from (O_DIRECT if @fromDirect)
 * to @to at the same offsets, holes kept as holes, checking every block
 * against @table. */
int kvmsaveMappedCopy(int from, const char *fromPath, bool fromDirect,
                      int to, const char *toPath,
                      const kvmsaveImageHeader *hdr, uint64_t streamBytes,
                      const uint32_t *table);
