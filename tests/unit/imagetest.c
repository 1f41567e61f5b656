/*
 * imagetest.c: unit tests of the kvmsave save-image format, its codec,
 * writer and reader (kvmsave_image.c, kvmsave_imagewriter.c,
 * kvmsave_imagereader.c), of sparse images (kvmsave_mapped.c) and of
 * kvmsaveCrc32c (kvmsave_util.c)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Offsets follow the documented layout: a 64-byte fixed header (magic[8],
 * u16 major @8, u16 minor @10, u32 header_size @12, uuid @16, i64 created
 * @32, u32 flags @40, u32 chunk_size @44, u32 nfields @48, u32 fields_len
 * @52), fields {u16 tag, u16 flags, u32 len, data padded to 8}, a u32
 * crc32c after the fields; chunks of a 32-byte header ("KSCK", u32
 * encoding, u64 index, u32 stored len, u32 raw len, u32 payload crc, u32
 * crc of the first 28 bytes) and their data; a 64-byte trailer at the end
 * of the file ("KVMSEND\n", u64 chunks, u64 stream bytes, u64 data end,
 * u32 header crc @32, u32 table crc @36, i64 completed @40, u32 crc of
 * the first 60 bytes @60). A sparse image has its stream at the MAPPED
 * field's offset instead of chunks, then a table of one u32 crc32c per
 * block (holes read as zeros); its trailer counts blocks for chunks.
 * Since 1.5 a PAGEINDEX field (tag 10, "OFFSET LENGTH CRC") places a page
 * index, opaque here, at the block after the header checksum, inside the
 * header's size.
 */
#include <config.h>

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "testutil.h"
#include "scratch.h"
#include "kvmsave_imagepriv.h"
#include "kvmsave_imagereaderpriv.h"
#include "kvmsave_imagewriterpriv.h"
#include "kvmsave_mapped.h"
#include "kvmsave_util.h"
#include "virfile.h"
#include "viruuid.h"

#define ALIGN KVMSAVE_IMAGE_ALIGN
#define UUID_STR "c7a5fdbd-edaf-9455-926a-d65c16db1809"
#define OTHER_UUID_STR "0b4e3cf4-7e2b-4c5e-9d5d-1c0e6b0f7a21"
#define DOMAIN_XML \
    "<domain type='qemu'><name>t</name><uuid>" UUID_STR "</uuid>" \
    "<memory unit='KiB'>262144</memory><vcpu>1</vcpu>" \
    "<os><type arch='x86_64' machine='pc'>hvm</type></os>" \
    "<devices><graphics type='vnc'/></devices></domain>\n"
#define CREATED ((int64_t) 1700000000)

/* The field area starts right after the fixed header; the XML is the
 * first field written. */
#define XML_DATA_OFFSET (KVMSAVE_IMAGE_FIXED_HEADER_LEN + 8)


/* ---- little-endian helpers, independent of the code under test ---- */

static void
le16(unsigned char *p, uint16_t v)
{
    p[0] = v & 0xff;
    p[1] = v >> 8;
}

static void
le32(unsigned char *p, uint32_t v)
{
    le16(p, v & 0xffff);
    le16(p + 2, v >> 16);
}

static uint32_t
rd32(const unsigned char *p)
{
    return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t) p[3] << 24);
}

static uint64_t
rd64(const unsigned char *p)
{
    return rd32(p) | ((uint64_t) rd32(p + 4) << 32);
}

static uint64_t
alignUp(uint64_t n, uint64_t a)
{
    return (n + a - 1) / a * a;
}


static void
fileCopyPrefix(const char *src, const char *dst, size_t len)
{
    size_t n;
    g_autofree unsigned char *buf = fileRead(src, &n);

    ck_assert_uint_le(len, n);
    fileWrite(dst, buf, len);
}


/* ---- test images ---- */

static void
fillRandom(unsigned char *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
    size_t i;

    for (i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = x >> 24;
    }
}

/* A chunk of kind 'r' (random), 'z' (zero) or 't' (text): zstd keeps the
 * first raw and shrinks the others. */
static void
fillKind(unsigned char *c, size_t len, char kind, uint64_t seed)
{
    size_t j;

    if (kind == 'r') {
        fillRandom(c, len, seed);
        return;
    }
    for (j = 0; j < len; j++)
        c[j] = kind == 'z' ? 0 : "kvmsave saves guests. "[j % 22];
}

static kvmsaveImageHeader *
testHeader(const char *uuidstr)
{
    kvmsaveImageHeader *hdr = kvmsaveImageHeaderNew();

    ck_assert_int_eq(virUUIDParse(uuidstr, hdr->uuid), 0);
    hdr->created = CREATED;
    hdr->flags = KVMSAVE_IMAGE_FLAG_RUNNING;
    hdr->chunkSize = 65536;
    hdr->xml = g_strdup(DOMAIN_XML);
    hdr->name = g_strdup("t");
    hdr->qemuVersion = g_strdup("7.2.0");
    hdr->machine = g_strdup("pc-i440fx-7.2");
    hdr->hostCPU = g_strdup("Skylake-Client-IBRS");
    hdr->producer = g_strdup("kvmsave 0.1.0 (unit test)");
    return hdr;
}

typedef struct {
    char *path;
    unsigned char *data;        /* the whole stream, as written */
    size_t dataLen;
    size_t nchunks;
    size_t *sizes;
    uint64_t *chunkOff;         /* file offset of each chunk header */
    uint32_t headerSize;
    uint32_t headerCrc;
    uint64_t dataEnd;
    uint64_t size;
    unsigned char *index;       /* the page index put into the header */
    size_t indexLen;
} TestImage;

static void
testImageClear(TestImage *img)
{
    g_free(img->path);
    g_free(img->data);
    g_free(img->sizes);
    g_free(img->chunkOff);
    g_free(img->index);
    memset(img, 0, sizeof(*img));
}

static unsigned char *
bufDup(const void *p, size_t len)
{
    unsigned char *d = g_malloc(len + 1);

    memcpy(d, p, len);
    return d;
}

/* A page index as a save puts it into the header once the chunks are
 * written: drain @w, check the chunk offsets it recorded, make @img's
 * index of @indexLen bytes of them (the offsets, then a pattern: this
 * code does not look into it) and replace @hdr, which had room for it. */
static void
putTestIndex(TestImage *img, kvmsaveImageWriter *w, kvmsaveImageHeader *hdr,
             size_t indexLen)
{
    g_autofree uint64_t *offsets = NULL;
    size_t n;
    size_t i;

    ck_assert_msg(kvmsaveImageWriterDrain(w) == 0, "%s", virGetLastErrorMessage());
    offsets = kvmsaveImageWriterTakeChunkOffsets(w, &n);
    ck_assert_uint_eq(n, img->nchunks);
    for (i = 0; i < n; i++)
        ck_assert_uint_eq(offsets[i], img->chunkOff[i] - img->headerSize);

    img->indexLen = indexLen;
    img->index = g_malloc0(indexLen + 1);
    fillRandom(img->index, indexLen, 99);
    memcpy(img->index, offsets, MIN(indexLen, n * sizeof(*offsets)));
    g_free(hdr->indexData);
    hdr->indexData = bufDup(img->index, indexLen);
    hdr->indexLen = indexLen;
    ck_assert_msg(kvmsaveImageWriterReplaceHeader(w, hdr) == 0, "%s",
                  virGetLastErrorMessage());
    ck_assert_uint_eq(hdr->headerSize, img->headerSize);
    img->headerCrc = hdr->crc;
}

/* Write an image of @n chunks of @sizes bytes of pseudo-random data to
 * @name in the scratch directory, with O_DIRECT if @direct. If @hdr has
 * room for a page index, one of @indexLen bytes replaces it at the end. */
static void
writeImageFull(TestImage *img, const char *name, kvmsaveImageHeader *hdr,
               const size_t *sizes, size_t n, uint64_t seed, bool direct,
               size_t indexLen)
{
    g_autoptr(kvmsaveImageWriter) w = NULL;
    size_t i;
    size_t off = 0;
    int fd;

    virResetLastError();
    memset(img, 0, sizeof(*img));
    img->path = scratchPath(name);
    img->nchunks = n;
    img->sizes = g_new0(size_t, n + 1);
    img->chunkOff = g_new0(uint64_t, n + 1);
    for (i = 0; i < n; i++) {
        img->sizes[i] = sizes[i];
        img->dataLen += sizes[i];
    }
    img->data = g_malloc(img->dataLen + 1);
    fillRandom(img->data, img->dataLen, seed);

    fd = open(img->path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC |
              (direct ? O_DIRECT : 0), 0600);
    ck_assert_msg(fd >= 0, "open %s: %s", img->path, g_strerror(errno));
    w = kvmsaveImageWriterNew(fd, img->path, direct);
    ck_assert_msg(kvmsaveImageWriteHeader(w, hdr) == 0, "%s",
                  virGetLastErrorMessage());
    if (hdr->indexReserve)
        kvmsaveImageWriterRecordChunks(w);
    img->headerSize = hdr->headerSize;
    img->headerCrc = hdr->crc;
    img->dataEnd = img->headerSize;
    for (i = 0; i < n; i++) {
        img->chunkOff[i] = img->dataEnd;
        ck_assert_msg(kvmsaveImageWriteChunk(w, 0, img->data + off, sizes[i]) == 0,
                      "%s", virGetLastErrorMessage());
        off += sizes[i];
        img->dataEnd += KVMSAVE_IMAGE_CHUNK_HEADER_LEN + sizes[i];
    }
    img->chunkOff[n] = img->dataEnd;
    ck_assert_uint_eq(kvmsaveImageWriterStreamBytes(w), img->dataLen);
    if (hdr->indexReserve)
        putTestIndex(img, w, hdr, indexLen);
    ck_assert_msg(kvmsaveImageWriterFinish(w) == 0, "%s",
                  virGetLastErrorMessage());
    ck_assert_int_eq(close(fd), 0);
    img->size = fileSize(img->path);
    KT_ASSERT_NO_ERROR();
}

static void
writeImageHdr(TestImage *img, const char *name, kvmsaveImageHeader *hdr,
              const size_t *sizes, size_t n, uint64_t seed)
{
    writeImageFull(img, name, hdr, sizes, n, seed, false, 0);
}

static void
writeImage(TestImage *img, const char *name,
           const size_t *sizes, size_t n, uint64_t seed)
{
    g_autoptr(kvmsaveImageHeader) hdr = testHeader(UUID_STR);

    writeImageHdr(img, name, hdr, sizes, n, seed);
}

/* The standard image: several chunks of different sizes, the last one
 * short. */
static const size_t stdSizes[] = { 65536, 65536, 100003, 4096, 1, 65536, 777 };
#define STD_CHUNKS G_N_ELEMENTS(stdSizes)

static void
writeStdImage(TestImage *img, const char *name)
{
    writeImage(img, name, stdSizes, STD_CHUNKS, 42);
}


/* Read the whole image at @path. Returns -2 when it cannot be opened,
 * -1 when reading a chunk fails (*nread chunks were read before), 0 when
 * every chunk was read and the end checked. */
static int
readImageIO(const char *path, kvmsaveImageIO io, unsigned char **data,
            size_t *len, size_t *nread)
{
    g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(path, io);
    GByteArray *out;
    const unsigned char *chunk;
    size_t clen;
    int rc;

    *nread = 0;
    *data = NULL;
    *len = 0;
    if (!r)
        return -2;
    out = g_byte_array_new();
    while ((rc = kvmsaveImageReadChunk(r, &chunk, &clen)) > 0) {
        g_byte_array_append(out, chunk, clen);
        (*nread)++;
    }
    *len = out->len;
    *data = g_byte_array_free(out, FALSE);
    return rc < 0 ? -1 : 0;
}

static int
readImage(const char *path, bool direct, unsigned char **data, size_t *len,
          size_t *nread)
{
    return readImageIO(path, direct ? KVMSAVE_IMAGE_IO_DIRECT :
                       KVMSAVE_IMAGE_IO_CACHED, data, len, nread);
}

/* Expect the image at @path to open but reading to fail at chunk
 * @failAt, after the earlier chunks came back intact, with an error
 * mentioning each of the NULL-terminated substrings. */
static void
assertChunkFailure(const TestImage *img, size_t failAt, ...)
{
    g_autofree unsigned char *data = NULL;
    size_t len;
    size_t nread;
    size_t expect = 0;
    size_t i;
    va_list ap;
    const char *substr;
    int rc;

    virResetLastError();
    rc = readImage(img->path, false, &data, &len, &nread);
    ck_assert_msg(rc == -1, "expected a chunk read failure, got %d (%s)",
                  rc, virGetLastErrorMessage());
    ck_assert_uint_eq(nread, failAt);
    for (i = 0; i < failAt; i++)
        expect += img->sizes[i];
    ck_assert_uint_eq(len, expect);
    ck_assert(len == 0 || memcmp(data, img->data, len) == 0);
    va_start(ap, failAt);
    while ((substr = va_arg(ap, const char *)))
        KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, substr);
    va_end(ap);

    /* kvmsaveImageVerify agrees. */
    {
        g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(img->path, KVMSAVE_IMAGE_IO_CACHED);
        ck_assert_ptr_nonnull(r);
        ck_assert_int_eq(kvmsaveImageVerify(r), -1);
    }
}

/* Expect opening @path to fail with an error mentioning @substr. */
static void
assertOpenFailsDirect(const char *path, bool direct, int code,
                      const char *substr)
{
    g_autoptr(kvmsaveImageReader) r = NULL;

    virResetLastError();
    r = kvmsaveImageOpen(path, direct ? KVMSAVE_IMAGE_IO_DIRECT : KVMSAVE_IMAGE_IO_CACHED);
    ck_assert_msg(r == NULL, "'%s' opened, expected \"%s\"", path, substr);
    KT_ASSERT_ERROR(code, substr);
    KT_ASSERT_ERROR(code, path);
}

static void
assertOpenFails(const char *path, int code, const char *substr)
{
    assertOpenFailsDirect(path, false, code, substr);
}

/* Whether the scratch directory's file system supports O_DIRECT. */
static bool
scratchHasDirectIO(void)
{
    g_autofree char *path = scratchPath("direct-probe");
    int fd = open(path, O_CREAT | O_RDWR | O_DIRECT, 0600);

    if (fd < 0) {
        ck_assert_int_eq(errno, EINVAL);
        return false;
    }
    close(fd);
    unlink(path);
    return true;
}

/* Whether the scratch directory is on tmpfs. */
static bool
scratchOnTmpfs(void)
{
    struct statfs sf;

    ck_assert_int_eq(statfs(scratchDir, &sf), 0);
    return sf.f_type == TMPFS_MAGIC;
}

/* Set @len bytes at @fieldOff in the 32-byte chunk header at @off to @val
 * and give it a correct header checksum again. */
static void
patchChunkHeader(const char *path, uint64_t off, size_t fieldOff,
                 const void *val, size_t len)
{
    unsigned char ch[KVMSAVE_IMAGE_CHUNK_HEADER_LEN];

    filePeek(path, off, ch, sizeof(ch));
    ck_assert(memcmp(ch, KVMSAVE_IMAGE_CHUNK_MAGIC, 4) == 0);
    memcpy(ch + fieldOff, val, len);
    le32(ch + 28, kvmsaveCrc32c(0, ch, 28));
    filePatch(path, off, ch, sizeof(ch));
}

static void
readTrailer(const TestImage *img, kvmsaveImageTrailer *tr)
{
    unsigned char buf[KVMSAVE_IMAGE_TRAILER_LEN];

    filePeek(img->path, img->size - KVMSAVE_IMAGE_TRAILER_LEN, buf, sizeof(buf));
    ck_assert_int_eq(kvmsaveImageTrailerDecode(buf, img->path, tr), 0);
}

static void
writeTrailer(const TestImage *img, const kvmsaveImageTrailer *tr)
{
    unsigned char buf[KVMSAVE_IMAGE_TRAILER_LEN];

    kvmsaveImageTrailerEncode(tr, buf);
    filePatch(img->path, img->size - KVMSAVE_IMAGE_TRAILER_LEN, buf, sizeof(buf));
}


/* ---- kvmsaveCrc32c ---- */

START_TEST(test_crc32c_known_answers)
{
    unsigned char buf[32];
    size_t i;

    ck_assert_uint_eq(kvmsaveCrc32c(0, "123456789", 9), 0xE3069283);
    ck_assert_uint_eq(kvmsaveCrc32c(0, "", 0), 0);
    /* RFC 3720 (iSCSI) B.4 test vectors */
    memset(buf, 0, sizeof(buf));
    ck_assert_uint_eq(kvmsaveCrc32c(0, buf, sizeof(buf)), 0x8A9136AA);
    memset(buf, 0xff, sizeof(buf));
    ck_assert_uint_eq(kvmsaveCrc32c(0, buf, sizeof(buf)), 0x62A8AB43);
    for (i = 0; i < sizeof(buf); i++)
        buf[i] = i;
    ck_assert_uint_eq(kvmsaveCrc32c(0, buf, sizeof(buf)), 0x46DD794E);
    for (i = 0; i < sizeof(buf); i++)
        buf[i] = 31 - i;
    ck_assert_uint_eq(kvmsaveCrc32c(0, buf, sizeof(buf)), 0x113FDB5C);
}
END_TEST


START_TEST(test_crc32c_split_feed_equals_one_shot)
{
    g_autofree unsigned char *buf = g_malloc(10007);
    uint32_t whole;
    size_t split;

    fillRandom(buf, 10007, 7);
    whole = kvmsaveCrc32c(0, buf, 10007);
    ck_assert_uint_eq(kvmsaveCrc32c(kvmsaveCrc32c(0, "1234", 4), "56789", 5),
                      0xE3069283);
    for (split = 0; split <= 10007; split += (split < 64 ? 1 : 997)) {
        uint32_t crc = kvmsaveCrc32c(0, buf, split);
        ck_assert_uint_eq(kvmsaveCrc32c(crc, buf + split, 10007 - split), whole);
    }
    /* Many small pieces, including empty ones. */
    {
        uint32_t crc = 0;
        size_t off = 0;
        size_t piece = 0;

        while (off < 10007) {
            size_t n = MIN(piece % 13, 10007 - off);
            crc = kvmsaveCrc32c(crc, buf + off, n);
            off += n;
            piece++;
        }
        ck_assert_uint_eq(crc, whole);
    }
}
END_TEST


/* ---- round trips ---- */

static void
assertStdHeader(const kvmsaveImageHeader *hdr)
{
    unsigned char uuid[VIR_UUID_BUFLEN];

    ck_assert_int_eq(virUUIDParse(UUID_STR, uuid), 0);
    ck_assert(memcmp(hdr->uuid, uuid, VIR_UUID_BUFLEN) == 0);
    ck_assert_uint_eq(hdr->major, KVMSAVE_IMAGE_MAJOR);
    ck_assert_uint_eq(hdr->minor, KVMSAVE_IMAGE_MINOR);
    ck_assert_int_eq(hdr->created, CREATED);
    ck_assert_uint_eq(hdr->flags, KVMSAVE_IMAGE_FLAG_RUNNING);
    ck_assert_uint_eq(hdr->chunkSize, 65536);
    ck_assert_str_eq(hdr->xml, DOMAIN_XML);
    ck_assert_str_eq(hdr->name, "t");
    ck_assert_str_eq(hdr->qemuVersion, "7.2.0");
    ck_assert_str_eq(hdr->machine, "pc-i440fx-7.2");
    ck_assert_str_eq(hdr->hostCPU, "Skylake-Client-IBRS");
    ck_assert_str_eq(hdr->producer, "kvmsave 0.1.0 (unit test)");
}



