/*
 * pageindextest.c: unit tests of the page index over a plain QEMU
 * migration stream (kvmsave_pageindex.c)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The records are made up here, as the walk through a stream would hear
 * them (kvmsaveVMRecord): each at the stream offset where the one before
 * ended, or past the 18 bytes that close a RAM section and open the next
 * (EOS, footer, PART header). An oracle keeps the last record of every
 * page, and every page of every block is looked up in the decoded index
 * and compared with it.
 */
#include <config.h>

#include <fcntl.h>
#include <unistd.h>

#include "testutil.h"
#include "scratch.h"
#include "kvmsave_pageindex.h"
#include "kvmsave_imagereader.h"
#include "indexedimage.h"
#include "virfile.h"

#define KIB 1024ULL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)

/* EOS, the section's footer and the next PART section's header. */
#define SECTION_GAP 18
/* Where the first record goes: past the header, configuration and RAM's
 * setup. */
#define FIRST_RECORD 300
#define CHUNK_RAW (512 * KIB)
#define CHUNK_STORED (CHUNK_RAW + 32)

typedef struct {
    kvmsaveVMStream *vm;
    kvmsavePageIndexBuilder *b;
    uint64_t pos;               /* where the next record goes */
    ssize_t block;              /* of the last record, which a continued one names */
    bool name;                  /* the next record names its block anyway */
    uint64_t **payload;         /* the oracle: per block and page, 0 if never sent */
    bool **data;
} Walk;


static kvmsaveVMStream *
makeStream(const uint64_t *pages, size_t nblocks)
{
    kvmsaveVMStream *vm = g_new0(kvmsaveVMStream, 1);
    size_t i;

    vm->caps = g_new0(char *, 1);
    vm->blocks = g_new0(kvmsaveVMBlock, nblocks);
    vm->nblocks = nblocks;
    for (i = 0; i < nblocks; i++) {
        vm->blocks[i].name = g_strdup_printf(i == 0 ? "pc.ram" : "blk%zu", i);
        vm->blocks[i].length = pages[i] * 4096;
    }
    return vm;
}


static Walk *
walkNew(const uint64_t *pages, size_t nblocks, uint64_t maxPages)
{
    Walk *w = g_new0(Walk, 1);
    size_t i;

    w->vm = makeStream(pages, nblocks);
    w->b = kvmsavePageIndexBuilderNew(maxPages);
    w->pos = FIRST_RECORD;
    w->block = -1;
    w->payload = g_new0(uint64_t *, nblocks);
    w->data = g_new0(bool *, nblocks);
    for (i = 0; i < nblocks; i++) {
        w->payload[i] = g_new0(uint64_t, pages[i]);
        w->data[i] = g_new0(bool, pages[i]);
    }
    return w;
}


static void
walkFree(Walk *w)
{
    size_t i;

    for (i = 0; i < w->vm->nblocks; i++) {
        g_free(w->payload[i]);
        g_free(w->data[i]);
    }
    g_free(w->payload);
    g_free(w->data);
    kvmsavePageIndexBuilderFree(w->b);
    kvmsaveVMStreamFree(w->vm);
    g_free(w);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Walk, walkFree);


/* One record of page @page of block @block, as QEMU writes it: it names
 * its block unless it continues the last record's. Returns what the
 * builder returns. */
static int
walkPut(Walk *w, size_t block, uint64_t page, bool data)
{
    kvmsaveVMRecord rec = {
        .block = block, .page = page, .record = w->pos, .data = data,
        .named = w->name || (ssize_t) block != w->block,
    };

    rec.payload = rec.record + 8 +
        (rec.named ? 1 + strlen(w->vm->blocks[block].name) : 0);
    if (kvmsavePageIndexBuilderRecord(w->vm, &rec, w->b) < 0)
        return -1;
    w->payload[block][page] = rec.payload;
    w->data[block][page] = data;
    w->pos = rec.payload + (data ? 4096 : 1);
    w->block = block;
    w->name = false;
    return 0;
}


/* Records of pages [@first, @first + @n) of @block; every @dataEvery-th
 * a data page (0: none). */
static void
walkPages(Walk *w, size_t block, uint64_t first, uint64_t n, unsigned dataEvery)
{
    uint64_t i;

    for (i = 0; i < n; i++) {
        ck_assert_int_eq(walkPut(w, block, first + i,
                                 dataEvery && i % dataEvery == 0), 0);
        KT_ASSERT_NO_ERROR();
    }
}


/* The RAM section ends and the next begins; its first record may still
 * continue the block (QEMU 7.2). */
static void
walkSection(Walk *w)
{
    w->pos += SECTION_GAP;
}


static uint64_t
walkStreamBytes(const Walk *w)
{
    return w->vm->devStart + 4096;
}


static uint64_t
walkChunks(const Walk *w)
{
    return (walkStreamBytes(w) + CHUNK_RAW - 1) / CHUNK_RAW;
}


static uint64_t
walkDataBytes(const Walk *w)
{
    return walkChunks(w) * CHUNK_STORED + 4096;
}


/* RAM's END section, then the devices at @devStart (0: right after). */
static void
walkEnd(Walk *w, uint64_t devStart)
{
    w->vm->devStart = devStart ? devStart : w->pos + SECTION_GAP;
    w->vm->ramEnded = true;
}


