/*
 * kvmsave_decompress.c: stream decoders for the compressed save images of
 * stock libvirt (gzip, bzip2, xz, lzop, zstd)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <bzlib.h>
#include <lzma.h>
#include <lzo/lzo1x.h>
#include <zlib.h>
#include <zstd.h>

#include "kvmsave_decompress.h"
#include "virendian.h"

/* Decoder memory for xz (xz -9 needs 65 MiB). */
#define KVMSAVE_XZ_MEMLIMIT (256ULL * 1024 * 1024)

#define VIR_FROM_THIS VIR_FROM_QEMU


static const char *const kvmsaveCompressNames[] = {
    [KVMSAVE_COMPRESS_RAW] = "raw",
    [KVMSAVE_COMPRESS_GZIP] = "gzip",
    [KVMSAVE_COMPRESS_BZIP2] = "bzip2",
    [KVMSAVE_COMPRESS_XZ] = "xz",
    [KVMSAVE_COMPRESS_LZOP] = "lzop",
    [KVMSAVE_COMPRESS_ZSTD] = "zstd",
    [KVMSAVE_COMPRESS_SPARSE] = "sparse",
};
G_STATIC_ASSERT(G_N_ELEMENTS(kvmsaveCompressNames) == KVMSAVE_COMPRESS_LAST);


const char *
kvmsaveCompressToString(int format)
{
    if (format < 0 || format >= KVMSAVE_COMPRESS_LAST)
        return NULL;
    return kvmsaveCompressNames[format];
}


/* lzop's container (lzop 1.04, src/lzop.h and p_lzo.c): a header, then
 * blocks of at most 64 MiB, each with its lengths and the checksums the
 * header's flags ask for, then a zero length. Integers are big-endian. */
static const unsigned char lzopMagic[9] = {
    0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a
};
#define LZOP_VERSION 0x1040         /* the newest format this reads */
#define LZOP_BLOCK_MAX (64 * 1024 * 1024)
#define LZOP_F_ADLER32_D 0x00000001U
#define LZOP_F_ADLER32_C 0x00000002U
#define LZOP_F_H_EXTRA_FIELD 0x00000040U
#define LZOP_F_CRC32_D 0x00000100U
#define LZOP_F_CRC32_C 0x00000200U
#define LZOP_F_MULTIPART 0x00000400U
#define LZOP_F_H_FILTER 0x00000800U
#define LZOP_F_H_CRC32 0x00001000U
/* Bits no lzop sets: F_MASK 0x3fff, the OS (0xff000000) and character set
 * (0x00f00000) fields aside. */
#define LZOP_F_RESERVED 0x000fc000U
/* The methods lzop writes, all LZO1X streams. */
#define LZOP_M_LZO1X_1 1
#define LZOP_M_LZO1X_999 3

typedef enum {
    LZOP_HEADER,
    LZOP_EXTRA,                 /* the optional extra field */
    LZOP_BLOCK_HEAD,
    LZOP_BLOCK_DATA,
    LZOP_OUTPUT,                /* a decoded block, handed out */
    LZOP_END,
} kvmsaveLzopState;

typedef struct _kvmsaveLzop kvmsaveLzop;
struct _kvmsaveLzop {
    kvmsaveLzopState state;
    uint32_t flags;
    /* Input gathered until a header or a whole block is there. */
    unsigned char *gather;
    size_t gatherLen;
    size_t gatherSize;
    /* The block being read: its lengths and checksums. */
    uint32_t dstLen;
    uint32_t srcLen;
    size_t headLen;             /* bytes of its block header */
    uint32_t adlerD, crcD, adlerC, crcC;
    /* Its decoded bytes. */
    unsigned char *block;
    size_t blockSize;
    size_t blockOut;            /* handed out so far */
};

struct _kvmsaveDecompressor {
    int format;
    z_stream z;
    bz_stream bz;
    lzma_stream xz;
    kvmsaveLzop lzop;
    ZSTD_DCtx *zstd;
};


