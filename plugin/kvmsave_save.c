/*
 * kvmsave_save.c: the save engine
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * check -> write the header to a temporary file next to the target ->
 * pause -> QEMU migrates into a socket we hand it through libvirt's monitor
 * (or, with multifd, into N+1 connections to a socket we listen on) ->
 * a thread per stream cuts it into checksummed chunks -> trailer, fdatasync ->
 * rename over the target -> stop the guest. Any failure before the rename
 * resumes the guest as it was and removes the temporary file.
 *
 * A sparse image (image format "sparse") takes another middle: QEMU
 * writes its mapped-ram stream into the temporary file itself, from an
 * fdset, and kvmsave then checksums it block by block (kvmsave_mapped.h).
 */
#include <config.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "kvmsave_save.h"
#include "kvmsave_saveimage.h"
#include "kvmsave_saveindex.h"
#include "kvmsave_args.h"
#include "kvmsave_chunkq.h"
#include "kvmsave_event.h"
#include "kvmsave_imagewriter.h"
#include "kvmsave_job.h"
#include "kvmsave_journal.h"
#include "kvmsave_jobboard.h"
#include "kvmsave_mapped.h"
#include "kvmsave_monitor.h"
#include "kvmsave_multifd.h"
#include "kvmsave_preflight.h"
#include "kvmsave_sparse.h"
#include "kvmsave_stream.h"
#include "kvmsave_xml.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"
#include "virtypedparam.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.save");



/* Room for video RAM, ROMs and device state beyond the guest's RAM, and
 * for the image's header, chunk headers and trailer. */
#define KVMSAVE_SAVE_SPACE_SLACK (64ULL * 1024 * 1024)

/* Before the guest is paused: refuse a save that cannot fit. The worst
 * case is every page of the guest's RAM in the stream, stored raw (zstd
 * stores a chunk raw when it does not shrink); zero pages cost nearly
 * nothing, so most images are much smaller. An older image at the target
 * stays until the new one is complete, so its space does not count. */
static int
kvmsaveSaveCheckSpace(virDomainPtr dom, int fd, const char *path)
{
    unsigned long maxmem = virDomainGetMaxMemory(dom); /* KiB */
    unsigned long long need;
    unsigned long long avail;
    struct statvfs sv;

    if (maxmem == 0)
        return -1;
    need = maxmem * 1024ULL + KVMSAVE_SAVE_SPACE_SLACK;
    if (fstatvfs(fd, &sv) < 0) {
        virReportSystemError(errno, _("cannot find the free space for save image '%s'"),
                             path);
        return -1;
    }
    /* root may use the blocks reserved for it, others may not */
    avail = (unsigned long long) (geteuid() == 0 ? sv.f_bfree : sv.f_bavail) *
        sv.f_frsize;
    if (avail < need) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("not enough free space for save image '%s': the guest's %llu MiB of RAM may need up to %llu MiB, the file system has %llu MiB free; free some space or save elsewhere"),
                       path, (unsigned long long) maxmem / 1024,
                       need / (1024 * 1024), avail / (1024 * 1024));
        return -1;
    }
    return 0;
}


/* A save in progress: what each step sets up and the rollback undoes. */
typedef struct _kvmsaveSave kvmsaveSave;
struct _kvmsaveSave {
    kvmsaveConn *priv;
    virDomainPtr dom;
    const char *path;
    unsigned int channels;      /* multifd channels; 0: one stream */
    bool direct;                /* VIR_DOMAIN_SAVE_BYPASS_CACHE */
    unsigned long qemuVersion;  /* of the guest's QEMU */
    bool sparse;                /* QEMU writes the file itself */
    bool sparseSet;             /* ...its capabilities are set for that */
    int fdset;                  /* ...from this fdset, while it does */
    uint64_t streamBytes;       /* ...this much */
    uint32_t *table;            /* ...covered by these checksums */
    kvmsaveJob *job;
    kvmsaveJournal *journal;
    kvmsaveImageHeader *hdr;
    kvmsaveImageWriter *writer;
    int fd;                     /* the temporary file */
    char *tmppath;
    kvmsaveStreamChannel *chan; /* of a single stream */
    kvmsaveMultifd *mfd;        /* of several */
    kvmsaveStreamSet *streams;  /* their threads */
    int wake[2];                /* written to stop the stream threads */
    bool wasRunning;
    bool paused;                /* by us: resumed on failure */
    bool migrating;             /* QEMU's migration is to be cancelled */
    /* The page index built as one stream passes, and the walk that
     * built it; NULL: none. */
    kvmsavePageIndexBuilder *index;
    kvmsaveVMStream *indexVm;
};


