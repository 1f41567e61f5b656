/*
 * stocktest.c: unit tests of the reader of stock libvirt's save images
 * (kvmsave_stock.c, kvmsave_decompress.c, through kvmsave_imagereader.c)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Images are built here as libvirt 9.0 writes them (qemu_saveimage.c): a
 * 92-byte header {magic[16], u32 version, data_len, was_running,
 * compressed, cookieOffset, unused[14]} in host byte order, data_len
 * bytes of XML, cookie and zero padding, then the stream, compressed by
 * the same programs stock libvirt runs ("gzip -c", "bzip2 -c", "xz -c -3",
 * "lzop -c", "zstd -c"). Format 6 ("sparse", QEMU's mapped-ram layout) is
 * stored as is; kvmsave only checks its beginning and reads it through.
 *
 * tests/unit/data/ holds the beginnings of images the real libvirt 11.3
 * (Debian 13, QEMU 10.0) wrote of the test guest with save_image_format
 * "zstd" and "sparse": header, XML area, and the first 64 KiB of the zstd
 * frame or the first 4 KiB of the mapped-ram stream (whole images are
 * tens of MiB).
 */
#include <config.h>

#include <gio/gio.h>

#include "testutil.h"
#include "scratch.h"
#include "kvmsave_decompress.h"
#include "kvmsave_imagereader.h"
#include "kvmsave_stock.h"
#include "virfile.h"
#include "viruuid.h"

#define UUID_STR "5d1bbf7e-8a4c-4a3e-9f0a-2b6c8e1d4f10"
#define DOMAIN_XML \
    "<domain type='qemu'><name>stocky</name><uuid>" UUID_STR "</uuid>" \
    "<memory unit='KiB'>131072</memory><vcpu>1</vcpu>" \
    "<os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type></os>" \
    "<cpu mode='custom' match='exact' check='none'><model>qemu64</model></cpu>" \
    "</domain>\n"
#define COOKIE \
    "<cookie>\n  <cpu mode='custom' match='exact' check='full'>\n" \
    "    <model fallback='forbid'>qemu64</model>\n" \
    "    <feature policy='require' name='lahf_lm'/>\n  </cpu>\n" \
    "  <slirpHelper/>\n</cookie>\n"
/* What stock libvirt leaves after the XML and cookie. */
#define PADDING (64 * 1024)
#define HEADER_LEN KVMSAVE_STOCK_HEADER_LEN

/* QEMU's stream as far as the reader cares: its magic, then @len bytes
 * that compress somewhat (text, zero runs and noise, as guest RAM). */
/* The stock image @r reads, or NULL. */
static kvmsaveStockImage *
stockOf(kvmsaveImageReader *r)
{
    return kvmsaveImageReaderBackendData(r, &kvmsaveStockBackend);
}


static GByteArray *
makeStream(size_t len)
{
    GByteArray *a = g_byte_array_sized_new(len);
    guint32 seed = 12345;
    size_t i;

    g_byte_array_append(a, (const guint8 *) "QEVM\0\0\0\3", 8);
    for (i = 8; i < len; i++) {
        guint8 b;

        seed = seed * 1103515245 + 12345;
        switch ((i / 65536) % 3) {
        case 0: b = "libvirt kvmsave stock image "[i % 28]; break;
        case 1: b = 0; break;
        default: b = seed >> 16; break;
        }
        g_byte_array_append(a, &b, 1);
    }
    return a;
}


/* @in through "@prog -c" (and @arg), as stock libvirt's save runs it. */
static GBytes *
compress(const char *prog, const char *arg, GByteArray *in)
{
    const char *argv[] = { prog, "-c", arg, NULL };
    g_autoptr(GError) gerr = NULL;
    g_autoptr(GSubprocess) proc = NULL;
    g_autoptr(GBytes) input = g_bytes_new(in->data, in->len);
    GBytes *out = NULL;

    proc = g_subprocess_newv(argv, G_SUBPROCESS_FLAGS_STDIN_PIPE |
                             G_SUBPROCESS_FLAGS_STDOUT_PIPE, &gerr);
    ck_assert_msg(proc, "cannot run %s: %s", prog, gerr ? gerr->message : "");
    ck_assert_msg(g_subprocess_communicate(proc, input, NULL, &out, NULL, &gerr),
                  "%s failed: %s", prog, gerr ? gerr->message : "");
    ck_assert(g_subprocess_get_successful(proc));
    return out;
}