/* ---- zstd-encoded chunks ---- */

/* Write chunks of @kinds ('t' compressible text, 'z' zeros, 'r' random)
 * with the zstd format; returns the concatenated raw stream. */
static unsigned char *
writeZstdImage(const char *path, const char *kinds, size_t chunkLen,
               size_t *total)
{
    g_autoptr(kvmsaveImageWriter) w = NULL;
    g_autoptr(kvmsaveImageHeader) hdr = testHeader(UUID_STR);
    size_t n = strlen(kinds);
    unsigned char *all = g_malloc(n * chunkLen);
    size_t i;
    int fd = open(path, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);

    ck_assert_int_ge(fd, 0);
    w = kvmsaveImageWriterNew(fd, path, false);
    kvmsaveImageWriterSetFormat(w, KVMSAVE_IMAGE_ENCODING_ZSTD);
    ck_assert_int_eq(kvmsaveImageWriteHeader(w, hdr), 0);
    for (i = 0; i < n; i++) {
        unsigned char *c = all + i * chunkLen;

        fillKind(c, chunkLen, kinds[i], i + 1);
        ck_assert_int_eq(kvmsaveImageWriteChunk(w, 0, c, chunkLen), 0);
    }
    ck_assert_int_eq(kvmsaveImageWriterFinish(w), 0);
    close(fd);
    *total = n * chunkLen;
    return all;
}


START_TEST(test_zstd_round_trip_shrinks_and_keeps_random_raw)
{
    g_autofree char *path = scratchPath("zstd.img");
    g_autoptr(kvmsaveImageReader) r = NULL;
    g_autofree unsigned char *all = NULL;
    const unsigned char *data;
    size_t total;
    size_t len;
    size_t off = 0;
    size_t size;
    g_autofree unsigned char *file = NULL;
    size_t i;

    all = writeZstdImage(path, "tzrt", 1 << 20, &total);
    file = fileRead(path, &size);
    /* two compressible and one zero chunk of 1 MiB shrink to almost
     * nothing; the random one is stored as it is */
    ck_assert_uint_lt(size, (1 << 20) + 3 * 65536 + 3 * ALIGN);
    ck_assert_uint_gt(size, 1 << 20);

    r = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_CACHED);
    ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
    ck_assert_uint_eq(kvmsaveImageReaderHeader(r)->minor, KVMSAVE_IMAGE_MINOR);
    for (i = 0; i < 4; i++) {
        ck_assert_msg(kvmsaveImageReadChunk(r, &data, &len) == 1,
                      "chunk %zu: %s", i, virGetLastErrorMessage());
        ck_assert_uint_eq(len, 1 << 20);
        ck_assert_msg(memcmp(data, all + off, len) == 0, "chunk %zu differs", i);
        off += len;
    }
    ck_assert_int_eq(kvmsaveImageReadChunk(r, &data, &len), 0);
    ck_assert_uint_eq(kvmsaveImageReaderTrailer(r)->streamBytes, total);
    KT_ASSERT_NO_ERROR();
}
END_TEST


/* The image at @path opens, and its first chunk is refused with @substr. */
static void
assertFirstChunkRefused(const char *path, const char *substr)
{
    g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_CACHED);
    const unsigned char *data;
    size_t len;

    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(kvmsaveImageReadChunk(r, &data, &len), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, substr);
}


START_TEST(test_zstd_chunk_corruption_is_refused)
{
    g_autofree char *path = scratchPath("zstd-bad.img");
    g_autofree unsigned char *all = NULL;
    g_autofree unsigned char *file = NULL;
    size_t total;
    size_t size;
    uint64_t first = 4096;      /* the test header fits one block */
    uint32_t stored;

    all = writeZstdImage(path, "tt", 1 << 20, &total);
    file = fileRead(path, &size);
    ck_assert_int_eq(memcmp(file + first, "KSCK", 4), 0);
    ck_assert_uint_eq(rd32(file + first + 4), KVMSAVE_IMAGE_ENCODING_ZSTD);
    stored = rd32(file + first + 16);

    /* A flipped byte in the compressed data: its checksum catches it. */
    file[first + 32 + stored / 2] ^= 0x10;
    fileWrite(path, file, size);
    assertFirstChunkRefused(path, "chunk 0");

    /* The same damage with the checksums made to match: the zstd frame's
     * own checksum refuses it. */
    le32(file + first + 24, kvmsaveCrc32c(0, file + first + 32, stored));
    le32(file + first + 28, kvmsaveCrc32c(0, file + first, 28));
    fileWrite(path, file, size);
    assertFirstChunkRefused(path, "does not decompress");
}
END_TEST


START_TEST(test_image_format_names)
{
    ck_assert_int_eq(kvmsaveImageFormatFromString("raw"), KVMSAVE_IMAGE_ENCODING_RAW);
    ck_assert_int_eq(kvmsaveImageFormatFromString("zstd"), KVMSAVE_IMAGE_ENCODING_ZSTD);
    ck_assert_int_eq(kvmsaveImageFormatFromString("sparse"), KVMSAVE_IMAGE_FORMAT_SPARSE);
    ck_assert_int_eq(kvmsaveImageFormatFromString("gzip"), -1);
    ck_assert_int_eq(kvmsaveImageFormatFromString(NULL), -1);
    ck_assert_str_eq(kvmsaveImageFormatToString(KVMSAVE_IMAGE_ENCODING_ZSTD), "zstd");
    ck_assert_ptr_null(kvmsaveImageFormatToString(7));
}
END_TEST

START_TEST(test_round_trip_header_and_data)
{
    TestImage img;
    g_autoptr(kvmsaveImageReader) r = NULL;
    const kvmsaveImageHeader *hdr;
    const kvmsaveImageTrailer *tr;
    const unsigned char *data;
    size_t len;
    size_t i;
    size_t off = 0;
    int64_t before = g_get_real_time() / G_USEC_PER_SEC;

    writeStdImage(&img, "std.img");

    ck_assert_uint_eq(img.size % ALIGN, 0);
    ck_assert_uint_eq(img.headerSize % ALIGN, 0);
    ck_assert_uint_eq(img.size, alignUp(img.dataEnd + KVMSAVE_IMAGE_TRAILER_LEN, ALIGN));

    r = kvmsaveImageOpen(img.path, KVMSAVE_IMAGE_IO_CACHED);
    ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
    hdr = kvmsaveImageReaderHeader(r);
    assertStdHeader(hdr);
    ck_assert_uint_eq(hdr->headerSize, img.headerSize);
    ck_assert_uint_eq(hdr->crc, img.headerCrc);

    tr = kvmsaveImageReaderTrailer(r);
    ck_assert_uint_eq(tr->chunks, STD_CHUNKS);
    ck_assert_uint_eq(tr->streamBytes, img.dataLen);
    ck_assert_uint_eq(tr->dataEnd, img.dataEnd);
    ck_assert_uint_eq(tr->headerCrc, img.headerCrc);
    ck_assert_int_ge(tr->completed, before);
    ck_assert_int_le(tr->completed, g_get_real_time() / G_USEC_PER_SEC + 1);

    for (i = 0; i < STD_CHUNKS; i++) {
        ck_assert_msg(kvmsaveImageReadChunk(r, &data, &len) == 1,
                      "chunk %zu: %s", i, virGetLastErrorMessage());
        ck_assert_uint_eq(len, stdSizes[i]);
        ck_assert_msg(memcmp(data, img.data + off, len) == 0,
                      "chunk %zu differs", i);
        off += len;
    }
    ck_assert_int_eq(kvmsaveImageReadChunk(r, &data, &len), 0);
    /* The end stays the end. */
    ck_assert_int_eq(kvmsaveImageReadChunk(r, &data, &len), 0);
    ck_assert_uint_eq(off, img.dataLen);
    KT_ASSERT_NO_ERROR();
    testImageClear(&img);
}
END_TEST


START_TEST(test_round_trip_empty_stream)
{
    TestImage img;
    g_autofree unsigned char *data = NULL;
    size_t len;
    size_t nread;

    writeImage(&img, "empty.img", NULL, 0, 1);
    ck_assert_uint_eq(img.size, img.headerSize + ALIGN);
    ck_assert_int_eq(readImage(img.path, false, &data, &len, &nread), 0);
    ck_assert_uint_eq(nread, 0);
    ck_assert_uint_eq(len, 0);
    {
        g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(img.path, KVMSAVE_IMAGE_IO_CACHED);
        ck_assert_ptr_nonnull(r);
        assertStdHeader(kvmsaveImageReaderHeader(r));
        ck_assert_uint_eq(kvmsaveImageReaderTrailer(r)->chunks, 0);
        ck_assert_uint_eq(kvmsaveImageReaderTrailer(r)->streamBytes, 0);
        ck_assert_int_eq(kvmsaveImageVerify(r), 0);
    }
    KT_ASSERT_NO_ERROR();
    testImageClear(&img);
}
END_TEST


START_TEST(test_round_trip_empty_chunks)
{
    static const size_t sizes[] = { 0, 5000, 0, 0, 3 };
    TestImage img;
    g_autofree unsigned char *data = NULL;
    size_t len;
    size_t nread;

    writeImage(&img, "emptychunks.img", sizes, G_N_ELEMENTS(sizes), 5);
    ck_assert_int_eq(readImage(img.path, false, &data, &len, &nread), 0);
    ck_assert_uint_eq(nread, G_N_ELEMENTS(sizes));
    ck_assert_uint_eq(len, 5003);
    ck_assert(memcmp(data, img.data, len) == 0);
    testImageClear(&img);
}
END_TEST


START_TEST(test_round_trip_trailer_alignment_edges)
{
    /* Data plus trailer filling the block exactly, and one byte more. */
    size_t exact = ALIGN - KVMSAVE_IMAGE_CHUNK_HEADER_LEN - KVMSAVE_IMAGE_TRAILER_LEN;
    size_t sizes[2][1] = { { exact }, { exact + 1 } };
    size_t i;

    for (i = 0; i < 2; i++) {
        TestImage img;
        g_autofree unsigned char *data = NULL;
        g_autofree char *name = g_strdup_printf("edge%zu.img", i);
        size_t len;
        size_t nread;

        writeImage(&img, name, sizes[i], 1, 100 + i);
        ck_assert_uint_eq(img.size, img.headerSize + (i + 1) * ALIGN);
        ck_assert_int_eq(readImage(img.path, false, &data, &len, &nread), 0);
        ck_assert_uint_eq(len, sizes[i][0]);
        ck_assert(memcmp(data, img.data, len) == 0);
        testImageClear(&img);
    }
}
END_TEST


START_TEST(test_round_trip_large_stream_crosses_buffers)
{
    /* More than the writer's 8 MiB buffer and the reader's 20 MiB one. */
    static const size_t sizes[] = {
        KVMSAVE_IMAGE_CHUNK_SIZE, KVMSAVE_IMAGE_CHUNK_SIZE,
        KVMSAVE_IMAGE_CHUNK_SIZE, KVMSAVE_IMAGE_CHUNK_SIZE - 1,
        KVMSAVE_IMAGE_CHUNK_SIZE, 3 * 1024 * 1024 + 17,
        KVMSAVE_IMAGE_CHUNK_SIZE, 1234,
    };
    TestImage img;
    g_autofree unsigned char *data = NULL;
    size_t len;
    size_t nread;

    writeImage(&img, "large.img", sizes, G_N_ELEMENTS(sizes), 9);
    ck_assert_uint_eq(img.size % ALIGN, 0);
    ck_assert_int_eq(readImage(img.path, false, &data, &len, &nread), 0);
    ck_assert_uint_eq(nread, G_N_ELEMENTS(sizes));
    ck_assert_uint_eq(len, img.dataLen);
    ck_assert(memcmp(data, img.data, len) == 0);
    testImageClear(&img);
}
END_TEST


/* Write chunks of odd and full sizes, read them back with @io. */
static void
assertRoundTripIO(const char *name, kvmsaveImageIO io, unsigned int seed)
{
    static const size_t sizes[] = {
        KVMSAVE_IMAGE_CHUNK_SIZE, 123457, KVMSAVE_IMAGE_CHUNK_SIZE, 4096, 99,
    };
    TestImage img;
    g_autofree unsigned char *data = NULL;
    size_t len;
    size_t nread;

    writeImage(&img, name, sizes, G_N_ELEMENTS(sizes), seed);
    ck_assert_msg(readImageIO(img.path, io, &data, &len, &nread) == 0,
                  "%s", virGetLastErrorMessage());
    ck_assert_uint_eq(nread, G_N_ELEMENTS(sizes));
    ck_assert_uint_eq(len, img.dataLen);
    ck_assert(memcmp(data, img.data, len) == 0);
    testImageClear(&img);
}


/* A save records its disks again once QEMU is done with them: the header
 * written first is replaced at Finish, through the page cache or O_DIRECT
 * (where it may still sit in the writer's buffer), and the trailer names
 * the new one. */
static void
assertHeaderReplaced(const char *name, bool direct)
{
    static const size_t sizes[] = { KVMSAVE_IMAGE_CHUNK_SIZE, 5000, 77 };
    g_autoptr(kvmsaveImageHeader) hdr = testHeader(UUID_STR);
    g_autoptr(kvmsaveImageWriter) w = NULL;
    g_autoptr(kvmsaveImageReader) r = NULL;
    g_autofree char *path = scratchPath(name);
    g_autofree unsigned char *data = NULL;
    g_autofree unsigned char *back = NULL;
    size_t total = 0;
    size_t len;
    size_t nread;
    size_t i;
    int fd;

    hdr->disks = g_strdup("vda 00000000000000000001 00000000000000000002.000000003 00000000000000000004 /a\n");
    for (i = 0; i < G_N_ELEMENTS(sizes); i++)
        total += sizes[i];
    data = g_malloc(total);
    fillRandom(data, total, 17);

    fd = open(path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC | (direct ? O_DIRECT : 0), 0600);
    ck_assert_msg(fd >= 0, "open %s: %s", path, g_strerror(errno));
    w = kvmsaveImageWriterNew(fd, path, direct);
    ck_assert_int_eq(kvmsaveImageWriteHeader(w, hdr), 0);
    for (i = 0, len = 0; i < G_N_ELEMENTS(sizes); len += sizes[i], i++)
        ck_assert_int_eq(kvmsaveImageWriteChunk(w, 0, data + len, sizes[i]), 0);

    /* A header of another size cannot replace it. */
    g_free(hdr->xml);
    hdr->xml = g_strnfill(3 * KVMSAVE_IMAGE_ALIGN, 'x');
    ck_assert_int_eq(kvmsaveImageWriterReplaceHeader(w, hdr), -1);
    ck_assert_int_eq(virGetLastErrorCode(), VIR_ERR_INTERNAL_ERROR);
    virResetLastError();
    g_free(hdr->xml);
    hdr->xml = g_strdup(DOMAIN_XML);

    g_free(hdr->disks);
    hdr->disks = g_strdup("vda 00000000000000000009 00000000000000000008.000000007 00000000000000000006 /a\n");
    ck_assert_msg(kvmsaveImageWriterReplaceHeader(w, hdr) == 0, "%s",
                  virGetLastErrorMessage());
    ck_assert_msg(kvmsaveImageWriterFinish(w) == 0, "%s",
                  virGetLastErrorMessage());
    ck_assert_int_eq(close(fd), 0);

    r = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_CACHED);
    ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
    ck_assert_str_eq(kvmsaveImageReaderHeader(r)->disks, hdr->disks);
    ck_assert_msg(readImageIO(path, KVMSAVE_IMAGE_IO_CACHED, &back, &len, &nread) == 0,
                  "%s", virGetLastErrorMessage());
    ck_assert_uint_eq(len, total);
    ck_assert(memcmp(back, data, total) == 0);
    KT_ASSERT_NO_ERROR();
}


START_TEST(test_header_replaced_at_finish)
{
    assertHeaderReplaced("replaced.img", false);
    if (scratchHasDirectIO())
        assertHeaderReplaced("replaced-direct.img", true);
}
END_TEST


START_TEST(test_round_trip_direct_io)
{
    if (!scratchHasDirectIO())
        return;
    assertRoundTripIO("direct.img", KVMSAVE_IMAGE_IO_DIRECT, 11);
}
END_TEST


/* A restore's reads: O_DIRECT where the scratch file system has it, the
 * page cache where it has not; the same bytes either way. */
START_TEST(test_round_trip_streaming_reads_direct_where_possible)
{
    assertRoundTripIO("stream.img", KVMSAVE_IMAGE_IO_STREAM, 12);
}
END_TEST


START_TEST(test_round_trip_minimal_header)
{
    g_autoptr(kvmsaveImageHeader) hdr = kvmsaveImageHeaderNew();
    static const size_t sizes[] = { 10 };
    TestImage img;

    hdr->xml = g_strdup("<domain/>");
    writeImageHdr(&img, "minimal.img", hdr, sizes, 1, 3);
    {
        g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(img.path, KVMSAVE_IMAGE_IO_CACHED);
        const kvmsaveImageHeader *h;

        ck_assert_ptr_nonnull(r);
        h = kvmsaveImageReaderHeader(r);
        ck_assert_str_eq(h->xml, "<domain/>");
        ck_assert_ptr_null(h->name);
        ck_assert_ptr_null(h->qemuVersion);
        ck_assert_ptr_null(h->machine);
        ck_assert_ptr_null(h->hostCPU);
        ck_assert_ptr_null(h->producer);
        ck_assert_uint_eq(h->flags, 0);
        ck_assert_int_eq(h->created, 0);
        ck_assert_int_eq(kvmsaveImageVerify(r), 0);
    }
    testImageClear(&img);
}
END_TEST


START_TEST(test_round_trip_multi_block_header)
{
    g_autoptr(kvmsaveImageHeader) hdr = testHeader(UUID_STR);
    static const size_t sizes[] = { 5000, 1 };
    g_autofree char *big = NULL;
    TestImage img;
    GString *xml = g_string_new("<domain type='qemu'><description>");

    /* An XML of ~10 KiB: the header spans three blocks. */
    while (xml->len < 10000)
        g_string_append(xml, "lorem ipsum dolor sit amet ");
    g_string_append(xml, "</description></domain>");
    big = g_string_free(xml, FALSE);
    g_free(hdr->xml);
    hdr->xml = g_strdup(big);
    writeImageHdr(&img, "bighdr.img", hdr, sizes, 2, 4);
    ck_assert_uint_eq(img.headerSize, 3 * ALIGN);
    {
        g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(img.path, KVMSAVE_IMAGE_IO_CACHED);

        ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
        ck_assert_str_eq(kvmsaveImageReaderHeader(r)->xml, big);
        ck_assert_str_eq(kvmsaveImageReaderHeader(r)->producer,
                         "kvmsave 0.1.0 (unit test)");
        ck_assert_int_eq(kvmsaveImageVerify(r), 0);
    }
    testImageClear(&img);
}
END_TEST


/* ---- foreign and damaged files, refused at open ---- */

