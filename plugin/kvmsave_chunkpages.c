/*
 * kvmsave_chunkpages.c: a lazy restore's pages from an image of one
 * stream in chunks, found with its page index
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The page server asks for stream bytes and for pages; both come out of
 * whole chunks, each read, checked (header, data checksum, zstd's own)
 * and decoded before any byte of it is handed out, and a few kept for
 * the pages next to the last one. A zero page's record lies in a chunk
 * too, which is checked before the page is called zero.
 */
#include <config.h>

#include <unistd.h>

#include "kvmsave_chunkpages.h"
#include "kvmsave_imageindex.h"
#include "kvmsave_imagereaderpriv.h"
#include "virerror.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.chunkpages");

/* Decoded chunks kept: the background pass's, and those of pages the
 * guest asks for elsewhere (16 MiB with 4 MiB chunks). */
#define CHUNK_SLOTS 4

typedef struct _kvmsaveChunkSlot kvmsaveChunkSlot;
struct _kvmsaveChunkSlot {
    uint64_t index;
    unsigned char *buf;         /* the decoded chunk, KVMSAVE_IMAGE_CHUNK_MAX */
    size_t len;
    uint64_t used;              /* for least recently used; 0: empty */
};

struct _kvmsaveChunkPages {
    int fd;
    char *path;
    uint64_t headerSize;
    uint64_t dataEnd;
    uint64_t streamBytes;
    kvmsavePageIndex *idx;
    uint32_t chunkRaw;
    uint64_t nchunks;
    kvmsaveChunkSlot slots[CHUNK_SLOTS];
    uint64_t tick;
    unsigned char *stored;      /* a zstd chunk's bytes as stored */
    void *dctx;
};


kvmsaveChunkPages *
kvmsaveChunkPagesNew(int fd, const char *path, uint64_t headerSize,
                     const kvmsaveImageTrailer *tr, kvmsavePageIndex *idx)
{
    kvmsaveChunkPages *cp = g_new0(kvmsaveChunkPages, 1);

    cp->fd = fd;
    cp->path = g_strdup(path);
    cp->headerSize = headerSize;
    cp->dataEnd = tr->dataEnd;
    cp->streamBytes = tr->streamBytes;
    cp->idx = idx;
    cp->chunkRaw = kvmsavePageIndexChunkRaw(idx);
    cp->nchunks = kvmsavePageIndexNChunks(idx);
    return cp;
}


void
kvmsaveChunkPagesFree(kvmsaveChunkPages *cp)
{
    size_t i;

    if (!cp)
        return;
    for (i = 0; i < CHUNK_SLOTS; i++)
        g_free(cp->slots[i].buf);
    g_free(cp->stored);
    kvmsaveImageChunkFreeCtx(cp->dctx);
    kvmsavePageIndexFree(cp->idx);
    g_free(cp->path);
    g_free(cp);
}


const kvmsavePageIndex *
kvmsaveChunkPagesIndex(kvmsaveChunkPages *cp)
{
    return cp->idx;
}


static int
kvmsaveChunkPagesPread(kvmsaveChunkPages *cp, void *buf, size_t len,
                       uint64_t off)
{
    ssize_t got = pread(cp->fd, buf, len, off);

    if (got == (ssize_t) len)
        return 0;
    if (got < 0)
        virReportSystemError(errno, _("cannot read save image '%s'"), cp->path);
    else
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is truncated at offset %llu"),
                       cp->path, (unsigned long long) off + got);
    return -1;
}


/* Read chunk @k into @slot, checked: its header is chunk k's, of
 * chunkRaw stream bytes but the last, and its bytes pass their checks. */
