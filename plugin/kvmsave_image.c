/*
 * kvmsave_image.c: the kvmsave save-image format (docs/image-format.md)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "kvmsave_image.h"
#include "kvmsave_chunkq.h"
#include "kvmsave_stock.h"
#include "kvmsave_util.h"
#include "virerror.h"
#include "virfile.h"
#include "virstring.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

/* The write buffer (header, trailer, O_DIRECT data): a multiple of the
 * alignment that holds a whole chunk. */
#define KVMSAVE_IMAGE_BUFSIZE (8 * 1024 * 1024)
/* Chunks in flight between the stream and the disk, each up to two
 * buffers of a chunk (raw and encoded): this bounds the memory a save or
 * restore uses, whatever the guest's size and the CPU count. */
#define KVMSAVE_IMAGE_SLOTS_MAX 4
/* Preallocation steps of the file being written. */
#define KVMSAVE_IMAGE_PREALLOC_STEP (256 * 1024 * 1024)


static void
putLE16(unsigned char *p, uint16_t v)
{
    p[0] = v;
    p[1] = v >> 8;
}

static void
putLE32(unsigned char *p, uint32_t v)
{
    putLE16(p, v);
    putLE16(p + 2, v >> 16);
}

static void
putLE64(unsigned char *p, uint64_t v)
{
    putLE32(p, v);
    putLE32(p + 4, v >> 32);
}

static uint16_t
getLE16(const unsigned char *p)
{
    return p[0] | (p[1] << 8);
}

static uint32_t
getLE32(const unsigned char *p)
{
    return getLE16(p) | ((uint32_t) getLE16(p + 2) << 16);
}

static uint64_t
getLE64(const unsigned char *p)
{
    return getLE32(p) | ((uint64_t) getLE32(p + 4) << 32);
}

static size_t
alignUp(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}


static const char *const kvmsaveImageFormatNames[] = {
    [KVMSAVE_IMAGE_ENCODING_RAW] = "raw",
    [KVMSAVE_IMAGE_ENCODING_ZSTD] = "zstd",
};


int
kvmsaveImageFormatFromString(const char *name)
{
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(kvmsaveImageFormatNames); i++) {
        if (STREQ_NULLABLE(name, kvmsaveImageFormatNames[i]))
            return i;
    }
    return -1;
}


const char *
kvmsaveImageFormatToString(int format)
{
    if (format < 0 || format >= G_N_ELEMENTS(kvmsaveImageFormatNames))
        return NULL;
    return kvmsaveImageFormatNames[format];
}


bool kvmsaveImageIgnoreChecksums;

/* A stored checksum that does not match the computed one. */
static bool
crcMismatch(uint32_t stored, uint32_t computed)
{
    return stored != computed && !kvmsaveImageIgnoreChecksums;
}


/* zstd level: its fastest setting still shrinks zero and text pages a lot
 * and keeps up with the disk on one core. */
#define KVMSAVE_IMAGE_ZSTD_LEVEL 1


kvmsaveImageHeader *
kvmsaveImageHeaderNew(void)
{
    kvmsaveImageHeader *hdr = g_new0(kvmsaveImageHeader, 1);

    hdr->major = KVMSAVE_IMAGE_MAJOR;
    hdr->minor = KVMSAVE_IMAGE_MINOR;
    hdr->chunkSize = KVMSAVE_IMAGE_CHUNK_SIZE;
    hdr->streams = 1;
    return hdr;
}


void
kvmsaveImageHeaderFree(kvmsaveImageHeader *hdr)
{
    if (!hdr)
        return;
    g_free(hdr->xml);
    g_free(hdr->name);
    g_free(hdr->qemuVersion);
    g_free(hdr->machine);
    g_free(hdr->hostCPU);
    g_free(hdr->producer);
    g_free(hdr->disks);
    g_free(hdr);
}


/* The header's string fields, in the order they are written. */
static char **
headerField(kvmsaveImageHeader *hdr, unsigned int tag)
{
    switch ((kvmsaveImageFieldTag) tag) {
    case KVMSAVE_IMAGE_FIELD_XML: return &hdr->xml;
    case KVMSAVE_IMAGE_FIELD_NAME: return &hdr->name;
    case KVMSAVE_IMAGE_FIELD_QEMU_VERSION: return &hdr->qemuVersion;
    case KVMSAVE_IMAGE_FIELD_MACHINE: return &hdr->machine;
    case KVMSAVE_IMAGE_FIELD_HOST_CPU: return &hdr->hostCPU;
    case KVMSAVE_IMAGE_FIELD_PRODUCER: return &hdr->producer;
    case KVMSAVE_IMAGE_FIELD_STREAMS: break; /* a number, see below */
    case KVMSAVE_IMAGE_FIELD_DISKS: return &hdr->disks;
    }
    return NULL;
}
#define KVMSAVE_IMAGE_FIELD_LAST KVMSAVE_IMAGE_FIELD_DISKS


static char *
headerFieldValue(kvmsaveImageHeader *hdr, unsigned int tag, char *streams)
{
    char **field;

    if (tag == KVMSAVE_IMAGE_FIELD_STREAMS)
        return streams;
    field = headerField(hdr, tag);
    return field ? *field : NULL;
}


/* The STREAMS field: a decimal count from 2 to KVMSAVE_IMAGE_STREAMS_MAX. */
static int
headerParseStreams(const unsigned char *val, size_t len, const char *what,
                   uint32_t *streams)
{
    g_autofree char *str = g_strndup((const char *) val, len);
    unsigned int n;

    if (virStrToLong_uip(str, NULL, 10, &n) < 0 ||
        n < 2 || n > KVMSAVE_IMAGE_STREAMS_MAX) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' has a corrupt header: invalid stream count '%s'"),
                       what, str);
        return -1;
    }
    *streams = n;
    return 0;
}


