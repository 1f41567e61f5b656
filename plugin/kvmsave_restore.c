/*
 * kvmsave_restore.c: the restore engine
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Read and check the image's header and trailer -> find the guest by UUID
 * on the inner driver -> a thread per stream feeds QEMU the image's
 * streams, checking every chunk, by one of three routes
 * (docs/architecture.md, "Restore routes"):
 *  - one stream: the inner driver's own restore reads a stock libvirt
 *    image that kvmsave writes into a FIFO;
 *  - several streams over a daemon: the inner driver's migration
 *    destination listens on a unix socket (kvmsave_incoming.c);
 *  - several streams in embedded mode: QEMU started with "-incoming
 *    defer" is told through its monitor where to listen;
 *  - a sparse image, stock's or kvmsave's: QEMU, started so, reads the
 *    file itself from a descriptor in an fdset; kvmsave checks its own
 *    sparse images block by block meanwhile.
 * The guest runs only once every check passed. Any failure stops the new
 * QEMU; the image is only ever read.
 */
#include <config.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvmsave_restore.h"
#include "kvmsave_args.h"
#include "kvmsave_chunkq.h"
#include "kvmsave_decompress.h"
#include "kvmsave_event.h"
#include "kvmsave_feed.h"
#include "kvmsave_imagereader.h"
#include "kvmsave_incoming.h"
#include "kvmsave_job.h"
#include "kvmsave_journal.h"
#include "kvmsave_jobboard.h"
#include "kvmsave_lazy.h"
#include "kvmsave_mapped.h"
#include "kvmsave_monitor.h"
#include "kvmsave_multifd.h"
#include "kvmsave_preflight.h"
#include "kvmsave_sparse.h"
#include "kvmsave_stock.h"
#include "kvmsave_stream.h"
#include "kvmsave_xml.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.restore");


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
    const char *cookie;
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
    if ((cookie = kvmsaveImageReaderCookie(r))) {
        if (!(withCPU = kvmsaveXMLWithCookieCPU(xml, cookie)))
            return -1;
        xml = withCPU;
    }
    /* Nor kvmsave's metadata, nor the -incoming arguments with which
     * earlier kvmsave started the QEMU of a guest it restored. */
    if (!(*startxml = kvmsaveXMLForImage(xml)))
        return -1;
    *reader = g_steal_pointer(&r);
    return 0;
}


/* Open the image, begin the job and its journal. A killed save of this
 * guest that the journal finishes may have put a new image at @path:
 * what is there then is restored. */
static int
kvmsaveRestoreBegin(kvmsaveConn *priv, const char *path, const char *dxml,
                    int channels, unsigned int flags,
                    kvmsaveImageReader **reader, char **startxml,
                    kvmsaveJob **job, kvmsaveJournal **journal)
{
    unsigned char uuid[VIR_UUID_BUFLEN];
    bool recovered = false;

    if (kvmsaveRestoreOpen(path, dxml, channels, flags, reader, startxml) < 0)
        return -1;
    memcpy(uuid, kvmsaveImageReaderHeader(*reader)->uuid, VIR_UUID_BUFLEN);
    if (!(*job = kvmsaveJobBegin(uuid, KVMSAVE_JOB_RESTORE)) ||
        !(*journal = kvmsaveJournalBegin(priv, uuid, KVMSAVE_JOURNAL_RESTORE,
                                         &recovered)) ||
        kvmsaveJobBoardAttach(priv, *job, uuid) < 0)
        return -1;
    if (!recovered)
        return 0;
    g_clear_pointer(reader, kvmsaveImageReaderFree);
    g_clear_pointer(startxml, g_free);
    if (kvmsaveRestoreOpen(path, dxml, channels, flags, reader, startxml) < 0)
        return -1;
    if (memcmp(uuid, kvmsaveImageReaderHeader(*reader)->uuid, VIR_UUID_BUFLEN) != 0) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' was replaced by another guest's while it was opened; try again"),
                       path);
        return -1;
    }
    return 0;
}


/* The image names its guest by UUID, which outlives renames: a guest of
 * that UUID may be defined (it keeps its definition), but not running. */
static int
kvmsaveRestoreCheckNotRunning(kvmsaveConn *priv, const unsigned char *uuid)
{
    g_autoptr(virDomain) existing = virDomainLookupByUUID(priv->inner, uuid);
    int active;

    if (!existing) {
        virResetLastError();
        return 0;
    }
    if ((active = virDomainIsActive(existing)) < 0)
        return -1;
    if (active) {
        virReportError(VIR_ERR_OPERATION_INVALID,
                       _("domain '%s' is already running; destroy or save it before restoring this image"),
                       virDomainGetName(existing));
        return -1;
    }
    return 0;
}