kvmsaveDecompressor *
kvmsaveDecompressorNew(int format)
{
    g_autoptr(kvmsaveDecompressor) d = g_new0(kvmsaveDecompressor, 1);
    lzma_stream xz = LZMA_STREAM_INIT;

    d->format = format;
    d->xz = xz;
    switch ((kvmsaveCompress) format) {
    case KVMSAVE_COMPRESS_GZIP:
        /* 16: the gzip wrapper only, with its CRC-32 and length checked. */
        if (inflateInit2(&d->z, 15 + 16) != Z_OK)
            abort(); /* out of memory, as g_malloc */
        break;
    case KVMSAVE_COMPRESS_BZIP2:
        if (BZ2_bzDecompressInit(&d->bz, 0, 0) != BZ_OK)
            abort();
        break;
    case KVMSAVE_COMPRESS_XZ:
        /* One stream, as "xz -c" writes: what follows it is not ours.
         * xz -9 needs 65 MiB to decode; a header asking for more is not
         * a stock image's, and must not make us allocate it. */
        if (lzma_stream_decoder(&d->xz, KVMSAVE_XZ_MEMLIMIT, 0) != LZMA_OK)
            abort();
        break;
    case KVMSAVE_COMPRESS_LZOP:
        if (lzo_init() != LZO_E_OK)
            abort(); /* a liblzo2 built for another ABI */
        break;
    case KVMSAVE_COMPRESS_ZSTD:
        /* libzstd's default window limit (128 MiB) covers every level
         * "zstd -c" writes without --long. */
        if (!(d->zstd = ZSTD_createDCtx()))
            abort();
        break;
    case KVMSAVE_COMPRESS_RAW:
    case KVMSAVE_COMPRESS_SPARSE: /* QEMU reads it itself */
    case KVMSAVE_COMPRESS_LAST:
    default:
        return NULL;
    }
    return g_steal_pointer(&d);
}


void
kvmsaveDecompressorFree(kvmsaveDecompressor *d)
{
    if (!d)
        return;
    switch ((kvmsaveCompress) d->format) {
    case KVMSAVE_COMPRESS_GZIP:
        inflateEnd(&d->z);
        break;
    case KVMSAVE_COMPRESS_BZIP2:
        BZ2_bzDecompressEnd(&d->bz);
        break;
    case KVMSAVE_COMPRESS_XZ:
        lzma_end(&d->xz);
        break;
    case KVMSAVE_COMPRESS_LZOP:
        g_free(d->lzop.gather);
        g_free(d->lzop.block);
        break;
    case KVMSAVE_COMPRESS_ZSTD:
        ZSTD_freeDCtx(d->zstd);
        break;
    case KVMSAVE_COMPRESS_RAW:
    case KVMSAVE_COMPRESS_SPARSE:
    case KVMSAVE_COMPRESS_LAST:
        break;
    }
    g_free(d);
}


/* The libraries take unsigned int lengths. */
#define KVMSAVE_DECOMPRESS_STEP_MAX (1U << 30)

static int
kvmsaveDecompressGzip(z_stream *z, const unsigned char **in, size_t *inLen,
                      unsigned char *out, size_t outLen, size_t *produced,
                      const char **why)
{
    int rc;

    z->next_in = (unsigned char *) *in;
    z->avail_in = MIN(*inLen, KVMSAVE_DECOMPRESS_STEP_MAX);
    z->next_out = out;
    z->avail_out = MIN(outLen, KVMSAVE_DECOMPRESS_STEP_MAX);
    rc = inflate(z, Z_NO_FLUSH);
    *produced = z->next_out - out;
    *inLen -= z->next_in - *in;
    *in = z->next_in;
    switch (rc) {
    case Z_STREAM_END:
        return 1;
    case Z_OK:
    case Z_BUF_ERROR: /* no progress possible: more input needed */
        return 0;
    case Z_MEM_ERROR:
        abort();
    default:
        *why = z->msg ? z->msg : N_("invalid gzip data");
        return -1;
    }
}


static int
kvmsaveDecompressBzip2(bz_stream *bz, const unsigned char **in, size_t *inLen,
                       unsigned char *out, size_t outLen, size_t *produced,
                       const char **why)
{
    int rc;

    bz->next_in = (char *) *in;
    bz->avail_in = MIN(*inLen, KVMSAVE_DECOMPRESS_STEP_MAX);
    bz->next_out = (char *) out;
    bz->avail_out = MIN(outLen, KVMSAVE_DECOMPRESS_STEP_MAX);
    rc = BZ2_bzDecompress(bz);
    *produced = (unsigned char *) bz->next_out - out;
    *inLen -= (const unsigned char *) bz->next_in - *in;
    *in = (const unsigned char *) bz->next_in;
    switch (rc) {
    case BZ_STREAM_END:
        return 1;
    case BZ_OK:
        return 0;
    case BZ_MEM_ERROR:
        abort();
    case BZ_DATA_ERROR_MAGIC:
        *why = N_("not bzip2 data");
        return -1;
    case BZ_DATA_ERROR:
        *why = N_("bzip2 data damaged (block checksum mismatch or invalid data)");
        return -1;
    default:
        *why = N_("bzip2 decoder failed");
        return -1;
    }
}