int
kvmsaveImageHeaderEncode(kvmsaveImageHeader *hdr,
                         unsigned char **buf, size_t *len)
{
    size_t fieldsLen = 0;
    size_t total;
    size_t off;
    unsigned int nfields = 0;
    unsigned int tag;
    g_autofree unsigned char *out = NULL;
    g_autofree char *streams = NULL;

    if (!hdr->xml) {
        virReportError(VIR_ERR_INTERNAL_ERROR, "%s",
                       _("save image header lacks the domain XML"));
        return -1;
    }

    /* Several streams need a reader that knows them: critical. A
     * single-stream image stays readable by kvmsave 1.0 and 1.1. */
    if (hdr->streams > 1)
        streams = g_strdup_printf("%u", hdr->streams);
    for (tag = 1; tag <= KVMSAVE_IMAGE_FIELD_LAST; tag++) {
        char *val = headerFieldValue(hdr, tag, streams);
        if (val) {
            fieldsLen += 8 + alignUp(strlen(val), 8);
            nfields++;
        }
    }
    total = alignUp(KVMSAVE_IMAGE_FIXED_HEADER_LEN + fieldsLen + 4,
                    KVMSAVE_IMAGE_ALIGN);
    if (total > KVMSAVE_IMAGE_HEADER_MAX) {
        virReportError(VIR_ERR_INVALID_ARG,
                       _("domain XML too large for a save image (%zu bytes)"),
                       strlen(hdr->xml));
        return -1;
    }

    out = g_malloc0(total);
    memcpy(out, KVMSAVE_IMAGE_MAGIC, KVMSAVE_IMAGE_MAGIC_LEN);
    putLE16(out + 8, hdr->major);
    putLE16(out + 10, hdr->minor);
    putLE32(out + 12, total);
    memcpy(out + 16, hdr->uuid, VIR_UUID_BUFLEN);
    putLE64(out + 32, hdr->created);
    putLE32(out + 40, hdr->flags);
    putLE32(out + 44, hdr->chunkSize);
    putLE32(out + 48, nfields);
    putLE32(out + 52, fieldsLen);

    off = KVMSAVE_IMAGE_FIXED_HEADER_LEN;
    for (tag = 1; tag <= KVMSAVE_IMAGE_FIELD_LAST; tag++) {
        char *val = headerFieldValue(hdr, tag, streams);
        size_t vlen;

        if (!val)
            continue;
        vlen = strlen(val);
        putLE16(out + off, tag);
        putLE16(out + off + 2, tag == KVMSAVE_IMAGE_FIELD_STREAMS ?
                KVMSAVE_IMAGE_FIELD_CRITICAL : 0);
        putLE32(out + off + 4, vlen);
        memcpy(out + off + 8, val, vlen);
        off += 8 + alignUp(vlen, 8);
    }
    hdr->crc = kvmsaveCrc32c(0, out, off);
    putLE32(out + off, hdr->crc);
    hdr->headerSize = total;

    *len = total;
    *buf = g_steal_pointer(&out);
    return 0;
}


int
kvmsaveImageHeaderDecode(const unsigned char *buf, size_t len,
                         const char *what, size_t *needed,
                         kvmsaveImageHeader **ret)
{
    g_autoptr(kvmsaveImageHeader) hdr = kvmsaveImageHeaderNew();
    uint32_t nfields;
    uint32_t fieldsLen;
    uint32_t crc;
    size_t off;
    size_t end;
    uint32_t i;

    if (len < KVMSAVE_IMAGE_MAGIC_LEN ||
        memcmp(buf, KVMSAVE_IMAGE_MAGIC, KVMSAVE_IMAGE_MAGIC_LEN) != 0) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("'%s' is not a kvmsave save image (bad magic)"), what);
        return -1;
    }
    if (len < KVMSAVE_IMAGE_FIXED_HEADER_LEN) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is truncated inside its header"), what);
        return -1;
    }

    hdr->major = getLE16(buf + 8);
    hdr->minor = getLE16(buf + 10);
    if (hdr->major > KVMSAVE_IMAGE_MAJOR) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' has format version %u.%u, newer than this kvmsave supports (%u.x); upgrade kvmsave to restore it"),
                       what, hdr->major, hdr->minor, KVMSAVE_IMAGE_MAJOR);
        return -1;
    }
    if (hdr->major < 1) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' has an invalid format version %u.%u"),
                       what, hdr->major, hdr->minor);
        return -1;
    }

    hdr->headerSize = getLE32(buf + 12);
    memcpy(hdr->uuid, buf + 16, VIR_UUID_BUFLEN);
    hdr->created = (int64_t) getLE64(buf + 32);
    hdr->flags = getLE32(buf + 40);
    hdr->chunkSize = getLE32(buf + 44);
    nfields = getLE32(buf + 48);
    fieldsLen = getLE32(buf + 52);

    if (hdr->headerSize % KVMSAVE_IMAGE_ALIGN != 0 ||
        hdr->headerSize > KVMSAVE_IMAGE_HEADER_MAX ||
        fieldsLen > hdr->headerSize - KVMSAVE_IMAGE_FIXED_HEADER_LEN - 4 ||
        hdr->headerSize < KVMSAVE_IMAGE_FIXED_HEADER_LEN + 4) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' has a corrupt header (header size %u, field area %u bytes)"),
                       what, hdr->headerSize, fieldsLen);
        return -1;
    }
    end = KVMSAVE_IMAGE_FIXED_HEADER_LEN + fieldsLen;
    if (len < end + 4) {
        if (needed) {
            *needed = hdr->headerSize;
            return 1;
        }
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is truncated inside its header"), what);
        return -1;
    }

    crc = getLE32(buf + end);
    hdr->crc = kvmsaveCrc32c(0, buf, end);
    if (crcMismatch(crc, hdr->crc)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: header checksum mismatch (stored %08x, computed %08x)"),
                       what, crc, hdr->crc);
        return -1;
    }

    off = KVMSAVE_IMAGE_FIXED_HEADER_LEN;
    for (i = 0; i < nfields; i++) {
        unsigned int tag;
        unsigned int fflags;
        uint32_t vlen;
        char **field;

        if (end - off < 8) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("save image '%s' has a corrupt header: field %u overruns the field area"),
                           what, i);
            return -1;
        }
        tag = getLE16(buf + off);
        fflags = getLE16(buf + off + 2);
        vlen = getLE32(buf + off + 4);
        if (vlen > end - off - 8) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("save image '%s' has a corrupt header: field %u (tag %u) overruns the field area"),
                           what, i, tag);
            return -1;
        }
        field = tag >= 1 && tag <= KVMSAVE_IMAGE_FIELD_LAST ?
            headerField(hdr, tag) : NULL;
        if (tag == KVMSAVE_IMAGE_FIELD_STREAMS) {
            if (headerParseStreams(buf + off + 8, vlen, what, &hdr->streams) < 0)
                return -1;
        } else if (field) {
            if (memchr(buf + off + 8, '\0', vlen)) {
                virReportError(VIR_ERR_OPERATION_FAILED,
                               _("save image '%s' has a corrupt header: field tag %u contains a NUL byte"),
                               what, tag);
                return -1;
            }
            g_free(*field);
            *field = g_strndup((const char *) buf + off + 8, vlen);
        } else if (fflags & KVMSAVE_IMAGE_FIELD_CRITICAL) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("save image '%s' needs a newer kvmsave: unknown required header field %u"),
                           what, tag);
            return -1;
        }
        off += 8 + alignUp(vlen, 8);
        if (off > end)
            off = end;
    }

    if (!hdr->xml || !*hdr->xml) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' has no domain XML in its header"), what);
        return -1;
    }

    *ret = g_steal_pointer(&hdr);
    return 0;
}


