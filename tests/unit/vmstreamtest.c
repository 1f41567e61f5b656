/*
 * vmstreamtest.c: unit tests of the walk through QEMU migration streams
 * (kvmsave_vmstream.c)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * tests/unit/data/ holds whole streams real QEMUs wrote of a paused
 * 16 MiB "pc" machine with an all-zero 64 KiB BIOS and no devices but
 * the machine's own (gzipped): QEMU 7.2 (Debian 12) through "exec:cat",
 * QEMU 10.0 (Debian 13) the same way, and QEMU 10.0 with mapped-ram to
 * "file:...,offset=0x100000", as kvmsave's sparse images hold it. Small
 * streams are built here byte by byte for the cases QEMU does not write.
 *
 * The postcopy source's encoder (kvmsave_postcopy.c) is checked by
 * walking what it writes with the same parser, which skips commands, and
 * by return-path messages built as QEMU sends them.
 */
#include <config.h>

#include <gio/gio.h>

#include "testutil.h"
#include "scratch.h"
#include "kvmsave_postcopy.h"
#include "kvmsave_vmstream.h"

#define MIB (1024 * 1024)
/* The test machine's RAM blocks: pc.ram, ACPI tables, pc.rom, pc.bios,
 * the table loader and the RSDP. */
#define MACHINE_PAGES ((16 * MIB + 128 * 1024 + 128 * 1024 + 64 * 1024 + \
                        4096 + 4096) / 4096)

typedef struct {
    GHashTable *seen;           /* "block:page" */
    size_t data;
    size_t zero;
    int fd;
} PageCount;

static int
countPage(const kvmsaveVMStream *vm G_GNUC_UNUSED, const kvmsaveVMRecord *rec,
          void *opaque)
{
    size_t block = rec->block;
    uint64_t page = rec->page;
    uint64_t pos = rec->data ? rec->payload : 0;
    PageCount *pc = opaque;
    char *key = g_strdup_printf("%zu:%llu", block, (unsigned long long) page);

    ck_assert_msg(g_hash_table_add(pc->seen, key), "page %s twice", key);
    if (pos) {
        unsigned char data[4096];

        pc->data++;
        ck_assert_int_eq(pread(pc->fd, data, sizeof(data), pos), sizeof(data));
    } else {
        pc->zero++;
    }
    return 0;
}


static void
checkMachineBlocks(const kvmsaveVMStream *vm)
{
    ck_assert_uint_eq(vm->nblocks, 6);
    ck_assert_str_eq(vm->blocks[0].name, "pc.ram");
    ck_assert_uint_eq(vm->blocks[0].length, 16 * MIB);
    ck_assert_int_eq(kvmsaveVMStreamFindBlock(vm, "pc.bios"), 3);
    ck_assert_uint_eq(vm->blocks[3].length, 64 * 1024);
    ck_assert_int_eq(kvmsaveVMStreamFindBlock(vm, "nonesuch"), -1);
    ck_assert(vm->footers);
}


/* The device sections begin with a whole section and end at
 * QEMU_VM_EOF. */
static void
checkDeviceRange(const char *path, const kvmsaveVMStream *vm)
{
    unsigned char b;

    ck_assert_uint_lt(vm->devStart, vm->devEnd);
    filePeek(path, vm->devStart, &b, 1);
    ck_assert_uint_eq(b, 0x04);
    filePeek(path, vm->devEnd, &b, 1);
    ck_assert_uint_eq(b, 0x00);
}


static void
checkPlainStream(const char *name, const char *machine)
{
    g_autofree char *path = scratchUnpackData(name);
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                        g_free, NULL);
    PageCount pc = { .seen = seen };
    g_autoptr(kvmsaveVMStream) vm = NULL;

    pc.fd = open(path, O_RDONLY);
    ck_assert_int_ge(pc.fd, 0);
    vm = kvmsaveVMStreamParse(pc.fd, path, 0, fileSize(path), countPage, &pc);
    close(pc.fd);
    KT_ASSERT_NO_ERROR();
    ck_assert_ptr_nonnull(vm);
    ck_assert_str_eq(vm->machine, machine);
    ck_assert(!vm->mapped);
    ck_assert(vm->vmdesc);
    checkMachineBlocks(vm);
    /* Every page of a paused guest is sent once: its few data pages,
     * the rest as zero pages. */
    ck_assert_uint_eq(g_hash_table_size(seen), MACHINE_PAGES);
    ck_assert_uint_eq(vm->pages, MACHINE_PAGES);
    ck_assert_uint_ge(pc.data, 1);
    ck_assert_uint_eq(pc.data + pc.zero, MACHINE_PAGES);
    checkDeviceRange(path, vm);
}


