/*
 * kvmsave_feed.c: the threads that feed a restore's QEMU the image's
 * streams, chunk by checked chunk
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "full-write.h"

#include "kvmsave_feed.h"
#include "kvmsave_conn.h"
#include "kvmsave_event.h"
#include "kvmsave_multifd.h"
#include "kvmsave_stream.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.feed");

/* A FIFO's buffer: QEMU reads its stream in small pieces, and 64 KiB
 * would have the feeder wake for each. */
#define KVMSAVE_FEED_PIPE_SIZE (1024 * 1024)

/* How often (ms) a feeder waiting on its FIFO's reader looks whether the
 * restore is being undone. */
#define KVMSAVE_FEED_FIFO_POLL 20

typedef struct _kvmsaveFeedStream kvmsaveFeedStream;
struct _kvmsaveFeedStream {
    kvmsaveImageReader *reader;
    kvmsaveImageReader *own;    /* reader of one of several streams */
    bool writing;               /* failed writing to QEMU, not reading */
    virDomainPtr dom;           /* multifd: the QEMU to kill on failure */
    int qemuPidfd;              /* ...its process, or -1 */
    /* The FIFO of the inner driver's own restore. */
    char *fifo;
    unsigned char *head;
    size_t headLen;
    virConnectPtr inner;
    unsigned char uuid[VIR_UUID_BUFLEN];
    unsigned char held;         /* the last byte written so far */
    bool haveHeld;
    bool fed;                   /* some of the stream reached the FIFO */
};

struct _kvmsaveFeed {
    kvmsaveStreamSet *set;
    kvmsaveFeedStream *streams;
    size_t n;
    kvmsaveImageReader *reader;
    kvmsaveJob *job;
    volatile gint stop;         /* the restore is being undone */
};


/* Write @copies of the stock header into the just opened FIFO @fd, in one
 * write (see kvmsaveFeedOpenFifo). */
static int
kvmsaveFeedWriteHead(kvmsaveFeedStream *st, int fd, size_t copies)
{
    g_autofree unsigned char *buf = NULL;
    const unsigned char *data = st->head;
    size_t len = copies * st->headLen;
    size_t i;
    int size;

    ignore_value(fcntl(fd, F_SETPIPE_SZ, KVMSAVE_FEED_PIPE_SIZE));
    if (copies > 1) {
        /* Failing before anything is written, the first reader finds an
         * empty file, and libvirt opens the FIFO no more. */
        if ((size = fcntl(fd, F_GETPIPE_SZ)) < 0 || (size_t) size < len) {
            virReportError(VIR_ERR_INTERNAL_ERROR,
                           _("the saved state's header does not fit twice into FIFO '%s'"),
                           st->fifo);
            return -1;
        }
        data = buf = g_malloc(len);
        for (i = 0; i < copies; i++)
            memcpy(buf + i * st->headLen, st->head, st->headLen);
    }
    if (full_write(fd, data, len) != len) {
        virReportSystemError(errno, "%s", _("cannot feed the saved state to QEMU"));
        st->writing = true;
        return -1;
    }
    return 0;
}


#ifdef WITH_LIBVIRT_RESTORE_READS_HEADER_TWICE
/* Wait until the FIFO @fd is read empty: the second reader took its copy
 * of the header. 1: the restore was undone first. */
static int
kvmsaveFeedWaitHeadRead(kvmsaveFeed *feed, kvmsaveFeedStream *st, int fd)
{
    int left;

    for (;;) {
        if (g_atomic_int_get(&feed->stop))
            return 1;
        if (ioctl(fd, FIONREAD, &left) < 0) {
            virReportSystemError(errno, _("cannot wait on FIFO '%s'"), st->fifo);
            return -1;
        }
        if (left == 0)
            break;
        ignore_value(poll(NULL, 0, KVMSAVE_FEED_FIFO_POLL));
    }
    VIR_DEBUG("Both headers read from FIFO '%s'", st->fifo);
    if (kvmsaveJobIsCancelled(feed->job)) {
        kvmsaveJobReportCancelled(feed->job);
        return -1;
    }
    return 0;
}
#endif /* WITH_LIBVIRT_RESTORE_READS_HEADER_TWICE */


/* Open the FIFO into *@fd (waiting for the inner driver to open it) and
 * write the stock header ahead of the stream. Returns 1 if the restore was
 * undone meanwhile.
 *
 * Where the inner driver opens the FIFO twice in turn, each time reading
 * exactly the header (its read of the image's metadata, closed before the
 * open it hands QEMU), two copies go in, in one write: before the first
 * reader can have read the first and gone (a write with no reader fails).
 * The pipe keeps the second while the feeder holds its end, and the
 * second reader's open does not block, as a writer is there. (Closing the
 * FIFO and opening it again between the two would race with the second
 * open, which may come before the feeder sees the first reader go.) The
 * stream follows once the second copy is read, so that it finds a reader.
 * A cancelled job does not end that wait: libvirt, about to open the FIFO
 * again, would wait for a writer forever; it gets the end of the file
 * instead. */
