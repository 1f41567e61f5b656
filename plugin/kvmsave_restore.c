/*
 * kvmsave_restore.c: the restore engine
 *
 * Read and check the image's header and trailer -> find the guest by UUID
 * on the inner driver -> start its QEMU paused, waiting for an incoming
 * migration (-incoming defer) -> hand QEMU a socket through libvirt's
 * monitor (or, for an image of several streams, connect to the socket QEMU
 * listens on for multifd, once per stream) -> a thread per stream feeds it,
 * checking every chunk -> when
 * QEMU has it all and every check passed, resume (or stay paused). Any
 * failure destroys the new QEMU; the image is only ever read.
 */
#include <config.h>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include "full-write.h"

#include "kvmsave_restore.h"
#include "kvmsave_event.h"
#include "kvmsave_image.h"
#include "kvmsave_job.h"
#include "kvmsave_journal.h"
#include "kvmsave_monitor.h"
#include "kvmsave_multifd.h"
#include "kvmsave_preflight.h"
#include "kvmsave_stock.h"
#include "kvmsave_util.h"
#include "kvmsave_xml.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.restore");



/* The thread that feeds QEMU the image's stream, chunk by checked chunk. */
typedef struct _kvmsaveRestoreStream kvmsaveRestoreStream;
struct _kvmsaveRestoreStream {
    int fd;                     /* our end of QEMU's stream socket */
    kvmsaveImageReader *reader;
    kvmsaveImageReader *own;    /* reader of one of several streams */
    kvmsaveJob *job;
    volatile gint stop;
    volatile gint failed;       /* set before the thread ends on an error */
    bool writing;               /* ...in writing to QEMU, not in reading */
    int rc;
    virErrorPtr err;
    gint *failures;             /* shared: how many feeders failed so far */
    int order;                  /* how many had failed before this one */
    virDomainPtr dom;           /* multifd: the QEMU to kill on failure */
};


static gpointer
kvmsaveRestoreStreamThread(gpointer opaque)
{
    kvmsaveRestoreStream *st = opaque;
    const unsigned char *data;
    size_t len;
    sigset_t set;
    int rc;

    /* A QEMU that gave up makes our write fail with EPIPE, not kill us. */
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    st->rc = -1;
    while ((rc = kvmsaveImageReadChunk(st->reader, &data, &len)) > 0) {
        if (g_atomic_int_get(&st->stop))
            goto stopped;
        if (full_write(st->fd, data, len) != len) {
            virReportSystemError(errno, "%s",
                                 _("cannot feed the saved state to QEMU"));
            st->writing = true;
            goto error;
        }
        kvmsaveJobAddProcessed(st->job, kvmsaveImageReaderLastProgress(st->reader));
    }
    if (rc < 0)
        goto error;
    st->rc = 0;
    VIR_FORCE_CLOSE(st->fd);
    return NULL;

 error:
    st->err = virErrorCopyNew(virGetLastError());
    /* The first to fail has the cause; the others' broken pipes follow. */
    st->order = g_atomic_int_add(st->failures, 1);
    g_atomic_int_set(&st->failed, 1);
    /* QEMU 7.2 never notices a multifd channel that ended: it waits for
     * the channel at the next sync point with its main loop, monitor
     * included, blocked, so neither the restore's polling nor a cancel
     * would get an answer. Killing it ends the restore (the guest never
     * ran); the restore's cleanup then finds it gone. */
    if (st->dom && st->order == 0 && !g_atomic_int_get(&st->stop) &&
        virDomainIsActive(st->dom) == 1) {
        unsigned char uuid[VIR_UUID_BUFLEN];

        if (virDomainGetUUID(st->dom, uuid) == 0)
            kvmsaveEventsExpectDestroy(uuid, VIR_DOMAIN_EVENT_STOPPED_FAILED);
        ignore_value(virDomainDestroy(st->dom));
    }
    virResetLastError();
 stopped:
    /* QEMU sees the stream end early and fails its incoming migration. */
    VIR_FORCE_CLOSE(st->fd);
    return NULL;
}


/* The feeders of all the image's streams. */
typedef struct _kvmsaveRestoreFeed kvmsaveRestoreFeed;
struct _kvmsaveRestoreFeed {
    kvmsaveRestoreStream *streams;
    GThread **threads;
    size_t n;
    kvmsaveJob *job;
    gint failures;
};


