/*
 * kvmsave_imagereader.c: reading a save image, kvmsave's or stock
 * libvirt's
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The generic reader opens the file and picks its backend; kvmsave's own
 * format is the backend below it in this file: a reader thread fetches
 * chunks ahead into a queue's buffers, workers verify and decompress
 * them, the caller takes them in order.
 */
#include <config.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvmsave_imagereaderpriv.h"
#include "kvmsave_chunkq.h"
#include "kvmsave_imagecache.h"
#include "kvmsave_imageindex.h"
#include "kvmsave_imagewriter.h"
#include "kvmsave_mapped.h"
#include "kvmsave_util.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.imagereader");

/* Chunks in flight between the disk and the stream, each up to two
 * buffers of a chunk (stored and decoded): this bounds the memory a
 * restore uses, whatever the guest's size and the CPU count. */
#define KVMSAVE_IMAGE_SLOTS_MAX 4

struct _kvmsaveImageReader {
    kvmsaveImageFile file;
    kvmsaveImageHeader *hdr;
    bool hdrBorrowed;           /* a stream reader's: its parent's */
    kvmsaveImageCache *streamsCache; /* shared by the readers of its streams */
    kvmsaveImageTrailer tr;
    const kvmsaveImageBackend *backend;
    void *data;                 /* the backend's */
    uint64_t streamRead;        /* bytes of QEMU's stream handed out */
};

/* kvmsave's own images. */
typedef struct _kvmsaveImageChunks kvmsaveImageChunks;
struct _kvmsaveImageChunks {
    kvmsaveImageFile *file;     /* the reader's */
    const kvmsaveImageHeader *hdr;
    const kvmsaveImageTrailer *tr;
    int stream;                 /* the only stream returned, or -1 for all */
    uint32_t *table;            /* a sparse image's checksums */

    /* The reader thread's position. */
    uint64_t pos;               /* file offset of the next chunk */
    kvmsaveImageCache *cache;   /* shared with the other streams' readers */
    uint64_t chunkIndex;
    uint64_t streamBytes;
    unsigned char *peek;        /* two aligned blocks: a chunk's header */

    /* The caller's side. */
    kvmsaveChunkQueue *queue;
    GThread *thread;
    kvmsaveChunk *held;         /* returned last, released on the next call */
    bool ended;
    virErrorPtr endErr;         /* why reading ended, if it failed */
    int lastEncoding;           /* of the chunk read last */
    unsigned int lastStream;
    size_t lastLen;
};

static const kvmsaveImageBackend kvmsaveImageChunksBackend;


static void
kvmsaveImageFileTruncated(kvmsaveImageFile *f, const char *what, uint64_t pos)
{
    virReportError(VIR_ERR_OPERATION_FAILED,
                   _("save image '%s' is truncated: %s at offset %llu runs past the end of the file"),
                   f->path, what, (unsigned long long) pos);
}


ssize_t
kvmsaveImageFileRead(kvmsaveImageFile *f, unsigned char *buf, size_t len,
                     size_t need, uint64_t off, const char *what, uint64_t pos)
{
    ssize_t done;

    while ((done = kvmsaveReadAt(f->fd, buf, len, off, f->direct)) < 0 &&
           errno == EINVAL && f->direct && f->directOptional) {
        /* Opened with O_DIRECT, but the file system refuses to read
         * that way: read through the cache instead. */
        int fl = fcntl(f->fd, F_GETFL);

        if (fl < 0 || fcntl(f->fd, F_SETFL, fl & ~O_DIRECT) < 0) {
            errno = EINVAL;
            break;
        }
        f->direct = false;
    }
    if (done < 0) {
        virReportSystemError(errno, _("cannot read save image '%s'"),
                             f->path);
        return -1;
    }
    if (done < need) {
        kvmsaveImageFileTruncated(f, what, pos);
        return -1;
    }
    return done;
}


