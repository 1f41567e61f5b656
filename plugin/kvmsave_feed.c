/*
 * kvmsave_feed.c: the threads that feed a restore's QEMU the image's
 * streams, chunk by checked chunk
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include "full-write.h"

#include "kvmsave_feed.h"
#include "kvmsave_conn.h"
#include "kvmsave_event.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.feed");

/* A FIFO's buffer: QEMU reads its stream in small pieces, and 64 KiB
 * would have the feeder wake for each. */
#define KVMSAVE_FEED_PIPE_SIZE (1024 * 1024)

typedef struct _kvmsaveFeedStream kvmsaveFeedStream;
struct _kvmsaveFeedStream {
    kvmsaveFeed *feed;
    int fd;                     /* our end of QEMU's stream */
    kvmsaveImageReader *reader;
    kvmsaveImageReader *own;    /* reader of one of several streams */
    volatile gint stop;
    bool writing;               /* failed writing to QEMU, not reading */
    int rc;
    virErrorPtr err;
    int order;                  /* how many had failed before this one */
    virDomainPtr dom;           /* multifd: the QEMU to kill on failure */
    /* The FIFO of the inner driver's own restore. */
    char *fifo;
    unsigned char *head;
    size_t headLen;
    virConnectPtr inner;
    unsigned char uuid[VIR_UUID_BUFLEN];
    unsigned char held;         /* the last byte written so far */
    bool haveHeld;
};

struct _kvmsaveFeed {
    kvmsaveFeedStream *streams;
    GThread **threads;
    size_t n;
    kvmsaveImageReader *reader;
    kvmsaveJob *job;
    gint failures;
    GMutex lock;
    GCond cond;
    size_t done;                /* feeders that ended, under @lock */
};


kvmsaveFeed *
kvmsaveFeedNew(kvmsaveImageReader *reader, kvmsaveJob *job)
{
    kvmsaveFeed *feed = g_new0(kvmsaveFeed, 1);
    size_t i;

    feed->n = kvmsaveImageReaderHeader(reader)->streams;
    feed->streams = g_new0(kvmsaveFeedStream, feed->n);
    feed->threads = g_new0(GThread *, feed->n);
    feed->reader = reader;
    feed->job = job;
    g_mutex_init(&feed->lock);
    g_cond_init(&feed->cond);
    for (i = 0; i < feed->n; i++) {
        feed->streams[i].feed = feed;
        feed->streams[i].fd = -1;
        feed->streams[i].reader = reader;
    }
    return feed;
}


size_t
kvmsaveFeedStreams(kvmsaveFeed *feed)
{
    return feed->n;
}


/* Open the FIFO (waiting for the inner driver to open it) and write the
 * stock header ahead of the stream. */
static int
kvmsaveFeedOpenFifo(kvmsaveFeedStream *st)
{
    if ((st->fd = open(st->fifo, O_WRONLY | O_CLOEXEC)) < 0) {
        virReportSystemError(errno, _("cannot open FIFO '%s' to pass the guest's state"),
                             st->fifo);
        return -1;
    }
    ignore_value(fcntl(st->fd, F_SETPIPE_SZ, KVMSAVE_FEED_PIPE_SIZE));
    if (full_write(st->fd, st->head, st->headLen) != st->headLen) {
        virReportSystemError(errno, "%s", _("cannot feed the saved state to QEMU"));
        st->writing = true;
        return -1;
    }
    return 0;
}


/* Write a chunk; with a FIFO, all but its last byte, which goes with the
 * next chunk (or at the end). */
static int
kvmsaveFeedWrite(kvmsaveFeedStream *st, const unsigned char *data, size_t len)
{
    if (!st->fifo)
        return full_write(st->fd, data, len) == len ? 0 : -1;
    if (len == 0)
        return 0;
    if (st->haveHeld && full_write(st->fd, &st->held, 1) != 1)
        return -1;
    if (full_write(st->fd, data, len - 1) != len - 1)
        return -1;
    st->held = data[len - 1];
    st->haveHeld = true;
    return 0;
}


