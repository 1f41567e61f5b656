/*
 * kvmsave_image.c: the kvmsave save-image format, encoded and decoded
 * (docs/image-format.md)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Pure functions on buffers, no I/O: the writer and the reader build on
 * them, and the fuzz target (tests/fuzz/imagefuzz.c) hits them directly.
 */
#include <config.h>

#include "kvmsave_imagepriv.h"
#include "kvmsave_util.h"
#include "virendian.h"
#include "virerror.h"
#include "virstring.h"

#define VIR_FROM_THIS VIR_FROM_QEMU


/* virendian.h reads integers from buffers; these are the writing side. */
static void
kvmsaveImagePutLE16(unsigned char *p, uint16_t v)
{
    uint16_t le = GUINT16_TO_LE(v);

    memcpy(p, &le, sizeof(le));
}


static void
kvmsaveImagePutLE32(unsigned char *p, uint32_t v)
{
    uint32_t le = GUINT32_TO_LE(v);

    memcpy(p, &le, sizeof(le));
}


static void
kvmsaveImagePutLE64(unsigned char *p, uint64_t v)
{
    uint64_t le = GUINT64_TO_LE(v);

    memcpy(p, &le, sizeof(le));
}


static const char *const kvmsaveImageFormatNames[] = {
    [KVMSAVE_IMAGE_ENCODING_RAW] = "raw",
    [KVMSAVE_IMAGE_ENCODING_ZSTD] = "zstd",
    [KVMSAVE_IMAGE_FORMAT_SPARSE] = "sparse",
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

bool
kvmsaveImageChecksumBad(uint32_t stored, uint32_t computed)
{
    return stored != computed && !kvmsaveImageIgnoreChecksums;
}


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
    g_free(hdr->indexData);
    g_free(hdr);
}


/* The header's string fields, in the order they are written. */
static char **
kvmsaveImageHeaderField(kvmsaveImageHeader *hdr, unsigned int tag)
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
    case KVMSAVE_IMAGE_FIELD_MAPPED: break; /* numbers, see below */
    case KVMSAVE_IMAGE_FIELD_PAGEINDEX: break;
    }
    return NULL;
}
#define KVMSAVE_IMAGE_FIELD_LAST KVMSAVE_IMAGE_FIELD_PAGEINDEX


/* The fields kept as numbers, as they are written; NULL when absent. */
typedef struct {
    char *streams;
    char *mapped;
    char *pageIndex;
} kvmsaveImageNumberFields;

static void
kvmsaveImageNumberFieldsClear(kvmsaveImageNumberFields *n)
{
    g_free(n->streams);
    g_free(n->mapped);
    g_free(n->pageIndex);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(kvmsaveImageNumberFields,
                                 kvmsaveImageNumberFieldsClear);

/* PAGEINDEX: "OFFSET LENGTH CRC", of the same length whatever the
 * numbers, so that the index's offset can be put into it once the field
 * area's size is known, and a header with the index replaces one with
 * room for it (kvmsaveImageWriterReplaceHeader). */
static char *
kvmsaveImageFormatPageIndex(uint64_t offset, uint64_t len, uint32_t crc)
{
    return g_strdup_printf("%020llu %020llu %08x", (unsigned long long) offset,
                           (unsigned long long) len, crc);
}


static void
kvmsaveImageNumberFieldsInit(const kvmsaveImageHeader *hdr,
                             kvmsaveImageNumberFields *n)
{
    /* Several streams need a reader that knows them: critical. A
     * single-stream image stays readable by kvmsave 1.0 and 1.1. */
    if (hdr->streams > 1)
        n->streams = g_strdup_printf("%u", hdr->streams);
    if (hdr->mappedOffset)
        n->mapped = g_strdup_printf("%llu %u %u",
                                    (unsigned long long) hdr->mappedOffset,
                                    hdr->mappedBlock, hdr->mappedChannels);
    /* A placeholder, replaced once the offset is known. */
    if (hdr->indexReserve)
        n->pageIndex = kvmsaveImageFormatPageIndex(0, 0, 0);
}


static char *
kvmsaveImageHeaderFieldValue(kvmsaveImageHeader *hdr, unsigned int tag,
                             const kvmsaveImageNumberFields *n)
{
    char **field;

    if (tag == KVMSAVE_IMAGE_FIELD_STREAMS)
        return n->streams;
    if (tag == KVMSAVE_IMAGE_FIELD_MAPPED)
        return n->mapped;
    if (tag == KVMSAVE_IMAGE_FIELD_PAGEINDEX)
        return n->pageIndex;
    field = kvmsaveImageHeaderField(hdr, tag);
    return field ? *field : NULL;
}


/* The STREAMS field: a decimal count from 2 to KVMSAVE_IMAGE_STREAMS_MAX. */
static int
kvmsaveImageHeaderParseStreams(const unsigned char *val, size_t len,
                               const char *what, uint32_t *streams)
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


/* The MAPPED field: "OFFSET BLOCK CHANNELS", decimal. The stream begins
 * at OFFSET, past the header and on a block boundary; BLOCK is a power of
 * two. */
static int
kvmsaveImageHeaderParseMapped(const unsigned char *val, size_t len,
                              const char *what, kvmsaveImageHeader *hdr)
{
    g_autofree char *str = g_strndup((const char *) val, len);
    unsigned long long offset;
    unsigned int block;
    unsigned int channels;
    char *end;

    if (virStrToLong_ullp(str, &end, 10, &offset) < 0 || *end != ' ' ||
        virStrToLong_uip(end + 1, &end, 10, &block) < 0 || *end != ' ' ||
        virStrToLong_uip(end + 1, &end, 10, &channels) < 0 || *end ||
        block < KVMSAVE_IMAGE_MAPPED_BLOCK_MIN ||
        block > KVMSAVE_IMAGE_MAPPED_BLOCK_MAX || (block & (block - 1)) ||
        offset < hdr->headerSize || offset % block ||
        offset > KVMSAVE_IMAGE_MAPPED_OFFSET_MAX ||
        channels > KVMSAVE_IMAGE_STREAMS_MAX) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' has a corrupt header: invalid sparse layout '%s'"),
                       what, str);
        return -1;
    }
    hdr->mappedOffset = offset;
    hdr->mappedBlock = block;
    hdr->mappedChannels = channels;
    return 0;
}