unsigned char *
kvmsaveImageFileReadPart(kvmsaveImageFile *f, uint64_t pos, size_t need,
                         const char *what, uint64_t *start)
{
    size_t len;
    unsigned char *buf;

    *start = pos / KVMSAVE_IMAGE_ALIGN * KVMSAVE_IMAGE_ALIGN;
    if (pos + need > f->size) {
        kvmsaveImageFileTruncated(f, what, pos);
        return NULL;
    }
    len = VIR_ROUND_UP(pos + need - *start, KVMSAVE_IMAGE_ALIGN);
    buf = kvmsaveAlignedAlloc(len);
    if (kvmsaveImageFileRead(f, buf, len, pos + need - *start, *start,
                             what, pos) < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}


static void
kvmsaveImageChunksStop(kvmsaveImageChunks *k)
{
    /* The held chunk belongs to the queue: it goes with it. */
    k->held = NULL;
    kvmsaveChunkQueueStop(&k->queue, &k->thread);
}


static void
kvmsaveImageChunksFree(void *data)
{
    kvmsaveImageChunks *k = data;

    if (!k)
        return;
    kvmsaveImageChunksStop(k);
    virFreeError(k->endErr);
    kvmsaveImageCacheUnref(k->cache);
    free(k->peek);
    g_free(k->table);
    g_free(k);
}


static kvmsaveImageChunks *
kvmsaveImageChunksNew(kvmsaveImageFile *f, const kvmsaveImageHeader *hdr,
                      const kvmsaveImageTrailer *tr, int stream,
                      kvmsaveImageCache *cache)
{
    kvmsaveImageChunks *k = g_new0(kvmsaveImageChunks, 1);

    k->cache = cache;
    k->file = f;
    k->hdr = hdr;
    k->tr = tr;
    k->stream = stream;
    k->pos = hdr->headerSize;
    k->peek = kvmsaveAlignedAlloc(2 * KVMSAVE_IMAGE_ALIGN);
    return k;
}


/* The header, read whole: the first block usually holds all of it. */
static int
kvmsaveImageChunksReadHeader(kvmsaveImageFile *f, const unsigned char *buf,
                             size_t len, kvmsaveImageHeader **hdr)
{
    g_autofree unsigned char *whole = NULL;
    uint64_t start;
    size_t needed = 0;
    int rc;

    rc = kvmsaveImageHeaderDecode(buf, len, f->path, &needed, hdr);
    if (rc <= 0)
        return rc;
    if (needed > f->size) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is truncated inside its header"),
                       f->path);
        return -1;
    }
    if (!(whole = kvmsaveImageFileReadPart(f, 0, needed, _("header"), &start)))
        return -1;
    return kvmsaveImageHeaderDecode(whole, needed, f->path, NULL, hdr);
}


/* The trailer at the very end says the image is complete. */
static int
kvmsaveImageChunksReadTrailer(kvmsaveImageFile *f, const kvmsaveImageHeader *hdr,
                              kvmsaveImageTrailer *tr)
{
    g_autofree unsigned char *tail = NULL;
    uint64_t start;

    if (f->size % KVMSAVE_IMAGE_ALIGN != 0 ||
        f->size < hdr->headerSize + KVMSAVE_IMAGE_TRAILER_LEN) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is incomplete or truncated: its size %llu is not that of a finished image"),
                       f->path, (unsigned long long) f->size);
        return -1;
    }
    if (!(tail = kvmsaveImageFileReadPart(f, f->size - KVMSAVE_IMAGE_ALIGN,
                                          KVMSAVE_IMAGE_ALIGN, _("trailer"),
                                          &start)) ||
        kvmsaveImageTrailerDecode(tail + KVMSAVE_IMAGE_ALIGN - KVMSAVE_IMAGE_TRAILER_LEN,
                                  f->path, tr) < 0)
        return -1;
    if (kvmsaveImageChecksumBad(tr->headerCrc, hdr->crc)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: its trailer does not belong to its header"),
                       f->path);
        return -1;
    }
    if (tr->dataEnd < hdr->headerSize ||
        tr->dataEnd > f->size - KVMSAVE_IMAGE_TRAILER_LEN ||
        VIR_ROUND_UP(tr->dataEnd + KVMSAVE_IMAGE_TRAILER_LEN,
                     KVMSAVE_IMAGE_ALIGN) != f->size) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: trailer's data end %llu does not fit a file of %llu bytes"),
                       f->path, (unsigned long long) tr->dataEnd,
                       (unsigned long long) f->size);
        return -1;
    }
    return 0;
}


