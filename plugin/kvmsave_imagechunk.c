/*
 * kvmsave_imagechunk.c: checking and decoding one chunk of a kvmsave
 * image (docs/image-format.md, "What a reader checks")
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The reader (kvmsave_imagereader.c) checks each chunk with these as it
 * streams the image; they need only the chunk's own bytes, so a reader
 * that finds chunks another way uses them as well.
 */
#include <config.h>

#include <zstd.h>

#include "kvmsave_imagereaderpriv.h"
#include "kvmsave_util.h"
#include "virerror.h"

#define VIR_FROM_THIS VIR_FROM_QEMU


int
kvmsaveImageChunkCheckHeader(const unsigned char *buf, const char *what,
                             uint64_t index, uint64_t off, uint64_t dataEnd,
                             unsigned int streams, kvmsaveImageChunkHeader *ch)
{
    unsigned long long idx = index;
    unsigned long long o = off;

    if (off > dataEnd || dataEnd - off < KVMSAVE_IMAGE_CHUNK_HEADER_LEN) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk %llu at offset %llu is cut short by the end of the data"),
                       what, idx, o);
        return -1;
    }
    if (kvmsaveImageChunkHeaderDecode(buf, what, index, off, ch) < 0)
        return -1;
    if (ch->index != index) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk at offset %llu is numbered %llu, expected %llu"),
                       what, o, (unsigned long long) ch->index, idx);
        return -1;
    }
    if (ch->encoding != KVMSAVE_IMAGE_ENCODING_RAW &&
        ch->encoding != KVMSAVE_IMAGE_ENCODING_ZSTD) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s': chunk %llu uses encoding %u, which this kvmsave does not support"),
                       what, idx, ch->encoding);
        return -1;
    }
    if (ch->stream >= streams) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk %llu at offset %llu belongs to stream %u, the image has %u"),
                       what, idx, o, ch->stream, streams);
        return -1;
    }
    if ((ch->encoding == KVMSAVE_IMAGE_ENCODING_RAW && ch->stored != ch->raw) ||
        (ch->encoding == KVMSAVE_IMAGE_ENCODING_ZSTD &&
         (ch->stored >= ch->raw || ch->stored == 0)) ||
        ch->raw > KVMSAVE_IMAGE_CHUNK_MAX ||
        ch->stored > dataEnd - off - KVMSAVE_IMAGE_CHUNK_HEADER_LEN) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk %llu at offset %llu has an invalid length %u"),
                       what, idx, o, ch->stored);
        return -1;
    }
    return 0;
}


void
kvmsaveImageChunkFreeCtx(void *dctx)
{
    ZSTD_freeDCtx(dctx);
}


int
kvmsaveImageChunkDecode(const kvmsaveImageChunkHeader *ch, const char *what,
                        uint64_t off, const unsigned char *stored,
                        void **dctx, unsigned char **out,
                        const unsigned char **data, size_t *len)
{
    unsigned long long idx = ch->index;
    unsigned long long o = off;
    uint32_t crc = kvmsaveCrc32c(0, stored, ch->stored);
    size_t n;

    if (kvmsaveImageChecksumBad(ch->crc, crc)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk %llu at offset %llu has a data checksum mismatch (stored %08x, computed %08x)"),
                       what, idx, o, ch->crc, crc);
        return -1;
    }
    if (ch->encoding != KVMSAVE_IMAGE_ENCODING_ZSTD) {
        *data = stored;
        *len = ch->stored;
        return 0;
    }

    if (!*dctx && !(*dctx = ZSTD_createDCtx()))
        abort(); /* out of memory, as g_malloc */
    if (!*out)
        *out = g_malloc(KVMSAVE_IMAGE_CHUNK_MAX);
    n = ZSTD_decompressDCtx(*dctx, *out, KVMSAVE_IMAGE_CHUNK_MAX,
                            stored, ch->stored);
    if (ZSTD_isError(n) || n != ch->raw) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk %llu at offset %llu does not decompress (%s)"),
                       what, idx, o,
                       ZSTD_isError(n) ? ZSTD_getErrorName(n) : _("wrong size"));
        return -1;
    }
    *data = *out;
    *len = n;
    return 0;
}
