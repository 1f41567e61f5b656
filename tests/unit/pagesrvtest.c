/*
 * pagesrvtest.c: unit tests of the postcopy source of a lazy restore
 * (kvmsave_pagesrv.c), against a destination played here
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The images: a sparse kvmsave image around the mapped-ram stream QEMU
 * 10.0 wrote of a paused 16 MiB machine (tests/unit/data, see
 * vmstreamtest.c), and chunked ones with a page index around QEMU 7.2's
 * plain stream of the same machine, written by the save's own code
 * (indexedimage.h). A thread plays QEMU on the other end of a socket
 * pair: it reads what the server sends and answers on the return path.
 * What it received is then walked with kvmsave_vmstream.c, page by page,
 * and compared with the stream the image holds.
 */
#include <config.h>

#include <signal.h>
#include <sys/socket.h>

#include "testutil.h"
#include "scratch.h"
#include "kvmsave_imageindex.h"
#include "kvmsave_imagewriter.h"
#include "kvmsave_mapped.h"
#include "kvmsave_pagesrv.h"
#include "kvmsave_postcopy.h"
#include "kvmsave_vmstream.h"
#include "indexedimage.h"
#include "viruuid.h"

#define MIB (1024 * 1024)
#define MACHINE_PAGES ((16 * MIB + 128 * 1024 + 128 * 1024 + 64 * 1024 + \
                        4096 + 4096) / 4096)
/* The stream's end as the server sends it: RAM's END section with its
 * footer, then QEMU_VM_EOF (@id: RAM's section). */
static bool
isStreamEnd(const GByteArray *got, uint32_t id)
{
    const unsigned char end[] = {
        0x03, id >> 24, id >> 16, id >> 8, id, 0, 0, 0, 0, 0, 0, 0, 0x10,
        0x7e, id >> 24, id >> 16, id >> 8, id, 0x00,
    };

    return got->len >= sizeof(end) &&
        memcmp(got->data + got->len - sizeof(end), end, sizeof(end)) == 0;
}

typedef struct {
    char *path;                 /* the kvmsave image */
    uint64_t streamBytes;
    kvmsaveVMStream *vm;        /* its QEMU stream's layout */
    char *stream;               /* a file holding the stream ... */
    uint64_t base;              /* ... from this offset */
    GHashTable *last;           /* chunked: "b:p" -> the page's last record */
} TestImage;

/* The images served. */
typedef enum {
    IMAGE_SPARSE,
    IMAGE_RAW_SMALL_CHUNKS,     /* 4109 bytes: payloads across chunks */
    IMAGE_ZSTD,
} ImageKind;


/* A sparse kvmsave image of the QEMU 10.0 mapped-ram stream, as a save
 * writes it: header, the stream at 1 MiB with its holes, table, trailer. */
