/*
 * kvmsave_image.c: the kvmsave save-image format (docs/image-format.md)
 */
#include <config.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "kvmsave_image.h"
#include "kvmsave_util.h"
#include "virerror.h"
#include "virfile.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

/* Buffers are a multiple of the alignment and hold a whole chunk. */
#define KVMSAVE_IMAGE_BUFSIZE (8 * 1024 * 1024)
#define KVMSAVE_IMAGE_READAHEAD (4 * 1024 * 1024)


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
    }
    return NULL;
}
#define KVMSAVE_IMAGE_FIELD_LAST KVMSAVE_IMAGE_FIELD_PRODUCER


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

    if (!hdr->xml) {
        virReportError(VIR_ERR_INTERNAL_ERROR, "%s",
                       _("save image header lacks the domain XML"));
        return -1;
    }

    for (tag = 1; tag <= KVMSAVE_IMAGE_FIELD_LAST; tag++) {
        char *val = *headerField(hdr, tag);
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
        char *val = *headerField(hdr, tag);
        size_t vlen;

        if (!val)
            continue;
        vlen = strlen(val);
        putLE16(out + off, tag);
        putLE16(out + off + 2, 0);
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
    if (crc != hdr->crc) {
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
        if (field) {
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
    if (crc != getLE32(buf + 60)) {
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


static unsigned char *
alignedAlloc(size_t size)
{
    void *p = NULL;

    if (posix_memalign(&p, KVMSAVE_IMAGE_ALIGN, size) != 0)
        abort(); /* as g_malloc does on OOM */
    return p;
}


struct _kvmsaveImageWriter {
    int format;                 /* KVMSAVE_IMAGE_ENCODING_* */
    ZSTD_CCtx *zctx;
    unsigned char *zbuf;
    size_t zbufSize;
    int fd;
    char *path;
    bool direct;
    unsigned char *buf;
    size_t fill;
    uint64_t offset;            /* file offset of buf[0] */
    uint64_t released;          /* written back and dropped from the cache */
    uint64_t chunks;
    uint64_t streamBytes;
    uint32_t headerCrc;
};


kvmsaveImageWriter *
kvmsaveImageWriterNew(int fd, const char *path, bool direct)
{
    kvmsaveImageWriter *w = g_new0(kvmsaveImageWriter, 1);

    w->fd = fd;
    w->path = g_strdup(path);
    w->direct = direct;
    w->buf = alignedAlloc(KVMSAVE_IMAGE_BUFSIZE);
    return w;
}


void
kvmsaveImageWriterFree(kvmsaveImageWriter *w)
{
    if (!w)
        return;
    free(w->buf);
    ZSTD_freeCCtx(w->zctx);
    g_free(w->zbuf);
    g_free(w->path);
    g_free(w);
}


void
kvmsaveImageWriterSetFormat(kvmsaveImageWriter *w, int format)
{
    w->format = format;
    if (format == KVMSAVE_IMAGE_ENCODING_ZSTD && !w->zctx) {
        w->zctx = ZSTD_createCCtx();
        if (!w->zctx)
            abort(); /* out of memory, as g_malloc */
        ZSTD_CCtx_setParameter(w->zctx, ZSTD_c_compressionLevel,
                               KVMSAVE_IMAGE_ZSTD_LEVEL);
        /* A checksum of the decoded data in each frame, verified on read:
         * it also covers the decoder itself. */
        ZSTD_CCtx_setParameter(w->zctx, ZSTD_c_checksumFlag, 1);
        w->zbufSize = ZSTD_compressBound(KVMSAVE_IMAGE_CHUNK_MAX);
        w->zbuf = g_malloc(w->zbufSize);
    }
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
writerFlush(kvmsaveImageWriter *w)
{
    size_t done = 0;

    while (done < w->fill) {
        ssize_t n = pwrite(w->fd, w->buf + done, w->fill - done,
                           w->offset + done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            virReportSystemError(n < 0 ? errno : ENOSPC,
                                 _("cannot write save image '%s'"), w->path);
            return -1;
        }
        done += n;
    }
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


int
kvmsaveImageWriteHeader(kvmsaveImageWriter *w, kvmsaveImageHeader *hdr)
{
    g_autofree unsigned char *buf = NULL;
    size_t len;

    if (kvmsaveImageHeaderEncode(hdr, &buf, &len) < 0)
        return -1;
    w->headerCrc = hdr->crc;
    return writerAppend(w, buf, len);
}


int
kvmsaveImageWriteChunk(kvmsaveImageWriter *w, const void *data, size_t len)
{
    unsigned char ch[KVMSAVE_IMAGE_CHUNK_HEADER_LEN];
    int encoding = KVMSAVE_IMAGE_ENCODING_RAW;
    const void *stored = data;
    size_t storedLen = len;

    if (w->format == KVMSAVE_IMAGE_ENCODING_ZSTD && len > 0) {
        size_t n = ZSTD_compress2(w->zctx, w->zbuf, w->zbufSize, data, len);

        if (ZSTD_isError(n)) {
            virReportError(VIR_ERR_INTERNAL_ERROR,
                           _("cannot compress chunk %llu of save image '%s': %s"),
                           (unsigned long long) w->chunks, w->path,
                           ZSTD_getErrorName(n));
            return -1;
        }
        /* Incompressible data (random pages) is kept as it is. */
        if (n < len) {
            encoding = KVMSAVE_IMAGE_ENCODING_ZSTD;
            stored = w->zbuf;
            storedLen = n;
        }
    }

    memcpy(ch, KVMSAVE_IMAGE_CHUNK_MAGIC, 4);
    putLE32(ch + 4, encoding);
    putLE64(ch + 8, w->chunks);
    putLE32(ch + 16, storedLen);
    putLE32(ch + 20, len);
    putLE32(ch + 24, kvmsaveCrc32c(0, stored, storedLen));
    putLE32(ch + 28, kvmsaveCrc32c(0, ch, 28));

    if (writerAppend(w, ch, sizeof(ch)) < 0 ||
        writerAppend(w, stored, storedLen) < 0)
        return -1;
    w->chunks++;
    w->streamBytes += len;
    return 0;
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


struct _kvmsaveImageReader {
    int fd;
    char *path;
    bool direct;
    kvmsaveImageHeader *hdr;
    kvmsaveImageTrailer tr;
    uint64_t fileSize;
    unsigned char *buf;
    size_t bufSize;
    uint64_t bufOffset;         /* file offset of buf[0], aligned */
    size_t bufLen;              /* bytes valid in buf */
    uint64_t pos;               /* file offset of the next record */
    uint64_t dropped;           /* dropped from the page cache up to here */
    bool streaming;             /* header and trailer read: chunks follow */
    uint64_t chunkIndex;
    uint64_t streamBytes;
    ZSTD_DCtx *zctx;
    unsigned char *zbuf;        /* a decoded chunk */
    int lastEncoding;           /* of the chunk read last */
};


void
kvmsaveImageReaderFree(kvmsaveImageReader *r)
{
    if (!r)
        return;
    VIR_FORCE_CLOSE(r->fd);
    ZSTD_freeDCtx(r->zctx);
    g_free(r->zbuf);
    kvmsaveImageHeaderFree(r->hdr);
    free(r->buf);
    g_free(r->path);
    g_free(r);
}


/* Make [pos, pos + need) available in the buffer; reading past the end of
 * the file is an error naming @what. */
static int
readerEnsure(kvmsaveImageReader *r, size_t need, const char *what)
{
    uint64_t start;

    if (r->pos >= r->bufOffset &&
        r->pos + need <= r->bufOffset + r->bufLen)
        return 0;

    if (r->pos + need > r->fileSize) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is truncated: %s at offset %llu runs past the end of the file"),
                       r->path, what, (unsigned long long) r->pos);
        return -1;
    }

    /* Keep what is still needed at the front of the buffer. */
    start = r->pos / KVMSAVE_IMAGE_ALIGN * KVMSAVE_IMAGE_ALIGN;
#ifdef HAVE_POSIX_FADVISE
    /* What is behind us is not read again: leave the cache to others. */
    if (!r->direct && r->streaming && start > r->dropped) {
        ignore_value(posix_fadvise(r->fd, r->dropped, start - r->dropped,
                                   POSIX_FADV_DONTNEED));
        r->dropped = start;
    }
#endif
    if (start >= r->bufOffset && start < r->bufOffset + r->bufLen) {
        size_t keep = r->bufOffset + r->bufLen - start;
        memmove(r->buf, r->buf + (start - r->bufOffset), keep);
        r->bufLen = keep;
    } else {
        r->bufLen = 0;
    }
    r->bufOffset = start;

    if (r->pos - start + need > r->bufSize) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: %s at offset %llu is too large"),
                       r->path, what, (unsigned long long) r->pos);
        return -1;
    }

    while (r->bufOffset + r->bufLen < r->pos + need) {
        uint64_t end = r->bufOffset + r->bufLen;
        /* Read what is missing plus some read-ahead, bounded. */
        size_t want = alignUp(r->pos + need - end, KVMSAVE_IMAGE_ALIGN) +
            KVMSAVE_IMAGE_READAHEAD;
        ssize_t n;

        want = MIN(want, r->bufSize - r->bufLen);
        /* Up to the end of the file, in whole blocks as O_DIRECT needs
         * (the read stops short at the end of the file). */
        if (want > alignUp(r->fileSize - end, KVMSAVE_IMAGE_ALIGN))
            want = alignUp(r->fileSize - end, KVMSAVE_IMAGE_ALIGN);
        n = pread(r->fd, r->buf + r->bufLen, want, r->bufOffset + r->bufLen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            virReportSystemError(errno, _("cannot read save image '%s'"),
                                 r->path);
            return -1;
        }
        if (n == 0) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("save image '%s' is truncated: %s at offset %llu runs past the end of the file"),
                           r->path, what, (unsigned long long) r->pos);
            return -1;
        }
        r->bufLen += n;
    }
    return 0;
}


kvmsaveImageReader *
kvmsaveImageOpen(const char *path, bool direct)
{
    g_autoptr(kvmsaveImageReader) r = g_new0(kvmsaveImageReader, 1);
    struct stat sb;
    size_t needed = 0;
    int rc;
    unsigned char *tail;

    r->path = g_strdup(path);
    r->direct = direct;
    r->bufSize = KVMSAVE_IMAGE_CHUNK_MAX + KVMSAVE_IMAGE_READAHEAD +
        2 * KVMSAVE_IMAGE_ALIGN;
    r->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | (direct ? O_DIRECT : 0));
    if (r->fd < 0) {
        virReportSystemError(errno, _("cannot open save image '%s'%s"), path,
                             direct ? _(" for direct I/O (bypass cache)") : "");
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
    r->buf = alignedAlloc(r->bufSize);

    /* The first block holds the fixed header and usually all of it. */
    if (r->fileSize < KVMSAVE_IMAGE_MAGIC_LEN) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("'%s' is not a kvmsave save image (only %llu bytes long)"),
                       path, (unsigned long long) r->fileSize);
        return NULL;
    }
    if (readerEnsure(r, MIN(r->fileSize, KVMSAVE_IMAGE_ALIGN), _("header")) < 0)
        return NULL;
    rc = kvmsaveImageHeaderDecode(r->buf, r->bufLen, path, &needed, &r->hdr);
    if (rc > 0) {
        if (needed > r->fileSize) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("save image '%s' is truncated inside its header"),
                           path);
            return NULL;
        }
        if (readerEnsure(r, needed, _("header")) < 0)
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
    r->pos = r->fileSize - KVMSAVE_IMAGE_ALIGN;
    if (readerEnsure(r, KVMSAVE_IMAGE_ALIGN, _("trailer")) < 0)
        return NULL;
    tail = r->buf + (r->pos - r->bufOffset) + KVMSAVE_IMAGE_ALIGN -
        KVMSAVE_IMAGE_TRAILER_LEN;
    if (kvmsaveImageTrailerDecode(tail, path, &r->tr) < 0)
        return NULL;
    if (r->tr.headerCrc != r->hdr->crc) {
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

    r->pos = r->hdr->headerSize;
    r->bufLen = 0;
    r->bufOffset = 0;
    r->dropped = 0;
    r->streaming = true;
    return g_steal_pointer(&r);
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


int
kvmsaveImageReadChunk(kvmsaveImageReader *r,
                      const unsigned char **data, size_t *len)
{
    const unsigned char *ch;
    unsigned long long idx = r->chunkIndex;
    unsigned long long off = r->pos;
    uint32_t stored;
    uint32_t raw;
    uint32_t crc;
    uint32_t encoding;

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
    if (readerEnsure(r, KVMSAVE_IMAGE_CHUNK_HEADER_LEN, _("chunk header")) < 0)
        return -1;

    ch = r->buf + (r->pos - r->bufOffset);
    if (memcmp(ch, KVMSAVE_IMAGE_CHUNK_MAGIC, 4) != 0) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk %llu at offset %llu has a bad magic"),
                       r->path, idx, off);
        return -1;
    }
    crc = kvmsaveCrc32c(0, ch, 28);
    if (crc != getLE32(ch + 28)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk %llu at offset %llu has a bad header checksum"),
                       r->path, idx, off);
        return -1;
    }
    encoding = getLE32(ch + 4);
    stored = getLE32(ch + 16);
    raw = getLE32(ch + 20);
    if (getLE64(ch + 8) != r->chunkIndex) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk at offset %llu is numbered %llu, expected %llu"),
                       r->path, off, (unsigned long long) getLE64(ch + 8), idx);
        return -1;
    }
    if (encoding != KVMSAVE_IMAGE_ENCODING_RAW &&
        encoding != KVMSAVE_IMAGE_ENCODING_ZSTD) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s': chunk %llu uses encoding %u, which this kvmsave does not support"),
                       r->path, idx, encoding);
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
    if (readerEnsure(r, KVMSAVE_IMAGE_CHUNK_HEADER_LEN + stored,
                     _("chunk data")) < 0)
        return -1;
    ch = r->buf + (r->pos - r->bufOffset);
    crc = kvmsaveCrc32c(0, ch + KVMSAVE_IMAGE_CHUNK_HEADER_LEN, stored);
    if (crc != getLE32(ch + 24)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk %llu at offset %llu has a data checksum mismatch (stored %08x, computed %08x)"),
                       r->path, idx, off, getLE32(ch + 24), crc);
        return -1;
    }

    *data = ch + KVMSAVE_IMAGE_CHUNK_HEADER_LEN;
    *len = stored;
    if (encoding == KVMSAVE_IMAGE_ENCODING_ZSTD) {
        size_t n;

        if (!r->zctx) {
            if (!(r->zctx = ZSTD_createDCtx()))
                abort(); /* out of memory, as g_malloc */
            r->zbuf = g_malloc(KVMSAVE_IMAGE_CHUNK_MAX);
        }
        n = ZSTD_decompressDCtx(r->zctx, r->zbuf, KVMSAVE_IMAGE_CHUNK_MAX,
                                *data, stored);
        if (ZSTD_isError(n) || n != raw) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("save image '%s' is corrupt: chunk %llu at offset %llu does not decompress (%s)"),
                           r->path, idx, off,
                           ZSTD_isError(n) ? ZSTD_getErrorName(n) : _("wrong size"));
            return -1;
        }
        *data = r->zbuf;
        *len = raw;
    }
    r->lastEncoding = encoding;
    r->pos += KVMSAVE_IMAGE_CHUNK_HEADER_LEN + stored;
    r->chunkIndex++;
    r->streamBytes += raw;
    return 1;
}


int
kvmsaveImageReaderLastEncoding(kvmsaveImageReader *r)
{
    return r->lastEncoding;
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
