/*
 * kvmsave_imageindex.c: an image's page index, loaded and verified
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The index's own checksum proves only that it is what the save wrote.
 * Verify also proves that it says what the stream says: it walks the
 * stream as a save does, builds the index again and compares the bytes,
 * and checks that each chunk the directory points at is that chunk.
 */
#include <config.h>

#include <fcntl.h>
#include <unistd.h>

#include "kvmsave_imageindex.h"
#include "kvmsave_imagereaderpriv.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.imageindex");


int
kvmsaveImageIndexLoad(kvmsaveImageReader *r, const char *path,
                      unsigned char **buf, size_t *len, kvmsavePageIndex **idx)
{
    const kvmsaveImageHeader *hdr = kvmsaveImageReaderHeader(r);
    const kvmsaveImageTrailer *tr = kvmsaveImageReaderTrailer(r);
    int rc;

    *idx = NULL;
    if ((rc = kvmsaveImageReaderPageIndex(r, buf, len)) <= 0)
        return rc;
    if (!(*idx = kvmsavePageIndexDecode(*buf, *len, path, tr->streamBytes,
                                        tr->chunks,
                                        tr->dataEnd - hdr->headerSize))) {
        g_clear_pointer(buf, g_free);
        return -1;
    }
    return 1;
}


int
kvmsaveImageIndexCheckChunk(const unsigned char *buf, const char *path,
                            const kvmsavePageIndex *idx, uint64_t k,
                            uint64_t off, uint64_t dataEnd,
                            uint64_t streamBytes, kvmsaveImageChunkHeader *ch)
{
    uint32_t chunkRaw = kvmsavePageIndexChunkRaw(idx);
    uint64_t raw = MIN(chunkRaw, streamBytes - k * chunkRaw);

    if (kvmsaveImageChunkCheckHeader(buf, path, k, off, dataEnd, 1, ch) < 0)
        return -1;
    /* Stream offset x lies in chunk x / chunkRaw. */
    if (ch->raw != raw) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: chunk %llu at offset %llu holds %u bytes of the stream, its page index says %llu"),
                       path, (unsigned long long) k, (unsigned long long) off,
                       ch->raw, (unsigned long long) raw);
        return -1;
    }
    return 0;
}


/* The walk's byte source: the image's chunks, read and checked in turn. */
typedef struct _kvmsaveImageIndexSource kvmsaveImageIndexSource;
struct _kvmsaveImageIndexSource {
    kvmsaveImageReader *r;
    const unsigned char *data;
    size_t len;
    uint64_t start;             /* the stream offset of data[0] */
};


static int
kvmsaveImageIndexView(void *opaque, uint64_t pos, size_t want G_GNUC_UNUSED,
                      const unsigned char **p, size_t *len)
{
    kvmsaveImageIndexSource *s = opaque;

    while (pos >= s->start + s->len) {
        int rc;

        s->start += s->len;
        s->len = 0;
        if ((rc = kvmsaveImageReadChunk(s->r, &s->data, &s->len)) < 0)
            return -1;
        if (rc == 0) {
            virReportError(VIR_ERR_INTERNAL_ERROR,
                           _("the stream ends at %llu, before offset %llu"),
                           (unsigned long long) s->start, (unsigned long long) pos);
            return -1;
        }
    }
    if (pos < s->start) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("the walk of the stream went back to offset %llu"),
                       (unsigned long long) pos);
        return -1;
    }
    *p = s->data + (pos - s->start);
    *len = s->start + s->len - pos;
    return 0;
}


/* Chunk k of the directory is chunk k of the image. */
static int
kvmsaveImageIndexCheckDirectory(kvmsaveImageReader *r, const char *path,
                                const kvmsavePageIndex *idx)
{
    const kvmsaveImageHeader *hdr = kvmsaveImageReaderHeader(r);
    const kvmsaveImageTrailer *tr = kvmsaveImageReaderTrailer(r);
    g_autofree char *self = kvmsaveImageReaderSelfPath(r);
    VIR_AUTOCLOSE fd = open(self, O_RDONLY | O_CLOEXEC);
    uint64_t k;

    if (fd < 0) {
        virReportSystemError(errno, _("cannot open save image '%s'"), path);
        return -1;
    }
    for (k = 0; k < kvmsavePageIndexNChunks(idx); k++) {
        unsigned char buf[KVMSAVE_IMAGE_CHUNK_HEADER_LEN];
        uint64_t off = hdr->headerSize + kvmsavePageIndexChunkOffset(idx, k);
        kvmsaveImageChunkHeader ch;

        ssize_t got = pread(fd, buf, sizeof(buf), off);

        if (got < 0) {
            virReportSystemError(errno, _("cannot read save image '%s'"), path);
            return -1;
        }
        if (kvmsaveImageIndexCheckChunk(buf, path, idx, k, off,
                                        got == sizeof(buf) ? tr->dataEnd : off,
                                        tr->streamBytes, &ch) < 0)
            return -1;
    }
    return 0;
}