START_TEST(test_qemu_7_2_plain_stream_every_page_once)
{
    checkPlainStream("qemu-7.2-plain.vmstream", "pc-i440fx-7.2");
}
END_TEST


START_TEST(test_qemu_10_0_plain_stream_every_page_once)
{
    checkPlainStream("qemu-10.0-plain.vmstream", "pc-i440fx-10.0");
}
END_TEST


START_TEST(test_qemu_10_0_mapped_ram_stream_pages_at_their_offsets)
{
    g_autofree char *path = scratchUnpackData("qemu-10.0-mapped.vmstream");
    g_autoptr(kvmsaveVMStream) vm = NULL;
    int fd = open(path, O_RDONLY);
    size_t i;

    ck_assert_int_ge(fd, 0);
    vm = kvmsaveVMStreamParse(fd, path, MIB, fileSize(path), NULL, NULL);
    close(fd);
    KT_ASSERT_NO_ERROR();
    ck_assert_ptr_nonnull(vm);
    ck_assert(vm->mapped);
    ck_assert(g_strv_contains((const char * const *) vm->caps, "mapped-ram"));
    checkMachineBlocks(vm);
    ck_assert_uint_eq(vm->pages, 0);
    for (i = 0; i < vm->nblocks; i++) {
        const kvmsaveVMBlock *b = &vm->blocks[i];

        /* QEMU aligns each block's pages to 1 MiB, after its bitmap. */
        ck_assert_uint_eq(b->pagesOffset % MIB, 0);
        ck_assert_uint_gt(b->bitmapOffset, MIB);
        ck_assert_uint_le(b->bitmapOffset + b->length / 4096 / 8, b->pagesOffset);
        if (i > 0)
            ck_assert_uint_ge(b->bitmapOffset,
                              vm->blocks[i - 1].pagesOffset + vm->blocks[i - 1].length);
    }
    ck_assert_uint_gt(vm->devStart,
                      vm->blocks[vm->nblocks - 1].pagesOffset +
                      vm->blocks[vm->nblocks - 1].length);
    checkDeviceRange(path, vm);
}
END_TEST


/* ---- streams built here ---- */

static void
put8(GByteArray *b, uint8_t v)
{
    g_byte_array_append(b, &v, 1);
}

static void
put32(GByteArray *b, uint32_t v)
{
    v = GUINT32_TO_BE(v);
    g_byte_array_append(b, (guint8 *) &v, 4);
}

static void
put64(GByteArray *b, uint64_t v)
{
    v = GUINT64_TO_BE(v);
    g_byte_array_append(b, (guint8 *) &v, 8);
}

static void
putStr(GByteArray *b, const char *s)
{
    put8(b, strlen(s));
    g_byte_array_append(b, (const guint8 *) s, strlen(s));
}

static void
putFooter(GByteArray *b, uint32_t id)
{
    put8(b, 0x7e);
    put32(b, id);
}


/* A stream of one 8 KiB block "blk": a data page and a zero page, then
 * @flags (0: none) as one more record, a device section "dev" of three
 * bytes, EOF, and QEMU's description if @vmdesc. */
static GByteArray *
buildStream(uint64_t flags, bool vmdesc, bool split)
{
    GByteArray *b = g_byte_array_new();
    unsigned char page[4096];
    const char *json = "{\"page_size\": 4096, \"devices\": []}";

    memset(page, 0xa5, sizeof(page));
    put32(b, 0x5145564d);
    put32(b, 3);
    put8(b, 0x07);                      /* configuration */
    put32(b, 2);
    g_byte_array_append(b, (const guint8 *) "pc", 2);
    put8(b, 0x01);                      /* RAM's setup */
    put32(b, 1);
    putStr(b, "ram");
    put32(b, 0);
    put32(b, 4);
    put64(b, 8192 | 0x04);
    putStr(b, "blk");
    put64(b, 8192);
    put64(b, 0x10);
    putFooter(b, 1);
    put8(b, 0x02);                      /* RAM's pages */
    put32(b, 1);
    put64(b, 0x08);
    putStr(b, "blk");
    g_byte_array_append(b, page, sizeof(page));
    if (split) {                        /* the next record in a new section */
        put64(b, 0x10);
        putFooter(b, 1);
        put8(b, 0x02);
        put32(b, 1);
    }
    put64(b, 4096 | 0x02 | 0x20);
    put8(b, 0);
    if (flags)
        put64(b, flags | 0x20);
    put64(b, 0x10);
    putFooter(b, 1);
    put8(b, 0x03);
    put32(b, 1);
    put64(b, 0x10);
    putFooter(b, 1);
    put8(b, 0x04);                      /* a device */
    put32(b, 2);
    putStr(b, "dev");
    put32(b, 0);
    put32(b, 1);
    g_byte_array_append(b, (const guint8 *) "\x01\x02\x03", 3);
    putFooter(b, 2);
    put8(b, 0x00);
    if (vmdesc) {
        put8(b, 0x06);
        put32(b, strlen(json));
        g_byte_array_append(b, (const guint8 *) json, strlen(json));
    }
    return b;
}