START_TEST(test_open_refuses_foreign_files)
{
    g_autofree char *text = scratchPath("text.txt");
    g_autofree char *empty = scratchPath("empty");
    g_autofree char *three = scratchPath("three");
    g_autofree char *zeros = scratchPath("zeros");
    g_autofree char *missing = scratchPath("does-not-exist");
    g_autofree unsigned char *zbuf = g_malloc0(3 * ALIGN);
    GString *s = g_string_new(NULL);

    while (s->len < 3 * ALIGN)
        g_string_append(s, "This is a text file, not a save image.\n");
    fileWrite(text, s->str, s->len);
    g_string_free(s, TRUE);
    fileWrite(empty, "", 0);
    fileWrite(three, "KVM", 3);
    fileWrite(zeros, zbuf, 3 * ALIGN);

    assertOpenFails(text, VIR_ERR_OPERATION_FAILED, "not a kvmsave save image");
    assertOpenFails(text, VIR_ERR_OPERATION_FAILED, "bad magic");
    assertOpenFails(zeros, VIR_ERR_OPERATION_FAILED, "bad magic");
    assertOpenFails(empty, VIR_ERR_OPERATION_FAILED, "not a kvmsave save image");
    assertOpenFails(empty, VIR_ERR_OPERATION_FAILED, "0 bytes");
    assertOpenFails(three, VIR_ERR_OPERATION_FAILED, "not a kvmsave save image");
    assertOpenFails(three, VIR_ERR_OPERATION_FAILED, "3 bytes");
    assertOpenFails(scratchDir, VIR_ERR_OPERATION_INVALID, "not a regular file");
    assertOpenFails(missing, VIR_ERR_SYSTEM_ERROR, "cannot open");
}
END_TEST


START_TEST(test_open_refuses_newer_major_version)
{
    TestImage img;
    unsigned char v[2];

    writeStdImage(&img, "newer.img");
    le16(v, 2);
    filePatch(img.path, 8, v, 2);
    assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED, "newer");
    assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED, "version 2.");

    le16(v, 0xffff);
    filePatch(img.path, 8, v, 2);
    assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED, "newer");

    le16(v, 0);
    filePatch(img.path, 8, v, 2);
    assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED, "invalid format version");
    testImageClear(&img);
}
END_TEST


START_TEST(test_open_refuses_header_byte_flips)
{
    /* The XML field, the UUID, created, flags, the minor version, the
     * last field (producer) and the stored checksum itself. */
    uint64_t offsets[] = {
        XML_DATA_OFFSET, XML_DATA_OFFSET + 30, 10, 16, 31, 32, 40, 44, 0,
    };
    TestImage img;
    unsigned char fl[4];
    uint32_t fieldsLen;
    size_t i;

    writeStdImage(&img, "hdrflip.img");
    filePeek(img.path, 52, fl, 4);
    fieldsLen = rd32(fl);
    offsets[G_N_ELEMENTS(offsets) - 1] =
        KVMSAVE_IMAGE_FIXED_HEADER_LEN + fieldsLen + 2;   /* crc byte */
    for (i = 0; i < G_N_ELEMENTS(offsets); i++) {
        fileFlip(img.path, offsets[i], 0x04);
        assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED,
                        "header checksum mismatch");
        fileFlip(img.path, offsets[i], 0x04);
    }
    /* Sanity: undone flips leave a good image. */
    {
        g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(img.path, KVMSAVE_IMAGE_IO_CACHED);
        ck_assert_ptr_nonnull(r);
        ck_assert_int_eq(kvmsaveImageVerify(r), 0);
    }
    testImageClear(&img);
}
END_TEST


START_TEST(test_open_refuses_corrupt_header_size)
{
    static const uint32_t bad[] = {
        0, 1, 64, ALIGN + 1, ALIGN - 1, 0x7ffff000, 0xffffffff,
        KVMSAVE_IMAGE_HEADER_MAX + ALIGN,
    };
    TestImage img;
    unsigned char v[4];
    size_t i;

    writeStdImage(&img, "hdrsize.img");
    for (i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autofree char *what = g_strdup_printf("header size %u", bad[i]);

        le32(v, bad[i]);
        filePatch(img.path, 12, v, 4);
        assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED, "corrupt header");
        assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED, what);
    }
    /* Plausible sizes are caught by the checksum. */
    le32(v, 2 * ALIGN);
    filePatch(img.path, 12, v, 4);
    assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED, "header checksum mismatch");
    /* ... or by the file size, when the header would not fit. */
    le32(v, KVMSAVE_IMAGE_HEADER_MAX);
    filePatch(img.path, 12, v, 4);
    le32(v, KVMSAVE_IMAGE_HEADER_MAX - 68);
    filePatch(img.path, 52, v, 4);
    assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED, "truncated inside its header");

    /* A field area larger than the header. */
    le32(v, ALIGN);
    filePatch(img.path, 12, v, 4);
    le32(v, ALIGN);
    filePatch(img.path, 52, v, 4);
    assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED, "field area 4096 bytes");
    testImageClear(&img);
}
END_TEST


START_TEST(test_open_refuses_trailer_byte_flips)
{
    /* chunks, stream bytes, data end, header crc, completed, the unused
     * bytes and the stored checksum */
    static const size_t offsets[] = { 8, 16, 24, 32, 40, 50, 60, 63 };
    TestImage img;
    uint64_t base;
    size_t i;

    writeStdImage(&img, "trailerflip.img");
    base = img.size - KVMSAVE_IMAGE_TRAILER_LEN;
    for (i = 0; i < G_N_ELEMENTS(offsets); i++) {
        fileFlip(img.path, base + offsets[i], 0x10);
        assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED,
                        "trailer checksum mismatch");
        fileFlip(img.path, base + offsets[i], 0x10);
    }
    /* A damaged trailer magic reads as no trailer at all. */
    fileFlip(img.path, base + 3, 0x01);
    assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED, "no trailer");
    fileFlip(img.path, base + 3, 0x01);
    {
        g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(img.path, KVMSAVE_IMAGE_IO_CACHED);
        ck_assert_ptr_nonnull(r);
    }
    testImageClear(&img);
}
END_TEST


/* ---- damaged chunks, refused while reading ---- */

START_TEST(test_read_refuses_chunk_header_byte_flips)
{
    static const struct {
        size_t chunk;
        size_t off;                 /* within the chunk header */
        const char *what;
    } cases[] = {
        { 0, 0, "bad magic" },          /* magic */
        { 0, 3, "bad magic" },
        { 3, 1, "bad magic" },
        { 0, 4, "bad header checksum" },    /* encoding */
        { 0, 8, "bad header checksum" },    /* index */
        { 4, 15, "bad header checksum" },
        { 2, 16, "bad header checksum" },   /* stored length */
        { 5, 18, "bad header checksum" },
        { 1, 20, "bad header checksum" },   /* raw length */
        { 1, 24, "bad header checksum" },   /* payload crc */
        { 6, 28, "bad header checksum" },   /* header crc */
    };
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(cases); i++) {
        TestImage img;
        g_autofree char *chunk = g_strdup_printf("chunk %zu at offset", cases[i].chunk);

        writeStdImage(&img, "chflip.img");
        fileFlip(img.path, img.chunkOff[cases[i].chunk] + cases[i].off, 0x40);
        assertChunkFailure(&img, cases[i].chunk, chunk, cases[i].what, NULL);
        testImageClear(&img);
    }
}
END_TEST


START_TEST(test_read_refuses_consistent_but_wrong_chunk_header)
{
    TestImage img;
    unsigned char v[8];

    /* Renumbered chunk. */
    writeStdImage(&img, "chwrong.img");
    memset(v, 0, sizeof(v));
    v[0] = 7;
    patchChunkHeader(img.path, img.chunkOff[1], 8, v, 8);
    assertChunkFailure(&img, 1, "numbered 7, expected 1", NULL);
    testImageClear(&img);

    /* Unknown encoding. */
    writeStdImage(&img, "chwrong.img");
    le32(v, 5);
    patchChunkHeader(img.path, img.chunkOff[2], 4, v, 4);
    assertChunkFailure(&img, 2, "chunk 2", "encoding 5", NULL);
    testImageClear(&img);

    /* Stored length past the end of the data. */
    writeStdImage(&img, "chwrong.img");
    le32(v, 0x00ffffff);
    patchChunkHeader(img.path, img.chunkOff[3], 16, v, 4);
    patchChunkHeader(img.path, img.chunkOff[3], 20, v, 4);
    assertChunkFailure(&img, 3, "chunk 3", "invalid length", NULL);
    testImageClear(&img);

    /* Stored and raw length that differ. */
    writeStdImage(&img, "chwrong.img");
    le32(v, stdSizes[0] + 1);
    patchChunkHeader(img.path, img.chunkOff[0], 20, v, 4);
    assertChunkFailure(&img, 0, "chunk 0", "invalid length", NULL);
    testImageClear(&img);

    /* A length beyond the largest chunk accepted. */
    writeStdImage(&img, "chwrong.img");
    le32(v, KVMSAVE_IMAGE_CHUNK_MAX + 1);
    patchChunkHeader(img.path, img.chunkOff[0], 16, v, 4);
    patchChunkHeader(img.path, img.chunkOff[0], 20, v, 4);
    assertChunkFailure(&img, 0, "chunk 0", "invalid length", NULL);
    testImageClear(&img);

    /* A shorter length: the data no longer matches its checksum. */
    writeStdImage(&img, "chwrong.img");
    le32(v, stdSizes[1] - 8);
    patchChunkHeader(img.path, img.chunkOff[1], 16, v, 4);
    patchChunkHeader(img.path, img.chunkOff[1], 20, v, 4);
    assertChunkFailure(&img, 1, "chunk 1", "checksum", NULL);
    testImageClear(&img);
}
END_TEST


START_TEST(test_read_refuses_payload_byte_flip)
{
    size_t chunk;

    /* The middle chunks, the one-byte chunk and the last, short one. */
    for (chunk = 1; chunk < STD_CHUNKS; chunk++) {
        TestImage img;
        g_autofree char *name = g_strdup_printf("chunk %zu at offset", chunk);
        uint64_t off;

        writeStdImage(&img, "payload.img");
        off = img.chunkOff[chunk] + KVMSAVE_IMAGE_CHUNK_HEADER_LEN +
            stdSizes[chunk] / 2;
        fileFlip(img.path, off, 0x01);
        assertChunkFailure(&img, chunk, name, "data checksum mismatch", NULL);
        testImageClear(&img);
    }
}
END_TEST


/* ---- truncation ---- */

static void
assertTruncatedRefused(const TestImage *img, const char *cut, uint64_t len,
                       bool direct)
{
    g_autofree unsigned char *data = NULL;
    size_t dlen;
    size_t nread;
    int rc;

    fileCopyPrefix(img->path, cut, len);
    virResetLastError();
    rc = readImage(cut, direct, &data, &dlen, &nread);
    ck_assert_msg(rc < 0, "image cut at %llu bytes (of %llu) was read whole",
                  (unsigned long long) len, (unsigned long long) img->size);
    ck_assert_msg(dlen < img->dataLen || memcmp(data, img->data, dlen) != 0,
                  "cut at %llu: all data returned", (unsigned long long) len);
    ck_assert_ptr_nonnull(virGetLastError());
    ck_assert_msg(strstr(virGetLastErrorMessage(), "truncated") ||
                  strstr(virGetLastErrorMessage(), "not a kvmsave save image"),
                  "cut at %llu: unexpected error: %s",
                  (unsigned long long) len, virGetLastErrorMessage());
}


static void
checkTruncations(bool direct)
{
    TestImage img;
    g_autofree char *cut = scratchPath("cut.img");
    uint64_t len;
    size_t i;
    size_t n = 0;

    writeStdImage(&img, "truncsrc.img");
    /* Every block boundary. */
    for (len = 0; len < img.size; len += ALIGN) {
        assertTruncatedRefused(&img, cut, len, direct);
        n++;
    }
    /* Inside the header, inside chunks, around the trailer. */
    {
        const uint64_t odd[] = {
            1, 3, 7, 8, 9, 40, 63, 64, 65, 100, XML_DATA_OFFSET + 17,
            img.headerSize - 1, img.headerSize + 1, img.headerSize + 31,
            img.chunkOff[0] + 1000, img.chunkOff[1] + 16, img.chunkOff[2] + 50000,
            img.chunkOff[STD_CHUNKS - 1] + 100, img.dataEnd, img.dataEnd + 1,
            img.size - ALIGN + 1, img.size - KVMSAVE_IMAGE_TRAILER_LEN,
            img.size - 8, img.size - 1,
        };

        for (i = 0; i < G_N_ELEMENTS(odd); i++) {
            assertTruncatedRefused(&img, cut, odd[i], direct);
            n++;
        }
    }
    ck_assert_uint_gt(n, 60);
    testImageClear(&img);
}


START_TEST(test_truncated_image_never_reads_whole)
{
    checkTruncations(false);
}
END_TEST


START_TEST(test_truncated_image_never_reads_whole_direct_io)
{
    if (scratchHasDirectIO())
        checkTruncations(true);
}
END_TEST


START_TEST(test_direct_io_names_foreign_files)
{
    g_autofree char *text = scratchPath("direct-text.txt");
    g_autofree char *rnd = scratchPath("direct-random");
    g_autofree char *zeros = scratchPath("direct-zeros");
    unsigned char buf[1000];

    if (!scratchHasDirectIO())
        return;
    fileWrite(text, "hello, this is a text file\n", 27);
    fillRandom(buf, sizeof(buf), 77);
    fileWrite(rnd, buf, 100);
    memset(buf, 0, sizeof(buf));
    fileWrite(zeros, buf, sizeof(buf));
    assertOpenFailsDirect(text, true, VIR_ERR_OPERATION_FAILED, "bad magic");
    assertOpenFailsDirect(rnd, true, VIR_ERR_OPERATION_FAILED, "bad magic");
    assertOpenFailsDirect(zeros, true, VIR_ERR_OPERATION_FAILED, "bad magic");
}
END_TEST


START_TEST(test_open_refuses_unaligned_size)
{
    TestImage img;
    g_autofree char *cut = scratchPath("unaligned.img");
    g_autofree unsigned char *buf = NULL;
    size_t len;

    writeStdImage(&img, "unaligned-src.img");
    fileCopyPrefix(img.path, cut, img.size - 1);
    assertOpenFails(cut, VIR_ERR_OPERATION_FAILED, "not that of a finished image");
    fileCopyPrefix(img.path, cut, img.dataEnd + 1);
    assertOpenFails(cut, VIR_ERR_OPERATION_FAILED, "not that of a finished image");

    /* A whole image with a byte appended: the trailer is no longer at
     * the end. */
    buf = fileRead(img.path, &len);
    buf = g_realloc(buf, len + 1);
    buf[len] = 0;
    fileWrite(cut, buf, len + 1);
    assertOpenFails(cut, VIR_ERR_OPERATION_FAILED, "not that of a finished image");
    testImageClear(&img);
}
END_TEST


START_TEST(test_truncated_then_zero_extended_refused)
{
    /* A crash can leave the file at its full size with a zeroed tail. */
    TestImage img;
    uint64_t cuts[3];
    size_t i;

    writeStdImage(&img, "zeroext.img");
    cuts[0] = img.size - ALIGN;
    cuts[1] = img.chunkOff[3];
    cuts[2] = img.size - KVMSAVE_IMAGE_TRAILER_LEN;
    for (i = 0; i < G_N_ELEMENTS(cuts); i++) {
        g_autofree char *cut = scratchPath("zeroext-cut.img");
        g_autofree unsigned char *data = NULL;
        size_t len;
        size_t nread;

        fileCopyPrefix(img.path, cut, cuts[i]);
        ck_assert_int_eq(truncate(cut, img.size), 0);
        virResetLastError();
        ck_assert_int_eq(readImage(cut, false, &data, &len, &nread), -2);
        KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "no trailer");
    }
    testImageClear(&img);
}
END_TEST


/* ---- trailers that do not fit ---- */

START_TEST(test_read_refuses_trailer_with_wrong_totals)
{
    TestImage img;
    kvmsaveImageTrailer tr;
    kvmsaveImageTrailer good;

    writeStdImage(&img, "totals.img");
    readTrailer(&img, &good);
    ck_assert_uint_eq(good.chunks, STD_CHUNKS);

    tr = good;
    tr.chunks = STD_CHUNKS + 1;
    writeTrailer(&img, &tr);
    assertChunkFailure(&img, STD_CHUNKS, "trailer records 8 chunks",
                       "holds 7 chunks", NULL);

    tr = good;
    tr.chunks = STD_CHUNKS - 1;
    writeTrailer(&img, &tr);
    assertChunkFailure(&img, STD_CHUNKS, "trailer records 6 chunks", NULL);

    tr = good;
    tr.streamBytes = good.streamBytes - 1;
    writeTrailer(&img, &tr);
    assertChunkFailure(&img, STD_CHUNKS, "trailer records", "chunks and", NULL);

    writeTrailer(&img, &good);
    {
        g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(img.path, KVMSAVE_IMAGE_IO_CACHED);
        ck_assert_ptr_nonnull(r);
        ck_assert_int_eq(kvmsaveImageVerify(r), 0);
    }
    testImageClear(&img);
}
END_TEST


START_TEST(test_read_refuses_trailer_with_wrong_data_end)
{
    TestImage img;
    kvmsaveImageTrailer tr;
    kvmsaveImageTrailer good;

    writeStdImage(&img, "dataend.img");
    readTrailer(&img, &good);
    ck_assert_uint_eq(good.dataEnd, img.dataEnd);

    /* Not fitting the file at all. */
    tr = good;
    tr.dataEnd = img.size;
    writeTrailer(&img, &tr);
    assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED, "data end");
    tr.dataEnd = img.headerSize - 1;
    writeTrailer(&img, &tr);
    assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED, "data end");
    tr.dataEnd = img.dataEnd - ALIGN;
    writeTrailer(&img, &tr);
    assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED, "data end");

    /* Fitting the file but cutting the last chunk short. */
    tr = good;
    tr.dataEnd = img.dataEnd - 1;
    writeTrailer(&img, &tr);
    assertChunkFailure(&img, STD_CHUNKS - 1, "chunk 6", NULL);
    tr.dataEnd = img.chunkOff[STD_CHUNKS - 1] + 10;
    if (alignUp(tr.dataEnd + KVMSAVE_IMAGE_TRAILER_LEN, ALIGN) == img.size) {
        writeTrailer(&img, &tr);
        assertChunkFailure(&img, STD_CHUNKS - 1, "chunk 6", "cut short", NULL);
    }
    testImageClear(&img);
}
END_TEST


START_TEST(test_open_refuses_trailer_of_another_image)
{
    TestImage a;
    TestImage b;
    TestImage c;
    g_autoptr(kvmsaveImageHeader) hdrB = testHeader(OTHER_UUID_STR);
    g_autoptr(kvmsaveImageHeader) hdrC = testHeader(UUID_STR);
    unsigned char tail[KVMSAVE_IMAGE_TRAILER_LEN];

    writeStdImage(&a, "mine.img");
    /* Same data and layout, another guest. */
    writeImageHdr(&b, "other.img", hdrB, stdSizes, STD_CHUNKS, 42);
    /* Same guest, saved at another time. */
    hdrC->created = CREATED + 1;
    writeImageHdr(&c, "later.img", hdrC, stdSizes, STD_CHUNKS, 42);
    ck_assert_uint_eq(a.size, b.size);
    ck_assert_uint_eq(a.size, c.size);

    filePeek(b.path, b.size - sizeof(tail), tail, sizeof(tail));
    filePatch(a.path, a.size - sizeof(tail), tail, sizeof(tail));
    assertOpenFails(a.path, VIR_ERR_OPERATION_FAILED,
                    "trailer does not belong to its header");

    filePeek(c.path, c.size - sizeof(tail), tail, sizeof(tail));
    filePatch(a.path, a.size - sizeof(tail), tail, sizeof(tail));
    assertOpenFails(a.path, VIR_ERR_OPERATION_FAILED,
                    "trailer does not belong to its header");
    testImageClear(&a);
    testImageClear(&b);
    testImageClear(&c);
}
END_TEST