void
kvmsaveImageTrailerEncode(const kvmsaveImageTrailer *tr,
                          unsigned char buf[KVMSAVE_IMAGE_TRAILER_LEN])
{
    memset(buf, 0, KVMSAVE_IMAGE_TRAILER_LEN);
    memcpy(buf, KVMSAVE_IMAGE_TRAILER_MAGIC, KVMSAVE_IMAGE_MAGIC_LEN);
    putLE64(buf + 8, tr->chunks);
    putLE64(buf + 16, tr->streamBytes);
    putLE64(buf + 24, tr->dataEnd);
    putLE32(buf + 32, tr->headerCrc);
    putLE64(buf + 40, tr->completed);
    putLE32(buf + 60, kvmsaveCrc32c(0, buf, 60));
}


int
kvmsaveImageTrailerDecode(const unsigned char buf[KVMSAVE_IMAGE_TRAILER_LEN],
                          const char *what, kvmsaveImageTrailer *tr)
{
    uint32_t crc;

    if (memcmp(buf, KVMSAVE_IMAGE_TRAILER_MAGIC, KVMSAVE_IMAGE_MAGIC_LEN) != 0) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is incomplete or truncated: it has no trailer (the save did not finish, or the file was cut short)"),
                       what);
        return -1;
    }
    crc = kvmsaveCrc32c(0, buf, 60);
    if (crcMismatch(getLE32(buf + 60), crc)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: trailer checksum mismatch (stored %08x, computed %08x)"),
                       what, getLE32(buf + 60), crc);
        return -1;
    }
    tr->chunks = getLE64(buf + 8);
    tr->streamBytes = getLE64(buf + 16);
    tr->dataEnd = getLE64(buf + 24);
    tr->headerCrc = getLE32(buf + 32);
    tr->completed = (int64_t) getLE64(buf + 40);
    return 0;
}


/* Writing: the caller fills chunk buffers with QEMU's stream; workers
 * encode and checksum them; a writer thread puts them on disk in order. */
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
    size_t headerLen;           /* as written first */
    unsigned char *newHeader;   /* to write over it at Finish (aligned) */

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
writerPwrite(kvmsaveImageWriter *w, const void *data, size_t len, uint64_t off)
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
writerFlush(kvmsaveImageWriter *w)
{
    if (writerPwrite(w, w->buf, w->fill, w->offset) < 0)
        return -1;
    kvmsaveImageWriterRelease(w, w->offset, w->fill);
    w->offset += w->fill;
    w->fill = 0;
    return 0;
}


static int
writerAppend(kvmsaveImageWriter *w, const void *data, size_t len)
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
        if (w->fill == KVMSAVE_IMAGE_BUFSIZE && writerFlush(w) < 0)
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
writerPreallocate(kvmsaveImageWriter *w, uint64_t end)
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
writerPutChunk(kvmsaveImageWriter *w, const kvmsaveChunk *c)
{
    writerPreallocate(w, w->offset + w->fill + KVMSAVE_IMAGE_CHUNK_HEADER_LEN +
                      c->dataLen);
    if (w->direct)
        return writerAppend(w, c->head, KVMSAVE_IMAGE_CHUNK_HEADER_LEN) < 0 ||
            writerAppend(w, c->data, c->dataLen) < 0 ? -1 : 0;

    if (w->fill > 0 && writerFlush(w) < 0)
        return -1;
    if (writerPwrite(w, c->head, KVMSAVE_IMAGE_CHUNK_HEADER_LEN, w->offset) < 0 ||
        writerPwrite(w, c->data, c->dataLen,
                     w->offset + KVMSAVE_IMAGE_CHUNK_HEADER_LEN) < 0)
        return -1;
    kvmsaveImageWriterRelease(w, w->offset,
                              KVMSAVE_IMAGE_CHUNK_HEADER_LEN + c->dataLen);
    w->offset += KVMSAVE_IMAGE_CHUNK_HEADER_LEN + c->dataLen;
    return 0;
}


