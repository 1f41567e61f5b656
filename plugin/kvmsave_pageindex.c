/*
 * kvmsave_pageindex.c: where each guest page lies in a plain QEMU
 * migration stream: the page index decoded, checked and looked up
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include "kvmsave_pageindexpriv.h"
#include "kvmsave_image.h"
#include "viralloc.h"
#include "virendian.h"
#include "virerror.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.pageindex");

/* Pages a block may have: its byte length stays below 2^64. */
#define BLOCK_MAX_PAGES (1ULL << 52)

/* Decoded: a count of data records for every RANK_RECORDS records, so
 * that a lookup needs at most RANK_RECORDS / 64 popcounts. */
#define RANK_RECORDS 512

/* A run as decoded. */
typedef struct _kvmsavePageIndexRun kvmsavePageIndexRun;
struct _kvmsavePageIndexRun {
    uint32_t block;
    uint32_t count;
    uint64_t firstPage;
    uint64_t payload;
    uint64_t bitStart;
    uint64_t ones;              /* data records before bitStart */
};

struct _kvmsavePageIndex {
    uint64_t streamBytes;
    uint64_t devStart;
    uint32_t chunkRaw;
    size_t nblocks;
    uint64_t *blockPages;
    size_t *blockRuns;          /* block i's runs: [blockRuns[i], blockRuns[i + 1]) */
    uint64_t nchunks;
    uint64_t *chunks;
    size_t nruns;
    kvmsavePageIndexRun *runs;
    uint64_t nrecords;
    uint64_t *bits;
    uint32_t *ranks;            /* data records before record RANK_RECORDS * i */
};


typedef struct {
    const unsigned char *p;
    const char *path;
} kvmsavePageIndexIn;

static int G_GNUC_PRINTF(2, 3)
kvmsavePageIndexBad(const char *path, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *why = NULL;

    va_start(ap, fmt);
    why = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    virReportError(VIR_ERR_OPERATION_FAILED,
                   _("the page index of '%s' is damaged: %s"), path, why);
    return -1;
}


static uint64_t
kvmsavePageIndexGet(kvmsavePageIndexIn *in, size_t width)
{
    uint64_t v = width == 4 ? virReadBufInt32LE(in->p) : virReadBufInt64LE(in->p);

    in->p += width;
    return v;
}


void
kvmsavePageIndexFree(kvmsavePageIndex *idx)
{
    if (!idx)
        return;
    g_free(idx->blockPages);
    g_free(idx->blockRuns);
    g_free(idx->chunks);
    g_free(idx->runs);
    g_free(idx->bits);
    g_free(idx->ranks);
    g_free(idx);
}