/* The thread of stream @i: it cuts QEMU's stream into image chunks. */
static int
kvmsaveSaveStreamRun(size_t i, int *fd, void *opaque)
{
    kvmsaveSave *s = opaque;
    int stream = s->channels ? (int) i : -1; /* in the image; -1: the only one */
    g_autofree unsigned char *own = NULL;
    bool first = true;
    bool eof = false;

    /* One stream goes straight into the chunk the workers encode; several
     * share the writer, so each fills a chunk of its own first. */
    if (stream >= 0)
        own = g_malloc(KVMSAVE_IMAGE_STREAM_CHUNK_SIZE);
    if (stream < 0 && s->index) {
        int rc = kvmsaveSaveIndexStream(s->writer, KVMSAVE_IMAGE_CHUNK_SIZE,
                                        *fd, s->wake[0], s->path, s->index,
                                        &s->indexVm, &eof);

        if (rc != 0)
            return rc;
        if (!s->indexVm)
            g_clear_pointer(&s->index, kvmsavePageIndexBuilderFree);
    }

    while (!eof) {
        size_t fill;
        unsigned char *buf = own;
        int rc;

        if (!buf && !(buf = kvmsaveImageWriterNextBuffer(s->writer)))
            return -1;
        rc = kvmsaveSaveStreamRead(*fd, s->wake[0], buf,
                                   own ? KVMSAVE_IMAGE_STREAM_CHUNK_SIZE :
                                   KVMSAVE_IMAGE_CHUNK_SIZE, &fill, &eof);
        if (rc != 0)
            return rc;
        /* A restore hands QEMU stream 0 first, as its main stream. */
        if (first && stream == 0 &&
            (fill < 4 || memcmp(buf, "QEVM", 4) != 0)) {
            virReportError(VIR_ERR_OPERATION_FAILED, "%s",
                           _("QEMU's first multifd connection is not its main migration stream"));
            return -1;
        }
        first = false;
        if (fill == 0)
            continue;
        if ((own ? kvmsaveImageWriteChunk(s->writer, stream, own, fill) :
             kvmsaveImageWriterQueue(s->writer, fill)) < 0)
            return -1;
    }
    return 0;
}


/* How long QEMU may take to connect all its multifd streams: it does so
 * at once, so this only bounds how long a QEMU that got stuck keeps the
 * guest paused. */
#define KVMSAVE_SAVE_CONNECT_TIMEOUT (30 * G_USEC_PER_SEC)

/* Multifd: QEMU connects its main stream first, then one connection per
 * channel; each gets its thread as it comes. A QEMU that failed (or
 * reported an error) before connecting them all ends the wait, as do a
 * cancel and the timeout. */