static kvmsaveVMStream *
parseBuilt(GByteArray *b, const char *name, uint64_t len)
{
    g_autofree char *path = scratchPath(name);
    kvmsaveVMStream *vm;
    int fd;

    fileWrite(path, b->data, b->len);
    fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    vm = kvmsaveVMStreamParse(fd, path, 0, len, NULL, NULL);
    close(fd);
    return vm;
}


START_TEST(test_device_range_found_with_and_without_description)
{
    g_autoptr(GByteArray) with = buildStream(0, true, false);
    g_autoptr(GByteArray) without = buildStream(0, false, false);
    g_autoptr(kvmsaveVMStream) a = parseBuilt(with, "with", with->len);
    g_autoptr(kvmsaveVMStream) b = parseBuilt(without, "without", without->len);

    KT_ASSERT_NO_ERROR();
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert(a->vmdesc);
    ck_assert(!b->vmdesc);
    ck_assert_uint_eq(b->devEnd, without->len - 1);
    ck_assert_uint_eq(a->devStart, b->devStart);
    ck_assert_uint_eq(a->devEnd, b->devEnd);
    /* The device section: type, id, "dev", instance, version, 3 bytes,
     * footer. */
    ck_assert_uint_eq(b->devEnd - b->devStart, 1 + 4 + 4 + 4 + 4 + 3 + 5);
    ck_assert_uint_eq(b->pages, 2);
    ck_assert_str_eq(b->machine, "pc");
}
END_TEST


/* QEMU 7.2 names a block only when it changes (save_page_header), and
 * forgets the last one only at setup: a RAM section may begin with a
 * record that continues the block of the section before. */
START_TEST(test_block_continues_across_ram_sections)
{
    g_autoptr(GByteArray) b = buildStream(0, true, true);
    g_autofree char *path = scratchPath("split");
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                       g_free, NULL);
    PageCount pc = { .seen = seen };
    g_autoptr(kvmsaveVMStream) vm = NULL;

    fileWrite(path, b->data, b->len);
    pc.fd = open(path, O_RDONLY);
    ck_assert_int_ge(pc.fd, 0);
    vm = kvmsaveVMStreamParse(pc.fd, path, 0, b->len, countPage, &pc);
    close(pc.fd);
    KT_ASSERT_NO_ERROR();
    ck_assert_ptr_nonnull(vm);
    ck_assert_uint_eq(vm->pages, 2);
    ck_assert_uint_eq(pc.data, 1);
    ck_assert_uint_eq(pc.zero, 1);
    ck_assert(g_hash_table_contains(seen, "0:1"));
}
END_TEST


START_TEST(test_compressed_pages_refused_as_unsupported)
{
    g_autoptr(GByteArray) s = buildStream(0x100, true, false);
    g_autoptr(kvmsaveVMStream) vm = parseBuilt(s, "compressed", s->len);

    ck_assert_ptr_null(vm);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_UNSUPPORTED, "flags 0x100");
}
END_TEST


START_TEST(test_truncated_stream_refused)
{
    g_autoptr(GByteArray) s = buildStream(0, true, false);
    g_autoptr(kvmsaveVMStream) cut = parseBuilt(s, "cut", s->len - 10);
    g_autoptr(kvmsaveVMStream) early = NULL;

    ck_assert_ptr_null(cut);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "does not end with QEMU_VM_EOF");
    virResetLastError();
    early = parseBuilt(s, "early", 100);
    ck_assert_ptr_null(early);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "ends too early");
}
END_TEST


START_TEST(test_not_a_stream_refused)
{
    g_autoptr(GByteArray) s = buildStream(0, true, false);
    g_autoptr(kvmsaveVMStream) vm = NULL;

    s->data[3] ^= 1;
    vm = parseBuilt(s, "magic", s->len);
    ck_assert_ptr_null(vm);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "no QEMU migration stream");
}
END_TEST