static int
walkEncode(Walk *w, unsigned char **buf, size_t *len)
{
    uint64_t n = walkChunks(w);
    g_autofree uint64_t *dir = g_new0(uint64_t, n);
    uint64_t k;

    for (k = 0; k < n; k++)
        dir[k] = k * CHUNK_STORED;
    return kvmsavePageIndexEncode(w->b, w->vm, walkStreamBytes(w), dir, n,
                                  CHUNK_RAW, buf, len);
}


static kvmsavePageIndex *
walkDecode(const Walk *w, const unsigned char *buf, size_t len)
{
    return kvmsavePageIndexDecode(buf, len, "/images/guest.kvmsave",
                                  walkStreamBytes(w), walkChunks(w),
                                  walkDataBytes(w));
}


static uint64_t
get64(const unsigned char *buf, size_t at)
{
    uint64_t v;

    memcpy(&v, buf + at, 8);
    return GUINT64_FROM_LE(v);
}


/* The index of the walk, encoded and decoded; @nruns: its runs. */
static kvmsavePageIndex *
walkIndex(Walk *w, uint64_t *nruns)
{
    g_autofree unsigned char *buf = NULL;
    kvmsavePageIndex *idx;
    size_t len = 0;

    if (!w->vm->ramEnded)
        walkEnd(w, 0);
    ck_assert_int_eq(walkEncode(w, &buf, &len), 0);
    KT_ASSERT_NO_ERROR();
    ck_assert_mem_eq(buf, "KSPGIDX\n", 8);
    idx = walkDecode(w, buf, len);
    KT_ASSERT_NO_ERROR();
    ck_assert_ptr_nonnull(idx);
    if (nruns)
        *nruns = get64(buf, 48);
    return idx;
}


/* Encode and decode, look up every page, compare with the oracle, and
 * return the index's runs. */
static uint64_t
walkCheck(Walk *w)
{
    uint64_t nruns;
    g_autoptr(kvmsavePageIndex) idx = walkIndex(w, &nruns);
    size_t i;

    ck_assert_int_eq(kvmsavePageIndexCheckStream(idx, w->vm, "/images/guest.kvmsave"), 0);
    for (i = 0; i < w->vm->nblocks; i++) {
        uint64_t pages = w->vm->blocks[i].length / 4096;
        uint64_t p;

        for (p = 0; p < pages; p++) {
            uint64_t payload = 0;
            bool data = false;
            int rc = kvmsavePageIndexLookup(idx, i, p, &payload, &data);

            ck_assert_msg(rc == (w->payload[i][p] != 0),
                          "block %zu page %llu: lookup %d", i, (unsigned long long) p, rc);
            if (rc == 0)
                continue;
            ck_assert_msg(payload == w->payload[i][p] && data == w->data[i][p],
                          "block %zu page %llu: payload %llu %s, expected %llu %s",
                          i, (unsigned long long) p, (unsigned long long) payload,
                          data ? "data" : "zero",
                          (unsigned long long) w->payload[i][p],
                          w->data[i][p] ? "data" : "zero");
        }
    }
    return nruns;
}


static const uint64_t oneBlock[] = { 256 };
static const uint64_t threeBlocks[] = { 300, 64, 1000 };


START_TEST(test_back_to_back_records_make_one_run)
{
    g_autoptr(Walk) w = walkNew(oneBlock, 1, 4096);

    walkPages(w, 0, 0, 256, 3);
    ck_assert_uint_eq(walkCheck(w), 1);
}
END_TEST


START_TEST(test_runs_break_at_page_gaps)
{
    g_autoptr(Walk) w = walkNew(oneBlock, 1, 4096);

    walkPages(w, 0, 0, 10, 2);
    walkPages(w, 0, 20, 10, 2);
    walkPages(w, 0, 31, 1, 1);
    ck_assert_uint_eq(walkCheck(w), 3);
}
END_TEST


START_TEST(test_runs_break_at_section_boundaries)
{
    g_autoptr(Walk) w = walkNew(oneBlock, 1, 4096);

    walkPages(w, 0, 0, 10, 4);
    walkSection(w);
    /* Continues the block and the pages, but not the bytes. */
    walkPages(w, 0, 10, 10, 4);
    ck_assert_uint_eq(walkCheck(w), 2);
}
END_TEST


START_TEST(test_named_records_start_runs)
{
    g_autoptr(Walk) w = walkNew(threeBlocks, 3, 4096);

    walkPages(w, 0, 0, 10, 1);
    w->name = true;
    walkPages(w, 0, 10, 10, 1);
    /* Another block, right after: named too. */
    walkPages(w, 1, 20, 5, 0);
    walkPages(w, 2, 25, 5, 2);
    ck_assert_uint_eq(walkCheck(w), 4);
}
END_TEST


START_TEST(test_zero_and_data_records_mixed_in_a_run)
{
    g_autoptr(Walk) w = walkNew(oneBlock, 1, 4096);
    uint64_t p;

    /* Data pages at irregular places, so that payloads depend on the
     * count of data records before them. */
    for (p = 0; p < 256; p++)
        ck_assert_int_eq(walkPut(w, 0, p, p % 7 == 0 || p % 11 == 3 || (p > 100 && p < 140)), 0);
    ck_assert_uint_eq(walkCheck(w), 1);
}
END_TEST


START_TEST(test_resent_page_splits_its_run_and_the_last_record_wins)
{
    g_autoptr(Walk) w = walkNew(oneBlock, 1, 4096);

    walkPages(w, 0, 0, 100, 0);
    walkSection(w);
    /* ram_save_complete's final sync sends page 50 again, as data. */
    walkPages(w, 0, 50, 1, 1);
    ck_assert_uint_eq(walkCheck(w), 3);
    ck_assert(w->data[0][50]);
}
END_TEST