/* ---- the header codec ---- */

START_TEST(test_header_encode_layout_and_decode)
{
    g_autoptr(kvmsaveImageHeader) hdr = testHeader(UUID_STR);
    g_autoptr(kvmsaveImageHeader) dec = NULL;
    g_autofree unsigned char *buf = NULL;
    size_t len = 0;
    size_t needed = 0;
    uint32_t fieldsLen;

    hdr->minor = 3;
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), 0);
    ck_assert_uint_eq(len % ALIGN, 0);
    ck_assert_uint_eq(len, hdr->headerSize);
    ck_assert(memcmp(buf, KVMSAVE_IMAGE_MAGIC, KVMSAVE_IMAGE_MAGIC_LEN) == 0);
    ck_assert_uint_eq(rd32(buf + 8) & 0xffff, KVMSAVE_IMAGE_MAJOR);
    ck_assert_uint_eq(rd32(buf + 8) >> 16, 3);
    ck_assert_uint_eq(rd32(buf + 12), len);
    ck_assert(memcmp(buf + 16, hdr->uuid, VIR_UUID_BUFLEN) == 0);
    ck_assert_uint_eq(rd64(buf + 32), (uint64_t) CREATED);
    ck_assert_uint_eq(rd32(buf + 40), KVMSAVE_IMAGE_FLAG_RUNNING);
    ck_assert_uint_eq(rd32(buf + 44), 65536);
    ck_assert_uint_eq(rd32(buf + 48), 6);
    fieldsLen = rd32(buf + 52);
    ck_assert_uint_eq(fieldsLen % 8, 0);
    /* The first field is the XML. */
    ck_assert_uint_eq(rd32(buf + 64) & 0xffff, KVMSAVE_IMAGE_FIELD_XML);
    ck_assert_uint_eq(rd32(buf + 68), strlen(DOMAIN_XML));
    ck_assert(memcmp(buf + XML_DATA_OFFSET, DOMAIN_XML, strlen(DOMAIN_XML)) == 0);
    ck_assert_uint_eq(rd32(buf + 64 + fieldsLen), hdr->crc);
    ck_assert_uint_eq(kvmsaveCrc32c(0, buf, 64 + fieldsLen), hdr->crc);

    ck_assert_int_eq(kvmsaveImageHeaderDecode(buf, len, "mem", &needed, &dec), 0);
    ck_assert_uint_eq(dec->minor, 3);
    dec->minor = KVMSAVE_IMAGE_MINOR;
    assertStdHeader(dec);
    ck_assert_uint_eq(dec->crc, hdr->crc);
    ck_assert_uint_eq(dec->headerSize, len);
    KT_ASSERT_NO_ERROR();
}
END_TEST


START_TEST(test_header_decode_short_buffer_returns_1)
{
    g_autoptr(kvmsaveImageHeader) hdr = testHeader(UUID_STR);
    g_autoptr(kvmsaveImageHeader) dec = NULL;
    g_autofree unsigned char *buf = NULL;
    size_t len = 0;
    size_t needed = 0;

    g_free(hdr->xml);
    hdr->xml = g_strnfill(3 * ALIGN, 'x');
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), 0);
    ck_assert_uint_eq(len, 4 * ALIGN);

    ck_assert_int_eq(kvmsaveImageHeaderDecode(buf, ALIGN, "mem", &needed, &dec), 1);
    ck_assert_uint_eq(needed, 4 * ALIGN);
    ck_assert_ptr_null(dec);
    KT_ASSERT_NO_ERROR();

    needed = 0;
    ck_assert_int_eq(kvmsaveImageHeaderDecode(buf, len - 1, "mem", &needed, &dec), 0);
    ck_assert_ptr_nonnull(dec);
    ck_assert_str_eq(dec->xml, hdr->xml);
    g_clear_pointer(&dec, kvmsaveImageHeaderFree);

    /* Without @needed, a short buffer is an error. */
    ck_assert_int_eq(kvmsaveImageHeaderDecode(buf, ALIGN, "mem", NULL, &dec), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "truncated inside its header");
    ck_assert_ptr_null(dec);

    /* Shorter than the fixed header. */
    virResetLastError();
    ck_assert_int_eq(kvmsaveImageHeaderDecode(buf, 63, "mem", &needed, &dec), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "truncated inside its header");
    virResetLastError();
    ck_assert_int_eq(kvmsaveImageHeaderDecode(buf, 7, "mem", &needed, &dec), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "bad magic");
}
END_TEST


/* Re-encode the header in @buf with an extra field inserted before the
 * others, fixing sizes and the checksum. */
static unsigned char *
headerWithExtraField(const unsigned char *buf, uint16_t tag, uint16_t flags,
                     const char *data, size_t *lenOut)
{
    uint32_t nfields = rd32(buf + 48);
    uint32_t fieldsLen = rd32(buf + 52);
    size_t dlen = strlen(data);
    size_t extra = 8 + alignUp(dlen, 8);
    size_t end = 64 + extra + fieldsLen;
    size_t total = alignUp(end + 4, ALIGN);
    unsigned char *out = g_malloc0(total);

    memcpy(out, buf, 64);
    le32(out + 12, total);
    le32(out + 48, nfields + 1);
    le32(out + 52, fieldsLen + extra);
    le16(out + 64, tag);
    le16(out + 66, flags);
    le32(out + 68, dlen);
    memcpy(out + 72, data, dlen);
    memcpy(out + 64 + extra, buf + 64, fieldsLen);
    le32(out + end, kvmsaveCrc32c(0, out, end));
    *lenOut = total;
    return out;
}


/* Rewrite the header checksum of @buf after an edit. */
static void
headerFixCrc(unsigned char *buf)
{
    uint32_t end = 64 + rd32(buf + 52);

    le32(buf + end, kvmsaveCrc32c(0, buf, end));
}


START_TEST(test_header_decode_skips_unknown_optional_field)
{
    g_autoptr(kvmsaveImageHeader) hdr = testHeader(UUID_STR);
    g_autoptr(kvmsaveImageHeader) dec = NULL;
    g_autofree unsigned char *buf = NULL;
    g_autofree unsigned char *ext = NULL;
    size_t len;
    size_t elen;

    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), 0);
    /* Odd length, so the reader must skip its padding too. */
    ext = headerWithExtraField(buf, 99, 0, "future", &elen);
    ck_assert_int_eq(kvmsaveImageHeaderDecode(ext, elen, "mem", NULL, &dec), 0);
    assertStdHeader(dec);
    KT_ASSERT_NO_ERROR();
    g_clear_pointer(&dec, kvmsaveImageHeaderFree);
    g_clear_pointer(&ext, g_free);

    /* Other, non-critical flag bits do not make it required. */
    ext = headerWithExtraField(buf, 0x7fff, 0xfffe, "x", &elen);
    ck_assert_int_eq(kvmsaveImageHeaderDecode(ext, elen, "mem", NULL, &dec), 0);
    assertStdHeader(dec);
    g_clear_pointer(&dec, kvmsaveImageHeaderFree);
    g_clear_pointer(&ext, g_free);

    /* A known field marked critical is fine. */
    ext = headerWithExtraField(buf, KVMSAVE_IMAGE_FIELD_NAME,
                               KVMSAVE_IMAGE_FIELD_CRITICAL, "early", &elen);
    ck_assert_int_eq(kvmsaveImageHeaderDecode(ext, elen, "mem", NULL, &dec), 0);
    /* The later NAME field wins. */
    ck_assert_str_eq(dec->name, "t");
}
END_TEST


START_TEST(test_header_decode_refuses_unknown_critical_field)
{
    g_autoptr(kvmsaveImageHeader) hdr = testHeader(UUID_STR);
    g_autoptr(kvmsaveImageHeader) dec = NULL;
    g_autofree unsigned char *buf = NULL;
    g_autofree unsigned char *ext = NULL;
    size_t len;
    size_t elen;

    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), 0);
    ext = headerWithExtraField(buf, 99, KVMSAVE_IMAGE_FIELD_CRITICAL,
                               "must understand", &elen);
    ck_assert_int_eq(kvmsaveImageHeaderDecode(ext, elen, "mem", NULL, &dec), -1);
    ck_assert_ptr_null(dec);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "unknown required header field 99");
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "newer kvmsave");

    /* The same, through a file. */
    {
        g_autofree char *path = scratchPath("critical.img");
        static const size_t sizes[] = { 100 };
        TestImage img;
        size_t total;
        g_autofree unsigned char *file = NULL;
        kvmsaveImageTrailer tr;

        writeImage(&img, "critical-src.img", sizes, 1, 8);
        /* Rebuild: new header, the old chunk, a trailer for the new header. */
        total = alignUp(elen + KVMSAVE_IMAGE_CHUNK_HEADER_LEN + 100 +
                        KVMSAVE_IMAGE_TRAILER_LEN, ALIGN);
        file = g_malloc0(total);
        memcpy(file, ext, elen);
        filePeek(img.path, img.headerSize, file + elen,
                 KVMSAVE_IMAGE_CHUNK_HEADER_LEN + 100);
        tr.chunks = 1;
        tr.streamBytes = 100;
        tr.dataEnd = elen + KVMSAVE_IMAGE_CHUNK_HEADER_LEN + 100;
        tr.headerCrc = rd32(ext + 64 + rd32(ext + 52));
        tr.completed = CREATED;
        kvmsaveImageTrailerEncode(&tr, file + total - KVMSAVE_IMAGE_TRAILER_LEN);
        fileWrite(path, file, total);
        assertOpenFails(path, VIR_ERR_OPERATION_FAILED,
                        "unknown required header field 99");

        /* Control: the same file with the field not critical reads. */
        le16(file + 66, 0);
        headerFixCrc(file);
        tr.headerCrc = rd32(file + 64 + rd32(file + 52));
        kvmsaveImageTrailerEncode(&tr, file + total - KVMSAVE_IMAGE_TRAILER_LEN);
        fileWrite(path, file, total);
        {
            g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_CACHED);
            ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
            ck_assert_int_eq(kvmsaveImageVerify(r), 0);
        }
        testImageClear(&img);
    }
}
END_TEST


START_TEST(test_header_decode_refuses_malformed_fields)
{
    g_autoptr(kvmsaveImageHeader) hdr = testHeader(UUID_STR);
    g_autoptr(kvmsaveImageHeader) dec = NULL;
    g_autofree unsigned char *buf = NULL;
    g_autofree unsigned char *bad = NULL;
    size_t len;

    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), 0);

    /* A field longer than the field area. */
    bad = g_malloc(len);
    memcpy(bad, buf, len);
    le32(bad + 68, 1000000);
    headerFixCrc(bad);
    ck_assert_int_eq(kvmsaveImageHeaderDecode(bad, len, "mem", NULL, &dec), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "overruns the field area");

    /* More fields announced than present. */
    memcpy(bad, buf, len);
    le32(bad + 48, rd32(buf + 48) + 1);
    headerFixCrc(bad);
    virResetLastError();
    ck_assert_int_eq(kvmsaveImageHeaderDecode(bad, len, "mem", NULL, &dec), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "field 6 overruns");

    /* A NUL inside a string field. */
    memcpy(bad, buf, len);
    bad[XML_DATA_OFFSET + 5] = '\0';
    headerFixCrc(bad);
    virResetLastError();
    ck_assert_int_eq(kvmsaveImageHeaderDecode(bad, len, "mem", NULL, &dec), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "NUL byte");

    /* No domain XML: its field renamed to an unknown optional one. */
    memcpy(bad, buf, len);
    le16(bad + 64, 98);
    headerFixCrc(bad);
    virResetLastError();
    ck_assert_int_eq(kvmsaveImageHeaderDecode(bad, len, "mem", NULL, &dec), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "no domain XML");
    ck_assert_ptr_null(dec);

    /* Control: the unedited buffer decodes. */
    virResetLastError();
    ck_assert_int_eq(kvmsaveImageHeaderDecode(buf, len, "mem", NULL, &dec), 0);
}
END_TEST


START_TEST(test_header_encode_refuses_missing_or_huge_xml)
{
    g_autoptr(kvmsaveImageHeader) hdr = testHeader(UUID_STR);
    unsigned char *buf = NULL;
    size_t len = 0;

    g_clear_pointer(&hdr->xml, g_free);
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), -1);
    ck_assert_ptr_null(buf);
    KT_ASSERT_ERROR(VIR_ERR_INTERNAL_ERROR, "lacks the domain XML");

    virResetLastError();
    hdr->xml = g_strnfill(KVMSAVE_IMAGE_HEADER_MAX, 'x');
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), -1);
    ck_assert_ptr_null(buf);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "too large");
}
END_TEST


START_TEST(test_trailer_codec)
{
    kvmsaveImageTrailer tr = {
        .chunks = 0x0102030405060708ULL, .streamBytes = 123456789012ULL,
        .dataEnd = 0xfedcba98ULL, .headerCrc = 0xdeadbeef,
        .tableCrc = 0x0badcafe, .completed = -5,
    };
    kvmsaveImageTrailer dec;
    unsigned char buf[KVMSAVE_IMAGE_TRAILER_LEN];

    kvmsaveImageTrailerEncode(&tr, buf);
    ck_assert(memcmp(buf, KVMSAVE_IMAGE_TRAILER_MAGIC, 8) == 0);
    ck_assert_uint_eq(rd64(buf + 8), tr.chunks);
    ck_assert_uint_eq(rd64(buf + 16), tr.streamBytes);
    ck_assert_uint_eq(rd64(buf + 24), tr.dataEnd);
    ck_assert_uint_eq(rd32(buf + 32), tr.headerCrc);
    ck_assert_uint_eq(rd32(buf + 36), tr.tableCrc);
    ck_assert_uint_eq(rd64(buf + 40), (uint64_t) -5);
    ck_assert_uint_eq(rd32(buf + 60), kvmsaveCrc32c(0, buf, 60));
    ck_assert_int_eq(kvmsaveImageTrailerDecode(buf, "mem", &dec), 0);
    ck_assert_uint_eq(dec.chunks, tr.chunks);
    ck_assert_uint_eq(dec.streamBytes, tr.streamBytes);
    ck_assert_uint_eq(dec.dataEnd, tr.dataEnd);
    ck_assert_uint_eq(dec.headerCrc, tr.headerCrc);
    ck_assert_uint_eq(dec.tableCrc, tr.tableCrc);
    ck_assert_int_eq(dec.completed, -5);
}
END_TEST



/* ---- the parallel pipeline ---- */


#define PIPE_CHUNKS 23
#define PIPE_CHUNK_LEN (256 * 1024 + 17)

/* Write through NextBuffer/Queue with @threads workers; the bytes between
 * header and trailer go to *body. */
static void
writePipelineImage(const char *path, int format, size_t threads,
                   unsigned char **body, size_t *bodyLen)
{
    g_autoptr(kvmsaveImageWriter) w = NULL;
    g_autoptr(kvmsaveImageHeader) hdr = testHeader(UUID_STR);
    g_autofree unsigned char *file = NULL;
    size_t size;
    size_t i;
    int fd = open(path, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);

    ck_assert_int_ge(fd, 0);
    w = kvmsaveImageWriterNew(fd, path, false);
    kvmsaveImageWriterSetFormat(w, format);
    kvmsaveImageWriterSetThreads(w, threads);
    ck_assert_int_eq(kvmsaveImageWriteHeader(w, hdr), 0);
    for (i = 0; i < PIPE_CHUNKS; i++) {
        unsigned char *buf = kvmsaveImageWriterNextBuffer(w);

        ck_assert_msg(buf != NULL, "%s", virGetLastErrorMessage());
        /* The buffer stays the same until it is queued. */
        ck_assert_ptr_eq(kvmsaveImageWriterNextBuffer(w), buf);
        fillKind(buf, PIPE_CHUNK_LEN, "rtzrrt"[i % 6], i);
        ck_assert_int_eq(kvmsaveImageWriterQueue(w, PIPE_CHUNK_LEN), 0);
    }
    ck_assert_msg(kvmsaveImageWriterFinish(w) == 0, "%s", virGetLastErrorMessage());
    close(fd);

    file = fileRead(path, &size);
    *bodyLen = size - hdr->headerSize - KVMSAVE_IMAGE_TRAILER_LEN;
    *body = g_malloc(*bodyLen);
    memcpy(*body, file + hdr->headerSize, *bodyLen);
}

static void
readPipelineImage(const char *path, size_t threads)
{
    g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_CACHED);
    g_autofree unsigned char *expect = g_malloc(PIPE_CHUNK_LEN);
    const unsigned char *data;
    size_t len;
    size_t i;

    ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
    kvmsaveImageReaderSetThreads(r, threads);
    for (i = 0; i < PIPE_CHUNKS; i++) {
        ck_assert_msg(kvmsaveImageReadChunk(r, &data, &len) == 1,
                      "chunk %zu: %s", i, virGetLastErrorMessage());
        fillKind(expect, PIPE_CHUNK_LEN, "rtzrrt"[i % 6], i);
        ck_assert_uint_eq(len, PIPE_CHUNK_LEN);
        ck_assert_msg(memcmp(data, expect, len) == 0, "chunk %zu differs", i);
    }
    ck_assert_int_eq(kvmsaveImageReadChunk(r, &data, &len), 0);
}

START_TEST(test_pipeline_image_is_the_same_for_any_thread_count)
{
    static const size_t threads[] = { 1, 2, 3, 8 };
    int format;

    for (format = KVMSAVE_IMAGE_ENCODING_RAW;
         format <= KVMSAVE_IMAGE_ENCODING_ZSTD; format++) {
        g_autofree unsigned char *first = NULL;
        size_t firstLen = 0;
        size_t i;

        for (i = 0; i < G_N_ELEMENTS(threads); i++) {
            g_autofree char *path = scratchPath("pipeline.img");
            g_autofree unsigned char *body = NULL;
            size_t bodyLen;
            size_t j;

            writePipelineImage(path, format, threads[i], &body, &bodyLen);
            if (!first) {
                first = g_steal_pointer(&body);
                firstLen = bodyLen;
            } else {
                /* Chunks land in order, encoded the same way. */
                ck_assert_uint_eq(bodyLen, firstLen);
                ck_assert_msg(memcmp(body, first, bodyLen) == 0,
                              "%s image written with %zu threads differs",
                              kvmsaveImageFormatToString(format), threads[i]);
            }
            for (j = 0; j < G_N_ELEMENTS(threads); j++)
                readPipelineImage(path, threads[j]);
        }
    }
    KT_ASSERT_NO_ERROR();
}
END_TEST

/* A payload error found by a worker and a header error found by the
 * reader thread further on: the caller gets the chunks before the first
 * bad one, then the first bad one's error, and that error stays. */
START_TEST(test_pipeline_reports_the_first_bad_chunk_in_order)
{
    static const size_t sizes[] = { 70000, 70000, 70000, 70000, 70000,
                                    70000, 70000, 70000 };
    TestImage img;
    const unsigned char *data;
    size_t len;
    size_t threads;

    writeImage(&img, "order.img", sizes, G_N_ELEMENTS(sizes), 5);
    fileFlip(img.path, img.chunkOff[3] + KVMSAVE_IMAGE_CHUNK_HEADER_LEN + 100, 0x01);
    fileFlip(img.path, img.chunkOff[6], 0x01);      /* its magic */

    for (threads = 1; threads <= 4; threads++) {
        g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(img.path, KVMSAVE_IMAGE_IO_CACHED);
        size_t i;

        ck_assert_ptr_nonnull(r);
        kvmsaveImageReaderSetThreads(r, threads);
        for (i = 0; i < 3; i++)
            ck_assert_msg(kvmsaveImageReadChunk(r, &data, &len) == 1,
                          "chunk %zu: %s", i, virGetLastErrorMessage());
        ck_assert_int_eq(kvmsaveImageReadChunk(r, &data, &len), -1);
        KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "chunk 3 at offset");
        ck_assert_int_eq(kvmsaveImageReadChunk(r, &data, &len), -1);
        KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "data checksum mismatch");
    }
    testImageClear(&img);
}
END_TEST