static void *
kvmsaveImageChunksOpen(kvmsaveImageFile *f, const unsigned char *buf,
                       size_t len, kvmsaveImageHeader **hdr,
                       kvmsaveImageTrailer *tr)
{
    g_autofree uint32_t *table = NULL;
    kvmsaveImageCache *cache;
    kvmsaveImageChunks *k;

    if (kvmsaveImageChunksReadHeader(f, buf, len, hdr) < 0 ||
        kvmsaveImageChunksReadTrailer(f, *hdr, tr) < 0)
        return NULL;
    if ((*hdr)->mappedOffset &&
        kvmsaveMappedReadTable(f, *hdr, tr, &table) < 0)
        return NULL;
    if (!(cache = kvmsaveImageCacheNew(f->fd, 1, KVMSAVE_IMAGE_ALIGN)))
        return NULL;
    k = kvmsaveImageChunksNew(f, *hdr, tr, -1, cache);
    k->table = g_steal_pointer(&table);
    return k;
}


/* Reader thread: check the header of the chunk at k->pos; returns 1 with
 * it in *@ch, 0 at the end of the data (totals checked against the
 * trailer), -1 with an error reported. */
static int
kvmsaveImageChunksPeek(kvmsaveImageChunks *k, kvmsaveImageChunkHeader *ch)
{
    const char *path = k->file->path;
    unsigned long long idx = k->chunkIndex;
    unsigned long long off = k->pos;
    uint64_t start = k->pos / KVMSAVE_IMAGE_ALIGN * KVMSAVE_IMAGE_ALIGN;

    if (k->pos == k->tr->dataEnd) {
        if (k->chunkIndex != k->tr->chunks ||
            k->streamBytes != k->tr->streamBytes) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("save image '%s' is corrupt: trailer records %llu chunks and %llu bytes, the image holds %llu chunks and %llu bytes"),
                           path, (unsigned long long) k->tr->chunks,
                           (unsigned long long) k->tr->streamBytes,
                           idx, (unsigned long long) k->streamBytes);
            return -1;
        }
        return 0;
    }
    /* The header may straddle a block boundary: read two. The data end
     * lies a trailer before the aligned end of the file, so both exist. */
    if (kvmsaveImageFileRead(k->file, k->peek,
                             MIN(2 * KVMSAVE_IMAGE_ALIGN, k->file->size - start),
                             k->pos + KVMSAVE_IMAGE_CHUNK_HEADER_LEN - start,
                             start, _("chunk header"), off) < 0 ||
        kvmsaveImageChunkCheckHeader(k->peek + (k->pos - start), path, idx, off,
                                     k->tr->dataEnd, k->hdr->streams, ch) < 0)
        return -1;
    return 1;
}


/* Past the chunk whose header is @ch. */
static void
kvmsaveImageChunksSkip(kvmsaveImageChunks *k, const kvmsaveImageChunkHeader *ch)
{
    k->pos += KVMSAVE_IMAGE_CHUNK_HEADER_LEN + ch->stored;
    k->chunkIndex++;
    k->streamBytes += ch->raw;
}


/* Read and kept: the cache may let the pages before @end go, once the
 * other streams' readers are past them too. */
static void
kvmsaveImageChunksDrop(kvmsaveImageChunks *k, uint64_t end)
{
    if (!k->file->direct)
        kvmsaveImageCacheRead(k->cache, MAX(k->stream, 0), end);
}


/* Reader thread: the next chunk (of k->stream, when set), its data read
 * into @c. Returns 1 for a chunk, 0 at the end of the data, -1 with an
 * error reported. */
