/*
 * kvmsave_imageindex.h: an image's page index, loaded and verified
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "kvmsave_image.h"
#include "kvmsave_imagebackend.h"
#include "kvmsave_imagereader.h"
#include "kvmsave_imagewriter.h"
#include "kvmsave_pageindex.h"

/* The page index of @r (@path in errors), checked by its checksum and
 * decoded against the trailer: 1 with its bytes *@buf (g_free them) of
 * *@len and *@idx, 0 when the image has none, -1 with an error. */
int kvmsaveImageIndexLoad(kvmsaveImageReader *r, const char *path,
                          unsigned char **buf, size_t *len,
                          kvmsavePageIndex **idx);

/* Read every chunk of @r, which must not have been read yet, checking
 * it, and prove that its page index is the stream's: built again from the
 * stream, it is the same, and its directory points at each chunk.
 * Returns 1, 0 when the image has no index (nothing read), or -1 with an
 * error. */
int kvmsaveImageIndexVerify(kvmsaveImageReader *r, const char *path);

/* Check the header @buf of chunk @k at offset @off (data up to @dataEnd)
 * of the image @path whose stream of @streamBytes has the page index
 * @idx: it is chunk k's, and of the index's chunkRaw bytes but the last. */
int kvmsaveImageIndexCheckChunk(const unsigned char *buf, const char *path,
                                const kvmsavePageIndex *idx, uint64_t k,
                                uint64_t off, uint64_t dataEnd,
                                uint64_t streamBytes,
                                kvmsaveImageChunkHeader *ch);

/* For save-image-define: the page index of the image @f (header @hdr,
 * trailer @tr), checked and decoded, to be kept in the image written
 * again: its bytes (g_free them) of *@len, or NULL when it has none or
 * cannot be kept, which the log then says (the new image restores
 * eagerly). */
unsigned char *kvmsaveImageIndexKeep(kvmsaveImageFile *f, const kvmsaveImageHeader *hdr,
                                     const kvmsaveImageTrailer *tr, size_t *len);

/* With every chunk of the same stream written again through @w, which
 * recorded where: point the directory of the index *@buf of @len bytes
 * at them and put it into @hdr (taken), replacing @w's header. */
int kvmsaveImageIndexRelocate(kvmsaveImageWriter *w, kvmsaveImageHeader *hdr,
                              unsigned char **buf, size_t len);
