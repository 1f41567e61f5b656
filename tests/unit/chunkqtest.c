/*
 * chunkqtest.c: the chunk queue: worked on in any order, handed out in
 * the producer's, bounded, a bad chunk kept bad, an abort wakes everyone
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include "testutil.h"
#include "kvmsave_chunkq.h"

#define VIR_FROM_THIS VIR_FROM_NONE

#define BUF 64
#define SLOTS 4
#define CHUNKS 200


/* A worker's transformation: each byte + 1, after a delay that depends
 * on the chunk so that workers finish out of order; chunk 77 is bad. */
static int
work(kvmsaveChunk *c, void *opaque)
{
    gint *busy = opaque;
    size_t i;

    g_atomic_int_inc(busy);
    g_usleep((c->seq * 7919) % 5 * 200);
    for (i = 0; i < c->len; i++)
        c->buf[i]++;
    c->data = c->buf;
    c->dataLen = c->len;
    g_atomic_int_add(busy, -1);
    if (c->seq == 77) {
        virReportError(VIR_ERR_OPERATION_FAILED, "chunk %llu is bad",
                       (unsigned long long) c->seq);
        return -1;
    }
    return 0;
}


static gpointer
produce(gpointer opaque)
{
    kvmsaveChunkQueue *q = opaque;
    size_t n;

    for (n = 0; n < CHUNKS; n++) {
        kvmsaveChunk *c = kvmsaveChunkQueueGetFree(q);

        if (!c)
            return NULL;
        memset(c->buf, n % 251, BUF);
        c->len = 1 + n % BUF;
        kvmsaveChunkQueuePush(q, c);
    }
    return NULL;
}


START_TEST(test_chunks_come_out_in_order_transformed)
{
    gint busy = 0;
    g_autoptr(kvmsaveChunkQueue) q = kvmsaveChunkQueueNew(SLOTS, 3, BUF, work,
                                                          NULL, &busy);
    GThread *producer = g_thread_new("producer", produce, q);
    size_t n;

    for (n = 0; n < CHUNKS; n++) {
        kvmsaveChunk *c = kvmsaveChunkQueuePop(q);

        ck_assert_ptr_nonnull(c);
        ck_assert_uint_eq(c->seq, n);
        ck_assert_uint_eq(c->dataLen, 1 + n % BUF);
        ck_assert_uint_eq(c->data[0], (n % 251 + 1) & 0xff);
        if (n == 77) {
            ck_assert_ptr_nonnull(c->err);
            ck_assert_ptr_nonnull(strstr(c->err->message, "chunk 77 is bad"));
        } else {
            ck_assert_ptr_null(c->err);
        }
        kvmsaveChunkQueueRelease(q, c);
    }
    g_thread_join(producer);
}
END_TEST


START_TEST(test_producer_waits_for_the_consumer)
{
    gint busy = 0;
    g_autoptr(kvmsaveChunkQueue) q = kvmsaveChunkQueueNew(SLOTS, 2, BUF, work,
                                                          NULL, &busy);
    GThread *producer = g_thread_new("producer", produce, q);
    kvmsaveChunk *c;

    /* Nobody pops: the producer fills SLOTS chunks and waits. */
    g_usleep(200 * 1000);
    ck_assert_ptr_nonnull(c = kvmsaveChunkQueuePop(q));
    ck_assert_uint_eq(c->seq, 0);
    kvmsaveChunkQueueRelease(q, c);
    g_usleep(100 * 1000);
    /* An abort wakes the producer and ends the pops. */
    kvmsaveChunkQueueAbort(q);
    g_thread_join(producer);
    ck_assert_ptr_null(kvmsaveChunkQueuePop(q));
    ck_assert_ptr_null(kvmsaveChunkQueueGetFree(q));
}
END_TEST


START_TEST(test_stop_joins_and_frees)
{
    gint busy = 0;
    kvmsaveChunkQueue *q = kvmsaveChunkQueueNew(SLOTS, 2, BUF, work, NULL, &busy);
    GThread *producer = g_thread_new("producer", produce, q);

    g_usleep(50 * 1000);
    kvmsaveChunkQueueStop(&q, &producer);
    ck_assert_ptr_null(q);
    ck_assert_ptr_null(producer);
    /* Nothing when already stopped. */
    kvmsaveChunkQueueStop(&q, &producer);
}
END_TEST


static Suite *
chunkqSuite(void)
{
    Suite *s = suite_create("chunkq");
    TCase *tc = ktTCase("queue", 30);

    tcase_add_test(tc, test_chunks_come_out_in_order_transformed);
    tcase_add_test(tc, test_producer_waits_for_the_consumer);
    tcase_add_test(tc, test_stop_joins_and_frees);
    suite_add_tcase(s, tc);
    return s;
}


int
main(void)
{
    return ktRunSuite(chunkqSuite);
}