/* A caller that stops early (a restore that failed) frees a reader whose
 * thread is still reading ahead. */
START_TEST(test_pipeline_reader_freed_mid_stream)
{
    g_autofree size_t *sizes = g_new(size_t, 40);
    TestImage img;
    const unsigned char *data;
    size_t len;
    size_t i;

    for (i = 0; i < 40; i++)
        sizes[i] = 50000;
    writeImage(&img, "early.img", sizes, 40, 9);
    for (i = 0; i < 3; i++) {
        g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(img.path, KVMSAVE_IMAGE_IO_CACHED);

        ck_assert_ptr_nonnull(r);
        if (i > 0)
            ck_assert_int_eq(kvmsaveImageReadChunk(r, &data, &len), 1);
        if (i > 1)
            ck_assert_int_eq(kvmsaveImageReadChunk(r, &data, &len), 1);
    }
    KT_ASSERT_NO_ERROR();
    testImageClear(&img);
}
END_TEST


START_TEST(test_writer_reports_write_failure)
{
    g_autofree char *path = scratchPath("readonly.img");
    g_autoptr(kvmsaveImageHeader) hdr = testHeader(UUID_STR);
    g_autoptr(kvmsaveImageWriter) w = NULL;
    int fd;

    fileWrite(path, "", 0);
    fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    w = kvmsaveImageWriterNew(fd, path, false);
    /* Buffered: the failure shows when the data is flushed. */
    ck_assert_int_eq(kvmsaveImageWriteHeader(w, hdr), 0);
    ck_assert_int_eq(kvmsaveImageWriteChunk(w, 0, "abc", 3), 0);
    ck_assert_int_eq(kvmsaveImageWriterFinish(w), -1);
    KT_ASSERT_ERROR(VIR_ERR_SYSTEM_ERROR, "cannot write save image");
    KT_ASSERT_ERROR(VIR_ERR_SYSTEM_ERROR, path);
    close(fd);
}
END_TEST



/* ---- images of several streams (multifd) ---- */

#define MS_STREAMS 3
#define MS_CHUNKS 40

/* Write an image of MS_STREAMS streams whose chunks are interleaved as
 * @order says (a stream number per chunk); each stream's bytes go to
 * @streams[s]. */
static void
writeStreamsImage(const char *path, const unsigned int *order, size_t n,
                  GByteArray **streams)
{
    g_autoptr(kvmsaveImageHeader) hdr = testHeader(UUID_STR);
    g_autoptr(kvmsaveImageWriter) w = NULL;
    g_autofree unsigned char *buf = g_malloc(70000);
    size_t i;
    int fd;

    hdr->streams = MS_STREAMS;
    fd = open(path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    w = kvmsaveImageWriterNew(fd, path, false);
    kvmsaveImageWriterSetFormat(w, KVMSAVE_IMAGE_ENCODING_ZSTD);
    ck_assert_int_eq(kvmsaveImageWriteHeader(w, hdr), 0);
    for (i = 0; i < n; i++) {
        size_t len = 1 + (i * 7919) % 70000;

        fillKind(buf, len, "rzt"[i % 3], i);
        g_byte_array_append(streams[order[i]], buf, len);
        ck_assert_msg(kvmsaveImageWriteChunk(w, order[i], buf, len) == 0, "%s",
                      virGetLastErrorMessage());
    }
    ck_assert_msg(kvmsaveImageWriterFinish(w) == 0, "%s", virGetLastErrorMessage());
    ck_assert_int_eq(close(fd), 0);
}

/* All of stream @stream through its own reader of @r. */
static GByteArray *
readStream(kvmsaveImageReader *r, unsigned int stream)
{
    g_autoptr(kvmsaveImageReader) sr = kvmsaveImageReaderOpenStream(r, stream);
    GByteArray *out = g_byte_array_new();
    const unsigned char *data;
    size_t len;
    int rc;

    ck_assert_msg(sr != NULL, "%s", virGetLastErrorMessage());
    while ((rc = kvmsaveImageReadChunk(sr, &data, &len)) > 0) {
        ck_assert_uint_eq(kvmsaveImageReaderLastStream(sr), stream);
        g_byte_array_append(out, data, len);
    }
    ck_assert_msg(rc == 0, "%s", virGetLastErrorMessage());
    return out;
}

START_TEST(test_streams_each_reader_returns_its_own_stream)
{
    g_autofree char *path = scratchPath("streams.img");
    g_autoptr(kvmsaveImageReader) r = NULL;
    GByteArray *want[MS_STREAMS];
    unsigned int order[MS_CHUNKS];
    const unsigned char *data;
    size_t len;
    size_t i;
    int rc;

    for (i = 0; i < MS_STREAMS; i++)
        want[i] = g_byte_array_new();
    /* Uneven: stream 2 has few chunks, stream 1 many in runs. */
    for (i = 0; i < MS_CHUNKS; i++)
        order[i] = i % 13 == 5 ? 2 : (i / 4) % 2;
    writeStreamsImage(path, order, MS_CHUNKS, want);

    r = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_CACHED);
    ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
    ck_assert_uint_eq(kvmsaveImageReaderHeader(r)->streams, MS_STREAMS);
    ck_assert_uint_eq(kvmsaveImageReaderHeader(r)->minor, KVMSAVE_IMAGE_MINOR);
    /* Readers run at once, as a restore's feeders do. */
    for (i = 0; i < MS_STREAMS; i++) {
        g_autoptr(GByteArray) got = readStream(r, i);

        ck_assert_uint_eq(got->len, want[i]->len);
        ck_assert(memcmp(got->data, want[i]->data, got->len) == 0);
    }
    /* The reader of all chunks sees them in file order, stream by stream. */
    for (i = 0; (rc = kvmsaveImageReadChunk(r, &data, &len)) > 0; i++)
        ck_assert_uint_eq(kvmsaveImageReaderLastStream(r), order[i]);
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(i, MS_CHUNKS);
    for (i = 0; i < MS_STREAMS; i++)
        g_byte_array_unref(want[i]);
    KT_ASSERT_NO_ERROR();
}
END_TEST


/* Pages of the file at @path that the page cache holds. */
static size_t
cachedPages(const char *path)
{
    size_t page = sysconf(_SC_PAGESIZE);
    g_autofree unsigned char *vec = NULL;
    struct stat sb;
    size_t n;
    size_t i;
    size_t cached = 0;
    void *map;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(fstat(fd, &sb), 0);
    n = (sb.st_size + page - 1) / page;
    map = mmap(NULL, sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(map, MAP_FAILED);
    vec = g_malloc(n);
    ck_assert_int_eq(mincore(map, sb.st_size, vec), 0);
    for (i = 0; i < n; i++)
        cached += vec[i] & 1;
    munmap(map, sb.st_size);
    close(fd);
    return cached;
}

/* A restore's stream readers read around the page cache, as its reader
 * of one stream does: through it, each reader's copies cost the CPUs
 * that QEMU needs to load the guest. */
START_TEST(test_streams_readers_of_a_restore_bypass_the_page_cache)
{
    g_autofree char *path = scratchPath("streams-direct.img");
    g_autoptr(kvmsaveImageReader) r = NULL;
    g_autoptr(kvmsaveImageReader) sr = NULL;
    GByteArray *want[MS_STREAMS];
    unsigned int order[MS_CHUNKS];
    const unsigned char *data;
    size_t off = 0;
    size_t len;
    size_t i;
    int fd;

    /* tmpfs keeps its files in the page cache: nothing to tell there. */
    if (!scratchHasDirectIO() || scratchOnTmpfs())
        return;
    for (i = 0; i < MS_STREAMS; i++)
        want[i] = g_byte_array_new();
    for (i = 0; i < MS_CHUNKS; i++)
        order[i] = i % MS_STREAMS;
    writeStreamsImage(path, order, MS_CHUNKS, want);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    close(fd);
    ck_assert_uint_eq(cachedPages(path), 0);

    r = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_STREAM);
    ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
    sr = kvmsaveImageReaderOpenStream(r, 1);
    ck_assert_msg(sr != NULL, "%s", virGetLastErrorMessage());
    /* Halfway through stream 1, past chunks of the others: a cached
     * reader would hold all it passed, as the other readers are behind. */
    for (i = 0; i < MS_CHUNKS / MS_STREAMS / 2; i++) {
        ck_assert_int_eq(kvmsaveImageReadChunk(sr, &data, &len), 1);
        ck_assert_uint_le(off + len, want[1]->len);
        ck_assert(memcmp(data, want[1]->data + off, len) == 0);
        off += len;
    }
    ck_assert_uint_eq(cachedPages(path), 0);
    for (i = 0; i < MS_STREAMS; i++)
        g_byte_array_unref(want[i]);
    KT_ASSERT_NO_ERROR();
}
END_TEST


typedef struct {
    kvmsaveImageWriter *w;
    unsigned int stream;
    GByteArray *data;
} StreamWriter;

static gpointer
streamWriterThread(gpointer opaque)
{
    StreamWriter *sw = opaque;
    unsigned char buf[20000];
    size_t i;

    for (i = 0; i < 50; i++) {
        size_t len = 100 + (i * 131 + sw->stream * 17) % (sizeof(buf) - 100);

        fillRandom(buf, len, sw->stream * 1000 + i);
        g_byte_array_append(sw->data, buf, len);
        if (kvmsaveImageWriteChunk(sw->w, sw->stream, buf, len) < 0)
            return GINT_TO_POINTER(-1);
    }
    return NULL;
}

START_TEST(test_streams_written_from_several_threads_read_back_in_order)
{
    g_autofree char *path = scratchPath("threads.img");
    g_autoptr(kvmsaveImageHeader) hdr = testHeader(UUID_STR);
    g_autoptr(kvmsaveImageWriter) w = NULL;
    g_autoptr(kvmsaveImageReader) r = NULL;
    StreamWriter sw[4];
    GThread *th[4];
    size_t i;
    int fd;

    hdr->streams = G_N_ELEMENTS(sw);
    fd = open(path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    w = kvmsaveImageWriterNew(fd, path, false);
    kvmsaveImageWriterSetThreads(w, 2);
    ck_assert_int_eq(kvmsaveImageWriteHeader(w, hdr), 0);
    for (i = 0; i < G_N_ELEMENTS(sw); i++) {
        sw[i] = (StreamWriter) { w, i, g_byte_array_new() };
        th[i] = g_thread_new("sw", streamWriterThread, &sw[i]);
    }
    for (i = 0; i < G_N_ELEMENTS(sw); i++)
        ck_assert_ptr_null(g_thread_join(th[i]));
    ck_assert_msg(kvmsaveImageWriterFinish(w) == 0, "%s", virGetLastErrorMessage());
    ck_assert_int_eq(close(fd), 0);

    r = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_CACHED);
    ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
    ck_assert_int_eq(kvmsaveImageReaderTrailer(r)->chunks, 4 * 50);
    for (i = 0; i < G_N_ELEMENTS(sw); i++) {
        g_autoptr(GByteArray) got = readStream(r, i);

        ck_assert_uint_eq(got->len, sw[i].data->len);
        ck_assert(memcmp(got->data, sw[i].data->data, got->len) == 0);
        g_byte_array_unref(sw[i].data);
    }
    KT_ASSERT_NO_ERROR();
}
END_TEST


START_TEST(test_streams_field_is_critical_and_checked)
{
    g_autoptr(kvmsaveImageHeader) hdr = testHeader(UUID_STR);
    g_autoptr(kvmsaveImageHeader) dec = NULL;
    g_autofree unsigned char *buf = NULL;
    g_autofree unsigned char *ext = NULL;
    size_t len;
    size_t elen;
    size_t off = 64;
    uint32_t i;

    /* One stream: no field, readable by kvmsave 1.0 and 1.1. */
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), 0);
    ck_assert_uint_eq(rd32(buf + 48), 6);
    g_clear_pointer(&buf, g_free);

    hdr->streams = 5;
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), 0);
    ck_assert_uint_eq(rd32(buf + 48), 7);
    for (i = 0; i < 6; i++)
        off += 8 + alignUp(rd32(buf + off + 4), 8);
    ck_assert_uint_eq(rd32(buf + off) & 0xffff, KVMSAVE_IMAGE_FIELD_STREAMS);
    ck_assert_uint_eq(rd32(buf + off) >> 16, KVMSAVE_IMAGE_FIELD_CRITICAL);
    ck_assert_uint_eq(rd32(buf + off + 4), 1);
    ck_assert(memcmp(buf + off + 8, "5", 1) == 0);
    ck_assert_int_eq(kvmsaveImageHeaderDecode(buf, len, "mem", NULL, &dec), 0);
    ck_assert_uint_eq(dec->streams, 5);
    g_clear_pointer(&dec, kvmsaveImageHeaderFree);
    g_clear_pointer(&buf, g_free);

    /* Counts that make no sense are refused. */
    hdr->streams = 1;
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), 0);
    {
        static const char *const bad[] = { "1", "0", "257", "-3", "2x", "" };

        for (i = 0; i < G_N_ELEMENTS(bad); i++) {
            ext = headerWithExtraField(buf, KVMSAVE_IMAGE_FIELD_STREAMS,
                                       KVMSAVE_IMAGE_FIELD_CRITICAL, bad[i], &elen);
            ck_assert_int_eq(kvmsaveImageHeaderDecode(ext, elen, "mem", NULL, &dec), -1);
            KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "invalid stream count");
            g_clear_pointer(&ext, g_free);
        }
    }
}
END_TEST


START_TEST(test_read_refuses_chunk_of_a_stream_the_image_lacks)
{
    TestImage img;
    unsigned char v[2];

    writeStdImage(&img, "chstream.img");
    le16(v, 1);
    patchChunkHeader(img.path, img.chunkOff[2], 6, v, 2);
    assertChunkFailure(&img, 2, "chunk 2", "belongs to stream 1, the image has 1", NULL);
    testImageClear(&img);
}
END_TEST


/* ---- sparse images (kvmsave_mapped.c) ---- */

#define SP_OFFSET KVMSAVE_IMAGE_MAPPED_OFFSET
#define SP_BLOCK KVMSAVE_IMAGE_MAPPED_BLOCK
#define SP_CHANNELS 4
/* The stream's whole blocks: 'd' data, 'h' a hole (never written), 'p'
 * data then a hole inside the block; a short block of data ends it. */
#define SP_LAYOUT "dhph"
#define SP_BLOCKS (sizeof(SP_LAYOUT) - 1 + 1)
#define SP_PARTIAL (64 * 1024)
#define SP_TAIL 12345
#define SP_STREAM_BYTES ((uint64_t) (SP_BLOCKS - 1) * SP_BLOCK + SP_TAIL)

static kvmsaveImageHeader *
sparseHeader(void)
{
    kvmsaveImageHeader *hdr = testHeader(UUID_STR);

    hdr->mappedOffset = SP_OFFSET;
    hdr->mappedBlock = SP_BLOCK;
    hdr->mappedChannels = SP_CHANNELS;
    return hdr;
}

/* File offset of block @i of a sparse test image's stream. */
static uint64_t
sparseBlockOff(size_t i)
{
    return SP_OFFSET + (uint64_t) i * SP_BLOCK;
}

/* Bytes of block @i of a stream of @streamBytes. */
static size_t
sparseBlockLen(size_t i, uint64_t streamBytes)
{
    return MIN(SP_BLOCK, streamBytes - (uint64_t) i * SP_BLOCK);
}

/* Write the stream's data where SP_LAYOUT has it, as QEMU does: at its
 * place in @fd, holes left unwritten. img->data gets the stream as it
 * reads, holes as zeros. */
static void
writeSparseStream(TestImage *img, int fd, uint64_t offset)
{
    size_t i;

    img->dataLen = SP_STREAM_BYTES;
    img->data = g_malloc0(img->dataLen);
    for (i = 0; i < SP_BLOCKS; i++) {
        char kind = i < SP_BLOCKS - 1 ? SP_LAYOUT[i] : 'd';
        size_t len = kind == 'p' ? SP_PARTIAL : sparseBlockLen(i, img->dataLen);
        unsigned char *p = img->data + i * SP_BLOCK;

        if (kind == 'h')
            continue;
        fillRandom(p, len, i + 1);
        ck_assert_int_eq(pwrite(fd, p, len, offset + i * SP_BLOCK), (ssize_t) len);
    }
}

/* Checksum the stream in @fd as a save does, in 3 threads. */
static uint32_t *
sumSparseStream(int fd, const char *path, const kvmsaveImageHeader *hdr,
                uint64_t streamBytes)
{
    kvmsaveMappedSum *m = kvmsaveMappedSumStart(fd, path, false, hdr,
                                                streamBytes, NULL, 3);
    uint32_t *table = NULL;

    ck_assert_msg(kvmsaveMappedSumFinish(m, false, &table) == 0, "%s",
                  virGetLastErrorMessage());
    ck_assert_ptr_nonnull(table);
    return table;
}

/* A sparse image of SP_LAYOUT with @hdr at @name in the scratch
 * directory. */
static void
writeSparseImageHdr(TestImage *img, const char *name, kvmsaveImageHeader *hdr)
{
    g_autoptr(kvmsaveImageWriter) w = NULL;
    g_autofree uint32_t *table = NULL;
    VIR_AUTOCLOSE fd = -1;

    virResetLastError();
    memset(img, 0, sizeof(*img));
    img->path = scratchPath(name);
    fd = open(img->path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_msg(fd >= 0, "open %s: %s", img->path, g_strerror(errno));
    w = kvmsaveImageWriterNew(fd, img->path, false);
    ck_assert_msg(kvmsaveImageWriteHeader(w, hdr) == 0, "%s",
                  virGetLastErrorMessage());
    writeSparseStream(img, fd, hdr->mappedOffset);
    table = sumSparseStream(fd, img->path, hdr, img->dataLen);
    ck_assert_msg(kvmsaveImageWriterFinishMapped(w, hdr, img->dataLen, table) == 0,
                  "%s", virGetLastErrorMessage());
    img->nchunks = SP_BLOCKS;
    img->headerSize = hdr->headerSize;
    img->headerCrc = hdr->crc;
    img->dataEnd = alignUp(hdr->mappedOffset + img->dataLen, ALIGN) + 4 * SP_BLOCKS;
    img->size = fileSize(img->path);
    KT_ASSERT_NO_ERROR();
}

static void
writeSparseImage(TestImage *img, const char *name)
{
    g_autoptr(kvmsaveImageHeader) hdr = sparseHeader();

    writeSparseImageHdr(img, name, hdr);
}

static int
verifyImage(const char *path, kvmsaveImageIO io)
{
    g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(path, io);

    ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
    return kvmsaveImageVerify(r);
}

/* Expect the last error, of a verify or rewrite, to name block @i. */
static void
assertSparseBlockNamed(size_t i)
{
    g_autofree char *where = g_strdup_printf("block %zu at offset %llu", i,
                                             (unsigned long long) sparseBlockOff(i));

    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, where);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "data checksum mismatch");
}

/* Expect verifying @img to fail on block @i. */
static void
assertSparseVerifyFails(const TestImage *img, size_t i)
{
    virResetLastError();
    ck_assert_int_eq(verifyImage(img->path, KVMSAVE_IMAGE_IO_CACHED), -1);
    assertSparseBlockNamed(i);
}

