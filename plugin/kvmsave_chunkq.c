/*
 * kvmsave_chunkq.c: a bounded queue of chunk buffers, worked on in
 * parallel and handed out in order
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Slot i holds the chunks numbered i, i + slots, i + 2 * slots... so the
 * order is kept without any list: the producer waits for the slot of the
 * next number to be free, the consumer for it to be done. One mutex and
 * one condition serve all of it; the work on a chunk (milliseconds) dwarfs
 * the wake-ups. They are libvirt's (pthread) rather than GLib's (futex),
 * which helgrind and the sanitizers understand.
 */
#include <config.h>

#include "kvmsave_chunkq.h"
#include "kvmsave_util.h"
#include "virerror.h"
#include "virthread.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

typedef enum {
    CHUNK_FREE,
    CHUNK_QUEUED,
    CHUNK_WORKING,
    CHUNK_DONE,
    CHUNK_TAKEN,
} kvmsaveChunkState;

struct _kvmsaveChunkQueue {
    virMutex lock;
    virCond cond;
    kvmsaveChunk *chunks;
    kvmsaveChunkState *state;
    size_t nslots;
    GThread **workers;
    size_t nworkers;
    uint64_t nextPush;
    uint64_t nextWork;
    uint64_t nextPop;
    bool aborted;
    kvmsaveChunkWorkFunc work;
    GDestroyNotify ctxFree;
    void *opaque;
};


static gpointer
kvmsaveChunkQueueWorker(gpointer opaque)
{
    kvmsaveChunkQueue *q = opaque;

    virMutexLock(&q->lock);
    for (;;) {
        kvmsaveChunk *c;

        while (!q->aborted && q->nextWork == q->nextPush)
            ignore_value(virCondWait(&q->cond, &q->lock));
        if (q->aborted)
            break;
        c = &q->chunks[q->nextWork % q->nslots];
        q->state[c->slot] = CHUNK_WORKING;
        q->nextWork++;
        virMutexUnlock(&q->lock);

        if (!c->end && !c->err && q->work(c, q->opaque) < 0)
            c->err = virErrorCopyNew(virGetLastError());
        virResetLastError();

        virMutexLock(&q->lock);
        q->state[c->slot] = CHUNK_DONE;
        virCondBroadcast(&q->cond);
    }
    virMutexUnlock(&q->lock);
    return NULL;
}


size_t
kvmsaveChunkQueueDefaultWorkers(void)
{
    return CLAMP(g_get_num_processors(), 1, 4);
}


kvmsaveChunkQueue *
kvmsaveChunkQueueNew(size_t slots, size_t workers, size_t bufSize,
                     kvmsaveChunkWorkFunc work, GDestroyNotify ctxFree,
                     void *opaque)
{
    kvmsaveChunkQueue *q = g_new0(kvmsaveChunkQueue, 1);
    size_t i;

    if (virMutexInit(&q->lock) < 0 || virCondInit(&q->cond) < 0)
        abort(); /* only fails for lack of memory */
    q->nslots = MAX(slots, 2);
    q->chunks = g_new0(kvmsaveChunk, q->nslots);
    q->state = g_new0(kvmsaveChunkState, q->nslots);
    for (i = 0; i < q->nslots; i++) {
        q->chunks[i].slot = i;
        /* Large and aligned: O_DIRECT reads straight into it. Its pages
         * are only touched as far as chunks fill them. */
        q->chunks[i].buf = kvmsaveAlignedAlloc(bufSize);
    }
    q->work = work;
    q->ctxFree = ctxFree;
    q->opaque = opaque;
    q->nworkers = MAX(workers, 1);
    q->workers = g_new0(GThread *, q->nworkers);
    for (i = 0; i < q->nworkers; i++)
        q->workers[i] = g_thread_new("kvmsave-chunk", kvmsaveChunkQueueWorker, q);
    return q;
}


void
kvmsaveChunkQueueAbort(kvmsaveChunkQueue *q)
{
    virMutexLock(&q->lock);
    q->aborted = true;
    virCondBroadcast(&q->cond);
    virMutexUnlock(&q->lock);
}


void
kvmsaveChunkQueueFree(kvmsaveChunkQueue *q)
{
    size_t i;

    if (!q)
        return;
    kvmsaveChunkQueueAbort(q);
    for (i = 0; i < q->nworkers; i++)
        g_thread_join(q->workers[i]);
    for (i = 0; i < q->nslots; i++) {
        kvmsaveChunk *c = &q->chunks[i];

        free(c->buf);
        g_free(c->out);
        if (c->ctx && q->ctxFree)
            q->ctxFree(c->ctx);
        virFreeError(c->err);
    }
    g_free(q->workers);
    g_free(q->chunks);
    g_free(q->state);
    virMutexDestroy(&q->lock);
    ignore_value(virCondDestroy(&q->cond));
    g_free(q);
}


void
kvmsaveChunkQueueStop(kvmsaveChunkQueue **q, GThread **thread)
{
    if (!*q)
        return;
    kvmsaveChunkQueueAbort(*q);
    if (*thread)
        g_thread_join(*thread);
    *thread = NULL;
    g_clear_pointer(q, kvmsaveChunkQueueFree);
}


kvmsaveChunk *
kvmsaveChunkQueueGetFree(kvmsaveChunkQueue *q)
{
    kvmsaveChunk *c;

    virMutexLock(&q->lock);
    c = &q->chunks[q->nextPush % q->nslots];
    while (!q->aborted && q->state[c->slot] != CHUNK_FREE)
        ignore_value(virCondWait(&q->cond, &q->lock));
    if (q->aborted)
        c = NULL;
    virMutexUnlock(&q->lock);
    return c;
}


void
kvmsaveChunkQueuePush(kvmsaveChunkQueue *q, kvmsaveChunk *c)
{
    virMutexLock(&q->lock);
    c->seq = q->nextPush++;
    q->state[c->slot] = CHUNK_QUEUED;
    virCondBroadcast(&q->cond);
    virMutexUnlock(&q->lock);
}


kvmsaveChunk *
kvmsaveChunkQueuePop(kvmsaveChunkQueue *q)
{
    kvmsaveChunk *c;

    virMutexLock(&q->lock);
    c = &q->chunks[q->nextPop % q->nslots];
    while (!q->aborted &&
           (q->nextPop == q->nextPush || q->state[c->slot] != CHUNK_DONE))
        ignore_value(virCondWait(&q->cond, &q->lock));
    if (q->aborted) {
        c = NULL;
    } else {
        q->state[c->slot] = CHUNK_TAKEN;
        q->nextPop++;
    }
    virMutexUnlock(&q->lock);
    return c;
}


void
kvmsaveChunkQueueRelease(kvmsaveChunkQueue *q, kvmsaveChunk *c)
{
    virMutexLock(&q->lock);
    g_clear_pointer(&c->err, virFreeError);
    c->end = false;
    c->len = 0;
    c->data = NULL;
    c->dataLen = 0;
    q->state[c->slot] = CHUNK_FREE;
    virCondBroadcast(&q->cond);
    virMutexUnlock(&q->lock);
}