/* The fixed part, checked against what the image says and @len. */
static int
kvmsavePageIndexDecodeHead(kvmsavePageIndex *idx, kvmsavePageIndexIn *in,
                           size_t len, uint64_t streamBytes, uint64_t nchunks)
{
    uint32_t version, flags;
    uint64_t nruns, need;

    if (len < KVMSAVE_PAGE_INDEX_HEAD)
        return kvmsavePageIndexBad(in->path, _("it is %zu bytes, shorter than its %d-byte header"),
                                   len, KVMSAVE_PAGE_INDEX_HEAD);
    if (memcmp(in->p, KVMSAVE_PAGE_INDEX_MAGIC, 8) != 0)
        return kvmsavePageIndexBad(in->path, "%s", _("it does not start with its magic"));
    in->p += 8;
    version = kvmsavePageIndexGet(in, 4);
    flags = kvmsavePageIndexGet(in, 4);
    if (version != KVMSAVE_PAGE_INDEX_VERSION || flags != 0)
        return kvmsavePageIndexBad(in->path, _("it has version %u and flags 0x%x"),
                                   version, flags);
    idx->streamBytes = kvmsavePageIndexGet(in, 8);
    idx->devStart = kvmsavePageIndexGet(in, 8);
    idx->chunkRaw = kvmsavePageIndexGet(in, 4);
    idx->nblocks = kvmsavePageIndexGet(in, 4);
    idx->nchunks = kvmsavePageIndexGet(in, 8);
    nruns = kvmsavePageIndexGet(in, 8);
    idx->nrecords = kvmsavePageIndexGet(in, 8);

    if (idx->streamBytes != streamBytes)
        return kvmsavePageIndexBad(in->path, _("it describes a stream of %llu bytes, the image holds %llu"),
                                   (unsigned long long) idx->streamBytes,
                                   (unsigned long long) streamBytes);
    if (idx->nchunks != nchunks)
        return kvmsavePageIndexBad(in->path, _("it lists %llu chunks, the image has %llu"),
                                   (unsigned long long) idx->nchunks,
                                   (unsigned long long) nchunks);
    /* The device state follows the pages; stream offset x is in chunk
     * x / chunkRaw, and every chunk but the last is full. */
    if (idx->devStart == 0 || idx->devStart >= streamBytes || idx->chunkRaw == 0 ||
        idx->chunkRaw > KVMSAVE_IMAGE_CHUNK_MAX ||
        idx->nchunks != VIR_DIV_UP(streamBytes, idx->chunkRaw))
        return kvmsavePageIndexBad(in->path, _("it puts the device state at %llu of %llu bytes, in chunks of %u bytes"),
                                   (unsigned long long) idx->devStart,
                                   (unsigned long long) streamBytes, idx->chunkRaw);
    if (idx->nblocks == 0 || idx->nblocks > KVMSAVE_PAGE_INDEX_MAX_BLOCKS)
        return kvmsavePageIndexBad(in->path, _("it lists %zu RAM blocks"), idx->nblocks);
    /* Each count bounded by @len first, so that the sum cannot wrap. */
    if (idx->nchunks > len / 8 || nruns > len / KVMSAVE_PAGE_INDEX_RUN ||
        idx->nrecords > UINT32_MAX || idx->nrecords / 8 > len)
        return kvmsavePageIndexBad(in->path, _("its counts (%llu chunks, %llu runs, %llu records) do not fit in its %zu bytes"),
                                   (unsigned long long) idx->nchunks,
                                   (unsigned long long) nruns,
                                   (unsigned long long) idx->nrecords, len);
    idx->nruns = nruns;
    need = KVMSAVE_PAGE_INDEX_HEAD + 8 * (idx->nblocks + idx->nchunks) +
        KVMSAVE_PAGE_INDEX_RUN * nruns + 8 * ((idx->nrecords + 63) / 64);
    if (need != len)
        return kvmsavePageIndexBad(in->path, _("it is %zu bytes, its counts make %llu"),
                                   len, (unsigned long long) need);
    return 0;
}


/* Block pages and the chunk directory. */
static int
kvmsavePageIndexDecodeTables(kvmsavePageIndex *idx, kvmsavePageIndexIn *in,
                             uint64_t dataBytes)
{
    uint64_t k;
    size_t i;

    idx->blockPages = g_new0(uint64_t, idx->nblocks);
    for (i = 0; i < idx->nblocks; i++) {
        idx->blockPages[i] = kvmsavePageIndexGet(in, 8);
        if (idx->blockPages[i] == 0 || idx->blockPages[i] > BLOCK_MAX_PAGES)
            return kvmsavePageIndexBad(in->path, _("RAM block %zu has %llu pages"),
                                       i, (unsigned long long) idx->blockPages[i]);
    }
    idx->chunks = g_new0(uint64_t, idx->nchunks);
    for (k = 0; k < idx->nchunks; k++) {
        idx->chunks[k] = kvmsavePageIndexGet(in, 8);
        if (k > 0 && idx->chunks[k] <= idx->chunks[k - 1])
            return kvmsavePageIndexBad(in->path, _("chunk %llu lies at %llu, not after chunk %llu at %llu"),
                                       (unsigned long long) k,
                                       (unsigned long long) idx->chunks[k],
                                       (unsigned long long) k - 1,
                                       (unsigned long long) idx->chunks[k - 1]);
        if (idx->chunks[k] >= dataBytes)
            return kvmsavePageIndexBad(in->path, _("chunk %llu lies at %llu, past the %llu bytes of chunks"),
                                       (unsigned long long) k,
                                       (unsigned long long) idx->chunks[k],
                                       (unsigned long long) dataBytes);
    }
    return 0;
}


/* The record kinds, which follow the runs, and a count of data records
 * for every RANK_RECORDS records. */