/* The stream of @format as stock libvirt stores it. */
static GBytes *
storedStream(int format, GByteArray *stream)
{
    switch ((kvmsaveCompress) format) {
    case KVMSAVE_COMPRESS_GZIP: return compress("gzip", NULL, stream);
    case KVMSAVE_COMPRESS_BZIP2: return compress("bzip2", NULL, stream);
    case KVMSAVE_COMPRESS_XZ: return compress("xz", "-3", stream);
    case KVMSAVE_COMPRESS_LZOP: return compress("lzop", NULL, stream);
    case KVMSAVE_COMPRESS_ZSTD: return compress("zstd", NULL, stream);
    case KVMSAVE_COMPRESS_RAW:
    case KVMSAVE_COMPRESS_SPARSE:
    case KVMSAVE_COMPRESS_LAST:
        break;
    }
    return g_bytes_new(stream->data, stream->len);
}


typedef struct {
    uint32_t f[5];              /* version, data_len, was_running, compressed, cookieOffset */
    const char *magic;
    const char *xml;
    const char *cookie;
} StockHeader;

static void
stockHeaderInit(StockHeader *h, int format, const char *xml, const char *cookie)
{
    size_t xmlLen = strlen(xml) + 1;
    size_t cookieLen = cookie ? strlen(cookie) + 1 : 0;

    h->magic = KVMSAVE_STOCK_MAGIC;
    h->xml = xml;
    h->cookie = cookie;
    h->f[0] = 2;
    h->f[1] = xmlLen + cookieLen + PADDING;
    h->f[2] = 1;
    h->f[3] = format;
    h->f[4] = cookie ? xmlLen : 0;
}

/* Write header (in the other byte order when @swap), XML area and
 * @stored to @path. */
static void
writeImageFull(const char *path, const StockHeader *h, GBytes *stored, bool swap)
{
    g_autoptr(GByteArray) a = g_byte_array_new();
    unsigned char head[HEADER_LEN] = { 0 };
    g_autofree char *area = g_malloc0(h->f[1]);
    size_t len;
    const void *data = stored ? g_bytes_get_data(stored, &len) : NULL;
    uint32_t f[5];
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(f); i++)
        f[i] = swap ? GUINT32_SWAP_LE_BE(h->f[i]) : h->f[i];
    memcpy(head, h->magic, 16);
    memcpy(head + 16, f, sizeof(f));
    g_byte_array_append(a, head, sizeof(head));
    if (h->f[1] > 0)
        memcpy(area, h->xml, MIN(strlen(h->xml), h->f[1]));
    if (h->cookie && h->f[4] + strlen(h->cookie) <= h->f[1])
        memcpy(area + h->f[4], h->cookie, strlen(h->cookie));
    g_byte_array_append(a, (guint8 *) area, h->f[1]);
    if (data)
        g_byte_array_append(a, data, len);
    fileWrite(path, a->data, a->len);
}

static void
writeImage(const char *path, const StockHeader *h, GBytes *stored)
{
    writeImageFull(path, h, stored, false);
}

/* A complete image of @stream in @format at scratch/@name. */
static char *
writeStdImage(const char *name, int format, GByteArray *stream)
{
    char *path = scratchPath(name);
    g_autoptr(GBytes) stored = storedStream(format, stream);
    StockHeader h;

    stockHeaderInit(&h, format, DOMAIN_XML, COOKIE);
    writeImage(path, &h, stored);
    return path;
}

/* Read every block; the stream must come back whole. Returns the sum of
 * the readers' progress. */
static uint64_t
assertReadsBack(kvmsaveImageReader *r, GByteArray *stream)
{
    g_autoptr(GByteArray) got = g_byte_array_new();
    const unsigned char *data;
    size_t len;
    uint64_t progress = 0;
    int rc;

    while ((rc = kvmsaveImageReadChunk(r, &data, &len)) > 0) {
        ck_assert_uint_gt(len, 0);
        g_byte_array_append(got, data, len);
        progress += kvmsaveImageReaderLastProgress(r);
    }
    KT_ASSERT_NO_ERROR();
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(kvmsaveImageReadChunk(r, &data, &len), 0);
    ck_assert_uint_eq(got->len, stream->len);
    ck_assert(memcmp(got->data, stream->data, stream->len) == 0);
    return progress;
}

/* @r's guest, as its XML names it, to be restored running. */
static const kvmsaveImageHeader *
assertGuest(kvmsaveImageReader *r, const char *uuid, const char *name,
            const char *machine)
{
    const kvmsaveImageHeader *hdr = kvmsaveImageReaderHeader(r);
    char got[VIR_UUID_STRING_BUFLEN];

    virUUIDFormat(hdr->uuid, got);
    ck_assert_str_eq(got, uuid);
    ck_assert_str_eq(hdr->name, name);
    ck_assert_str_eq(hdr->machine, machine);
    ck_assert_uint_eq(hdr->flags, KVMSAVE_IMAGE_FLAG_RUNNING);
    return hdr;
}