/* ---- byte sources and the records they yield ---- */

/* Views of a stream in memory, of random sizes up to maxView; with
 * forward, each view must start at or after the one before. */
typedef struct {
    const unsigned char *data;
    size_t len;
    GRand *rand;
    size_t maxView;
    bool forward;
    uint64_t last;
    size_t views;
} MemSource;

static int
memView(void *opaque, uint64_t pos, size_t want, const unsigned char **p,
        size_t *len)
{
    MemSource *m = opaque;

    ck_assert_uint_lt(pos, m->len);
    ck_assert_uint_ge(want, 1);
    if (m->forward)
        ck_assert_uint_ge(pos, m->last);
    m->last = pos;
    m->views++;
    *p = m->data + pos;
    *len = MIN(m->len - pos, (size_t) g_rand_int_range(m->rand, 1, m->maxView + 1));
    return 0;
}


static int
keepRecord(const kvmsaveVMStream *vm G_GNUC_UNUSED, const kvmsaveVMRecord *rec,
           void *opaque)
{
    g_array_append_val((GArray *) opaque, *rec);
    return 0;
}


static int
noRecord(const kvmsaveVMStream *vm G_GNUC_UNUSED,
         const kvmsaveVMRecord *rec G_GNUC_UNUSED, void *opaque G_GNUC_UNUSED)
{
    ck_abort_msg("a record was walked");
    return -1;
}


static void
checkSameRecords(GArray *a, GArray *b)
{
    size_t i;

    ck_assert_uint_eq(a->len, b->len);
    for (i = 0; i < a->len; i++) {
        const kvmsaveVMRecord *x = &g_array_index(a, kvmsaveVMRecord, i);
        const kvmsaveVMRecord *y = &g_array_index(b, kvmsaveVMRecord, i);

        ck_assert_uint_eq(x->block, y->block);
        ck_assert_uint_eq(x->page, y->page);
        ck_assert_uint_eq(x->record, y->record);
        ck_assert_uint_eq(x->payload, y->payload);
        ck_assert_int_eq(x->data, y->data);
        ck_assert_int_eq(x->named, y->named);
    }
}


/* Walk the whole file @path of @len bytes with pread, keeping every
 * record in @recs. */
static kvmsaveVMStream *
walkKeeping(const char *path, size_t len, GArray *recs)
{
    kvmsaveVMStream *vm;
    int fd = open(path, O_RDONLY);

    ck_assert_int_ge(fd, 0);
    vm = kvmsaveVMStreamParse(fd, path, 0, len, keepRecord, recs);
    close(fd);
    KT_ASSERT_NO_ERROR();
    ck_assert_ptr_nonnull(vm);
    return vm;
}


static void
checkViewsWalkAsPread(const char *name)
{
    g_autofree char *path = scratchUnpackData(name);
    size_t len;
    g_autofree unsigned char *data = fileRead(path, &len);
    g_autoptr(GArray) want = g_array_new(false, false, sizeof(kvmsaveVMRecord));
    g_autoptr(kvmsaveVMStream) ref = walkKeeping(path, len, want);
    size_t maxViews[] = { 1, 7, 4097, 70000 };
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(maxViews); i++) {
        g_autoptr(GArray) got = g_array_new(false, false, sizeof(kvmsaveVMRecord));
        g_autoptr(kvmsaveVMStream) vm = NULL;
        MemSource m = { data, len, g_rand_new_with_seed(i), maxViews[i], true };
        kvmsaveVMSource src = { memView, &m };

        vm = kvmsaveVMStreamParseFrom(&src, path, 0, len, KVMSAVE_VM_PARSE_NO_END,
                                      keepRecord, got);
        KT_ASSERT_NO_ERROR();
        ck_assert_ptr_nonnull(vm);
        ck_assert_uint_eq(vm->configEnd, ref->configEnd);
        ck_assert_uint_eq(vm->devStart, ref->devStart);
        ck_assert_uint_eq(vm->devEnd, 0);
        ck_assert_uint_eq(vm->pages, ref->pages);
        ck_assert_int_eq(vm->ramEnded, ref->ramEnded);
        checkSameRecords(want, got);
        m.forward = false;
        ck_assert_int_eq(kvmsaveVMStreamFindEnd(&src, path, len, vm), 0);
        ck_assert_uint_eq(vm->devEnd, ref->devEnd);
        ck_assert_int_eq(vm->vmdesc, ref->vmdesc);
        g_rand_free(m.rand);
    }
}