static int
kvmsaveFeedOpenFifo(kvmsaveFeed *feed, kvmsaveFeedStream *st, int *fd)
{
    if ((*fd = open(st->fifo, O_WRONLY | O_CLOEXEC)) < 0) {
        virReportSystemError(errno, _("cannot open FIFO '%s' to pass the guest's state"),
                             st->fifo);
        return -1;
    }
#ifdef WITH_LIBVIRT_RESTORE_READS_HEADER_TWICE
    if (kvmsaveFeedWriteHead(st, *fd, 2) < 0)
        return -1;
    return kvmsaveFeedWaitHeadRead(feed, st, *fd);
#else
    (void) feed;
    return kvmsaveFeedWriteHead(st, *fd, 1);
#endif
}


/* Write a chunk; with a FIFO, all but its last byte, which goes with the
 * next chunk (or at the end). */
static int
kvmsaveFeedWrite(kvmsaveFeedStream *st, int fd, const unsigned char *data,
                 size_t len)
{
    if (!st->fifo)
        return full_write(fd, data, len) == len ? 0 : -1;
    if (len == 0)
        return 0;
    if (st->haveHeld && full_write(fd, &st->held, 1) != 1)
        return -1;
    if (full_write(fd, data, len - 1) != len - 1)
        return -1;
    st->fed |= st->haveHeld || len > 1;
    st->held = data[len - 1];
    st->haveHeld = true;
    return 0;
}


/* A feeder that failed before any of the stream reached its FIFO leaves
 * QEMU one byte that begins no migration stream. An empty FIFO without a
 * writer polls as POLLHUP alone, and QEMU's fd: migration waits for
 * G_IO_IN only: started after the feeder closed (the failure came before
 * the inner driver launched it, too early to destroy it), it would spin in
 * "setup" forever, and the inner driver's restore with it. With the byte
 * it reads, finds no stream and fails. */
static void
kvmsaveFeedSpoilFifo(kvmsaveFeedStream *st, int fd)
{
    static const unsigned char spoil = 0;

    if (!st->fifo || fd < 0 || st->fed)
        return;
    VIR_DEBUG("Feeder of FIFO '%s' failed before the stream: spoiling it", st->fifo);
    ignore_value(full_write(fd, &spoil, 1));
}


/* The image's totals passed: the job commits, and QEMU gets the last
 * byte. */
static int
kvmsaveFeedEnd(kvmsaveFeed *feed, kvmsaveFeedStream *st, int fd)
{
    if (!st->fifo)
        return 0;
    if (!kvmsaveJobCommit(feed->job)) {
        kvmsaveJobReportCancelled(feed->job);
        return -1;
    }
    if (st->haveHeld && full_write(fd, &st->held, 1) != 1) {
        virReportSystemError(errno, "%s", _("cannot feed the saved state to QEMU"));
        st->writing = true;
        return -1;
    }
    return 0;
}


/* Feeder @i failed: stop the QEMU that might otherwise go on (see the
 * header). Killing it ends the restore; the guest never ran. */
static void
kvmsaveFeedKill(size_t i, bool first, void *opaque)
{
    kvmsaveFeed *feed = opaque;
    kvmsaveFeedStream *st = &feed->streams[i];
    g_autoptr(virDomain) dom = NULL;

    if (g_atomic_int_get(&feed->stop))
        return;
    if (st->dom && first && virDomainIsActive(st->dom) == 1) {
        unsigned char uuid[VIR_UUID_BUFLEN];
        bool known = virDomainGetUUID(st->dom, uuid) == 0;

        if (known)
            kvmsaveEventsExpectDestroy(uuid, VIR_DOMAIN_EVENT_STOPPED_FAILED);
        ignore_value(kvmsaveMultifdDestroyIncoming(st->dom, st->qemuPidfd));
        if (known)
            kvmsaveEventsSettle(uuid);
    } else if (st->inner && (dom = virDomainLookupByUUID(st->inner, st->uuid)) &&
               virDomainIsActive(dom) == 1) {
        kvmsaveEventsExpect(st->uuid, VIR_DOMAIN_EVENT_SHUTDOWN,
                            VIR_DOMAIN_EVENT_SHUTDOWN_HOST, -1, 0);
        kvmsaveEventsExpect(st->uuid, VIR_DOMAIN_EVENT_STOPPED,
                            VIR_DOMAIN_EVENT_STOPPED_DESTROYED, -1, 0);
        ignore_value(virDomainDestroy(dom));
        kvmsaveEventsSettle(st->uuid);
    }
    virResetLastError();
}