static int
kvmsaveImageChunksFetch(kvmsaveImageChunks *k, kvmsaveChunk *c)
{
    kvmsaveImageChunkHeader ch;
    uint64_t start;
    uint64_t end;
    bool skipped = false;
    int rc;

    /* A stream's reader checks the others' chunk headers on its way. */
    while ((rc = kvmsaveImageChunksPeek(k, &ch)) > 0 &&
           k->stream >= 0 && ch.stream != k->stream) {
        kvmsaveImageChunksSkip(k, &ch);
        skipped = true;
    }
    /* Past them, so that a stream with few chunks holds no drop back. */
    if (rc == 0 || (rc > 0 && skipped))
        kvmsaveImageChunksDrop(k, k->pos);
    if (rc <= 0)
        return rc;

    /* Straight into the slot's buffer, in whole blocks. */
    start = k->pos / KVMSAVE_IMAGE_ALIGN * KVMSAVE_IMAGE_ALIGN;
    end = VIR_ROUND_UP(k->pos + KVMSAVE_IMAGE_CHUNK_HEADER_LEN + ch.stored,
                       KVMSAVE_IMAGE_ALIGN);
    if (kvmsaveImageFileRead(k->file, c->buf, end - start, end - start, start,
                             _("chunk data"), k->pos) < 0)
        return -1;
    kvmsaveImageChunksDrop(k, end);

    c->index = ch.index;
    c->offset = k->pos;
    c->encoding = ch.encoding;
    c->stream = ch.stream;
    c->rawLen = ch.raw;
    c->storedLen = ch.stored;
    c->crc = ch.crc;
    c->data = c->buf + (k->pos - start) + KVMSAVE_IMAGE_CHUNK_HEADER_LEN;
    c->dataLen = ch.stored;
    kvmsaveImageChunksSkip(k, &ch);
    return 1;
}


static gpointer
kvmsaveImageChunksThread(gpointer opaque)
{
    kvmsaveImageChunks *k = opaque;
    kvmsaveChunk *c;

    while ((c = kvmsaveChunkQueueGetFree(k->queue))) {
        int rc = kvmsaveImageChunksFetch(k, c);

        if (rc <= 0) {
            /* The end, good or bad, travels in order like a chunk. */
            c->end = true;
            if (rc < 0)
                c->err = virErrorCopyNew(virGetLastError());
            virResetLastError();
            kvmsaveChunkQueuePush(k->queue, c);
            break;
        }
        kvmsaveChunkQueuePush(k->queue, c);
        kvmsaveTestChunkDelay();
    }
    return NULL;
}


/* Worker: the data checksum, then the decoding. */
static int
kvmsaveImageChunksDecode(kvmsaveChunk *c, void *opaque)
{
    kvmsaveImageChunks *k = opaque;
    kvmsaveImageChunkHeader ch = {
        .encoding = c->encoding, .stream = c->stream, .index = c->index,
        .stored = c->storedLen, .raw = c->rawLen, .crc = c->crc,
    };

    return kvmsaveImageChunkDecode(&ch, k->file->path, c->offset, c->data,
                                   &c->ctx, &c->out, &c->data, &c->dataLen);
}


/* Reading ended, well (0) or not (-1). */
static int
kvmsaveImageChunksEnded(kvmsaveImageChunks *k)
{
    if (!k->endErr)
        return 0;
    virSetError(k->endErr);
    return -1;
}