/* The image's totals passed: the job commits, and QEMU gets the last
 * byte. */
static int
kvmsaveFeedEnd(kvmsaveFeedStream *st)
{
    if (!st->fifo)
        return 0;
    if (!kvmsaveJobCommit(st->feed->job)) {
        kvmsaveJobReportCancelled(st->feed->job);
        return -1;
    }
    if (st->haveHeld && full_write(st->fd, &st->held, 1) != 1) {
        virReportSystemError(errno, "%s", _("cannot feed the saved state to QEMU"));
        st->writing = true;
        return -1;
    }
    return 0;
}


/* A feeder failed: stop the QEMU that might otherwise go on (see the
 * header). Killing it ends the restore; the guest never ran. */
static void
kvmsaveFeedKill(kvmsaveFeedStream *st)
{
    g_autoptr(virDomain) dom = NULL;

    if (g_atomic_int_get(&st->stop))
        return;
    if (st->dom && st->order == 0 && virDomainIsActive(st->dom) == 1) {
        unsigned char uuid[VIR_UUID_BUFLEN];

        if (virDomainGetUUID(st->dom, uuid) == 0)
            kvmsaveEventsExpectDestroy(uuid, VIR_DOMAIN_EVENT_STOPPED_FAILED);
        ignore_value(virDomainDestroy(st->dom));
    } else if (st->inner && (dom = virDomainLookupByUUID(st->inner, st->uuid)) &&
               virDomainIsActive(dom) == 1) {
        kvmsaveEventsExpect(st->uuid, VIR_DOMAIN_EVENT_SHUTDOWN,
                            VIR_DOMAIN_EVENT_SHUTDOWN_HOST, -1, 0);
        kvmsaveEventsExpect(st->uuid, VIR_DOMAIN_EVENT_STOPPED,
                            VIR_DOMAIN_EVENT_STOPPED_DESTROYED, -1, 0);
        ignore_value(virDomainDestroy(dom));
    }
    virResetLastError();
}


static void
kvmsaveFeedDone(kvmsaveFeedStream *st)
{
    VIR_FORCE_CLOSE(st->fd);
    g_mutex_lock(&st->feed->lock);
    st->feed->done++;
    g_cond_signal(&st->feed->cond);
    g_mutex_unlock(&st->feed->lock);
}


static gpointer
kvmsaveFeedThread(gpointer opaque)
{
    kvmsaveFeedStream *st = opaque;
    kvmsaveJob *job = st->feed->job;
    const unsigned char *data;
    size_t len;
    sigset_t set;
    int rc;

    /* A QEMU that gave up makes our write fail with EPIPE, not kill us. */
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    st->rc = -1;
    if (st->fifo && kvmsaveFeedOpenFifo(st) < 0)
        goto error;
    while ((rc = kvmsaveImageReadChunk(st->reader, &data, &len)) > 0) {
        if (g_atomic_int_get(&st->stop))
            goto stopped;
        /* Nobody else watches the job while the inner driver restores. */
        if (st->fifo && kvmsaveJobIsCancelled(job)) {
            kvmsaveJobReportCancelled(job);
            goto error;
        }
        if (kvmsaveFeedWrite(st, data, len) < 0) {
            virReportSystemError(errno, "%s",
                                 _("cannot feed the saved state to QEMU"));
            st->writing = true;
            goto error;
        }
        kvmsaveJobAddProcessed(job, kvmsaveImageReaderLastProgress(st->reader));
    }
    if (rc < 0 || kvmsaveFeedEnd(st) < 0)
        goto error;
    st->rc = 0;
    kvmsaveFeedDone(st);
    return NULL;

 error:
    st->err = virErrorCopyNew(virGetLastError());
    /* The first to fail has the cause; the others' broken pipes follow. */
    st->order = g_atomic_int_add(&st->feed->failures, 1);
    kvmsaveFeedKill(st);
 stopped:
    /* QEMU sees the stream end early and fails to load it. */
    kvmsaveFeedDone(st);
    return NULL;
}