static void
kvmsaveRestoreFeedInit(kvmsaveRestoreFeed *feed, kvmsaveImageReader *reader,
                       kvmsaveJob *job)
{
    size_t i;

    feed->n = kvmsaveImageReaderHeader(reader)->streams;
    feed->streams = g_new0(kvmsaveRestoreStream, feed->n);
    feed->threads = g_new0(GThread *, feed->n);
    feed->job = job;
    for (i = 0; i < feed->n; i++) {
        feed->streams[i].fd = -1;
        feed->streams[i].reader = reader;
        feed->streams[i].job = job;
        feed->streams[i].failures = &feed->failures;
    }
}


static void
kvmsaveRestoreFeedStart(kvmsaveRestoreFeed *feed, size_t i)
{
    feed->threads[i] = g_thread_new("kvmsave-restore",
                                    kvmsaveRestoreStreamThread,
                                    &feed->streams[i]);
}


/* Wait for every feeder; the first one's error (0 if none failed). */
static int
kvmsaveRestoreFeedJoin(kvmsaveRestoreFeed *feed, bool stop)
{
    int rc = 0;
    size_t i;

    for (i = 0; i < feed->n; i++) {
        if (!feed->threads[i])
            continue;
        if (stop)
            g_atomic_int_set(&feed->streams[i].stop, 1);
        g_thread_join(g_steal_pointer(&feed->threads[i]));
        if (feed->streams[i].rc < 0)
            rc = -1;
    }
    return rc;
}


/* Stop and free the feeders; returns the error of the one that failed
 * first, if any: a bad chunk explains QEMU's failure better than QEMU
 * does, and the others' broken pipes follow from it. *@writing: that
 * one failed writing to QEMU. */
static virErrorPtr
kvmsaveRestoreFeedClear(kvmsaveRestoreFeed *feed, bool *writing)
{
    kvmsaveRestoreStream *first = NULL;
    virErrorPtr err = NULL;
    size_t i;

    ignore_value(kvmsaveRestoreFeedJoin(feed, true));
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
    }
    g_free(feed->streams);
    g_free(feed->threads);
    return err;
}


/* The feeders count progress; QEMU is only asked whether it is done. A
 * feeder that failed ends the wait too: QEMU may never notice a stream
 * that ends before it began to read. */
static bool
kvmsaveRestorePoll(const kvmsaveMigrationStatus *st G_GNUC_UNUSED,
                   void *opaque)
{
    kvmsaveRestoreFeed *feed = opaque;
    size_t i;

    if (kvmsaveJobIsCancelled(feed->job))
        return true;
    for (i = 0; i < feed->n; i++) {
        if (g_atomic_int_get(&feed->streams[i].failed))
            return true;
    }
    return false;
}


/* One stream: a socket pair, QEMU's end handed over by the monitor. */
static int
kvmsaveRestoreStartSingle(virDomainPtr dom, kvmsaveRestoreFeed *feed)
{
    g_autofree char *fdname = kvmsaveFdName("restore");
    int chan[2] = { -1, -1 };
    int ret = -1;

    if (kvmsaveStreamChannelNew(chan) < 0 ||
        kvmsaveMonitorGetFd(dom, fdname, chan[1]) < 0)
        goto cleanup;
    VIR_FORCE_CLOSE(chan[1]);
    feed->streams[0].fd = chan[0];
    chan[0] = -1;
    kvmsaveRestoreFeedStart(feed, 0);
    if (kvmsaveMonitorMigrateIncoming(dom, "fd", fdname) < 0) {
        ignore_value(kvmsaveMonitorCloseFd(dom, fdname));
        goto cleanup;
    }
    ret = 0;

 cleanup:
    VIR_FORCE_CLOSE(chan[0]);
    VIR_FORCE_CLOSE(chan[1]);
    return ret;
}


/* Several streams: QEMU listens for multifd; the main stream connects
 * first (QEMU 7.2 takes the first connection for it), then the channels,
 * which name themselves in their first bytes. QEMU starts loading once all
 * are there, and then needs them all fed at once; each is fed as soon as
 * it is connected, since QEMU may read a channel's first packet before it
 * takes the next connection. */
