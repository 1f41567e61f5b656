/*
 * kvmsave_imagereaderpriv.h: image reader functions for the tests, and
 * the checks of one chunk for readers of kvmsave images
 * (kvmsave_imagechunk.c)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "kvmsave_imagereader.h"

/* The stream of the chunk of a kvmsave image read last. */
unsigned int kvmsaveImageReaderLastStream(kvmsaveImageReader *r);

/* Check the 32-byte header at @buf of the chunk expected as number @index
 * at file offset @off of image @what (of @streams streams, its chunks
 * ending at @dataEnd) and parse it into @ch: room for it before @dataEnd,
 * magic, checksum, number, encoding, stream, lengths. Returns 0, or -1
 * with an error naming the image, the chunk and its offset. */
int kvmsaveImageChunkCheckHeader(const unsigned char *buf, const char *what,
                                 uint64_t index, uint64_t off, uint64_t dataEnd,
                                 unsigned int streams,
                                 kvmsaveImageChunkHeader *ch);
/* Check the ch->stored bytes at @stored of the chunk whose header @ch was
 * checked, at offset @off of image @what, against its data checksum and
 * decode them: a raw chunk's bytes are @stored, a zstd one's are decoded
 * with *@dctx into *@out (both made on first use and kept by the caller:
 * free them with kvmsaveImageChunkFreeCtx and g_free), its frame's own
 * checksum checked. Sets *@data and *@len; returns 0, or -1 with an error
 * as above. */
int kvmsaveImageChunkDecode(const kvmsaveImageChunkHeader *ch, const char *what,
                            uint64_t off, const unsigned char *stored,
                            void **dctx, unsigned char **out,
                            const unsigned char **data, size_t *len);
void kvmsaveImageChunkFreeCtx(void *dctx);