static void
makeSparseImage(TestImage *img)
{
    g_autofree char *stream = scratchUnpackData("qemu-10.0-mapped.vmstream");
    g_autoptr(kvmsaveImageHeader) hdr = kvmsaveImageHeaderNew();
    g_autoptr(kvmsaveImageWriter) w = NULL;
    g_autofree uint32_t *table = NULL;
    kvmsaveMappedSum *sum;
    unsigned char buf[16384];
    uint64_t off;
    int in, fd;

    img->path = scratchPath("lazy.img");
    img->streamBytes = fileSize(stream) - MIB;
    ck_assert_int_eq(virUUIDParse("5d1bbf7e-8a4c-4a3e-9f0a-2b6c8e1d4f10", hdr->uuid), 0);
    hdr->flags = KVMSAVE_IMAGE_FLAG_RUNNING;
    hdr->chunkSize = 65536;
    hdr->xml = g_strdup("<domain type='qemu'><name>t</name></domain>\n");
    hdr->name = g_strdup("t");
    hdr->mappedOffset = MIB;
    hdr->mappedBlock = MIB;
    hdr->mappedChannels = 1;
    fd = open(img->path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600);
    in = open(stream, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_ge(in, 0);
    w = kvmsaveImageWriterNew(fd, img->path, false);
    ck_assert_int_eq(kvmsaveImageWriteHeader(w, hdr), 0);
    for (off = MIB; off < MIB + img->streamBytes; off += sizeof(buf)) {
        static const unsigned char zero[16384];
        ssize_t n = pread(in, buf, sizeof(buf), off);

        ck_assert_int_gt(n, 0);
        if (memcmp(buf, zero, n) != 0)
            ck_assert_int_eq(pwrite(fd, buf, n, off), n);
    }
    sum = kvmsaveMappedSumStart(fd, img->path, false, hdr, img->streamBytes, NULL, 2);
    ck_assert_int_eq(kvmsaveMappedSumFinish(sum, false, &table), 0);
    ck_assert_int_eq(kvmsaveImageWriterFinishMapped(w, hdr, img->streamBytes, table), 0);
    img->vm = kvmsaveVMStreamParse(in, stream, MIB, MIB + img->streamBytes, NULL, NULL);
    ck_assert_ptr_nonnull(img->vm);
    img->stream = g_strdup(img->path);
    img->base = MIB;
    close(in);
    close(fd);
    KT_ASSERT_NO_ERROR();
}


static int
keepLast(const kvmsaveVMStream *vm G_GNUC_UNUSED, const kvmsaveVMRecord *rec,
         void *opaque)
{
    kvmsaveVMRecord *copy = g_new(kvmsaveVMRecord, 1);

    *copy = *rec;
    g_hash_table_insert(opaque, g_strdup_printf("%zu:%llu", rec->block,
                                                (unsigned long long) rec->page),
                        copy);
    return 0;
}


/* A chunked image with its page index of QEMU 7.2's plain stream. */
static void
makeChunkedImage(TestImage *img, int encoding, size_t chunk)
{
    int in;

    img->stream = scratchUnpackData("qemu-7.2-plain.vmstream");
    img->path = scratchPath("lazy-chunked.img");
    img->streamBytes = fileSize(img->stream);
    indexedImageWrite(img->path, img->stream, encoding, chunk, INDEXED_IMAGE_RIGHT);
    img->last = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    in = open(img->stream, O_RDONLY);
    ck_assert_int_ge(in, 0);
    img->vm = kvmsaveVMStreamParse(in, img->stream, 0, img->streamBytes,
                                   keepLast, img->last);
    close(in);
    ck_assert_ptr_nonnull(img->vm);
    KT_ASSERT_NO_ERROR();
}


static void
makeImage(TestImage *img, ImageKind kind)
{
    if (kind == IMAGE_SPARSE)
        makeSparseImage(img);
    else if (kind == IMAGE_RAW_SMALL_CHUNKS)
        makeChunkedImage(img, KVMSAVE_IMAGE_ENCODING_RAW, 4096 + 13);
    else
        makeChunkedImage(img, KVMSAVE_IMAGE_ENCODING_ZSTD, 4 * MIB);
}


/* Page @page of block @block as the image holds it. */
static void
expectedPage(const TestImage *img, int streamFd, size_t block, uint64_t page,
             unsigned char *want)
{
    g_autofree char *key = NULL;
    const kvmsaveVMRecord *rec;

    if (!img->last) {
        ck_assert_int_eq(pread(streamFd, want, 4096,
                               img->vm->blocks[block].pagesOffset + page * 4096), 4096);
        return;
    }
    key = g_strdup_printf("%zu:%llu", block, (unsigned long long) page);
    rec = g_hash_table_lookup(img->last, key);
    memset(want, 0, 4096);
    if (rec && rec->data)
        ck_assert_int_eq(pread(streamFd, want, 4096, rec->payload), 4096);
}


static void
freeImage(TestImage *img)
{
    g_free(img->path);
    g_free(img->stream);
    if (img->last)
        g_hash_table_unref(img->last);
    kvmsaveVMStreamFree(img->vm);
}


/* ---- the destination ---- */

typedef struct {
    int sock;
    kvmsavePageServer *ps;
    const kvmsaveVMStream *vm;
    GByteArray *got;            /* everything the server sent */
    bool recover;               /* have all pages of pc.ram but `missing` */
    uint64_t missing[4];
    size_t nmissing;
    bool closeEarly;            /* close once the pages flow */
    bool staleAsks;             /* ask as a racing fault thread does */
    uint32_t shut;              /* SHUT's error at the end */
} FakeQemu;


/* One message in one write, as QEMU sends it. A server that has quit on
 * an error may be gone before a message crosses one in flight (the SHUT
 * after the last page, racing its error on an earlier request): like
 * QEMU, which ignores SIGPIPE, the fake then gets EPIPE. */
static void
sendRP(int sock, uint16_t type, const void *data, uint16_t len)
{
    g_autofree unsigned char *msg = g_malloc(4 + len);
    ssize_t n;

    msg[0] = type >> 8;
    msg[1] = type;
    msg[2] = len >> 8;
    msg[3] = len;
    if (len)
        memcpy(msg + 4, data, len);
    n = write(sock, msg, 4 + len);
    if (n < 0 && errno == EPIPE)
        return;
    ck_assert_int_eq(n, 4 + len);
}


/* A request for the page at @offset of @block, or (NULL) of the block
 * named last. */
static void
sendAsk(int sock, const char *block, uint64_t offset)
{
    unsigned char msg[12 + 256];
    uint64_t off = GUINT64_TO_BE(offset);
    uint32_t len = GUINT32_TO_BE(4096);
    size_t n = 12;

    memcpy(msg, &off, 8);
    memcpy(msg + 8, &len, 4);
    if (block) {
        msg[n++] = strlen(block);
        memcpy(msg + n, block, strlen(block));
        n += strlen(block);
    }
    sendRP(sock, block ? KVMSAVE_POSTCOPY_RP_REQ_PAGES_ID :
           KVMSAVE_POSTCOPY_RP_REQ_PAGES, msg, n);
}


/* RECV_BITMAP of @b: every page, but those missing of pc.ram. */
static void
sendBitmap(FakeQemu *q, const kvmsaveVMBlock *b)
{
    uint64_t pages = b->length / 4096;
    uint64_t size = VIR_DIV_UP(pages, 64) * 8;
    g_autofree unsigned char *map = g_malloc0(size);
    unsigned char name[256];
    uint64_t be, i;

    for (i = 0; i < pages; i++)
        map[i / 8] |= 1 << (i % 8);
    for (i = 0; STREQ(b->name, "pc.ram") && i < q->nmissing; i++)
        map[q->missing[i] / 8] &= ~(1 << (q->missing[i] % 8));
    name[0] = strlen(b->name);
    memcpy(name + 1, b->name, name[0]);
    sendRP(q->sock, KVMSAVE_POSTCOPY_RP_RECV_BITMAP, name, 1 + name[0]);
    be = GUINT64_TO_BE(size);
    ck_assert_int_eq(write(q->sock, &be, 8), 8);
    ck_assert_int_eq(write(q->sock, map, size), (ssize_t) size);
    be = GUINT64_TO_BE(0x0123456789abcdefULL);
    ck_assert_int_eq(write(q->sock, &be, 8), 8);
}


/* Bytes of the RECV_BITMAP commands a recovering server sends first. */
static size_t
recoveryBytes(const kvmsaveVMStream *vm)
{
    size_t b, n = 0;

    for (b = 0; b < vm->nblocks; b++)
        n += 5 + 1 + strlen(vm->blocks[b].name);
    return n;
}


static gpointer
fakeQemu(gpointer opaque)
{
    FakeQemu *q = opaque;
    size_t asked = recoveryBytes(q->vm);
    bool bitmaps = false, acked = false;
    unsigned char buf[16384];
    ssize_t n;

    /* QEMU's fault thread, on the new channel before the resume: its
     * last block is the one it named to the server it lost. */
    if (q->staleAsks)
        sendAsk(q->sock, NULL, q->missing[0] * 4096);
    while ((n = read(q->sock, buf, sizeof(buf))) > 0) {
        uint64_t done, total;
        size_t b;

        g_byte_array_append(q->got, buf, n);
        if (q->recover && !bitmaps && q->got->len >= asked) {
            for (b = 0; b < q->vm->nblocks; b++)
                sendBitmap(q, &q->vm->blocks[b]);
            bitmaps = true;
        }
        /* POSTCOPY_RESUME is 5 bytes. */
        if (q->recover && bitmaps && !acked && q->got->len >= asked + 5) {
            uint32_t one = GUINT32_TO_BE(1);

            sendRP(q->sock, KVMSAVE_POSTCOPY_RP_RESUME_ACK, &one, 4);
            acked = true;
            /* The resume asks again for a pending page, naming its block;
             * the fault thread, racing it, names none for a page of
             * another block. */
            if (q->staleAsks) {
                sendAsk(q->sock, "pc.ram", q->missing[1] * 4096);
                sendAsk(q->sock, NULL, q->vm->blocks[0].length);
            }
        }
        if (q->closeEarly && q->got->len > 64 * 1024)
            break;
        done = kvmsavePageServerDone(q->ps, &total);
        if (done == total && isStreamEnd(q->got, q->vm->ramSection)) {
            uint32_t shut = GUINT32_TO_BE(q->shut);

            sendRP(q->sock, KVMSAVE_POSTCOPY_RP_SHUT, &shut, 4);
            break;
        }
    }
    shutdown(q->sock, SHUT_RDWR);
    return NULL;
}


/* Serve @img to @q; the server's result. */
static int
serve(TestImage *img, FakeQemu *q)
{
    g_autoptr(kvmsavePageServer) ps = kvmsavePageServerOpen(img->path, -1);
    int sv[2];
    GThread *t;
    int rc;

    ck_assert_msg(ps != NULL, "%s", virGetLastErrorMessage());
    signal(SIGPIPE, SIG_IGN);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    q->sock = sv[1];
    q->ps = ps;
    q->vm = img->vm;
    q->got = g_byte_array_new();
    t = g_thread_new("fake-qemu", fakeQemu, q);
    rc = kvmsavePageServerRun(ps, sv[0], q->recover);
    g_thread_join(t);
    close(sv[0]);
    close(sv[1]);
    return rc;
}


typedef struct {
    GHashTable *seen;           /* "block:page" */
    int imageFd;                /* the file holding the image's stream */
    const TestImage *img;
    int streamFd;               /* the walked copy */
} Walk;

/* Each page once, as the image holds it. */
static int
walkPage(const kvmsaveVMStream *vm G_GNUC_UNUSED, const kvmsaveVMRecord *rec,
         void *opaque)
{
    size_t block = rec->block;
    uint64_t page = rec->page;
    uint64_t pos = rec->data ? rec->payload : 0;
    Walk *w = opaque;
    char *key = g_strdup_printf("%zu:%llu", block, (unsigned long long) page);
    unsigned char got[4096], want[4096];

    ck_assert_msg(g_hash_table_add(w->seen, key), "page %s twice", key);
    memset(got, 0, sizeof(got));
    if (pos)
        ck_assert_int_eq(pread(w->streamFd, got, 4096, pos), 4096);
    expectedPage(w->img, w->imageFd, block, page, want);
    ck_assert_mem_eq(got, want, 4096);
    return 0;
}


/* Walk the pages the server sent after @from bytes of q->got, which end
 * with RAM's END and EOF: put the stream's start before them and the
 * devices after them, and parse that. Returns the pages, by "b:p". */
static GHashTable *
walkSent(TestImage *img, FakeQemu *q, size_t from)
{
    const kvmsaveVMStream *vm = img->vm;
    g_autofree unsigned char *config = g_malloc(vm->configEnd - img->base);
    g_autofree unsigned char *dev = g_malloc(vm->devEnd - vm->devStart);
    g_autoptr(GByteArray) walked = NULL;
    g_autoptr(kvmsaveVMStream) back = NULL;
    g_autofree char *path = scratchPath("walked");
    Walk w = { .img = img };

    filePeek(img->stream, img->base, config, vm->configEnd - img->base);
    filePeek(img->stream, vm->devStart, dev, vm->devEnd - vm->devStart);
    walked = kvmsavePostcopyStart(vm, img->base, config, vm->configEnd - img->base);
    ck_assert_uint_gt(q->got->len, from);
    g_byte_array_append(walked, q->got->data + from, q->got->len - from - 1);
    g_byte_array_append(walked, dev, vm->devEnd - vm->devStart);
    g_byte_array_append(walked, (const guint8 *) "", 1);
    fileWrite(path, walked->data, walked->len);
    w.seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    w.imageFd = open(img->stream, O_RDONLY);
    w.streamFd = open(path, O_RDONLY);
    back = kvmsaveVMStreamParse(w.streamFd, path, 0, walked->len, walkPage, &w);
    close(w.imageFd);
    close(w.streamFd);
    ck_assert_msg(back != NULL, "%s", virGetLastErrorMessage());
    return w.seen;
}


START_TEST(test_every_page_sent_once_after_the_devices)
{
    TestImage img = { 0 };
    FakeQemu q = { 0 };
    g_autoptr(GHashTable) seen = NULL;
    g_autoptr(GByteArray) head = NULL;
    g_autoptr(GByteArray) pkg = NULL;
    g_autofree unsigned char *config = NULL;
    g_autofree unsigned char *dev = NULL;

    makeImage(&img, _i);
    ck_assert_int_eq(serve(&img, &q), 0);
    KT_ASSERT_NO_ERROR();
    /* The stream up to the package, then the package, as encoded. */
    config = g_malloc(img.vm->configEnd - img.base);
    dev = g_malloc(img.vm->devEnd - img.vm->devStart);
    filePeek(img.stream, img.base, config, img.vm->configEnd - img.base);
    filePeek(img.stream, img.vm->devStart, dev, img.vm->devEnd - img.vm->devStart);
    head = kvmsavePostcopyStart(img.vm, img.base, config, img.vm->configEnd - img.base);
    pkg = kvmsavePostcopyPackage(dev, img.vm->devEnd - img.vm->devStart);
    ck_assert_uint_gt(q.got->len, head->len + pkg->len);
    ck_assert_mem_eq(q.got->data, head->data, head->len);
    ck_assert_mem_eq(q.got->data + head->len, pkg->data, pkg->len);
    seen = walkSent(&img, &q, head->len + pkg->len);
    ck_assert_uint_eq(g_hash_table_size(seen), MACHINE_PAGES);
    g_byte_array_unref(q.got);
    freeImage(&img);
}
END_TEST


START_TEST(test_recovery_sends_only_the_pages_qemu_lacks)
{
    TestImage img = { 0 };
    FakeQemu q = { .recover = true, .missing = { 0, 7, 4000, 4095 }, .nmissing = 4 };
    g_autoptr(GHashTable) seen = NULL;
    size_t i;

    makeImage(&img, _i);
    ck_assert_int_eq(serve(&img, &q), 0);
    KT_ASSERT_NO_ERROR();
    /* RECV_BITMAP per block, POSTCOPY_RESUME, then the pages. */
    ck_assert_mem_eq(q.got->data + recoveryBytes(img.vm), "\x08\x00\x09\x00\x00", 5);
    seen = walkSent(&img, &q, recoveryBytes(img.vm) + 5);
    ck_assert_uint_eq(g_hash_table_size(seen), 4);
    for (i = 0; i < 4; i++) {
        g_autofree char *key = g_strdup_printf("0:%llu", (unsigned long long) q.missing[i]);

        ck_assert_msg(g_hash_table_contains(seen, key), "page %s not sent", key);
    }
    g_byte_array_unref(q.got);
    freeImage(&img);
}
END_TEST


START_TEST(test_recovery_drops_requests_that_name_no_block_of_its_channel)
{
    TestImage img = { 0 };
    FakeQemu q = { .recover = true, .staleAsks = true,
                   .missing = { 3, 9, 4000, 4095 }, .nmissing = 4 };
    g_autoptr(GHashTable) seen = NULL;

    makeImage(&img, _i);
    ck_assert_str_eq(img.vm->blocks[0].name, "pc.ram");
    ck_assert_int_eq(serve(&img, &q), 0);
    KT_ASSERT_NO_ERROR();
    seen = walkSent(&img, &q, recoveryBytes(img.vm) + 5);
    ck_assert_uint_eq(g_hash_table_size(seen), 4);
    g_byte_array_unref(q.got);
    freeImage(&img);
}
END_TEST


START_TEST(test_first_request_without_a_block_is_an_error)
{
    TestImage img = { 0 };
    FakeQemu q = { .staleAsks = true };

    makeImage(&img, IMAGE_SPARSE);
    ck_assert_int_eq(serve(&img, &q), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "without naming a RAM block first");
    g_byte_array_unref(q.got);
    freeImage(&img);
}
END_TEST


START_TEST(test_qemu_gone_before_the_end_is_an_error)
{
    TestImage img = { 0 };
    FakeQemu q = { .closeEarly = true };

    makeImage(&img, IMAGE_SPARSE);
    ck_assert_int_eq(serve(&img, &q), -1);
    KT_ASSERT_ERROR_MSG("QEMU");
    g_byte_array_unref(q.got);
    freeImage(&img);
}
END_TEST


START_TEST(test_qemu_error_at_the_end_is_reported)
{
    TestImage img = { 0 };
    FakeQemu q = { .shut = 1 };

    makeImage(&img, IMAGE_SPARSE);
    ck_assert_int_eq(serve(&img, &q), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "QEMU ended the migration with error 1");
    g_byte_array_unref(q.got);
    freeImage(&img);
}
END_TEST


START_TEST(test_damaged_page_block_stops_the_server_and_names_it)
{
    TestImage img = { 0 };
    FakeQemu q = { 0 };
    const kvmsaveVMBlock *ram;
    unsigned char b;
    uint64_t off, block;

    makeImage(&img, IMAGE_SPARSE);
    /* A byte of pc.ram's last page: a hole in the image, so any byte
     * written there fails its block's checksum. */
    ram = &img.vm->blocks[0];
    off = ram->pagesOffset + ram->length - 1;
    block = (off - MIB) / MIB;
    b = 0x5a;
    filePatch(img.path, off, &b, 1);
    ck_assert_int_eq(serve(&img, &q), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "data checksum mismatch");
    {
        g_autofree char *where = g_strdup_printf("block %llu at offset %llu",
                                                 (unsigned long long) block,
                                                 (unsigned long long) (MIB + block * MIB));

        KT_ASSERT_ERROR_MSG(where);
    }
    g_byte_array_unref(q.got);
    freeImage(&img);
}
END_TEST


/* A chunk that holds a data page: its number, and where its stored bytes
 * lie in the image. */
static uint64_t
firstDataChunk(const TestImage *img, uint64_t *stored)
{
    g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(img->path, KVMSAVE_IMAGE_IO_CACHED);
    g_autoptr(kvmsavePageIndex) idx = NULL;
    g_autofree unsigned char *buf = NULL;
    GHashTableIter it;
    gpointer value;
    size_t len;

    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(kvmsaveImageIndexLoad(r, img->path, &buf, &len, &idx), 1);
    g_hash_table_iter_init(&it, img->last);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        const kvmsaveVMRecord *rec = value;
        uint64_t k = rec->payload / kvmsavePageIndexChunkRaw(idx);

        if (rec->data) {
            *stored = kvmsaveImageReaderHeader(r)->headerSize +
                kvmsavePageIndexChunkOffset(idx, k) + 32;
            return k;
        }
    }
    ck_abort_msg("no data page");
    return 0;
}