static void
assertOpenFails(const char *path, int code, const char *substr)
{
    g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_CACHED);

    ck_assert_msg(r == NULL, "%s opened", path);
    KT_ASSERT_ERROR(code, substr);
    virResetLastError();
}

/* Opens, and reading fails with @substr, the same on a second try. */
static void
assertReadFails(const char *path, const char *substr)
{
    g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_CACHED);
    const unsigned char *data;
    size_t len;
    int rc;

    ck_assert_msg(r != NULL, "%s: %s", path, virGetLastErrorMessage());
    while ((rc = kvmsaveImageReadChunk(r, &data, &len)) > 0)
        ;
    ck_assert_int_eq(rc, -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, substr);
    virResetLastError();
    ck_assert_int_eq(kvmsaveImageReadChunk(r, &data, &len), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, substr);
    virResetLastError();
}


/* ---- reading ---- */

START_TEST(test_reads_each_compression)
{
    /* Larger than the 4 MiB blocks, so blocks and reads are crossed. */
    g_autoptr(GByteArray) stream = makeStream(9 * 1024 * 1024 + 123);
    int format = _i;
    g_autofree char *name = g_strdup_printf("%s.img", kvmsaveCompressToString(format));
    g_autofree char *path = writeStdImage(name, format, stream);
    g_autoptr(kvmsaveImageReader) r = NULL;
    const kvmsaveImageHeader *hdr;
    const kvmsaveStockInfo *info;
    uint64_t size = fileSize(path);

    /* The restore's way: direct where the file system allows it. */
    r = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_STREAM);
    ck_assert_msg(r, "%s", virGetLastErrorMessage());
    ck_assert(stockOf(r) != NULL);
    hdr = assertGuest(r, UUID_STR, "stocky", "pc-i440fx-7.2");
    ck_assert_str_eq(hdr->xml, DOMAIN_XML);
    ck_assert_uint_eq(hdr->streams, 1);

    info = kvmsaveStockImageInfo(stockOf(r));
    ck_assert_uint_eq(info->version, 2);
    ck_assert(!info->swapped);
    ck_assert_int_eq(info->compressed, format);
    ck_assert_str_eq(info->cookie, COOKIE);
    ck_assert_uint_eq(info->streamOffset, HEADER_LEN + info->dataLen);
    ck_assert_uint_eq(info->streamOffset + info->streamSize, size);
    ck_assert_uint_eq(kvmsaveImageReaderTrailer(r)->streamBytes, info->streamSize);

    /* Progress counts the file's bytes: the stored stream, all of it. */
    ck_assert_uint_eq(assertReadsBack(r, stream), info->streamSize);
    ck_assert_uint_eq(info->decoded, stream->len);
}
END_TEST


/* Input a byte at a time and output in 7-byte pieces: every state of
 * every decoder is left and resumed. */
START_TEST(test_decoders_resume_anywhere)
{
    g_autoptr(GByteArray) stream = makeStream(200 * 1024);
    g_autoptr(GBytes) stored = storedStream(_i, stream);
    g_autoptr(kvmsaveDecompressor) d = kvmsaveDecompressorNew(_i);
    g_autoptr(GByteArray) got = g_byte_array_new();
    size_t storedLen;
    const unsigned char *p = g_bytes_get_data(stored, &storedLen);
    const unsigned char *end = p + storedLen;
    const char *why = NULL;
    int rc = 0;

    ck_assert(d);
    while (rc == 0) {
        const unsigned char *in = p;
        size_t inLen = p < end ? 1 : 0;
        unsigned char out[7];
        size_t n = 0;

        rc = kvmsaveDecompress(d, &in, &inLen, out, sizeof(out), &n, &why);
        ck_assert_msg(rc >= 0, "%s", NULLSTR(why));
        ck_assert_msg(rc == 1 || n > 0 || in > p || p < end,
                      "no progress at the end of the input");
        g_byte_array_append(got, out, n);
        p = in;
    }
    ck_assert(p == end);
    ck_assert_uint_eq(got->len, stream->len);
    ck_assert(memcmp(got->data, stream->data, stream->len) == 0);
}
END_TEST