static int
kvmsaveSaveAcceptStreams(kvmsaveSave *s)
{
    gint64 deadline = g_get_monotonic_time() + KVMSAVE_SAVE_CONNECT_TIMEOUT;
    size_t want = s->channels + 1;

    while (kvmsaveStreamSetStarted(s->streams) < want) {
        kvmsaveMigrationStatus st = { 0 };
        int fd = kvmsaveMultifdAccept(s->mfd, 100);

        if (fd == -1)
            return -1;
        if (fd >= 0) {
            kvmsaveStreamSetStart(s->streams, kvmsaveStreamSetStarted(s->streams), fd);
            continue;
        }
        if (kvmsaveJobIsCancelled(s->job)) {
            kvmsaveJobReportCancelled(s->job);
            return -1;
        }
        if (kvmsaveMonitorQueryMigrate(s->dom, &st) < 0)
            return -1;
        if (st.state == KVMSAVE_MIGRATION_FAILED || st.error) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("QEMU's multifd migration failed before all %zu streams connected: %s"),
                           want, st.error ? st.error : st.status);
            kvmsaveMigrationStatusClear(&st);
            return -1;
        }
        kvmsaveMigrationStatusClear(&st);
        if (g_get_monotonic_time() > deadline) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("QEMU connected only %zu of its %zu multifd streams in %d seconds"),
                           kvmsaveStreamSetStarted(s->streams), want,
                           (int) (KVMSAVE_SAVE_CONNECT_TIMEOUT / G_USEC_PER_SEC));
            return -1;
        }
    }
    return 0;
}


static int
kvmsaveSaveHeaderInit(kvmsaveConn *priv, virDomainPtr dom, const char *dxml,
                      bool running, kvmsaveImageHeader *hdr)
{
    g_autofree char *xml = NULL;
    g_autofree char *caps = NULL;

    if (!(xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_SECURE |
                                    VIR_DOMAIN_XML_MIGRATABLE)))
        return -1;
    if (!(hdr->xml = kvmsaveXMLForImage(xml)))
        return -1;
    /* The disks QEMU uses: those of the live XML, not of an alternate. */
    if (kvmsavePreflightRecordDisks(hdr->xml, &hdr->disks) < 0)
        return -1;
    if (dxml) {
        if (kvmsaveXMLCheckABI(hdr->xml, dxml) < 0)
            return -1;
        g_free(hdr->xml);
        if (!(hdr->xml = kvmsaveXMLForImage(dxml)))
            return -1;
    }

    if (virDomainGetUUID(dom, hdr->uuid) < 0)
        return -1;
    hdr->name = g_strdup(virDomainGetName(dom));
    hdr->created = g_get_real_time() / G_USEC_PER_SEC;
    hdr->flags = running ? KVMSAVE_IMAGE_FLAG_RUNNING : 0;
    hdr->machine = kvmsaveXMLGetMachine(hdr->xml);
    if ((caps = virConnectGetCapabilities(priv->inner)))
        hdr->hostCPU = kvmsaveXMLGetHostCPUModel(caps);
    if (!(hdr->qemuVersion = kvmsaveMonitorQemuVersion(dom)))
        return -1;
    hdr->producer = g_strdup_printf("%s %s", PACKAGE_NAME, PACKAGE_VERSION);
    return 0;
}


/* QEMU knows how far the guest's RAM has gone; the job shows that. */
static bool
kvmsaveSavePoll(const kvmsaveMigrationStatus *st, void *opaque)
{
    kvmsaveJob *job = opaque;

    if (st->state == KVMSAVE_MIGRATION_COMPLETED)
        kvmsaveJobSetProgress(job, st->total, st->total);
    else if (st->total)
        kvmsaveJobSetProgress(job, st->total, st->total - st->remaining);
    if (st->mbps > 0)
        kvmsaveJobSetRate(job, st->mbps * 1000 * 1000 / 8);
    return kvmsaveJobIsCancelled(job);
}


/* One stream gets a page index, built as it passes, so that a lazy
 * restore finds each page; its room in the header is reserved for the
 * most pages the guest can have. Several streams carry pages in their
 * own order, and a guest whose index would not fit in a header gets
 * none: both are restored eagerly. Runs after the header is complete. */