static void
writerFreeCtx(void *ctx)
{
    ZSTD_freeCCtx(ctx);
}


/* Worker: compress when asked and worth it, checksum, build the header. */
static int
writerEncodeChunk(kvmsaveChunk *c, void *opaque)
{
    kvmsaveImageWriter *w = opaque;
    uint32_t want = c->encoding;

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

    memcpy(c->head, KVMSAVE_IMAGE_CHUNK_MAGIC, 4);
    putLE16(c->head + 4, c->encoding);
    putLE16(c->head + 6, c->stream);
    putLE64(c->head + 8, c->seq);
    putLE32(c->head + 16, c->dataLen);
    putLE32(c->head + 20, c->len);
    putLE32(c->head + 24, kvmsaveCrc32c(0, c->data, c->dataLen));
    putLE32(c->head + 28, kvmsaveCrc32c(0, c->head, 28));
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
        if (c->err || (!end && writerPutChunk(w, c) < 0)) {
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
writerFailed(kvmsaveImageWriter *w)
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
    return writerAppend(w, buf, len);
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
writerPutNewHeader(kvmsaveImageWriter *w)
{
    size_t onDisk = MIN(w->offset, w->headerLen);

    if (onDisk > 0 && writerPwrite(w, w->newHeader, onDisk, 0) < 0)
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
                                        writerEncodeChunk,
                                        writerFreeCtx, w);
        w->thread = g_thread_new("kvmsave-write", kvmsaveImageWriterThread, w);
    }
    if (!w->filling && !(w->filling = kvmsaveChunkQueueGetFree(w->queue))) {
        writerFailed(w);
        return NULL;
    }
    return w->filling->buf;
}


/* Queue the first @len bytes of the buffer being filled as the next chunk,
 * of stream @stream. */
static bool
writerChunkFits(kvmsaveImageWriter *w, size_t len, unsigned int stream)
{
    if (len > KVMSAVE_IMAGE_CHUNK_MAX || stream >= KVMSAVE_IMAGE_STREAMS_MAX) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("cannot queue a chunk of %zu bytes for save image '%s'"),
                       len, w->path);
        return false;
    }
    return true;
}


static int
writerQueue(kvmsaveImageWriter *w, size_t len, unsigned int stream)
{
    kvmsaveChunk *c;

    if (!writerChunkFits(w, len, stream))
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
    return writerQueue(w, len, 0);
}


int
kvmsaveImageWriteChunk(kvmsaveImageWriter *w, unsigned int stream,
                       const void *data, size_t len)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&w->lock);
    unsigned char *buf;

    if (!writerChunkFits(w, len, stream) ||
        !(buf = kvmsaveImageWriterNextBuffer(w)))
        return -1;
    memcpy(buf, data, len);
    return writerQueue(w, len, stream);
}


uint64_t
kvmsaveImageWriterStreamBytes(kvmsaveImageWriter *w)
{
    return w->streamBytes;
}


