/*
 * kvmsave_chunkpages.h: a lazy restore's pages from an image of one
 * stream in chunks, found with its page index
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "kvmsave_image.h"
#include "kvmsave_pageindex.h"
#include "kvmsave_vmstream.h"

typedef struct _kvmsaveChunkPages kvmsaveChunkPages;

/* The pages of the image @path, read from @fd (kept open by the caller),
 * whose header is @headerSize bytes and whose trailer is @tr, with its
 * decoded page index @idx, which it takes. */
kvmsaveChunkPages *kvmsaveChunkPagesNew(int fd, const char *path,
                                        uint64_t headerSize,
                                        const kvmsaveImageTrailer *tr,
                                        kvmsavePageIndex *idx);
void kvmsaveChunkPagesFree(kvmsaveChunkPages *cp);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveChunkPages, kvmsaveChunkPagesFree);

const kvmsavePageIndex *kvmsaveChunkPagesIndex(kvmsaveChunkPages *cp);

/* The stream's bytes [@off, @off + @len), every chunk they come from
 * checked. Returns 0, or -1 with an error that names the chunk. */
int kvmsaveChunkPagesRead(kvmsaveChunkPages *cp, uint64_t off, void *out,
                          size_t len);

/* Page @page of block @block: its 4096 bytes in @buf with *@data true, or
 * *@data false for a zero page, whose record's chunk was checked. */
int kvmsaveChunkPagesPage(kvmsaveChunkPages *cp, size_t block, uint64_t page,
                          unsigned char *buf, bool *data);

/* The stream as a byte source for kvmsave_vmstream.c, checked as read. */
void kvmsaveChunkPagesSource(kvmsaveChunkPages *cp, kvmsaveVMSource *src);