static void
kvmsaveSaveIndexPrepare(kvmsaveSave *s)
{
    unsigned long maxmem = virDomainGetMaxMemory(s->dom); /* KiB */
    size_t reserve = kvmsavePageIndexReserve(maxmem * 1024ULL);
    size_t room = kvmsaveImageHeaderIndexRoom(s->hdr);

    if (maxmem == 0) {
        VIR_WARN("no page index for save image '%s': %s", s->path,
                 virGetLastErrorMessage());
        virResetLastError();
        return;
    }
    if (reserve > room) {
        VIR_INFO("no page index for save image '%s': the index of %lu KiB of RAM needs %zu bytes, the header has room for %zu",
                 s->path, maxmem, reserve, room);
        return;
    }
    s->hdr->indexReserve = reserve;
    s->index = kvmsavePageIndexBuilderNew(kvmsavePageIndexPages(maxmem * 1024ULL));
}


/* Check the guest can be saved and describe it in the image's header. */
static int
kvmsaveSaveCheck(kvmsaveSave *s, const char *dxml, unsigned int flags)
{
    int state;
    int reason;

    if (virDomainGetState(s->dom, &state, &reason, 0) < 0)
        return -1;
    if (state != VIR_DOMAIN_RUNNING && state != VIR_DOMAIN_PAUSED &&
        state != VIR_DOMAIN_BLOCKED) {
        virReportError(VIR_ERR_OPERATION_INVALID,
                       _("domain '%s' is not running, so it cannot be saved"),
                       virDomainGetName(s->dom));
        return -1;
    }
    s->wasRunning = state != VIR_DOMAIN_PAUSED;
    if (kvmsaveSaveHeaderInit(s->priv, s->dom, dxml,
                              (flags & VIR_DOMAIN_SAVE_RUNNING) ||
                              (s->wasRunning && !(flags & VIR_DOMAIN_SAVE_PAUSED)),
                              s->hdr) < 0)
        return -1;
    /* The QEMU the guest runs in, which may be older than the host's. */
    s->qemuVersion = kvmsaveSparseParseVersion(s->hdr->qemuVersion);
    if (s->sparse && kvmsaveSparseCheckSave(s->qemuVersion, s->direct) < 0)
        return -1;
    if (s->sparse) {
        s->hdr->mappedOffset = KVMSAVE_IMAGE_MAPPED_OFFSET;
        s->hdr->mappedBlock = KVMSAVE_IMAGE_MAPPED_BLOCK;
        s->hdr->mappedChannels = s->channels;
        s->hdr->chunkSize = KVMSAVE_IMAGE_MAPPED_BLOCK;
    } else if (s->channels) {
        s->hdr->streams = s->channels + 1;
        s->hdr->chunkSize = KVMSAVE_IMAGE_STREAM_CHUNK_SIZE;
    } else {
        kvmsaveSaveIndexPrepare(s);
    }
    return 0;
}


/* The temporary file with the header, journalled, and where QEMU's
 * streams will come in: a socket pair with its thread, or the multifd
 * socket. */