int
kvmsaveImageWriterFinish(kvmsaveImageWriter *w)
{
    kvmsaveImageTrailer tr = { 0 };
    unsigned char buf[KVMSAVE_IMAGE_TRAILER_LEN];
    uint64_t end;

    /* Everything queued goes to disk first. */
    if (w->queue) {
        kvmsaveChunk *c;

        if (!(c = w->filling ? g_steal_pointer(&w->filling) :
              kvmsaveChunkQueueGetFree(w->queue)))
            return writerFailed(w);
        c->end = true;
        kvmsaveChunkQueuePush(w->queue, c);
        g_thread_join(w->thread);
        w->thread = NULL;
        if (w->err)
            return writerFailed(w);
        kvmsaveChunkQueueStop(&w->queue, &w->thread);
    }
    if (w->newHeader && writerPutNewHeader(w) < 0)
        return -1;

    tr.chunks = w->chunks;
    tr.streamBytes = w->streamBytes;
    tr.dataEnd = w->offset + w->fill;
    tr.headerCrc = w->headerCrc;
    tr.completed = g_get_real_time() / G_USEC_PER_SEC;

    end = alignUp(tr.dataEnd + KVMSAVE_IMAGE_TRAILER_LEN, KVMSAVE_IMAGE_ALIGN);
    if (writerAppend(w, NULL, end - KVMSAVE_IMAGE_TRAILER_LEN - tr.dataEnd) < 0)
        return -1;
    kvmsaveImageTrailerEncode(&tr, buf);
    if (writerAppend(w, buf, sizeof(buf)) < 0 ||
        writerFlush(w) < 0)
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


/* Reading: a reader thread fetches chunks ahead into the queue's buffers,
 * workers verify and decompress them, the caller takes them in order. */
struct _kvmsaveImageReader {
    int fd;
    char *path;
    bool direct;                /* O_DIRECT is on */
    bool directOptional;        /* ...and may be turned off if refused */
    kvmsaveImageHeader *hdr;
    bool hdrBorrowed;           /* a stream reader's: its parent's */
    kvmsaveImageTrailer tr;
    uint64_t fileSize;
    size_t threads;             /* verifying workers */
    int stream;                 /* the only stream returned, or -1 for all */

    /* Header and trailer, read when the image is opened. */
    unsigned char *buf;
    size_t bufSize;
    uint64_t bufOffset;         /* file offset of buf[0], aligned */
    size_t bufLen;              /* bytes valid in buf */

    /* The reader thread's position. */
    uint64_t pos;               /* file offset of the next chunk */
    uint64_t dropped;           /* dropped from the page cache up to here */
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

    kvmsaveStockImage *stock;   /* a stock libvirt image, read through it */
};


/* The held chunk belongs to the queue: it goes with it. */
static void
kvmsaveImageReaderStop(kvmsaveImageReader *r)
{
    r->held = NULL;
    kvmsaveChunkQueueStop(&r->queue, &r->thread);
}


void
kvmsaveImageReaderFree(kvmsaveImageReader *r)
{
    if (!r)
        return;
    kvmsaveImageReaderStop(r);
    kvmsaveStockImageFree(r->stock);
#ifdef HAVE_POSIX_FADVISE
    /* The streams' readers shared the cache: the last ones drop it. */
    if (r->hdrBorrowed && !r->direct && r->fd >= 0)
        ignore_value(posix_fadvise(r->fd, 0, 0, POSIX_FADV_DONTNEED));
#endif
    VIR_FORCE_CLOSE(r->fd);
    virFreeError(r->endErr);
    if (!r->hdrBorrowed)
        kvmsaveImageHeaderFree(r->hdr);
    free(r->buf);
    free(r->peek);
    g_free(r->path);
    g_free(r);
}


void
kvmsaveImageReaderSetThreads(kvmsaveImageReader *r, size_t threads)
{
    if (threads > 0)
        r->threads = threads;
}


static void
readerTruncated(kvmsaveImageReader *r, const char *what, uint64_t pos)
{
    virReportError(VIR_ERR_OPERATION_FAILED,
                   _("save image '%s' is truncated: %s at offset %llu runs past the end of the file"),
                   r->path, what, (unsigned long long) pos);
}


/* Read [off, off + len) into @buf, in whole blocks as O_DIRECT needs;
 * at least @need bytes must be there (an image's size is a multiple of the
 * block, so a chunk's blocks are all there unless it shrank under us).
 * Returns the bytes read. */
static ssize_t
readerPread(kvmsaveImageReader *r, unsigned char *buf, size_t len,
            size_t need, uint64_t off, const char *what, uint64_t pos)
{
    ssize_t done;

    while ((done = kvmsaveReadAt(r->fd, buf, len, off, r->direct)) < 0 &&
           errno == EINVAL && r->direct && r->directOptional) {
        /* Opened with O_DIRECT, but the file system refuses to read
         * that way: read through the cache instead. */
        int fl = fcntl(r->fd, F_GETFL);

        if (fl < 0 || fcntl(r->fd, F_SETFL, fl & ~O_DIRECT) < 0) {
            errno = EINVAL;
            break;
        }
        r->direct = false;
    }
    if (done < 0) {
        virReportSystemError(errno, _("cannot read save image '%s'"),
                             r->path);
        return -1;
    }
    if (done < need) {
        readerTruncated(r, what, pos);
        return -1;
    }
    return done;
}


/* Make [pos, pos + need) of the header or trailer available in r->buf. */
static int
readerEnsure(kvmsaveImageReader *r, uint64_t pos, size_t need,
             const char *what)
{
    uint64_t start = pos / KVMSAVE_IMAGE_ALIGN * KVMSAVE_IMAGE_ALIGN;
    size_t len;
    ssize_t n;

    if (pos >= r->bufOffset && pos + need <= r->bufOffset + r->bufLen)
        return 0;
    if (pos + need > r->fileSize) {
        readerTruncated(r, what, pos);
        return -1;
    }
    len = alignUp(pos + need - start, KVMSAVE_IMAGE_ALIGN);
    if (len > r->bufSize) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: %s at offset %llu is too large"),
                       r->path, what, (unsigned long long) pos);
        return -1;
    }
    r->bufLen = 0;
    r->bufOffset = start;
    if ((n = readerPread(r, r->buf, len, pos + need - start, start, what, pos)) < 0)
        return -1;
    r->bufLen = n;
    return 0;
}


