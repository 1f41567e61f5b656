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
 */
#include <config.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "tempname.h"

#include "kvmsave_save.h"
#include "kvmsave_args.h"
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

VIR_LOG_INIT("kvmsave.save");



int
kvmsaveCreateTemp(const char *path, bool direct, char **tmppath)
{
    g_autofree char *dir = g_path_get_dirname(path);
    g_autofree char *tmpl = g_build_filename(dir, ".kvmsave-XXXXXX.tmp", NULL);
    struct stat sb;
    int fd;

    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        virReportError(VIR_ERR_INVALID_ARG,
                       _("cannot save to '%s': it is a directory, give a file name"),
                       path);
        return -1;
    }

    /* O_CREAT | O_EXCL, mode 0600; O_NOFOLLOW on top. */
    fd = gen_tempname(tmpl, 4, O_CLOEXEC | O_NOFOLLOW |
                      (direct ? O_DIRECT : 0), GT_FILE);
    if (fd < 0) {
        virReportSystemError(errno,
                             _("cannot create a save image in directory '%s'%s"),
                             dir, direct ? _(" for direct I/O (bypass cache)") : "");
        return -1;
    }
    *tmppath = g_steal_pointer(&tmpl);
    return fd;
}


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


int
kvmsaveCommitTemp(const char *tmppath, const char *path)
{
    if (rename(tmppath, path) < 0) {
        virReportSystemError(errno, _("cannot move the finished save image into place at '%s'"),
                             path);
        return -1;
    }
    /* Renamed is done: the image is in place and the guest must go. A
     * failed directory sync only weakens durability against a host crash. */
    if (kvmsaveSyncParentDir(path) < 0) {
        VIR_WARN("save image %s is in place, but its directory could not be synced: %s",
                 path, virGetLastErrorMessage());
        virResetLastError();
    }
    return 0;
}


/* The thread that turns one of QEMU's streams into image chunks. */
typedef struct _kvmsaveSaveStream kvmsaveSaveStream;
struct _kvmsaveSaveStream {
    int fd;                     /* our end of QEMU's stream socket */
    int wakefd;                 /* readable when the thread must stop */
    int stream;                 /* its number in the image; -1: the only one */
    kvmsaveImageWriter *writer;
    int rc;
    virErrorPtr err;
    gint *failures;             /* shared: how many streams failed so far */
    int order;                  /* how many had failed before this one */
};


/* Read up to @size bytes of the stream into @buf: 0 with *@fill bytes
 * (fewer only at its end, *@eof), 1 when told to stop, -1 on error. */
static int
kvmsaveSaveStreamRead(kvmsaveSaveStream *st, unsigned char *buf, size_t size,
                      size_t *fill, bool *eof)
{
    *fill = 0;
    while (*fill < size) {
        struct pollfd fds[2] = {
            { .fd = st->fd, .events = POLLIN },
            { .fd = st->wakefd, .events = POLLIN },
        };
        ssize_t n;

        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            virReportSystemError(errno, "%s", _("cannot poll QEMU's migration stream"));
            return -1;
        }
        if (fds[1].revents)
            return 1;
        n = read(st->fd, buf + *fill, size - *fill);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0) {
            virReportSystemError(errno, "%s", _("cannot read QEMU's migration stream"));
            return -1;
        }
        if (n == 0) {
            *eof = true;
            break;
        }
        *fill += n;
    }
    return 0;
}