static int
kvmsavePageIndexDecodeBits(kvmsavePageIndex *idx, const unsigned char *at,
                           const char *path)
{
    kvmsavePageIndexIn in = { at, path };
    uint64_t nwords = (idx->nrecords + 63) / 64;
    uint64_t w, ones = 0;

    idx->bits = g_new0(uint64_t, nwords);
    idx->ranks = g_new0(uint32_t, idx->nrecords / RANK_RECORDS + 1);
    for (w = 0; w < nwords; w++) {
        if (w % (RANK_RECORDS / 64) == 0)
            idx->ranks[w / (RANK_RECORDS / 64)] = ones;
        idx->bits[w] = kvmsavePageIndexGet(&in, 8);
        ones += __builtin_popcountll(idx->bits[w]);
    }
    if (nwords % (RANK_RECORDS / 64) == 0)
        idx->ranks[nwords / (RANK_RECORDS / 64)] = ones;
    if (idx->nrecords % 64 != 0 &&
        idx->bits[nwords - 1] >> (idx->nrecords % 64) != 0)
        return kvmsavePageIndexBad(path, _("it marks records past its %llu records"),
                                   (unsigned long long) idx->nrecords);
    return 0;
}


/* The data records before record @i: at most RANK_RECORDS / 64
 * popcounts past the count kept for its group. */
static uint64_t
kvmsavePageIndexRank(const kvmsavePageIndex *idx, uint64_t i)
{
    uint64_t w = i / RANK_RECORDS * (RANK_RECORDS / 64);
    uint64_t n = idx->ranks[i / RANK_RECORDS];

    for (; w < i / 64; w++)
        n += __builtin_popcountll(idx->bits[w]);
    if (i % 64 != 0)
        n += __builtin_popcountll(idx->bits[i / 64] & ((1ULL << (i % 64)) - 1));
    return n;
}


/* One run, against the blocks, the run before it, the records and
 * devStart. */
static int
kvmsavePageIndexCheckRun(const kvmsavePageIndex *idx, size_t i,
                         const char *path)
{
    const kvmsavePageIndexRun *r = &idx->runs[i];
    const kvmsavePageIndexRun *prev = i > 0 ? &idx->runs[i - 1] : NULL;
    uint64_t last, span;

    if (r->block >= idx->nblocks || r->count == 0)
        return kvmsavePageIndexBad(path, _("run %zu has %u pages of block %u, of %zu blocks"),
                                   i, r->count, r->block, idx->nblocks);
    if (r->firstPage >= idx->blockPages[r->block] ||
        idx->blockPages[r->block] - r->firstPage < r->count)
        return kvmsavePageIndexBad(path, _("run %zu, pages %llu to %llu of block %u, ends past its %llu pages"),
                                   i, (unsigned long long) r->firstPage,
                                   (unsigned long long) r->firstPage + r->count - 1,
                                   r->block, (unsigned long long) idx->blockPages[r->block]);
    if (prev && (prev->block > r->block ||
                 (prev->block == r->block && prev->firstPage >= r->firstPage)))
        return kvmsavePageIndexBad(path, _("run %zu (block %u, page %llu) is out of order"),
                                   i, r->block, (unsigned long long) r->firstPage);
    if (prev && prev->block == r->block && prev->firstPage + prev->count > r->firstPage)
        return kvmsavePageIndexBad(path, _("run %zu overlaps run %zu at page %llu of block %u"),
                                   i, i - 1, (unsigned long long) r->firstPage, r->block);
    if (r->bitStart > idx->nrecords || idx->nrecords - r->bitStart < r->count)
        return kvmsavePageIndexBad(path, _("run %zu takes records %llu to %llu of %llu"),
                                   i, (unsigned long long) r->bitStart,
                                   (unsigned long long) r->bitStart + r->count - 1,
                                   (unsigned long long) idx->nrecords);
    /* Its last payload ends within [payload, devStart). */
    last = r->bitStart + r->count - 1;
    span = RECORD_ZERO * (uint64_t) (r->count - 1) +
        RECORD_DATA_MORE * (kvmsavePageIndexRank(idx, last) - r->ones) +
        (kvmsavePageIndexBit(idx->bits, last) ? KVMSAVE_VM_PAGE_SIZE : 1);
    if (r->payload >= idx->devStart || idx->devStart - r->payload < span)
        return kvmsavePageIndexBad(path, _("run %zu has pages past the device state at %llu"),
                                   i, (unsigned long long) idx->devStart);
    return 0;
}