kvmsaveImageReader *
kvmsaveImageOpen(const char *path, kvmsaveImageIO io)
{
    int oflags = O_RDONLY | O_CLOEXEC | O_NOCTTY;
    g_autoptr(kvmsaveImageReader) r = g_new0(kvmsaveImageReader, 1);
    struct stat sb;
    size_t needed = 0;
    int rc;
    unsigned char *tail;

    r->path = g_strdup(path);
    r->direct = io != KVMSAVE_IMAGE_IO_CACHED;
    r->directOptional = io == KVMSAVE_IMAGE_IO_STREAM;
    r->threads = kvmsaveChunkQueueDefaultWorkers();
    r->bufSize = KVMSAVE_IMAGE_HEADER_MAX + KVMSAVE_IMAGE_ALIGN;
    r->fd = open(path, oflags | (r->direct ? O_DIRECT : 0));
    if (r->fd < 0 && errno == EINVAL && r->directOptional) {
        /* No direct I/O on this file system (tmpfs before Linux 6.6). */
        r->direct = false;
        r->fd = open(path, oflags);
    }
    if (r->fd < 0) {
        virReportSystemError(errno, _("cannot open save image '%s'%s"), path,
                             io == KVMSAVE_IMAGE_IO_DIRECT ?
                             _(" for direct I/O (bypass cache)") : "");
        return NULL;
    }
    if (fstat(r->fd, &sb) < 0) {
        virReportSystemError(errno, _("cannot stat save image '%s'"), path);
        return NULL;
    }
    if (!S_ISREG(sb.st_mode)) {
        virReportError(VIR_ERR_OPERATION_INVALID,
                       _("'%s' is not a regular file, so not a save image"), path);
        return NULL;
    }
    r->fileSize = sb.st_size;
#ifdef HAVE_POSIX_FADVISE
    ignore_value(posix_fadvise(r->fd, 0, 0, POSIX_FADV_SEQUENTIAL));
#endif
    r->buf = kvmsaveAlignedAlloc(r->bufSize);

    /* The first block holds the fixed header and usually all of it. */
    if (r->fileSize < KVMSAVE_IMAGE_MAGIC_LEN) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("'%s' is not a kvmsave save image (only %llu bytes long)"),
                       path, (unsigned long long) r->fileSize);
        return NULL;
    }
    if (readerEnsure(r, 0, MIN(r->fileSize, KVMSAVE_IMAGE_ALIGN), _("header")) < 0)
        return NULL;
    /* Images of stock libvirt are read as well, the same way after this. */
    if (kvmsaveStockImageProbe(r->buf, r->bufLen)) {
        if (!(r->stock = kvmsaveStockImageOpen(r->fd, r->direct, path,
                                               r->fileSize, r->buf, r->bufLen,
                                               &r->hdr, &r->tr)))
            return NULL;
        r->tr.completed = sb.st_mtime;
        g_clear_pointer(&r->buf, free);
        r->bufLen = 0;
        return g_steal_pointer(&r);
    }
    rc = kvmsaveImageHeaderDecode(r->buf, r->bufLen, path, &needed, &r->hdr);
    if (rc > 0) {
        if (needed > r->fileSize) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("save image '%s' is truncated inside its header"),
                           path);
            return NULL;
        }
        if (readerEnsure(r, 0, needed, _("header")) < 0)
            return NULL;
        rc = kvmsaveImageHeaderDecode(r->buf, r->bufLen, path, NULL, &r->hdr);
    }
    if (rc < 0)
        return NULL;

    /* The trailer at the very end says the image is complete. */
    if (r->fileSize % KVMSAVE_IMAGE_ALIGN != 0 ||
        r->fileSize < r->hdr->headerSize + KVMSAVE_IMAGE_TRAILER_LEN) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is incomplete or truncated: its size %llu is not that of a finished image"),
                       path, (unsigned long long) r->fileSize);
        return NULL;
    }
    if (readerEnsure(r, r->fileSize - KVMSAVE_IMAGE_ALIGN, KVMSAVE_IMAGE_ALIGN,
                     _("trailer")) < 0)
        return NULL;
    tail = r->buf + (r->fileSize - r->bufOffset) - KVMSAVE_IMAGE_TRAILER_LEN;
    if (kvmsaveImageTrailerDecode(tail, path, &r->tr) < 0)
        return NULL;
    if (crcMismatch(r->tr.headerCrc, r->hdr->crc)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: its trailer does not belong to its header"),
                       path);
        return NULL;
    }
    if (r->tr.dataEnd < r->hdr->headerSize ||
        r->tr.dataEnd > r->fileSize - KVMSAVE_IMAGE_TRAILER_LEN ||
        alignUp(r->tr.dataEnd + KVMSAVE_IMAGE_TRAILER_LEN,
                KVMSAVE_IMAGE_ALIGN) != r->fileSize) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: trailer's data end %llu does not fit a file of %llu bytes"),
                       path, (unsigned long long) r->tr.dataEnd,
                       (unsigned long long) r->fileSize);
        return NULL;
    }

    /* The chunks are read into the queue's buffers: this one is done. */
    g_clear_pointer(&r->buf, free);
    r->bufLen = 0;
    r->pos = r->hdr->headerSize;
    r->peek = kvmsaveAlignedAlloc(2 * KVMSAVE_IMAGE_ALIGN);
    r->stream = -1;
    return g_steal_pointer(&r);
}


