/*
 * kvmsave_decompress.h: stream decoders for the compressed save images of
 * stock libvirt (gzip, bzip2, xz, lzop, zstd)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Stock libvirt pipes QEMU's stream through "gzip -c", "bzip2 -c", "xz -c"
 * "lzop -c" or (libvirt 11.2 and later) "zstd -c". kvmsave decodes those
 * files with the libraries Debian keeps for them: zlib, libbz2, liblzma,
 * liblzo2 for lzop's blocks (lzop's container around them is parsed here)
 * and libzstd. No program is run.
 */
#pragma once

#include "internal.h"

/* The compressors, numbered as in the stock header's "compressed" field
 * (libvirt 11.2 calls it "format": 6 is no compressor but QEMU's
 * mapped-ram layout, which only QEMU reads, kvmsave_sparse.h). */
typedef enum {
    KVMSAVE_COMPRESS_RAW = 0,
    KVMSAVE_COMPRESS_GZIP = 1,
    KVMSAVE_COMPRESS_BZIP2 = 2,
    KVMSAVE_COMPRESS_XZ = 3,
    KVMSAVE_COMPRESS_LZOP = 4,
    KVMSAVE_COMPRESS_ZSTD = 5,
    KVMSAVE_COMPRESS_SPARSE = 6,

    KVMSAVE_COMPRESS_LAST
} kvmsaveCompress;

/* "raw", "gzip", ... or NULL for an unknown number. */
const char *kvmsaveCompressToString(int format);

typedef struct _kvmsaveDecompressor kvmsaveDecompressor;

/* A decoder of one compressed stream of @format (not RAW or SPARSE). */
kvmsaveDecompressor *kvmsaveDecompressorNew(int format);
void kvmsaveDecompressorFree(kvmsaveDecompressor *d);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveDecompressor, kvmsaveDecompressorFree);

/* Decode from *@in (*@inLen bytes; both advanced past what was taken)
 * into @out (@outLen > 0 bytes), *@produced of them. Returns 1 once the
 * compressed stream ended (input after it is left in *@in), 0 to go on
 * (no progress at all, with input used up, means the stream was cut
 * short), -1 for damaged data, with *@why saying what the decoder found
 * (static text, not translated: the library's own words). */
int kvmsaveDecompress(kvmsaveDecompressor *d,
                      const unsigned char **in, size_t *inLen,
                      unsigned char *out, size_t outLen, size_t *produced,
                      const char **why);