static int
kvmsaveImageChunksRead(void *data, const unsigned char **buf, size_t *len)
{
    kvmsaveImageChunks *k = data;
    size_t threads = k->file->threads;
    kvmsaveChunk *c;

    if (k->table) {
        virReportError(VIR_ERR_OPERATION_INVALID,
                       _("save image '%s' is a sparse image, which only QEMU reads, from the file"),
                       k->file->path);
        return -1;
    }
    if (k->ended)
        return kvmsaveImageChunksEnded(k);
    if (!k->queue) {
        /* Read ahead as far as the workers can use, no further. */
        k->queue = kvmsaveChunkQueueNew(MIN(threads + 2, KVMSAVE_IMAGE_SLOTS_MAX),
                                        threads,
                                        KVMSAVE_IMAGE_CHUNK_MAX +
                                        KVMSAVE_IMAGE_CHUNK_HEADER_LEN +
                                        2 * KVMSAVE_IMAGE_ALIGN,
                                        kvmsaveImageChunksDecode,
                                        kvmsaveImageChunkFreeCtx, k);
        k->thread = g_thread_new("kvmsave-read", kvmsaveImageChunksThread, k);
    }
    if (k->held)
        kvmsaveChunkQueueRelease(k->queue, g_steal_pointer(&k->held));

    if (!(c = kvmsaveChunkQueuePop(k->queue))) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("reading save image '%s' stopped"), k->file->path);
        return -1;
    }
    if (c->end || c->err) {
        k->ended = true;
        k->endErr = g_steal_pointer(&c->err);
        kvmsaveChunkQueueRelease(k->queue, c);
        kvmsaveImageChunksStop(k);
        return kvmsaveImageChunksEnded(k);
    }
    k->held = c;
    k->lastEncoding = c->encoding;
    k->lastStream = c->stream;
    k->lastLen = c->dataLen;
    *buf = c->data;
    *len = c->dataLen;
    return 1;
}


static size_t
kvmsaveImageChunksLastProgress(void *data)
{
    kvmsaveImageChunks *k = data;

    return k->lastLen;
}


/* A sparse image again: the stream at the same offset (QEMU's stream
 * records offsets in the file), every block checked. */
static int
kvmsaveImageChunksRewriteMapped(kvmsaveImageChunks *k, kvmsaveImageHeader *hdr,
                                int fd, const char *path)
{
    g_autoptr(kvmsaveImageWriter) writer = kvmsaveImageWriterNew(fd, path, false);

    hdr->mappedOffset = k->hdr->mappedOffset;
    hdr->mappedBlock = k->hdr->mappedBlock;
    hdr->mappedChannels = k->hdr->mappedChannels;
    if (kvmsaveImageWriteHeader(writer, hdr) < 0 ||
        kvmsaveMappedCopy(k->file->fd, k->file->path, k->file->direct,
                          fd, path, k->hdr, k->tr->streamBytes,
                          k->table) < 0 ||
        kvmsaveImageWriterFinishMapped(writer, hdr, k->tr->streamBytes,
                                       k->table) < 0)
        return -1;
    return 0;
}


/* A kvmsave image again: the header with @xml and @running, every chunk
 * copied after being checked, in the encoding it had. */
static int
kvmsaveImageChunksRewrite(void *data, int fd, const char *path,
                          const char *xml, bool running)
{
    kvmsaveImageChunks *k = data;
    const kvmsaveImageHeader *old = k->hdr;
    g_autoptr(kvmsaveImageHeader) hdr = kvmsaveImageHeaderNew();
    g_autoptr(kvmsaveImageWriter) writer = NULL;
    g_autofree unsigned char *index = NULL;
    size_t indexLen = 0;
    const unsigned char *buf;
    size_t len;
    int rc;

    memcpy(hdr->uuid, old->uuid, VIR_UUID_BUFLEN);
    hdr->created = old->created;
    hdr->chunkSize = old->chunkSize;
    hdr->streams = old->streams;
    hdr->flags = old->flags & ~KVMSAVE_IMAGE_FLAG_RUNNING;
    if (running)
        hdr->flags |= KVMSAVE_IMAGE_FLAG_RUNNING;
    hdr->xml = g_strdup(xml);
    hdr->name = g_strdup(old->name);
    hdr->qemuVersion = g_strdup(old->qemuVersion);
    hdr->machine = g_strdup(old->machine);
    hdr->hostCPU = g_strdup(old->hostCPU);
    hdr->disks = g_strdup(old->disks);
    hdr->producer = g_strdup(old->producer);
    if (k->table)
        return kvmsaveImageChunksRewriteMapped(k, hdr, fd, path);

    /* The stream is the same, so is the page index but for where the
     * chunks encoded again lie: its directory is pointed at them. */
    hdr->indexReserve = old->indexReserve;
    index = kvmsaveImageIndexKeep(k->file, old, k->tr, &indexLen);

    writer = kvmsaveImageWriterNew(fd, path, false);
    if (kvmsaveImageWriteHeader(writer, hdr) < 0)
        return -1;
    if (index)
        kvmsaveImageWriterRecordChunks(writer);
    while ((rc = kvmsaveImageChunksRead(k, &buf, &len)) > 0) {
        kvmsaveImageWriterSetFormat(writer, k->lastEncoding);
        if (kvmsaveImageWriteChunk(writer, k->lastStream, buf, len) < 0)
            return -1;
    }
    if (rc < 0 ||
        (index && kvmsaveImageIndexRelocate(writer, hdr, &index, indexLen) < 0) ||
        kvmsaveImageWriterFinish(writer) < 0)
        return -1;
    return 0;
}