START_TEST(test_damaged_chunk_stops_the_server_and_names_it)
{
    TestImage img = { 0 };
    FakeQemu q = { 0 };
    g_autofree char *where = NULL;
    uint64_t stored, k;

    makeImage(&img, IMAGE_RAW_SMALL_CHUNKS);
    k = firstDataChunk(&img, &stored);
    fileFlip(img.path, stored + 100, 0x01);
    ck_assert_int_eq(serve(&img, &q), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "data checksum mismatch");
    where = g_strdup_printf("chunk %llu at offset %llu", (unsigned long long) k,
                            (unsigned long long) stored - 32);
    KT_ASSERT_ERROR_MSG(where);
    g_byte_array_unref(q.got);
    freeImage(&img);
}
END_TEST


START_TEST(test_image_without_page_layout_refused)
{
    g_autofree char *path = scratchPath("chunked.img");
    g_autoptr(kvmsavePageServer) ps = NULL;
    g_autoptr(kvmsaveImageHeader) hdr = kvmsaveImageHeaderNew();
    g_autoptr(kvmsaveImageWriter) w = NULL;
    int fd = open(path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600);

    ck_assert_int_eq(virUUIDParse("5d1bbf7e-8a4c-4a3e-9f0a-2b6c8e1d4f10", hdr->uuid), 0);
    hdr->chunkSize = 65536;
    hdr->xml = g_strdup("<domain type='qemu'><name>t</name></domain>\n");
    hdr->name = g_strdup("t");
    w = kvmsaveImageWriterNew(fd, path, false);
    ck_assert_int_eq(kvmsaveImageWriteHeader(w, hdr), 0);
    ck_assert_int_eq(kvmsaveImageWriteChunk(w, 0, (const unsigned char *) "QEVM\0\0\0\3", 8), 0);
    ck_assert_int_eq(kvmsaveImageWriterFinish(w), 0);
    close(fd);
    ps = kvmsavePageServerOpen(path, -1);
    ck_assert_ptr_null(ps);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_UNSUPPORTED, "has no page index");
}
END_TEST


