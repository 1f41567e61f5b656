/*
 * kvmsave_imagewriter.c: writing a kvmsave save image
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <fcntl.h>
#include <unistd.h>
#include <zstd.h>

#include "kvmsave_imagewriterpriv.h"
#include "kvmsave_chunkq.h"
#include "kvmsave_mapped.h"
#include "kvmsave_util.h"
#include "virerror.h"
#include "virfile.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

/* The write buffer (header, trailer, O_DIRECT data): a multiple of the
 * alignment that holds a whole chunk. */
#define KVMSAVE_IMAGE_BUFSIZE (8 * 1024 * 1024)
/* Chunks in flight between the stream and the disk, each up to two
 * buffers of a chunk (raw and encoded): this bounds the memory a save
 * uses, whatever the guest's size and the CPU count. */
#define KVMSAVE_IMAGE_SLOTS_MAX 4
/* Preallocation steps of the file being written. */
#define KVMSAVE_IMAGE_PREALLOC_STEP (256 * 1024 * 1024)
/* zstd level: each chunk is a frame of its own, which costs some ratio
 * against one long stream; level 4 wins it back, so a zstd image is no
 * larger than stock's (one stream at zstd's default, 3), and still
 * compresses at about 1.5 GB/s a core. */
#define KVMSAVE_IMAGE_ZSTD_LEVEL 4

struct _kvmsaveImageWriter {
    int format;                 /* KVMSAVE_IMAGE_ENCODING_* for what follows */
    int fd;
    char *path;
    bool direct;
    size_t threads;             /* encoding workers */
    unsigned char *buf;         /* aligned: header, trailer, O_DIRECT data */
    size_t fill;
    uint64_t offset;            /* file offset of buf[0] */
    uint64_t released;          /* written back and dropped from the cache */
    uint64_t allocated;         /* preallocated up to here */
    bool noPrealloc;            /* the filesystem cannot, or is full */
    uint64_t chunks;            /* queued so far */
    uint64_t streamBytes;
    uint32_t headerCrc;
    uint32_t tableCrc;          /* of a sparse image */
    size_t headerLen;           /* as written first */
    unsigned char *newHeader;   /* to write over it at Finish (aligned) */
    GArray *chunkOffsets;       /* uint64_t: where each chunk went, if asked */

    GMutex lock;                /* kvmsaveImageWriteChunk from several threads */
    kvmsaveChunkQueue *queue;
    kvmsaveChunk *filling;      /* handed to the caller, not queued yet */
    GThread *thread;
    virErrorPtr err;            /* why the writer thread stopped */
};


kvmsaveImageWriter *
kvmsaveImageWriterNew(int fd, const char *path, bool direct)
{
    kvmsaveImageWriter *w = g_new0(kvmsaveImageWriter, 1);

    w->fd = fd;
    w->path = g_strdup(path);
    w->direct = direct;
    w->threads = kvmsaveChunkQueueDefaultWorkers();
    w->buf = kvmsaveAlignedAlloc(KVMSAVE_IMAGE_BUFSIZE);
    g_mutex_init(&w->lock);
    return w;
}


void
kvmsaveImageWriterFree(kvmsaveImageWriter *w)
{
    if (!w)
        return;
    kvmsaveChunkQueueStop(&w->queue, &w->thread);
    virFreeError(w->err);
    g_mutex_clear(&w->lock);
    free(w->buf);
    free(w->newHeader);
    if (w->chunkOffsets)
        g_array_free(w->chunkOffsets, TRUE);
    g_free(w->path);
    g_free(w);
}


void
kvmsaveImageWriterSetFormat(kvmsaveImageWriter *w, int format)
{
    w->format = format;
}


void
kvmsaveImageWriterSetThreads(kvmsaveImageWriter *w, size_t threads)
{
    if (threads > 0)
        w->threads = threads;
}


/* A save must not push the host's page cache out with pages nobody will
 * read again: start writeback of the block just written, wait for the one
 * before it and drop it from the cache. Writeback also runs alongside the
 * stream this way, so the final fdatasync has little left to do. Direct
 * I/O bypasses the cache already. */
