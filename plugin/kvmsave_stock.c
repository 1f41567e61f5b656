/*
 * kvmsave_stock.c: save images of stock libvirt's QEMU driver, as kvmsave
 * reads them (libvirt 9.0's and 11.3's src/qemu/qemu_saveimage.[ch])
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <fcntl.h>
#include <unistd.h>

#include "full-write.h"

#include "kvmsave_stock.h"
#include "kvmsave_decompress.h"
#include "kvmsave_util.h"
#include "kvmsave_xml.h"
#include "virerror.h"
#include "virfile.h"
#include "virendian.h"
#include "viruuid.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

/* Reads of the file and blocks of the decoded stream handed out. */
#define KVMSAVE_STOCK_BUFSIZE (4 * 1024 * 1024)
/* Room stock libvirt leaves after the XML for later edits. */
#define KVMSAVE_STOCK_XML_ROOM (64 * 1024)
/* QEMU's migration stream begins with QEMU_VM_FILE_MAGIC, then
 * QEMU_VM_FILE_VERSION (big-endian). */
#define KVMSAVE_STOCK_QEMU_MAGIC "QEVM"
#define KVMSAVE_STOCK_QEMU_VERSION 3
/* The least a sparse image's stream holds: QEMU's file header and one
 * mapped-ram header (QEMU 9.0's MappedRamHeader: u32 version, u64
 * page_size, bitmap_offset, pages_offset). */
#define KVMSAVE_STOCK_SPARSE_MIN (8 + 28)

struct _kvmsaveStockImage {
    kvmsaveStockInfo info;
    kvmsaveImageHeader *hdr;    /* until handed to the image reader */

    int fd;                     /* the reader's */
    bool direct;
    char *path;
    uint64_t fileSize;

    unsigned char *in;          /* aligned, KVMSAVE_STOCK_BUFSIZE */
    const unsigned char *inNext;
    size_t inAvail;
    uint64_t readPos;           /* file offset of the next read, aligned */
    uint64_t dropped;           /* dropped from the page cache up to here */

    kvmsaveDecompressor *dec;   /* NULL for a raw stream */
    unsigned char *out;
    bool streamEnded;
    size_t lastProgress;
    bool ended;
    virErrorPtr err;            /* why reading failed, for every later call */
};


bool
kvmsaveStockImageProbe(const unsigned char *buf, size_t len)
{
    return len >= KVMSAVE_STOCK_MAGIC_LEN &&
        (memcmp(buf, KVMSAVE_STOCK_MAGIC, KVMSAVE_STOCK_MAGIC_LEN) == 0 ||
         memcmp(buf, KVMSAVE_STOCK_PARTIAL, KVMSAVE_STOCK_MAGIC_LEN) == 0);
}


void
kvmsaveStockImageFree(kvmsaveStockImage *s)
{
    if (!s)
        return;
    kvmsaveImageHeaderFree(s->hdr);
    g_free(s->info.cookie);
    g_free(s->path);
    free(s->in);
    kvmsaveDecompressorFree(s->dec);
    g_free(s->out);
    virFreeError(s->err);
    g_free(s);
}


/* The domain's identity, from the XML: stock images keep nothing else. */
static int
kvmsaveStockHeaderFromXML(kvmsaveImageHeader *hdr, const char *what)
{
    g_autofree char *uuid = NULL;

    if (!(uuid = kvmsaveXMLGetUUID(hdr->xml))) {
        if (virGetLastErrorCode() != VIR_ERR_OK) {
            g_autofree char *reason = g_strdup(virGetLastErrorMessage());

            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("save image '%s' of stock libvirt is corrupt: its domain XML does not parse (%s)"),
                           what, reason);
        } else {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("save image '%s' of stock libvirt has no <uuid> in its domain XML"),
                           what);
        }
        return -1;
    }
    if (virUUIDParse(uuid, hdr->uuid) < 0) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' of stock libvirt has an invalid <uuid> '%s' in its domain XML"),
                       what, uuid);
        return -1;
    }
    hdr->name = kvmsaveXMLGetName(hdr->xml);
    hdr->machine = kvmsaveXMLGetMachine(hdr->xml);
    return 0;
}


