/*
 * kvmsave_pageindexbuild.c: the page index of a plain QEMU migration
 * stream, built from its page records as the stream passes, and encoded
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include "kvmsave_pageindexpriv.h"
#include "viralloc.h"
#include "virendian.h"
#include "virerror.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.pageindexbuild");

#define GIB (1024ULL * 1024 * 1024)

/* The reserve: room for the vram and ROMs beyond the guest's memory,
 * runs, and chunk headers (a 4 MiB chunk holds at least 1021 records of
 * 4104 bytes, and the stream's ends may add two chunks). */
#define RESERVE_EXTRA_BYTES GIB
#define RUNS_BASE 4096
#define RUNS_PER_PAGES 1024
#define CHUNK_MIN_PAGES 1021
#define CHUNK_EXTRA 2

/* What a GTree node costs, for the builder's bound (GLib's node is five
 * pointers' worth; this leaves room for the allocator). */
#define TREE_NODE_BYTES 48

#define NO_RUN SIZE_MAX

/* A run as the builder keeps it. */
typedef struct _kvmsavePageIndexBuildRun kvmsavePageIndexBuildRun;
struct _kvmsavePageIndexBuildRun {
    uint32_t block;
    uint32_t count;             /* 0: a free slot */
    uint64_t firstPage;
    uint64_t payload;           /* of firstPage's record */
    uint64_t bitStart;          /* the kind bit of firstPage's record */
    uint64_t end;               /* past the payload of its last record; a free
                                 * slot: the next free one */
};

struct _kvmsavePageIndexBuilder {
    uint64_t maxPages;          /* records */
    uint64_t maxRuns;
    bool started;               /* the blocks are known */
    bool failed;                /* it gave up */
    size_t nblocks;
    uint64_t *blockPages;
    uint64_t **seen;            /* per block, a bit per page sent */
    size_t seenWords;

    kvmsavePageIndexBuildRun *runs;
    size_t nslots;              /* slots of runs in use, live or free */
    size_t allocRuns;
    size_t live;
    size_t freeSlot;            /* the first free slot, or NO_RUN */
    GTree *tree;                /* the live runs by (block, firstPage);
                                 * keys and values are slot + 1 */
    size_t open;                /* the run the next record may extend */
    uint64_t next;              /* past the payload of the last record */

    uint64_t *bits;             /* a bit per record: 1, a data page */
    uint64_t nrecords;
    size_t allocBits;           /* words */
};


static uint64_t
kvmsavePageIndexMaxRuns(uint64_t maxPages)
{
    return RUNS_BASE + maxPages / RUNS_PER_PAGES;
}


uint64_t
kvmsavePageIndexPages(uint64_t guestBytes)
{
    if (guestBytes > UINT64_MAX - RESERVE_EXTRA_BYTES)
        return UINT64_MAX / KVMSAVE_VM_PAGE_SIZE;
    return (guestBytes + RESERVE_EXTRA_BYTES) / KVMSAVE_VM_PAGE_SIZE;
}


/* The room the index of a builder of @maxPages needs at most:
 * 576 + 8 (P / 1021 + 2) + 32 (4096 + P / 1024) + P / 8. */
static uint64_t
kvmsavePageIndexReserveFor(uint64_t maxPages)
{
    return KVMSAVE_PAGE_INDEX_HEAD + 8 * KVMSAVE_PAGE_INDEX_MAX_BLOCKS +
        8 * (maxPages / CHUNK_MIN_PAGES + CHUNK_EXTRA) +
        KVMSAVE_PAGE_INDEX_RUN * kvmsavePageIndexMaxRuns(maxPages) +
        maxPages / 8;
}


uint64_t
kvmsavePageIndexPagesForReserve(uint64_t reserve)
{
    uint64_t lo = 0;
    uint64_t hi = reserve * 8 + 1;      /* ReserveFor(P) > P / 8 */

    /* The largest P whose reserve fits: ReserveFor grows with P. */
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2;

        if (kvmsavePageIndexReserveFor(mid) <= reserve)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}


size_t
kvmsavePageIndexReserve(uint64_t guestBytes)
{
    return kvmsavePageIndexReserveFor(kvmsavePageIndexPages(guestBytes));
}