/* The PAGEINDEX field: "OFFSET LENGTH CRC", decimal, decimal, hex. The
 * index begins at the first block after the header checksum, which ends
 * at @end + 4, and lies inside the header. */
static int
kvmsaveImageHeaderParsePageIndex(const unsigned char *val, size_t len,
                                 const char *what, size_t end,
                                 kvmsaveImageHeader *hdr)
{
    g_autofree char *str = g_strndup((const char *) val, len);
    unsigned long long offset;
    unsigned long long length;
    unsigned int crc;
    char *p;

    if (virStrToLong_ullp(str, &p, 10, &offset) < 0 || *p != ' ' ||
        virStrToLong_ullp(p + 1, &p, 10, &length) < 0 || *p != ' ' ||
        virStrToLong_uip(p + 1, &p, 16, &crc) < 0 || *p ||
        offset != VIR_ROUND_UP(end + 4, KVMSAVE_IMAGE_ALIGN) ||
        offset > hdr->headerSize || length > hdr->headerSize - offset) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' has a corrupt header: invalid page index field '%s'"),
                       what, str);
        return -1;
    }
    hdr->indexOffset = offset;
    hdr->indexLen = length;
    hdr->indexCrc = crc;
    hdr->indexReserve = hdr->headerSize - offset;
    return 0;
}


/* A page index is of one stream of chunks. */
static int
kvmsaveImageHeaderCheckPageIndex(const kvmsaveImageHeader *hdr,
                                 const char *what)
{
    if (hdr->indexOffset && (hdr->streams > 1 || hdr->mappedOffset)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' has a corrupt header: a page index belongs to an image of one stream in chunks"),
                       what);
        return -1;
    }
    return 0;
}


/* The header's size without the page index's room, and the size and
 * count of its fields. */
static size_t
kvmsaveImageHeaderMeasure(kvmsaveImageHeader *hdr,
                          const kvmsaveImageNumberFields *n,
                          size_t *fieldsLen, unsigned int *nfields)
{
    unsigned int tag;

    *fieldsLen = 0;
    *nfields = 0;
    for (tag = 1; tag <= KVMSAVE_IMAGE_FIELD_LAST; tag++) {
        char *val = kvmsaveImageHeaderFieldValue(hdr, tag, n);
        if (val) {
            *fieldsLen += 8 + VIR_ROUND_UP(strlen(val), 8);
            (*nfields)++;
        }
    }
    return VIR_ROUND_UP(KVMSAVE_IMAGE_FIXED_HEADER_LEN + *fieldsLen + 4,
                        KVMSAVE_IMAGE_ALIGN);
}


