/*
 * indexedimage.h: a kvmsave image of one stream in chunks with its page
 * index, written as a save writes it
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The stream comes from a file instead of QEMU's socket; the rest is the
 * save's own code: kvmsaveSaveIndexStream cuts it into chunks and walks
 * it into the builder, and the index is encoded from the chunk offsets
 * the writer recorded.
 */
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include "kvmsave_imagewriter.h"
#include "kvmsave_pageindex.h"
#include "kvmsave_saveindex.h"
#include "viruuid.h"

#define INDEXED_IMAGE_GUEST (64 * 1024 * 1024)

/* A builder fed all records but the first data page's. */
typedef struct {
    kvmsavePageIndexBuilder *b;
    bool skipped;
} IndexedImageSkip;

static int
indexedImageSkipFirstData(const kvmsaveVMStream *vm, const kvmsaveVMRecord *rec,
                          void *opaque)
{
    IndexedImageSkip *s = opaque;

    if (rec->data && !s->skipped) {
        s->skipped = true;
        return 0;
    }
    return kvmsavePageIndexBuilderRecord(vm, rec, s->b);
}


/* An index that is whole and well formed, but wrong: it misses a page. */
static kvmsavePageIndexBuilder *
indexedImageWrongBuilder(const char *stream)
{
    IndexedImageSkip s = {
        kvmsavePageIndexBuilderNew(kvmsavePageIndexPages(INDEXED_IMAGE_GUEST)), false
    };
    g_autoptr(kvmsaveVMStream) vm = NULL;
    int in = open(stream, O_RDONLY | O_CLOEXEC);

    ck_assert_int_ge(in, 0);
    vm = kvmsaveVMStreamParse(in, stream, 0, lseek(in, 0, SEEK_END),
                              indexedImageSkipFirstData, &s);
    close(in);
    ck_assert_ptr_nonnull(vm);
    ck_assert(s.skipped);
    return s.b;
}


typedef enum {
    INDEXED_IMAGE_RIGHT,
    INDEXED_IMAGE_MISSING_PAGE,         /* the index misses a page */
    INDEXED_IMAGE_DIRECTORY_OFF,        /* chunk 1 is a byte off */
} IndexedImageIndex;

/* Write @path from the plain stream @stream in chunks of @chunk bytes
 * encoded with @encoding (KVMSAVE_IMAGE_ENCODING_*), with its index or
 * the wrong one @how says. */
static void
indexedImageWrite(const char *path, const char *stream, int encoding,
                  size_t chunk, IndexedImageIndex how)
{
    g_autoptr(kvmsaveImageHeader) hdr = kvmsaveImageHeaderNew();
    g_autoptr(kvmsaveImageWriter) w = NULL;
    g_autoptr(kvmsavePageIndexBuilder) b = NULL;
    g_autoptr(kvmsaveVMStream) vm = NULL;
    g_autofree uint64_t *offsets = NULL;
    g_autofree unsigned char *buf = NULL;
    size_t nchunks, len;
    int wake[2];
    bool eof = false;
    int in, fd;

    ck_assert_int_eq(virUUIDParse("5d1bbf7e-8a4c-4a3e-9f0a-2b6c8e1d4f10", hdr->uuid), 0);
    hdr->flags = KVMSAVE_IMAGE_FLAG_RUNNING;
    hdr->xml = g_strdup("<domain type='qemu'><name>t</name></domain>\n");
    hdr->name = g_strdup("t");
    hdr->indexReserve = kvmsavePageIndexReserve(INDEXED_IMAGE_GUEST);
    fd = open(path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600);
    in = open(stream, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_ge(in, 0);
    ck_assert_int_eq(pipe(wake), 0);
    w = kvmsaveImageWriterNew(fd, path, false);
    kvmsaveImageWriterSetFormat(w, encoding);
    kvmsaveImageWriterRecordChunks(w);
    ck_assert_int_eq(kvmsaveImageWriteHeader(w, hdr), 0);
    b = kvmsavePageIndexBuilderNew(kvmsavePageIndexPages(INDEXED_IMAGE_GUEST));
    ck_assert_int_eq(kvmsaveSaveIndexStream(w, chunk, in, wake[0], path, b,
                                            &vm, &eof), 0);
    ck_assert_msg(vm != NULL, "%s", virGetLastErrorMessage());
    while (!eof) {
        unsigned char *p = kvmsaveImageWriterNextBuffer(w);
        size_t fill;

        ck_assert_ptr_nonnull(p);
        ck_assert_int_eq(kvmsaveSaveStreamRead(in, wake[0], p, chunk, &fill, &eof), 0);
        if (fill > 0)
            ck_assert_int_eq(kvmsaveImageWriterQueue(w, fill), 0);
    }
    ck_assert_int_eq(kvmsaveImageWriterDrain(w), 0);
    offsets = kvmsaveImageWriterTakeChunkOffsets(w, &nchunks);
    if (how == INDEXED_IMAGE_MISSING_PAGE) {
        kvmsavePageIndexBuilderFree(b);
        b = indexedImageWrongBuilder(stream);
    }
    if (how == INDEXED_IMAGE_DIRECTORY_OFF) {
        ck_assert_uint_gt(nchunks, 2);
        offsets[1]++;
    }
    ck_assert_int_eq(kvmsavePageIndexEncode(b, vm, kvmsaveImageWriterStreamBytes(w),
                                            offsets, nchunks, chunk, &buf, &len), 0);
    hdr->indexData = g_steal_pointer(&buf);
    hdr->indexLen = len;
    ck_assert_int_eq(kvmsaveImageWriterReplaceHeader(w, hdr), 0);
    ck_assert_int_eq(kvmsaveImageWriterFinish(w), 0);
    close(wake[0]);
    close(wake[1]);
    close(in);
    close(fd);
    KT_ASSERT_NO_ERROR();
}