static const kvmsaveImageBackend kvmsaveImageChunksBackend = {
    .checksummed = true,
    .probe = NULL,
    .open = kvmsaveImageChunksOpen,
    .free = kvmsaveImageChunksFree,
    .read = kvmsaveImageChunksRead,
    .lastProgress = kvmsaveImageChunksLastProgress,
    .rewrite = kvmsaveImageChunksRewrite,
};


/* The first backend whose probe accepts the file. */
static const kvmsaveImageBackend *const kvmsaveImageBackends[] = {
    &kvmsaveStockBackend,
    &kvmsaveImageChunksBackend,
};


void
kvmsaveImageReaderFree(kvmsaveImageReader *r)
{
    if (!r)
        return;
    if (r->backend)
        r->backend->free(r->data);
    kvmsaveImageCacheUnref(r->streamsCache);
    VIR_FORCE_CLOSE(r->file.fd);
    if (!r->hdrBorrowed)
        kvmsaveImageHeaderFree(r->hdr);
    g_free(r->file.path);
    g_free(r);
}


/* Open @path into @f, with O_DIRECT as @io asks. */
static int
kvmsaveImageFileOpen(kvmsaveImageFile *f, const char *path, kvmsaveImageIO io)
{
    int oflags = O_RDONLY | O_CLOEXEC | O_NOCTTY;
    struct stat sb;

    f->path = g_strdup(path);
    f->direct = io != KVMSAVE_IMAGE_IO_CACHED;
    f->directOptional = io == KVMSAVE_IMAGE_IO_STREAM;
    f->threads = kvmsaveChunkQueueDefaultWorkers();
    f->fd = open(path, oflags | (f->direct ? O_DIRECT : 0));
    if (f->fd < 0 && errno == EINVAL && f->directOptional) {
        /* No direct I/O on this file system (tmpfs before Linux 6.6). */
        f->direct = false;
        f->fd = open(path, oflags);
    }
    if (f->fd < 0) {
        virReportSystemError(errno, _("cannot open save image '%s'%s"), path,
                             io == KVMSAVE_IMAGE_IO_DIRECT ?
                             _(" for direct I/O (bypass cache)") : "");
        return -1;
    }
    if (fstat(f->fd, &sb) < 0) {
        virReportSystemError(errno, _("cannot stat save image '%s'"), path);
        return -1;
    }
    if (!S_ISREG(sb.st_mode)) {
        virReportError(VIR_ERR_OPERATION_INVALID,
                       _("'%s' is not a regular file, so not a save image"), path);
        return -1;
    }
    f->size = sb.st_size;
    f->mtime = sb.st_mtime;
#ifdef HAVE_POSIX_FADVISE
    ignore_value(posix_fadvise(f->fd, 0, 0, POSIX_FADV_SEQUENTIAL));
#endif
    return 0;
}


