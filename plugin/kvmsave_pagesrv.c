/*
 * kvmsave_pagesrv.c: the postcopy source of a lazy restore, serving an
 * image's pages to QEMU: a sparse image's from their place in QEMU's
 * mapped-ram layout, a chunked one's through its page index
 * (kvmsave_chunkpages.c)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvmsave_pagesrv.h"
#include "kvmsave_chunkpages.h"
#include "kvmsave_imageindex.h"
#include "kvmsave_imagereader.h"
#include "kvmsave_mapped.h"
#include "kvmsave_postcopy.h"
#include "kvmsave_vmstream.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.pagesrv");

/* Checked blocks kept: the background pass's, and those of pages the
 * guest asks for elsewhere (8 MiB with 1 MiB blocks). */
#define CACHE_SLOTS 8
/* Pages per RAM section: small enough that a page asked for does not
 * wait long behind the background pass's. */
#define BATCH_PAGES 32
#define RP_READ (64 * 1024)

typedef struct _kvmsavePageSlot kvmsavePageSlot;
struct _kvmsavePageSlot {
    uint64_t index;
    unsigned char *buf;
    size_t len;
    uint64_t used;              /* for least recently used; 0: empty */
};

typedef struct _kvmsavePageRef kvmsavePageRef;
struct _kvmsavePageRef {
    size_t block;
    uint64_t page;
};

struct _kvmsavePageServer {
    kvmsaveImageReader *reader;
    char *path;
    int fd;
    const kvmsaveImageHeader *hdr;
    uint64_t streamBytes;
    const uint32_t *table;
    kvmsaveVMStream *vm;
    uint64_t base;              /* the file offset of the stream's offset 0 */
    kvmsaveChunkPages *chunks;  /* a chunked image's pages; NULL: sparse */
    unsigned char **present;    /* per RAM block, QEMU's bitmap: has data */
    unsigned char **sent;       /* per RAM block: sent, or QEMU has it */
    uint64_t total;
    kvmsavePageSlot cache[CACHE_SLOTS];
    uint64_t tick;
    unsigned char *checked;     /* per block of the table: passed */
    unsigned char *scratch;     /* for checks of blocks not kept */
    uint32_t zeroCrc;           /* of a block that is a hole */
    int sock;
    size_t bgBlock;             /* the background pass's next page */
    uint64_t bgPage;

    GMutex lock;                /* what the return path's thread shares */
    GCond cond;
    GQueue requests;            /* of kvmsavePageRef */
    uint64_t done;
    uint64_t asked;
    ssize_t rpBlock;            /* of the last REQ_PAGES_ID */
    bool recovering;            /* QEMU's last block may be stale */
    size_t bitmapsPending;
    bool resumed;
    bool shut;
    uint32_t shutError;
    bool rpEnded;
    virErrorPtr rpError;
    GThread *rp;
};


static bool
bitGet(const unsigned char *map, uint64_t i)
{
    return map[i / 8] >> (i % 8) & 1;
}


static void
bitSet(unsigned char *map, uint64_t i)
{
    map[i / 8] |= 1 << (i % 8);
}


static uint64_t
blockPages(const kvmsaveVMBlock *b)
{
    return b->length / KVMSAVE_VM_PAGE_SIZE;
}


/* Block @i of the image's stream, checked: from the cache, or read and
 * checked now. */
static const unsigned char *
kvmsavePageServerBlock(kvmsavePageServer *ps, uint64_t i, size_t *len)
{
    kvmsavePageSlot *victim = &ps->cache[0];
    size_t s;

    for (s = 0; s < CACHE_SLOTS; s++) {
        kvmsavePageSlot *slot = &ps->cache[s];

        if (slot->used && slot->index == i) {
            slot->used = ++ps->tick;
            *len = slot->len;
            return slot->buf;
        }
        if (slot->used < victim->used)
            victim = slot;
    }
    if (!victim->buf)
        victim->buf = g_malloc(ps->hdr->mappedBlock);
    victim->used = 0;
    if (kvmsaveMappedReadBlock(ps->fd, ps->path, ps->hdr, ps->streamBytes,
                               ps->table, i, victim->buf, &victim->len) < 0)
        return NULL;
    victim->index = i;
    victim->used = ++ps->tick;
    bitSet(ps->checked, i);
    *len = victim->len;
    return victim->buf;
}