START_TEST(test_resent_run_edges_shrink_or_drop_their_runs)
{
    g_autoptr(Walk) w = walkNew(oneBlock, 1, 4096);

    walkPages(w, 0, 0, 10, 3);           /* [0, 10) */
    walkPages(w, 0, 20, 1, 1);           /* [20] */
    walkSection(w);
    walkPages(w, 0, 0, 1, 1);            /* [1, 10) and [0] */
    walkPages(w, 0, 9, 1, 0);            /* [1, 9) and [9] */
    walkPages(w, 0, 20, 1, 0);           /* [20] replaced */
    walkPages(w, 0, 20, 1, 1);           /* and again */
    /* [0], [1, 9), [9], [20] */
    ck_assert_uint_eq(walkCheck(w), 4);
}
END_TEST


START_TEST(test_a_new_run_over_older_ones_replaces_them)
{
    g_autoptr(Walk) w = walkNew(oneBlock, 1, 4096);

    walkPages(w, 0, 10, 5, 2);
    walkPages(w, 0, 20, 5, 2);
    walkSection(w);
    walkPages(w, 0, 5, 30, 3);
    ck_assert_uint_eq(walkCheck(w), 1);
}
END_TEST


/* Random streams: sequential pages, jumps, resent pages, sections,
 * named records, block changes. */
START_TEST(test_random_streams_match_a_brute_force_oracle)
{
    g_autoptr(Walk) w = walkNew(threeBlocks, 3, 1 << 20);
    g_autoptr(GRand) rand = g_rand_new_with_seed(_i * 7919 + 1);
    size_t block = 0;
    uint64_t page = 0;
    size_t i;

    for (i = 0; i < 20000; i++) {
        int32_t what = g_rand_int_range(rand, 0, 100);

        if (what < 3) {
            block = g_rand_int_range(rand, 0, 3);
        } else if (what < 8) {
            page = g_rand_int_range(rand, 0, 1000);
        } else if (what < 10) {
            walkSection(w);
        } else if (what < 11) {
            w->name = true;
        }
        page %= w->vm->blocks[block].length / 4096;
        ck_assert_int_eq(walkPut(w, block, page, g_rand_boolean(rand)), 0);
        page++;
    }
    ck_assert_uint_gt(walkCheck(w), 1);
}
END_TEST


START_TEST(test_an_index_without_records_has_no_runs)
{
    g_autoptr(Walk) w = walkNew(threeBlocks, 3, 4096);

    ck_assert_uint_eq(walkCheck(w), 0);
}
END_TEST


START_TEST(test_round_trip_keeps_the_stream_and_chunk_fields)
{
    g_autoptr(Walk) w = walkNew(oneBlock, 1, 4096);
    g_autoptr(kvmsavePageIndex) idx = NULL;
    uint64_t k;

    walkPages(w, 0, 0, 200, 1);
    walkEnd(w, 3 * MIB);
    idx = walkIndex(w, NULL);
    ck_assert_uint_eq(kvmsavePageIndexStreamBytes(idx), 3 * MIB + 4096);
    ck_assert_uint_eq(kvmsavePageIndexDevStart(idx), 3 * MIB);
    ck_assert_uint_eq(kvmsavePageIndexChunkRaw(idx), CHUNK_RAW);
    ck_assert_uint_eq(kvmsavePageIndexNChunks(idx), 7);
    for (k = 0; k < 7; k++)
        ck_assert_uint_eq(kvmsavePageIndexChunkOffset(idx, k), k * CHUNK_STORED);
}
END_TEST


/* A rewrite's directory replaces the old one, nothing else. */
START_TEST(test_set_directory_moves_the_chunks_only)
{
    g_autoptr(Walk) w = walkNew(oneBlock, 1, 4096);
    g_autoptr(kvmsavePageIndex) idx = NULL;
    g_autofree unsigned char *buf = NULL;
    g_autofree unsigned char *before = NULL;
    uint64_t offsets[7];
    size_t len = 0;
    uint64_t k;

    walkPages(w, 0, 0, 200, 1);
    walkEnd(w, 3 * MIB);
    ck_assert_int_eq(walkEncode(w, &buf, &len), 0);
    before = g_new(unsigned char, len);
    memcpy(before, buf, len);
    for (k = 0; k < 7; k++)
        offsets[k] = k ? k * CHUNK_STORED - 7 * k : 0;
    ck_assert_int_eq(kvmsavePageIndexSetDirectory(buf, len, offsets, 6), -1);
    KT_ASSERT_ERROR(VIR_ERR_INTERNAL_ERROR, "a page index of 7 chunks for an image of 6");
    virResetLastError();
    ck_assert_mem_eq(buf, before, len);
    ck_assert_int_eq(kvmsavePageIndexSetDirectory(buf, len, offsets, 7), 0);
    idx = walkDecode(w, buf, len);
    ck_assert_msg(idx != NULL, "%s", virGetLastErrorMessage());
    for (k = 0; k < 7; k++)
        ck_assert_uint_eq(kvmsavePageIndexChunkOffset(idx, k), offsets[k]);
    /* the 64-byte head and the block sizes before the directory, the runs
     * and bits after it, are as they were */
    ck_assert_mem_eq(buf, before, 64 + 8);
    ck_assert_mem_eq(buf + 64 + 8 + 7 * 8, before + 64 + 8 + 7 * 8, len - (64 + 8 + 7 * 8));
}
END_TEST