START_TEST(test_reads_version_1_and_the_other_byte_order)
{
    g_autoptr(GByteArray) stream = makeStream(100000);
    g_autoptr(GBytes) raw = storedStream(KVMSAVE_COMPRESS_RAW, stream);
    g_autofree char *v1 = scratchPath("v1.img");
    g_autofree char *swapped = scratchPath("swapped.img");
    StockHeader h;

    /* Version 1 had no compression: the field is not looked at. */
    stockHeaderInit(&h, 7, DOMAIN_XML, NULL);
    h.f[0] = 1;
    h.f[2] = 0;
    writeImage(v1, &h, raw);
    {
        g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(v1, KVMSAVE_IMAGE_IO_CACHED);

        ck_assert_msg(r, "%s", virGetLastErrorMessage());
        ck_assert_uint_eq(kvmsaveImageReaderHeader(r)->flags, 0);
        ck_assert_int_eq(kvmsaveStockImageInfo(stockOf(r))->compressed,
                         KVMSAVE_COMPRESS_RAW);
        ck_assert(kvmsaveStockImageInfo(stockOf(r))->cookie == NULL);
        assertReadsBack(r, stream);
    }

    /* Moved from a host of the other byte order. */
    stockHeaderInit(&h, KVMSAVE_COMPRESS_RAW, DOMAIN_XML, COOKIE);
    writeImageFull(swapped, &h, raw, true);
    {
        g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(swapped, KVMSAVE_IMAGE_IO_CACHED);
        const kvmsaveStockInfo *info;

        ck_assert_msg(r, "%s", virGetLastErrorMessage());
        info = kvmsaveStockImageInfo(stockOf(r));
        ck_assert(info->swapped);
        ck_assert_str_eq(info->cookie, COOKIE);
        ck_assert_uint_eq(kvmsaveImageReaderHeader(r)->flags, KVMSAVE_IMAGE_FLAG_RUNNING);
        assertReadsBack(r, stream);
    }
}
END_TEST


/* ---- refusals ---- */

START_TEST(test_incomplete_image_refused_and_kept)
{
    g_autoptr(GByteArray) stream = makeStream(100000);
    g_autofree char *path = writeStdImage("part.img", KVMSAVE_COMPRESS_RAW, stream);
    g_autofree unsigned char *before = NULL;
    g_autofree unsigned char *after = NULL;
    size_t beforeLen;
    size_t afterLen;

    filePatch(path, 0, KVMSAVE_STOCK_PARTIAL, 16);
    before = fileRead(path, &beforeLen);
    assertOpenFails(path, VIR_ERR_OPERATION_FAILED, "incomplete save image of stock libvirt");
    assertOpenFails(path, VIR_ERR_OPERATION_FAILED, "was interrupted");
    assertOpenFails(path, VIR_ERR_OPERATION_FAILED, "was not saved");
    after = fileRead(path, &afterLen);
    ck_assert_uint_eq(beforeLen, afterLen);
    ck_assert(memcmp(before, after, beforeLen) == 0);
}
END_TEST


START_TEST(test_corrupt_headers_refused)
{
    /* Header fields (version, XML area length) set to values stock
     * libvirt never writes. */
    static const struct {
        size_t field;
        uint32_t value;
        const char *expect;
    } fields[] = {
        { 0, 3, "format version 3," },
        { 0, 0, "format version 0," },
        { 1, 0, "invalid XML area length 0" },
    };
    g_autoptr(GByteArray) stream = makeStream(10000);
    g_autoptr(GBytes) raw = storedStream(KVMSAVE_COMPRESS_RAW, stream);
    g_autofree char *path = scratchPath("header.img");
    StockHeader h;
    size_t i;

    stockHeaderInit(&h, KVMSAVE_COMPRESS_RAW, DOMAIN_XML, COOKIE);
    writeImage(path, &h, raw);
    fileTruncate(path, 50);
    assertOpenFails(path, VIR_ERR_OPERATION_FAILED, "truncated inside its header");

    stockHeaderInit(&h, KVMSAVE_COMPRESS_RAW, DOMAIN_XML, COOKIE);
    for (i = 0; i < G_N_ELEMENTS(fields); i++) {
        StockHeader bad = h;

        bad.f[fields[i].field] = fields[i].value;
        writeImage(path, &bad, raw);
        assertOpenFails(path, VIR_ERR_OPERATION_FAILED, fields[i].expect);
    }

    /* The cookie would start past the XML area. */
    h.f[4] = h.f[1];
    writeImage(path, &h, raw);
    assertOpenFails(path, VIR_ERR_OPERATION_FAILED, "save cookie offset");

    stockHeaderInit(&h, KVMSAVE_COMPRESS_LAST, DOMAIN_XML, COOKIE);
    writeImage(path, &h, raw);
    assertOpenFails(path, VIR_ERR_OPERATION_FAILED, "uses compression 7");

    /* The area runs past the end of the file. */
    stockHeaderInit(&h, KVMSAVE_COMPRESS_RAW, DOMAIN_XML, COOKIE);
    writeImage(path, &h, NULL);
    fileTruncate(path, HEADER_LEN + 1000);
    assertOpenFails(path, VIR_ERR_OPERATION_FAILED, "truncated inside its domain XML");

    /* XML that fills its part of the area with no NUL. */
    stockHeaderInit(&h, KVMSAVE_COMPRESS_RAW, DOMAIN_XML, COOKIE);
    h.f[4] = 20;
    writeImage(path, &h, raw);
    assertOpenFails(path, VIR_ERR_OPERATION_FAILED, "not terminated");

    stockHeaderInit(&h, KVMSAVE_COMPRESS_RAW, "", NULL);
    writeImage(path, &h, raw);
    assertOpenFails(path, VIR_ERR_OPERATION_FAILED, "empty or not terminated");

    stockHeaderInit(&h, KVMSAVE_COMPRESS_RAW, "<domain><name>x</name></domain>", NULL);
    writeImage(path, &h, raw);
    assertOpenFails(path, VIR_ERR_OPERATION_FAILED, "no <uuid>");

    stockHeaderInit(&h, KVMSAVE_COMPRESS_RAW,
                    "<domain><uuid>not-a-uuid</uuid></domain>", NULL);
    writeImage(path, &h, raw);
    assertOpenFails(path, VIR_ERR_OPERATION_FAILED, "invalid <uuid> 'not-a-uuid'");

    stockHeaderInit(&h, KVMSAVE_COMPRESS_RAW, "<domain><uuid>", NULL);
    writeImage(path, &h, raw);
    assertOpenFails(path, VIR_ERR_OPERATION_FAILED, "domain XML does not parse");
}
END_TEST