/* Check block @i once, its data not kept: before a zero page of it is
 * sent, so that no page of a damaged block reaches QEMU. */
static int
kvmsavePageServerCheck(kvmsavePageServer *ps, uint64_t i)
{
    if (bitGet(ps->checked, i))
        return 0;
    if (!ps->scratch) {
        ps->scratch = g_malloc(ps->hdr->mappedBlock);
        ps->zeroCrc = kvmsaveMappedZeroCrc(ps->hdr->mappedBlock);
    }
    if (kvmsaveMappedCheckBlock(ps->fd, ps->path, ps->hdr, ps->streamBytes,
                                ps->table, i, ps->zeroCrc, ps->scratch) < 0)
        return -1;
    bitSet(ps->checked, i);
    return 0;
}


/* Bytes [@off, @off + @len) of the file, from checked blocks only. */
static int
kvmsavePageServerRead(kvmsavePageServer *ps, uint64_t off, void *out, size_t len)
{
    unsigned char *o = out;
    uint64_t start = ps->hdr->mappedOffset;

    if (ps->chunks)
        return kvmsaveChunkPagesRead(ps->chunks, off, out, len);

    if (off < start || off + len > start + ps->streamBytes) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("bytes at offset %llu are outside the stream of '%s'"),
                       (unsigned long long) off, ps->path);
        return -1;
    }
    while (len > 0) {
        uint64_t i = (off - start) / ps->hdr->mappedBlock;
        size_t at = (off - start) % ps->hdr->mappedBlock;
        size_t blen, take;
        const unsigned char *b = kvmsavePageServerBlock(ps, i, &blen);

        if (!b)
            return -1;
        take = MIN(len, blen - at);
        memcpy(o, b + at, take);
        o += take;
        off += take;
        len -= take;
    }
    return 0;
}


/* Check every block the walk of QEMU's stream read: all but those
 * wholly inside a RAM block's pages, which are checked as they are sent. */
static int
kvmsavePageServerCheckLayout(kvmsavePageServer *ps)
{
    uint64_t blocks = kvmsaveMappedBlocks(ps->streamBytes, ps->hdr->mappedBlock);
    uint64_t i;

    for (i = 0; i < blocks; i++) {
        uint64_t off = ps->hdr->mappedOffset + i * ps->hdr->mappedBlock;
        uint64_t end = MIN(off + ps->hdr->mappedBlock,
                           ps->hdr->mappedOffset + ps->streamBytes);
        bool pagesOnly = false;
        size_t b, len;

        for (b = 0; b < ps->vm->nblocks && !pagesOnly; b++) {
            const kvmsaveVMBlock *rb = &ps->vm->blocks[b];

            pagesOnly = off >= rb->pagesOffset && end <= rb->pagesOffset + rb->length;
        }
        if (!pagesOnly && !kvmsavePageServerBlock(ps, i, &len))
            return -1;
    }
    return 0;
}


/* QEMU's bitmaps of the pages that hold data; the others are zero. */
static int
kvmsavePageServerReadBitmaps(kvmsavePageServer *ps)
{
    size_t b;

    ps->present = g_new0(unsigned char *, ps->vm->nblocks);
    for (b = 0; b < ps->vm->nblocks; b++) {
        const kvmsaveVMBlock *rb = &ps->vm->blocks[b];
        /* Longs of the target, little-endian: bit i is in byte i / 8. */
        size_t len = VIR_DIV_UP(blockPages(rb), 64) * 8;

        ps->present[b] = g_malloc0(len);
        if (kvmsavePageServerRead(ps, rb->bitmapOffset, ps->present[b], len) < 0)
            return -1;
    }
    return 0;
}


/* What is sent: nothing yet. */
static void
kvmsavePageServerInitSent(kvmsavePageServer *ps)
{
    size_t b;

    ps->sent = g_new0(unsigned char *, ps->vm->nblocks);
    for (b = 0; b < ps->vm->nblocks; b++) {
        uint64_t pages = blockPages(&ps->vm->blocks[b]);

        ps->sent[b] = g_malloc0(VIR_DIV_UP(pages, 64) * 8);
        ps->total += pages;
    }
}