START_TEST(test_lookup_outside_the_blocks_is_an_error)
{
    g_autoptr(Walk) w = walkNew(threeBlocks, 3, 4096);
    g_autoptr(kvmsavePageIndex) idx = NULL;
    uint64_t payload;
    bool data;

    walkPages(w, 1, 0, 64, 1);
    idx = walkIndex(w, NULL);
    ck_assert_int_eq(kvmsavePageIndexLookup(idx, 1, 63, &payload, &data), 1);
    ck_assert_int_eq(kvmsavePageIndexLookup(idx, 1, 64, &payload, &data), -1);
    KT_ASSERT_ERROR(VIR_ERR_INTERNAL_ERROR, "page 64 of block 1");
    virResetLastError();
    ck_assert_int_eq(kvmsavePageIndexLookup(idx, 3, 0, &payload, &data), -1);
    KT_ASSERT_ERROR(VIR_ERR_INTERNAL_ERROR, "outside the page index");
}
END_TEST


/* ---- limits ---- */

START_TEST(test_gives_up_past_the_record_limit)
{
    static const uint64_t pages[] = { 64 };
    g_autoptr(Walk) w = walkNew(pages, 1, 128);
    g_autofree unsigned char *buf = NULL;
    size_t len;

    walkPages(w, 0, 0, 64, 2);
    walkPages(w, 0, 0, 64, 3);
    ck_assert_uint_le(kvmsavePageIndexBuilderBytes(w->b),
                      kvmsavePageIndexBuilderBound(128));
    ck_assert_int_eq(walkPut(w, 0, 0, true), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_UNSUPPORTED,
                    "the stream sends more than 128 page records, more than the page index has room for");
    virResetLastError();
    walkEnd(w, 0);
    ck_assert_int_eq(walkEncode(w, &buf, &len), -1);
    KT_ASSERT_ERROR(VIR_ERR_INTERNAL_ERROR, "gave up");
}
END_TEST


START_TEST(test_gives_up_past_the_run_limit_within_its_memory_bound)
{
    static const uint64_t pages[] = { 16384 };
    g_autoptr(Walk) w = walkNew(pages, 1, 16384);
    uint64_t p;

    /* 4096 + 16384 / 1024 runs at most: every other page makes one. */
    for (p = 0; p < 4112; p++)
        ck_assert_int_eq(walkPut(w, 0, 2 * p, p % 2), 0);
    ck_assert_uint_le(kvmsavePageIndexBuilderBytes(w->b),
                      kvmsavePageIndexBuilderBound(16384));
    ck_assert_int_eq(walkPut(w, 0, 2 * p, true), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_UNSUPPORTED,
                    "the stream's pages lie in more than 4112 runs");
}
END_TEST


START_TEST(test_a_resent_page_that_splits_a_run_counts_against_the_run_limit)
{
    static const uint64_t pages[] = { 16384 };
    g_autoptr(Walk) w = walkNew(pages, 1, 16384);
    uint64_t p;

    for (p = 0; p < 4111; p++)
        ck_assert_int_eq(walkPut(w, 0, 2 * p, false), 0);
    walkPages(w, 0, 10000, 3, 0);
    /* 4112 runs; a page in the middle of the last one makes two more. */
    walkSection(w);
    ck_assert_int_eq(walkPut(w, 0, 10001, true), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_UNSUPPORTED, "more than 4112 runs");
}
END_TEST


START_TEST(test_gives_up_on_blocks_larger_than_the_reserve)
{
    static const uint64_t pages[] = { 100, 29 };
    g_autoptr(Walk) w = walkNew(pages, 2, 128);

    ck_assert_int_eq(walkPut(w, 0, 0, true), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_UNSUPPORTED,
                    "the guest's RAM blocks hold 129 pages, more than the 128 the page index has room for");
}
END_TEST


START_TEST(test_gives_up_on_more_blocks_than_an_index_lists)
{
    uint64_t pages[65];
    g_autoptr(Walk) w = NULL;
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(pages); i++)
        pages[i] = 1;
    w = walkNew(pages, G_N_ELEMENTS(pages), 4096);
    ck_assert_int_eq(walkPut(w, 0, 0, true), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_UNSUPPORTED, "65 RAM blocks");
}
END_TEST


START_TEST(test_gives_up_on_a_mapped_ram_stream)
{
    g_autoptr(Walk) w = walkNew(oneBlock, 1, 4096);

    w->vm->mapped = true;
    ck_assert_int_eq(walkPut(w, 0, 0, true), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_UNSUPPORTED, "mapped-ram");
}
END_TEST


START_TEST(test_encode_refuses_a_stream_whose_ram_does_not_end_first)
{
    g_autoptr(Walk) w = walkNew(oneBlock, 1, 4096);
    g_autofree unsigned char *buf = NULL;
    size_t len;

    walkPages(w, 0, 0, 10, 1);
    walkEnd(w, 0);
    w->vm->ramEnded = false;
    ck_assert_int_eq(walkEncode(w, &buf, &len), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_UNSUPPORTED,
                    "RAM's last section does not come before the device state");
    ck_assert_ptr_null(buf);
}
END_TEST