int
kvmsaveStockHeaderDecode(const unsigned char *buf, size_t len,
                         const char *what, size_t *needed,
                         kvmsaveStockImage **ret)
{
    g_autoptr(kvmsaveStockImage) s = g_new0(kvmsaveStockImage, 1);
    kvmsaveStockInfo *info = &s->info;
    uint32_t f[5]; /* version, data_len, was_running, compressed, cookieOffset */
    const char *area = (const char *) buf + KVMSAVE_STOCK_HEADER_LEN;
    size_t xmlLen;
    size_t i;

    if (!kvmsaveStockImageProbe(buf, len)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("'%s' is not a kvmsave save image (bad magic)"), what);
        return -1;
    }
    /* Stock libvirt deletes such a file in some paths; kvmsave only ever
     * reads images. */
    if (memcmp(buf, KVMSAVE_STOCK_PARTIAL, KVMSAVE_STOCK_MAGIC_LEN) == 0) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("'%s' is an incomplete save image of stock libvirt (magic LibvirtQemudPart): the save that wrote it was interrupted, so it cannot be restored, and the guest, if it still exists, was not saved; kvmsave leaves the file as it is, remove it once you no longer need it"),
                       what);
        return -1;
    }
    if (len < KVMSAVE_STOCK_HEADER_LEN) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' of stock libvirt is truncated inside its header"),
                       what);
        return -1;
    }

    /* Host byte order; stock swaps it when the version reads too large. */
    memcpy(f, buf + KVMSAVE_STOCK_MAGIC_LEN, sizeof(f));
    if (f[0] > KVMSAVE_STOCK_VERSION) {
        for (i = 0; i < G_N_ELEMENTS(f); i++)
            f[i] = GUINT32_SWAP_LE_BE(f[i]);
        info->swapped = true;
    }
    info->version = f[0];
    if (info->version < 1 || info->version > KVMSAVE_STOCK_VERSION) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' of stock libvirt has format version %u, which kvmsave does not read (it reads versions 1 and 2)"),
                       what, info->swapped ? GUINT32_SWAP_LE_BE(f[0]) : f[0]);
        return -1;
    }
    info->dataLen = f[1];
    if (info->dataLen == 0 || info->dataLen > KVMSAVE_IMAGE_HEADER_MAX) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' of stock libvirt has a corrupt header: invalid XML area length %u"),
                       what, info->dataLen);
        return -1;
    }
    if (f[4] >= info->dataLen) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' of stock libvirt has a corrupt header: save cookie offset %u outside its XML area of %u bytes"),
                       what, f[4], info->dataLen);
        return -1;
    }
    /* Version 1 predates compression. */
    info->compressed = info->version == 1 ? KVMSAVE_COMPRESS_RAW : f[3];
    if (!kvmsaveCompressToString(info->compressed)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' of stock libvirt uses compression %u, which kvmsave does not know"),
                       what, f[3]);
        return -1;
    }
    info->streamOffset = KVMSAVE_STOCK_HEADER_LEN + (uint64_t) info->dataLen;
    if (len < info->streamOffset) {
        if (needed) {
            *needed = info->streamOffset;
            return 1;
        }
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' of stock libvirt is truncated inside its domain XML"),
                       what);
        return -1;
    }

    xmlLen = f[4] ? f[4] : info->dataLen;
    if (!memchr(area, '\0', xmlLen) || !*area ||
        (f[4] && !memchr(area + f[4], '\0', info->dataLen - f[4]))) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' of stock libvirt has a corrupt header: its domain XML or save cookie is empty or not terminated"),
                       what);
        return -1;
    }
    if (f[4] && area[f[4]])
        info->cookie = g_strdup(area + f[4]);

    s->hdr = kvmsaveImageHeaderNew();
    s->hdr->major = s->hdr->minor = 0; /* not kvmsave's format */
    s->hdr->chunkSize = KVMSAVE_STOCK_BUFSIZE;
    s->hdr->flags = f[2] ? KVMSAVE_IMAGE_FLAG_RUNNING : 0;
    s->hdr->xml = g_strdup(area);
    if (kvmsaveStockHeaderFromXML(s->hdr, what) < 0)
        return -1;

    *ret = g_steal_pointer(&s);
    return 0;
}


/* Read [off, off + len) of the file; returns the bytes read, fewer only
 * at its end. */