static int
kvmsaveDecompressXz(lzma_stream *xz, const unsigned char **in, size_t *inLen,
                    unsigned char *out, size_t outLen, size_t *produced,
                    const char **why)
{
    lzma_ret rc;

    xz->next_in = *in;
    xz->avail_in = *inLen;
    xz->next_out = out;
    xz->avail_out = outLen;
    rc = lzma_code(xz, LZMA_RUN);
    *produced = xz->next_out - out;
    *inLen -= xz->next_in - *in;
    *in = xz->next_in;
    switch (rc) {
    case LZMA_STREAM_END:
        return 1;
    case LZMA_OK:
    case LZMA_BUF_ERROR: /* no progress possible: more input needed */
        return 0;
    case LZMA_MEM_ERROR:
    case LZMA_MEMLIMIT_ERROR:
        *why = N_("xz data that needs more memory than any xz level uses");
        return -1;
    case LZMA_FORMAT_ERROR:
        *why = N_("not xz data");
        return -1;
    case LZMA_OPTIONS_ERROR:
        *why = N_("unsupported xz options");
        return -1;
    case LZMA_DATA_ERROR:
        *why = N_("xz data damaged (checksum mismatch or invalid data)");
        return -1;
    default:
        *why = N_("xz decoder failed");
        return -1;
    }
}


/* One frame, as "zstd -c" writes: the frame's end is the stream's, and
 * its content checksum (XXH64, which zstd writes by default) is checked
 * there. */
static int
kvmsaveDecompressZstd(ZSTD_DCtx *zstd, const unsigned char **in, size_t *inLen,
                      unsigned char *out, size_t outLen, size_t *produced,
                      const char **why)
{
    ZSTD_inBuffer ib = { .src = *in, .size = *inLen, .pos = 0 };
    ZSTD_outBuffer ob = { .dst = out, .size = outLen, .pos = 0 };
    size_t rc = ZSTD_decompressStream(zstd, &ob, &ib);

    *produced = ob.pos;
    /* At the end of the input *in may be NULL, which takes no offset. */
    if (ib.pos > 0) {
        *in += ib.pos;
        *inLen -= ib.pos;
    }
    if (ZSTD_isError(rc)) {
        /* libzstd's own words, static text */
        *why = ZSTD_getErrorName(rc);
        return -1;
    }
    return rc == 0 ? 1 : 0;
}


/* Gather input until @need bytes are there; false when the input ran out
 * first (all of it taken). */
static bool
kvmsaveLzopGather(kvmsaveLzop *l, const unsigned char **in, size_t *inLen, size_t need)
{
    size_t n;

    if (l->gatherLen >= need)
        return true;
    if (need > l->gatherSize) {
        l->gather = g_realloc(l->gather, need);
        l->gatherSize = need;
    }
    if ((n = MIN(need - l->gatherLen, *inLen)) == 0)
        return false;
    memcpy(l->gather + l->gatherLen, *in, n);
    l->gatherLen += n;
    *in += n;
    *inLen -= n;
    return l->gatherLen >= need;
}


/* The length of the header that begins with the @len bytes at @p, or as
 * much of it as those bytes tell (more may then be needed). */
static size_t
kvmsaveLzopHeaderLen(const unsigned char *p, size_t len)
{
    size_t n = sizeof(lzopMagic) + 2;
    unsigned int version;
    bool v940;

    if (len < n)
        return n;
    version = (p[9] << 8) | p[10];
    v940 = version >= 0x0940;
    /* lib version, [needed version], method, [level], flags */
    n += 2 + (v940 ? 2 : 0) + 1 + (v940 ? 1 : 0) + 4;
    if (len < n)
        return n;
    /* [filter], mode, mtime low, [mtime high], name length */
    n += (virReadBufInt32BE(p + n - 4) & LZOP_F_H_FILTER ? 4 : 0) + 4 + 4 +
        (v940 ? 4 : 0) + 1;
    if (len < n)
        return n;
    /* the name, the header's checksum */
    return n + p[n - 1] + 4;
}