START_TEST(test_encode_refuses_an_index_larger_than_its_reserve)
{
    g_autoptr(Walk) w = walkNew(oneBlock, 1, 4096);
    g_autofree unsigned char *buf = NULL;
    /* More chunks than the reserve's directory has room for: 4096
     * pages' reserve has ~132 KiB in all. */
    size_t n = 20000;
    g_autofree uint64_t *dir = g_new0(uint64_t, n);
    size_t k, len;

    for (k = 0; k < n; k++)
        dir[k] = k * 4128;
    walkPages(w, 0, 0, 10, 1);
    walkEnd(w, 0);
    ck_assert_int_eq(kvmsavePageIndexEncode(w->b, w->vm, n * 4096, dir, n, 4096,
                                            &buf, &len), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_UNSUPPORTED, "more than the");
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_UNSUPPORTED, "reserved for it");
}
END_TEST


START_TEST(test_reserve_is_half_a_mib_at_8_gib_and_under_3_mib_at_64_gib)
{
    /* P = (guest + 1 GiB) / 4 KiB;
     * 576 + 8 (P / 1021 + 2) + 32 (4096 + P / 1024) + P / 8 */
    ck_assert_uint_eq(kvmsavePageIndexPages(8 * GIB), 2359296);
    ck_assert_uint_eq(kvmsavePageIndexReserve(8 * GIB), 518784);
    ck_assert_uint_eq(kvmsavePageIndexPages(64 * GIB), 17039360);
    ck_assert_uint_eq(kvmsavePageIndexReserve(64 * GIB), 2927568);
    ck_assert_uint_lt(kvmsavePageIndexReserve(64 * GIB), 3 * MIB);
    /* The header's 16 MiB cap: about 370 GiB. */
    ck_assert_uint_lt(kvmsavePageIndexReserve(360 * GIB), 16 * MIB);
    ck_assert_uint_gt(kvmsavePageIndexReserve(400 * GIB), 16 * MIB);
}
END_TEST


START_TEST(test_builder_memory_for_a_64_gib_guest_is_under_6_mib)
{
    uint64_t pages = kvmsavePageIndexPages(64 * GIB);
    size_t bound = kvmsavePageIndexBuilderBound(pages);

    /* A bit per record and a bit per page seen: 2 MiB each; the runs,
     * 4096 + P / 1024 of them, with their tree: 1.3 MiB. */
    ck_assert_uint_ge(bound, pages / 4);
    ck_assert_uint_le(bound, 6 * MIB);
    /* A builder costs nothing before the stream's first record. */
    {
        g_autoptr(kvmsavePageIndexBuilder) b = kvmsavePageIndexBuilderNew(pages);

        ck_assert_uint_lt(kvmsavePageIndexBuilderBytes(b), 4 * KIB);
    }
}
END_TEST


/* ---- damaged indexes ---- */

/* The index of dmgWalk: 2 blocks of 64 and 32 pages, 3 chunks, runs
 * [0, 10) and [20, 30) of block 0 and [0, 5) of block 1, 25 records. */
#define DMG_BLOCKS 64
#define DMG_DIR (DMG_BLOCKS + 2 * 8)
#define DMG_RUN(i) (DMG_DIR + 3 * 8 + 32 * (i))
#define DMG_BITS DMG_RUN(3)
#define DMG_LEN (DMG_BITS + 8)
#define DMG_DEV_START MIB
#define DMG_STREAM (DMG_DEV_START + 4096)
#define DMG_DATA (3 * CHUNK_STORED + 4096)

static Walk *
dmgWalk(void)
{
    static const uint64_t pages[] = { 64, 32 };
    Walk *w = walkNew(pages, 2, 4096);

    walkPages(w, 0, 0, 10, 3);
    walkPages(w, 0, 20, 10, 3);
    walkPages(w, 1, 0, 5, 3);
    walkEnd(w, DMG_DEV_START);
    return w;
}

typedef struct {
    const char *what;
    size_t at;                  /* where to write @value, @width bytes */
    size_t width;               /* 0: nothing */
    uint64_t value;
    size_t keep;                /* !0: the bytes left */
    uint64_t streamBytes;       /* !0: what the image says instead */
    uint64_t nchunks;
    const char *msg;
} Damage;