/* Expect the stream of @path to read as @img's, at the same offset. */
static void
assertSparseStream(const char *path, const TestImage *img)
{
    g_autofree unsigned char *buf = g_malloc(img->dataLen);

    filePeek(path, SP_OFFSET, buf, img->dataLen);
    ck_assert(memcmp(buf, img->data, img->dataLen) == 0);
}

/* Whether [@off, @off + @len) of @path is a hole. */
static bool
fileHole(const char *path, uint64_t off, uint64_t len)
{
    VIR_AUTOCLOSE fd = open(path, O_RDONLY | O_CLOEXEC);
    off_t data;

    ck_assert_int_ge(fd, 0);
    data = lseek(fd, off, SEEK_DATA);
    if (data < 0)
        return errno == ENXIO;
    return (uint64_t) data >= off + len;
}

/* Open @src with @io and rewrite it to a new file @dst. */
static int
rewriteImage(const char *src, kvmsaveImageIO io, const char *dst)
{
    g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(src, io);
    VIR_AUTOCLOSE fd = open(dst, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600);

    ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
    ck_assert_int_ge(fd, 0);
    return kvmsaveImageReaderRewrite(r, fd, dst,
                                     kvmsaveImageReaderHeader(r)->xml, false);
}


/* The offset of the first field tagged @tag in the header in @buf. */
static size_t
headerFieldOffset(const unsigned char *buf, uint16_t tag)
{
    uint32_t nfields = rd32(buf + 48);
    size_t off = 64;
    uint32_t i;

    for (i = 0; i < nfields; i++) {
        if ((rd32(buf + off) & 0xffff) == tag)
            return off;
        off += 8 + alignUp(rd32(buf + off + 4), 8);
    }
    ck_abort_msg("no header field %u", tag);
    return 0;
}


START_TEST(test_sparse_header_mapped_field_round_trips_as_critical)
{
    g_autoptr(kvmsaveImageHeader) hdr = sparseHeader();
    g_autoptr(kvmsaveImageHeader) dec = NULL;
    g_autofree unsigned char *buf = NULL;
    const char *val = "1048576 1048576 4";
    size_t len;
    size_t off;

    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), 0);
    ck_assert_uint_eq(rd32(buf + 48), 7);
    off = headerFieldOffset(buf, KVMSAVE_IMAGE_FIELD_MAPPED);
    ck_assert_uint_eq(rd32(buf + off) >> 16, KVMSAVE_IMAGE_FIELD_CRITICAL);
    ck_assert_uint_eq(rd32(buf + off + 4), strlen(val));
    ck_assert(memcmp(buf + off + 8, val, strlen(val)) == 0);

    ck_assert_int_eq(kvmsaveImageHeaderDecode(buf, len, "mem", NULL, &dec), 0);
    assertStdHeader(dec);
    ck_assert_uint_eq(dec->mappedOffset, SP_OFFSET);
    ck_assert_uint_eq(dec->mappedBlock, SP_BLOCK);
    ck_assert_uint_eq(dec->mappedChannels, SP_CHANNELS);
    g_clear_pointer(&dec, kvmsaveImageHeaderFree);
    g_clear_pointer(&buf, g_free);

    /* A header of chunks has no such field and decodes as no layout. */
    hdr->mappedOffset = 0;
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), 0);
    ck_assert_uint_eq(rd32(buf + 48), 6);
    ck_assert_int_eq(kvmsaveImageHeaderDecode(buf, len, "mem", NULL, &dec), 0);
    ck_assert_uint_eq(dec->mappedOffset, 0);
    ck_assert_uint_eq(dec->mappedBlock, 0);
    KT_ASSERT_NO_ERROR();
}
END_TEST


/* QEMU writes a sparse image's one stream itself: a header that also
 * claims several streams is corrupt. */
START_TEST(test_sparse_header_with_several_streams_is_refused)
{
    g_autoptr(kvmsaveImageHeader) hdr = sparseHeader();
    g_autoptr(kvmsaveImageHeader) dec = NULL;
    g_autofree unsigned char *buf = NULL;
    size_t len;

    hdr->streams = 3;
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), 0);
    ck_assert_int_eq(kvmsaveImageHeaderDecode(buf, len, "mem", NULL, &dec), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "invalid stream count '3'");
}
END_TEST


START_TEST(test_sparse_header_refuses_invalid_layout)
{
    /* The header these go into is 4096 bytes. */
    static const char *const bad[] = {
        "0 1048576 0",                  /* offset inside the header */
        "4096 8192 0",                  /* offset not on a block */
        "1228800 12288 0",              /* block not a power of two */
        "1048576 2048 0",               /* block too small */
        "1073741824 33554432 0",        /* block too large */
        "2147483648 1048576 0",         /* offset too far */
        "1048576 1048576 257",          /* too many channels */
        "-1048576 1048576 0", "sparse", "", "1048576 1048576",
        "1048576,1048576,0", "0x100000 1048576 0",
        "1048576 1048576 0 junk", "1048576 1048576 0x",
    };
    g_autoptr(kvmsaveImageHeader) hdr = testHeader(UUID_STR);
    g_autoptr(kvmsaveImageHeader) dec = NULL;
    g_autofree unsigned char *buf = NULL;
    size_t len;
    size_t elen;
    size_t i;

    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), 0);
    for (i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autofree unsigned char *ext =
            headerWithExtraField(buf, KVMSAVE_IMAGE_FIELD_MAPPED,
                                 KVMSAVE_IMAGE_FIELD_CRITICAL, bad[i], &elen);

        virResetLastError();
        ck_assert_uint_eq(elen, ALIGN);
        ck_assert_msg(kvmsaveImageHeaderDecode(ext, elen, "mem", NULL, &dec) == -1,
                      "layout '%s' accepted", bad[i]);
        KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "invalid sparse layout");
    }

    /* Control: the smallest and the largest valid layouts decode. */
    {
        g_autofree unsigned char *ext =
            headerWithExtraField(buf, KVMSAVE_IMAGE_FIELD_MAPPED,
                                 KVMSAVE_IMAGE_FIELD_CRITICAL, "4096 4096 0", &elen);

        virResetLastError();
        ck_assert_int_eq(kvmsaveImageHeaderDecode(ext, elen, "mem", NULL, &dec), 0);
        ck_assert_uint_eq(dec->mappedOffset, ALIGN);
        ck_assert_uint_eq(dec->mappedBlock, ALIGN);
        g_clear_pointer(&dec, kvmsaveImageHeaderFree);
    }
    {
        g_autofree unsigned char *ext =
            headerWithExtraField(buf, KVMSAVE_IMAGE_FIELD_MAPPED,
                                 KVMSAVE_IMAGE_FIELD_CRITICAL,
                                 "1073741824 16777216 256", &elen);

        ck_assert_int_eq(kvmsaveImageHeaderDecode(ext, elen, "mem", NULL, &dec), 0);
        ck_assert_uint_eq(dec->mappedOffset, KVMSAVE_IMAGE_MAPPED_OFFSET_MAX);
        ck_assert_uint_eq(dec->mappedBlock, KVMSAVE_IMAGE_MAPPED_BLOCK_MAX);
        ck_assert_uint_eq(dec->mappedChannels, KVMSAVE_IMAGE_STREAMS_MAX);
    }
}
END_TEST


START_TEST(test_sparse_header_encode_refuses_xml_past_the_stream)
{
    g_autoptr(kvmsaveImageHeader) hdr = sparseHeader();
    g_autofree unsigned char *buf = NULL;
    size_t len = 0;

    /* 3 pages of XML make a header of 4: it fits before a stream at 4
     * pages, not before one at 3. */
    g_free(hdr->xml);
    hdr->xml = g_strnfill(3 * ALIGN, 'x');
    hdr->mappedBlock = ALIGN;
    hdr->mappedOffset = 4 * ALIGN;
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), 0);
    ck_assert_uint_eq(len, 4 * ALIGN);
    g_clear_pointer(&buf, g_free);

    hdr->mappedOffset = 3 * ALIGN;
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), -1);
    ck_assert_ptr_null(buf);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "too large for a sparse save image");
}
END_TEST


START_TEST(test_sparse_image_layout_matches_the_format)
{
    TestImage img;
    uint64_t tableOff = alignUp(SP_OFFSET + SP_STREAM_BYTES, ALIGN);
    unsigned char table[4 * SP_BLOCKS];
    unsigned char hdrBuf[ALIGN];
    g_autoptr(kvmsaveImageHeader) hdr = NULL;
    kvmsaveImageTrailer tr;
    size_t i;

    writeSparseImage(&img, "layout.img");
    filePeek(img.path, 0, hdrBuf, sizeof(hdrBuf));
    ck_assert_int_eq(kvmsaveImageHeaderDecode(hdrBuf, sizeof(hdrBuf), "mem",
                                              NULL, &hdr), 0);
    ck_assert_uint_eq(hdr->mappedOffset, SP_OFFSET);
    assertSparseStream(img.path, &img);

    /* One little-endian crc32c per block after the stream, holes read
     * as zeros. */
    filePeek(img.path, tableOff, table, sizeof(table));
    for (i = 0; i < SP_BLOCKS; i++)
        ck_assert_uint_eq(rd32(table + 4 * i),
                          kvmsaveCrc32c(0, img.data + i * SP_BLOCK,
                                        sparseBlockLen(i, img.dataLen)));

    readTrailer(&img, &tr);
    ck_assert_uint_eq(tr.chunks, SP_BLOCKS);
    ck_assert_uint_eq(tr.streamBytes, SP_STREAM_BYTES);
    ck_assert_uint_eq(tr.dataEnd, tableOff + sizeof(table));
    ck_assert_uint_eq(tr.headerCrc, img.headerCrc);
    ck_assert_uint_eq(tr.tableCrc, kvmsaveCrc32c(0, table, sizeof(table)));
    ck_assert_uint_eq(img.size, alignUp(tr.dataEnd + KVMSAVE_IMAGE_TRAILER_LEN, ALIGN));
    testImageClear(&img);
}
END_TEST


START_TEST(test_sparse_image_opens_and_verifies)
{
    TestImage img;
    g_autoptr(kvmsaveImageReader) r = NULL;
    const kvmsaveImageHeader *hdr;
    const uint32_t *table;

    writeSparseImage(&img, "verify.img");
    r = kvmsaveImageOpen(img.path, KVMSAVE_IMAGE_IO_CACHED);
    ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
    hdr = kvmsaveImageReaderHeader(r);
    assertStdHeader(hdr);
    ck_assert_uint_eq(hdr->mappedOffset, SP_OFFSET);
    ck_assert_uint_eq(hdr->mappedBlock, SP_BLOCK);
    ck_assert_uint_eq(hdr->mappedChannels, SP_CHANNELS);
    ck_assert_uint_eq(kvmsaveImageReaderTrailer(r)->streamBytes, SP_STREAM_BYTES);
    ck_assert(kvmsaveImageReaderChecksummed(r));
    table = kvmsaveImageReaderMappedTable(r);
    ck_assert_ptr_nonnull(table);
    ck_assert_uint_eq(table[1], kvmsaveCrc32c(0, img.data + SP_BLOCK, SP_BLOCK));
    ck_assert_int_eq(kvmsaveImageVerify(r), 0);
    KT_ASSERT_NO_ERROR();

    if (scratchHasDirectIO())
        ck_assert_msg(verifyImage(img.path, KVMSAVE_IMAGE_IO_DIRECT) == 0,
                      "%s", virGetLastErrorMessage());
    ck_assert_int_eq(verifyImage(img.path, KVMSAVE_IMAGE_IO_STREAM), 0);
    testImageClear(&img);
}
END_TEST


START_TEST(test_sparse_header_larger_than_the_write_buffer_is_written_whole)
{
    g_autoptr(kvmsaveImageHeader) hdr = sparseHeader();
    g_autoptr(kvmsaveImageReader) r = NULL;
    TestImage img;

    /* A header the writer cannot hold in its 8 MiB buffer, before a
     * stream at 16 MiB. */
    g_free(hdr->xml);
    hdr->xml = g_strnfill(9 * 1024 * 1024, 'x');
    hdr->mappedOffset = 16 * SP_BLOCK;
    writeSparseImageHdr(&img, "bigheader.img", hdr);
    r = kvmsaveImageOpen(img.path, KVMSAVE_IMAGE_IO_CACHED);
    ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
    ck_assert_str_eq(kvmsaveImageReaderHeader(r)->xml, hdr->xml);
    ck_assert_int_eq(kvmsaveImageVerify(r), 0);
    testImageClear(&img);
}
END_TEST


START_TEST(test_sparse_image_refuses_chunk_reads)
{
    TestImage img;
    g_autoptr(kvmsaveImageReader) r = NULL;
    const unsigned char *data = NULL;
    size_t len = 0;

    writeSparseImage(&img, "nochunks.img");
    r = kvmsaveImageOpen(img.path, KVMSAVE_IMAGE_IO_CACHED);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(kvmsaveImageReadChunk(r, &data, &len), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_INVALID, "sparse image");
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_INVALID, img.path);
    ck_assert_ptr_null(data);
    ck_assert_uint_eq(len, 0);
    testImageClear(&img);
}
END_TEST


START_TEST(test_chunk_image_has_no_mapped_table)
{
    TestImage img;
    g_autoptr(kvmsaveImageReader) r = NULL;

    writeStdImage(&img, "chunks.img");
    r = kvmsaveImageOpen(img.path, KVMSAVE_IMAGE_IO_CACHED);
    ck_assert_ptr_nonnull(r);
    ck_assert_ptr_null(kvmsaveImageReaderMappedTable(r));
    ck_assert_uint_eq(kvmsaveImageReaderHeader(r)->mappedOffset, 0);
    testImageClear(&img);
}
END_TEST


START_TEST(test_sparse_verify_names_the_damaged_block)
{
    TestImage img;
    /* A byte in a whole block, in the data of a partial one and in the
     * short last block. */
    static const size_t blocks[] = { 0, 2, SP_BLOCKS - 1 };
    size_t i;

    writeSparseImage(&img, "damaged.img");
    for (i = 0; i < G_N_ELEMENTS(blocks); i++) {
        uint64_t off = sparseBlockOff(blocks[i]) + 1000;

        fileFlip(img.path, off, 0x10);
        assertSparseVerifyFails(&img, blocks[i]);
        fileFlip(img.path, off, 0x10);
        virResetLastError();
        ck_assert_int_eq(verifyImage(img.path, KVMSAVE_IMAGE_IO_CACHED), 0);
    }
    testImageClear(&img);
}
END_TEST


START_TEST(test_sparse_verify_catches_data_in_a_hole)
{
    TestImage img;
    unsigned char zero = 0;
    unsigned char one = 1;

    writeSparseImage(&img, "hole.img");
    /* A zero written into a hole reads as before. */
    filePatch(img.path, sparseBlockOff(1) + 5000, &zero, 1);
    ck_assert_int_eq(verifyImage(img.path, KVMSAVE_IMAGE_IO_CACHED), 0);

    filePatch(img.path, sparseBlockOff(3) + SP_BLOCK - 1, &one, 1);
    assertSparseVerifyFails(&img, 3);
    filePatch(img.path, sparseBlockOff(3) + SP_BLOCK - 1, &zero, 1);

    /* ...and in the hole after the data of a partial block. */
    filePatch(img.path, sparseBlockOff(2) + SP_PARTIAL, &one, 1);
    assertSparseVerifyFails(&img, 2);
    testImageClear(&img);
}
END_TEST


START_TEST(test_sparse_verify_catches_data_lost_to_a_hole)
{
    TestImage img;
    VIR_AUTOCLOSE fd = -1;

    writeSparseImage(&img, "punched.img");
    fd = open(img.path, O_RDWR | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    /* Where the file system punches holes, the block is skipped as one
     * and its checksum taken as that of zeros; elsewhere it reads as
     * zeros. Either way it is not the block that was saved. */
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  sparseBlockOff(0), SP_BLOCK) < 0) {
        g_autofree unsigned char *zeros = g_new0(unsigned char, SP_BLOCK);

        ck_assert_int_eq(pwrite(fd, zeros, SP_BLOCK, sparseBlockOff(0)), SP_BLOCK);
    }
    assertSparseVerifyFails(&img, 0);
    testImageClear(&img);
}
END_TEST


START_TEST(test_sparse_open_refuses_damaged_table)
{
    TestImage img;
    uint64_t tableOff = alignUp(SP_OFFSET + SP_STREAM_BYTES, ALIGN);
    size_t i;

    writeSparseImage(&img, "table.img");
    for (i = 0; i < 4 * SP_BLOCKS; i += 7) {
        fileFlip(img.path, tableOff + i, 0x01);
        assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED,
                        "checksum table mismatch");
        fileFlip(img.path, tableOff + i, 0x01);
    }
    ck_assert_int_eq(verifyImage(img.path, KVMSAVE_IMAGE_IO_CACHED), 0);
    testImageClear(&img);
}
END_TEST


START_TEST(test_sparse_open_refuses_trailer_that_does_not_fit_the_table)
{
    TestImage img;
    kvmsaveImageTrailer good;
    kvmsaveImageTrailer tr;

    writeSparseImage(&img, "trailer.img");
    readTrailer(&img, &good);

    tr = good;
    tr.chunks = SP_BLOCKS + 1;
    writeTrailer(&img, &tr);
    assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED, "records 6 blocks");

    tr.chunks = SP_BLOCKS - 1;
    writeTrailer(&img, &tr);
    assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED, "do not fit a sparse stream");

    /* A stream a block shorter, with a data end to match it. */
    tr = good;
    tr.chunks = SP_BLOCKS - 1;
    tr.streamBytes -= SP_BLOCK;
    tr.dataEnd -= 4;
    writeTrailer(&img, &tr);
    assertOpenFails(img.path, VIR_ERR_OPERATION_FAILED, "do not fit a sparse stream");

    writeTrailer(&img, &good);
    ck_assert_int_eq(verifyImage(img.path, KVMSAVE_IMAGE_IO_CACHED), 0);
    testImageClear(&img);
}
END_TEST


START_TEST(test_sparse_open_refuses_truncated_image)
{
    TestImage img;
    g_autofree char *cut = scratchPath("cut.img");
    uint64_t tableOff = alignUp(SP_OFFSET + SP_STREAM_BYTES, ALIGN);
    uint64_t lens[6];
    size_t i;

    writeSparseImage(&img, "whole.img");
    /* Inside the header's padding, a data block, a hole, before the
     * table, and at unaligned sizes short of the trailer. */
    lens[0] = SP_OFFSET;
    lens[1] = sparseBlockOff(2);
    lens[2] = sparseBlockOff(1) + 3 * ALIGN;
    lens[3] = tableOff;
    lens[4] = img.size - 1;
    lens[5] = img.size - KVMSAVE_IMAGE_TRAILER_LEN;
    for (i = 0; i < G_N_ELEMENTS(lens); i++) {
        fileCopyPrefix(img.path, cut, lens[i]);
        assertOpenFails(cut, VIR_ERR_OPERATION_FAILED, "incomplete or truncated");
    }
    testImageClear(&img);
}
END_TEST


/* Whether @dst has a hole at each of @src's holes in the stream's whole
 * blocks. */
static void
assertHolesKept(const char *src, const char *dst)
{
    size_t i;

    for (i = 0; i < SP_BLOCKS - 1; i++) {
        if (SP_LAYOUT[i] != 'h')
            continue;
        if (!fileHole(src, sparseBlockOff(i), SP_BLOCK)) {
            fprintf(stderr, "note: the scratch file system keeps no holes\n");
            continue;
        }
        ck_assert_msg(fileHole(dst, sparseBlockOff(i), SP_BLOCK),
                      "block %zu is no longer a hole", i);
    }
}