static int
kvmsaveChunkPagesLoad(kvmsaveChunkPages *cp, uint64_t k, kvmsaveChunkSlot *slot)
{
    uint64_t off = cp->headerSize + kvmsavePageIndexChunkOffset(cp->idx, k);
    unsigned char head[KVMSAVE_IMAGE_CHUNK_HEADER_LEN];
    kvmsaveImageChunkHeader ch;
    const unsigned char *data;
    unsigned char *stored;
    size_t len;

    if (kvmsaveChunkPagesPread(cp, head, sizeof(head), off) < 0 ||
        kvmsaveImageIndexCheckChunk(head, cp->path, cp->idx, k, off, cp->dataEnd,
                                    cp->streamBytes, &ch) < 0)
        return -1;
    if (!slot->buf)
        slot->buf = g_malloc(KVMSAVE_IMAGE_CHUNK_MAX);
    if (ch.encoding == KVMSAVE_IMAGE_ENCODING_RAW) {
        stored = slot->buf;
    } else {
        if (!cp->stored)
            cp->stored = g_malloc(KVMSAVE_IMAGE_CHUNK_MAX);
        stored = cp->stored;
    }
    if (kvmsaveChunkPagesPread(cp, stored, ch.stored,
                               off + KVMSAVE_IMAGE_CHUNK_HEADER_LEN) < 0 ||
        kvmsaveImageChunkDecode(&ch, cp->path, off, stored, &cp->dctx,
                                &slot->buf, &data, &len) < 0)
        return -1;
    slot->index = k;
    slot->len = len;
    return 0;
}


/* Chunk @k, checked: kept, or read now. */
static const kvmsaveChunkSlot *
kvmsaveChunkPagesGet(kvmsaveChunkPages *cp, uint64_t k)
{
    kvmsaveChunkSlot *victim = &cp->slots[0];
    size_t i;

    for (i = 0; i < CHUNK_SLOTS; i++) {
        kvmsaveChunkSlot *slot = &cp->slots[i];

        if (slot->used && slot->index == k) {
            slot->used = ++cp->tick;
            return slot;
        }
        if (slot->used < victim->used)
            victim = slot;
    }
    victim->used = 0;
    if (kvmsaveChunkPagesLoad(cp, k, victim) < 0)
        return NULL;
    victim->used = ++cp->tick;
    return victim;
}


int
kvmsaveChunkPagesRead(kvmsaveChunkPages *cp, uint64_t off, void *out,
                      size_t len)
{
    unsigned char *o = out;

    if (off > cp->streamBytes || cp->streamBytes - off < len) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("bytes at offset %llu are outside the stream of '%s'"),
                       (unsigned long long) off, cp->path);
        return -1;
    }
    while (len > 0) {
        const kvmsaveChunkSlot *slot = kvmsaveChunkPagesGet(cp, off / cp->chunkRaw);
        size_t at = off % cp->chunkRaw;
        size_t take;

        if (!slot)
            return -1;
        take = MIN(len, slot->len - at);
        memcpy(o, slot->buf + at, take);
        o += take;
        off += take;
        len -= take;
    }
    return 0;
}


int
kvmsaveChunkPagesPage(kvmsaveChunkPages *cp, size_t block, uint64_t page,
                      unsigned char *buf, bool *data)
{
    uint64_t payload;
    unsigned char fill;
    int rc;

    if ((rc = kvmsavePageIndexLookup(cp->idx, block, page, &payload, data)) < 0)
        return -1;
    if (rc == 0) {
        /* Never sent: zero, and in no chunk. */
        *data = false;
        return 0;
    }
    if (*data)
        return kvmsaveChunkPagesRead(cp, payload, buf, KVMSAVE_VM_PAGE_SIZE);
    /* A zero page is only as good as the chunk that holds its record. */
    if (kvmsaveChunkPagesRead(cp, payload, &fill, 1) < 0)
        return -1;
    if (fill != 0) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("the page index of '%s' is damaged: page %llu of block %zu is no zero page at stream offset %llu"),
                       cp->path, (unsigned long long) page, block,
                       (unsigned long long) payload);
        return -1;
    }
    return 0;
}


static int
kvmsaveChunkPagesView(void *opaque, uint64_t pos, size_t want G_GNUC_UNUSED,
                      const unsigned char **p, size_t *len)
{
    kvmsaveChunkPages *cp = opaque;
    const kvmsaveChunkSlot *slot;

    if (pos >= cp->streamBytes) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("bytes at offset %llu are outside the stream of '%s'"),
                       (unsigned long long) pos, cp->path);
        return -1;
    }
    if (!(slot = kvmsaveChunkPagesGet(cp, pos / cp->chunkRaw)))
        return -1;
    *p = slot->buf + pos % cp->chunkRaw;
    *len = slot->len - pos % cp->chunkRaw;
    return 0;
}


void
kvmsaveChunkPagesSource(kvmsaveChunkPages *cp, kvmsaveVMSource *src)
{
    src->view = kvmsaveChunkPagesView;
    src->opaque = cp;
}