static const Damage damages[] = {
    { "magic", 3, 1, 'X', 0, 0, 0, "it does not start with its magic" },
    { "version", 8, 4, 2, 0, 0, 0, "it has version 2 and flags 0x0" },
    { "flags", 12, 4, 1, 0, 0, 0, "it has version 1 and flags 0x1" },
    { "short", 0, 0, 0, 40, 0, 0, "it is 40 bytes, shorter than its 64-byte header" },
    { "truncated", 0, 0, 0, DMG_LEN - 8, 0, 0, "it is 200 bytes, its counts make 208" },
    { "too many runs", 48, 8, 1ULL << 40, 0, 0, 0, "do not fit in its 208 bytes" },
    { "other stream size", 0, 0, 0, 0, DMG_STREAM + 1, 0,
      "it describes a stream of 1052672 bytes, the image holds 1052673" },
    { "other chunk count", 0, 0, 0, 0, 0, 4, "it lists 3 chunks, the image has 4" },
    { "devices outside the stream", 24, 8, DMG_STREAM + 1, 0, 0, 0,
      "it puts the device state at 1052673 of 1052672 bytes" },
    { "devices at the stream's end", 24, 8, DMG_STREAM, 0, 0, 0,
      "it puts the device state at 1052672 of 1052672 bytes" },
    { "chunks that do not make the stream", 32, 4, 4096, 0, 0, 0,
      "in chunks of 4096 bytes" },
    { "chunks larger than a chunk can be", 32, 4, 32 * MIB, 0, 0, 0,
      "in chunks of 33554432 bytes" },
    { "no blocks", 36, 4, 0, 0, 0, 0, "it lists 0 RAM blocks" },
    { "empty block", DMG_BLOCKS + 8, 8, 0, 0, 0, 0, "RAM block 1 has 0 pages" },
    { "directory out of order", DMG_DIR + 8, 8, 0, 0, 0, 0,
      "chunk 1 lies at 0, not after chunk 0 at 0" },
    { "directory past the chunks", DMG_DIR + 16, 8, DMG_DATA, 0, 0, 0,
      "chunk 2 lies at 1577056, past the 1577056 bytes of chunks" },
    { "run of no block", DMG_RUN(2), 4, 2, 0, 0, 0, "run 2 has 5 pages of block 2, of 2 blocks" },
    { "empty run", DMG_RUN(1) + 4, 4, 0, 0, 0, 0, "run 1 has 0 pages of block 0" },
    { "run past its block", DMG_RUN(2) + 8, 8, 30, 0, 0, 0,
      "run 2, pages 30 to 34 of block 1, ends past its 32 pages" },
    { "unsorted runs", DMG_RUN(0) + 8, 8, 30, 0, 0, 0,
      "run 1 (block 0, page 20) is out of order" },
    { "unsorted blocks", DMG_RUN(1), 4, 1, 0, 0, 0, "run 2 (block 1, page 0) is out of order" },
    { "overlapping runs", DMG_RUN(1) + 8, 8, 5, 0, 0, 0,
      "run 1 overlaps run 0 at page 5 of block 0" },
    { "payload past the devices", DMG_RUN(1) + 16, 8, DMG_DEV_START - 100, 0, 0, 0,
      "run 1 has pages past the device state at 1048576" },
    { "records past the kinds", DMG_RUN(2) + 24, 8, 22, 0, 0, 0,
      "run 2 takes records 22 to 26 of 25" },
    { "kinds past the records", DMG_BITS, 8, 1ULL << 40, 0, 0, 0,
      "it marks records past its 25 records" },
};


static void
putLE(unsigned char *buf, size_t at, size_t width, uint64_t v)
{
    size_t i;

    for (i = 0; i < width; i++)
        buf[at + i] = v >> (8 * i);
}


START_TEST(test_decode_refuses_each_damage_with_its_message)
{
    const Damage *d = &damages[_i];
    g_autoptr(Walk) w = dmgWalk();
    g_autofree unsigned char *buf = NULL;
    g_autoptr(kvmsavePageIndex) idx = NULL;
    size_t len;

    ck_assert_int_eq(walkEncode(w, &buf, &len), 0);
    ck_assert_uint_eq(len, DMG_LEN);
    ck_assert_uint_eq(walkStreamBytes(w), DMG_STREAM);
    ck_assert_uint_eq(walkChunks(w), 3);
    if (d->width)
        putLE(buf, d->at, d->width, d->value);
    if (d->keep)
        len = d->keep;
    idx = kvmsavePageIndexDecode(buf, len, "/images/guest.kvmsave",
                                 d->streamBytes ? d->streamBytes : DMG_STREAM,
                                 d->nchunks ? d->nchunks : 3, DMG_DATA);
    ck_assert_msg(idx == NULL, "%s: decoded", d->what);
    ck_assert_msg(virGetLastError() != NULL, "%s: no error", d->what);
    ck_assert_msg(strstr(virGetLastErrorMessage(), d->msg) != NULL,
                  "%s: \"%s\" does not say \"%s\"", d->what,
                  virGetLastErrorMessage(), d->msg);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED,
                    "the page index of '/images/guest.kvmsave' is damaged: ");
}
END_TEST


START_TEST(test_undamaged_index_of_the_damage_tests_decodes)
{
    g_autoptr(Walk) w = dmgWalk();

    ck_assert_uint_eq(walkCheck(w), 3);
}
END_TEST


START_TEST(test_check_stream_refuses_other_blocks)
{
    g_autoptr(Walk) w = dmgWalk();
    g_autoptr(kvmsavePageIndex) idx = walkIndex(w, NULL);
    g_autoptr(kvmsaveVMStream) fewer = NULL;
    g_autoptr(kvmsaveVMStream) smaller = NULL;
    static const uint64_t fewerPages[] = { 64 };
    static const uint64_t smallerPages[] = { 64, 16 };

    fewer = makeStream(fewerPages, 1);
    ck_assert_int_eq(kvmsavePageIndexCheckStream(idx, fewer, "/images/guest.kvmsave"), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED,
                    "the page index of '/images/guest.kvmsave' is damaged: it lists 2 RAM blocks, the stream 1");
    virResetLastError();
    smaller = makeStream(smallerPages, 2);
    ck_assert_int_eq(kvmsavePageIndexCheckStream(idx, smaller, "/images/guest.kvmsave"), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED,
                    "it gives RAM block 'blk1' 32 pages, the stream 16");
}
END_TEST


/* ---- streams QEMU wrote ---- */

typedef struct {
    kvmsavePageIndexBuilder *b;
    GHashTable *last;           /* "block:page" -> its last record */
} Both;

static int
recordBoth(const kvmsaveVMStream *vm, const kvmsaveVMRecord *rec, void *opaque)
{
    Both *both = opaque;
    kvmsaveVMRecord *copy = g_new(kvmsaveVMRecord, 1);

    *copy = *rec;
    g_hash_table_insert(both->last,
                        g_strdup_printf("%zu:%llu", rec->block,
                                        (unsigned long long) rec->page),
                        copy);
    return kvmsavePageIndexBuilderRecord(vm, rec, both->b);
}


