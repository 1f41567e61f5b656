/*
 * kvmsave_imagecache.c: what an image's readers leave in the page cache
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <fcntl.h>
#include <unistd.h>

#include "kvmsave_imagecache.h"
#include "virerror.h"
#include "virfile.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

/* The page cache holds a file in folios of up to 2 MiB, aligned to their
 * size, and drops only those wholly inside the range it is given: a range
 * that ends inside one leaves it cached for good. */
#define KVMSAVE_IMAGE_CACHE_FOLIO_MAX (2ULL << 20)

struct _kvmsaveImageCache {
    gint refs;
    int fd;
    uint64_t align;
    GMutex lock;
    uint64_t dropped;           /* dropped up to here */
    bool used;                  /* read through: its rest is to drop */
    size_t readers;
    uint64_t pos[];             /* each reader's: needed from here on */
};


kvmsaveImageCache *
kvmsaveImageCacheNew(int fd, size_t readers, uint64_t align)
{
    kvmsaveImageCache *cache;
    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);

    if (dup < 0) {
        virReportSystemError(errno, "%s", _("cannot duplicate a save image's file descriptor"));
        return NULL;
    }
    cache = g_malloc0(sizeof(*cache) + readers * sizeof(cache->pos[0]));
    cache->refs = 1;
    cache->fd = dup;
    cache->align = align;
    cache->readers = readers;
    g_mutex_init(&cache->lock);
    return cache;
}


kvmsaveImageCache *
kvmsaveImageCacheRef(kvmsaveImageCache *cache)
{
    g_atomic_int_inc(&cache->refs);
    return cache;
}


static void
kvmsaveImageCacheDrop(kvmsaveImageCache *cache, uint64_t from, uint64_t len)
{
#ifdef HAVE_POSIX_FADVISE
    ignore_value(posix_fadvise(cache->fd, from, len, POSIX_FADV_DONTNEED));
#endif
}


void
kvmsaveImageCacheUnref(kvmsaveImageCache *cache)
{
    if (!cache || !g_atomic_int_dec_and_test(&cache->refs))
        return;
    if (cache->used)
        kvmsaveImageCacheDrop(cache, cache->dropped, 0);
    VIR_FORCE_CLOSE(cache->fd);
    g_mutex_clear(&cache->lock);
    g_free(cache);
}


void
kvmsaveImageCacheRead(kvmsaveImageCache *cache, size_t reader, uint64_t end)
{
    uint64_t from;
    uint64_t to = UINT64_MAX;
    size_t i;

    g_mutex_lock(&cache->lock);
    cache->used = true;
    cache->pos[reader] = end;
    for (i = 0; i < cache->readers; i++)
        to = MIN(to, cache->pos[i]);
    /* The last block may hold the next chunk's header. */
    to = to > cache->align ? to - cache->align : 0;
    to -= to % KVMSAVE_IMAGE_CACHE_FOLIO_MAX;
    from = cache->dropped;
    if (to > from)
        cache->dropped = to;
    g_mutex_unlock(&cache->lock);
    if (to > from)
        kvmsaveImageCacheDrop(cache, from, to - from);
}