static void
kvmsaveImageWriterRelease(kvmsaveImageWriter *w, uint64_t off, size_t len)
{
    if (w->direct || len == 0)
        return;
    ignore_value(sync_file_range(w->fd, off, len, SYNC_FILE_RANGE_WRITE));
    if (w->released < off) {
        uint64_t prev = w->released;

        ignore_value(sync_file_range(w->fd, prev, off - prev,
                                     SYNC_FILE_RANGE_WAIT_BEFORE |
                                     SYNC_FILE_RANGE_WRITE |
                                     SYNC_FILE_RANGE_WAIT_AFTER));
#ifdef HAVE_POSIX_FADVISE
        ignore_value(posix_fadvise(w->fd, prev, off - prev, POSIX_FADV_DONTNEED));
#endif
        w->released = off;
    }
}


static int
kvmsaveImageWriterPwrite(kvmsaveImageWriter *w, const void *data, size_t len, uint64_t off)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = pwrite(w->fd, (const char *) data + done, len - done,
                           off + done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            kvmsaveReportWriteError(n == 0 ? ENOSPC : errno, w->path);
            return -1;
        }
        done += n;
    }
    return 0;
}


static int
kvmsaveImageWriterFlush(kvmsaveImageWriter *w)
{
    if (kvmsaveImageWriterPwrite(w, w->buf, w->fill, w->offset) < 0)
        return -1;
    kvmsaveImageWriterRelease(w, w->offset, w->fill);
    w->offset += w->fill;
    w->fill = 0;
    return 0;
}


static int
kvmsaveImageWriterAppend(kvmsaveImageWriter *w, const void *data, size_t len)
{
    const unsigned char *p = data;

    while (len > 0) {
        size_t n = MIN(len, KVMSAVE_IMAGE_BUFSIZE - w->fill);

        if (p)
            memcpy(w->buf + w->fill, p, n);
        else
            memset(w->buf + w->fill, 0, n);
        w->fill += n;
        len -= n;
        if (p)
            p += n;
        if (w->fill == KVMSAVE_IMAGE_BUFSIZE && kvmsaveImageWriterFlush(w) < 0)
            return -1;
    }
    return 0;
}


/* Allocating the file's blocks ahead in large steps, rather than as
 * writeback finds them, measured about a third faster on ext4 (600 MB:
 * 0.35 s -> 0.23 s with fdatasync). Finish cuts the file to its size. A
 * filesystem that cannot, or a step that does not fit in what is left,
 * just ends preallocation: writing finds the real end of the disk. */
static void
kvmsaveImageWriterPreallocate(kvmsaveImageWriter *w, uint64_t end)
{
    if (w->noPrealloc || end <= w->allocated)
        return;
    if (fallocate(w->fd, 0, w->allocated, KVMSAVE_IMAGE_PREALLOC_STEP) < 0) {
        w->noPrealloc = true;
        return;
    }
    w->allocated += KVMSAVE_IMAGE_PREALLOC_STEP;
}


/* Through the page cache, chunks go to the file from where they are:
 * only O_DIRECT needs them gathered into the aligned buffer. */
static int
kvmsaveImageWriterPutChunk(kvmsaveImageWriter *w, const kvmsaveChunk *c)
{
    if (w->chunkOffsets) {
        uint64_t off = w->offset + w->fill - w->headerLen;

        g_array_append_val(w->chunkOffsets, off);
    }
    kvmsaveImageWriterPreallocate(w, w->offset + w->fill + KVMSAVE_IMAGE_CHUNK_HEADER_LEN +
                      c->dataLen);
    if (w->direct)
        return kvmsaveImageWriterAppend(w, c->head, KVMSAVE_IMAGE_CHUNK_HEADER_LEN) < 0 ||
            kvmsaveImageWriterAppend(w, c->data, c->dataLen) < 0 ? -1 : 0;

    if (w->fill > 0 && kvmsaveImageWriterFlush(w) < 0)
        return -1;
    if (kvmsaveImageWriterPwrite(w, c->head, KVMSAVE_IMAGE_CHUNK_HEADER_LEN, w->offset) < 0 ||
        kvmsaveImageWriterPwrite(w, c->data, c->dataLen,
                     w->offset + KVMSAVE_IMAGE_CHUNK_HEADER_LEN) < 0)
        return -1;
    kvmsaveImageWriterRelease(w, w->offset,
                              KVMSAVE_IMAGE_CHUNK_HEADER_LEN + c->dataLen);
    w->offset += KVMSAVE_IMAGE_CHUNK_HEADER_LEN + c->dataLen;
    return 0;
}