/* A sparse image: QEMU's mapped-ram stream, checked block by block. */
static int
kvmsavePageServerOpenMapped(kvmsavePageServer *ps, const char *path)
{
    ps->base = ps->hdr->mappedOffset;
    if (!(ps->vm = kvmsaveVMStreamParse(ps->fd, path, ps->hdr->mappedOffset,
                                        ps->hdr->mappedOffset + ps->streamBytes,
                                        NULL, NULL)))
        return -1;
    ps->checked = g_malloc0(VIR_DIV_UP(kvmsaveMappedBlocks(ps->streamBytes,
                                                           ps->hdr->mappedBlock), 8));
    if (!ps->vm->mapped) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: its sparse stream is not laid out by page"),
                       path);
        return -1;
    }
    return kvmsavePageServerCheckLayout(ps) < 0 ? -1 :
        kvmsavePageServerReadBitmaps(ps);
}


/* A chunked image with its page index: RAM's setup and the device state
 * walked through checked chunks, the pages found with the index. */
static int
kvmsavePageServerOpenChunks(kvmsavePageServer *ps, const char *path)
{
    const kvmsaveImageTrailer *tr = kvmsaveImageReaderTrailer(ps->reader);
    g_autofree unsigned char *buf = NULL;
    kvmsavePageIndex *idx = NULL;
    kvmsaveVMSource src;
    unsigned char first;
    size_t len;
    int rc;

    if ((rc = kvmsaveImageIndexLoad(ps->reader, path, &buf, &len, &idx)) < 0)
        return -1;
    if (rc == 0) {
        virReportError(VIR_ERR_OPERATION_UNSUPPORTED,
                       _("save image '%s' has no page index, which a lazy restore needs to find each page: save the guest again with this kvmsave, as one stream ('raw' or 'zstd' without parallel channels), or restore it eagerly"),
                       path);
        return -1;
    }
    ps->chunks = kvmsaveChunkPagesNew(ps->fd, path, ps->hdr->headerSize, tr, idx);
    kvmsaveChunkPagesSource(ps->chunks, &src);
    if (!(ps->vm = kvmsaveVMStreamParseFrom(&src, path, 0, tr->streamBytes,
                                            KVMSAVE_VM_PARSE_SETUP_ONLY,
                                            NULL, NULL)) ||
        kvmsavePageIndexCheckStream(idx, ps->vm, path) < 0)
        return -1;
    /* The index says where the devices begin: a section of its own. */
    ps->vm->devStart = kvmsavePageIndexDevStart(idx);
    if (ps->vm->devStart <= ps->vm->configEnd ||
        kvmsaveChunkPagesRead(ps->chunks, ps->vm->devStart, &first, 1) < 0 ||
        (first != 0x01 && first != 0x04)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("the page index of '%s' is damaged: no device section begins at stream offset %llu"),
                       path, (unsigned long long) ps->vm->devStart);
        return -1;
    }
    return kvmsaveVMStreamFindEnd(&src, path, tr->streamBytes, ps->vm);
}


kvmsavePageServer *
kvmsavePageServerOpen(const char *path, int fd)
{
    g_autoptr(kvmsavePageServer) ps = g_new0(kvmsavePageServer, 1);
    g_autofree char *from = fd >= 0 ? g_strdup_printf("/proc/self/fd/%d", fd)
                                    : g_strdup(path);
    g_autofree char *self = NULL;

    g_mutex_init(&ps->lock);
    g_cond_init(&ps->cond);
    g_queue_init(&ps->requests);
    ps->fd = -1;
    ps->rpBlock = -1;
    ps->path = g_strdup(path);
    if (!(ps->reader = kvmsaveImageOpen(from, KVMSAVE_IMAGE_IO_CACHED)))
        return NULL;
    ps->hdr = kvmsaveImageReaderHeader(ps->reader);
    ps->streamBytes = kvmsaveImageReaderTrailer(ps->reader)->streamBytes;
    ps->table = kvmsaveImageReaderMappedTable(ps->reader);
    self = kvmsaveImageReaderSelfPath(ps->reader);
    if ((ps->fd = open(self, O_RDONLY | O_CLOEXEC)) < 0) {
        virReportSystemError(errno, _("cannot open save image '%s'"), path);
        return NULL;
    }
    if ((ps->table ? kvmsavePageServerOpenMapped(ps, path) :
         kvmsavePageServerOpenChunks(ps, path)) < 0)
        return NULL;
    if (ps->vm->devEnd - ps->vm->devStart > KVMSAVE_PAGESRV_DEVICE_MAX) {
        virReportError(VIR_ERR_OPERATION_UNSUPPORTED,
                       _("the devices' state in '%s' is %llu bytes, more than the %d a lazy restore loads at once; restore it eagerly"),
                       path, (unsigned long long) (ps->vm->devEnd - ps->vm->devStart),
                       KVMSAVE_PAGESRV_DEVICE_MAX);
        return NULL;
    }
    kvmsavePageServerInitSent(ps);
    return g_steal_pointer(&ps);
}