kvmsaveImageReader *
kvmsaveImageReaderOpenStream(kvmsaveImageReader *r, unsigned int stream)
{
    g_autoptr(kvmsaveImageReader) s = NULL;
    g_autofree char *self = g_strdup_printf("/proc/self/fd/%d", r->fd);

    if (r->stock) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("save image '%s' of stock libvirt holds one stream, not several"),
                       r->path);
        return NULL;
    }
    s = g_new0(kvmsaveImageReader, 1);

    /* Every stream's reader reads every chunk header: through the page
     * cache they are read from the disk once, directly once per reader.
     * So the same file (not the same path) is opened again, cached,
     * unless direct I/O was asked for. */
    s->direct = r->direct && !r->directOptional;
    if (s->direct)
        s->fd = fcntl(r->fd, F_DUPFD_CLOEXEC, 0);
    else
        s->fd = open(self, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (s->fd < 0) {
        virReportSystemError(errno, _("cannot read save image '%s'"), r->path);
        return NULL;
    }
    s->path = g_strdup(r->path);
    s->hdr = r->hdr;
    s->hdrBorrowed = true;
    s->tr = r->tr;
    s->fileSize = r->fileSize;
    s->threads = 1;
    s->pos = r->hdr->headerSize;
    s->peek = kvmsaveAlignedAlloc(2 * KVMSAVE_IMAGE_ALIGN);
    s->stream = stream;
    return g_steal_pointer(&s);
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


/* Reader thread: check the header of the chunk at r->pos into r->peek;
 * returns 1 with *@ch pointing at it, 0 at the end of the data (totals
 * checked against the trailer), -1 with an error reported. */
static int
readerPeekChunk(kvmsaveImageReader *r, const unsigned char **ch)
{
    unsigned long long idx = r->chunkIndex;
    unsigned long long off = r->pos;
    uint64_t start = r->pos / KVMSAVE_IMAGE_ALIGN * KVMSAVE_IMAGE_ALIGN;
    const unsigned char *h;
    uint32_t stored;
    uint32_t raw;
    uint32_t encoding;
    uint32_t stream;

    if (r->pos == r->tr.dataEnd) {
        if (r->chunkIndex != r->tr.chunks ||
            r->streamBytes != r->tr.streamBytes) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("save image '%s' is corrupt: trailer records %llu chunks and %llu bytes, the image holds %llu chunks and %llu bytes"),
                           r->path, (unsigned long long) r->tr.chunks,
                           (unsigned long long) r->tr.streamBytes,
                           idx, (unsigned long long) r->streamBytes);
            return -1;
        }
        return 0;
    }
    if (r->tr.dataEnd - r->pos < KVMSAVE_IMAGE_CHUNK_HEADER_LEN) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk %llu at offset %llu is cut short by the end of the data"),
                       r->path, idx, off);
        return -1;
    }

    /* The header may straddle a block boundary: read two. The data end
     * lies a trailer before the aligned end of the file, so both exist. */
    if (readerPread(r, r->peek, MIN(2 * KVMSAVE_IMAGE_ALIGN, r->fileSize - start),
                    r->pos + KVMSAVE_IMAGE_CHUNK_HEADER_LEN - start,
                    start, _("chunk header"), off) < 0)
        return -1;
    h = r->peek + (r->pos - start);
    if (memcmp(h, KVMSAVE_IMAGE_CHUNK_MAGIC, 4) != 0) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk %llu at offset %llu has a bad magic"),
                       r->path, idx, off);
        return -1;
    }
    if (crcMismatch(getLE32(h + 28), kvmsaveCrc32c(0, h, 28))) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk %llu at offset %llu has a bad header checksum"),
                       r->path, idx, off);
        return -1;
    }
    encoding = getLE16(h + 4);
    stream = getLE16(h + 6);
    stored = getLE32(h + 16);
    raw = getLE32(h + 20);
    if (getLE64(h + 8) != r->chunkIndex) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk at offset %llu is numbered %llu, expected %llu"),
                       r->path, off, (unsigned long long) getLE64(h + 8), idx);
        return -1;
    }
    if (encoding != KVMSAVE_IMAGE_ENCODING_RAW &&
        encoding != KVMSAVE_IMAGE_ENCODING_ZSTD) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s': chunk %llu uses encoding %u, which this kvmsave does not support"),
                       r->path, idx, encoding);
        return -1;
    }
    if (stream >= r->hdr->streams) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk %llu at offset %llu belongs to stream %u, the image has %u"),
                       r->path, idx, off, stream, r->hdr->streams);
        return -1;
    }
    if ((encoding == KVMSAVE_IMAGE_ENCODING_RAW && stored != raw) ||
        (encoding == KVMSAVE_IMAGE_ENCODING_ZSTD && (stored >= raw || stored == 0)) ||
        raw > KVMSAVE_IMAGE_CHUNK_MAX ||
        stored > r->tr.dataEnd - r->pos - KVMSAVE_IMAGE_CHUNK_HEADER_LEN) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk %llu at offset %llu has an invalid length %u"),
                       r->path, idx, off, stored);
        return -1;
    }
    *ch = h;
    return 1;
}


/* Past the chunk whose header *@ch is. */
static void
readerSkipChunk(kvmsaveImageReader *r, const unsigned char *ch)
{
    r->pos += KVMSAVE_IMAGE_CHUNK_HEADER_LEN + getLE32(ch + 16);
    r->chunkIndex++;
    r->streamBytes += getLE32(ch + 20);
}


/* Reader thread: the next chunk (of r->stream, when set), its data read
 * into @c. Returns 1 for a chunk, 0 at the end of the data, -1 with an
 * error reported. */
static int
readerFetchChunk(kvmsaveImageReader *r, kvmsaveChunk *c)
{
    const unsigned char *ch;
    uint64_t start;
    uint64_t end;
    uint32_t stored;
    int rc;

    /* A stream's reader checks the others' chunk headers on its way. */
    while ((rc = readerPeekChunk(r, &ch)) > 0 &&
           r->stream >= 0 && getLE16(ch + 6) != r->stream)
        readerSkipChunk(r, ch);
    if (rc <= 0)
        return rc;

    /* Straight into the slot's buffer, in whole blocks. */
    memcpy(c->head, ch, KVMSAVE_IMAGE_CHUNK_HEADER_LEN);
    stored = getLE32(ch + 16);
    start = r->pos / KVMSAVE_IMAGE_ALIGN * KVMSAVE_IMAGE_ALIGN;
    end = alignUp(r->pos + KVMSAVE_IMAGE_CHUNK_HEADER_LEN + stored,
                  KVMSAVE_IMAGE_ALIGN);
    if (readerPread(r, c->buf, end - start, end - start, start,
                    _("chunk data"), r->pos) < 0)
        return -1;
#ifdef HAVE_POSIX_FADVISE
    /* Read and kept: the cache may let these pages go (all but the last
     * block, which holds the next chunk's header). The readers of an
     * image's streams share its pages, and leave them. */
    if (!r->direct && r->stream < 0 && end - KVMSAVE_IMAGE_ALIGN > r->dropped) {
        ignore_value(posix_fadvise(r->fd, r->dropped,
                                   end - KVMSAVE_IMAGE_ALIGN - r->dropped,
                                   POSIX_FADV_DONTNEED));
        r->dropped = end - KVMSAVE_IMAGE_ALIGN;
    }
#endif

    c->offset = r->pos;
    c->encoding = getLE16(c->head + 4);
    c->stream = getLE16(c->head + 6);
    c->rawLen = getLE32(c->head + 20);
    c->storedLen = stored;
    c->crc = getLE32(c->head + 24);
    c->data = c->buf + (r->pos - start) + KVMSAVE_IMAGE_CHUNK_HEADER_LEN;
    c->dataLen = stored;
    readerSkipChunk(r, c->head);
    return 1;
}