size_t
kvmsaveImageHeaderIndexRoom(kvmsaveImageHeader *hdr)
{
    g_auto(kvmsaveImageNumberFields) numbers = { 0 };
    uint64_t reserve = hdr->indexReserve;
    size_t fieldsLen, total;
    unsigned int nfields;

    /* Measured with the field, whose size does not depend on the room. */
    hdr->indexReserve = 1;
    kvmsaveImageNumberFieldsInit(hdr, &numbers);
    total = kvmsaveImageHeaderMeasure(hdr, &numbers, &fieldsLen, &nfields);
    hdr->indexReserve = reserve;
    if (total > KVMSAVE_IMAGE_HEADER_MAX)
        return 0;
    return KVMSAVE_IMAGE_HEADER_MAX - total;
}


/* The page index goes into the header's padding from @offset, its room
 * past it: the header's size, 0 when it does not fit. */
static size_t
kvmsaveImageHeaderPlaceIndex(kvmsaveImageHeader *hdr, size_t offset,
                             kvmsaveImageNumberFields *n)
{
    if (hdr->indexLen > hdr->indexReserve ||
        (hdr->indexLen && !hdr->indexData) ||
        (hdr->indexReserve && (hdr->streams > 1 || hdr->mappedOffset))) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("invalid page index for a save image: %llu bytes in room for %llu, %u streams"),
                       (unsigned long long) hdr->indexLen,
                       (unsigned long long) hdr->indexReserve, hdr->streams);
        return 0;
    }
    hdr->indexOffset = 0;
    hdr->indexCrc = 0;
    if (!hdr->indexReserve)
        return offset;
    if (hdr->indexReserve > KVMSAVE_IMAGE_HEADER_MAX - offset) {
        virReportError(VIR_ERR_INVALID_ARG,
                       _("no room for a page index of up to %llu bytes in the header of a save image (at most %d bytes, %zu of them taken)"),
                       (unsigned long long) hdr->indexReserve,
                       KVMSAVE_IMAGE_HEADER_MAX, offset);
        return 0;
    }
    hdr->indexOffset = offset;
    if (hdr->indexLen)
        hdr->indexCrc = kvmsaveCrc32c(0, hdr->indexData, hdr->indexLen);
    g_free(n->pageIndex);
    n->pageIndex = kvmsaveImageFormatPageIndex(offset, hdr->indexLen,
                                               hdr->indexCrc);
    return offset + VIR_ROUND_UP(hdr->indexReserve, KVMSAVE_IMAGE_ALIGN);
}


int
kvmsaveImageHeaderEncode(kvmsaveImageHeader *hdr,
                         unsigned char **buf, size_t *len)
{
    size_t fieldsLen;
    size_t total;
    size_t off;
    unsigned int nfields;
    unsigned int tag;
    g_autofree unsigned char *out = NULL;
    g_auto(kvmsaveImageNumberFields) numbers = { 0 };

    if (!hdr->xml) {
        virReportError(VIR_ERR_INTERNAL_ERROR, "%s",
                       _("save image header lacks the domain XML"));
        return -1;
    }

    kvmsaveImageNumberFieldsInit(hdr, &numbers);
    total = kvmsaveImageHeaderMeasure(hdr, &numbers, &fieldsLen, &nfields);
    if (total > KVMSAVE_IMAGE_HEADER_MAX) {
        virReportError(VIR_ERR_INVALID_ARG,
                       _("domain XML too large for a save image (%zu bytes)"),
                       strlen(hdr->xml));
        return -1;
    }
    if (!(total = kvmsaveImageHeaderPlaceIndex(hdr, total, &numbers)))
        return -1;

    out = g_malloc0(total);
    memcpy(out, KVMSAVE_IMAGE_MAGIC, KVMSAVE_IMAGE_MAGIC_LEN);
    kvmsaveImagePutLE16(out + 8, hdr->major);
    kvmsaveImagePutLE16(out + 10, hdr->minor);
    kvmsaveImagePutLE32(out + 12, total);
    memcpy(out + 16, hdr->uuid, VIR_UUID_BUFLEN);
    kvmsaveImagePutLE64(out + 32, hdr->created);
    kvmsaveImagePutLE32(out + 40, hdr->flags);
    kvmsaveImagePutLE32(out + 44, hdr->chunkSize);
    kvmsaveImagePutLE32(out + 48, nfields);
    kvmsaveImagePutLE32(out + 52, fieldsLen);

    off = KVMSAVE_IMAGE_FIXED_HEADER_LEN;
    for (tag = 1; tag <= KVMSAVE_IMAGE_FIELD_LAST; tag++) {
        char *val = kvmsaveImageHeaderFieldValue(hdr, tag, &numbers);
        size_t vlen;

        if (!val)
            continue;
        vlen = strlen(val);
        kvmsaveImagePutLE16(out + off, tag);
        kvmsaveImagePutLE16(out + off + 2, tag == KVMSAVE_IMAGE_FIELD_STREAMS ||
                            tag == KVMSAVE_IMAGE_FIELD_MAPPED ?
                            KVMSAVE_IMAGE_FIELD_CRITICAL : 0);
        kvmsaveImagePutLE32(out + off + 4, vlen);
        memcpy(out + off + 8, val, vlen);
        off += 8 + VIR_ROUND_UP(vlen, 8);
    }
    hdr->crc = kvmsaveCrc32c(0, out, off);
    kvmsaveImagePutLE32(out + off, hdr->crc);
    if (hdr->indexLen)
        memcpy(out + hdr->indexOffset, hdr->indexData, hdr->indexLen);
    hdr->headerSize = total;
    if (hdr->mappedOffset && hdr->mappedOffset < total) {
        virReportError(VIR_ERR_INVALID_ARG,
                       _("domain XML too large for a sparse save image (%zu bytes)"),
                       strlen(hdr->xml));
        return -1;
    }

    *len = total;
    *buf = g_steal_pointer(&out);
    return 0;
}


