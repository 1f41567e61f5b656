/*
 * kvmsave_pageindexpriv.h: what the page index's builder and its reader
 * share
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "kvmsave_pageindex.h"

/* A continued record: its be64 header, then a fill byte (9 bytes in
 * all) or a page, which adds 4095. */
#define RECORD_ZERO 9
#define RECORD_DATA_MORE (KVMSAVE_VM_PAGE_SIZE - 1)


static inline bool
kvmsavePageIndexBit(const uint64_t *bits, uint64_t i)
{
    return (bits[i / 64] >> (i % 64)) & 1;
}


/* The bits set in [@from, @to). */
static inline uint64_t
kvmsavePageIndexOnes(const uint64_t *bits, uint64_t from, uint64_t to)
{
    uint64_t n = 0;

    while (from < to && from % 64 != 0) {
        n += kvmsavePageIndexBit(bits, from);
        from++;
    }
    for (; to - from >= 64; from += 64)
        n += __builtin_popcountll(bits[from / 64]);
    for (; from < to; from++)
        n += kvmsavePageIndexBit(bits, from);
    return n;
}