/* What a restore's route needs to know. */
typedef struct _kvmsaveRestore kvmsaveRestore;
struct _kvmsaveRestore {
    kvmsaveConn *priv;
    const char *path;
    const char *startxml;
    const kvmsaveImageHeader *hdr;
    kvmsaveImageReader *reader;
    kvmsaveJob *job;
    kvmsaveJournal *journal;
    kvmsaveFeed *feed;
    virDomainPtr dom;           /* the inner domain, once started */
    int qemuPidfd;              /* its QEMU while it loads multifd streams */
    bool running;               /* to run when loaded */
    unsigned int flags;
    unsigned int channels;      /* asked for; 0: the image's choice */
    kvmsaveMappedSum *sum;      /* checking a sparse image */
};


/* Stock libvirt's VIR_DOMAIN_SAVE_RESET_NVRAM makes a new NVRAM from its
 * template as QEMU starts. libvirt makes one for an incoming guest only
 * when there is none, so the old one goes first. */
static int
kvmsaveRestoreResetNVRAM(const char *startxml)
{
    g_autofree char *nvram = kvmsaveXMLGetString(startxml, "domain",
                                                 "/domain/os/nvram[not(@type) or @type='file']/text()"
                                                 " | /domain/os/nvram[@type='file']/source/@file");

    if (!nvram || !g_path_is_absolute(nvram))
        return 0;
    if (unlink(nvram) < 0 && errno != ENOENT) {
        virReportSystemError(errno, _("cannot reset the guest's NVRAM '%s'"), nvram);
        return -1;
    }
    return 0;
}


/* The restored guest names its image in its live XML, when XML can spell
 * the name at all. */
static int
kvmsaveRestoreSetMigrateFrom(virDomainPtr dom, const char *path,
                             const char *name)
{
    g_autofree char *meta = NULL;

    if (!kvmsaveXMLPathIsRepresentable(path)) {
        VIR_WARN("image path of restored domain %s cannot be written in XML; "
                 "its live XML does not name it", name);
        return 0;
    }
    if (!(meta = kvmsaveXMLFormatMigrateFrom(path)))
        return -1;
    return virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, meta,
                                KVMSAVE_XML_NS_PREFIX, KVMSAVE_XML_NS_URI,
                                VIR_DOMAIN_AFFECT_LIVE);
}


/* The detail of the SUSPENDED event of a restore that leaves the guest
 * paused, as stock libvirt 9.0 sends it: PAUSED for a start asked paused,
 * RESTORED for a restore (asked paused or not). */
static int
kvmsaveRestorePausedDetail(kvmsaveRestore *r)
{
    return ((r->flags & KVMSAVE_RESTORE_IS_START) &&
            (r->flags & VIR_DOMAIN_SAVE_PAUSED)) ?
        VIR_DOMAIN_EVENT_SUSPENDED_PAUSED : VIR_DOMAIN_EVENT_SUSPENDED_RESTORED;
}


/* Clients see a restore as stock libvirt sends it: STARTED/RESTORED, then
 * RESUMED when it runs, or SUSPENDED saying why it stays paused. The
 * migration destination sends a migration's events. */
static void
kvmsaveRestoreExpectMigrationEvents(kvmsaveRestore *r)
{
    const unsigned char *uuid = r->hdr->uuid;

    kvmsaveEventsExpect(uuid, VIR_DOMAIN_EVENT_STARTED,
                        VIR_DOMAIN_EVENT_STARTED_MIGRATED,
                        VIR_DOMAIN_EVENT_STARTED, VIR_DOMAIN_EVENT_STARTED_RESTORED);
    if (r->running)
        kvmsaveEventsExpect(uuid, VIR_DOMAIN_EVENT_RESUMED,
                            VIR_DOMAIN_EVENT_RESUMED_MIGRATED,
                            VIR_DOMAIN_EVENT_RESUMED,
                            VIR_DOMAIN_EVENT_RESUMED_FROM_SNAPSHOT);
    else
        kvmsaveEventsExpect(uuid, VIR_DOMAIN_EVENT_SUSPENDED,
                            VIR_DOMAIN_EVENT_SUSPENDED_PAUSED,
                            VIR_DOMAIN_EVENT_SUSPENDED,
                            kvmsaveRestorePausedDetail(r));
}