/* The tree's order: by block, then first page. */
static int
kvmsavePageIndexRunCompare(gconstpointer a, gconstpointer b, gpointer opaque)
{
    const kvmsavePageIndexBuilder *pb = opaque;
    const kvmsavePageIndexBuildRun *ra = &pb->runs[GPOINTER_TO_SIZE(a) - 1];
    const kvmsavePageIndexBuildRun *rb = &pb->runs[GPOINTER_TO_SIZE(b) - 1];

    if (ra->block != rb->block)
        return ra->block < rb->block ? -1 : 1;
    if (ra->firstPage != rb->firstPage)
        return ra->firstPage < rb->firstPage ? -1 : 1;
    return 0;
}


kvmsavePageIndexBuilder *
kvmsavePageIndexBuilderNew(uint64_t maxPages)
{
    kvmsavePageIndexBuilder *b = g_new0(kvmsavePageIndexBuilder, 1);

    b->maxPages = maxPages;
    b->maxRuns = kvmsavePageIndexMaxRuns(maxPages);
    b->freeSlot = NO_RUN;
    b->open = NO_RUN;
    b->tree = g_tree_new_with_data(kvmsavePageIndexRunCompare, b);
    return b;
}


void
kvmsavePageIndexBuilderFree(kvmsavePageIndexBuilder *b)
{
    size_t i;

    if (!b)
        return;
    for (i = 0; i < b->nblocks; i++)
        g_free(b->seen[i]);
    g_free(b->seen);
    g_free(b->blockPages);
    g_free(b->runs);
    g_tree_destroy(b->tree);
    g_free(b->bits);
    g_free(b);
}


size_t
kvmsavePageIndexBuilderBound(uint64_t maxPages)
{
    /* seen: a bit per page of the blocks, at most maxPages of them, and
     * a word of rounding per block; bits: one per record. */
    return sizeof(kvmsavePageIndexBuilder) +
        KVMSAVE_PAGE_INDEX_MAX_BLOCKS * (sizeof(uint64_t) * 2 + sizeof(uint64_t *)) +
        maxPages / 8 +
        (maxPages + 63) / 64 * sizeof(uint64_t) +
        kvmsavePageIndexMaxRuns(maxPages) *
        (sizeof(kvmsavePageIndexBuildRun) + TREE_NODE_BYTES);
}


size_t
kvmsavePageIndexBuilderBytes(const kvmsavePageIndexBuilder *b)
{
    return sizeof(*b) +
        b->nblocks * (sizeof(uint64_t) + sizeof(uint64_t *)) +
        b->seenWords * sizeof(uint64_t) +
        b->allocBits * sizeof(uint64_t) +
        b->allocRuns * sizeof(kvmsavePageIndexBuildRun) +
        g_tree_nnodes(b->tree) * TREE_NODE_BYTES;
}


/* The blocks of @vm, known at its first record: a bitmap of pages seen
 * for each. */
static int
kvmsavePageIndexBuilderStart(kvmsavePageIndexBuilder *b,
                             const kvmsaveVMStream *vm)
{
    uint64_t pages = 0;
    size_t i;

    if (vm->mapped) {
        virReportError(VIR_ERR_OPERATION_UNSUPPORTED, "%s",
                       _("a mapped-ram stream has no page records to index"));
        return -1;
    }
    if (vm->nblocks == 0 || vm->nblocks > KVMSAVE_PAGE_INDEX_MAX_BLOCKS) {
        virReportError(VIR_ERR_OPERATION_UNSUPPORTED,
                       _("the stream has %zu RAM blocks, and a page index lists 1 to %d"),
                       vm->nblocks, KVMSAVE_PAGE_INDEX_MAX_BLOCKS);
        return -1;
    }
    for (i = 0; i < vm->nblocks; i++)
        pages += vm->blocks[i].length / KVMSAVE_VM_PAGE_SIZE;
    if (pages > b->maxPages) {
        virReportError(VIR_ERR_OPERATION_UNSUPPORTED,
                       _("the guest's RAM blocks hold %llu pages, more than the %llu the page index has room for"),
                       (unsigned long long) pages, (unsigned long long) b->maxPages);
        return -1;
    }
    b->nblocks = vm->nblocks;
    b->blockPages = g_new0(uint64_t, b->nblocks);
    b->seen = g_new0(uint64_t *, b->nblocks);
    for (i = 0; i < b->nblocks; i++) {
        size_t words;

        b->blockPages[i] = vm->blocks[i].length / KVMSAVE_VM_PAGE_SIZE;
        words = (b->blockPages[i] + 63) / 64;
        b->seen[i] = g_new0(uint64_t, words);
        b->seenWords += words;
    }
    b->started = true;
    return 0;
}