static ssize_t
kvmsaveStockPread(int fd, bool direct, const char *path, unsigned char *buf,
                  size_t len, uint64_t off)
{
    ssize_t n = kvmsaveReadAt(fd, buf, len, off, direct);

    if (n < 0)
        virReportSystemError(errno, _("cannot read save image '%s'"), path);
    return n;
}


/* QEMU reads a sparse image itself, from the file, once it runs: what
 * kvmsave can check is that the file holds the beginning of a mapped-ram
 * stream, before any QEMU starts. */
static int
kvmsaveStockCheckSparse(kvmsaveStockImage *s)
{
    uint64_t start = s->info.streamOffset / KVMSAVE_IMAGE_ALIGN * KVMSAVE_IMAGE_ALIGN;
    size_t skip = s->info.streamOffset - start;
    unsigned char *buf;
    ssize_t n;
    bool ok;

    if (s->info.streamSize < KVMSAVE_STOCK_SPARSE_MIN) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' of stock libvirt is truncated: its sparse (mapped-ram) stream has %llu bytes, too few for QEMU's headers"),
                       s->path, (unsigned long long) s->info.streamSize);
        return -1;
    }
    buf = kvmsaveAlignedAlloc(KVMSAVE_IMAGE_ALIGN * 2);
    n = kvmsaveStockPread(s->fd, s->direct, s->path, buf,
                          KVMSAVE_IMAGE_ALIGN * 2, start);
    ok = n >= (ssize_t) (skip + 8) &&
        memcmp(buf + skip, KVMSAVE_STOCK_QEMU_MAGIC, 4) == 0 &&
        virReadBufInt32BE(buf + skip + 4) == KVMSAVE_STOCK_QEMU_VERSION;
    free(buf);
    if (n < 0)
        return -1;
    if (!ok) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' of stock libvirt is damaged: what follows its header is not QEMU's migration stream"),
                       s->path);
        return -1;
    }
    return 0;
}


kvmsaveStockImage *
kvmsaveStockImageOpen(int fd, bool direct, const char *path, uint64_t fileSize,
                      const unsigned char *buf, size_t len,
                      kvmsaveImageHeader **hdr, kvmsaveImageTrailer *tr)
{
    g_autoptr(kvmsaveStockImage) s = NULL;
    unsigned char *more = NULL;
    size_t needed = 0;
    int rc;

    rc = kvmsaveStockHeaderDecode(buf, len, path, &needed, &s);
    if (rc > 0 && needed <= fileSize) {
        /* A long XML area: read all of it. */
        size_t size = VIR_ROUND_UP(needed, KVMSAVE_IMAGE_ALIGN);
        ssize_t n;

        more = kvmsaveAlignedAlloc(size);
        if ((n = kvmsaveStockPread(fd, direct, path, more, size, 0)) < 0) {
            free(more);
            return NULL;
        }
        rc = kvmsaveStockHeaderDecode(more, n, path, NULL, &s);
        free(more);
    } else if (rc > 0) {
        rc = kvmsaveStockHeaderDecode(buf, len, path, NULL, &s);
    }
    if (rc < 0)
        return NULL;

    s->fd = fd;
    s->direct = direct;
    s->path = g_strdup(path);
    s->fileSize = fileSize;
    s->info.streamSize = fileSize - s->info.streamOffset;
    s->readPos = s->info.streamOffset / KVMSAVE_IMAGE_ALIGN * KVMSAVE_IMAGE_ALIGN;
    s->dropped = s->readPos;
    s->in = kvmsaveAlignedAlloc(KVMSAVE_STOCK_BUFSIZE);
    if (s->info.compressed == KVMSAVE_COMPRESS_SPARSE &&
        kvmsaveStockCheckSparse(s) < 0)
        return NULL;
    if (s->info.compressed != KVMSAVE_COMPRESS_RAW &&
        s->info.compressed != KVMSAVE_COMPRESS_SPARSE) {
        s->dec = kvmsaveDecompressorNew(s->info.compressed);
        s->out = g_malloc(KVMSAVE_STOCK_BUFSIZE);
    }

    memset(tr, 0, sizeof(*tr));
    tr->streamBytes = s->info.streamSize;
    tr->dataEnd = fileSize;
    *hdr = g_steal_pointer(&s->hdr);
    return g_steal_pointer(&s);
}