/* The header, complete in l->gather: check it as lzop does. */
static int
kvmsaveLzopParseHeader(kvmsaveLzop *l, size_t len, const char **why)
{
    const unsigned char *p = l->gather;
    unsigned int version = (p[9] << 8) | p[10];
    size_t off = 13;
    unsigned int method;
    uint32_t sum;

    if (memcmp(p, lzopMagic, sizeof(lzopMagic)) != 0) {
        *why = N_("not lzop data");
        return -1;
    }
    if (version < 0x0900 || ((p[11] << 8) | p[12]) < 0x0900) {
        *why = N_("lzop data of a version before 0.90");
        return -1;
    }
    if (version >= 0x0940) {
        unsigned int needed = (p[off] << 8) | p[off + 1];

        if (needed > LZOP_VERSION || needed < 0x0900) {
            *why = N_("lzop data that needs a newer lzop");
            return -1;
        }
        off += 2;
    }
    method = p[off];
    off += version >= 0x0940 ? 2 : 1;
    l->flags = virReadBufInt32BE(p + off);

    sum = virReadBufInt32BE(p + len - 4);
    if (sum != (l->flags & LZOP_F_H_CRC32 ?
                crc32(0, p + 9, len - 13) : adler32(1, p + 9, len - 13))) {
        *why = N_("lzop header checksum mismatch");
        return -1;
    }
    if (method < LZOP_M_LZO1X_1 || method > LZOP_M_LZO1X_999) {
        *why = N_("lzop data of an unknown method");
        return -1;
    }
    if (l->flags & (LZOP_F_RESERVED | LZOP_F_H_FILTER | LZOP_F_MULTIPART)) {
        *why = N_("lzop data with a filter, several parts or unknown flags");
        return -1;
    }
    return 0;
}


/* The block header (lengths, then the checksums the flags ask for), at
 * least 8 bytes of it in l->gather: its length, or -1. */
static int
kvmsaveLzopParseBlockHead(kvmsaveLzop *l, const char **why)
{
    const unsigned char *p = l->gather;
    size_t n = 8;

    l->dstLen = virReadBufInt32BE(p);
    l->srcLen = virReadBufInt32BE(p + 4);
    if (l->dstLen == 0)
        return 4;
    if (l->dstLen > LZOP_BLOCK_MAX || l->srcLen == 0 || l->srcLen > l->dstLen) {
        *why = N_("lzop block of an invalid length");
        return -1;
    }
    n += (l->flags & LZOP_F_ADLER32_D ? 4 : 0) + (l->flags & LZOP_F_CRC32_D ? 4 : 0);
    if (l->srcLen < l->dstLen)
        n += (l->flags & LZOP_F_ADLER32_C ? 4 : 0) + (l->flags & LZOP_F_CRC32_C ? 4 : 0);
    return n;
}


/* l->gather holds the whole block header: its checksums. */
static void
kvmsaveLzopTakeBlockSums(kvmsaveLzop *l)
{
    const unsigned char *p = l->gather + 8;

    if (l->flags & LZOP_F_ADLER32_D) {
        l->adlerD = virReadBufInt32BE(p);
        p += 4;
    }
    if (l->flags & LZOP_F_CRC32_D) {
        l->crcD = virReadBufInt32BE(p);
        p += 4;
    }
    if (l->srcLen < l->dstLen && (l->flags & LZOP_F_ADLER32_C)) {
        l->adlerC = virReadBufInt32BE(p);
        p += 4;
    }
    if (l->srcLen < l->dstLen && (l->flags & LZOP_F_CRC32_C))
        l->crcC = virReadBufInt32BE(p);
}


/* The block's data, complete in l->gather: checked, decoded into
 * l->block, checked again. */
static int
kvmsaveLzopDecodeBlock(kvmsaveLzop *l, const char **why)
{
    const unsigned char *src = l->gather;
    lzo_uint n = l->dstLen;

    if (l->srcLen < l->dstLen &&
        (((l->flags & LZOP_F_ADLER32_C) && adler32(1, src, l->srcLen) != l->adlerC) ||
         ((l->flags & LZOP_F_CRC32_C) && crc32(0, src, l->srcLen) != l->crcC))) {
        *why = N_("lzop block checksum mismatch (compressed data)");
        return -1;
    }
    if (l->dstLen > l->blockSize) {
        g_free(l->block);
        l->block = g_malloc(l->dstLen);
        l->blockSize = l->dstLen;
    }
    if (l->srcLen == l->dstLen) {
        memcpy(l->block, src, l->dstLen); /* stored as it was */
    } else if (lzo1x_decompress_safe(src, l->srcLen, l->block, &n, NULL) != LZO_E_OK ||
               n != l->dstLen) {
        *why = N_("lzop block does not decompress");
        return -1;
    }
    if (((l->flags & LZOP_F_ADLER32_D) && adler32(1, l->block, l->dstLen) != l->adlerD) ||
        ((l->flags & LZOP_F_CRC32_D) && crc32(0, l->block, l->dstLen) != l->crcD)) {
        *why = N_("lzop block checksum mismatch (decompressed data)");
        return -1;
    }
    l->blockOut = 0;
    return 0;
}