/* A slot for a new run, short of the limit. */
static size_t
kvmsavePageIndexBuilderSlot(kvmsavePageIndexBuilder *b)
{
    size_t slot;

    if (b->live >= b->maxRuns) {
        virReportError(VIR_ERR_OPERATION_UNSUPPORTED,
                       _("the stream's pages lie in more than %llu runs, more than the page index has room for"),
                       (unsigned long long) b->maxRuns);
        return NO_RUN;
    }
    if (b->freeSlot != NO_RUN) {
        slot = b->freeSlot;
        b->freeSlot = b->runs[slot].end;
        return slot;
    }
    if (b->nslots == b->allocRuns) {
        size_t want = MIN(MAX(b->allocRuns * 2, 64), b->maxRuns);

        b->runs = g_renew(kvmsavePageIndexBuildRun, b->runs, want);
        b->allocRuns = want;
    }
    return b->nslots++;
}


static void
kvmsavePageIndexBuilderInsert(kvmsavePageIndexBuilder *b, size_t slot,
                           const kvmsavePageIndexBuildRun *run)
{
    b->runs[slot] = *run;
    g_tree_insert(b->tree, GSIZE_TO_POINTER(slot + 1), GSIZE_TO_POINTER(slot + 1));
    b->live++;
}


static void
kvmsavePageIndexBuilderDrop(kvmsavePageIndexBuilder *b, size_t slot)
{
    g_tree_remove(b->tree, GSIZE_TO_POINTER(slot + 1));
    b->runs[slot].count = 0;
    b->runs[slot].end = b->freeSlot;
    b->freeSlot = slot;
    b->live--;
}


typedef struct {
    const kvmsavePageIndexBuilder *b;
    uint32_t block;
    uint64_t page;
} kvmsavePageIndexTarget;

static int
kvmsavePageIndexRunHolds(gconstpointer key, gconstpointer opaque)
{
    const kvmsavePageIndexTarget *t = opaque;
    const kvmsavePageIndexBuildRun *r = &t->b->runs[GPOINTER_TO_SIZE(key) - 1];

    if (t->block != r->block)
        return t->block < r->block ? -1 : 1;
    if (t->page < r->firstPage)
        return -1;
    return t->page - r->firstPage < r->count ? 0 : 1;
}


/* The payload of record @j of run @r, counted from its nearer end. */
static uint64_t
kvmsavePageIndexBuilderPayload(const kvmsavePageIndexBuilder *b,
                               const kvmsavePageIndexBuildRun *r, uint64_t j)
{
    uint64_t to = r->bitStart + r->count;

    if (j <= r->count - j)
        return r->payload + RECORD_ZERO * j +
            RECORD_DATA_MORE * kvmsavePageIndexOnes(b->bits, r->bitStart, r->bitStart + j);
    return r->end + 8 - RECORD_ZERO * (r->count - j) -
        RECORD_DATA_MORE * kvmsavePageIndexOnes(b->bits, r->bitStart + j, to);
}


/* Page @page of block @block is sent again: take it out of the run that
 * holds it, which shrinks, splits in two or goes. */