const kvmsaveStockInfo *
kvmsaveStockImageInfo(kvmsaveStockImage *s)
{
    return &s->info;
}


int
kvmsaveStockImageReopen(kvmsaveStockImage *s)
{
    /* The file the reader checked, whatever its path names now. */
    g_autofree char *self = g_strdup_printf("/proc/self/fd/%d", s->fd);
    int fd = open(self, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        virReportSystemError(errno, _("cannot open save image '%s' again"),
                             s->path);
    return fd;
}


size_t
kvmsaveStockImageLastProgress(kvmsaveStockImage *s)
{
    return s->lastProgress;
}


/* The file offset of the next byte of input. */
static unsigned long long
kvmsaveStockInputOffset(kvmsaveStockImage *s)
{
    return s->readPos - s->inAvail;
}


/* Refill the (empty) input: 1, or 0 at the end of the file. */
static int
kvmsaveStockFill(kvmsaveStockImage *s)
{
    uint64_t start = s->readPos;
    size_t skip;
    ssize_t n;

    if (start >= s->fileSize)
        return 0;
#ifdef HAVE_POSIX_FADVISE
    /* Read once and done with: the cache may let these pages go. */
    if (!s->direct && start > s->dropped) {
        ignore_value(posix_fadvise(s->fd, s->dropped, start - s->dropped,
                                   POSIX_FADV_DONTNEED));
        s->dropped = start;
    }
#endif
    if ((n = kvmsaveStockPread(s->fd, s->direct, s->path, s->in,
                               KVMSAVE_STOCK_BUFSIZE, start)) < 0)
        return -1;
    skip = start < s->info.streamOffset ? s->info.streamOffset - start : 0;
    if (n <= skip) {
        s->fileSize = start; /* it shrank under us */
        return 0;
    }
    s->inNext = s->in + skip;
    s->inAvail = n - skip;
    s->readPos = start + n;
    return 1;
}


static int
kvmsaveStockReadRaw(kvmsaveStockImage *s, const unsigned char **data, size_t *len)
{
    int rc;

    if (s->inAvail == 0 && (rc = kvmsaveStockFill(s)) <= 0)
        return rc;
    *data = s->inNext;
    *len = s->inAvail;
    s->lastProgress = s->inAvail;
    s->inNext += s->inAvail;
    s->inAvail = 0;
    return 1;
}


static int
kvmsaveStockReadDecoded(kvmsaveStockImage *s, const unsigned char **data, size_t *len)
{
    const char *name = kvmsaveCompressToString(s->info.compressed);
    size_t produced = 0;

    while (!s->streamEnded && produced < KVMSAVE_STOCK_BUFSIZE) {
        const unsigned char *in;
        size_t inLen;
        size_t n = 0;
        size_t used;
        const char *why = NULL;
        int rc;

        if (s->inAvail == 0 && kvmsaveStockFill(s) < 0)
            return -1;
        in = s->inNext;
        inLen = s->inAvail;
        rc = kvmsaveDecompress(s->dec, &in, &inLen, s->out + produced,
                               KVMSAVE_STOCK_BUFSIZE - produced, &n, &why);
        used = s->inAvail - inLen;
        s->inNext = in;
        s->inAvail = inLen;
        s->lastProgress += used;
        produced += n;

        if (rc == 0 && n == 0 && used == 0) {
            if (s->inAvail == 0 && s->readPos >= s->fileSize) {
                virReportError(VIR_ERR_OPERATION_FAILED,
                               _("save image '%s' of stock libvirt is truncated: its %s stream ends early, at offset %llu (the file was cut short)"),
                               s->path, name, kvmsaveStockInputOffset(s));
                return -1;
            }
            if (s->inAvail > 0) {
                rc = -1;
                why = N_("the decoder made no progress");
            }
        }
        if (rc < 0) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("save image '%s' of stock libvirt is damaged: its %s stream does not decompress near offset %llu (%s)"),
                           s->path, name, kvmsaveStockInputOffset(s), _(why));
            return -1;
        }
        if (rc > 0) {
            /* "gzip -c" and the like write one stream, nothing after it. */
            if (s->inAvail > 0 || s->readPos < s->fileSize) {
                virReportError(VIR_ERR_OPERATION_FAILED,
                               _("save image '%s' of stock libvirt is damaged: data follows the end of its %s stream at offset %llu"),
                               s->path, name, kvmsaveStockInputOffset(s));
                return -1;
            }
            s->streamEnded = true;
        }
    }
    if (produced == 0)
        return 0;
    *data = s->out;
    *len = produced;
    return 1;
}