/* ...and a guest created paused and resumed, those of a boot. */
static void
kvmsaveRestoreExpectCommandlineEvents(kvmsaveRestore *r)
{
    const unsigned char *uuid = r->hdr->uuid;

    kvmsaveEventsExpect(uuid, VIR_DOMAIN_EVENT_STARTED,
                        VIR_DOMAIN_EVENT_STARTED_BOOTED,
                        VIR_DOMAIN_EVENT_STARTED, VIR_DOMAIN_EVENT_STARTED_RESTORED);
    kvmsaveEventsExpect(uuid, VIR_DOMAIN_EVENT_SUSPENDED,
                        VIR_DOMAIN_EVENT_SUSPENDED_PAUSED,
                        r->running ? -1 : VIR_DOMAIN_EVENT_SUSPENDED,
                        kvmsaveRestorePausedDetail(r));
    if (r->running)
        kvmsaveEventsExpect(uuid, VIR_DOMAIN_EVENT_RESUMED,
                            VIR_DOMAIN_EVENT_RESUMED_UNPAUSED,
                            VIR_DOMAIN_EVENT_RESUMED,
                            VIR_DOMAIN_EVENT_RESUMED_FROM_SNAPSHOT);
}


/* QEMU runs, waiting for its streams: journal its ID. */
static int
kvmsaveRestoreStarted(kvmsaveRestore *r)
{
    if (!r->dom && !(r->dom = virDomainLookupByUUID(r->priv->inner, r->hdr->uuid)))
        return -1;
    kvmsaveJournalSetInt(r->journal, "domid", virDomainGetID(r->dom));
    if (kvmsaveJournalWrite(r->journal, "started") < 0)
        return -1;
    if (kvmsaveJobIsCancelled(r->job)) {
        kvmsaveJobReportCancelled(r->job);
        return -1;
    }
    return 0;
}


/* Hold QEMU's process (the socket's peer) and journal it: with its streams
 * cut, it may never answer its monitor again (kvmsaveRecoverKillLoader). */
static int
kvmsaveRestoreHoldQemu(kvmsaveRestore *r, kvmsaveMultifd *mfd)
{
    unsigned long long start;
    long long pid;

    if ((r->qemuPidfd = kvmsaveMultifdPeerPidfd(mfd, &pid, &start)) < 0 || pid <= 0)
        return 0;
    kvmsaveJournalSetInt(r->journal, "qemupid", pid);
    kvmsaveJournalSetInt(r->journal, "qemustart", (long long) start);
    return kvmsaveJournalWrite(r->journal, "started");
}


/* Connect to the socket QEMU listens on, once per stream: the main stream
 * first (QEMU 7.2 takes the first connection for it), then the multifd
 * channels, which name themselves in their first bytes. QEMU starts
 * loading once all are there, and then needs them all fed at once; each
 * is fed as soon as it is connected, since QEMU may read a channel's
 * first packet before it takes the next connection. Returns once every
 * stream was sent and checked, the job committed. */
static int
kvmsaveRestoreFeedAll(kvmsaveRestore *r, kvmsaveMultifd *mfd)
{
    size_t i;
    int rc;

    r->feed = kvmsaveFeedNew(r->reader, r->job);
    for (i = 0; i < kvmsaveFeedStreams(r->feed); i++) {
        int fd = kvmsaveMultifdConnect(mfd);

        if (fd < 0 ||
            (r->qemuPidfd < 0 && kvmsaveRestoreHoldQemu(r, mfd) < 0) ||
            kvmsaveFeedStart(r->feed, i, fd, r->dom, r->qemuPidfd) < 0) {
            VIR_FORCE_CLOSE(fd);
            return -1;
        }
    }
    kvmsaveMultifdRemove(mfd);
    /* A feeder's own error is taken in the cleanup. */
    if ((rc = kvmsaveFeedWait(r->feed)) < 0) {
        if (rc == -2)
            kvmsaveJobReportCancelled(r->job);
        return -1;
    }
    if (kvmsaveFeedJoin(r->feed, false) < 0)
        return -1;
    /* Every chunk and the image's totals were checked: from here the
     * restore is QEMU's to finish, not to be cancelled. */
    if (!kvmsaveJobCommit(r->job)) {
        kvmsaveJobReportCancelled(r->job);
        return -1;
    }
    /* QEMU may run the guest from here: libvirt stops it its own way. */
    VIR_FORCE_CLOSE(r->qemuPidfd);
    return 0;
}


/* A failed restore: stop the QEMU it started, if it still runs. */
static void
kvmsaveRestoreStop(kvmsaveRestore *r, virDomainPtr loaded)
{
    virDomainPtr dom = loaded ? loaded : r->dom;

    if (dom && virDomainIsActive(dom) == 1) {
        kvmsaveEventsExpectDestroy(r->hdr->uuid, VIR_DOMAIN_EVENT_STOPPED_FAILED);
        ignore_value(kvmsaveMultifdDestroyIncoming(dom, r->qemuPidfd));
    }
}