/* Feed stream @st into *@fd: 0 once it all passed, 1 if the restore was
 * undone meanwhile, -1 on error. */
static int
kvmsaveFeedStreamRun(kvmsaveFeed *feed, kvmsaveFeedStream *st, int *fd)
{
    const unsigned char *data;
    size_t len;
    int rc;

    if (st->fifo && (rc = kvmsaveFeedOpenFifo(feed, st, fd)) != 0)
        return rc;
    while ((rc = kvmsaveImageReadChunk(st->reader, &data, &len)) > 0) {
        if (g_atomic_int_get(&feed->stop))
            return 1;
        /* Nobody else watches the job while the inner driver restores. */
        if (st->fifo && kvmsaveJobIsCancelled(feed->job)) {
            kvmsaveJobReportCancelled(feed->job);
            return -1;
        }
        if (kvmsaveFeedWrite(st, *fd, data, len) < 0) {
            virReportSystemError(errno, "%s",
                                 _("cannot feed the saved state to QEMU"));
            st->writing = true;
            return -1;
        }
        kvmsaveJobAddProcessed(feed->job, kvmsaveImageReaderLastProgress(st->reader));
    }
    if (rc < 0 || kvmsaveFeedEnd(feed, st, *fd) < 0)
        return -1;
    return 0;
}


/* The thread of feeder @i: a stream that ends early (the set closes *@fd)
 * makes QEMU fail to load it. */
static int
kvmsaveFeedRun(size_t i, int *fd, void *opaque)
{
    kvmsaveFeed *feed = opaque;
    kvmsaveFeedStream *st = &feed->streams[i];
    int rc = kvmsaveFeedStreamRun(feed, st, fd);

    if (rc < 0)
        kvmsaveFeedSpoilFifo(st, *fd);
    return rc;
}


kvmsaveFeed *
kvmsaveFeedNew(kvmsaveImageReader *reader, kvmsaveJob *job)
{
    kvmsaveFeed *feed = g_new0(kvmsaveFeed, 1);
    size_t i;

    feed->n = kvmsaveImageReaderHeader(reader)->streams;
    feed->streams = g_new0(kvmsaveFeedStream, feed->n);
    feed->reader = reader;
    feed->job = job;
    for (i = 0; i < feed->n; i++) {
        feed->streams[i].reader = reader;
        feed->streams[i].qemuPidfd = -1;
    }
    feed->set = kvmsaveStreamSetNew("kvmsave-restore", feed->n,
                                    kvmsaveFeedRun, kvmsaveFeedKill, feed);
    return feed;
}


size_t
kvmsaveFeedStreams(kvmsaveFeed *feed)
{
    return feed->n;
}


int
kvmsaveFeedStart(kvmsaveFeed *feed, size_t i, int fd, virDomainPtr dom,
                 int qemuPidfd)
{
    kvmsaveFeedStream *st = &feed->streams[i];

    if (feed->n > 1) {
        if (!(st->own = kvmsaveImageReaderOpenStream(feed->reader, i)))
            return -1;
        st->reader = st->own;
        st->dom = dom;
        st->qemuPidfd = qemuPidfd;
    }
    kvmsaveStreamSetStart(feed->set, i, fd);
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
    kvmsaveStreamSetStart(feed->set, 0, -1);
}


int
kvmsaveFeedWait(kvmsaveFeed *feed)
{
    return kvmsaveStreamSetWait(feed->set, feed->job);
}


int
kvmsaveFeedJoin(kvmsaveFeed *feed, bool stop)
{
    if (stop) {
        g_atomic_int_set(&feed->stop, 1);
        /* A feeder may still wait for a reader of its FIFO. */
        if (feed->streams[0].fifo) {
            int fd = open(feed->streams[0].fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);

            VIR_FORCE_CLOSE(fd);
        }
    }
    return kvmsaveStreamSetJoin(feed->set);
}


virErrorPtr
kvmsaveFeedFree(kvmsaveFeed *feed, bool *writing)
{
    virErrorPtr err = NULL;
    size_t first;
    size_t i;

    if (!feed)
        return NULL;
    ignore_value(kvmsaveFeedJoin(feed, true));
    if ((err = kvmsaveStreamSetFree(feed->set, &first)))
        *writing = feed->streams[first].writing;
    for (i = 0; i < feed->n; i++) {
        kvmsaveImageReaderFree(feed->streams[i].own);
        g_free(feed->streams[i].fifo);
        g_free(feed->streams[i].head);
    }
    g_free(feed->streams);
    g_free(feed);
    return err;
}