/* Walk the stream to its device state into a builder, and encode what it
 * built with @idx's directory. */
static int
kvmsaveImageIndexRebuild(kvmsaveImageReader *r, const char *path,
                         const kvmsavePageIndex *idx, unsigned char **buf,
                         size_t *len)
{
    const kvmsaveImageTrailer *tr = kvmsaveImageReaderTrailer(r);
    kvmsaveImageIndexSource s = { .r = r };
    kvmsaveVMSource src = { kvmsaveImageIndexView, &s };
    g_autoptr(kvmsavePageIndexBuilder) b = NULL;
    g_autoptr(kvmsaveVMStream) vm = NULL;
    g_autofree uint64_t *offsets = g_new0(uint64_t, kvmsavePageIndexNChunks(idx));
    const unsigned char *data;
    size_t n;
    uint64_t k;
    int rc;

    b = kvmsavePageIndexBuilderNew(kvmsavePageIndexPagesForReserve(kvmsaveImageReaderHeader(r)->indexReserve));
    if (!(vm = kvmsaveVMStreamParseFrom(&src, path, 0, tr->streamBytes,
                                        KVMSAVE_VM_PARSE_NO_END,
                                        kvmsavePageIndexBuilderRecord, b)))
        return -1;
    for (k = 0; k < kvmsavePageIndexNChunks(idx); k++)
        offsets[k] = kvmsavePageIndexChunkOffset(idx, k);
    if (kvmsavePageIndexEncode(b, vm, tr->streamBytes, offsets,
                               kvmsavePageIndexNChunks(idx),
                               kvmsavePageIndexChunkRaw(idx), buf, len) < 0)
        return -1;
    /* The rest of the stream, for its checksums. */
    while ((rc = kvmsaveImageReadChunk(r, &data, &n)) > 0)
        ;
    return rc;
}


int
kvmsaveImageIndexVerify(kvmsaveImageReader *r, const char *path)
{
    g_autofree unsigned char *stored = NULL;
    g_autofree unsigned char *rebuilt = NULL;
    g_autoptr(kvmsavePageIndex) idx = NULL;
    size_t storedLen, rebuiltLen;
    int rc;

    if ((rc = kvmsaveImageIndexLoad(r, path, &stored, &storedLen, &idx)) <= 0)
        return rc;
    if (kvmsaveImageIndexCheckDirectory(r, path, idx) < 0 ||
        kvmsaveImageIndexRebuild(r, path, idx, &rebuilt, &rebuiltLen) < 0)
        return -1;
    if (rebuiltLen != storedLen || memcmp(rebuilt, stored, storedLen) != 0) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("the page index of '%s' is damaged: it does not say where the stream's pages are (%zu bytes, the stream's index %zu)"),
                       path, storedLen, rebuiltLen);
        return -1;
    }
    return 1;
}


unsigned char *
kvmsaveImageIndexKeep(kvmsaveImageFile *f, const kvmsaveImageHeader *hdr,
                      const kvmsaveImageTrailer *tr, size_t *len)
{
    g_autofree unsigned char *buf = NULL;
    g_autoptr(kvmsavePageIndex) idx = NULL;
    int rc;

    if ((rc = kvmsaveImageFilePageIndex(f, hdr, &buf, len)) == 0)
        return NULL;
    if (rc < 0 ||
        !(idx = kvmsavePageIndexDecode(buf, *len, f->path, tr->streamBytes,
                                       tr->chunks, tr->dataEnd - hdr->headerSize))) {
        VIR_WARN("save image '%s' loses its page index to the rewrite (%s): it will be restored eagerly",
                 f->path, virGetLastErrorMessage());
        virResetLastError();
        return NULL;
    }
    return g_steal_pointer(&buf);
}


int
kvmsaveImageIndexRelocate(kvmsaveImageWriter *w, kvmsaveImageHeader *hdr,
                          unsigned char **buf, size_t len)
{
    g_autofree uint64_t *offsets = NULL;
    size_t nchunks;

    if (kvmsaveImageWriterDrain(w) < 0)
        return -1;
    offsets = kvmsaveImageWriterTakeChunkOffsets(w, &nchunks);
    if (kvmsavePageIndexSetDirectory(*buf, len, offsets, nchunks) < 0)
        return -1;
    g_free(hdr->indexData);
    hdr->indexData = g_steal_pointer(buf);
    hdr->indexLen = len;
    return kvmsaveImageWriterReplaceHeader(w, hdr);
}