/* Free the feeders. After a failed restore (@failed), the error of the
 * one that failed first replaces *@saved when it read a bad chunk, or
 * when nothing said why (QEMU's failure explains a broken pipe better).
 * Returns whether QEMU failed to load a stock image's stream, which
 * kvmsave could not check: its damage shows as QEMU's failure, or as the
 * broken pipe the feeder got from it. */
static bool
kvmsaveRestoreFeedError(kvmsaveRestore *r, bool failed, bool loading,
                        virErrorPtr *saved)
{
    bool cancelled = kvmsaveJobIsCancelled(r->job);
    bool writing = false;
    virErrorPtr err = kvmsaveFeedFree(g_steal_pointer(&r->feed), &writing);
    bool stockLoadFailed = failed && loading &&
        !kvmsaveImageReaderChecksummed(r->reader) &&
        kvmsaveImageReaderStreamRead(r->reader) > 0 &&
        (!err || writing) && !cancelled;

    if (err && failed && !cancelled && (!writing || !*saved)) {
        virFreeError(*saved);
        *saved = err;
    } else {
        virFreeError(err);
    }
    return stockLoadFailed;
}


/* Single stream: the inner driver's own restore (stock libvirt's), of a
 * stock image kvmsave writes into a FIFO as the stream passes its checks.
 * It starts QEMU as stock does, sends stock's events, sets stock's state
 * reasons, and leaves no trace in the guest's XML. */
static virDomainPtr
kvmsaveRestoreViaStock(kvmsaveRestore *r)
{
    g_autoptr(kvmsaveMultifd) dir = NULL;
    g_autofree unsigned char *head = NULL;
    g_autofree char *dirname = NULL;
    const char *fifo;
    size_t headLen;
    int rc;

    if (!(head = kvmsaveStockHeaderFormat(KVMSAVE_STOCK_MAGIC, r->startxml,
                                          kvmsaveImageReaderCookie(r->reader),
                                          r->hdr->flags & KVMSAVE_IMAGE_FLAG_RUNNING,
                                          KVMSAVE_COMPRESS_RAW, 0, &headLen)))
        return NULL;
    /* The FIFO's directory is named in the journal before it exists:
     * recovery removes it after a kill. */
    if (!(dirname = kvmsaveStreamJournalDir(r->journal)) ||
        kvmsaveJournalWrite(r->journal, "starting") < 0 ||
        !(dir = kvmsaveMultifdNewPrivate(dirname)))
        return NULL;
    fifo = kvmsaveMultifdPath(dir);
    if (mkfifo(fifo, 0600) < 0) {
        virReportSystemError(errno, _("cannot create FIFO '%s'"), fifo);
        return NULL;
    }
    if (kvmsaveRestorePausedDetail(r) == VIR_DOMAIN_EVENT_SUSPENDED_PAUSED)
        kvmsaveEventsExpect(r->hdr->uuid, VIR_DOMAIN_EVENT_SUSPENDED,
                            VIR_DOMAIN_EVENT_SUSPENDED_RESTORED,
                            VIR_DOMAIN_EVENT_SUSPENDED,
                            VIR_DOMAIN_EVENT_SUSPENDED_PAUSED);
    r->feed = kvmsaveFeedNew(r->reader, r->job);
    kvmsaveFeedStartFifo(r->feed, fifo, head, headLen, r->priv->inner, r->hdr->uuid);
    rc = virDomainRestoreFlags(r->priv->inner, fifo, NULL,
                               r->flags & (VIR_DOMAIN_SAVE_RUNNING |
                                           VIR_DOMAIN_SAVE_PAUSED |
                                           VIR_DOMAIN_SAVE_RESET_NVRAM));
    if (kvmsaveFeedJoin(r->feed, rc < 0) < 0 || rc < 0)
        return NULL;
    return virDomainLookupByUUID(r->priv->inner, r->hdr->uuid);
}


/* Several streams over a daemon: the inner driver's migration
 * destination (kvmsave_incoming.c) starts QEMU listening on a socket. */
static virDomainPtr
kvmsaveRestoreViaMigration(kvmsaveRestore *r, kvmsaveMultifd *mfd)
{
    g_autoptr(kvmsaveIncoming) in = NULL;
    g_autofree char *name = NULL;

    if (!(name = kvmsaveXMLGetName(r->startxml)))
        return NULL;
    kvmsaveRestoreExpectMigrationEvents(r);
    if (kvmsaveJournalWrite(r->journal, "starting") < 0 ||
        !(in = kvmsaveIncomingPrepare(r->priv->inner, r->startxml, name,
                                      kvmsaveMultifdPath(mfd),
                                      r->hdr->streams - 1, !r->running))) {
        kvmsaveEventsForget(r->hdr->uuid);
        return NULL;
    }
    if (kvmsaveRestoreStarted(r) < 0 || kvmsaveRestoreFeedAll(r, mfd) < 0)
        return NULL;
    return kvmsaveIncomingFinish(in);
}