/* The walk of a real stream feeds the builder; every page of every block
 * is then where the walk's last record of it says, or never sent. */
static void
checkShippedStream(const char *name)
{
    g_autofree char *path = scratchUnpackData(name);
    g_autoptr(GHashTable) last = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                       g_free, g_free);
    g_autoptr(kvmsavePageIndexBuilder) b = kvmsavePageIndexBuilderNew(kvmsavePageIndexPages(GIB));
    Both both = { b, last };
    g_autoptr(kvmsaveVMStream) vm = NULL;
    g_autoptr(kvmsavePageIndex) idx = NULL;
    g_autofree unsigned char *buf = NULL;
    g_autofree uint64_t *offsets = NULL;
    uint64_t len = fileSize(path);
    uint64_t nchunks = (len + CHUNK_RAW - 1) / CHUNK_RAW;
    size_t ilen, blk, k;
    int fd = open(path, O_RDONLY);

    ck_assert_int_ge(fd, 0);
    vm = kvmsaveVMStreamParse(fd, path, 0, len, recordBoth, &both);
    close(fd);
    KT_ASSERT_NO_ERROR();
    ck_assert_ptr_nonnull(vm);
    offsets = g_new0(uint64_t, nchunks);
    for (k = 0; k < nchunks; k++)
        offsets[k] = k * CHUNK_STORED;
    ck_assert_int_eq(kvmsavePageIndexEncode(b, vm, len, offsets, nchunks, CHUNK_RAW,
                                            &buf, &ilen), 0);
    idx = kvmsavePageIndexDecode(buf, ilen, path, len, nchunks, nchunks * CHUNK_STORED);
    KT_ASSERT_NO_ERROR();
    ck_assert_ptr_nonnull(idx);
    ck_assert_int_eq(kvmsavePageIndexCheckStream(idx, vm, path), 0);
    ck_assert_uint_eq(kvmsavePageIndexDevStart(idx), vm->devStart);
    for (blk = 0; blk < vm->nblocks; blk++) {
        uint64_t page;

        for (page = 0; page < vm->blocks[blk].length / 4096; page++) {
            g_autofree char *key = g_strdup_printf("%zu:%llu", blk,
                                                   (unsigned long long) page);
            const kvmsaveVMRecord *rec = g_hash_table_lookup(last, key);
            uint64_t payload = 0;
            bool data = false;

            ck_assert_int_eq(kvmsavePageIndexLookup(idx, blk, page, &payload, &data),
                             rec ? 1 : 0);
            if (!rec)
                continue;
            ck_assert_uint_eq(payload, rec->payload);
            ck_assert_int_eq(data, rec->data);
        }
    }
}


START_TEST(test_qemu_7_2_stream_indexed_as_walked)
{
    checkShippedStream("qemu-7.2-plain.vmstream");
}
END_TEST


START_TEST(test_qemu_10_0_stream_indexed_as_walked)
{
    checkShippedStream("qemu-10.0-plain.vmstream");
}
END_TEST


/* ---- images a save writes ---- */

typedef struct {
    const char *stream;
    int encoding;
    size_t chunk;
} SavedCase;

/* A 4 MiB chunk as saves write; 4109 bytes put page payloads across
 * chunks. */
static const SavedCase savedCases[] = {
    { "qemu-7.2-plain.vmstream", KVMSAVE_IMAGE_ENCODING_RAW, 4 * MIB },
    { "qemu-7.2-plain.vmstream", KVMSAVE_IMAGE_ENCODING_ZSTD, 4096 + 13 },
    { "qemu-10.0-plain.vmstream", KVMSAVE_IMAGE_ENCODING_ZSTD, 4 * MIB },
    { "qemu-10.0-plain.vmstream", KVMSAVE_IMAGE_ENCODING_RAW, 4096 + 13 },
};

static int
verifySaved(const SavedCase *c, IndexedImageIndex how)
{
    g_autofree char *stream = scratchUnpackData(c->stream);
    g_autofree char *path = scratchPath("indexed.img");
    g_autoptr(kvmsaveImageReader) r = NULL;

    indexedImageWrite(path, stream, c->encoding, c->chunk, how);
    r = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_CACHED);
    ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
    return kvmsaveImageVerify(r);
}


START_TEST(test_saved_index_verified_against_its_stream)
{
    ck_assert_msg(verifySaved(&savedCases[_i], INDEXED_IMAGE_RIGHT) == 0, "%s",
                  virGetLastErrorMessage());
    KT_ASSERT_NO_ERROR();
}
END_TEST


START_TEST(test_verify_finds_an_index_that_misses_a_page)
{
    ck_assert_int_eq(verifySaved(&savedCases[0], INDEXED_IMAGE_MISSING_PAGE), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED,
                    "does not say where the stream's pages are");
}
END_TEST


START_TEST(test_verify_finds_a_directory_that_points_elsewhere)
{
    ck_assert_int_eq(verifySaved(&savedCases[1], INDEXED_IMAGE_DIRECTORY_OFF), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "chunk");
}
END_TEST


/* save-image-define writes the image again with another XML, which
 * moves the chunks: the index it keeps still proves the stream. */
