/*
 * kvmsave_chunkq.h: a bounded queue of chunk buffers, worked on in
 * parallel and handed out in order
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * One producer fills chunks in sequence, a pool of workers transforms them
 * (checksum, compress, verify, decompress) in any order, one consumer takes
 * them in the producer's order. The queue holds a fixed number of slots, so
 * memory stays bounded whatever the stream's length; a producer that gets
 * ahead waits for the consumer.
 */
#pragma once

#include "internal.h"

typedef struct _kvmsaveChunk kvmsaveChunk;
struct _kvmsaveChunk {
    size_t slot;                /* index of this slot in the queue */
    uint64_t seq;               /* position in the stream */
    unsigned char *buf;         /* KVMSAVE_IMAGE_ALIGN-aligned, bufSize */
    size_t len;                 /* bytes of buf in use */
    bool end;                   /* no chunk follows; buf holds no data */
    virErrorPtr err;            /* set by whoever found this chunk bad */

    /* Left to the users of the queue: what the producer found and what
     * the worker made of it. Kept between uses of the slot. */
    unsigned char *out;         /* g_malloc'd by the worker when needed */
    size_t outSize;
    void *ctx;                  /* a worker's per-slot state, freed by ctxFree */
    const unsigned char *data;  /* the result */
    size_t dataLen;
    unsigned char head[32];
    uint64_t index;             /* the chunk's number in the file */
    uint64_t offset;
    uint32_t encoding;
    uint32_t stream;
    uint32_t rawLen;
    uint32_t storedLen;
    uint32_t crc;
};

typedef struct _kvmsaveChunkQueue kvmsaveChunkQueue;

/* Runs in a worker thread; returns -1 with an error reported (in the
 * worker's thread) when the chunk is bad. Chunks already marked bad or
 * marking the end are not given to it. */
typedef int (*kvmsaveChunkWorkFunc)(kvmsaveChunk *chunk, void *opaque);

kvmsaveChunkQueue *kvmsaveChunkQueueNew(size_t slots, size_t workers,
                                        size_t bufSize,
                                        kvmsaveChunkWorkFunc work,
                                        GDestroyNotify ctxFree,
                                        void *opaque);
/* Stops the workers and frees every slot. */
void kvmsaveChunkQueueFree(kvmsaveChunkQueue *q);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveChunkQueue, kvmsaveChunkQueueFree);

/* Abort *@q, join *@thread (its producer or consumer), free the queue;
 * both set to NULL. Nothing when *@q is NULL. */
void kvmsaveChunkQueueStop(kvmsaveChunkQueue **q, GThread **thread);

/* Producer: the next slot to fill, waiting until the consumer gave it
 * back; NULL once the queue is aborted. The same slot is returned until it
 * is pushed. */
kvmsaveChunk *kvmsaveChunkQueueGetFree(kvmsaveChunkQueue *q);
void kvmsaveChunkQueuePush(kvmsaveChunkQueue *q, kvmsaveChunk *chunk);

/* Consumer: the next chunk in order once its work is done; NULL once the
 * queue is aborted. Give it back with Release when done with its data. */
kvmsaveChunk *kvmsaveChunkQueuePop(kvmsaveChunkQueue *q);
void kvmsaveChunkQueueRelease(kvmsaveChunkQueue *q, kvmsaveChunk *chunk);

/* Wake everyone waiting: GetFree and Pop return NULL from now on. */
void kvmsaveChunkQueueAbort(kvmsaveChunkQueue *q);

/* Workers a pipeline uses unless told otherwise: one per CPU, at most 4. */
size_t kvmsaveChunkQueueDefaultWorkers(void);