START_TEST(test_views_of_any_size_walk_as_pread_does)
{
    checkViewsWalkAsPread("qemu-7.2-plain.vmstream");
    checkViewsWalkAsPread("qemu-10.0-plain.vmstream");
}
END_TEST


/* Each record's offsets point at its be64, at the block's name when it
 * has one, and at its payload. */
static void
checkRecordPlaces(const char *name)
{
    g_autofree char *path = scratchUnpackData(name);
    size_t len;
    g_autofree unsigned char *data = fileRead(path, &len);
    g_autoptr(GArray) recs = g_array_new(false, false, sizeof(kvmsaveVMRecord));
    g_autoptr(kvmsaveVMStream) vm = walkKeeping(path, len, recs);
    size_t i, named = 0;

    ck_assert(vm->ramEnded);
    ck_assert_uint_eq(recs->len, vm->pages);
    for (i = 0; i < recs->len; i++) {
        const kvmsaveVMRecord *r = &g_array_index(recs, kvmsaveVMRecord, i);
        const char *block = vm->blocks[r->block].name;
        uint64_t v;
        uint64_t head = 8;

        memcpy(&v, data + r->record, 8);
        v = GUINT64_FROM_BE(v);

        ck_assert_uint_eq(v & ~4095ULL, r->page * 4096);
        ck_assert_int_eq(!(v & 0x20), r->named);
        ck_assert_uint_eq(v & 0x0a, r->data ? 0x08 : 0x02);
        if (r->named) {
            named++;
            ck_assert_uint_eq(data[r->record + 8], strlen(block));
            ck_assert(memcmp(data + r->record + 9, block, strlen(block)) == 0);
            head += 1 + strlen(block);
        }
        ck_assert_uint_eq(r->payload, r->record + head);
        ck_assert_uint_lt(r->payload, vm->devStart);
        if (!r->data)
            ck_assert_uint_eq(data[r->payload], 0);
    }
    ck_assert_uint_ge(named, vm->nblocks);
}


START_TEST(test_records_point_at_their_bytes)
{
    checkRecordPlaces("qemu-7.2-plain.vmstream");
    checkRecordPlaces("qemu-10.0-plain.vmstream");
}
END_TEST


START_TEST(test_setup_only_stops_after_ram_setup)
{
    g_autofree char *path = scratchUnpackData("qemu-7.2-plain.vmstream");
    size_t len;
    g_autofree unsigned char *data = fileRead(path, &len);
    MemSource m = { data, len, g_rand_new_with_seed(1), 4096, true };
    kvmsaveVMSource src = { memView, &m };
    g_autoptr(kvmsaveVMStream) vm = NULL;

    vm = kvmsaveVMStreamParseFrom(&src, path, 0, len,
                                  KVMSAVE_VM_PARSE_SETUP_ONLY, noRecord, NULL);
    g_rand_free(m.rand);
    KT_ASSERT_NO_ERROR();
    ck_assert_ptr_nonnull(vm);
    ck_assert_str_eq(vm->machine, "pc-i440fx-7.2");
    checkMachineBlocks(vm);
    ck_assert_uint_eq(vm->pages, 0);
    ck_assert_uint_eq(vm->devStart, 0);
    ck_assert_uint_eq(vm->devEnd, 0);
    /* RAM's setup is a few hundred bytes: the walk went no further. */
    ck_assert_uint_lt(m.last, 1024);
}
END_TEST


START_TEST(test_ram_not_ended_before_the_devices)
{
    g_autoptr(GByteArray) b = buildStream(0, false, false);
    g_autoptr(kvmsaveVMStream) vm = NULL;
    size_t i;

    /* Make RAM's END section (type 0x03, id 1, EOS) a PART. */
    for (i = 0; i + 5 < b->len; i++) {
        if (memcmp(b->data + i, "\x03\x00\x00\x00\x01\x00", 6) == 0)
            break;
    }
    ck_assert_uint_lt(i + 5, b->len);
    b->data[i] = 0x02;
    vm = parseBuilt(b, "unended", b->len);
    KT_ASSERT_NO_ERROR();
    ck_assert_ptr_nonnull(vm);
    ck_assert(!vm->ramEnded);
}
END_TEST


/* ---- the postcopy source's stream and return path ---- */

typedef struct {
    int fd;
    const char *path;
    GHashTable *data;           /* "block:page" -> file offset of its data */
} PageIndex;