START_TEST(test_damaged_streams_refused)
{
    g_autoptr(GByteArray) stream = makeStream(3 * 1024 * 1024);
    g_autoptr(GByteArray) notQemu = makeStream(100000);
    g_autofree char *gz = writeStdImage("gz.img", KVMSAVE_COMPRESS_GZIP, stream);
    g_autofree char *lzo = writeStdImage("lzo.img", KVMSAVE_COMPRESS_LZOP, stream);
    g_autofree char *xz = writeStdImage("xz.img", KVMSAVE_COMPRESS_XZ, stream);
    g_autofree char *bz = writeStdImage("bz.img", KVMSAVE_COMPRESS_BZIP2, stream);
    g_autofree char *raw = NULL;
    g_autofree char *empty = NULL;
    uint64_t size;
    int format;

    /* Cut short: each decoder notices the missing end. */
    fileTruncate(gz, fileSize(gz) - 3);
    assertReadFails(gz, "gzip stream ends early");
    fileTruncate(xz, fileSize(xz) / 2);
    assertReadFails(xz, "xz stream ends early");
    fileTruncate(bz, fileSize(bz) - 1);
    assertReadFails(bz, "bzip2 stream ends early");
    size = fileSize(lzo);
    fileTruncate(lzo, size - 4); /* just the end marker gone */
    assertReadFails(lzo, "lzop stream ends early");

    /* A changed byte: the formats' own checksums find it. */
    g_free(gz);
    gz = writeStdImage("gz.img", KVMSAVE_COMPRESS_GZIP, stream);
    filePatch(gz, fileSize(gz) - 6, "\xff", 1); /* the CRC-32 */
    assertReadFails(gz, "gzip stream does not decompress");
    g_free(lzo);
    lzo = writeStdImage("lzo.img", KVMSAVE_COMPRESS_LZOP, stream);
    filePatch(lzo, fileSize(lzo) / 2, "\x55\xaa", 2);
    assertReadFails(lzo, "lzop stream does not decompress");

    /* Anything after the compressed stream. */
    g_free(xz);
    xz = writeStdImage("xz.img", KVMSAVE_COMPRESS_XZ, stream);
    size = fileSize(xz);
    filePatch(xz, size, "garbage", 7);
    assertReadFails(xz, "data follows the end of its xz stream");

    /* Not QEMU's stream, or none at all. */
    notQemu->data[0] = 'X';
    raw = writeStdImage("raw.img", KVMSAVE_COMPRESS_RAW, notQemu);
    assertReadFails(raw, "not QEMU's migration stream");
    g_byte_array_set_size(notQemu, 0);
    empty = writeStdImage("empty.img", KVMSAVE_COMPRESS_RAW, notQemu);
    assertReadFails(empty, "it ends where QEMU's stream should begin");
    /* A compressed stream with no byte at all (found by the fuzzer). */
    for (format = KVMSAVE_COMPRESS_GZIP; format < KVMSAVE_COMPRESS_SPARSE; format++) {
        StockHeader h;

        stockHeaderInit(&h, format, DOMAIN_XML, COOKIE);
        writeImage(empty, &h, NULL);
        assertReadFails(empty, "stream ends early");
    }
}
END_TEST


/* ---- images of the real libvirt 11.3 (tests/unit/data) ---- */

#define LV11_UUID "e66c08d8-4a37-456e-ba6a-e76b18a7d37f"