/* Start QEMU paused with kvmsave's own "-incoming defer", to be told
 * through its monitor where its state comes from; journal it. */
static int
kvmsaveRestoreStartDeferred(kvmsaveRestore *r, const char *const *extra)
{
    g_autofree char *xml = NULL;
    unsigned int startFlags = VIR_DOMAIN_START_PAUSED;

    if (!(xml = kvmsaveXMLWithIncoming(r->startxml, extra)))
        return -1;
    if (r->flags & VIR_DOMAIN_SAVE_RESET_NVRAM)
        startFlags |= VIR_DOMAIN_START_RESET_NVRAM;
    kvmsaveRestoreExpectCommandlineEvents(r);
    if (kvmsaveJournalWrite(r->journal, "starting") < 0 ||
        !(r->dom = virDomainCreateXML(r->priv->inner, xml, startFlags))) {
        kvmsaveEventsForget(r->hdr->uuid);
        return -1;
    }
    return kvmsaveRestoreStarted(r);
}


/* Several streams in embedded mode, where libvirt refuses the migration
 * destination (it needs autodestroy, which embedded drivers lack): QEMU
 * starts with kvmsave's own "-incoming defer" and is told through its
 * monitor where to listen (docs/architecture.md, "Restore routes"). */
static virDomainPtr
kvmsaveRestoreViaCommandline(kvmsaveRestore *r, kvmsaveMultifd *mfd)
{
    if (kvmsaveRestoreStartDeferred(r, NULL) < 0 ||
        kvmsaveMonitorSetMultifd(r->dom, r->hdr->streams - 1) < 0 ||
        kvmsaveMonitorMigrateIncoming(r->dom, "unix", kvmsaveMultifdPath(mfd)) < 0 ||
        kvmsaveRestoreFeedAll(r, mfd) < 0 ||
        kvmsaveMonitorWaitMigration(r->dom, _("restoring the guest's state"),
                                    NULL, NULL) < 0)
        return NULL;
    if (r->running && virDomainResume(r->dom) < 0)
        return NULL;
    return virObjectRef(r->dom);
}


/* While QEMU loads a sparse image: an abort stops the wait. */
static bool
kvmsaveRestoreSparsePoll(const kvmsaveMigrationStatus *st G_GNUC_UNUSED,
                         void *opaque)
{
    return kvmsaveJobIsCancelled(opaque);
}


/* Hand @r's sparse image, stock's or kvmsave's, to its QEMU started with
 * "-incoming defer": the file the reader checked, whatever its path
 * names now, with @channels multifd channels and direct-io for
 * --bypass-cache. Returns the fdset, or -1. */
static int
kvmsaveRestoreSparseIncoming(kvmsaveRestore *r, uint64_t offset,
                             unsigned int channels)
{
    g_autofree char *self = kvmsaveImageReaderSelfPath(r->reader);

    return kvmsaveSparseIncomingImage(r->dom, self, r->path, offset,
                                      MAX(channels, 1),
                                      r->flags & VIR_DOMAIN_SAVE_BYPASS_CACHE,
                                      kvmsaveSparseDomainVersion(r->dom));
}


/* Once QEMU has loaded a sparse image: mapped-ram and direct-io off, as
 * a guest started afresh has them, so that they outlive neither the
 * restore nor a later save that a kill stopped before it set its own. */
static void
kvmsaveRestoreSparseReset(kvmsaveRestore *r)
{
    if (kvmsaveSparseReset(r->dom, kvmsaveSparseDomainVersion(r->dom)) < 0) {
        VIR_WARN("restored guest %s keeps QEMU's mapped-ram on: %s",
                 virDomainGetName(r->dom), virGetLastErrorMessage());
        virResetLastError();
    }
}


/* A sparse stock image (QEMU's mapped-ram layout): QEMU reads the file
 * itself, at the offsets its stream records, so it cannot come through a
 * FIFO or socket. QEMU starts with "-incoming defer" and gets the file's
 * descriptor in an fdset, over a daemon too (kvmsave_sparse.h); one
 * multifd channel unless the restore asks for more, as stock's. */