static int
kvmsavePageIndexBuilderSplit(kvmsavePageIndexBuilder *b, size_t block,
                             uint64_t page)
{
    kvmsavePageIndexTarget t = { b, block, page };
    kvmsavePageIndexBuildRun *r;
    size_t slot;
    uint64_t k, at, after;

    if (!(slot = GPOINTER_TO_SIZE(g_tree_search(b->tree, kvmsavePageIndexRunHolds, &t)))) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("page %llu of block %zu was sent, but no run holds it"),
                       (unsigned long long) page, block);
        return -1;
    }
    slot--;
    if (slot == b->open)
        b->open = NO_RUN;
    r = &b->runs[slot];
    k = page - r->firstPage;
    /* The page's payload, and the next record's. */
    at = kvmsavePageIndexBuilderPayload(b, r, k);
    after = at + RECORD_ZERO +
        (kvmsavePageIndexBit(b->bits, r->bitStart + k) ? RECORD_DATA_MORE : 0);
    if (r->count == 1) {
        kvmsavePageIndexBuilderDrop(b, slot);
    } else if (k == 0) {
        r->firstPage++;
        r->payload = after;
        r->bitStart++;
        r->count--;
    } else if (k == r->count - 1) {
        r->end = at - 8;
        r->count--;
    } else {
        kvmsavePageIndexBuildRun right = {
            .block = r->block, .count = r->count - k - 1,
            .firstPage = page + 1, .payload = after,
            .bitStart = r->bitStart + k + 1, .end = r->end,
        };
        size_t rightSlot;

        if ((rightSlot = kvmsavePageIndexBuilderSlot(b)) == NO_RUN)
            return -1;
        r = &b->runs[slot];
        r->count = k;
        r->end = at - 8;
        kvmsavePageIndexBuilderInsert(b, rightSlot, &right);
    }
    return 0;
}


/* Record @nrecords's kind. */
static void
kvmsavePageIndexBuilderKind(kvmsavePageIndexBuilder *b, bool data)
{
    uint64_t i = b->nrecords++;

    if (i / 64 >= b->allocBits) {
        size_t want = MIN(MAX(b->allocBits * 2, 64), (b->maxPages + 63) / 64);

        b->bits = g_renew(uint64_t, b->bits, want);
        memset(b->bits + b->allocBits, 0, (want - b->allocBits) * sizeof(uint64_t));
        b->allocBits = want;
    }
    if (data)
        b->bits[i / 64] |= 1ULL << (i % 64);
}


static int
kvmsavePageIndexBuilderTake(kvmsavePageIndexBuilder *b,
                           const kvmsaveVMStream *vm,
                           const kvmsaveVMRecord *rec)
{
    kvmsavePageIndexBuildRun *cur = NULL;
    uint64_t *seen;

    if (!b->started && kvmsavePageIndexBuilderStart(b, vm) < 0)
        return -1;
    if (vm->nblocks != b->nblocks || rec->block >= b->nblocks ||
        rec->page >= b->blockPages[rec->block]) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("a page record of page %llu of block %zu, outside the stream's %zu blocks"),
                       (unsigned long long) rec->page, rec->block, vm->nblocks);
        return -1;
    }
    if (b->nrecords >= b->maxPages) {
        virReportError(VIR_ERR_OPERATION_UNSUPPORTED,
                       _("the stream sends more than %llu page records, more than the page index has room for"),
                       (unsigned long long) b->maxPages);
        return -1;
    }
    seen = b->seen[rec->block];
    if (kvmsavePageIndexBit(seen, rec->page)) {
        if (kvmsavePageIndexBuilderSplit(b, rec->block, rec->page) < 0)
            return -1;
    } else {
        seen[rec->page / 64] |= 1ULL << (rec->page % 64);
    }

    if (b->open != NO_RUN)
        cur = &b->runs[b->open];
    if (cur && cur->block == rec->block && cur->count < UINT32_MAX &&
        rec->page == cur->firstPage + cur->count && !rec->named &&
        rec->record == b->next && rec->payload == rec->record + 8) {
        cur->count++;
    } else {
        kvmsavePageIndexBuildRun run = {
            .block = rec->block, .count = 1, .firstPage = rec->page,
            .payload = rec->payload, .bitStart = b->nrecords,
        };
        size_t slot;

        if ((slot = kvmsavePageIndexBuilderSlot(b)) == NO_RUN)
            return -1;
        kvmsavePageIndexBuilderInsert(b, slot, &run);
        b->open = slot;
        cur = &b->runs[slot];
    }
    kvmsavePageIndexBuilderKind(b, rec->data);
    b->next = rec->payload + (rec->data ? KVMSAVE_VM_PAGE_SIZE : 1);
    cur->end = b->next;
    return 0;
}