START_TEST(test_rewritten_image_keeps_its_index)
{
    const SavedCase *c = &savedCases[_i];
    g_autofree char *stream = scratchUnpackData(c->stream);
    g_autofree char *path = scratchPath("indexed.img");
    g_autofree char *dst = scratchPath("indexed-rewritten.img");
    g_autofree char *xml = NULL;
    g_autoptr(kvmsaveImageReader) r = NULL;
    g_autoptr(kvmsaveImageReader) again = NULL;
    VIR_AUTOCLOSE fd = -1;
    GString *pad = g_string_new("<domain type='qemu'><name>t</name><description>");

    indexedImageWrite(path, stream, c->encoding, c->chunk, INDEXED_IMAGE_RIGHT);
    while (pad->len < 3 * 4096)
        g_string_append(pad, "a longer description moves every chunk ");
    g_string_append(pad, "</description></domain>\n");
    xml = g_string_free(pad, false);
    r = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_CACHED);
    ck_assert_msg(r != NULL, "%s", virGetLastErrorMessage());
    fd = open(dst, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_msg(kvmsaveImageReaderRewrite(r, fd, dst, xml, true) == 0, "%s",
                  virGetLastErrorMessage());
    again = kvmsaveImageOpen(dst, KVMSAVE_IMAGE_IO_CACHED);
    ck_assert_msg(again != NULL, "%s", virGetLastErrorMessage());
    ck_assert_uint_gt(kvmsaveImageReaderHeader(again)->headerSize,
                      kvmsaveImageReaderHeader(r)->headerSize);
    ck_assert_uint_eq(kvmsaveImageReaderHeader(again)->indexLen,
                      kvmsaveImageReaderHeader(r)->indexLen);
    ck_assert_str_eq(kvmsaveImageReaderHeader(again)->xml, xml);
    ck_assert_msg(kvmsaveImageVerify(again) == 0, "%s", virGetLastErrorMessage());
    KT_ASSERT_NO_ERROR();
}
END_TEST


static Suite *
pageindexSuite(void)
{
    Suite *s = suite_create("kvmsave_pageindex");
    TCase *tc;

    tc = ktTCase("runs", 60);
    tcase_add_test(tc, test_back_to_back_records_make_one_run);
    tcase_add_test(tc, test_runs_break_at_page_gaps);
    tcase_add_test(tc, test_runs_break_at_section_boundaries);
    tcase_add_test(tc, test_named_records_start_runs);
    tcase_add_test(tc, test_zero_and_data_records_mixed_in_a_run);
    tcase_add_test(tc, test_resent_page_splits_its_run_and_the_last_record_wins);
    tcase_add_test(tc, test_resent_run_edges_shrink_or_drop_their_runs);
    tcase_add_test(tc, test_a_new_run_over_older_ones_replaces_them);
    tcase_add_loop_test(tc, test_random_streams_match_a_brute_force_oracle, 0, 8);
    tcase_add_test(tc, test_an_index_without_records_has_no_runs);
    tcase_add_test(tc, test_round_trip_keeps_the_stream_and_chunk_fields);
    tcase_add_test(tc, test_lookup_outside_the_blocks_is_an_error);
    tcase_add_test(tc, test_set_directory_moves_the_chunks_only);
    suite_add_tcase(s, tc);

    tc = ktTCase("limits", 60);
    tcase_add_test(tc, test_gives_up_past_the_record_limit);
    tcase_add_test(tc, test_gives_up_past_the_run_limit_within_its_memory_bound);
    tcase_add_test(tc, test_a_resent_page_that_splits_a_run_counts_against_the_run_limit);
    tcase_add_test(tc, test_gives_up_on_blocks_larger_than_the_reserve);
    tcase_add_test(tc, test_gives_up_on_more_blocks_than_an_index_lists);
    tcase_add_test(tc, test_gives_up_on_a_mapped_ram_stream);
    tcase_add_test(tc, test_encode_refuses_a_stream_whose_ram_does_not_end_first);
    tcase_add_test(tc, test_encode_refuses_an_index_larger_than_its_reserve);
    tcase_add_test(tc, test_reserve_is_half_a_mib_at_8_gib_and_under_3_mib_at_64_gib);
    tcase_add_test(tc, test_builder_memory_for_a_64_gib_guest_is_under_6_mib);
    suite_add_tcase(s, tc);

    tc = ktTCase("damage", 60);
    tcase_add_test(tc, test_undamaged_index_of_the_damage_tests_decodes);
    tcase_add_loop_test(tc, test_decode_refuses_each_damage_with_its_message,
                        0, G_N_ELEMENTS(damages));
    tcase_add_test(tc, test_check_stream_refuses_other_blocks);
    suite_add_tcase(s, tc);

    tc = ktTCase("qemu", 60);
    tcase_add_unchecked_fixture(tc, scratchSetup, scratchTeardown);
    tcase_add_test(tc, test_qemu_7_2_stream_indexed_as_walked);
    tcase_add_test(tc, test_qemu_10_0_stream_indexed_as_walked);
    tcase_add_loop_test(tc, test_saved_index_verified_against_its_stream,
                        0, G_N_ELEMENTS(savedCases));
    tcase_add_test(tc, test_verify_finds_an_index_that_misses_a_page);
    tcase_add_test(tc, test_verify_finds_a_directory_that_points_elsewhere);
    tcase_add_loop_test(tc, test_rewritten_image_keeps_its_index, 0,
                        G_N_ELEMENTS(savedCases));
    suite_add_tcase(s, tc);
    return s;
}


int
main(void)
{
    return ktRunSuite(pageindexSuite);
}