/* The fixed part: magic, version, sizes, the field count and area. */
static int
kvmsaveImageHeaderDecodeFixed(const unsigned char *buf, size_t len,
                              const char *what, kvmsaveImageHeader *hdr,
                              uint32_t *nfields, uint32_t *fieldsLen)
{
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

    hdr->major = virReadBufInt16LE(buf + 8);
    hdr->minor = virReadBufInt16LE(buf + 10);
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

    hdr->headerSize = virReadBufInt32LE(buf + 12);
    memcpy(hdr->uuid, buf + 16, VIR_UUID_BUFLEN);
    hdr->created = (int64_t) virReadBufInt64LE(buf + 32);
    hdr->flags = virReadBufInt32LE(buf + 40);
    hdr->chunkSize = virReadBufInt32LE(buf + 44);
    *nfields = virReadBufInt32LE(buf + 48);
    *fieldsLen = virReadBufInt32LE(buf + 52);

    if (hdr->headerSize % KVMSAVE_IMAGE_ALIGN != 0 ||
        hdr->headerSize > KVMSAVE_IMAGE_HEADER_MAX ||
        *fieldsLen > hdr->headerSize - KVMSAVE_IMAGE_FIXED_HEADER_LEN - 4 ||
        hdr->headerSize < KVMSAVE_IMAGE_FIXED_HEADER_LEN + 4) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' has a corrupt header (header size %u, field area %u bytes)"),
                       what, hdr->headerSize, *fieldsLen);
        return -1;
    }
    return 0;
}


/* The tagged fields in [KVMSAVE_IMAGE_FIXED_HEADER_LEN, @end). */
static int
kvmsaveImageHeaderDecodeFields(const unsigned char *buf, size_t end,
                               uint32_t nfields, const char *what,
                               kvmsaveImageHeader *hdr)
{
    size_t off = KVMSAVE_IMAGE_FIXED_HEADER_LEN;
    uint32_t i;

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
        tag = virReadBufInt16LE(buf + off);
        fflags = virReadBufInt16LE(buf + off + 2);
        vlen = virReadBufInt32LE(buf + off + 4);
        if (vlen > end - off - 8) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("save image '%s' has a corrupt header: field %u (tag %u) overruns the field area"),
                           what, i, tag);
            return -1;
        }
        field = tag >= 1 && tag <= KVMSAVE_IMAGE_FIELD_LAST ?
            kvmsaveImageHeaderField(hdr, tag) : NULL;
        if (tag == KVMSAVE_IMAGE_FIELD_STREAMS) {
            if (kvmsaveImageHeaderParseStreams(buf + off + 8, vlen, what,
                                               &hdr->streams) < 0)
                return -1;
        } else if (tag == KVMSAVE_IMAGE_FIELD_MAPPED) {
            if (kvmsaveImageHeaderParseMapped(buf + off + 8, vlen, what, hdr) < 0)
                return -1;
        } else if (tag == KVMSAVE_IMAGE_FIELD_PAGEINDEX) {
            if (kvmsaveImageHeaderParsePageIndex(buf + off + 8, vlen, what,
                                                 end, hdr) < 0)
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
        off += 8 + VIR_ROUND_UP(vlen, 8);
        if (off > end)
            off = end;
    }
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
    size_t end;

    if (kvmsaveImageHeaderDecodeFixed(buf, len, what, hdr, &nfields, &fieldsLen) < 0)
        return -1;
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

    crc = virReadBufInt32LE(buf + end);
    hdr->crc = kvmsaveCrc32c(0, buf, end);
    if (kvmsaveImageChecksumBad(crc, hdr->crc)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: header checksum mismatch (stored %08x, computed %08x)"),
                       what, crc, hdr->crc);
        return -1;
    }
    if (kvmsaveImageHeaderDecodeFields(buf, end, nfields, what, hdr) < 0)
        return -1;

    if (!hdr->xml || !*hdr->xml) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' has no domain XML in its header"), what);
        return -1;
    }
    /* QEMU writes a sparse image's one stream itself. */
    if (hdr->mappedOffset && hdr->streams > 1) {
        g_autofree char *streams = g_strdup_printf("%u", hdr->streams);

        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' has a corrupt header: invalid stream count '%s'"),
                       what, streams);
        return -1;
    }
    if (kvmsaveImageHeaderCheckPageIndex(hdr, what) < 0)
        return -1;

    *ret = g_steal_pointer(&hdr);
    return 0;
}