int
kvmsaveStockImageRead(kvmsaveStockImage *s,
                      const unsigned char **data, size_t *len)
{
    int rc;

    if (s->err) {
        virSetError(s->err);
        return -1;
    }
    if (s->ended)
        return 0;

    s->lastProgress = 0;
    rc = s->dec ? kvmsaveStockReadDecoded(s, data, len) : kvmsaveStockReadRaw(s, data, len);
    /* Without checksums, the stream's own magic is the one check before
     * QEMU sees a byte. */
    if (rc == 0 && s->info.decoded == 0) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' of stock libvirt is truncated: it ends where QEMU's stream should begin"),
                       s->path);
        rc = -1;
    } else if (rc > 0 && s->info.decoded == 0 &&
               (*len < 4 || memcmp(*data, KVMSAVE_STOCK_QEMU_MAGIC, 4) != 0)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' of stock libvirt is damaged: what follows its header is not QEMU's migration stream"),
                       s->path);
        rc = -1;
    }

    if (rc > 0)
        s->info.decoded += *len;
    else if (rc == 0)
        s->ended = true;
    else
        s->err = virErrorCopyNew(virGetLastError());
    return rc;
}


/* Copy the stored stream to the end of @fd: in the kernel where the file
 * system can (no bytes through this process), else through a buffer. */
static int
kvmsaveStockCopyStream(kvmsaveStockImage *s, int fd, const char *path)
{
    loff_t in = s->info.streamOffset;
    uint64_t left = s->info.streamSize;
    g_autofree unsigned char *buf = NULL;

    while (left > 0) {
        ssize_t n;

        if (!buf) {
            n = copy_file_range(s->fd, &in, fd, NULL, MIN(left, 1U << 30), 0);
            if (n < 0 && (errno == EXDEV || errno == ENOSYS ||
                          errno == EOPNOTSUPP || errno == EINVAL)) {
                buf = g_malloc(KVMSAVE_STOCK_BUFSIZE);
                continue;
            }
        } else if ((n = pread(s->fd, buf, MIN(left, KVMSAVE_STOCK_BUFSIZE), in)) > 0) {
            if (full_write(fd, buf, n) != n) {
                kvmsaveReportWriteError(errno, path);
                return -1;
            }
            in += n;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == ENOSPC || errno == EDQUOT)) {
            kvmsaveReportWriteError(errno, path);
            return -1;
        }
        if (n < 0) {
            virReportSystemError(errno, _("cannot copy save image '%s' to '%s'"),
                                 s->path, path);
            return -1;
        }
        if (n == 0) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("save image '%s' of stock libvirt is truncated: it shrank while it was copied"),
                           s->path);
            return -1;
        }
        left -= n;
    }
    return 0;
}


unsigned char *
kvmsaveStockHeaderFormat(const char *magic, const char *xml, const char *cookie,
                         bool running, int compressed, size_t minData,
                         size_t *len)
{
    size_t xmlLen = strlen(xml) + 1;
    size_t cookieLen = cookie ? strlen(cookie) + 1 : 0;
    size_t dataLen = MAX(minData, xmlLen + cookieLen);
    unsigned char *buf;
    uint32_t f[5];

    if (dataLen > KVMSAVE_IMAGE_HEADER_MAX) {
        virReportError(VIR_ERR_INVALID_ARG,
                       _("domain XML too large for a save image (%zu bytes)"),
                       xmlLen - 1);
        return NULL;
    }
    *len = KVMSAVE_STOCK_HEADER_LEN + dataLen;
    buf = g_malloc0(*len);
    memcpy(buf, magic, KVMSAVE_STOCK_MAGIC_LEN);
    f[0] = KVMSAVE_STOCK_VERSION;
    f[1] = dataLen;
    f[2] = running;
    f[3] = compressed;
    f[4] = cookieLen ? xmlLen : 0;
    memcpy(buf + KVMSAVE_STOCK_MAGIC_LEN, f, sizeof(f));
    memcpy(buf + KVMSAVE_STOCK_HEADER_LEN, xml, xmlLen);
    if (cookieLen)
        memcpy(buf + KVMSAVE_STOCK_HEADER_LEN + xmlLen, cookie, cookieLen);
    return buf;
}