void
kvmsavePageServerFree(kvmsavePageServer *ps)
{
    size_t i;

    if (!ps)
        return;
    for (i = 0; i < CACHE_SLOTS; i++)
        g_free(ps->cache[i].buf);
    for (i = 0; ps->vm && i < ps->vm->nblocks; i++) {
        if (ps->present)
            g_free(ps->present[i]);
        if (ps->sent)
            g_free(ps->sent[i]);
    }
    g_free(ps->present);
    g_free(ps->sent);
    g_free(ps->checked);
    g_free(ps->scratch);
    while (!g_queue_is_empty(&ps->requests))
        g_free(g_queue_pop_head(&ps->requests));
    virFreeError(ps->rpError);
    kvmsaveVMStreamFree(ps->vm);
    kvmsaveChunkPagesFree(ps->chunks);
    VIR_FORCE_CLOSE(ps->fd);
    kvmsaveImageReaderFree(ps->reader);
    g_mutex_clear(&ps->lock);
    g_cond_clear(&ps->cond);
    g_free(ps->path);
    g_free(ps);
}


uint64_t
kvmsavePageServerDone(kvmsavePageServer *ps, uint64_t *total)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&ps->lock);

    *total = ps->total;
    return ps->done;
}


uint64_t
kvmsavePageServerAsked(kvmsavePageServer *ps)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&ps->lock);

    return ps->asked;
}


static int
kvmsavePageServerSend(kvmsavePageServer *ps, const GByteArray *out)
{
    size_t at = 0;

    while (at < out->len) {
        ssize_t n = send(ps->sock, out->data + at, out->len - at, MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            virReportSystemError(errno, "%s",
                                 _("cannot send the guest's state to QEMU"));
            return -1;
        }
        at += n;
    }
    return 0;
}


/* ---- the return path, in its own thread ---- */

/* With ps->lock held. */
static void
kvmsavePageServerHandle(kvmsavePageServer *ps, const kvmsavePostcopyMsg *m)
{
    ssize_t b;
    uint64_t p;

    switch (m->type) {
    case KVMSAVE_POSTCOPY_RP_REQ_PAGES_ID:
        ps->rpBlock = kvmsaveVMStreamFindBlock(ps->vm, m->block);
        G_GNUC_FALLTHROUGH;
    case KVMSAVE_POSTCOPY_RP_REQ_PAGES:
        for (p = 0; p < MAX(1, m->length / KVMSAVE_VM_PAGE_SIZE); p++) {
            kvmsavePageRef *ref = g_new0(kvmsavePageRef, 1);

            ref->block = ps->rpBlock;
            ref->page = m->offset / KVMSAVE_VM_PAGE_SIZE + p;
            g_queue_push_tail(&ps->requests, ref);
        }
        break;
    case KVMSAVE_POSTCOPY_RP_RECV_BITMAP:
        if ((b = kvmsaveVMStreamFindBlock(ps->vm, m->block)) >= 0) {
            for (p = 0; p < blockPages(&ps->vm->blocks[b]); p++) {
                if (kvmsavePostcopyBitmapHas(m, p) && !bitGet(ps->sent[b], p)) {
                    bitSet(ps->sent[b], p);
                    ps->done++;
                }
            }
        }
        ps->bitmapsPending--;
        break;
    case KVMSAVE_POSTCOPY_RP_RESUME_ACK:
        ps->resumed = true;
        break;
    case KVMSAVE_POSTCOPY_RP_SHUT:
        ps->shut = true;
        ps->shutError = m->value;
        break;
    case KVMSAVE_POSTCOPY_RP_PONG:
    case KVMSAVE_POSTCOPY_RP_SWITCHOVER_ACK:
        break;
    }
}