static gpointer
kvmsaveImageReaderThread(gpointer opaque)
{
    kvmsaveImageReader *r = opaque;
    kvmsaveChunk *c;

    while ((c = kvmsaveChunkQueueGetFree(r->queue))) {
        int rc = readerFetchChunk(r, c);

        if (rc <= 0) {
            /* The end, good or bad, travels in order like a chunk. */
            c->end = true;
            if (rc < 0)
                c->err = virErrorCopyNew(virGetLastError());
            virResetLastError();
            kvmsaveChunkQueuePush(r->queue, c);
            break;
        }
        kvmsaveChunkQueuePush(r->queue, c);
        kvmsaveTestChunkDelay();
    }
    return NULL;
}


static void
readerFreeCtx(void *ctx)
{
    ZSTD_freeDCtx(ctx);
}


/* Worker: the data checksum, then the decoding. */
static int
readerDecodeChunk(kvmsaveChunk *c, void *opaque)
{
    kvmsaveImageReader *r = opaque;
    unsigned long long idx = getLE64(c->head + 8); /* the file's numbering */
    unsigned long long off = c->offset;
    uint32_t crc = kvmsaveCrc32c(0, c->data, c->storedLen);
    size_t n;

    if (crcMismatch(c->crc, crc)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk %llu at offset %llu has a data checksum mismatch (stored %08x, computed %08x)"),
                       r->path, idx, off, c->crc, crc);
        return -1;
    }
    if (c->encoding != KVMSAVE_IMAGE_ENCODING_ZSTD)
        return 0;

    if (!c->ctx && !(c->ctx = ZSTD_createDCtx()))
        abort(); /* out of memory, as g_malloc */
    if (!c->out) {
        c->outSize = KVMSAVE_IMAGE_CHUNK_MAX;
        c->out = g_malloc(c->outSize);
    }
    n = ZSTD_decompressDCtx(c->ctx, c->out, c->outSize, c->data, c->storedLen);
    if (ZSTD_isError(n) || n != c->rawLen) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk %llu at offset %llu does not decompress (%s)"),
                       r->path, idx, off,
                       ZSTD_isError(n) ? ZSTD_getErrorName(n) : _("wrong size"));
        return -1;
    }
    c->data = c->out;
    c->dataLen = n;
    return 0;
}


int
kvmsaveImageReadChunk(kvmsaveImageReader *r,
                      const unsigned char **data, size_t *len)
{
    kvmsaveChunk *c;

    if (r->stock)
        return kvmsaveStockImageRead(r->stock, data, len);
    if (r->ended) {
        if (!r->endErr)
            return 0;
        virSetError(r->endErr);
        return -1;
    }
    if (!r->queue) {
        /* Read ahead as far as the workers can use, no further. */
        r->queue = kvmsaveChunkQueueNew(MIN(r->threads + 2, KVMSAVE_IMAGE_SLOTS_MAX),
                                        r->threads,
                                        KVMSAVE_IMAGE_CHUNK_MAX +
                                        KVMSAVE_IMAGE_CHUNK_HEADER_LEN +
                                        2 * KVMSAVE_IMAGE_ALIGN,
                                        readerDecodeChunk,
                                        readerFreeCtx, r);
        r->thread = g_thread_new("kvmsave-read", kvmsaveImageReaderThread, r);
    }
    if (r->held)
        kvmsaveChunkQueueRelease(r->queue, g_steal_pointer(&r->held));

    if (!(c = kvmsaveChunkQueuePop(r->queue))) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("reading save image '%s' stopped"), r->path);
        return -1;
    }
    if (c->end || c->err) {
        r->ended = true;
        r->endErr = g_steal_pointer(&c->err);
        kvmsaveChunkQueueRelease(r->queue, c);
        kvmsaveImageReaderStop(r);
        if (!r->endErr)
            return 0;
        virSetError(r->endErr);
        return -1;
    }
    r->held = c;
    r->lastEncoding = c->encoding;
    r->lastStream = c->stream;
    r->lastLen = c->dataLen;
    *data = c->data;
    *len = c->dataLen;
    return 1;
}


int
kvmsaveImageReaderLastEncoding(kvmsaveImageReader *r)
{
    return r->lastEncoding;
}


unsigned int
kvmsaveImageReaderLastStream(kvmsaveImageReader *r)
{
    return r->lastStream;
}


size_t
kvmsaveImageReaderLastProgress(kvmsaveImageReader *r)
{
    if (r->stock)
        return kvmsaveStockImageLastProgress(r->stock);
    return r->lastLen;
}


kvmsaveStockImage *
kvmsaveImageReaderStock(kvmsaveImageReader *r)
{
    return r->stock;
}


int
kvmsaveImageVerify(kvmsaveImageReader *r)
{
    const unsigned char *data;
    size_t len;
    int rc;

    while ((rc = kvmsaveImageReadChunk(r, &data, &len)) > 0)
        ;
    return rc;
}
