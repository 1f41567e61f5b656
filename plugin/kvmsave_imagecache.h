/*
 * kvmsave_imagecache.h: what an image's readers leave in the page cache
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * An image is read once per restore: its pages are worth nothing in the
 * cache once every reader is past them. The readers of a multi-stream
 * image walk the same file side by side (each checks every chunk header),
 * so the cache may drop only what lies before the last of them. Dropping
 * as they go spreads the cost over the stream; dropping a whole image at
 * the end costs some 0.15 s per GiB before the call can return.
 */
#pragma once

#include <glib.h>
#include <stdint.h>

typedef struct _kvmsaveImageCache kvmsaveImageCache;

/* For @readers readers of the file open as @fd (kept: duplicated).
 * Blocks below @align are never dropped while a reader may still need
 * them. NULL with an error reported if @fd cannot be duplicated. */
kvmsaveImageCache *kvmsaveImageCacheNew(int fd, size_t readers,
                                        uint64_t align);
kvmsaveImageCache *kvmsaveImageCacheRef(kvmsaveImageCache *cache);

/* The last reference drops what is left of the file from the cache, if
 * it was read through @cache at all. */
void kvmsaveImageCacheUnref(kvmsaveImageCache *cache);

/* Reader @reader no longer needs the bytes before @end. Thread-safe. */
void kvmsaveImageCacheRead(kvmsaveImageCache *cache, size_t reader,
                           uint64_t end);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveImageCache, kvmsaveImageCacheUnref);