static int
kvmsaveRestoreStartMultifd(virDomainPtr dom, kvmsaveRestoreFeed *feed,
                           kvmsaveImageReader *reader, kvmsaveJournal *journal)
{
    g_autoptr(kvmsaveMultifd) mfd = NULL;
    size_t i;

    if (!(mfd = kvmsaveMultifdNew(dom, true)))
        return -1;
    kvmsaveJournalSet(journal, "multifd", kvmsaveMultifdDir(mfd));
    if (kvmsaveJournalWrite(journal, "started") < 0 ||
        kvmsaveMonitorSetMultifd(dom, feed->n - 1) < 0 ||
        kvmsaveMonitorMigrateIncoming(dom, "unix", kvmsaveMultifdPath(mfd)) < 0)
        return -1;
    for (i = 0; i < feed->n; i++) {
        if (!(feed->streams[i].own = kvmsaveImageReaderOpenStream(reader, i)) ||
            (feed->streams[i].fd = kvmsaveMultifdConnect(mfd)) < 0)
            return -1;
        feed->streams[i].reader = feed->streams[i].own;
        feed->streams[i].dom = dom;
        kvmsaveRestoreFeedStart(feed, i);
    }
    kvmsaveMultifdRemove(mfd);
    return 0;
}


/* QEMU failed to load a stock image's stream, which kvmsave could not
 * check: say what that most likely means, with the error at hand. */
static void
kvmsaveRestoreReportStockLoad(const char *path)
{
    g_autofree char *reason = g_strdup(virGetLastErrorMessage());

    virReportError(VIR_ERR_OPERATION_FAILED,
                   _("QEMU could not load the guest's state from '%s', a save image of stock libvirt: the image is probably truncated or damaged (stock images carry no checksums that would tell); the guest was not restored (%s)"),
                   path, reason);
}


/* Open the image at @path, check @dxml against it, and make the XML to
 * start its QEMU with. */
static int
kvmsaveRestoreOpen(const char *path, const char *dxml, int channels,
                   unsigned int flags, kvmsaveImageReader **reader,
                   char **startxml)
{
    g_autoptr(kvmsaveImageReader) r = NULL;
    g_autofree char *withCPU = NULL;
    const kvmsaveImageHeader *hdr;
    kvmsaveStockImage *stock;
    const char *xml;

    if (!(r = kvmsaveImageOpen(path, (flags & VIR_DOMAIN_SAVE_BYPASS_CACHE) ?
                               KVMSAVE_IMAGE_IO_DIRECT : KVMSAVE_IMAGE_IO_STREAM)))
        return -1;
    hdr = kvmsaveImageReaderHeader(r);
    kvmsaveImageReaderSetThreads(r, channels);
    if (dxml && kvmsaveXMLCheckABI(hdr->xml, dxml) < 0)
        return -1;
    xml = dxml ? dxml : hdr->xml;
    /* Stock libvirt starts QEMU with the CPU its save cookie keeps (the
     * CPU as QEMU ran it), whatever XML the restore is given. */
    if ((stock = kvmsaveImageReaderStock(r)) && kvmsaveStockImageInfo(stock)->cookie) {
        if (!(withCPU = kvmsaveXMLWithCookieCPU(xml, kvmsaveStockImageInfo(stock)->cookie)))
            return -1;
        xml = withCPU;
    }
    if (!(*startxml = kvmsaveXMLWithIncoming(xml)))
        return -1;
    *reader = g_steal_pointer(&r);
    return 0;
}