static virDomainPtr
kvmsaveRestoreViaFdset(kvmsaveRestore *r, kvmsaveStockImage *stock)
{
    virErrorPtr err = NULL;
    int fdset;
    int rc;

    if (kvmsaveRestoreStartDeferred(r, NULL) < 0 ||
        (fdset = kvmsaveRestoreSparseIncoming(r, kvmsaveStockImageInfo(stock)->streamOffset,
                                              r->channels)) < 0)
        return NULL;
    rc = kvmsaveMonitorWaitMigration(r->dom, _("restoring the guest's state"),
                                     kvmsaveRestoreSparsePoll, r->job);
    /* QEMU's own copy of the descriptor is of no more use; QEMU's error,
     * if any, is the one to report. */
    virErrorPreserveLast(&err);
    ignore_value(kvmsaveMonitorRemoveFd(r->dom, fdset));
    virErrorRestore(&err);
    if (rc == -1) {
        kvmsaveRestoreReportStockLoad(r->path);
        return NULL;
    }
    /* Nothing kvmsave could check: the commit is QEMU's loading. */
    if (rc == -2 || !kvmsaveJobCommit(r->job)) {
        kvmsaveJobReportCancelled(r->job);
        return NULL;
    }
    kvmsaveRestoreSparseReset(r);
    if (r->running && virDomainResume(r->dom) < 0)
        return NULL;
    return virObjectRef(r->dom);
}


/* While QEMU loads a sparse kvmsave image: the job shows the blocks
 * checked; an abort, or a block that failed its check, stops the wait. */
static bool
kvmsaveRestoreMappedPoll(const kvmsaveMigrationStatus *st G_GNUC_UNUSED,
                         void *opaque)
{
    kvmsaveRestore *r = opaque;
    uint64_t total = kvmsaveImageReaderTrailer(r->reader)->streamBytes;

    kvmsaveJobSetProgress(r->job, total, kvmsaveMappedSumDone(r->sum));
    return kvmsaveJobIsCancelled(r->job) || kvmsaveMappedSumFailed(r->sum);
}


/* The checks of a sparse kvmsave image run beside QEMU's loading, on a
 * descriptor of their own: through the page cache, which QEMU's reads
 * fill too, unless the restore bypasses it. */
static int
kvmsaveRestoreMappedSumStart(kvmsaveRestore *r, int *fd)
{
    g_autofree char *self = kvmsaveImageReaderSelfPath(r->reader);
    bool direct = !!(r->flags & VIR_DOMAIN_SAVE_BYPASS_CACHE);

    if ((*fd = open(self, O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0))) < 0) {
        virReportSystemError(errno, _("cannot open save image '%s'"), r->path);
        return -1;
    }
    r->sum = kvmsaveMappedSumStart(*fd, r->path, direct, r->hdr,
                                   kvmsaveImageReaderTrailer(r->reader)->streamBytes,
                                   kvmsaveImageReaderMappedTable(r->reader),
                                   kvmsaveChunkQueueDefaultWorkers());
    return 0;
}


/* Once QEMU is done: the job shows the blocks checked; an abort stops. */
static bool
kvmsaveRestoreMappedSumPoll(uint64_t done, void *opaque)
{
    kvmsaveRestore *r = opaque;

    kvmsaveJobSetProgress(r->job, kvmsaveImageReaderTrailer(r->reader)->streamBytes,
                          done);
    return kvmsaveJobIsCancelled(r->job);
}


/* Wait for QEMU's loading and the image's checks: 0 when both passed, or
 * -1 with the error that explains it best. When QEMU failed, the checks
 * go on to the end: a damaged block explains QEMU's failure. */
static int
kvmsaveRestoreMappedWait(kvmsaveRestore *r, int fdset)
{
    virErrorPtr err = NULL;
    int rc;
    int sumrc;

    rc = kvmsaveMonitorWaitMigration(r->dom, _("restoring the guest's state"),
                                     kvmsaveRestoreMappedPoll, r);
    virErrorPreserveLast(&err);
    ignore_value(kvmsaveMonitorRemoveFd(r->dom, fdset));
    if (rc == -2)
        sumrc = kvmsaveMappedSumFinish(g_steal_pointer(&r->sum), true, NULL);
    else
        sumrc = kvmsaveMappedSumWait(g_steal_pointer(&r->sum),
                                     kvmsaveRestoreMappedSumPoll, r, NULL);
    if (sumrc < 0) {
        virFreeError(err);
        return -1;
    }
    virErrorRestore(&err);
    if (rc == -1)
        return -1;
    /* Every block was checked: the commit point. */
    if (rc == -2 || sumrc == 1 || !kvmsaveJobCommit(r->job)) {
        kvmsaveJobReportCancelled(r->job);
        return -1;
    }
    return 0;
}


/* A sparse kvmsave image: QEMU, started with "-incoming defer", reads the
 * file itself from an fdset with its multifd channels, while kvmsave
 * checks every block against the image's table; the guest may run only
 * once both are done. */