kvmsaveImageReader *
kvmsaveImageOpen(const char *path, kvmsaveImageIO io)
{
    g_autoptr(kvmsaveImageReader) r = g_new0(kvmsaveImageReader, 1);
    g_autofree unsigned char *first = NULL;
    uint64_t start;
    size_t len;
    size_t i;

    r->file.fd = -1;
    if (kvmsaveImageFileOpen(&r->file, path, io) < 0)
        return NULL;
    if (r->file.size < KVMSAVE_IMAGE_MAGIC_LEN) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("'%s' is not a kvmsave save image (only %llu bytes long)"),
                       path, (unsigned long long) r->file.size);
        return NULL;
    }
    /* The first block: the format's magic, usually its whole header. */
    len = MIN(r->file.size, KVMSAVE_IMAGE_ALIGN);
    if (!(first = kvmsaveImageFileReadPart(&r->file, 0, len, _("header"), &start)))
        return NULL;

    for (i = 0; i < G_N_ELEMENTS(kvmsaveImageBackends); i++) {
        const kvmsaveImageBackend *backend = kvmsaveImageBackends[i];

        if (backend->probe && !backend->probe(first, len))
            continue;
        if (!(r->data = backend->open(&r->file, first, len, &r->hdr, &r->tr)))
            return NULL;
        r->backend = backend;
        break;
    }
    return g_steal_pointer(&r);
}


kvmsaveImageReader *
kvmsaveImageReaderOpenStream(kvmsaveImageReader *r, unsigned int stream)
{
    g_autoptr(kvmsaveImageReader) s = NULL;
    g_autofree char *self = kvmsaveImageReaderSelfPath(r);

    if (r->backend != &kvmsaveImageChunksBackend) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("save image '%s' of stock libvirt holds one stream, not several"),
                       r->file.path);
        return NULL;
    }
    if (stream >= r->hdr->streams) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("save image '%s' has no stream %u"),
                       r->file.path, stream);
        return NULL;
    }
    s = g_new0(kvmsaveImageReader, 1);

    /* The same file (not the same path) is opened again, as the image
     * is: directly where it can be. Each stream's reader then also reads
     * the others' chunk headers from the disk, a block or two per chunk,
     * but no byte passes through the page cache: a restore's readers
     * spent twice the system time reading through it, on CPUs that
     * QEMU's first touch of guest memory needs (docs/performance.md). A
     * file of its own lets a reader fall back to the cache alone. */
    s->file.direct = r->file.direct;
    s->file.directOptional = r->file.directOptional;
    s->file.fd = open(self, O_RDONLY | O_CLOEXEC | O_NOCTTY |
                      (s->file.direct ? O_DIRECT : 0));
    if (s->file.fd < 0) {
        virReportSystemError(errno, _("cannot read save image '%s'"),
                             r->file.path);
        return NULL;
    }
    s->file.path = g_strdup(r->file.path);
    s->file.size = r->file.size;
    s->file.mtime = r->file.mtime;
    s->file.threads = 1;
    s->hdr = r->hdr;
    s->hdrBorrowed = true;
    s->tr = r->tr;
    s->backend = r->backend;
    if (!r->streamsCache &&
        !(r->streamsCache = kvmsaveImageCacheNew(s->file.fd, r->hdr->streams,
                                                 KVMSAVE_IMAGE_ALIGN)))
        return NULL;
    s->data = kvmsaveImageChunksNew(&s->file, s->hdr, &s->tr, stream,
                                    kvmsaveImageCacheRef(r->streamsCache));
    return g_steal_pointer(&s);
}


void
kvmsaveImageReaderSetThreads(kvmsaveImageReader *r, size_t threads)
{
    if (threads > 0)
        r->file.threads = threads;
}


const kvmsaveImageHeader *
kvmsaveImageReaderHeader(kvmsaveImageReader *r)
{
    return r->hdr;
}


const kvmsaveImageTrailer *
kvmsaveImageReaderTrailer(kvmsaveImageReader *r)
{
    return &r->tr;
}