START_TEST(test_sparse_rewrite_keeps_stream_and_holes)
{
    TestImage img;
    g_autofree char *copy = scratchPath("rewritten.img");
    g_autoptr(kvmsaveImageReader) r = NULL;
    g_autoptr(kvmsaveImageReader) r2 = NULL;
    const kvmsaveImageHeader *hdr;

    writeSparseImage(&img, "rewrite-src.img");
    ck_assert_msg(rewriteImage(img.path, KVMSAVE_IMAGE_IO_CACHED, copy) == 0,
                  "%s", virGetLastErrorMessage());
    r = kvmsaveImageOpen(img.path, KVMSAVE_IMAGE_IO_CACHED);
    r2 = kvmsaveImageOpen(copy, KVMSAVE_IMAGE_IO_CACHED);
    ck_assert_msg(r && r2, "%s", virGetLastErrorMessage());
    hdr = kvmsaveImageReaderHeader(r2);
    ck_assert_uint_eq(hdr->flags & KVMSAVE_IMAGE_FLAG_RUNNING, 0);
    ck_assert_uint_eq(hdr->mappedOffset, SP_OFFSET);
    ck_assert_uint_eq(hdr->mappedBlock, SP_BLOCK);
    ck_assert_uint_eq(hdr->mappedChannels, SP_CHANNELS);
    ck_assert(memcmp(kvmsaveImageReaderMappedTable(r),
                     kvmsaveImageReaderMappedTable(r2), 4 * SP_BLOCKS) == 0);
    ck_assert_int_eq(kvmsaveImageVerify(r2), 0);
    ck_assert_uint_eq(fileSize(copy), img.size);
    assertSparseStream(copy, &img);
    assertHolesKept(img.path, copy);
    testImageClear(&img);
}
END_TEST


START_TEST(test_sparse_rewrite_refuses_damaged_block)
{
    TestImage img;
    g_autofree char *copy = scratchPath("rewritten-bad.img");

    writeSparseImage(&img, "rewrite-bad.img");
    fileFlip(img.path, sparseBlockOff(2) + 17, 0x80);
    ck_assert_int_eq(rewriteImage(img.path, KVMSAVE_IMAGE_IO_CACHED, copy), -1);
    assertSparseBlockNamed(2);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, img.path);

    /* Data in a hole, which the copy would otherwise keep as a hole. */
    fileFlip(img.path, sparseBlockOff(2) + 17, 0x80);
    fileFlip(img.path, sparseBlockOff(1) + 17, 0x80);
    virResetLastError();
    ck_assert_int_eq(rewriteImage(img.path, KVMSAVE_IMAGE_IO_CACHED, copy), -1);
    assertSparseBlockNamed(1);
    testImageClear(&img);
}
END_TEST


START_TEST(test_sparse_rewrite_through_direct_reader)
{
    TestImage img;
    g_autofree char *copy = scratchPath("rewritten-direct.img");

    if (!scratchHasDirectIO())
        return;
    writeSparseImage(&img, "rewrite-direct.img");
    ck_assert_msg(rewriteImage(img.path, KVMSAVE_IMAGE_IO_DIRECT, copy) == 0,
                  "%s", virGetLastErrorMessage());
    ck_assert_int_eq(verifyImage(copy, KVMSAVE_IMAGE_IO_CACHED), 0);
    assertSparseStream(copy, &img);
    testImageClear(&img);
}
END_TEST


START_TEST(test_sparse_sum_done_reaches_stream_bytes)
{
    TestImage img;
    g_autoptr(kvmsaveImageHeader) hdr = sparseHeader();
    g_autofree uint32_t *table = NULL;
    VIR_AUTOCLOSE fd = -1;
    kvmsaveMappedSum *m;
    size_t waited;

    writeSparseImage(&img, "sum.img");
    fd = open(img.path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    m = kvmsaveMappedSumStart(fd, img.path, false, hdr, img.dataLen, NULL, 2);
    for (waited = 0; kvmsaveMappedSumDone(m) < img.dataLen && waited < 10000; waited++)
        g_usleep(1000);
    ck_assert_uint_eq(kvmsaveMappedSumDone(m), img.dataLen);
    ck_assert(!kvmsaveMappedSumFailed(m));
    /* Stopping a pass that is over changes nothing. */
    ck_assert_int_eq(kvmsaveMappedSumFinish(m, true, &table), 0);
    ck_assert_ptr_nonnull(table);
    ck_assert_uint_eq(table[SP_BLOCKS - 1],
                      kvmsaveCrc32c(0, img.data + (SP_BLOCKS - 1) * SP_BLOCK, SP_TAIL));
    testImageClear(&img);
}
END_TEST


#define ENDLESS_BYTES ((uint64_t) 1 << 40)

/* A pass over an endless stream: /dev/zero reads as data at any offset,
 * so a pass of a TiB of it cannot end before it is stopped. */
static kvmsaveMappedSum *
sumEndless(int *fd, const uint32_t *expect, size_t threads)
{
    g_autoptr(kvmsaveImageHeader) hdr = sparseHeader();

    *fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(*fd, 0);
    return kvmsaveMappedSumStart(*fd, "/dev/zero", false, hdr,
                                 ENDLESS_BYTES, expect, threads);
}

START_TEST(test_sparse_sum_stopped_returns_1)
{
    VIR_AUTOCLOSE fd = -1;
    kvmsaveMappedSum *m = sumEndless(&fd, NULL, 2);
    uint32_t *table = NULL;

    while (kvmsaveMappedSumDone(m) == 0)
        g_usleep(1000);
    ck_assert_uint_lt(kvmsaveMappedSumDone(m), ENDLESS_BYTES);
    ck_assert(!kvmsaveMappedSumFailed(m));
    ck_assert_int_eq(kvmsaveMappedSumFinish(m, true, &table), 1);
    ck_assert_ptr_null(table);
    KT_ASSERT_NO_ERROR();
}
END_TEST


START_TEST(test_sparse_sum_stopped_after_a_failure_returns_minus_1)
{
    /* Zeros everywhere, where the blocks' checksums are not 0. */
    g_autofree uint32_t *expect = g_new0(uint32_t, ENDLESS_BYTES / SP_BLOCK);
    VIR_AUTOCLOSE fd = -1;
    kvmsaveMappedSum *m = sumEndless(&fd, expect, 1);

    while (!kvmsaveMappedSumFailed(m))
        g_usleep(1000);
    ck_assert_int_eq(kvmsaveMappedSumFinish(m, true, NULL), -1);
    assertSparseBlockNamed(0);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "/dev/zero");
}
END_TEST


/* ---- the page index (since 1.5) ---- */

#define PAGEINDEX_VALUE_LEN 50  /* "%020llu %020llu %08x" */

static bool
bufIsZero(const unsigned char *p, size_t len)
{
    return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

/* testHeader() with room for a page index of @reserve bytes, holding the
 * @len bytes of @index (none: NULL). */
static kvmsaveImageHeader *
indexHeader(uint64_t reserve, const unsigned char *index, size_t len)
{
    kvmsaveImageHeader *hdr = testHeader(UUID_STR);

    hdr->indexReserve = reserve;
    hdr->indexLen = len;
    hdr->indexData = index ? bufDup(index, len) : NULL;
    return hdr;
}

/* Put @value (PAGEINDEX_VALUE_LEN bytes) into the PAGEINDEX field of the
 * header in @buf and fix its checksum. */
static void
setPageIndexValue(unsigned char *buf, const char *value)
{
    size_t f = headerFieldOffset(buf, KVMSAVE_IMAGE_FIELD_PAGEINDEX);

    ck_assert_uint_eq(strlen(value), PAGEINDEX_VALUE_LEN);
    memcpy(buf + f + 8, value, PAGEINDEX_VALUE_LEN);
    headerFixCrc(buf);
}

/* Expect the header in @buf of @len bytes to be refused with @substr. */
static void
assertHeaderRefused(const unsigned char *buf, size_t len, const char *substr)
{
    g_autoptr(kvmsaveImageHeader) dec = NULL;

    virResetLastError();
    ck_assert_int_eq(kvmsaveImageHeaderDecode(buf, len, "mem", NULL, &dec), -1);
    ck_assert_ptr_null(dec);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, substr);
}


START_TEST(test_pageindex_header_layout_and_round_trip)
{
    unsigned char index[1000];
    g_autoptr(kvmsaveImageHeader) hdr = NULL;
    g_autoptr(kvmsaveImageHeader) dec = NULL;
    g_autofree unsigned char *buf = NULL;
    g_autofree char *expect = NULL;
    size_t len;
    size_t needed = 0;
    size_t f;
    uint64_t offset;
    uint32_t fieldsLen;

    fillRandom(index, sizeof(index), 5);
    hdr = indexHeader(3 * ALIGN + 5, index, sizeof(index));
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), 0);
    ck_assert_uint_eq(rd32(buf + 8) >> 16, 5);
    fieldsLen = rd32(buf + 52);
    offset = alignUp(64 + fieldsLen + 4, ALIGN);
    /* The index at the first block past the checksum, its room rounded
     * up to whole blocks. */
    ck_assert_uint_eq(len, offset + 4 * ALIGN);
    ck_assert_uint_eq(rd32(buf + 12), len);
    ck_assert_uint_eq(hdr->headerSize, len);
    ck_assert_uint_eq(hdr->indexOffset, offset);
    ck_assert_uint_eq(hdr->indexCrc, kvmsaveCrc32c(0, index, sizeof(index)));
    ck_assert(memcmp(buf + offset, index, sizeof(index)) == 0);
    ck_assert(bufIsZero(buf + offset + sizeof(index), len - offset - sizeof(index)));

    /* Tag 10, not critical, OFFSET LENGTH CRC of a fixed width. */
    f = headerFieldOffset(buf, KVMSAVE_IMAGE_FIELD_PAGEINDEX);
    ck_assert_uint_eq(rd32(buf + f) >> 16, 0);
    ck_assert_uint_eq(rd32(buf + f + 4), PAGEINDEX_VALUE_LEN);
    expect = g_strdup_printf("%020llu %020llu %08x", (unsigned long long) offset,
                             (unsigned long long) sizeof(index), hdr->indexCrc);
    ck_assert(memcmp(buf + f + 8, expect, PAGEINDEX_VALUE_LEN) == 0);

    ck_assert_int_eq(kvmsaveImageHeaderDecode(buf, len, "mem", NULL, &dec), 0);
    assertStdHeader(dec);
    ck_assert_uint_eq(dec->indexOffset, offset);
    ck_assert_uint_eq(dec->indexLen, sizeof(index));
    ck_assert_uint_eq(dec->indexCrc, hdr->indexCrc);
    ck_assert_uint_eq(dec->indexReserve, 4 * ALIGN);
    ck_assert_ptr_null(dec->indexData);
    g_clear_pointer(&dec, kvmsaveImageHeaderFree);

    /* As 1.0 to 1.4 did, the decoder needs only the bytes up to the
     * header checksum: the index is padding to them. */
    ck_assert_int_eq(kvmsaveImageHeaderDecode(buf, 64 + fieldsLen + 4, "mem",
                                              &needed, &dec), 0);
    ck_assert_uint_eq(dec->indexLen, sizeof(index));
    KT_ASSERT_NO_ERROR();
}
END_TEST


/* A save writes the header with room for the index first and the index
 * once the chunks are written: both headers have the same size. */
START_TEST(test_pageindex_placeholder_and_final_header_same_size)
{
    unsigned char index[ALIGN + 1];
    g_autoptr(kvmsaveImageHeader) first = indexHeader(2 * ALIGN, NULL, 0);
    g_autoptr(kvmsaveImageHeader) last = indexHeader(2 * ALIGN, NULL, 0);
    g_autoptr(kvmsaveImageHeader) none = testHeader(UUID_STR);
    g_autofree unsigned char *a = NULL;
    g_autofree unsigned char *b = NULL;
    g_autofree unsigned char *c = NULL;
    size_t alen;
    size_t blen;
    size_t clen;
    size_t f;
    char value[PAGEINDEX_VALUE_LEN + 1];

    ck_assert_int_eq(kvmsaveImageHeaderEncode(first, &a, &alen), 0);
    ck_assert_int_eq(kvmsaveImageHeaderEncode(none, &c, &clen), 0);
    f = headerFieldOffset(a, KVMSAVE_IMAGE_FIELD_PAGEINDEX);
    g_snprintf(value, sizeof(value), "%020llu %020llu %08x",
               (unsigned long long) first->indexOffset, 0ULL, 0);
    ck_assert(memcmp(a + f + 8, value, PAGEINDEX_VALUE_LEN) == 0);
    ck_assert(bufIsZero(a + first->indexOffset, alen - first->indexOffset));
    /* The field's 64 bytes and the room. */
    ck_assert_uint_eq(rd32(a + 52), rd32(c + 52) + 64);
    ck_assert_uint_eq(alen, first->indexOffset + 2 * ALIGN);

    fillRandom(index, sizeof(index), 6);
    last->indexLen = sizeof(index);
    last->indexData = bufDup(index, sizeof(index));
    ck_assert_int_eq(kvmsaveImageHeaderEncode(last, &b, &blen), 0);
    ck_assert_uint_eq(blen, alen);
    ck_assert_uint_eq(last->indexOffset, first->indexOffset);
    ck_assert_uint_eq(rd32(b + 52), rd32(a + 52));
    ck_assert_uint_ne(last->crc, first->crc);

    /* It fills its room exactly; more does not fit. */
    last->indexReserve = sizeof(index);
    g_clear_pointer(&b, g_free);
    ck_assert_int_eq(kvmsaveImageHeaderEncode(last, &b, &blen), 0);
    ck_assert_uint_eq(blen, alen);
    last->indexLen++;
    g_clear_pointer(&b, g_free);
    ck_assert_int_eq(kvmsaveImageHeaderEncode(last, &b, &blen), -1);
    KT_ASSERT_ERROR(VIR_ERR_INTERNAL_ERROR, "invalid page index");
}
END_TEST


START_TEST(test_pageindex_header_limits_and_refusals)
{
    g_autoptr(kvmsaveImageHeader) hdr = indexHeader(KVMSAVE_IMAGE_HEADER_MAX - ALIGN, NULL, 0);
    g_autoptr(kvmsaveImageHeader) dec = NULL;
    g_autofree unsigned char *buf = NULL;
    g_autofree char *value = NULL;
    size_t len;

    /* The room takes the header up to 16 MiB, no further; the save asks
     * how much there is before it reserves any. */
    ck_assert_uint_eq(kvmsaveImageHeaderIndexRoom(hdr), KVMSAVE_IMAGE_HEADER_MAX - ALIGN);
    {
        g_autoptr(kvmsaveImageHeader) big = indexHeader(0, NULL, 0);
        size_t room;

        g_free(big->xml);
        big->xml = g_strnfill(2 * 1024 * 1024, 'x');
        room = kvmsaveImageHeaderIndexRoom(big);
        ck_assert_uint_lt(room, KVMSAVE_IMAGE_HEADER_MAX - 2 * 1024 * 1024);
        ck_assert_uint_gt(room, KVMSAVE_IMAGE_HEADER_MAX - 3 * 1024 * 1024);
        ck_assert_uint_eq(big->indexReserve, 0);
    }
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), 0);
    ck_assert_uint_eq(len, KVMSAVE_IMAGE_HEADER_MAX);
    ck_assert_int_eq(kvmsaveImageHeaderDecode(buf, len, "mem", NULL, &dec), 0);
    ck_assert_uint_eq(dec->indexReserve, KVMSAVE_IMAGE_HEADER_MAX - ALIGN);
    g_clear_pointer(&buf, g_free);
    hdr->indexReserve++;
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), -1);
    ck_assert_ptr_null(buf);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "no room for a page index");
    virResetLastError();
    hdr->indexReserve = G_MAXUINT64;
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "no room for a page index");

    /* Only an image of one stream of chunks has one. */
    virResetLastError();
    hdr->indexReserve = ALIGN;
    hdr->streams = 2;
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), -1);
    KT_ASSERT_ERROR(VIR_ERR_INTERNAL_ERROR, "invalid page index");
    hdr->streams = 1;
    hdr->mappedOffset = KVMSAVE_IMAGE_MAPPED_OFFSET;
    hdr->mappedBlock = KVMSAVE_IMAGE_MAPPED_BLOCK;
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), -1);
    KT_ASSERT_ERROR(VIR_ERR_INTERNAL_ERROR, "invalid page index");
    hdr->mappedOffset = 0;

    /* The decoder: OFFSET just past the checksum, the index inside the
     * header, numbers. */
    virResetLastError();
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), 0);
    ck_assert_uint_eq(len, 2 * ALIGN);
    value = g_strdup_printf("%020d %020d %08x", 2 * ALIGN, 0, 0);
    setPageIndexValue(buf, value);
    assertHeaderRefused(buf, len, "invalid page index field '00000000000000008192 ");
    g_free(value);
    value = g_strdup_printf("%020d %020d %08x", ALIGN, ALIGN + 1, 0);
    setPageIndexValue(buf, value);
    assertHeaderRefused(buf, len, "invalid page index field");
    setPageIndexValue(buf, "00000000000000004096 0000000000000000000x 00000000");
    assertHeaderRefused(buf, len, "invalid page index field");
    g_free(value);
    value = g_strdup_printf("%020d %020d %08x", ALIGN, ALIGN, 0);
    setPageIndexValue(buf, value);
    g_clear_pointer(&dec, kvmsaveImageHeaderFree);
    ck_assert_int_eq(kvmsaveImageHeaderDecode(buf, len, "mem", NULL, &dec), 0);
    ck_assert_uint_eq(dec->indexLen, ALIGN);
}
END_TEST


/* A PAGEINDEX field in a header of several streams or a sparse one. */
START_TEST(test_pageindex_header_of_several_streams_is_refused)
{
    g_autoptr(kvmsaveImageHeader) hdr = testHeader(UUID_STR);
    g_autofree unsigned char *buf = NULL;
    g_autofree unsigned char *ext = NULL;
    g_autofree char *value = NULL;
    size_t len;
    size_t elen;

    hdr->streams = 2;
    ck_assert_int_eq(kvmsaveImageHeaderEncode(hdr, &buf, &len), 0);
    /* The field's record has 64 bytes; the index would start at the
     * header's end and have no room. */
    value = g_strdup_printf("%020llu %020d %08x", (unsigned long long)
                            alignUp(64 + rd32(buf + 52) + 64 + 4, ALIGN), 0, 0);
    ext = headerWithExtraField(buf, KVMSAVE_IMAGE_FIELD_PAGEINDEX, 0, value, &elen);
    assertHeaderRefused(ext, elen, "a page index belongs to an image of one stream");
}
END_TEST


/* kvmsave 1.0 to 1.4 know no tag 10: it is an unknown field to them,
 * not critical, so they skip it, and the index's bytes are padding not
 * covered by the header checksum. Such a reader is this one with the
 * field's tag unknown to it. */