/* Validate a request against the layout: -1 (reported) for a bad one,
 * 1 for one to drop, 0 to take it.
 *
 * A request without a block name means QEMU's last named one. After a
 * recovery that is not always ours: QEMU's fault thread can ask on the
 * new channel before the resume resets its last block, and races the
 * resume's own requests for it (QEMU: "not thread safe, yet"). Such a
 * request that fits no block named here is dropped: QEMU asks again,
 * naming the block, for every page pending at the resume, and the
 * background pass sends every page anyway. */
static int
kvmsavePageServerCheckMsg(kvmsavePageServer *ps, const kvmsavePostcopyMsg *m)
{
    ssize_t b = ps->rpBlock;
    bool fits;

    if (m->type == KVMSAVE_POSTCOPY_RP_REQ_PAGES_ID)
        b = kvmsaveVMStreamFindBlock(ps->vm, m->block);
    if (m->type != KVMSAVE_POSTCOPY_RP_REQ_PAGES &&
        m->type != KVMSAVE_POSTCOPY_RP_REQ_PAGES_ID)
        return 0;
    fits = b >= 0 && m->offset % KVMSAVE_VM_PAGE_SIZE == 0 &&
        m->offset + MAX(m->length, 1) <= ps->vm->blocks[b].length;
    if (fits)
        return 0;
    if (ps->recovering && m->type == KVMSAVE_POSTCOPY_RP_REQ_PAGES) {
        VIR_DEBUG("%s: dropped a request of %u bytes at offset %llu that names no block of this channel",
                  ps->path, m->length, (unsigned long long) m->offset);
        return 1;
    }
    if (b < 0 && m->type == KVMSAVE_POSTCOPY_RP_REQ_PAGES) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("QEMU asked for %u bytes at offset %llu without naming a RAM block first"),
                       m->length, (unsigned long long) m->offset);
        return -1;
    }
    virReportError(VIR_ERR_OPERATION_FAILED,
                   _("QEMU asked for %u bytes at offset %llu of RAM block '%s', which the image does not hold"),
                   m->length, (unsigned long long) m->offset,
                   b >= 0 ? ps->vm->blocks[b].name : m->block);
    return -1;
}


static gpointer
kvmsavePageServerReturnPath(gpointer opaque)
{
    kvmsavePageServer *ps = opaque;
    g_autoptr(GByteArray) buf = g_byte_array_new();
    virErrorPtr err = NULL;

    for (;;) {
        kvmsavePostcopyMsg m;
        ssize_t n;
        size_t have = buf->len;

        g_byte_array_set_size(buf, have + RP_READ);
        n = read(ps->sock, buf->data + have, RP_READ);
        g_byte_array_set_size(buf, have + MAX(n, 0));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            virReportSystemError(errno, "%s", _("cannot read QEMU's return path"));
        if (n <= 0)
            break;
        while ((n = kvmsavePostcopyParseMsg(buf->data, buf->len, &m)) > 0) {
            g_autoptr(GMutexLocker) locker = NULL;
            int check;

            if ((check = kvmsavePageServerCheckMsg(ps, &m)) < 0)
                goto error;
            locker = g_mutex_locker_new(&ps->lock);
            if (check == 0)
                kvmsavePageServerHandle(ps, &m);
            g_cond_broadcast(&ps->cond);
            g_byte_array_remove_range(buf, 0, n);
        }
        if (n < 0)
            goto error;
    }
 error:
    if (virGetLastError())
        err = virSaveLastError();
    g_mutex_lock(&ps->lock);
    ps->rpEnded = true;
    if (!ps->shut)
        ps->rpError = err;
    else
        virFreeError(err);
    g_cond_broadcast(&ps->cond);
    g_mutex_unlock(&ps->lock);
    return NULL;
}


/* With ps->lock held: -1 (error reported) once the migration cannot go
 * on before every page is sent. */
static int
kvmsavePageServerCheckAlive(kvmsavePageServer *ps)
{
    if (ps->shut) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("QEMU ended the migration (error %u) before it had every page; see its log"),
                       ps->shutError);
        return -1;
    }
    if (!ps->rpEnded)
        return 0;
    if (ps->rpError)
        virSetError(ps->rpError);
    else
        virReportError(VIR_ERR_OPERATION_FAILED, "%s",
                       _("QEMU closed the migration before it had every page"));
    return -1;
}