static gpointer
kvmsaveSaveStreamThread(gpointer opaque)
{
    kvmsaveSaveStream *st = opaque;
    g_autofree unsigned char *own = NULL;
    bool first = true;
    bool eof = false;
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    /* One stream goes straight into the chunk the workers encode; several
     * share the writer, so each fills a chunk of its own first. */
    if (st->stream >= 0)
        own = g_malloc(KVMSAVE_IMAGE_STREAM_CHUNK_SIZE);

    st->rc = -1;
    while (!eof) {
        size_t fill;
        unsigned char *buf = own;
        int rc;

        if (!buf && !(buf = kvmsaveImageWriterNextBuffer(st->writer)))
            goto error;
        rc = kvmsaveSaveStreamRead(st, buf, own ? KVMSAVE_IMAGE_STREAM_CHUNK_SIZE :
                                   KVMSAVE_IMAGE_CHUNK_SIZE, &fill, &eof);
        if (rc < 0)
            goto error;
        if (rc > 0)
            goto stopped;
        /* A restore hands QEMU stream 0 first, as its main stream. */
        if (first && st->stream == 0 &&
            (fill < 4 || memcmp(buf, "QEVM", 4) != 0)) {
            virReportError(VIR_ERR_OPERATION_FAILED, "%s",
                           _("QEMU's first multifd connection is not its main migration stream"));
            goto error;
        }
        first = false;
        if (fill == 0)
            continue;
        if ((own ? kvmsaveImageWriteChunk(st->writer, st->stream, own, fill) :
             kvmsaveImageWriterQueue(st->writer, fill)) < 0)
            goto error;
    }
    st->rc = 0;
    return NULL;

 error:
    st->err = virErrorCopyNew(virGetLastError());
    st->order = g_atomic_int_add(st->failures, 1);
 stopped:
    /* QEMU's writes now fail with EPIPE, so its migration fails. */
    VIR_FORCE_CLOSE(st->fd);
    return NULL;
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
kvmsaveSaveAcceptStreams(virDomainPtr dom, kvmsaveMultifd *mfd,
                         kvmsaveJob *job, kvmsaveSaveStream *streams,
                         GThread **threads, size_t *nstreams, size_t want)
{
    gint64 deadline = g_get_monotonic_time() + KVMSAVE_SAVE_CONNECT_TIMEOUT;

    while (*nstreams < want) {
        kvmsaveMigrationStatus st = { 0 };
        kvmsaveSaveStream *s = &streams[*nstreams];
        int fd = kvmsaveMultifdAccept(mfd, 100);

        if (fd == -1)
            return -1;
        if (fd >= 0) {
            s->fd = fd;
            s->stream = *nstreams;
            threads[(*nstreams)++] = g_thread_new("kvmsave-save",
                                                  kvmsaveSaveStreamThread, s);
            continue;
        }
        if (kvmsaveJobIsCancelled(job)) {
            kvmsaveJobReportCancelled(job);
            return -1;
        }
        if (kvmsaveMonitorQueryMigrate(dom, &st) < 0)
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
                           *nstreams, want,
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


int
kvmsaveSaveDomain(kvmsaveConn *priv, const unsigned char *uuid,
                  const char *path, const char *dxml, int format,
                  int channels, unsigned int flags)
{
    g_autoptr(virDomain) dom = NULL;
    g_autoptr(kvmsaveImageHeader) hdr = kvmsaveImageHeaderNew();
    g_autoptr(kvmsaveImageWriter) writer = NULL;
    g_autofree char *tmppath = NULL;
    g_autofree char *fdname = kvmsaveFdName("save");
    g_autoptr(kvmsaveMultifd) mfd = NULL;
    kvmsaveSaveStream streams[KVMSAVE_PARALLEL_CHANNELS_MAX + 1];
    GThread *threads[KVMSAVE_PARALLEL_CHANNELS_MAX + 1] = { NULL };
    size_t nstreams = 0;
    size_t i;
    gint failures = 0;
    kvmsaveSaveStream *first = NULL;
    bool multifd = channels > 1;
    VIR_AUTOCLOSE fd = -1;
    int chan[2] = { -1, -1 };
    int wake[2] = { -1, -1 };
    bool direct = !!(flags & VIR_DOMAIN_SAVE_BYPASS_CACHE);
    bool wasRunning;
    bool paused = false;
    bool fdPassed = false;
    bool migrating = false;
    int state;
    int reason;
    int ret = -1;
    virErrorPtr saved = NULL;
    kvmsaveJob *job = NULL;
    kvmsaveJournal *journal = NULL;
    int rc;

    for (i = 0; i < G_N_ELEMENTS(streams); i++)
        streams[i] = (kvmsaveSaveStream) { .fd = -1, .wakefd = -1, .stream = -1 };
    if (channels > KVMSAVE_PARALLEL_CHANNELS_MAX)
        channels = KVMSAVE_PARALLEL_CHANNELS_MAX;
    if (!(dom = kvmsaveConnLookupInner(priv, uuid)))
        return -1;
    if (!(job = kvmsaveJobBegin(uuid, KVMSAVE_JOB_SAVE)))
        return -1;
    if (!(journal = kvmsaveJournalBegin(priv, uuid, KVMSAVE_JOURNAL_SAVE, NULL)))
        goto cleanup;

    /* Check everything we can before touching the guest. */
    if (virDomainGetState(dom, &state, &reason, 0) < 0)
        goto cleanup;
    if (state != VIR_DOMAIN_RUNNING && state != VIR_DOMAIN_PAUSED &&
        state != VIR_DOMAIN_BLOCKED) {
        virReportError(VIR_ERR_OPERATION_INVALID,
                       _("domain '%s' is not running, so it cannot be saved"),
                       virDomainGetName(dom));
        goto cleanup;
    }
    wasRunning = state != VIR_DOMAIN_PAUSED;

    if (kvmsaveSaveHeaderInit(priv, dom, dxml,
                              (flags & VIR_DOMAIN_SAVE_RUNNING) ||
                              (wasRunning && !(flags & VIR_DOMAIN_SAVE_PAUSED)),
                              hdr) < 0)
        goto cleanup;
    if (multifd) {
        hdr->streams = channels + 1;
        hdr->chunkSize = KVMSAVE_IMAGE_STREAM_CHUNK_SIZE;
    }

    if ((fd = kvmsaveCreateTemp(path, direct, &tmppath)) < 0)
        goto cleanup;
    /* From here a killed client is recovered on the next open. */
    kvmsaveJournalSet(journal, "name", virDomainGetName(dom));
    kvmsaveJournalSet(journal, "target", path);
    kvmsaveJournalSet(journal, "temp", tmppath);
    kvmsaveJournalSetInt(journal, "paused", wasRunning);
    if (kvmsaveJournalWrite(journal, "prepared") < 0 ||
        kvmsaveSaveCheckSpace(dom, fd, path) < 0)
        goto cleanup;
    writer = kvmsaveImageWriterNew(fd, tmppath, direct);
    kvmsaveImageWriterSetFormat(writer, format);
    if (kvmsaveImageWriteHeader(writer, hdr) < 0)
        goto cleanup;

    if (pipe2(wake, O_CLOEXEC) < 0) {
        virReportSystemError(errno, "%s", _("cannot create a pipe to stop the save's stream thread"));
        goto cleanup;
    }
    for (i = 0; i < G_N_ELEMENTS(streams); i++) {
        streams[i].wakefd = wake[0];
        streams[i].writer = writer;
        streams[i].failures = &failures;
    }
    if (multifd) {
        if (!(mfd = kvmsaveMultifdNew(dom)))
            goto cleanup;
        /* Recorded at once: recovery removes it after a kill. */
        kvmsaveJournalSet(journal, "multifd", kvmsaveMultifdDir(mfd));
        if (kvmsaveJournalWrite(journal, "prepared") < 0 ||
            kvmsaveMultifdListen(mfd, channels + 1) < 0)
            goto cleanup;
    } else {
        if (kvmsaveStreamChannelNew(chan) < 0)
            goto cleanup;
        streams[0].fd = chan[0];
        chan[0] = -1;
        threads[nstreams++] = g_thread_new("kvmsave-save",
                                           kvmsaveSaveStreamThread, &streams[0]);
    }

    VIR_DEBUG("header written to %s, pausing the guest", tmppath);
    if (kvmsaveJournalWrite(journal, "paused") < 0)
        goto cleanup;
    if (wasRunning) {
        if (virDomainSuspend(dom) < 0)
            goto cleanup;
        paused = true;
    }

    /* QEMU keeps multifd on from one migration to the next: say it. */
    if (kvmsaveMonitorSetMultifd(dom, multifd ? channels : 0) < 0 ||
        kvmsaveMonitorSetUnlimitedBandwidth(dom) < 0)
        goto cleanup;
    if (multifd) {
        if (kvmsaveMonitorMigrate(dom, "unix", kvmsaveMultifdPath(mfd)) < 0)
            goto cleanup;
        migrating = true;
        if (kvmsaveSaveAcceptStreams(dom, mfd, job, streams, threads,
                                     &nstreams, channels + 1) < 0)
            goto cleanup;
        kvmsaveMultifdRemove(mfd);
    } else {
        if (kvmsaveMonitorGetFd(dom, fdname, chan[1]) < 0)
            goto cleanup;
        fdPassed = true;
        VIR_FORCE_CLOSE(chan[1]);
        if (kvmsaveMonitorMigrate(dom, "fd", fdname) < 0)
            goto cleanup;
        fdPassed = false; /* the migration owns it now */
        migrating = true;
    }

    rc = kvmsaveMonitorWaitMigration(dom, _("saving the guest's state"),
                                     kvmsaveSavePoll, job);
    if (rc == -2)
        kvmsaveJobReportCancelled(job);
    if (rc < 0)
        goto cleanup;
    migrating = false;
    VIR_DEBUG("QEMU's stream is complete");

    for (i = 0; i < nstreams; i++) {
        g_thread_join(g_steal_pointer(&threads[i]));
        if (streams[i].rc < 0)
            goto cleanup; /* its error is taken below */
    }

    /* QEMU flushed and let go of the disks as the migration ended: this
     * is the state a restore must find them in. */
    if (hdr->disks) {
        g_autofree char *before = g_steal_pointer(&hdr->disks);

        if (kvmsavePreflightRecordDisksAgain(before, &hdr->disks) < 0 ||
            kvmsaveImageWriterReplaceHeader(writer, hdr) < 0)
            goto cleanup;
    }

    if (kvmsaveImageWriterFinish(writer) < 0)
        goto cleanup;
    if (VIR_CLOSE(fd) < 0) {
        virReportSystemError(errno, _("cannot close save image '%s'"), tmppath);
        goto cleanup;
    }
    /* A cancel up to here still leaves everything as it was. */
    if (!kvmsaveJobCommit(job)) {
        kvmsaveJobReportCancelled(job);
        goto cleanup;
    }
    /* Recorded before the rename: a client killed from here on leaves a
     * complete image, which recovery puts in place before it stops the
     * guest. */
    if (kvmsaveJournalWrite(journal, "committed") < 0 ||
        kvmsaveCommitTemp(tmppath, path) < 0)
        goto cleanup;
    g_clear_pointer(&tmppath, g_free);
    VIR_DEBUG("image %s complete, stopping the guest", path);

    /* The image is safe: now the guest may go. From here on it is never
     * resumed: a running guest and an image of it must not both exist. */
    paused = false;
    kvmsaveEventsExpectDestroy(uuid, VIR_DOMAIN_EVENT_STOPPED_SAVED);
    if (virDomainDestroy(dom) < 0) {
        /* Taken before virDomainIsActive() resets it. */
        g_autofree char *why = g_strdup(virGetLastErrorMessage());

        if (virDomainIsActive(dom) != 0) {
            virReportError(VIR_ERR_OPERATION_FAILED,
                           _("the image '%s' is complete, but the guest could not be stopped and stays paused (%s); destroy it before restoring the image"),
                           path, why);
            goto cleanup;
        }
        /* Stopped after all (a reconnecting process raced us). */
        virResetLastError();
    }
    VIR_DEBUG("guest stopped");
    ret = 0;

 cleanup:
    if (ret < 0)
        virErrorPreserveLast(&saved);
    if (migrating)
        ignore_value(kvmsaveMonitorMigrateCancel(dom));
    if (fdPassed)
        ignore_value(kvmsaveMonitorCloseFd(dom, fdname));
    if (wake[1] >= 0 && nstreams > 0)
        ignore_value(safewrite(wake[1], "x", 1));
    for (i = 0; i < nstreams; i++) {
        if (threads[i])
            g_thread_join(threads[i]);
        if (streams[i].err && (!first || streams[i].order < first->order))
            first = &streams[i];
    }
    /* A failure of ours (disk full...) explains more than QEMU's EPIPE;
     * the stream that failed first has the cause. */
    if (ret < 0 && first && !kvmsaveJobIsCancelled(job)) {
        virFreeError(saved);
        saved = g_steal_pointer(&first->err);
    }
    for (i = 0; i < nstreams; i++) {
        VIR_FORCE_CLOSE(streams[i].fd);
        virFreeError(streams[i].err);
    }
    if (ret < 0 && paused)
        ignore_value(virDomainResume(dom));
    if (tmppath)
        unlink(tmppath);
    VIR_FORCE_CLOSE(chan[0]);
    VIR_FORCE_CLOSE(chan[1]);
    VIR_FORCE_CLOSE(wake[0]);
    VIR_FORCE_CLOSE(wake[1]);
    if (saved)
        virErrorRestore(&saved);
    kvmsaveJournalEnd(journal);
    kvmsaveJobEnd(job, ret == 0);
    return ret;
}


/* A kvmsave image again, in @fd: @reader's header with @xml and @running,
 * every chunk copied after being checked, in the encoding it had. */
static int
kvmsaveSaveImageCopy(kvmsaveImageReader *reader, int fd, const char *tmppath,
                     const char *xml, bool running)
{
    g_autoptr(kvmsaveImageHeader) hdr = kvmsaveImageHeaderNew();
    g_autoptr(kvmsaveImageWriter) writer = NULL;
    const kvmsaveImageHeader *old = kvmsaveImageReaderHeader(reader);
    const unsigned char *data;
    size_t len;
    int rc;

    memcpy(hdr->uuid, old->uuid, VIR_UUID_BUFLEN);
    hdr->created = old->created;
    hdr->chunkSize = old->chunkSize;
    hdr->streams = old->streams;
    hdr->flags = old->flags & ~KVMSAVE_IMAGE_FLAG_RUNNING;
    if (running)
        hdr->flags |= KVMSAVE_IMAGE_FLAG_RUNNING;
    hdr->xml = g_strdup(xml);
    hdr->name = g_strdup(old->name);
    hdr->qemuVersion = g_strdup(old->qemuVersion);
    hdr->machine = g_strdup(old->machine);
    hdr->hostCPU = g_strdup(old->hostCPU);
    hdr->disks = g_strdup(old->disks);
    hdr->producer = g_strdup(old->producer);

    writer = kvmsaveImageWriterNew(fd, tmppath, false);
    if (kvmsaveImageWriteHeader(writer, hdr) < 0)
        return -1;
    while ((rc = kvmsaveImageReadChunk(reader, &data, &len)) > 0) {
        /* Each chunk keeps the encoding it had. */
        kvmsaveImageWriterSetFormat(writer, kvmsaveImageReaderLastEncoding(reader));
        if (kvmsaveImageWriteChunk(writer, kvmsaveImageReaderLastStream(reader),
                                   data, len) < 0)
            return -1;
    }
    if (rc < 0 || kvmsaveImageWriterFinish(writer) < 0)
        return -1;
    return 0;
}


int
kvmsaveSaveImageDefine(const char *path, const char *dxml, unsigned int flags)
{
    g_autoptr(kvmsaveImageReader) reader = NULL;
    g_autofree char *tmppath = NULL;
    g_autofree char *xml = NULL;
    const kvmsaveImageHeader *old;
    kvmsaveStockImage *stock;
    VIR_AUTOCLOSE fd = -1;
    kvmsaveJob *job;
    bool running;
    int ret = -1;

    if (!(reader = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_CACHED)))
        return -1;
    old = kvmsaveImageReaderHeader(reader);
    if (!(job = kvmsaveJobBegin(old->uuid, KVMSAVE_JOB_IMAGE_DEFINE)))
        return -1;

    if (dxml && kvmsaveXMLCheckABI(old->xml, dxml) < 0)
        goto cleanup;
    if (flags & VIR_DOMAIN_SAVE_RUNNING)
        running = true;
    else if (flags & VIR_DOMAIN_SAVE_PAUSED)
        running = false;
    else
        running = old->flags & KVMSAVE_IMAGE_FLAG_RUNNING;
    if (!(xml = kvmsaveXMLForImage(dxml ? dxml : old->xml)))
        goto cleanup;

    /* A new file, renamed over the old one when complete: the old image
     * stays intact until then. A stock image stays one (where stock
     * libvirt rewrites it in place). */
    if ((fd = kvmsaveCreateTemp(path, false, &tmppath)) < 0)
        goto cleanup;
    if ((stock = kvmsaveImageReaderStock(reader)) ?
        kvmsaveStockImageWrite(stock, fd, tmppath, xml, running) < 0 :
        kvmsaveSaveImageCopy(reader, fd, tmppath, xml, running) < 0)
        goto cleanup;
    if (VIR_CLOSE(fd) < 0) {
        virReportSystemError(errno, _("cannot close save image '%s'"), tmppath);
        goto cleanup;
    }
    if (kvmsaveCommitTemp(tmppath, path) < 0)
        goto cleanup;
    g_clear_pointer(&tmppath, g_free);
    ret = 0;

 cleanup:
    if (tmppath)
        unlink(tmppath);
    kvmsaveJobEnd(job, ret == 0);
    return ret;
}