static int
kvmsavePageIndexDecodeRuns(kvmsavePageIndex *idx, kvmsavePageIndexIn *in)
{
    size_t i;
    size_t block = 0;

    idx->runs = g_new0(kvmsavePageIndexRun, idx->nruns);
    idx->blockRuns = g_new0(size_t, idx->nblocks + 1);
    for (i = 0; i < idx->nruns; i++) {
        kvmsavePageIndexRun *r = &idx->runs[i];

        r->block = kvmsavePageIndexGet(in, 4);
        r->count = kvmsavePageIndexGet(in, 4);
        r->firstPage = kvmsavePageIndexGet(in, 8);
        r->payload = kvmsavePageIndexGet(in, 8);
        r->bitStart = kvmsavePageIndexGet(in, 8);
        if (r->bitStart <= idx->nrecords)
            r->ones = kvmsavePageIndexRank(idx, r->bitStart);
        if (kvmsavePageIndexCheckRun(idx, i, in->path) < 0)
            return -1;
        while (block < r->block)
            idx->blockRuns[++block] = i;
    }
    while (block < idx->nblocks)
        idx->blockRuns[++block] = idx->nruns;
    return 0;
}


kvmsavePageIndex *
kvmsavePageIndexDecode(const unsigned char *buf,
                       size_t len,
                       const char *path,
                       uint64_t streamBytes,
                       uint64_t nchunks,
                       uint64_t dataBytes)
{
    g_autoptr(kvmsavePageIndex) idx = g_new0(kvmsavePageIndex, 1);
    kvmsavePageIndexIn in = { buf, path };

    if (kvmsavePageIndexDecodeHead(idx, &in, len, streamBytes, nchunks) < 0 ||
        kvmsavePageIndexDecodeTables(idx, &in, dataBytes) < 0 ||
        kvmsavePageIndexDecodeBits(idx, in.p + KVMSAVE_PAGE_INDEX_RUN * idx->nruns,
                                   path) < 0 ||
        kvmsavePageIndexDecodeRuns(idx, &in) < 0)
        return NULL;
    VIR_DEBUG("%s: page index of %zu blocks, %llu chunks, %zu runs, %llu records",
              path, idx->nblocks, (unsigned long long) idx->nchunks, idx->nruns,
              (unsigned long long) idx->nrecords);
    return g_steal_pointer(&idx);
}


int
kvmsavePageIndexCheckStream(const kvmsavePageIndex *idx,
                            const kvmsaveVMStream *vm,
                            const char *path)
{
    size_t i;

    if (idx->nblocks != vm->nblocks)
        return kvmsavePageIndexBad(path, _("it lists %zu RAM blocks, the stream %zu"),
                                   idx->nblocks, vm->nblocks);
    for (i = 0; i < idx->nblocks; i++) {
        uint64_t pages = vm->blocks[i].length / KVMSAVE_VM_PAGE_SIZE;

        if (idx->blockPages[i] != pages)
            return kvmsavePageIndexBad(path, _("it gives RAM block '%s' %llu pages, the stream %llu"),
                                       vm->blocks[i].name,
                                       (unsigned long long) idx->blockPages[i],
                                       (unsigned long long) pages);
    }
    return 0;
}


int
kvmsavePageIndexLookup(const kvmsavePageIndex *idx,
                       size_t block,
                       uint64_t page,
                       uint64_t *payload,
                       bool *data)
{
    const kvmsavePageIndexRun *r;
    size_t lo, hi;
    uint64_t k, bit;

    if (block >= idx->nblocks || page >= idx->blockPages[block]) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("page %llu of block %zu is outside the page index"),
                       (unsigned long long) page, block);
        return -1;
    }
    /* The last run of the block that starts at or before @page. */
    lo = idx->blockRuns[block];
    hi = idx->blockRuns[block + 1];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (idx->runs[mid].firstPage <= page)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == idx->blockRuns[block])
        return 0;
    r = &idx->runs[lo - 1];
    k = page - r->firstPage;
    if (k >= r->count)
        return 0;
    bit = r->bitStart + k;
    *payload = r->payload + RECORD_ZERO * k +
        RECORD_DATA_MORE * (kvmsavePageIndexRank(idx, bit) - r->ones);
    *data = kvmsavePageIndexBit(idx->bits, bit);
    return 1;
}


uint64_t
kvmsavePageIndexStreamBytes(const kvmsavePageIndex *idx)
{
    return idx->streamBytes;
}


uint64_t
kvmsavePageIndexDevStart(const kvmsavePageIndex *idx)
{
    return idx->devStart;
}


uint32_t
kvmsavePageIndexChunkRaw(const kvmsavePageIndex *idx)
{
    return idx->chunkRaw;
}


uint64_t
kvmsavePageIndexNChunks(const kvmsavePageIndex *idx)
{
    return idx->nchunks;
}


uint64_t
kvmsavePageIndexChunkOffset(const kvmsavePageIndex *idx, uint64_t k)
{
    return idx->chunks[k];
}