static int
kvmsaveDecompressLzop(kvmsaveLzop *l, const unsigned char **in, size_t *inLen,
                      unsigned char *out, size_t outLen, size_t *produced,
                      const char **why)
{
    size_t need;
    int n;

    *produced = 0;
    for (;;) {
        switch (l->state) {
        case LZOP_HEADER:
            /* Its length shows as its fields arrive. */
            while ((need = kvmsaveLzopHeaderLen(l->gather, l->gatherLen)) > l->gatherLen) {
                if (!kvmsaveLzopGather(l, in, inLen, need))
                    return 0;
            }
            if (kvmsaveLzopParseHeader(l, need, why) < 0)
                return -1;
            l->gatherLen = 0;
            l->state = l->flags & LZOP_F_H_EXTRA_FIELD ? LZOP_EXTRA : LZOP_BLOCK_HEAD;
            break;

        case LZOP_EXTRA:
            /* Not used by lzop yet: its length, bytes and checksum. */
            if (!kvmsaveLzopGather(l, in, inLen, 4))
                return 0;
            need = 4 + (size_t) virReadBufInt32BE(l->gather) + 4;
            if (need > LZOP_BLOCK_MAX) {
                *why = N_("lzop header extra field too long");
                return -1;
            }
            if (!kvmsaveLzopGather(l, in, inLen, need))
                return 0;
            if (virReadBufInt32BE(l->gather + need - 4) !=
                (l->flags & LZOP_F_H_CRC32 ? crc32(0, l->gather, need - 4) :
                 adler32(1, l->gather, need - 4))) {
                *why = N_("lzop header checksum mismatch");
                return -1;
            }
            l->gatherLen = 0;
            l->state = LZOP_BLOCK_HEAD;
            break;

        case LZOP_BLOCK_HEAD:
            if (!kvmsaveLzopGather(l, in, inLen, 4))
                return 0;
            if (virReadBufInt32BE(l->gather) == 0) {
                l->gatherLen = 0;
                l->state = LZOP_END;
                break;
            }
            if (!kvmsaveLzopGather(l, in, inLen, 8))
                return 0;
            if ((n = kvmsaveLzopParseBlockHead(l, why)) < 0)
                return -1;
            l->headLen = n;
            if (!kvmsaveLzopGather(l, in, inLen, l->headLen))
                return 0;
            kvmsaveLzopTakeBlockSums(l);
            l->gatherLen = 0;
            l->state = LZOP_BLOCK_DATA;
            break;

        case LZOP_BLOCK_DATA:
            if (!kvmsaveLzopGather(l, in, inLen, l->srcLen))
                return 0;
            if (kvmsaveLzopDecodeBlock(l, why) < 0)
                return -1;
            l->gatherLen = 0;
            l->state = LZOP_OUTPUT;
            break;

        case LZOP_OUTPUT:
            need = MIN(l->dstLen - l->blockOut, outLen - *produced);
            memcpy(out + *produced, l->block + l->blockOut, need);
            *produced += need;
            l->blockOut += need;
            if (l->blockOut < l->dstLen)
                return 0; /* out is full */
            l->state = LZOP_BLOCK_HEAD;
            break;

        case LZOP_END:
            return 1;
        }
    }
}


int
kvmsaveDecompress(kvmsaveDecompressor *d,
                  const unsigned char **in, size_t *inLen,
                  unsigned char *out, size_t outLen, size_t *produced,
                  const char **why)
{
    *produced = 0;
    switch ((kvmsaveCompress) d->format) {
    case KVMSAVE_COMPRESS_GZIP:
        return kvmsaveDecompressGzip(&d->z, in, inLen, out, outLen, produced, why);
    case KVMSAVE_COMPRESS_BZIP2:
        return kvmsaveDecompressBzip2(&d->bz, in, inLen, out, outLen, produced, why);
    case KVMSAVE_COMPRESS_XZ:
        return kvmsaveDecompressXz(&d->xz, in, inLen, out, outLen, produced, why);
    case KVMSAVE_COMPRESS_LZOP:
        return kvmsaveDecompressLzop(&d->lzop, in, inLen, out, outLen, produced, why);
    case KVMSAVE_COMPRESS_ZSTD:
        return kvmsaveDecompressZstd(d->zstd, in, inLen, out, outLen, produced, why);
    case KVMSAVE_COMPRESS_RAW:
    case KVMSAVE_COMPRESS_SPARSE:
    case KVMSAVE_COMPRESS_LAST:
        break;
    }
    *why = N_("unknown compression");
    return -1;
}