/* A builder that gave up is good for nothing but Free. */
static int
kvmsavePageIndexBuilderCheckFailed(const kvmsavePageIndexBuilder *b)
{
    if (b->failed) {
        virReportError(VIR_ERR_INTERNAL_ERROR, "%s",
                       _("the page index gave up on this stream already"));
        return -1;
    }
    return 0;
}


int
kvmsavePageIndexBuilderRecord(const kvmsaveVMStream *vm,
                              const kvmsaveVMRecord *rec, void *opaque)
{
    kvmsavePageIndexBuilder *b = opaque;

    if (kvmsavePageIndexBuilderCheckFailed(b) < 0)
        return -1;
    if (kvmsavePageIndexBuilderTake(b, vm, rec) < 0) {
        b->failed = true;
        return -1;
    }
    return 0;
}


/* @v, little-endian in @width bytes at @p; returns what follows. */
static unsigned char *
kvmsavePageIndexPut(unsigned char *p, uint64_t v, size_t width)
{
    size_t i;

    for (i = 0; i < width; i++)
        p[i] = v >> (8 * i);
    return p + width;
}


typedef struct {
    const kvmsavePageIndexBuilder *b;
    unsigned char *p;
} kvmsavePageIndexCursor;

static gboolean
kvmsavePageIndexPutRun(gpointer key, gpointer value G_GNUC_UNUSED,
                       gpointer opaque)
{
    kvmsavePageIndexCursor *c = opaque;
    const kvmsavePageIndexBuildRun *r = &c->b->runs[GPOINTER_TO_SIZE(key) - 1];

    c->p = kvmsavePageIndexPut(c->p, r->block, 4);
    c->p = kvmsavePageIndexPut(c->p, r->count, 4);
    c->p = kvmsavePageIndexPut(c->p, r->firstPage, 8);
    c->p = kvmsavePageIndexPut(c->p, r->payload, 8);
    c->p = kvmsavePageIndexPut(c->p, r->bitStart, 8);
    return FALSE;
}


/* What Encode is given, checked: its mistakes are kvmsave's. */
static int
kvmsavePageIndexEncodeCheck(const kvmsavePageIndexBuilder *b,
                            const kvmsaveVMStream *vm, uint64_t streamBytes,
                            const uint64_t *chunkOffsets, size_t nchunks,
                            uint32_t chunkRaw)
{
    size_t k;

    if (vm->nblocks != b->nblocks || b->next > vm->devStart ||
        vm->devStart == 0 || vm->devStart > streamBytes || chunkRaw == 0) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("a page index of %zu blocks for a stream of %zu blocks, its pages up to %llu, its device state at %llu of %llu bytes, in chunks of %u bytes"),
                       b->nblocks, vm->nblocks, (unsigned long long) b->next,
                       (unsigned long long) vm->devStart,
                       (unsigned long long) streamBytes, chunkRaw);
        return -1;
    }
    for (k = 1; k < nchunks; k++) {
        if (chunkOffsets[k] <= chunkOffsets[k - 1]) {
            virReportError(VIR_ERR_INTERNAL_ERROR,
                           _("chunk %zu of the page index's directory comes before chunk %zu"),
                           k, k - 1);
            return -1;
        }
    }
    return 0;
}