/* The fixture @name, copied to scratch (tests may change the copy). */
static char *
lv11Image(const char *name)
{
    g_autofree char *src = g_build_filename(KT_DATADIR, name, NULL);
    g_autofree unsigned char *d = NULL;
    char *path = scratchPath(name);
    size_t len;

    d = fileRead(src, &len);
    fileWrite(path, d, len);
    return path;
}

/* Opens, and says what libvirt 11.3 wrote of the test guest. */
static kvmsaveImageReader *
lv11Open(const char *path, int format)
{
    kvmsaveImageReader *r = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_CACHED);
    const kvmsaveStockInfo *info;

    ck_assert_msg(r, "%s: %s", path, virGetLastErrorMessage());
    assertGuest(r, LV11_UUID, "stockguest", "pc-i440fx-10.0");
    info = kvmsaveStockImageInfo(stockOf(r));
    ck_assert_uint_eq(info->version, 2);
    ck_assert_int_eq(info->compressed, format);
    ck_assert_ptr_nonnull(info->cookie);
    ck_assert(strstr(info->cookie, "<cookie>"));
    ck_assert_uint_eq(info->streamOffset, HEADER_LEN + info->dataLen);
    return r;
}


START_TEST(test_libvirt_11_3_zstd_image)
{
    g_autofree char *path = lv11Image("libvirt-11.3-zstd-prefix.img");
    g_autoptr(kvmsaveImageReader) r = lv11Open(path, KVMSAVE_COMPRESS_ZSTD);
    /* Copied: the reader, which holds the image's info, is freed below. */
    uint64_t streamOffset = kvmsaveStockImageInfo(stockOf(r))->streamOffset;
    g_autoptr(kvmsaveDecompressor) d = kvmsaveDecompressorNew(KVMSAVE_COMPRESS_ZSTD);
    g_autofree unsigned char *file = NULL;
    g_autofree unsigned char *out = g_malloc(1024 * 1024);
    const unsigned char *in;
    const char *why = NULL;
    size_t fileLen;
    size_t inLen;
    size_t n = 0;

    /* libzstd decodes the start of "zstd -c"'s frame into QEMU's stream. */
    file = fileRead(path, &fileLen);
    in = file + streamOffset;
    inLen = fileLen - streamOffset;
    ck_assert_int_eq(kvmsaveDecompress(d, &in, &inLen, out, 1024 * 1024, &n, &why), 0);
    ck_assert_uint_gt(n, 8);
    ck_assert(memcmp(out, "QEVM\0\0\0\3", 8) == 0);

    /* The frame is cut here: the reader says so. */
    g_clear_pointer(&r, kvmsaveImageReaderFree);
    assertReadFails(path, "zstd stream ends early");
    /* A frame that is not zstd's. */
    filePatch(path, streamOffset, "\x28\xb5\x2f\x00", 4);
    assertReadFails(path, "zstd stream does not decompress");
}
END_TEST


START_TEST(test_libvirt_11_3_sparse_image)
{
    g_autofree char *path = lv11Image("libvirt-11.3-sparse-prefix.img");
    g_autoptr(kvmsaveImageReader) r = lv11Open(path, KVMSAVE_COMPRESS_SPARSE);
    uint64_t offset = kvmsaveStockImageInfo(stockOf(r))->streamOffset;
    const unsigned char *data;
    size_t len;

    /* Read through as stored (what verify does): QEMU's stream, with the
     * mapped-ram capability in its configuration section. */
    ck_assert_int_eq(kvmsaveImageReadChunk(r, &data, &len), 1);
    ck_assert_uint_eq(len, fileSize(path) - offset);
    ck_assert(memcmp(data, "QEVM\0\0\0\3", 8) == 0);
    ck_assert(memmem(data, len, "mapped-ram", 10));
    ck_assert_int_eq(kvmsaveImageReadChunk(r, &data, &len), 0);
    g_clear_pointer(&r, kvmsaveImageReaderFree);

    /* Checked at open, before any QEMU could start: the stream's start,
     * and room for QEMU's headers. */
    filePatch(path, offset + 7, "\x02", 1);
    assertOpenFails(path, VIR_ERR_OPERATION_FAILED, "not QEMU's migration stream");
    fileTruncate(path, offset + 20);
    assertOpenFails(path, VIR_ERR_OPERATION_FAILED, "too few for QEMU's headers");
}
END_TEST


/* Its stream records file offsets: a rewrite keeps the XML area's size,
 * and refuses XML that does not fit. */