/* With ps->lock held: wait for @what, or the end of the return path. */
static int
kvmsavePageServerWait(kvmsavePageServer *ps, bool (*what)(kvmsavePageServer *))
{
    while (!what(ps)) {
        if (kvmsavePageServerCheckAlive(ps) < 0)
            return -1;
        g_cond_wait(&ps->cond, &ps->lock);
    }
    return 0;
}


/* ---- sending ---- */

/* With ps->lock held: the next pages to send, asked-for ones first. */
static size_t
kvmsavePageServerTake(kvmsavePageServer *ps, kvmsavePageRef *refs)
{
    size_t n = 0;
    kvmsavePageRef *req;

    while (n < BATCH_PAGES && (req = g_queue_pop_head(&ps->requests))) {
        if (!bitGet(ps->sent[req->block], req->page)) {
            bitSet(ps->sent[req->block], req->page);
            refs[n++] = *req;
            ps->asked++;
        }
        g_free(req);
    }
    while (n == 0 && ps->bgBlock < ps->vm->nblocks) {
        const kvmsaveVMBlock *rb = &ps->vm->blocks[ps->bgBlock];

        for (; ps->bgPage < blockPages(rb) && n < BATCH_PAGES; ps->bgPage++) {
            if (!bitGet(ps->sent[ps->bgBlock], ps->bgPage)) {
                bitSet(ps->sent[ps->bgBlock], ps->bgPage);
                refs[n].block = ps->bgBlock;
                refs[n++].page = ps->bgPage;
            }
        }
        if (ps->bgPage == blockPages(rb)) {
            ps->bgBlock++;
            ps->bgPage = 0;
        }
    }
    ps->done += n;
    return n;
}


/* Page @page of block @b, checked: its bytes in @buf, or *@data false
 * for a zero page. */
static int
kvmsavePageServerPage(kvmsavePageServer *ps, size_t b, uint64_t page,
                      unsigned char *buf, bool *data)
{
    uint64_t off;

    if (ps->chunks)
        return kvmsaveChunkPagesPage(ps->chunks, b, page, buf, data);
    *data = bitGet(ps->present[b], page);
    off = ps->vm->blocks[b].pagesOffset + page * KVMSAVE_VM_PAGE_SIZE;
    if (*data)
        return kvmsavePageServerRead(ps, off, buf, KVMSAVE_VM_PAGE_SIZE);
    return kvmsavePageServerCheck(ps, (off - ps->hdr->mappedOffset) /
                                  ps->hdr->mappedBlock);
}


static int
kvmsavePageServerSendPages(kvmsavePageServer *ps, const kvmsavePageRef *refs,
                           size_t n, GByteArray *out)
{
    kvmsavePostcopySection sec;
    size_t i;

    g_byte_array_set_size(out, 0);
    kvmsavePostcopySectionBegin(&sec, ps->vm, out);
    for (i = 0; i < n; i++) {
        unsigned char page[KVMSAVE_VM_PAGE_SIZE];
        bool data;

        if (kvmsavePageServerPage(ps, refs[i].block, refs[i].page, page, &data) < 0)
            return -1;
        kvmsavePostcopySectionPage(&sec, refs[i].block, refs[i].page,
                                   data ? page : NULL);
    }
    kvmsavePostcopySectionEnd(&sec);
    return kvmsavePageServerSend(ps, out);
}


/* After the end: QEMU's word that it has every page, SHUT(0). */
static int
kvmsavePageServerFinish(kvmsavePageServer *ps)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&ps->lock);

    while (!ps->shut && !ps->rpEnded)
        g_cond_wait(&ps->cond, &ps->lock);
    if (ps->shut && ps->shutError == 0)
        return 0;
    if (ps->shut)
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("QEMU ended the migration with error %u; see its log"),
                       ps->shutError);
    else
        ignore_value(kvmsavePageServerCheckAlive(ps));
    return -1;
}


/* Every page QEMU does not have yet, then the end; wait for QEMU's
 * word that it has them all. */