int
kvmsavePageIndexEncode(kvmsavePageIndexBuilder *b,
                       const kvmsaveVMStream *vm,
                       uint64_t streamBytes,
                       const uint64_t *chunkOffsets,
                       size_t nchunks,
                       uint32_t chunkRaw,
                       unsigned char **buf,
                       size_t *len)
{
    g_autofree unsigned char *out = NULL;
    kvmsavePageIndexCursor c = { b, NULL };
    uint64_t nwords = (b->nrecords + 63) / 64;
    uint64_t need, room = kvmsavePageIndexReserveFor(b->maxPages);
    size_t i;

    if (kvmsavePageIndexBuilderCheckFailed(b) < 0)
        return -1;
    if (!vm->ramEnded) {
        virReportError(VIR_ERR_OPERATION_UNSUPPORTED, "%s",
                       _("RAM's last section does not come before the device state, so pages may follow where the page index ends"));
        return -1;
    }
    if (!b->started && kvmsavePageIndexBuilderStart(b, vm) < 0)
        return -1;
    if (kvmsavePageIndexEncodeCheck(b, vm, streamBytes, chunkOffsets,
                                    nchunks, chunkRaw) < 0)
        return -1;
    need = KVMSAVE_PAGE_INDEX_HEAD + 8 * (uint64_t) b->nblocks + 8 * (uint64_t) nchunks +
        KVMSAVE_PAGE_INDEX_RUN * (uint64_t) b->live + 8 * nwords;
    if (need > room) {
        virReportError(VIR_ERR_OPERATION_UNSUPPORTED,
                       _("the page index needs %llu bytes, more than the %llu reserved for it"),
                       (unsigned long long) need, (unsigned long long) room);
        return -1;
    }

    c.p = out = g_new0(unsigned char, need);
    memcpy(c.p, KVMSAVE_PAGE_INDEX_MAGIC, 8);
    c.p = kvmsavePageIndexPut(c.p + 8, KVMSAVE_PAGE_INDEX_VERSION, 4);
    c.p = kvmsavePageIndexPut(c.p, 0, 4);
    c.p = kvmsavePageIndexPut(c.p, streamBytes, 8);
    c.p = kvmsavePageIndexPut(c.p, vm->devStart, 8);
    c.p = kvmsavePageIndexPut(c.p, chunkRaw, 4);
    c.p = kvmsavePageIndexPut(c.p, b->nblocks, 4);
    c.p = kvmsavePageIndexPut(c.p, nchunks, 8);
    c.p = kvmsavePageIndexPut(c.p, b->live, 8);
    c.p = kvmsavePageIndexPut(c.p, b->nrecords, 8);
    for (i = 0; i < b->nblocks; i++)
        c.p = kvmsavePageIndexPut(c.p, b->blockPages[i], 8);
    for (i = 0; i < nchunks; i++)
        c.p = kvmsavePageIndexPut(c.p, chunkOffsets[i], 8);
    g_tree_foreach(b->tree, kvmsavePageIndexPutRun, &c);
    for (i = 0; i < nwords; i++)
        c.p = kvmsavePageIndexPut(c.p, b->bits[i], 8);
    if (c.p != out + need) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("the page index took %zu bytes of %llu"),
                       (size_t) (c.p - out), (unsigned long long) need);
        return -1;
    }
    VIR_DEBUG("page index: %zu blocks, %zu chunks, %zu runs, %llu records, %llu bytes",
              b->nblocks, nchunks, b->live, (unsigned long long) b->nrecords,
              (unsigned long long) need);
    *len = need;
    *buf = g_steal_pointer(&out);
    return 0;
}


int
kvmsavePageIndexSetDirectory(unsigned char *buf, size_t len,
                             const uint64_t *chunkOffsets, size_t nchunks)
{
    uint64_t nblocks = 0, have = 0;
    size_t dir, i;

    if (len >= KVMSAVE_PAGE_INDEX_HEAD) {
        nblocks = virReadBufInt32LE(buf + 36);
        have = virReadBufInt64LE(buf + 40);
    }
    dir = KVMSAVE_PAGE_INDEX_HEAD + 8 * nblocks;
    if (len < KVMSAVE_PAGE_INDEX_HEAD || have != nchunks || dir + 8 * nchunks > len) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("a page index of %llu chunks for an image of %zu"),
                       (unsigned long long) have, nchunks);
        return -1;
    }
    for (i = 0; i < nchunks; i++) {
        if (i > 0 && chunkOffsets[i] <= chunkOffsets[i - 1]) {
            virReportError(VIR_ERR_INTERNAL_ERROR,
                           _("chunk %zu of the page index's directory comes before chunk %zu"),
                           i, i - 1);
            return -1;
        }
        kvmsavePageIndexPut(buf + dir + 8 * i, chunkOffsets[i], 8);
    }
    return 0;
}