static int
kvmsaveSavePrepare(kvmsaveSave *s, int format)
{
    g_autofree char *tmppath = kvmsaveTempName(s->path);

    if (!tmppath)
        return -1;
    /* From here a killed client is recovered on the next open: the
     * journal names the file before it exists. */
    kvmsaveJournalSet(s->journal, "name", virDomainGetName(s->dom));
    kvmsaveJournalSet(s->journal, "target", s->path);
    kvmsaveJournalSet(s->journal, "temp", tmppath);
    kvmsaveJournalSetInt(s->journal, "paused", s->wasRunning);
    kvmsaveJournalSetInt(s->journal, "sparse", s->sparse);
    if (kvmsaveJournalWrite(s->journal, "prepared") < 0 ||
        (s->fd = kvmsaveCreateTempAt(tmppath, s->direct)) < 0)
        return -1;
    s->tmppath = g_steal_pointer(&tmppath);
    if (kvmsaveSaveCheckSpace(s->dom, s->fd, s->path) < 0)
        return -1;
    s->writer = kvmsaveImageWriterNew(s->fd, s->tmppath, s->direct);
    kvmsaveImageWriterSetFormat(s->writer, format);
    if (s->index)
        kvmsaveImageWriterRecordChunks(s->writer);
    if (kvmsaveImageWriteHeader(s->writer, s->hdr) < 0)
        return -1;
    if (s->sparse)
        return 0;

    if (pipe2(s->wake, O_CLOEXEC) < 0) {
        virReportSystemError(errno, "%s", _("cannot create a pipe to stop the save's stream thread"));
        return -1;
    }
    s->streams = kvmsaveStreamSetNew("kvmsave-save", s->channels + 1,
                                     kvmsaveSaveStreamRun, NULL, s);
    if (s->channels) {
        g_autofree char *dir = NULL;

        /* Named in the journal before it exists: recovery removes it
         * after a kill. */
        if (!(dir = kvmsaveStreamJournalDir(s->journal)) ||
            kvmsaveJournalWrite(s->journal, "prepared") < 0 ||
            !(s->mfd = kvmsaveMultifdNew(s->dom, dir)) ||
            kvmsaveMultifdListen(s->mfd, s->channels + 1) < 0)
            return -1;
        return 0;
    }
    if (!(s->chan = kvmsaveStreamChannelNew("save")))
        return -1;
    kvmsaveStreamSetStart(s->streams, 0, kvmsaveStreamChannelTakeOurs(s->chan));
    return 0;
}


/* While the save checksums its stream: an abort stops it. */
static bool
kvmsaveSaveSumPoll(uint64_t done G_GNUC_UNUSED, void *opaque)
{
    return kvmsaveJobIsCancelled(opaque);
}


/* QEMU's stream in the file is complete: checksum every block of it,
 * while the kernel writes it back. */
static int
kvmsaveSaveSumSparse(kvmsaveSave *s)
{
    VIR_AUTOCLOSE fd = -1;
    struct stat sb;
    int rc;

    if ((fd = open(s->tmppath, O_RDONLY | O_CLOEXEC |
                   (s->direct ? O_DIRECT : 0))) < 0 ||
        fstat(fd, &sb) < 0) {
        virReportSystemError(errno, _("cannot read save image '%s'"), s->tmppath);
        return -1;
    }
    if (sb.st_size < s->hdr->mappedOffset) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("QEMU wrote no state into save image '%s'"), s->tmppath);
        return -1;
    }
    s->streamBytes = sb.st_size - s->hdr->mappedOffset;
    if (!s->direct)
        ignore_value(sync_file_range(fd, s->hdr->mappedOffset, s->streamBytes,
                                     SYNC_FILE_RANGE_WRITE));
    rc = kvmsaveMappedSumWait(kvmsaveMappedSumStart(fd, s->tmppath, s->direct,
                                                    s->hdr, s->streamBytes, NULL,
                                                    kvmsaveChunkQueueDefaultWorkers()),
                              kvmsaveSaveSumPoll, s->job, &s->table);
    if (rc == 1)
        kvmsaveJobReportCancelled(s->job);
    return rc == 0 ? 0 : -1;
}


/* While QEMU writes a sparse image: start the writeback of what it wrote,
 * so that it runs alongside, as the chunk writer's does, rather than all
 * in the final fdatasync. */
static bool
kvmsaveSaveSparsePoll(const kvmsaveMigrationStatus *st, void *opaque)
{
    kvmsaveSave *s = opaque;

    if (!s->direct)
        ignore_value(sync_file_range(s->fd, 0, 0, SYNC_FILE_RANGE_WRITE));
    return kvmsaveSavePoll(st, s->job);
}


/* Wait for QEMU's migration to complete, the job showing its progress. */
static int
kvmsaveSaveWaitMigration(kvmsaveSave *s)
{
    int rc = s->sparse ?
        kvmsaveMonitorWaitMigration(s->dom, _("saving the guest's state"),
                                    kvmsaveSaveSparsePoll, s) :
        kvmsaveMonitorWaitMigration(s->dom, _("saving the guest's state"),
                                    kvmsaveSavePoll, s->job);

    if (rc == -2)
        kvmsaveJobReportCancelled(s->job);
    if (rc < 0)
        return -1;
    s->migrating = false;
    return 0;
}