virDomainPtr
kvmsaveRestoreDomain(kvmsaveConn *priv, const char *path,
                     const char *dxml, int channels, unsigned int flags)
{
    g_autoptr(kvmsaveImageReader) reader = NULL;
    g_autoptr(virDomain) existing = NULL;
    g_autoptr(virDomain) dom = NULL;
    g_autofree char *startxml = NULL;
    g_autofree char *meta = NULL;
    g_autofree char *from = NULL;
    bool forceDisks = false;
    const kvmsaveImageHeader *hdr;
    kvmsaveRestoreFeed feed = { 0 };
    unsigned int startFlags = VIR_DOMAIN_START_PAUSED;
    bool running;
    virDomainPtr ret = NULL;
    virErrorPtr saved = NULL;
    kvmsaveJob *job = NULL;
    kvmsaveJournal *journal = NULL;
    bool recovered = false;
    bool loading = false;       /* QEMU is taking the stream */
    bool stockLoadFailed = false;
    int rc;

    if (kvmsaveRestoreOpen(path, dxml, channels, flags, &reader, &startxml) < 0)
        return NULL;
    hdr = kvmsaveImageReaderHeader(reader);

    if (!(job = kvmsaveJobBegin(hdr->uuid, KVMSAVE_JOB_RESTORE)))
        return NULL;
    if (!(journal = kvmsaveJournalBegin(priv, hdr->uuid, KVMSAVE_JOURNAL_RESTORE,
                                        &recovered)))
        goto cleanup;
    if (recovered) {
        /* A killed save of this guest was just finished, which may have
         * put its new image at @path: restore what is there now. */
        unsigned char uuid[VIR_UUID_BUFLEN];

        memcpy(uuid, hdr->uuid, VIR_UUID_BUFLEN);
        g_clear_pointer(&reader, kvmsaveImageReaderFree);
        g_clear_pointer(&startxml, g_free);
        hdr = NULL;
        if (kvmsaveRestoreOpen(path, dxml, channels, flags, &reader, &startxml) < 0)
            goto cleanup;
        hdr = kvmsaveImageReaderHeader(reader);
        if (memcmp(uuid, hdr->uuid, VIR_UUID_BUFLEN) != 0) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("save image '%s' was replaced by another guest's while it was opened; try again"),
                           path);
            goto cleanup;
        }
    }
    kvmsaveJobSetTotal(job, kvmsaveImageReaderTrailer(reader)->streamBytes);
    kvmsaveJournalSet(journal, "image", path);
    kvmsaveJournalSet(journal, "name", hdr->name);

    /* The original design's lookup: the image names its guest by UUID. */
    if ((existing = virDomainLookupByUUID(priv->inner, hdr->uuid))) {
        int active = virDomainIsActive(existing);
        if (active < 0)
            goto cleanup;
        if (active) {
            virReportError(VIR_ERR_OPERATION_INVALID,
                           _("domain '%s' is already running; destroy or save it before restoring this image"),
                           virDomainGetName(existing));
            goto cleanup;
        }
        /* Shut off and persistent: starting it with the image's XML as
         * its live definition keeps the persistent one. */
    } else {
        virResetLastError();
    }

    /* Before QEMU starts: it would start, and only then fail to load the
     * state, or run the guest over disks that changed under it. */
    if (dxml && kvmsaveXMLGetMigrateFromForce(dxml, &from, &forceDisks) < 0)
        goto cleanup;
    if (kvmsavePreflightCheck(priv->inner, hdr, startxml, path, forceDisks) < 0)
        goto cleanup;

    if (flags & VIR_DOMAIN_SAVE_RESET_NVRAM)
        startFlags |= VIR_DOMAIN_START_RESET_NVRAM;
    running = (flags & VIR_DOMAIN_SAVE_RUNNING) ||
        (!(flags & VIR_DOMAIN_SAVE_PAUSED) &&
         (hdr->flags & KVMSAVE_IMAGE_FLAG_RUNNING));

    /* Clients see a restore: STARTED/RESTORED, then RESUMED when we resume
     * it, or SUSPENDED saying why it stays paused. */
    kvmsaveEventsExpect(hdr->uuid, VIR_DOMAIN_EVENT_STARTED,
                        VIR_DOMAIN_EVENT_STARTED_BOOTED,
                        VIR_DOMAIN_EVENT_STARTED, VIR_DOMAIN_EVENT_STARTED_RESTORED);
    kvmsaveEventsExpect(hdr->uuid, VIR_DOMAIN_EVENT_SUSPENDED,
                        VIR_DOMAIN_EVENT_SUSPENDED_PAUSED,
                        running ? -1 : VIR_DOMAIN_EVENT_SUSPENDED,
                        (flags & VIR_DOMAIN_SAVE_PAUSED) ?
                        VIR_DOMAIN_EVENT_SUSPENDED_PAUSED :
                        VIR_DOMAIN_EVENT_SUSPENDED_RESTORED);
    kvmsaveJournalSetInt(journal, "running", running);
    if (kvmsaveJournalWrite(journal, "starting") < 0)
        goto cleanup;
    if (!(dom = virDomainCreateXML(priv->inner, startxml, startFlags))) {
        kvmsaveEventsForget(hdr->uuid);
        goto cleanup;
    }
    kvmsaveJournalSetInt(journal, "domid", virDomainGetID(dom));
    if (kvmsaveJournalWrite(journal, "started") < 0)
        goto cleanup;
    if (kvmsaveJobIsCancelled(job)) {
        kvmsaveJobReportCancelled(job);
        goto cleanup;
    }

    kvmsaveRestoreFeedInit(&feed, reader, job);
    if ((feed.n > 1 ?
         kvmsaveRestoreStartMultifd(dom, &feed, reader, journal) :
         kvmsaveRestoreStartSingle(dom, &feed)) < 0)
        goto cleanup;
    loading = true;

    rc = kvmsaveMonitorWaitMigration(dom, _("restoring the guest's state"),
                                     kvmsaveRestorePoll, &feed);
    if (rc == -2 && kvmsaveJobIsCancelled(job))
        kvmsaveJobReportCancelled(job);
    /* else the feeder failed: its error is taken below */
    if (rc < 0)
        goto cleanup;

    /* QEMU has read the whole stream; the image's own checks must have
     * passed too (totals in the trailer) before the guest may run. */
    if (kvmsaveRestoreFeedJoin(&feed, false) < 0) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("restore from '%s' was interrupted"), path);
        goto cleanup; /* the stream's own error is taken below */
    }
    loading = false;
    if (!kvmsaveJobCommit(job)) {
        kvmsaveJobReportCancelled(job);
        goto cleanup;
    }
    if (kvmsaveJournalWrite(journal, "loaded") < 0)
        goto cleanup;

    /* The restored guest names its image in its live XML, when XML can
     * spell the name at all. */
    if (!kvmsaveXMLPathIsRepresentable(path)) {
        VIR_WARN("image path of restored domain %s cannot be written in XML; "
                 "its live XML does not name it", hdr->name);
    } else if (!(meta = kvmsaveXMLFormatMigrateFrom(path)) ||
               virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, meta,
                                    KVMSAVE_XML_NS_PREFIX, KVMSAVE_XML_NS_URI,
                                    VIR_DOMAIN_AFFECT_LIVE) < 0) {
        goto cleanup;
    }

    /* As stock libvirt: the guest resumes "from snapshot". */
    if (running) {
        kvmsaveEventsExpect(hdr->uuid, VIR_DOMAIN_EVENT_RESUMED,
                            VIR_DOMAIN_EVENT_RESUMED_UNPAUSED,
                            VIR_DOMAIN_EVENT_RESUMED,
                            VIR_DOMAIN_EVENT_RESUMED_FROM_SNAPSHOT);
        if (virDomainResume(dom) < 0) {
            kvmsaveEventsForget(hdr->uuid);
            goto cleanup;
        }
    }

    ret = kvmsaveConnOuterDomain(priv, dom);

 cleanup:
    if (!ret) {
        virErrorPreserveLast(&saved);
        /* Destroy first: that also unblocks a feeder stuck on the socket.
         * (A failed multifd feeder may have destroyed it already.) */
        if (dom && virDomainIsActive(dom) == 1) {
            kvmsaveEventsExpectDestroy(hdr->uuid,
                                       VIR_DOMAIN_EVENT_STOPPED_FAILED);
            ignore_value(virDomainDestroy(dom));
        }
        virResetLastError();
    }
    if (feed.streams) {
        bool writing = false;
        virErrorPtr err = kvmsaveRestoreFeedClear(&feed, &writing);

        /* No checksums in a stock image: its damage shows as QEMU's
         * failure, or as the broken pipe the feeder got from it. */
        stockLoadFailed = !ret && loading && kvmsaveImageReaderStock(reader) &&
            kvmsaveStockImageInfo(kvmsaveImageReaderStock(reader))->decoded > 0 &&
            (!err || writing) && !kvmsaveJobIsCancelled(job);
        if (err && !ret && !kvmsaveJobIsCancelled(job)) {
            virFreeError(saved);
            saved = err;
        } else {
            virFreeError(err);
        }
    }
    if (saved)
        virErrorRestore(&saved);
    if (stockLoadFailed)
        kvmsaveRestoreReportStockLoad(path);
    kvmsaveJournalEnd(journal);
    kvmsaveJobEnd(job, !!ret);
    return ret;
}


char *
kvmsaveRestoreImageXML(const char *path, unsigned int flags)
{
    g_autoptr(kvmsaveImageReader) reader = NULL;
    const kvmsaveImageHeader *hdr;

    if (!(reader = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_CACHED)))
        return NULL;
    hdr = kvmsaveImageReaderHeader(reader);
    if (flags & VIR_DOMAIN_SAVE_IMAGE_XML_SECURE)
        return g_strdup(hdr->xml);
    return kvmsaveXMLStripSecure(hdr->xml);
}