static void
kvmsaveImageWriterFreeCtx(void *ctx)
{
    ZSTD_freeCCtx(ctx);
}


/* Worker: compress when asked and worth it, checksum, build the header. */
static int
kvmsaveImageWriterEncodeChunk(kvmsaveChunk *c, void *opaque)
{
    kvmsaveImageWriter *w = opaque;
    uint32_t want = c->encoding;
    kvmsaveImageChunkHeader ch;

    c->encoding = KVMSAVE_IMAGE_ENCODING_RAW;
    c->data = c->buf;
    c->dataLen = c->len;

    if (want == KVMSAVE_IMAGE_ENCODING_ZSTD && c->len > 0) {
        size_t n;

        if (!c->ctx) {
            if (!(c->ctx = ZSTD_createCCtx()))
                abort(); /* out of memory, as g_malloc */
            ZSTD_CCtx_setParameter(c->ctx, ZSTD_c_compressionLevel,
                                   KVMSAVE_IMAGE_ZSTD_LEVEL);
            /* A checksum of the decoded data in each frame, verified on
             * read: it also covers the decoder itself. */
            ZSTD_CCtx_setParameter(c->ctx, ZSTD_c_checksumFlag, 1);
        }
        if (!c->out) {
            c->outSize = ZSTD_compressBound(KVMSAVE_IMAGE_CHUNK_MAX);
            c->out = g_malloc(c->outSize);
        }
        n = ZSTD_compress2(c->ctx, c->out, c->outSize, c->buf, c->len);
        if (ZSTD_isError(n)) {
            virReportError(VIR_ERR_INTERNAL_ERROR,
                           _("cannot compress chunk %llu of save image '%s': %s"),
                           (unsigned long long) c->seq, w->path,
                           ZSTD_getErrorName(n));
            return -1;
        }
        /* Incompressible data (random pages) is kept as it is. */
        if (n < c->len) {
            c->encoding = KVMSAVE_IMAGE_ENCODING_ZSTD;
            c->data = c->out;
            c->dataLen = n;
        }
    }

    ch.encoding = c->encoding;
    ch.stream = c->stream;
    ch.index = c->seq;
    ch.stored = c->dataLen;
    ch.raw = c->len;
    ch.crc = kvmsaveCrc32c(0, c->data, c->dataLen);
    kvmsaveImageChunkHeaderEncode(&ch, c->head);
    return 0;
}


static gpointer
kvmsaveImageWriterThread(gpointer opaque)
{
    kvmsaveImageWriter *w = opaque;
    kvmsaveChunk *c;

    while ((c = kvmsaveChunkQueuePop(w->queue))) {
        bool end = c->end;

        if (c->err)
            virSetError(c->err);
        if (c->err || (!end && kvmsaveImageWriterPutChunk(w, c) < 0)) {
            w->err = virErrorCopyNew(virGetLastError());
            kvmsaveChunkQueueRelease(w->queue, c);
            /* The caller's next call fails with this error. */
            kvmsaveChunkQueueAbort(w->queue);
            break;
        }
        kvmsaveChunkQueueRelease(w->queue, c);
        if (end)
            break;
        kvmsaveTestChunkDelay();
    }
    return NULL;
}


/* The writer thread stopped on an error: make it the caller's. */
static int
kvmsaveImageWriterFailed(kvmsaveImageWriter *w)
{
    if (w->err)
        virSetError(w->err);
    else
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("writing save image '%s' stopped"), w->path);
    return -1;
}


int
kvmsaveImageWriteHeader(kvmsaveImageWriter *w, kvmsaveImageHeader *hdr)
{
    g_autofree unsigned char *buf = NULL;
    size_t len;

    if (kvmsaveImageHeaderEncode(hdr, &buf, &len) < 0)
        return -1;
    w->headerCrc = hdr->crc;
    w->headerLen = len;
    return kvmsaveImageWriterAppend(w, buf, len);
}