/* Have QEMU write its stream into the file itself, then checksum it. */
static int
kvmsaveSaveMigrateSparse(kvmsaveSave *s)
{
    s->sparseSet = true;
    if ((s->fdset = kvmsaveSparseMigrate(s->dom, s->tmppath,
                                         s->hdr->mappedOffset, s->channels,
                                         s->direct, s->qemuVersion)) < 0)
        return -1;
    s->migrating = true;
    if (kvmsaveSaveWaitMigration(s) < 0 ||
        kvmsaveMonitorRemoveFd(s->dom, s->fdset) < 0)
        return -1;
    s->fdset = -1;
    VIR_DEBUG("QEMU's stream is complete, checksumming it");
    return kvmsaveSaveSumSparse(s);
}


/* Pause the guest, and have QEMU migrate into our streams until it is
 * done and every stream thread has written its last chunk. */
static int
kvmsaveSaveMigrate(kvmsaveSave *s)
{
    VIR_DEBUG("header written to %s, pausing the guest", s->tmppath);
    if (kvmsaveJournalWrite(s->journal, "paused") < 0)
        return -1;
    if (s->wasRunning) {
        if (virDomainSuspend(s->dom) < 0)
            return -1;
        s->paused = true;
    }

    /* A guest restored lazily has postcopy on, which a save's stream
     * must not advise, and mapped-ram refuses. */
    if (kvmsaveMonitorSetUnlimitedBandwidth(s->dom) < 0 ||
        kvmsaveMonitorSetCapability(s->dom, "postcopy-ram", false) < 0)
        return -1;
    if (s->sparse)
        return kvmsaveSaveMigrateSparse(s);
    /* QEMU keeps multifd and mapped-ram on from one migration to the
     * next: say it. */
    if (kvmsaveMonitorSetMultifd(s->dom, s->channels) < 0 ||
        kvmsaveSparseReset(s->dom, s->qemuVersion) < 0)
        return -1;
    if (s->channels) {
        if (kvmsaveMonitorMigrate(s->dom, "unix", kvmsaveMultifdPath(s->mfd)) < 0)
            return -1;
        s->migrating = true;
        if (kvmsaveSaveAcceptStreams(s) < 0)
            return -1;
        kvmsaveMultifdRemove(s->mfd);
    } else {
        if (kvmsaveStreamChannelMigrate(s->chan, s->dom) < 0)
            return -1;
        s->migrating = true;
    }

    if (kvmsaveSaveWaitMigration(s) < 0)
        return -1;
    VIR_DEBUG("QEMU's stream is complete");

    /* A stream's error is taken in the rollback. */
    return kvmsaveStreamSetJoin(s->streams);
}


/* The page index, once every chunk has its place in the file: 1 when it
 * goes into the header, 0 when the stream makes none. An image without
 * one is still good, for an eager restore. */
static int
kvmsaveSaveAttachIndex(kvmsaveSave *s)
{
    g_autofree uint64_t *offsets = NULL;
    g_autofree unsigned char *buf = NULL;
    size_t nchunks, len;

    if (kvmsaveImageWriterDrain(s->writer) < 0)
        return -1;
    offsets = kvmsaveImageWriterTakeChunkOffsets(s->writer, &nchunks);
    if (kvmsavePageIndexEncode(s->index, s->indexVm,
                               kvmsaveImageWriterStreamBytes(s->writer),
                               offsets, nchunks, KVMSAVE_IMAGE_CHUNK_SIZE,
                               &buf, &len) < 0) {
        g_clear_pointer(&s->index, kvmsavePageIndexBuilderFree);
        VIR_WARN("no page index for save image '%s', which can only be restored eagerly: %s",
                 s->path, virGetLastErrorMessage());
        virResetLastError();
        return 0;
    }
    /* The builder is the larger: it goes before the header is copied. */
    g_clear_pointer(&s->index, kvmsavePageIndexBuilderFree);
    g_free(s->hdr->indexData);
    s->hdr->indexData = g_steal_pointer(&buf);
    s->hdr->indexLen = len;
    return 1;
}


