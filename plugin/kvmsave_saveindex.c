/*
 * kvmsave_saveindex.c: the save's stream, read into chunks and indexed
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * A lazy restore of a chunked image must find each page without reading
 * the image first. The index of where the pages lie is built here, as
 * the stream passes from QEMU's socket into the image's chunks: the walk
 * of kvmsave_vmstream.c reads the chunk being filled, so nothing is
 * copied or read twice. It stops at the device sections, and the rest
 * of the stream is copied as before.
 */
#include <config.h>

#include <poll.h>
#include <unistd.h>

#include "kvmsave_saveindex.h"
#include "virerror.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.saveindex");


int
kvmsaveSaveStreamRead(int fd, int wakefd, unsigned char *buf, size_t size,
                      size_t *fill, bool *eof)
{
    *fill = 0;
    while (*fill < size) {
        struct pollfd fds[2] = {
            { .fd = fd, .events = POLLIN },
            { .fd = wakefd, .events = POLLIN },
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
        n = read(fd, buf + *fill, size - *fill);
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


/* The walk's byte source: the chunk being filled from QEMU's socket. */
typedef struct _kvmsaveSaveIndexSource kvmsaveSaveIndexSource;
struct _kvmsaveSaveIndexSource {
    kvmsaveImageWriter *writer;
    size_t chunk;               /* stream bytes per chunk */
    int fd;
    int wakefd;
    unsigned char *buf;         /* the chunk being filled; NULL: none */
    uint64_t bufStart;          /* the stream offset of buf[0] */
    size_t fill;
    bool eof;
    int stop;                   /* 1: woken, -1: the copy failed */
};


/* Queue the chunk the walk has left behind, and read the next one. */
static int
kvmsaveSaveIndexNextChunk(kvmsaveSaveIndexSource *s)
{
    int rc;

    if (s->buf) {
        if (kvmsaveImageWriterQueue(s->writer, s->fill) < 0)
            return -1;
        s->bufStart += s->fill;
        s->buf = NULL;
        s->fill = 0;
    }
    if (!(s->buf = kvmsaveImageWriterNextBuffer(s->writer)))
        return -1;
    if ((rc = kvmsaveSaveStreamRead(s->fd, s->wakefd, s->buf, s->chunk,
                                    &s->fill, &s->eof)) != 0)
        return rc;
    return 0;
}


static int
kvmsaveSaveIndexView(void *opaque, uint64_t pos, size_t want G_GNUC_UNUSED,
                     const unsigned char **p, size_t *len)
{
    kvmsaveSaveIndexSource *s = opaque;

    if (pos < s->bufStart) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("the walk of QEMU's stream went back to offset %llu, before the chunk at %llu"),
                       (unsigned long long) pos, (unsigned long long) s->bufStart);
        return -1;
    }
    while (!s->buf || pos >= s->bufStart + s->fill) {
        int rc;

        if (s->eof) {
            virReportError(VIR_ERR_OPERATION_FAILED, "%s",
                           _("QEMU's migration stream ended before its device state"));
            return -1;
        }
        if ((rc = kvmsaveSaveIndexNextChunk(s)) != 0) {
            s->stop = rc;
            return -1;
        }
    }
    *p = s->buf + (pos - s->bufStart);
    *len = s->bufStart + s->fill - pos;
    return 0;
}


int
kvmsaveSaveIndexStream(kvmsaveImageWriter *writer, size_t chunk, int fd,
                       int wakefd, const char *path,
                       kvmsavePageIndexBuilder *builder,
                       kvmsaveVMStream **vm, bool *eof)
{
    kvmsaveSaveIndexSource s = { .writer = writer, .chunk = chunk, .fd = fd,
                                 .wakefd = wakefd };
    kvmsaveVMSource src = { kvmsaveSaveIndexView, &s };

    *vm = kvmsaveVMStreamParseFrom(&src, path, 0, UINT64_MAX,
                                   KVMSAVE_VM_PARSE_NO_END,
                                   kvmsavePageIndexBuilderRecord, builder);
    if (s.stop != 0)
        return s.stop;
    if (!*vm) {
        VIR_WARN("no page index for save image '%s', which can only be restored eagerly: %s",
                 path, virGetLastErrorMessage());
        virResetLastError();
    } else if (!(*vm)->ramEnded) {
        VIR_WARN("no page index for save image '%s', which can only be restored eagerly: RAM's pages do not end before the devices' state",
                 path);
        g_clear_pointer(vm, kvmsaveVMStreamFree);
    }
    /* The chunk the walk stopped in is read: it goes as it is. */
    if (s.buf && s.fill > 0 && kvmsaveImageWriterQueue(writer, s.fill) < 0)
        return -1;
    *eof = s.eof;
    return 0;
}