int
kvmsaveImageWriterReplaceHeader(kvmsaveImageWriter *w,
                                kvmsaveImageHeader *hdr)
{
    g_autofree unsigned char *buf = NULL;
    size_t len;

    if (kvmsaveImageHeaderEncode(hdr, &buf, &len) < 0)
        return -1;
    if (len != w->headerLen) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("the header of save image '%s' changed size (%zu to %zu bytes)"),
                       w->path, w->headerLen, len);
        return -1;
    }
    free(w->newHeader);
    w->newHeader = kvmsaveAlignedAlloc(len);
    memcpy(w->newHeader, buf, len);
    w->headerCrc = hdr->crc;
    return 0;
}


/* The header's first bytes may be on disk already, the rest still in the
 * buffer (O_DIRECT flushes it only when full). */
static int
kvmsaveImageWriterPutNewHeader(kvmsaveImageWriter *w)
{
    size_t onDisk = MIN(w->offset, w->headerLen);

    if (onDisk > 0 && kvmsaveImageWriterPwrite(w, w->newHeader, onDisk, 0) < 0)
        return -1;
    if (w->headerLen > onDisk)
        memcpy(w->buf, w->newHeader + onDisk, w->headerLen - onDisk);
    return 0;
}


unsigned char *
kvmsaveImageWriterNextBuffer(kvmsaveImageWriter *w)
{
    if (!w->queue) {
        /* Enough slots that the workers, the writer and the caller all
         * have one; no more, to keep memory bounded. */
        w->queue = kvmsaveChunkQueueNew(MIN(w->threads + 2, KVMSAVE_IMAGE_SLOTS_MAX),
                                        w->threads,
                                        KVMSAVE_IMAGE_CHUNK_MAX,
                                        kvmsaveImageWriterEncodeChunk,
                                        kvmsaveImageWriterFreeCtx, w);
        w->thread = g_thread_new("kvmsave-write", kvmsaveImageWriterThread, w);
    }
    if (!w->filling && !(w->filling = kvmsaveChunkQueueGetFree(w->queue))) {
        kvmsaveImageWriterFailed(w);
        return NULL;
    }
    return w->filling->buf;
}


/* Whether a chunk of @len bytes of stream @stream can be queued. */
static bool
kvmsaveImageWriterChunkFits(kvmsaveImageWriter *w, size_t len,
                            unsigned int stream)
{
    if (len > KVMSAVE_IMAGE_CHUNK_MAX || stream >= KVMSAVE_IMAGE_STREAMS_MAX) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("cannot queue a chunk of %zu bytes for save image '%s'"),
                       len, w->path);
        return false;
    }
    return true;
}


/* Queue the first @len bytes of the buffer being filled as the next chunk,
 * of stream @stream. */
static int
kvmsaveImageWriterQueueStream(kvmsaveImageWriter *w, size_t len, unsigned int stream)
{
    kvmsaveChunk *c;

    if (!kvmsaveImageWriterChunkFits(w, len, stream))
        return -1;
    if (!(c = g_steal_pointer(&w->filling))) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("cannot queue a chunk of %zu bytes for save image '%s': no buffer was taken for it"),
                       len, w->path);
        return -1;
    }
    c->len = len;
    c->encoding = w->format;
    c->stream = stream;
    kvmsaveChunkQueuePush(w->queue, c);
    w->chunks++;
    w->streamBytes += len;
    return 0;
}


int
kvmsaveImageWriterQueue(kvmsaveImageWriter *w, size_t len)
{
    return kvmsaveImageWriterQueueStream(w, len, 0);
}


int
kvmsaveImageWriteChunk(kvmsaveImageWriter *w, unsigned int stream,
                       const void *data, size_t len)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&w->lock);
    unsigned char *buf;

    if (!kvmsaveImageWriterChunkFits(w, len, stream) ||
        !(buf = kvmsaveImageWriterNextBuffer(w)))
        return -1;
    memcpy(buf, data, len);
    return kvmsaveImageWriterQueueStream(w, len, stream);
}


uint64_t
kvmsaveImageWriterStreamBytes(kvmsaveImageWriter *w)
{
    return w->streamBytes;
}