static int
indexPage(const kvmsaveVMStream *vm G_GNUC_UNUSED, const kvmsaveVMRecord *rec,
          void *opaque)
{
    size_t block = rec->block;
    uint64_t page = rec->page;
    uint64_t pos = rec->data ? rec->payload : 0;
    PageIndex *pi = opaque;

    g_hash_table_insert(pi->data, g_strdup_printf("%zu:%llu", block,
                                                  (unsigned long long) page),
                        GSIZE_TO_POINTER(pos));
    return 0;
}


static unsigned char *
readRange(int fd, uint64_t start, uint64_t end)
{
    unsigned char *buf = g_malloc(end - start);

    ck_assert_int_eq(pread(fd, buf, end - start, start), end - start);
    return buf;
}


/* What a postcopy source would send of @name's stream, with every page in
 * one section, made back into a stream the parser reads: the commands
 * stay (it skips them), the package's device sections are put after
 * RAM's END, then QEMU_VM_EOF. Checks that every page comes back once,
 * with its data. */
static void
checkPostcopyRoundTrip(const char *name, uint64_t start)
{
    g_autofree char *path = scratchUnpackData(name);
    g_autoptr(GHashTable) data = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                        g_free, NULL);
    PageIndex pi = { .path = path, .data = data };
    g_autoptr(kvmsaveVMStream) vm = NULL;
    g_autoptr(kvmsaveVMStream) back = NULL;
    g_autoptr(GByteArray) out = NULL;
    g_autofree unsigned char *config = NULL;
    g_autofree unsigned char *dev = NULL;
    g_autofree char *outPath = scratchPath("postcopy");
    kvmsavePostcopySection sec;
    PageCount pc = { 0 };
    size_t b;

    pi.fd = open(path, O_RDONLY);
    ck_assert_int_ge(pi.fd, 0);
    vm = kvmsaveVMStreamParse(pi.fd, path, start, fileSize(path), indexPage, &pi);
    ck_assert_ptr_nonnull(vm);
    config = readRange(pi.fd, start, vm->configEnd);
    dev = readRange(pi.fd, vm->devStart, vm->devEnd);
    out = kvmsavePostcopyStart(vm, start, config, vm->configEnd - start);
    kvmsavePostcopySectionBegin(&sec, vm, out);
    for (b = 0; b < vm->nblocks; b++) {
        uint64_t p;

        for (p = 0; p < vm->blocks[b].length / KVMSAVE_VM_PAGE_SIZE; p++) {
            g_autofree char *key = g_strdup_printf("%zu:%llu", b, (unsigned long long) p);
            uint64_t pos = GPOINTER_TO_SIZE(g_hash_table_lookup(data, key));
            unsigned char page[KVMSAVE_VM_PAGE_SIZE];

            if (vm->mapped)
                pos = vm->blocks[b].pagesOffset + p * KVMSAVE_VM_PAGE_SIZE;
            if (pos)
                ck_assert_int_eq(pread(pi.fd, page, sizeof(page), pos), sizeof(page));
            kvmsavePostcopySectionPage(&sec, b, p, pos ? page : NULL);
        }
    }
    kvmsavePostcopySectionEnd(&sec);
    close(pi.fd);
    put8(out, 0x03);
    put32(out, vm->ramSection);
    put64(out, 0x10);
    putFooter(out, vm->ramSection);
    g_byte_array_append(out, dev, vm->devEnd - vm->devStart);
    put8(out, 0x00);

    fileWrite(outPath, out->data, out->len);
    pc.seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    pc.fd = open(outPath, O_RDONLY);
    back = kvmsaveVMStreamParse(pc.fd, outPath, 0, out->len, countPage, &pc);
    close(pc.fd);
    KT_ASSERT_NO_ERROR();
    ck_assert_ptr_nonnull(back);
    /* A plain stream now: mapped-ram's capability is gone. */
    ck_assert(!back->mapped);
    ck_assert_ptr_null(back->caps[0]);
    ck_assert_str_eq(back->machine, vm->machine);
    checkMachineBlocks(back);
    ck_assert_uint_eq(g_hash_table_size(pc.seen), MACHINE_PAGES);
    ck_assert_uint_ge(pc.data, 1);
    ck_assert_uint_eq(back->devEnd - back->devStart, vm->devEnd - vm->devStart);
    g_hash_table_unref(pc.seen);
}


START_TEST(test_postcopy_stream_of_a_plain_stream_carries_every_page)
{
    checkPostcopyRoundTrip("qemu-7.2-plain.vmstream", 0);
}
END_TEST


START_TEST(test_postcopy_stream_of_a_mapped_ram_stream_is_plain)
{
    checkPostcopyRoundTrip("qemu-10.0-mapped.vmstream", MIB);
}
END_TEST