START_TEST(test_write_sparse_keeps_offsets)
{
    g_autofree char *path = lv11Image("libvirt-11.3-sparse-prefix.img");
    g_autoptr(kvmsaveImageReader) r = lv11Open(path, KVMSAVE_COMPRESS_SPARSE);
    const kvmsaveStockInfo *info = kvmsaveStockImageInfo(stockOf(r));
    g_autofree char *xml = g_strdup(kvmsaveImageReaderHeader(r)->xml);
    g_autofree char *small = scratchPath("sparse-small.img");
    g_autofree char *big = scratchPath("sparse-big.img");
    g_autofree unsigned char *old = NULL;
    g_autofree unsigned char *new = NULL;
    GString *bigXML = g_string_new(xml);
    size_t oldLen, newLen;

    {
        VIR_AUTOCLOSE fd = open(small, O_WRONLY | O_CREAT | O_EXCL, 0600);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(kvmsaveStockImageWrite(stockOf(r), fd, small, xml, true), 0);
    }
    old = fileRead(path, &oldLen);
    new = fileRead(small, &newLen);
    ck_assert_uint_eq(newLen, oldLen);
    ck_assert(memcmp(new + info->streamOffset, old + info->streamOffset,
                     oldLen - info->streamOffset) == 0);
    {
        g_autoptr(kvmsaveImageReader) n = lv11Open(small, KVMSAVE_COMPRESS_SPARSE);

        ck_assert_uint_eq(kvmsaveStockImageInfo(stockOf(n))->dataLen, info->dataLen);
    }

    g_string_truncate(bigXML, 0);
    g_string_append_printf(bigXML, "%s<!-- %*s -->", xml, (int) info->dataLen, "");
    {
        VIR_AUTOCLOSE fd = open(big, O_WRONLY | O_CREAT | O_EXCL, 0600);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(kvmsaveStockImageWrite(stockOf(r), fd, big, bigXML->str, true), -1);
        KT_ASSERT_ERROR(VIR_ERR_OPERATION_UNSUPPORTED, "cannot grow");
        virResetLastError();
    }
    g_string_free(bigXML, TRUE);
}
END_TEST


/* ---- save-image-define ---- */

START_TEST(test_write_keeps_format_cookie_and_stream)
{
    g_autoptr(GByteArray) stream = makeStream(5 * 1024 * 1024);
    g_autofree char *path = writeStdImage("old.img", KVMSAVE_COMPRESS_LZOP, stream);
    g_autofree char *small = scratchPath("small.img");
    g_autofree char *big = scratchPath("big.img");
    g_autofree char *bigXML = NULL;
    GString *desc = g_string_new("<domain type='qemu'><description>");
    g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_CACHED);
    uint32_t oldDataLen;
    size_t i;

    ck_assert(r);
    oldDataLen = kvmsaveStockImageInfo(stockOf(r))->dataLen;

    /* XML that fits: the area keeps its size, as stock libvirt does. */
    {
        VIR_AUTOCLOSE fd = open(small, O_WRONLY | O_CREAT | O_EXCL, 0600);
        g_autoptr(kvmsaveImageReader) n = NULL;
        g_autofree unsigned char *d = NULL;
        const kvmsaveStockInfo *info;
        size_t len;
        uint32_t f[5];

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(kvmsaveStockImageWrite(stockOf(r), fd, small,
                                                DOMAIN_XML, false), 0);
        n = kvmsaveImageOpen(small, KVMSAVE_IMAGE_IO_CACHED);
        ck_assert_msg(n, "%s", virGetLastErrorMessage());
        info = kvmsaveStockImageInfo(stockOf(n));
        ck_assert_uint_eq(info->dataLen, oldDataLen);
        ck_assert_int_eq(info->compressed, KVMSAVE_COMPRESS_LZOP);
        ck_assert_str_eq(info->cookie, COOKIE);
        ck_assert_uint_eq(kvmsaveImageReaderHeader(n)->flags, 0);
        assertReadsBack(n, stream);
        /* As libvirt 9.0 lays it out, marked complete. */
        d = fileRead(small, &len);
        ck_assert_uint_gt(len, HEADER_LEN);
        memcpy(f, d + 16, sizeof(f));
        ck_assert(memcmp(d, KVMSAVE_STOCK_MAGIC, 16) == 0);
        ck_assert_uint_eq(f[0], 2);
        ck_assert_uint_eq(f[4], strlen(DOMAIN_XML) + 1);
    }

    /* XML that does not: a new file gives it room (stock refuses). */
    for (i = 0; i < 2 * oldDataLen; i++)
        g_string_append_c(desc, 'a' + i % 26);
    g_string_append(desc, "</description><name>stocky</name><uuid>" UUID_STR
                    "</uuid></domain>\n");
    bigXML = g_string_free(desc, FALSE);
    {
        VIR_AUTOCLOSE fd = open(big, O_WRONLY | O_CREAT | O_EXCL, 0600);
        g_autoptr(kvmsaveImageReader) n = NULL;

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(kvmsaveStockImageWrite(stockOf(r), fd, big,
                                                bigXML, true), 0);
        n = kvmsaveImageOpen(big, KVMSAVE_IMAGE_IO_CACHED);
        ck_assert_msg(n, "%s", virGetLastErrorMessage());
        ck_assert_str_eq(kvmsaveImageReaderHeader(n)->xml, bigXML);
        ck_assert_uint_gt(kvmsaveStockImageInfo(stockOf(n))->dataLen,
                          strlen(bigXML));
        ck_assert_str_eq(kvmsaveStockImageInfo(stockOf(n))->cookie, COOKIE);
        ck_assert_uint_eq(kvmsaveImageReaderHeader(n)->flags, KVMSAVE_IMAGE_FLAG_RUNNING);
        assertReadsBack(n, stream);
    }
}
END_TEST