void
kvmsaveImageWriterRecordChunks(kvmsaveImageWriter *w)
{
    if (!w->chunkOffsets)
        w->chunkOffsets = g_array_new(FALSE, FALSE, sizeof(uint64_t));
}


uint64_t *
kvmsaveImageWriterTakeChunkOffsets(kvmsaveImageWriter *w, size_t *n)
{
    GArray *offsets = g_steal_pointer(&w->chunkOffsets);

    *n = 0;
    if (!offsets)
        return NULL;
    *n = offsets->len;
    return (uint64_t *) g_array_free(offsets, FALSE);
}


int
kvmsaveImageWriterDrain(kvmsaveImageWriter *w)
{
    kvmsaveChunk *c;

    if (!w->queue)
        return 0;
    if (!(c = w->filling ? g_steal_pointer(&w->filling) :
          kvmsaveChunkQueueGetFree(w->queue)))
        return kvmsaveImageWriterFailed(w);
    c->end = true;
    kvmsaveChunkQueuePush(w->queue, c);
    g_thread_join(w->thread);
    w->thread = NULL;
    if (w->err)
        return kvmsaveImageWriterFailed(w);
    kvmsaveChunkQueueStop(&w->queue, &w->thread);
    return 0;
}


int
kvmsaveImageWriterFinish(kvmsaveImageWriter *w)
{
    kvmsaveImageTrailer tr = { 0 };
    unsigned char buf[KVMSAVE_IMAGE_TRAILER_LEN];
    uint64_t end;

    /* Everything queued goes to disk first. */
    if (kvmsaveImageWriterDrain(w) < 0)
        return -1;
    if (w->newHeader && kvmsaveImageWriterPutNewHeader(w) < 0)
        return -1;

    tr.chunks = w->chunks;
    tr.streamBytes = w->streamBytes;
    tr.dataEnd = w->offset + w->fill;
    tr.headerCrc = w->headerCrc;
    tr.tableCrc = w->tableCrc;
    tr.completed = g_get_real_time() / G_USEC_PER_SEC;

    end = VIR_ROUND_UP(tr.dataEnd + KVMSAVE_IMAGE_TRAILER_LEN, KVMSAVE_IMAGE_ALIGN);
    if (kvmsaveImageWriterAppend(w, NULL, end - KVMSAVE_IMAGE_TRAILER_LEN - tr.dataEnd) < 0)
        return -1;
    kvmsaveImageTrailerEncode(&tr, buf);
    if (kvmsaveImageWriterAppend(w, buf, sizeof(buf)) < 0 ||
        kvmsaveImageWriterFlush(w) < 0)
        return -1;
    /* The trailer must be the last bytes of the file. */
    if (w->allocated > w->offset && ftruncate(w->fd, w->offset) < 0) {
        virReportSystemError(errno, _("cannot truncate save image '%s'"),
                             w->path);
        return -1;
    }

    if (fdatasync(w->fd) < 0) {
        virReportSystemError(errno, _("cannot flush save image '%s' to disk"),
                             w->path);
        return -1;
    }
#ifdef HAVE_POSIX_FADVISE
    if (!w->direct)
        ignore_value(posix_fadvise(w->fd, 0, 0, POSIX_FADV_DONTNEED));
#endif
    return 0;
}



int
kvmsaveImageWriterFinishMapped(kvmsaveImageWriter *w,
                               const kvmsaveImageHeader *hdr,
                               uint64_t streamBytes, const uint32_t *table)
{
    uint64_t blocks = kvmsaveMappedBlocks(streamBytes, hdr->mappedBlock);
    g_autofree unsigned char *enc = NULL;
    size_t len;

    /* The header, or its end when it is larger than the buffer, is
     * still there (it is at most mappedOffset). */
    if (w->fill > 0 && kvmsaveImageWriterFlush(w) < 0)
        return -1;
    enc = kvmsaveMappedTableEncode(table, blocks, &len);
    w->offset = kvmsaveMappedTableOffset(hdr, streamBytes);
    w->fill = 0;
    w->chunks = blocks;
    w->streamBytes = streamBytes;
    w->tableCrc = kvmsaveCrc32c(0, enc, len);
    if (kvmsaveImageWriterAppend(w, enc, len) < 0)
        return -1;
    return kvmsaveImageWriterFinish(w);
}