START_TEST(test_postcopy_start_opens_the_return_path_then_advises)
{
    g_autoptr(GByteArray) s = buildStream(0, false, false);
    g_autoptr(kvmsaveVMStream) vm = parseBuilt(s, "advise", s->len);
    g_autoptr(GByteArray) out = kvmsavePostcopyStart(vm, 0, s->data, vm->configEnd);
    g_autoptr(GByteArray) pkg = kvmsavePostcopyPackage((const unsigned char *) "DEV", 3);
    static const unsigned char expect[] = {
        0x08, 0x00, 0x01, 0x00, 0x00,                   /* OPEN_RETURN_PATH */
        0x08, 0x00, 0x03, 0x00, 0x10,                   /* ADVISE */
        0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x10, 0,
        0x01,                                           /* RAM's setup */
    };
    static const unsigned char expectPkg[] = {
        0x08, 0x00, 0x07, 0x00, 0x04, 0, 0, 0, 13,      /* PACKAGED */
        0x08, 0x00, 0x04, 0x00, 0x00, 'D', 'E', 'V',    /* LISTEN, devices */
        0x08, 0x00, 0x05, 0x00, 0x00,                   /* RUN */
    };
    static const unsigned char discard[] = {
        0x08, 0x00, 0x06, 0x00, 22, 0, 3, 'b', 'l', 'k', 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0,
    };

    ck_assert_ptr_nonnull(vm);
    ck_assert_uint_ge(out->len, vm->configEnd + sizeof(expect));
    ck_assert_mem_eq(out->data, s->data, vm->configEnd);
    ck_assert_mem_eq(out->data + vm->configEnd, expect, sizeof(expect));
    /* It ends with the discard QEMU needs before LISTEN. */
    ck_assert_mem_eq(out->data + out->len - sizeof(discard), discard, sizeof(discard));
    ck_assert_uint_eq(pkg->len, sizeof(expectPkg));
    ck_assert_mem_eq(pkg->data, expectPkg, sizeof(expectPkg));
}
END_TEST


static void
putRP(GByteArray *b, uint16_t type, const void *data, uint16_t len)
{
    uint16_t v = GUINT16_TO_BE(type);

    g_byte_array_append(b, (guint8 *) &v, 2);
    v = GUINT16_TO_BE(len);
    g_byte_array_append(b, (guint8 *) &v, 2);
    g_byte_array_append(b, data, len);
}


START_TEST(test_return_path_requests_and_bitmaps_parsed)
{
    g_autoptr(GByteArray) b = g_byte_array_new();
    g_autoptr(GByteArray) req = g_byte_array_new();
    kvmsavePostcopyMsg m;
    ssize_t n, at = 0;
    size_t cut;

    put64(req, 0x5000);
    put32(req, 4096);
    putStr(req, "pc.ram");
    putRP(b, KVMSAVE_POSTCOPY_RP_REQ_PAGES_ID, req->data, req->len);
    putRP(b, KVMSAVE_POSTCOPY_RP_REQ_PAGES, req->data, 12);
    putRP(b, KVMSAVE_POSTCOPY_RP_RECV_BITMAP, "\x06pc.ram", 7);
    put64(b, 8);
    put8(b, 0x05);                      /* pages 0 and 2 */
    g_byte_array_append(b, (const guint8 *) "\0\0\0\0\0\0\x80", 7); /* page 63 */
    put64(b, 0x0123456789abcdefULL);
    putRP(b, KVMSAVE_POSTCOPY_RP_SHUT, "\0\0\0\0", 4);

    /* Any cut short of a whole message asks for more bytes. */
    for (cut = 0; cut < 4 + req->len; cut++)
        ck_assert_int_eq(kvmsavePostcopyParseMsg(b->data, cut, &m), 0);
    n = kvmsavePostcopyParseMsg(b->data, b->len, &m);
    ck_assert_int_eq(n, 4 + req->len);
    ck_assert_int_eq(m.type, KVMSAVE_POSTCOPY_RP_REQ_PAGES_ID);
    ck_assert_uint_eq(m.offset, 0x5000);
    ck_assert_uint_eq(m.length, 4096);
    ck_assert_str_eq(m.block, "pc.ram");
    at += n;
    n = kvmsavePostcopyParseMsg(b->data + at, b->len - at, &m);
    ck_assert_int_eq(m.type, KVMSAVE_POSTCOPY_RP_REQ_PAGES);
    ck_assert_str_eq(m.block, "");
    at += n;
    ck_assert_int_eq(kvmsavePostcopyParseMsg(b->data + at, 4 + 7 + 8 + 4, &m), 0);
    n = kvmsavePostcopyParseMsg(b->data + at, b->len - at, &m);
    ck_assert_int_eq(n, 4 + 7 + 8 + 8 + 8);
    ck_assert_int_eq(m.type, KVMSAVE_POSTCOPY_RP_RECV_BITMAP);
    ck_assert(kvmsavePostcopyBitmapHas(&m, 0));
    ck_assert(!kvmsavePostcopyBitmapHas(&m, 1));
    ck_assert(kvmsavePostcopyBitmapHas(&m, 2));
    ck_assert(!kvmsavePostcopyBitmapHas(&m, 55));
    ck_assert(kvmsavePostcopyBitmapHas(&m, 63));
    ck_assert(!kvmsavePostcopyBitmapHas(&m, 64));
    at += n;
    n = kvmsavePostcopyParseMsg(b->data + at, b->len - at, &m);
    ck_assert_int_eq(m.type, KVMSAVE_POSTCOPY_RP_SHUT);
    ck_assert_uint_eq(m.value, 0);
    ck_assert_int_eq(at + n, b->len);
    KT_ASSERT_NO_ERROR();
}
END_TEST