void
kvmsaveImageTrailerEncode(const kvmsaveImageTrailer *tr,
                          unsigned char buf[KVMSAVE_IMAGE_TRAILER_LEN])
{
    memset(buf, 0, KVMSAVE_IMAGE_TRAILER_LEN);
    memcpy(buf, KVMSAVE_IMAGE_TRAILER_MAGIC, KVMSAVE_IMAGE_MAGIC_LEN);
    kvmsaveImagePutLE64(buf + 8, tr->chunks);
    kvmsaveImagePutLE64(buf + 16, tr->streamBytes);
    kvmsaveImagePutLE64(buf + 24, tr->dataEnd);
    kvmsaveImagePutLE32(buf + 32, tr->headerCrc);
    kvmsaveImagePutLE32(buf + 36, tr->tableCrc);
    kvmsaveImagePutLE64(buf + 40, tr->completed);
    kvmsaveImagePutLE32(buf + 60, kvmsaveCrc32c(0, buf, 60));
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
    if (kvmsaveImageChecksumBad(virReadBufInt32LE(buf + 60), crc)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: trailer checksum mismatch (stored %08x, computed %08x)"),
                       what, virReadBufInt32LE(buf + 60), crc);
        return -1;
    }
    tr->chunks = virReadBufInt64LE(buf + 8);
    tr->streamBytes = virReadBufInt64LE(buf + 16);
    tr->dataEnd = virReadBufInt64LE(buf + 24);
    tr->headerCrc = virReadBufInt32LE(buf + 32);
    tr->tableCrc = virReadBufInt32LE(buf + 36);
    tr->completed = (int64_t) virReadBufInt64LE(buf + 40);
    return 0;
}


void
kvmsaveImageChunkHeaderEncode(const kvmsaveImageChunkHeader *ch,
                              unsigned char buf[KVMSAVE_IMAGE_CHUNK_HEADER_LEN])
{
    memcpy(buf, KVMSAVE_IMAGE_CHUNK_MAGIC, 4);
    kvmsaveImagePutLE16(buf + 4, ch->encoding);
    kvmsaveImagePutLE16(buf + 6, ch->stream);
    kvmsaveImagePutLE64(buf + 8, ch->index);
    kvmsaveImagePutLE32(buf + 16, ch->stored);
    kvmsaveImagePutLE32(buf + 20, ch->raw);
    kvmsaveImagePutLE32(buf + 24, ch->crc);
    kvmsaveImagePutLE32(buf + 28, kvmsaveCrc32c(0, buf, 28));
}


int
kvmsaveImageChunkHeaderDecode(const unsigned char buf[KVMSAVE_IMAGE_CHUNK_HEADER_LEN],
                              const char *what, uint64_t index, uint64_t off,
                              kvmsaveImageChunkHeader *ch)
{
    if (memcmp(buf, KVMSAVE_IMAGE_CHUNK_MAGIC, 4) != 0) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk %llu at offset %llu has a bad magic"),
                       what, (unsigned long long) index, (unsigned long long) off);
        return -1;
    }
    if (kvmsaveImageChecksumBad(virReadBufInt32LE(buf + 28),
                                kvmsaveCrc32c(0, buf, 28))) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk %llu at offset %llu has a bad header checksum"),
                       what, (unsigned long long) index, (unsigned long long) off);
        return -1;
    }
    ch->encoding = virReadBufInt16LE(buf + 4);
    ch->stream = virReadBufInt16LE(buf + 6);
    ch->index = virReadBufInt64LE(buf + 8);
    ch->stored = virReadBufInt32LE(buf + 16);
    ch->raw = virReadBufInt32LE(buf + 20);
    ch->crc = virReadBufInt32LE(buf + 24);
    return 0;
}
