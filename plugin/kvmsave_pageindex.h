/*
 * kvmsave_pageindex.h: where each guest page lies in a plain QEMU
 * migration stream
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * A lazy restore of a chunked image serves pages out of the stream QEMU
 * wrote at save time, so it must find the last record of any page
 * without walking the stream. The save builds this index while the
 * stream passes (one call per page record), and stores it, encoded, in
 * the image header's padding (format 1.5, field PAGEINDEX).
 *
 * The index holds runs: records back to back in the stream, of one
 * block, for consecutive pages, all but the first continuing the block
 * of the one before. Each record is 8 bytes, then 4096 bytes of data or
 * a fill byte, so one bit per record (1: data) places every page of a
 * run. Runs are disjoint: a page sent again splits the earlier run, and
 * the last record wins. A page in no run was never sent: it is zero.
 *
 * Encoding (little-endian):
 *
 *    0  8 magic "KSPGIDX\n"        8  4 version 1     12  4 flags 0
 *   16  8 streamBytes              24  8 devStart     32  4 chunkRaw
 *   36  4 nblocks                  40  8 nchunks      48  8 nruns
 *   56  8 nrecords
 *   64    nblocks x u64 pages of each RAM block, in RAM setup's order
 *         nchunks x u64 file offset of chunk k's header - headerSize
 *         nruns x 32 B u32 block, u32 count, u64 firstPage, u64 payload,
 *                      u64 bitStart; sorted by (block, firstPage)
 *         ceil(nrecords / 64) x u64 record kinds: bit i, record i is data
 */
#pragma once

#include "internal.h"
#include "kvmsave_vmstream.h"

#define KVMSAVE_PAGE_INDEX_MAGIC "KSPGIDX\n"
#define KVMSAVE_PAGE_INDEX_VERSION 1
/* Bytes of the fixed part of the encoding, before the block pages. */
#define KVMSAVE_PAGE_INDEX_HEAD 64
/* Bytes of one encoded run. */
#define KVMSAVE_PAGE_INDEX_RUN 32
/* RAM blocks an index may list (the reserve has room for this many). */
#define KVMSAVE_PAGE_INDEX_MAX_BLOCKS 64


/* Save side: the index as the stream passes. */
typedef struct _kvmsavePageIndexBuilder kvmsavePageIndexBuilder;

/* The most page records the reserve of a guest of @guestBytes (its
 * maximum memory) has room for: pass it to kvmsavePageIndexBuilderNew. */
uint64_t kvmsavePageIndexPages(uint64_t guestBytes);

/* The bytes of header padding to reserve for the index of a guest of
 * @guestBytes: any index kvmsavePageIndexEncode makes with a builder of
 * kvmsavePageIndexPages(@guestBytes) fits. */
size_t kvmsavePageIndexReserve(uint64_t guestBytes);
/* The most pages (@maxPages) of a builder whose index fits in @reserve
 * bytes: a verify builds an index again with the save's limits. */
uint64_t kvmsavePageIndexPagesForReserve(uint64_t reserve);

/* A builder that gives up past @maxPages records, or past
 * 4096 + @maxPages / 1024 runs. */
kvmsavePageIndexBuilder *kvmsavePageIndexBuilderNew(uint64_t maxPages);
void kvmsavePageIndexBuilderFree(kvmsavePageIndexBuilder *b);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsavePageIndexBuilder, kvmsavePageIndexBuilderFree);

/* A kvmsaveVMRecordFn (@opaque: the builder): adds record @rec of @vm.
 * Returns -1 with VIR_ERR_OPERATION_UNSUPPORTED when the stream cannot
 * be indexed or the index would outgrow its reserve: the save then goes
 * on without an index, and the builder is good only for Free. */
int kvmsavePageIndexBuilderRecord(const kvmsaveVMStream *vm,
                                  const kvmsaveVMRecord *rec, void *opaque);

/* The most bytes a builder of @maxPages may hold (its GTree's nodes
 * estimated), and what @b holds now. */
size_t kvmsavePageIndexBuilderBound(uint64_t maxPages);
size_t kvmsavePageIndexBuilderBytes(const kvmsavePageIndexBuilder *b);

/* Encode the index of @vm (its RAM walked up to devStart, and its RAM's
 * END section seen there), a stream of @streamBytes stored in @nchunks
 * chunks of @chunkRaw stream bytes, chunk k's header at @chunkOffsets[k]
 * past the image header. Returns 0 with a g_malloc'd @buf of @len bytes,
 * or -1 with an error: VIR_ERR_OPERATION_UNSUPPORTED, no index for this
 * stream; VIR_ERR_INTERNAL_ERROR, arguments that do not fit together. */
int kvmsavePageIndexEncode(kvmsavePageIndexBuilder *b,
                           const kvmsaveVMStream *vm,
                           uint64_t streamBytes,
                           const uint64_t *chunkOffsets,
                           size_t nchunks,
                           uint32_t chunkRaw,
                           unsigned char **buf,
                           size_t *len);


/* Restore side: a decoded index. */
/* Point the chunk directory of the encoded index @buf of @len bytes,
 * decoded once to check it, at the @nchunks chunks of @chunkOffsets
 * (as Encode takes them): the chunks of a stream written again. */
int kvmsavePageIndexSetDirectory(unsigned char *buf, size_t len,
                                 const uint64_t *chunkOffsets, size_t nchunks);

typedef struct _kvmsavePageIndex kvmsavePageIndex;

void kvmsavePageIndexFree(kvmsavePageIndex *idx);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsavePageIndex, kvmsavePageIndexFree);

/* Decode the @len bytes at @buf, the index of the image @path whose
 * trailer says @streamBytes and @nchunks, with @dataBytes of chunks
 * after its header. Refuses (VIR_ERR_OPERATION_FAILED, "the page index
 * of '@path' is damaged: ...") what is not consistent in itself or with
 * those. */
kvmsavePageIndex *kvmsavePageIndexDecode(const unsigned char *buf,
                                         size_t len,
                                         const char *path,
                                         uint64_t streamBytes,
                                         uint64_t nchunks,
                                         uint64_t dataBytes);

/* Whether @idx lists the RAM blocks of @vm, the stream of @path, with
 * their page counts. Returns 0, or -1 with an error. */
int kvmsavePageIndexCheckStream(const kvmsavePageIndex *idx,
                                const kvmsaveVMStream *vm,
                                const char *path);

/* Where page @page of block @block lies: 1 with the stream offset of its
 * 4096 bytes (@data true) or of its fill byte (@data false), 0 when it
 * was never sent (a zero page), -1 (with an error) past the blocks. */
int kvmsavePageIndexLookup(const kvmsavePageIndex *idx,
                           size_t block,
                           uint64_t page,
                           uint64_t *payload,
                           bool *data);

uint64_t kvmsavePageIndexStreamBytes(const kvmsavePageIndex *idx);
uint64_t kvmsavePageIndexDevStart(const kvmsavePageIndex *idx);
uint32_t kvmsavePageIndexChunkRaw(const kvmsavePageIndex *idx);
uint64_t kvmsavePageIndexNChunks(const kvmsavePageIndex *idx);
/* The offset of chunk @k's header past the image header (@k < nchunks). */
uint64_t kvmsavePageIndexChunkOffset(const kvmsavePageIndex *idx, uint64_t k);