/* ---- the header a restore writes ahead of the stream ---- */

START_TEST(test_header_format_is_read_back_as_a_raw_stock_image)
{
    g_autoptr(kvmsaveStockImage) s = NULL;
    g_autofree unsigned char *head = NULL;
    g_autofree unsigned char *plain = NULL;
    size_t len = 0;
    size_t needed = 0;

    head = kvmsaveStockHeaderFormat(KVMSAVE_STOCK_MAGIC, DOMAIN_XML, COOKIE,
                                    true, KVMSAVE_COMPRESS_RAW, 0, &len);
    ck_assert_ptr_nonnull(head);
    ck_assert_uint_eq(len, HEADER_LEN + strlen(DOMAIN_XML) + 1 + strlen(COOKIE) + 1);
    ck_assert_int_eq(kvmsaveStockHeaderDecode(head, len, "fifo", &needed, &s), 0);
    ck_assert_int_eq(kvmsaveStockImageInfo(s)->compressed, KVMSAVE_COMPRESS_RAW);
    ck_assert_uint_eq(kvmsaveStockImageInfo(s)->version, 2);
    ck_assert_str_eq(kvmsaveStockImageInfo(s)->cookie, COOKIE);
    ck_assert_uint_eq(kvmsaveStockImageInfo(s)->streamOffset, len);
    g_clear_pointer(&s, kvmsaveStockImageFree);

    /* No cookie: cookieOffset 0; a minimum area is padded with zeros. */
    plain = kvmsaveStockHeaderFormat(KVMSAVE_STOCK_MAGIC, DOMAIN_XML, NULL,
                                     false, KVMSAVE_COMPRESS_RAW, 8192, &len);
    ck_assert_ptr_nonnull(plain);
    ck_assert_uint_eq(len, HEADER_LEN + 8192);
    ck_assert_int_eq(kvmsaveStockHeaderDecode(plain, len, "fifo", &needed, &s), 0);
    ck_assert_ptr_null(kvmsaveStockImageInfo(s)->cookie);

    /* Too large for any image. */
    ck_assert_ptr_null(kvmsaveStockHeaderFormat(KVMSAVE_STOCK_MAGIC, DOMAIN_XML,
                                                NULL, false, KVMSAVE_COMPRESS_RAW,
                                                KVMSAVE_IMAGE_HEADER_MAX + 1, &len));
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "too large");
}
END_TEST


static Suite *
stockSuite(void)
{
    Suite *s = suite_create("kvmsave_stock");
    TCase *tc;

    tc = ktTCase("read", 120);
    tcase_add_unchecked_fixture(tc, scratchSetup, scratchTeardown);
    tcase_add_loop_test(tc, test_reads_each_compression,
                        KVMSAVE_COMPRESS_RAW, KVMSAVE_COMPRESS_LAST);
    tcase_add_loop_test(tc, test_decoders_resume_anywhere,
                        KVMSAVE_COMPRESS_GZIP, KVMSAVE_COMPRESS_SPARSE);
    tcase_add_test(tc, test_reads_version_1_and_the_other_byte_order);
    tcase_add_test(tc, test_libvirt_11_3_zstd_image);
    tcase_add_test(tc, test_libvirt_11_3_sparse_image);
    suite_add_tcase(s, tc);

    tc = ktTCase("refuse", 120);
    tcase_add_unchecked_fixture(tc, scratchSetup, scratchTeardown);
    tcase_add_test(tc, test_incomplete_image_refused_and_kept);
    tcase_add_test(tc, test_corrupt_headers_refused);
    tcase_add_test(tc, test_damaged_streams_refused);
    suite_add_tcase(s, tc);

    tc = ktTCase("write", 120);
    tcase_add_unchecked_fixture(tc, scratchSetup, scratchTeardown);
    tcase_add_test(tc, test_write_keeps_format_cookie_and_stream);
    tcase_add_test(tc, test_write_sparse_keeps_offsets);
    tcase_add_test(tc, test_header_format_is_read_back_as_a_raw_stock_image);
    suite_add_tcase(s, tc);

    return s;
}


int
main(void)
{
    return ktRunSuite(stockSuite);
}