/* Finish the image and put it in place of the target. */
static int
kvmsaveSaveCommit(kvmsaveSave *s)
{
    bool replace = false;
    int rc;

    /* QEMU flushed and let go of the disks as the migration ended: this
     * is the state a restore must find them in. */
    if (s->hdr->disks) {
        g_autofree char *before = g_steal_pointer(&s->hdr->disks);

        if (kvmsavePreflightRecordDisksAgain(before, &s->hdr->disks) < 0)
            return -1;
        replace = true;
    }
    if (s->indexVm) {
        if ((rc = kvmsaveSaveAttachIndex(s)) < 0)
            return -1;
        replace |= rc > 0;
    }
    if (replace && kvmsaveImageWriterReplaceHeader(s->writer, s->hdr) < 0)
        return -1;

    if (s->sparse ?
        kvmsaveImageWriterFinishMapped(s->writer, s->hdr, s->streamBytes,
                                       s->table) < 0 :
        kvmsaveImageWriterFinish(s->writer) < 0)
        return -1;
    if (VIR_CLOSE(s->fd) < 0) {
        virReportSystemError(errno, _("cannot close save image '%s'"), s->tmppath);
        return -1;
    }
    /* A cancel up to here still leaves everything as it was. */
    if (!kvmsaveJobCommit(s->job)) {
        kvmsaveJobReportCancelled(s->job);
        return -1;
    }
    /* Recorded before the rename: a client killed from here on leaves a
     * complete image, which recovery puts in place before it stops the
     * guest. */
    if (kvmsaveJournalWrite(s->journal, "committed") < 0 ||
        kvmsaveCommitTemp(s->tmppath, s->path) < 0)
        return -1;
    g_clear_pointer(&s->tmppath, g_free);
    VIR_DEBUG("image %s complete, stopping the guest", s->path);
    return 0;
}


/* The image is safe: now the guest may go. From here on it is never
 * resumed: a running guest and an image of it must not both exist. */
static int
kvmsaveSaveStopGuest(kvmsaveSave *s)
{
    int rc;

    s->paused = false;
    kvmsaveEventsExpectDestroy(s->hdr->uuid, VIR_DOMAIN_EVENT_STOPPED_SAVED);
    rc = virDomainDestroy(s->dom);
    kvmsaveEventsSettle(s->hdr->uuid);
    if (rc < 0) {
        /* Taken before virDomainIsActive() resets it. */
        g_autofree char *why = g_strdup(virGetLastErrorMessage());

        if (virDomainIsActive(s->dom) != 0) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("the image '%s' is complete, but the guest could not be stopped and stays paused (%s); destroy it before restoring the image"),
                           s->path, why);
            return -1;
        }
        /* Stopped after all (a reconnecting process raced us). */
        virResetLastError();
    }
    VIR_DEBUG("guest stopped");
    return 0;
}


/* End the job; one that ended well sends JOB_COMPLETED with its
 * statistics, as stock libvirt does at the end of its save's migration. */
static void
kvmsaveSaveEndJob(kvmsaveSave *s, bool failed)
{
    virTypedParameterPtr params = NULL;
    int nparams = 0;

    if (kvmsaveJobEndStats(s->job, !failed, &params, &nparams) > 0)
        kvmsaveEventsJobCompleted(s->dom->uuid, s->dom->name, s->dom->id,
                                  params, nparams);
    virTypedParamsFree(params, nparams);
}


/* Undo what a failed save set up (@failed), and free what any save set
 * up: the guest resumed as it was, the temporary file removed. The error
 * of the stream that failed first (disk full...) explains more than
 * QEMU's broken pipe. */