void *
kvmsaveImageReaderBackendData(kvmsaveImageReader *r,
                              const kvmsaveImageBackend *backend)
{
    return r->backend == backend ? r->data : NULL;
}


int
kvmsaveImageReadChunk(kvmsaveImageReader *r,
                      const unsigned char **data, size_t *len)
{
    int rc = r->backend->read(r->data, data, len);

    if (rc > 0)
        r->streamRead += *len;
    return rc;
}


size_t
kvmsaveImageReaderLastProgress(kvmsaveImageReader *r)
{
    return r->backend->lastProgress(r->data);
}


uint64_t
kvmsaveImageReaderStreamRead(kvmsaveImageReader *r)
{
    return r->streamRead;
}


bool
kvmsaveImageReaderChecksummed(kvmsaveImageReader *r)
{
    return r->backend->checksummed;
}


const char *
kvmsaveImageReaderCookie(kvmsaveImageReader *r)
{
    return r->backend->cookie ? r->backend->cookie(r->data) : NULL;
}


int
kvmsaveImageReaderRewrite(kvmsaveImageReader *r, int fd, const char *path,
                          const char *xml, bool running)
{
    return r->backend->rewrite(r->data, fd, path, xml, running);
}


unsigned int
kvmsaveImageReaderLastStream(kvmsaveImageReader *r)
{
    kvmsaveImageChunks *k = kvmsaveImageReaderBackendData(r, &kvmsaveImageChunksBackend);

    return k ? k->lastStream : 0;
}


const uint32_t *
kvmsaveImageReaderMappedTable(kvmsaveImageReader *r)
{
    kvmsaveImageChunks *k = kvmsaveImageReaderBackendData(r, &kvmsaveImageChunksBackend);

    return k ? k->table : NULL;
}


char *
kvmsaveImageReaderSelfPath(kvmsaveImageReader *r)
{
    return g_strdup_printf("/proc/self/fd/%d", r->file.fd);
}


int
kvmsaveImageReaderPageIndex(kvmsaveImageReader *r, unsigned char **buf,
                            size_t *len)
{
    *buf = NULL;
    *len = 0;
    if (r->backend != &kvmsaveImageChunksBackend)
        return 0;
    return kvmsaveImageFilePageIndex(&r->file, r->hdr, buf, len);
}


int
kvmsaveImageFilePageIndex(kvmsaveImageFile *f, const kvmsaveImageHeader *hdr,
                          unsigned char **buf, size_t *len)
{
    g_autofree unsigned char *part = NULL;
    uint64_t start;
    uint32_t crc;

    *buf = NULL;
    *len = 0;
    if (hdr->indexLen == 0)
        return 0;
    if (!(part = kvmsaveImageFileReadPart(f, hdr->indexOffset, hdr->indexLen,
                                          _("page index"), &start)))
        return -1;
    /* The decoder checked that the index begins on a block boundary, so
     * where the part read begins: start == hdr->indexOffset. */
    crc = kvmsaveCrc32c(0, part, hdr->indexLen);
    if (kvmsaveImageChecksumBad(hdr->indexCrc, crc)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: page index checksum mismatch (stored %08x, computed %08x)"),
                       f->path, hdr->indexCrc, crc);
        return -1;
    }
    *buf = g_steal_pointer(&part);
    *len = hdr->indexLen;
    return 1;
}


int
kvmsaveImageVerify(kvmsaveImageReader *r)
{
    const uint32_t *table = kvmsaveImageReaderMappedTable(r);
    const unsigned char *data;
    size_t len;
    int rc;

    if (table)
        return kvmsaveMappedVerify(r->file.fd, r->file.path, r->file.direct,
                                   r->hdr, r->tr.streamBytes, table,
                                   r->file.threads);
    /* An index is proven against the stream as the chunks are read. */
    if ((rc = kvmsaveImageIndexVerify(r, r->file.path)) != 0)
        return rc < 0 ? -1 : 0;
    while ((rc = kvmsaveImageReadChunk(r, &data, &len)) > 0)
        ;
    return rc;
}