static virDomainPtr
kvmsaveRestoreViaMapped(kvmsaveRestore *r)
{
    VIR_AUTOCLOSE sumfd = -1;
    unsigned int channels = r->channels ? r->channels : r->hdr->mappedChannels;
    int fdset;
    int rc;

    if (kvmsaveRestoreStartDeferred(r, NULL) < 0 ||
        (fdset = kvmsaveRestoreSparseIncoming(r, r->hdr->mappedOffset,
                                              channels)) < 0)
        return NULL;
    if (kvmsaveRestoreMappedSumStart(r, &sumfd) < 0) {
        ignore_value(kvmsaveMonitorRemoveFd(r->dom, fdset));
        return NULL;
    }
    rc = kvmsaveRestoreMappedWait(r, fdset);
#ifdef HAVE_POSIX_FADVISE
    /* The guest's memory is in QEMU now: nobody reads these pages again. */
    if (!(r->flags & VIR_DOMAIN_SAVE_BYPASS_CACHE))
        ignore_value(posix_fadvise(sumfd, 0, 0, POSIX_FADV_DONTNEED));
#endif
    if (rc < 0)
        return NULL;
    kvmsaveRestoreSparseReset(r);
    if (r->running && virDomainResume(r->dom) < 0)
        return NULL;
    return virObjectRef(r->dom);
}


/* A lazy restore (kvmsave_lazy.h): QEMU, started with "-incoming defer"
 * and kvmsave's own monitor, runs the guest once the page server has
 * sent the devices' state, and takes its memory while it runs. */
static virDomainPtr
kvmsaveRestoreViaLazy(kvmsaveRestore *r)
{
    g_autoptr(kvmsaveLazy) lz = NULL;
    g_autofree char *dir = kvmsaveMultifdDirName();

    if (!dir)
        return NULL;
    /* Named in the journal before it exists. Once the page server runs,
     * the directory is its own: recovery leaves it to a live one. */
    kvmsaveJournalSet(r->journal, "lazy", dir);
    if (kvmsaveJournalWrite(r->journal, "starting") < 0 ||
        !(lz = kvmsaveLazyNew(r->priv, r->startxml, r->hdr->uuid, dir)) ||
        kvmsaveRestoreStartDeferred(r, kvmsaveLazyQemuArgs(lz)) < 0 ||
        kvmsaveLazyStart(lz, r->dom, r->reader, r->path, r->job) < 0)
        return NULL;
    if (r->running && virDomainResume(r->dom) < 0)
        return NULL;
    return virObjectRef(r->dom);
}


/* Whether to restore lazily: as the call asked, else as <migrateFrom
 * mode=...> of @dxml says, else as kvmsave.conf does; and only an image
 * that can be, on a host that can. A lazy restore asked for by the call
 * or the XML that the host cannot do is refused (-1); one that only the
 * configuration asks for goes eagerly, with a warning. */
static int
kvmsaveRestoreIsLazy(kvmsaveRestore *r, const char *mode)
{
    bool asked = true;
    bool lazy;

    if (r->flags & (KVMSAVE_RESTORE_LAZY | KVMSAVE_RESTORE_EAGER)) {
        lazy = !!(r->flags & KVMSAVE_RESTORE_LAZY);
    } else if (mode) {
        lazy = kvmsaveRestoreModeFromString(mode) == KVMSAVE_RESTORE_MODE_LAZY;
    } else {
        lazy = r->priv->restoreMode == KVMSAVE_RESTORE_MODE_LAZY;
        asked = false;
    }
    if (!lazy || !kvmsaveLazyPossible(r->reader, r->path))
        return 0;
    if (kvmsaveLazyCheckHost(r->priv->inner) == 0)
        return 1;
    if (asked)
        return -1;
    VIR_WARN("restoring '%s' eagerly, as kvmsave.conf's restore_mode 'lazy' cannot be followed: %s",
             r->path, virGetLastErrorMessage());
    virResetLastError();
    return 0;
}


static virDomainPtr
kvmsaveRestoreMultifd(kvmsaveRestore *r)
{
    g_autoptr(kvmsaveMultifd) mfd = NULL;
    g_autofree char *dir = NULL;

    if ((r->flags & VIR_DOMAIN_SAVE_RESET_NVRAM) && !r->priv->embedded &&
        kvmsaveRestoreResetNVRAM(r->startxml) < 0)
        return NULL;
    /* Named in the journal before it exists: recovery removes it after a
     * kill. */
    if (!(dir = kvmsaveStreamJournalDir(r->journal)) ||
        kvmsaveJournalWrite(r->journal, "starting") < 0 ||
        !(mfd = kvmsaveMultifdNewIncoming(r->priv->inner, r->startxml, dir)))
        return NULL;
    if (r->priv->embedded)
        return kvmsaveRestoreViaCommandline(r, mfd);
    return kvmsaveRestoreViaMigration(r, mfd);
}