static Suite *
pagesrvSuite(void)
{
    Suite *s = suite_create("kvmsave_pagesrv");
    TCase *tc = ktTCase("serve", 120);

    tcase_add_unchecked_fixture(tc, scratchSetup, scratchTeardown);
    tcase_add_loop_test(tc, test_every_page_sent_once_after_the_devices,
                        IMAGE_SPARSE, IMAGE_ZSTD + 1);
    tcase_add_loop_test(tc, test_recovery_sends_only_the_pages_qemu_lacks,
                        IMAGE_SPARSE, IMAGE_ZSTD + 1);
    tcase_add_loop_test(tc, test_recovery_drops_requests_that_name_no_block_of_its_channel,
                        IMAGE_SPARSE, IMAGE_ZSTD + 1);
    tcase_add_test(tc, test_first_request_without_a_block_is_an_error);
    tcase_add_test(tc, test_qemu_gone_before_the_end_is_an_error);
    tcase_add_test(tc, test_qemu_error_at_the_end_is_reported);
    tcase_add_test(tc, test_damaged_page_block_stops_the_server_and_names_it);
    tcase_add_test(tc, test_damaged_chunk_stops_the_server_and_names_it);
    tcase_add_test(tc, test_image_without_page_layout_refused);
    suite_add_tcase(s, tc);
    return s;
}


int
main(void)
{
    return ktRunSuite(pagesrvSuite);
}