static int
kvmsavePageServerServe(kvmsavePageServer *ps)
{
    g_autoptr(GByteArray) out = g_byte_array_new();
    kvmsavePageRef refs[BATCH_PAGES];

    for (;;) {
        size_t n = 0;
        int rc;

        g_mutex_lock(&ps->lock);
        if ((rc = kvmsavePageServerCheckAlive(ps)) == 0)
            n = kvmsavePageServerTake(ps, refs);
        g_mutex_unlock(&ps->lock);
        if (rc < 0)
            return -1;
        if (n == 0)
            break;
        if (kvmsavePageServerSendPages(ps, refs, n, out) < 0)
            return -1;
    }
    g_byte_array_set_size(out, 0);
    kvmsavePostcopyPutEnd(out, ps->vm);
    if (kvmsavePageServerSend(ps, out) < 0)
        return -1;
    return kvmsavePageServerFinish(ps);
}


/* ---- the two ways in ---- */

static bool
kvmsavePageServerBitmapsIn(kvmsavePageServer *ps)
{
    return ps->bitmapsPending == 0;
}


static bool
kvmsavePageServerResumed(kvmsavePageServer *ps)
{
    return ps->resumed;
}


/* From the start: the stream up to the package, the package, and the
 * pages. The return path opens with the first part. */
static int
kvmsavePageServerBegin(kvmsavePageServer *ps)
{
    const kvmsaveVMStream *vm = ps->vm;
    uint64_t start = ps->base;
    size_t configLen = vm->configEnd - start;
    size_t devLen = vm->devEnd - vm->devStart;
    g_autofree unsigned char *config = g_malloc(configLen);
    g_autofree unsigned char *dev = g_malloc(devLen);
    g_autoptr(GByteArray) head = NULL;
    g_autoptr(GByteArray) pkg = NULL;

    if (kvmsavePageServerRead(ps, start, config, configLen) < 0 ||
        kvmsavePageServerRead(ps, vm->devStart, dev, devLen) < 0)
        return -1;
    head = kvmsavePostcopyStart(vm, start, config, configLen);
    pkg = kvmsavePostcopyPackage(dev, devLen);
    if (kvmsavePageServerSend(ps, head) < 0 || kvmsavePageServerSend(ps, pkg) < 0)
        return -1;
    VIR_DEBUG("%s: devices sent, %llu pages to serve", ps->path,
              (unsigned long long) ps->total);
    return 0;
}


/* After the source was lost: which pages QEMU has, then resume. */
static int
kvmsavePageServerRecover(kvmsavePageServer *ps)
{
    g_autoptr(GByteArray) out = g_byte_array_new();
    g_autoptr(GMutexLocker) locker = NULL;
    size_t b;

    ps->bitmapsPending = ps->vm->nblocks;
    for (b = 0; b < ps->vm->nblocks; b++)
        kvmsavePostcopyPutRecvBitmap(out, ps->vm->blocks[b].name);
    if (kvmsavePageServerSend(ps, out) < 0)
        return -1;
    locker = g_mutex_locker_new(&ps->lock);
    if (kvmsavePageServerWait(ps, kvmsavePageServerBitmapsIn) < 0)
        return -1;
    g_byte_array_set_size(out, 0);
    kvmsavePostcopyPutResume(out);
    if (kvmsavePageServerSend(ps, out) < 0 ||
        kvmsavePageServerWait(ps, kvmsavePageServerResumed) < 0)
        return -1;
    VIR_DEBUG("%s: resumed, %llu of %llu pages in QEMU", ps->path,
              (unsigned long long) ps->done, (unsigned long long) ps->total);
    return 0;
}


int
kvmsavePageServerRun(kvmsavePageServer *ps, int sock, bool recover)
{
    int rc = -1;

    ps->sock = sock;
    ps->recovering = recover;
    if (!(ps->rp = g_thread_try_new("kvmsave-rp", kvmsavePageServerReturnPath,
                                    ps, NULL))) {
        virReportError(VIR_ERR_INTERNAL_ERROR, "%s",
                       _("cannot start the thread of QEMU's return path"));
        return -1;
    }
    if ((recover ? kvmsavePageServerRecover(ps) : kvmsavePageServerBegin(ps)) == 0)
        rc = kvmsavePageServerServe(ps);
    /* The reader ends when QEMU closes its end, or now. */
    shutdown(sock, SHUT_RDWR);
    g_thread_join(ps->rp);
    ps->rp = NULL;
    return rc;
}