virDomainPtr
kvmsaveRestoreDomain(kvmsaveConn *priv, const char *path,
                     const char *dxml, int channels, unsigned int flags)
{
    g_autoptr(kvmsaveImageReader) reader = NULL;
    g_autoptr(virDomain) loaded = NULL;
    g_autofree char *startxml = NULL;
    kvmsaveStockImage *stock = NULL;
    g_autofree char *from = NULL;
    g_autofree char *mode = NULL;
    bool forceDisks = false;
    bool lazy;
    int rc;
    kvmsaveRestore r = {
        .priv = priv, .path = path, .flags = flags,
        .channels = MAX(channels, 0), .qemuPidfd = -1,
    };
    virDomainPtr ret = NULL;
    virErrorPtr saved = NULL;
    bool stockLoadFailed = false;

    if (kvmsaveRestoreBegin(priv, path, dxml, channels, flags, &reader,
                            &startxml, &r.job, &r.journal) < 0)
        goto cleanup;
    r.reader = reader;
    r.startxml = startxml;
    r.hdr = kvmsaveImageReaderHeader(reader);
    kvmsaveJobSetTotal(r.job, kvmsaveImageReaderTrailer(reader)->streamBytes);
    kvmsaveJournalSet(r.journal, "image", path);
    kvmsaveJournalSet(r.journal, "name", r.hdr->name);
    if (kvmsaveRestoreCheckNotRunning(priv, r.hdr->uuid) < 0)
        goto cleanup;

    /* Before QEMU starts: it would start, and only then fail to load the
     * state, or run the guest over disks that changed under it. */
    if (dxml && kvmsaveXMLGetMigrateFromForce(dxml, &from, &forceDisks, &mode) < 0)
        goto cleanup;
    if ((rc = kvmsaveRestoreIsLazy(&r, mode)) < 0)
        goto cleanup;
    lazy = rc > 0;
    if ((stock = kvmsaveImageReaderBackendData(reader, &kvmsaveStockBackend)) &&
        kvmsaveStockImageInfo(stock)->compressed == KVMSAVE_COMPRESS_SPARSE) {
        if (kvmsaveSparseCheckQemu(priv->inner, path) < 0)
            goto cleanup;
    } else {
        stock = NULL;
    }
    if (kvmsaveImageReaderMappedTable(reader) && !lazy &&
        kvmsaveSparseCheckQemuImage(priv->inner, path) < 0)
        goto cleanup;
    if (kvmsavePreflightCheck(priv->inner, r.hdr, startxml, path, forceDisks) < 0)
        goto cleanup;

    r.running = (flags & VIR_DOMAIN_SAVE_RUNNING) ||
        (!(flags & VIR_DOMAIN_SAVE_PAUSED) &&
         (r.hdr->flags & KVMSAVE_IMAGE_FLAG_RUNNING));
    kvmsaveJournalSetInt(r.journal, "running", r.running);
    if (lazy)
        loaded = kvmsaveRestoreViaLazy(&r);
    else if (stock)
        loaded = kvmsaveRestoreViaFdset(&r, stock);
    else if (kvmsaveImageReaderMappedTable(reader))
        loaded = kvmsaveRestoreViaMapped(&r);
    else if (r.hdr->streams > 1)
        loaded = kvmsaveRestoreMultifd(&r);
    else
        loaded = kvmsaveRestoreViaStock(&r);
    if (!loaded)
        goto cleanup;
    if (kvmsaveJournalWrite(r.journal, "loaded") < 0 ||
        kvmsaveRestoreSetMigrateFrom(loaded, path, r.hdr->name) < 0)
        goto cleanup;
    ret = kvmsaveConnOuterDomain(priv, loaded);
    if (ret && lazy)
        kvmsaveLazyWatch(priv, loaded);

 cleanup:
    if (!ret && r.hdr) {
        virErrorPreserveLast(&saved);
        /* Destroy first: that also unblocks a feeder stuck on a socket.
         * (A failed feeder, or libvirt itself, may have stopped it.) */
        kvmsaveRestoreStop(&r, loaded);
        virResetLastError();
    }
    if (r.feed)
        stockLoadFailed = kvmsaveRestoreFeedError(&r, !ret, !loaded, &saved);
    VIR_FORCE_CLOSE(r.qemuPidfd);
    if (saved)
        virErrorRestore(&saved);
    if (stockLoadFailed)
        kvmsaveRestoreReportStockLoad(path);
    if (!ret && r.job && kvmsaveJobIsCancelled(r.job))
        kvmsaveJobReportCancelled(r.job);
    if (r.hdr)
        kvmsaveEventsSettle(r.hdr->uuid);
    virObjectUnref(r.dom);
    /* Its end on its board first, as kvmsaveSaveEnd. */
    kvmsaveJobEnd(r.job, !!ret);
    kvmsaveJournalEnd(r.journal);
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