START_TEST(test_return_path_malformed_messages_refused)
{
    g_autoptr(GByteArray) a = g_byte_array_new();
    g_autoptr(GByteArray) b = g_byte_array_new();
    g_autoptr(GByteArray) c = g_byte_array_new();
    kvmsavePostcopyMsg m;

    putRP(a, 99, "", 0);
    ck_assert_int_eq(kvmsavePostcopyParseMsg(a->data, a->len, &m), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "type 99");
    virResetLastError();
    putRP(b, KVMSAVE_POSTCOPY_RP_SHUT, "\0\0", 2);
    ck_assert_int_eq(kvmsavePostcopyParseMsg(b->data, b->len, &m), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "2 bytes");
    virResetLastError();
    putRP(c, KVMSAVE_POSTCOPY_RP_RECV_BITMAP, "\x02pc", 3);
    put64(c, 8);
    put64(c, 0);
    put64(c, 42);
    ck_assert_int_eq(kvmsavePostcopyParseMsg(c->data, c->len, &m), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "end mark");
}
END_TEST

static Suite *
vmstreamSuite(void)
{
    Suite *s = suite_create("kvmsave_vmstream");
    TCase *tc;

    tc = ktTCase("qemu", 60);
    tcase_add_unchecked_fixture(tc, scratchSetup, scratchTeardown);
    tcase_add_test(tc, test_qemu_7_2_plain_stream_every_page_once);
    tcase_add_test(tc, test_qemu_10_0_plain_stream_every_page_once);
    tcase_add_test(tc, test_qemu_10_0_mapped_ram_stream_pages_at_their_offsets);
    suite_add_tcase(s, tc);

    tc = ktTCase("built", 60);
    tcase_add_unchecked_fixture(tc, scratchSetup, scratchTeardown);
    tcase_add_test(tc, test_device_range_found_with_and_without_description);
    tcase_add_test(tc, test_block_continues_across_ram_sections);
    tcase_add_test(tc, test_compressed_pages_refused_as_unsupported);
    tcase_add_test(tc, test_truncated_stream_refused);
    tcase_add_test(tc, test_not_a_stream_refused);
    tcase_add_test(tc, test_ram_not_ended_before_the_devices);
    suite_add_tcase(s, tc);

    tc = ktTCase("sources", 120);
    tcase_add_unchecked_fixture(tc, scratchSetup, scratchTeardown);
    tcase_add_test(tc, test_views_of_any_size_walk_as_pread_does);
    tcase_add_test(tc, test_records_point_at_their_bytes);
    tcase_add_test(tc, test_setup_only_stops_after_ram_setup);
    suite_add_tcase(s, tc);

    tc = ktTCase("postcopy", 60);
    tcase_add_unchecked_fixture(tc, scratchSetup, scratchTeardown);
    tcase_add_test(tc, test_postcopy_stream_of_a_plain_stream_carries_every_page);
    tcase_add_test(tc, test_postcopy_stream_of_a_mapped_ram_stream_is_plain);
    tcase_add_test(tc, test_postcopy_start_opens_the_return_path_then_advises);
    tcase_add_test(tc, test_return_path_requests_and_bitmaps_parsed);
    tcase_add_test(tc, test_return_path_malformed_messages_refused);
    suite_add_tcase(s, tc);
    return s;
}


int
main(void)
{
    return ktRunSuite(vmstreamSuite);
}