static void
kvmsaveSaveEnd(kvmsaveSave *s, bool failed)
{
    virErrorPtr saved = NULL;
    virErrorPtr first;

    if (failed)
        virErrorPreserveLast(&saved);
    if (s->migrating)
        ignore_value(kvmsaveMonitorMigrateCancel(s->dom));
    g_clear_pointer(&s->chan, kvmsaveStreamChannelFree);
    if (s->wake[1] >= 0 && s->streams && kvmsaveStreamSetStarted(s->streams) > 0)
        ignore_value(safewrite(s->wake[1], "x", 1));
    first = kvmsaveStreamSetFree(g_steal_pointer(&s->streams), NULL);
    if (failed && first && !kvmsaveJobIsCancelled(s->job)) {
        virFreeError(saved);
        saved = g_steal_pointer(&first);
    }
    virFreeError(first);
    /* Only once the streams are closed: a multifd channel of QEMU's may
     * be blocked writing to a stream that no longer reads. */
    if (s->migrating && kvmsaveMonitorMigrateWaitEnd(s->dom) < 0)
        VIR_WARN("%s", virGetLastErrorMessage());
    if (s->fdset >= 0)
        ignore_value(kvmsaveMonitorRemoveFd(s->dom, s->fdset));
    /* The guest runs on: as it was before, also for stock's saves. */
    if (failed && s->sparseSet)
        ignore_value(kvmsaveSparseReset(s->dom, s->qemuVersion));
    if (failed && s->paused)
        ignore_value(virDomainResume(s->dom));
    if (s->tmppath)
        unlink(s->tmppath);
    VIR_FORCE_CLOSE(s->fd);
    VIR_FORCE_CLOSE(s->wake[0]);
    VIR_FORCE_CLOSE(s->wake[1]);
    if (saved)
        virErrorRestore(&saved);
    kvmsaveImageWriterFree(s->writer);
    kvmsavePageIndexBuilderFree(s->index);
    kvmsaveVMStreamFree(s->indexVm);
    kvmsaveMultifdFree(s->mfd);
    g_free(s->table);
    kvmsaveImageHeaderFree(s->hdr);
    g_free(s->tmppath);
    /* The job's end is on its board before its journal's lock goes: a
     * client of another process then never sees the job vanish unended. */
    kvmsaveSaveEndJob(s, failed);
    virObjectUnref(s->dom);
    kvmsaveJournalEnd(s->journal);
}


int
kvmsaveSaveDomain(kvmsaveConn *priv, const unsigned char *uuid,
                  const char *path, const char *dxml, int format,
                  int channels, unsigned int flags)
{
    bool sparse = format == KVMSAVE_IMAGE_FORMAT_SPARSE;
    kvmsaveSave s = {
        .priv = priv, .path = path,
        .channels = channels > 1 ? MIN(channels, KVMSAVE_PARALLEL_CHANNELS_MAX) :
                    sparse ? 1 : 0,
        .direct = !!(flags & VIR_DOMAIN_SAVE_BYPASS_CACHE),
        .sparse = sparse,
        .fd = -1, .fdset = -1, .wake = { -1, -1 },
    };
    int ret = -1;

    if (!(s.dom = kvmsaveConnLookupInner(priv, uuid)))
        return -1;
    s.hdr = kvmsaveImageHeaderNew();

    if ((s.job = kvmsaveJobBegin(uuid, KVMSAVE_JOB_SAVE)) &&
        (s.journal = kvmsaveJournalBegin(priv, uuid, KVMSAVE_JOURNAL_SAVE, NULL)) &&
        kvmsaveJobBoardAttach(priv, s.job, uuid) == 0 &&
        kvmsaveSaveCheck(&s, dxml, flags) == 0 &&
        kvmsaveSavePrepare(&s, format) == 0 &&
        kvmsaveSaveMigrate(&s) == 0 &&
        kvmsaveSaveCommit(&s) == 0 &&
        kvmsaveSaveStopGuest(&s) == 0)
        ret = 0;

    kvmsaveSaveEnd(&s, ret < 0);
    return ret;
}