int
kvmsaveFeedStart(kvmsaveFeed *feed, size_t i, int fd, virDomainPtr dom)
{
    kvmsaveFeedStream *st = &feed->streams[i];

    st->fd = fd;
    if (feed->n > 1) {
        if (!(st->own = kvmsaveImageReaderOpenStream(feed->reader, i)))
            return -1;
        st->reader = st->own;
        st->dom = dom;
    }
    feed->threads[i] = g_thread_new("kvmsave-restore", kvmsaveFeedThread, st);
    return 0;
}


void
kvmsaveFeedStartFifo(kvmsaveFeed *feed, const char *fifo,
                     const unsigned char *head, size_t headLen,
                     virConnectPtr inner, const unsigned char *uuid)
{
    kvmsaveFeedStream *st = &feed->streams[0];

    st->fifo = g_strdup(fifo);
    st->head = g_malloc(headLen);
    memcpy(st->head, head, headLen);
    st->headLen = headLen;
    st->inner = inner;
    memcpy(st->uuid, uuid, VIR_UUID_BUFLEN);
    feed->threads[0] = g_thread_new("kvmsave-restore", kvmsaveFeedThread, st);
}


int
kvmsaveFeedWait(kvmsaveFeed *feed)
{
    int ret = 0;
    size_t i;

    g_mutex_lock(&feed->lock);
    while (feed->done < feed->n) {
        /* A cancel is looked at ten times a second. */
        gint64 until = g_get_monotonic_time() + G_TIME_SPAN_SECOND / 10;

        if (kvmsaveJobIsCancelled(feed->job)) {
            ret = -2;
            break;
        }
        if (g_atomic_int_get(&feed->failures) > 0) {
            ret = -1;
            break;
        }
        g_cond_wait_until(&feed->cond, &feed->lock, until);
    }
    g_mutex_unlock(&feed->lock);
    for (i = 0; ret == 0 && i < feed->n; i++) {
        if (feed->streams[i].rc < 0)
            ret = -1;
    }
    return ret;
}


int
kvmsaveFeedJoin(kvmsaveFeed *feed, bool stop)
{
    int rc = 0;
    size_t i;

    for (i = 0; i < feed->n; i++) {
        kvmsaveFeedStream *st = &feed->streams[i];

        if (!feed->threads[i])
            continue;
        if (stop) {
            g_atomic_int_set(&st->stop, 1);
            /* A feeder may still wait for a reader of its FIFO. */
            if (st->fifo) {
                int fd = open(st->fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);

                VIR_FORCE_CLOSE(fd);
            }
        }
        g_thread_join(g_steal_pointer(&feed->threads[i]));
        if (st->rc < 0)
            rc = -1;
    }
    return rc;
}


virErrorPtr
kvmsaveFeedFree(kvmsaveFeed *feed, bool *writing)
{
    kvmsaveFeedStream *first = NULL;
    virErrorPtr err = NULL;
    size_t i;

    if (!feed)
        return NULL;
    ignore_value(kvmsaveFeedJoin(feed, true));
    for (i = 0; i < feed->n; i++) {
        if (feed->streams[i].err &&
            (!first || feed->streams[i].order < first->order))
            first = &feed->streams[i];
    }
    if (first) {
        err = g_steal_pointer(&first->err);
        *writing = first->writing;
    }
    for (i = 0; i < feed->n; i++) {
        VIR_FORCE_CLOSE(feed->streams[i].fd);
        virFreeError(feed->streams[i].err);
        kvmsaveImageReaderFree(feed->streams[i].own);
        g_free(feed->streams[i].fifo);
        g_free(feed->streams[i].head);
    }
    g_free(feed->streams);
    g_free(feed->threads);
    g_mutex_clear(&feed->lock);
    g_cond_clear(&feed->cond);
    g_free(feed);
    return err;
}