int
kvmsaveStockImageWrite(kvmsaveStockImage *s, int fd, const char *path,
                       const char *xml, bool running)
{
    size_t xmlLen = strlen(xml) + 1;
    size_t cookieLen = s->info.cookie ? strlen(s->info.cookie) + 1 : 0;
    size_t minData = s->info.dataLen;
    g_autofree unsigned char *head = NULL;
    size_t headLen;

    /* As stock libvirt: the area keeps its size while the XML fits. Where
     * stock refuses larger XML, a new file can give it room; but not a
     * sparse one, whose mapped-ram stream records file offsets. */
    if (xmlLen + cookieLen > minData &&
        s->info.compressed == KVMSAVE_COMPRESS_SPARSE) {
        virReportError(VIR_ERR_OPERATION_UNSUPPORTED,
                       _("the new domain XML does not fit into the %u bytes the sparse save image '%s' has for it, and that room cannot grow, since QEMU's stream in it records file offsets; shorten the XML"),
                       s->info.dataLen, s->path);
        return -1;
    }
    if (xmlLen + cookieLen > minData)
        minData = xmlLen + cookieLen + KVMSAVE_STOCK_XML_ROOM;
    /* Marked incomplete until the stream is there, as stock does. */
    if (!(head = kvmsaveStockHeaderFormat(KVMSAVE_STOCK_PARTIAL, xml,
                                          s->info.cookie, running,
                                          s->info.compressed, minData,
                                          &headLen)))
        return -1;
    if (full_write(fd, head, headLen) != headLen) {
        kvmsaveReportWriteError(errno, path);
        return -1;
    }
    if (kvmsaveStockCopyStream(s, fd, path) < 0)
        return -1;
    if (pwrite(fd, KVMSAVE_STOCK_MAGIC, KVMSAVE_STOCK_MAGIC_LEN, 0) !=
        KVMSAVE_STOCK_MAGIC_LEN) {
        kvmsaveReportWriteError(errno, path);
        return -1;
    }
    if (fdatasync(fd) < 0) {
        virReportSystemError(errno, _("cannot flush save image '%s' to disk"),
                             path);
        return -1;
    }
    return 0;
}


static void *
kvmsaveStockBackendOpen(kvmsaveImageFile *f, const unsigned char *buf,
                        size_t len, kvmsaveImageHeader **hdr,
                        kvmsaveImageTrailer *tr)
{
    kvmsaveStockImage *s = kvmsaveStockImageOpen(f->fd, f->direct, f->path,
                                                 f->size, buf, len, hdr, tr);

    /* Stock images record no time of their own. */
    if (s)
        tr->completed = f->mtime;
    return s;
}


static void
kvmsaveStockBackendFree(void *data)
{
    kvmsaveStockImageFree(data);
}


static int
kvmsaveStockBackendRead(void *data, const unsigned char **buf, size_t *len)
{
    return kvmsaveStockImageRead(data, buf, len);
}


static size_t
kvmsaveStockBackendLastProgress(void *data)
{
    return kvmsaveStockImageLastProgress(data);
}


static const char *
kvmsaveStockBackendCookie(void *data)
{
    return kvmsaveStockImageInfo(data)->cookie;
}


/* A stock image stays one (where stock libvirt rewrites it in place). */
static int
kvmsaveStockBackendRewrite(void *data, int fd, const char *path,
                           const char *xml, bool running)
{
    return kvmsaveStockImageWrite(data, fd, path, xml, running);
}


const kvmsaveImageBackend kvmsaveStockBackend = {
    .checksummed = false,
    .probe = kvmsaveStockImageProbe,
    .open = kvmsaveStockBackendOpen,
    .free = kvmsaveStockBackendFree,
    .read = kvmsaveStockBackendRead,
    .lastProgress = kvmsaveStockBackendLastProgress,
    .cookie = kvmsaveStockBackendCookie,
    .rewrite = kvmsaveStockBackendRewrite,
};