START_TEST(test_pageindex_field_is_skipped_by_older_readers)
{
    static const size_t sizes[] = { 65536, 3000 };
    g_autoptr(kvmsaveImageHeader) hdr = indexHeader(ALIGN, NULL, 0);
    g_autoptr(kvmsaveImageHeader) dec = NULL;
    g_autofree unsigned char *buf = NULL;
    g_autofree unsigned char *data = NULL;
    g_autofree unsigned char *index = NULL;
    kvmsaveImageTrailer tr;
    TestImage img;
    size_t len;
    size_t nread;
    size_t f;

    writeImageFull(&img, "old-reader.img", hdr, sizes, 2, 7, false, 300);
    buf = g_malloc(img.headerSize);
    filePeek(img.path, 0, buf, img.headerSize);
    f = headerFieldOffset(buf, KVMSAVE_IMAGE_FIELD_PAGEINDEX);
    ck_assert_uint_eq(rd32(buf + f) >> 16, 0);
    le16(buf + f, 99);
    headerFixCrc(buf);
    ck_assert_int_eq(kvmsaveImageHeaderDecode(buf, img.headerSize, "mem", NULL, &dec), 0);
    assertStdHeader(dec);
    ck_assert_uint_eq(dec->indexOffset, 0);

    /* The whole image reads as one without an index. */
    filePatch(img.path, 0, buf, img.headerSize);
    readTrailer(&img, &tr);
    tr.headerCrc = dec->crc;
    writeTrailer(&img, &tr);
    ck_assert_msg(readImage(img.path, false, &data, &len, &nread) == 0, "%s",
                  virGetLastErrorMessage());
    ck_assert_uint_eq(len, img.dataLen);
    ck_assert(memcmp(data, img.data, len) == 0);
    {
        g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(img.path, KVMSAVE_IMAGE_IO_CACHED);

        ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
        ck_assert_int_eq(kvmsaveImageReaderPageIndex(r, &index, &len), 0);
        ck_assert_ptr_null(index);
        ck_assert_int_eq(kvmsaveImageVerify(r), 0);
    }
    testImageClear(&img);
}
END_TEST


/* Open @img, check that its page index reads back as written (@io) and
 * that its stream and checksums are intact. */
static void
assertPageIndex(const TestImage *img, kvmsaveImageIO io)
{
    g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(img->path, io);
    g_autofree unsigned char *index = NULL;
    g_autofree unsigned char *data = NULL;
    size_t len;
    size_t nread;

    ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
    ck_assert_uint_eq(kvmsaveImageReaderHeader(r)->indexLen, img->indexLen);
    ck_assert_int_eq(kvmsaveImageReaderPageIndex(r, &index, &len),
                     img->indexLen ? 1 : 0);
    ck_assert_uint_eq(len, img->indexLen);
    ck_assert(img->indexLen == 0 || memcmp(index, img->index, len) == 0);
    /* These indexes are made-up bytes, which verify proves wrong against
     * the stream (pageindextest.c verifies real ones). */
    if (img->indexLen) {
        ck_assert_int_eq(kvmsaveImageVerify(r), -1);
        KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "page index");
        virResetLastError();
    } else {
        ck_assert_int_eq(kvmsaveImageVerify(r), 0);
    }
    ck_assert_msg(readImageIO(img->path, io, &data, &len, &nread) == 0, "%s",
                  virGetLastErrorMessage());
    ck_assert_uint_eq(len, img->dataLen);
    ck_assert(memcmp(data, img->data, len) == 0);
    KT_ASSERT_NO_ERROR();
}


/* Drain, the chunk offsets, the header replaced with the index, Finish:
 * through the page cache and O_DIRECT, with an index in one block and one
 * larger than the writer's buffer. */
START_TEST(test_pageindex_written_once_the_chunks_are)
{
    static const size_t sizes[] = { KVMSAVE_IMAGE_CHUNK_SIZE, 5000, 1, 77 };
    const size_t big = 9 * 1024 * 1024 + 3;
    bool direct = scratchHasDirectIO();
    TestImage img;

    {
        g_autoptr(kvmsaveImageHeader) hdr = indexHeader(ALIGN, NULL, 0);

        writeImageFull(&img, "index.img", hdr, sizes, 4, 1, false, 200);
        assertPageIndex(&img, KVMSAVE_IMAGE_IO_CACHED);
        if (direct)
            assertPageIndex(&img, KVMSAVE_IMAGE_IO_DIRECT);
        testImageClear(&img);
    }
    {
        g_autoptr(kvmsaveImageHeader) hdr = indexHeader(big, NULL, 0);

        writeImageFull(&img, "index-big.img", hdr, sizes, 4, 2, false, big);
        assertPageIndex(&img, KVMSAVE_IMAGE_IO_CACHED);
        testImageClear(&img);
    }
    if (direct) {
        g_autoptr(kvmsaveImageHeader) hdr = indexHeader(big, NULL, 0);

        writeImageFull(&img, "index-direct.img", hdr, sizes, 4, 3, true, big - 5000);
        assertPageIndex(&img, KVMSAVE_IMAGE_IO_STREAM);
        testImageClear(&img);
    }
}
END_TEST


/* LENGTH 0: room, no index (the save gave up on it, or the image was
 * rewritten). */
START_TEST(test_pageindex_length_0_is_none)
{
    static const size_t sizes[] = { 4096, 10 };
    g_autoptr(kvmsaveImageHeader) hdr = indexHeader(3 * ALIGN, NULL, 0);
    TestImage img;

    writeImageFull(&img, "index-none.img", hdr, sizes, 2, 4, false, 0);
    ck_assert_uint_eq(img.headerSize, ALIGN + 3 * ALIGN);
    assertPageIndex(&img, KVMSAVE_IMAGE_IO_CACHED);
    {
        g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(img.path, KVMSAVE_IMAGE_IO_CACHED);

        ck_assert_uint_eq(kvmsaveImageReaderHeader(r)->indexReserve, 3 * ALIGN);
    }
    testImageClear(&img);
}
END_TEST


/* A damaged index is found when it is read, and by verify; the stream
 * reads as before, so a restore without it (and by kvmsave 1.4) works. */
START_TEST(test_pageindex_damaged_is_named)
{
    static const size_t sizes[] = { 65536, 65536, 10 };
    g_autoptr(kvmsaveImageHeader) hdr = indexHeader(ALIGN, NULL, 0);
    g_autoptr(kvmsaveImageReader) r = NULL;
    g_autofree unsigned char *index = NULL;
    g_autofree unsigned char *data = NULL;
    TestImage img;
    size_t len;
    size_t nread;

    writeImageFull(&img, "index-bad.img", hdr, sizes, 3, 5, false, 1234);
    fileFlip(img.path, hdr->indexOffset + 1000, 0x10);
    r = kvmsaveImageOpen(img.path, KVMSAVE_IMAGE_IO_CACHED);
    ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
    ck_assert_int_eq(kvmsaveImageReaderPageIndex(r, &index, &len), -1);
    ck_assert_ptr_null(index);
    ck_assert_uint_eq(len, 0);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "page index checksum mismatch");
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, img.path);

    virResetLastError();
    ck_assert_int_eq(verifyImage(img.path, KVMSAVE_IMAGE_IO_CACHED), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "page index checksum mismatch");

    virResetLastError();
    ck_assert_msg(readImage(img.path, false, &data, &len, &nread) == 0, "%s",
                  virGetLastErrorMessage());
    ck_assert(len == img.dataLen && memcmp(data, img.data, len) == 0);
    testImageClear(&img);
}
END_TEST


/* save-image-define keeps the room, but an index that does not decode
 * (these are made-up bytes; pageindextest.c keeps real ones) it drops:
 * the new image restores eagerly. */
START_TEST(test_pageindex_rewrite_drops_an_index_that_does_not_decode)
{
    static const size_t sizes[] = { 65536, 777 };
    g_autoptr(kvmsaveImageHeader) hdr = indexHeader(2 * ALIGN, NULL, 0);
    g_autofree char *dst = scratchPath("index-rewritten.img");
    g_autofree unsigned char *data = NULL;
    TestImage img;
    size_t len;
    size_t nread;

    writeImageFull(&img, "index-src.img", hdr, sizes, 2, 6, false, 500);
    ck_assert_msg(rewriteImage(img.path, KVMSAVE_IMAGE_IO_CACHED, dst) == 0,
                  "%s", virGetLastErrorMessage());
    {
        g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(dst, KVMSAVE_IMAGE_IO_CACHED);
        g_autofree unsigned char *index = NULL;
        const kvmsaveImageHeader *h;

        ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
        h = kvmsaveImageReaderHeader(r);
        ck_assert_uint_eq(h->headerSize, img.headerSize);
        ck_assert_uint_eq(h->indexReserve, 2 * ALIGN);
        ck_assert_uint_eq(h->indexLen, 0);
        ck_assert_int_eq(kvmsaveImageReaderPageIndex(r, &index, &len), 0);
        ck_assert_int_eq(kvmsaveImageVerify(r), 0);
    }
    ck_assert_int_eq(readImage(dst, false, &data, &len, &nread), 0);
    ck_assert(len == img.dataLen && memcmp(data, img.data, len) == 0);
    testImageClear(&img);
}
END_TEST


/* The chunk checks on their own, as a reader that finds a chunk through
 * the page index uses them: a raw chunk of the standard image and a zstd
 * one. */
START_TEST(test_chunk_checks_on_their_own)
{
    g_autofree char *zpath = scratchPath("zstd-one.img");
    g_autoptr(kvmsaveImageReader) r = NULL;
    unsigned char head[KVMSAVE_IMAGE_CHUNK_HEADER_LEN];
    g_autofree unsigned char *stored = NULL;
    g_autofree unsigned char *all = NULL;
    g_autofree unsigned char *out = NULL;
    kvmsaveImageChunkHeader ch;
    const unsigned char *data;
    void *dctx = NULL;
    TestImage img;
    uint64_t off;
    size_t len;

    writeStdImage(&img, "chunk-checks.img");
    off = img.chunkOff[2];
    filePeek(img.path, off, head, sizeof(head));
    ck_assert_int_eq(kvmsaveImageChunkCheckHeader(head, img.path, 2, off, img.dataEnd,
                                                  1, &ch), 0);
    ck_assert_uint_eq(ch.stored, stdSizes[2]);
    stored = g_malloc(ch.stored);
    filePeek(img.path, off + sizeof(head), stored, ch.stored);
    ck_assert_int_eq(kvmsaveImageChunkDecode(&ch, img.path, off, stored, &dctx, &out,
                                             &data, &len), 0);
    ck_assert(data == stored && len == stdSizes[2]);
    ck_assert(memcmp(data, img.data + stdSizes[0] + stdSizes[1], len) == 0);
    ck_assert_ptr_null(out);

    ck_assert_int_eq(kvmsaveImageChunkCheckHeader(head, img.path, 3, off, img.dataEnd,
                                                  1, &ch), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "is numbered 2, expected 3");
    virResetLastError();
    ck_assert_int_eq(kvmsaveImageChunkCheckHeader(head, img.path, 2, off, off + 31,
                                                  1, &ch), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "is cut short by the end of the data");
    virResetLastError();
    ck_assert_int_eq(kvmsaveImageChunkCheckHeader(head, img.path, 2, off, off + 32 + 100,
                                                  1, &ch), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "has an invalid length 100003");
    virResetLastError();
    ch.stored = stdSizes[2];
    stored[7] ^= 1;
    ck_assert_int_eq(kvmsaveImageChunkDecode(&ch, img.path, off, stored, &dctx, &out,
                                             &data, &len), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "chunk 2 at offset");
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "data checksum mismatch");
    virResetLastError();
    testImageClear(&img);

    /* zstd: decoded into @out with @dctx, made on first use. */
    all = writeZstdImage(zpath, "t", 65536, &len);
    r = kvmsaveImageOpen(zpath, KVMSAVE_IMAGE_IO_CACHED);
    ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
    filePeek(zpath, ALIGN, head, sizeof(head));
    ck_assert_int_eq(kvmsaveImageChunkCheckHeader(head, zpath, 0, ALIGN,
                                                  kvmsaveImageReaderTrailer(r)->dataEnd,
                                                  1, &ch), 0);
    ck_assert_uint_eq(ch.encoding, KVMSAVE_IMAGE_ENCODING_ZSTD);
    g_free(stored);
    stored = g_malloc(ch.stored);
    filePeek(zpath, ALIGN + sizeof(head), stored, ch.stored);
    ck_assert_int_eq(kvmsaveImageChunkDecode(&ch, zpath, ALIGN, stored, &dctx, &out,
                                             &data, &len), 0);
    ck_assert(data == out && len == 65536 && memcmp(data, all, len) == 0);
    ck_assert_ptr_nonnull(dctx);
    kvmsaveImageChunkFreeCtx(dctx);
    KT_ASSERT_NO_ERROR();
}
END_TEST


static Suite *
imageSuite(void)
{
    Suite *s = suite_create("kvmsave_image");
    TCase *tc;

    tc = ktTCase("crc32c", 30);
    tcase_add_test(tc, test_crc32c_known_answers);
    tcase_add_test(tc, test_crc32c_split_feed_equals_one_shot);
    suite_add_tcase(s, tc);

    tc = ktTCase("round_trip", 120);
    tcase_add_unchecked_fixture(tc, scratchSetup, scratchTeardown);
    tcase_add_test(tc, test_round_trip_header_and_data);
    tcase_add_test(tc, test_streams_each_reader_returns_its_own_stream);
    tcase_add_test(tc, test_streams_readers_of_a_restore_bypass_the_page_cache);
    tcase_add_test(tc, test_streams_written_from_several_threads_read_back_in_order);
    tcase_add_test(tc, test_streams_field_is_critical_and_checked);
    tcase_add_test(tc, test_read_refuses_chunk_of_a_stream_the_image_lacks);
    tcase_add_test(tc, test_zstd_round_trip_shrinks_and_keeps_random_raw);
    tcase_add_test(tc, test_zstd_chunk_corruption_is_refused);
    tcase_add_test(tc, test_image_format_names);
    tcase_add_test(tc, test_round_trip_empty_stream);
    tcase_add_test(tc, test_round_trip_empty_chunks);
    tcase_add_test(tc, test_round_trip_trailer_alignment_edges);
    tcase_add_test(tc, test_round_trip_large_stream_crosses_buffers);
    tcase_add_test(tc, test_round_trip_direct_io);
    tcase_add_test(tc, test_header_replaced_at_finish);
    tcase_add_test(tc, test_round_trip_streaming_reads_direct_where_possible);
    tcase_add_test(tc, test_round_trip_minimal_header);
    tcase_add_test(tc, test_round_trip_multi_block_header);
    tcase_add_test(tc, test_writer_reports_write_failure);
    tcase_add_test(tc, test_pipeline_image_is_the_same_for_any_thread_count);
    tcase_add_test(tc, test_pipeline_reports_the_first_bad_chunk_in_order);
    tcase_add_test(tc, test_pipeline_reader_freed_mid_stream);
    suite_add_tcase(s, tc);

    tc = ktTCase("corruption", 120);
    tcase_add_unchecked_fixture(tc, scratchSetup, scratchTeardown);
    tcase_add_test(tc, test_open_refuses_foreign_files);
    tcase_add_test(tc, test_open_refuses_newer_major_version);
    tcase_add_test(tc, test_open_refuses_header_byte_flips);
    tcase_add_test(tc, test_open_refuses_corrupt_header_size);
    tcase_add_test(tc, test_open_refuses_trailer_byte_flips);
    tcase_add_test(tc, test_read_refuses_chunk_header_byte_flips);
    tcase_add_test(tc, test_read_refuses_consistent_but_wrong_chunk_header);
    tcase_add_test(tc, test_read_refuses_payload_byte_flip);
    tcase_add_test(tc, test_truncated_image_never_reads_whole);
    tcase_add_test(tc, test_truncated_image_never_reads_whole_direct_io);
    tcase_add_test(tc, test_direct_io_names_foreign_files);
    tcase_add_test(tc, test_open_refuses_unaligned_size);
    tcase_add_test(tc, test_truncated_then_zero_extended_refused);
    tcase_add_test(tc, test_read_refuses_trailer_with_wrong_totals);
    tcase_add_test(tc, test_read_refuses_trailer_with_wrong_data_end);
    tcase_add_test(tc, test_open_refuses_trailer_of_another_image);
    suite_add_tcase(s, tc);

    tc = ktTCase("codec", 30);
    tcase_add_unchecked_fixture(tc, scratchSetup, scratchTeardown);
    tcase_add_test(tc, test_header_encode_layout_and_decode);
    tcase_add_test(tc, test_header_decode_short_buffer_returns_1);
    tcase_add_test(tc, test_header_decode_skips_unknown_optional_field);
    tcase_add_test(tc, test_header_decode_refuses_unknown_critical_field);
    tcase_add_test(tc, test_header_decode_refuses_malformed_fields);
    tcase_add_test(tc, test_header_encode_refuses_missing_or_huge_xml);
    tcase_add_test(tc, test_trailer_codec);
    tcase_add_test(tc, test_sparse_header_mapped_field_round_trips_as_critical);
    tcase_add_test(tc, test_sparse_header_refuses_invalid_layout);
    tcase_add_test(tc, test_sparse_header_with_several_streams_is_refused);
    tcase_add_test(tc, test_sparse_header_encode_refuses_xml_past_the_stream);
    suite_add_tcase(s, tc);

    tc = ktTCase("sparse", 120);
    tcase_add_unchecked_fixture(tc, scratchSetup, scratchTeardown);
    tcase_add_test(tc, test_sparse_image_layout_matches_the_format);
    tcase_add_test(tc, test_sparse_image_opens_and_verifies);
    tcase_add_test(tc, test_sparse_image_refuses_chunk_reads);
    tcase_add_test(tc, test_sparse_header_larger_than_the_write_buffer_is_written_whole);
    tcase_add_test(tc, test_chunk_image_has_no_mapped_table);
    tcase_add_test(tc, test_sparse_verify_names_the_damaged_block);
    tcase_add_test(tc, test_sparse_verify_catches_data_in_a_hole);
    tcase_add_test(tc, test_sparse_verify_catches_data_lost_to_a_hole);
    tcase_add_test(tc, test_sparse_open_refuses_damaged_table);
    tcase_add_test(tc, test_sparse_open_refuses_trailer_that_does_not_fit_the_table);
    tcase_add_test(tc, test_sparse_open_refuses_truncated_image);
    tcase_add_test(tc, test_sparse_rewrite_keeps_stream_and_holes);
    tcase_add_test(tc, test_sparse_rewrite_refuses_damaged_block);
    tcase_add_test(tc, test_sparse_rewrite_through_direct_reader);
    tcase_add_test(tc, test_sparse_sum_done_reaches_stream_bytes);
    tcase_add_test(tc, test_sparse_sum_stopped_returns_1);
    tcase_add_test(tc, test_sparse_sum_stopped_after_a_failure_returns_minus_1);
    suite_add_tcase(s, tc);

    tc = ktTCase("pageindex", 120);
    tcase_add_unchecked_fixture(tc, scratchSetup, scratchTeardown);
    tcase_add_test(tc, test_pageindex_header_layout_and_round_trip);
    tcase_add_test(tc, test_pageindex_placeholder_and_final_header_same_size);
    tcase_add_test(tc, test_pageindex_header_limits_and_refusals);
    tcase_add_test(tc, test_pageindex_header_of_several_streams_is_refused);
    tcase_add_test(tc, test_pageindex_field_is_skipped_by_older_readers);
    tcase_add_test(tc, test_pageindex_written_once_the_chunks_are);
    tcase_add_test(tc, test_pageindex_length_0_is_none);
    tcase_add_test(tc, test_pageindex_damaged_is_named);
    tcase_add_test(tc, test_pageindex_rewrite_drops_an_index_that_does_not_decode);
    tcase_add_test(tc, test_chunk_checks_on_their_own);
    suite_add_tcase(s, tc);

    return s;
}


int
main(void)
{
    return ktRunSuite(imageSuite);
}
