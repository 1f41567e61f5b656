/*
 * kvmsave_mapped.c: the stream of kvmsave's sparse images and the table
 * of block checksums that covers it
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <fcntl.h>
#include <unistd.h>

#include "kvmsave_mapped.h"
#include "kvmsave_util.h"
#include "virendian.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.mapped");


uint64_t
kvmsaveMappedBlocks(uint64_t bytes, uint32_t block)
{
    return bytes / block + (bytes % block != 0);
}


uint32_t
kvmsaveMappedZeroCrc(uint32_t block)
{
    g_autofree unsigned char *zeros = g_malloc0(block);

    return kvmsaveCrc32c(0, zeros, block);
}


uint64_t
kvmsaveMappedTableOffset(const kvmsaveImageHeader *hdr, uint64_t streamBytes)
{
    return VIR_ROUND_UP(hdr->mappedOffset + streamBytes, KVMSAVE_IMAGE_ALIGN);
}


uint64_t
kvmsaveMappedDataEnd(const kvmsaveImageHeader *hdr, uint64_t streamBytes)
{
    return kvmsaveMappedTableOffset(hdr, streamBytes) +
        4 * kvmsaveMappedBlocks(streamBytes, hdr->mappedBlock);
}


unsigned char *
kvmsaveMappedTableEncode(const uint32_t *table, uint64_t blocks, size_t *len)
{
    unsigned char *buf = g_new(unsigned char, 4 * blocks);
    uint64_t i;

    for (i = 0; i < blocks; i++) {
        uint32_t le = GUINT32_TO_LE(table[i]);

        memcpy(buf + 4 * i, &le, 4);
    }
    *len = 4 * blocks;
    return buf;
}


int
kvmsaveMappedReadTable(kvmsaveImageFile *f, const kvmsaveImageHeader *hdr,
                       const kvmsaveImageTrailer *tr, uint32_t **table)
{
    uint64_t blocks = kvmsaveMappedBlocks(tr->streamBytes, hdr->mappedBlock);
    uint64_t off = kvmsaveMappedTableOffset(hdr, tr->streamBytes);
    g_autofree unsigned char *buf = NULL;
    uint64_t start;
    uint32_t crc;
    uint64_t i;

    /* The trailer's data end fits the file (checked before), so the
     * table's size is bounded by the file's. */
    if (tr->chunks != blocks || tr->streamBytes > tr->dataEnd ||
        tr->dataEnd != kvmsaveMappedDataEnd(hdr, tr->streamBytes)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: its trailer records %llu blocks and a data end of %llu, which do not fit a sparse stream of %llu bytes"),
                       f->path, (unsigned long long) tr->chunks,
                       (unsigned long long) tr->dataEnd,
                       (unsigned long long) tr->streamBytes);
        return -1;
    }
    if (!(buf = kvmsaveImageFileReadPart(f, off, 4 * blocks,
                                         _("checksum table"), &start)))
        return -1;
    crc = kvmsaveCrc32c(0, buf + (off - start), 4 * blocks);
    if (kvmsaveImageChecksumBad(tr->tableCrc, crc)) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is corrupt: checksum table mismatch (stored %08x, computed %08x)"),
                       f->path, tr->tableCrc, crc);
        return -1;
    }
    *table = g_new(uint32_t, MAX(blocks, 1));
    for (i = 0; i < blocks; i++)
        (*table)[i] = virReadBufInt32LE(buf + (off - start) + 4 * i);
    return 0;
}


struct _kvmsaveMappedSum {
    int fd;
    char *path;
    bool direct;
    uint64_t start;             /* file offset of block 0 */
    uint64_t end;               /* ...and the stream's end */
    uint32_t block;
    uint64_t blocks;
    uint32_t zeroCrc;           /* of a whole block of zeros */
    const uint32_t *expect;     /* NULL: compute into table */
    bool readHoles;             /* read holes too, for a copy */
    uint32_t *table;

    GMutex lock;
    uint64_t next;              /* the next block to take */
    uint64_t done;              /* bytes checksummed */
    bool stop;
    size_t exited;              /* threads that ended */
    GCond ended;                /* ...signalled as each does */
    virErrorPtr err;            /* the first failure */
    GThread **threads;
    size_t nthreads;
};


/* Whether [@off, @off + @len) of @fd is a hole: it reads as zeros. */
static bool
kvmsaveMappedIsHole(int fd, uint64_t off, size_t len)
{
    off_t data = lseek(fd, off, SEEK_DATA);

    /* ENXIO: no data from @off to the end of the file. Any other error:
     * read it to be sure. */
    if (data < 0)
        return errno == ENXIO;
    return (uint64_t) data >= off + len;
}


/* The checksum of block @i; a hole's is that of zeros, without reading. */
static int
kvmsaveMappedSumBlock(kvmsaveMappedSum *m, unsigned char *buf, uint64_t i,
                      uint32_t *crc)
{
    uint64_t off = m->start + i * m->block;
    size_t len = MIN(m->block, m->end - off);
    size_t rlen = m->direct ? VIR_ROUND_UP(len, KVMSAVE_IMAGE_ALIGN) : len;
    ssize_t n;

    if (len == m->block && !m->readHoles && kvmsaveMappedIsHole(m->fd, off, len)) {
        *crc = m->zeroCrc;
        return 0;
    }
    if ((n = kvmsaveReadAt(m->fd, buf, rlen, off, m->direct)) < 0) {
        virReportSystemError(errno, _("cannot read save image '%s'"), m->path);
        return -1;
    }
    if ((size_t) n < len) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' is truncated: block %llu at offset %llu runs past the end of the file"),
                       m->path, (unsigned long long) i, (unsigned long long) off);
        return -1;
    }
    *crc = kvmsaveCrc32c(0, buf, len);
    return 0;
}


/* Take the next block, or none when all are taken or the pass stops. */
static bool
kvmsaveMappedSumTake(kvmsaveMappedSum *m, uint64_t *i)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&m->lock);

    if (m->stop || m->err || m->next >= m->blocks)
        return false;
    *i = m->next++;
    return true;
}


static int
kvmsaveMappedSumCheck(kvmsaveMappedSum *m, uint64_t i, uint32_t crc)
{
    if (!m->expect) {
        m->table[i] = crc;
        return 0;
    }
    if (!kvmsaveImageChecksumBad(m->expect[i], crc))
        return 0;
    virReportError(VIR_ERR_OPERATION_FAILED,
                   _("save image '%s' is corrupt: block %llu at offset %llu has a data checksum mismatch (stored %08x, computed %08x)"),
                   m->path, (unsigned long long) i,
                   (unsigned long long) (m->start + i * m->block),
                   m->expect[i], crc);
    return -1;
}


static gpointer
kvmsaveMappedSumThread(gpointer opaque)
{
    kvmsaveMappedSum *m = opaque;
    unsigned char *buf = kvmsaveAlignedAlloc(m->block);
    uint64_t i;

    while (kvmsaveMappedSumTake(m, &i)) {
        uint32_t crc;

        if (kvmsaveMappedSumBlock(m, buf, i, &crc) < 0 ||
            kvmsaveMappedSumCheck(m, i, crc) < 0) {
            g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&m->lock);

            if (!m->err)
                m->err = virSaveLastError();
            break;
        } else {
            g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&m->lock);

            m->done += MIN(m->block, m->end - (m->start + i * m->block));
        }
    }
    free(buf);
    g_mutex_lock(&m->lock);
    m->exited++;
    g_cond_signal(&m->ended);
    g_mutex_unlock(&m->lock);
    return NULL;
}


static void
kvmsaveMappedSumFree(kvmsaveMappedSum *m)
{
    virFreeError(m->err);
    g_cond_clear(&m->ended);
    g_mutex_clear(&m->lock);
    g_free(m->threads);
    g_free(m->table);
    g_free(m->path);
    g_free(m);
}


kvmsaveMappedSum *
kvmsaveMappedSumStart(int fd, const char *path, bool direct,
                      const kvmsaveImageHeader *hdr, uint64_t streamBytes,
                      const uint32_t *expect, size_t threads)
{
    kvmsaveMappedSum *m = g_new0(kvmsaveMappedSum, 1);
    size_t i;

    m->fd = fd;
    m->path = g_strdup(path);
    m->direct = direct;
    m->start = hdr->mappedOffset;
    m->end = hdr->mappedOffset + streamBytes;
    m->block = hdr->mappedBlock;
    m->blocks = kvmsaveMappedBlocks(streamBytes, m->block);
    m->zeroCrc = kvmsaveMappedZeroCrc(m->block);
    m->expect = expect;
    if (!expect)
        m->table = g_new0(uint32_t, MAX(m->blocks, 1));
    g_mutex_init(&m->lock);
    g_cond_init(&m->ended);
    m->nthreads = MAX(1, MIN(threads, m->blocks));
    m->threads = g_new0(GThread *, m->nthreads);
    for (i = 0; i < m->nthreads; i++)
        m->threads[i] = g_thread_new("kvmsave-sum", kvmsaveMappedSumThread, m);
    return m;
}


uint64_t
kvmsaveMappedSumDone(kvmsaveMappedSum *m)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&m->lock);

    return m->done;
}


bool
kvmsaveMappedSumFailed(kvmsaveMappedSum *m)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&m->lock);

    return !!m->err;
}


int
kvmsaveMappedSumFinish(kvmsaveMappedSum *m, bool stop, uint32_t **table)
{
    size_t i;
    int ret = 0;

    if (stop) {
        g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&m->lock);

        m->stop = true;
    }
    for (i = 0; i < m->nthreads; i++)
        g_thread_join(m->threads[i]);
    if (m->err) {
        virSetError(m->err);
        ret = -1;
    } else if (m->next < m->blocks) {
        ret = 1;
    } else if (table) {
        *table = g_steal_pointer(&m->table);
    }
    kvmsaveMappedSumFree(m);
    return ret;
}


int
kvmsaveMappedSumWait(kvmsaveMappedSum *m, kvmsaveMappedSumPoll poll,
                     void *opaque, uint32_t **table)
{
    bool stop = false;

    for (;;) {
        uint64_t done;
        bool all;

        g_mutex_lock(&m->lock);
        if (m->exited < m->nthreads)
            g_cond_wait_until(&m->ended, &m->lock,
                              g_get_monotonic_time() + 100 * G_TIME_SPAN_MILLISECOND);
        all = m->exited == m->nthreads;
        done = m->done;
        g_mutex_unlock(&m->lock);
        if (all)
            break;
        if ((stop = poll(done, opaque)))
            break;
    }
    return kvmsaveMappedSumFinish(m, stop, table);
}


/* Block @i, checked against @table; a hole is checked without reading
 * (its checksum @zeroCrc) unless @read (its zeros then in @buf). */
static int
kvmsaveMappedCheckOne(int fd, const char *path, const kvmsaveImageHeader *hdr,
                      uint64_t streamBytes, const uint32_t *table, uint64_t i,
                      bool read, uint32_t zeroCrc, unsigned char *buf, size_t *len)
{
    kvmsaveMappedSum m = {
        .fd = fd, .path = (char *) path, .start = hdr->mappedOffset,
        .end = hdr->mappedOffset + streamBytes, .block = hdr->mappedBlock,
        .expect = table, .readHoles = read, .zeroCrc = zeroCrc,
    };
    uint32_t crc;

    if (i >= kvmsaveMappedBlocks(streamBytes, hdr->mappedBlock)) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("block %llu is past the stream of save image '%s'"),
                       (unsigned long long) i, path);
        return -1;
    }
    if (kvmsaveMappedSumBlock(&m, buf, i, &crc) < 0 ||
        kvmsaveMappedSumCheck(&m, i, crc) < 0)
        return -1;
    if (len)
        *len = MIN(m.block, m.end - (m.start + i * m.block));
    return 0;
}


int
kvmsaveMappedReadBlock(int fd, const char *path, const kvmsaveImageHeader *hdr,
                       uint64_t streamBytes, const uint32_t *table,
                       uint64_t i, unsigned char *buf, size_t *len)
{
    return kvmsaveMappedCheckOne(fd, path, hdr, streamBytes, table, i, true,
                                 0, buf, len);
}


int
kvmsaveMappedCheckBlock(int fd, const char *path, const kvmsaveImageHeader *hdr,
                        uint64_t streamBytes, const uint32_t *table,
                        uint64_t i, uint32_t zeroCrc, unsigned char *buf)
{
    return kvmsaveMappedCheckOne(fd, path, hdr, streamBytes, table, i, false,
                                 zeroCrc, buf, NULL);
}


int
kvmsaveMappedVerify(int fd, const char *path, bool direct,
                    const kvmsaveImageHeader *hdr, uint64_t streamBytes,
                    const uint32_t *table, size_t threads)
{
    return kvmsaveMappedSumFinish(kvmsaveMappedSumStart(fd, path, direct, hdr,
                                                        streamBytes, table,
                                                        threads),
                                  false, NULL);
}


static int
kvmsaveMappedWrite(int fd, const char *path, const void *buf, size_t len,
                   uint64_t off)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = pwrite(fd, (const char *) buf + done, len - done, off + done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            kvmsaveReportWriteError(n == 0 ? ENOSPC : errno, path);
            return -1;
        }
        done += n;
    }
    return 0;
}


int
kvmsaveMappedCopy(int from, const char *fromPath, bool fromDirect,
                  int to, const char *toPath,
                  const kvmsaveImageHeader *hdr, uint64_t streamBytes,
                  const uint32_t *table)
{
    kvmsaveMappedSum m = {
        .fd = from, .path = (char *) fromPath, .direct = fromDirect,
        .start = hdr->mappedOffset, .end = hdr->mappedOffset + streamBytes,
        .block = hdr->mappedBlock, .expect = table, .readHoles = true,
    };
    /* Aligned, for O_DIRECT reads (a block is a multiple of the page). */
    g_autofree unsigned char *buf = kvmsaveAlignedAlloc(hdr->mappedBlock);
    uint64_t blocks = kvmsaveMappedBlocks(streamBytes, hdr->mappedBlock);
    uint64_t i;

    m.zeroCrc = kvmsaveMappedZeroCrc(m.block);
    for (i = 0; i < blocks; i++) {
        uint64_t off = m.start + i * m.block;
        size_t len = MIN(m.block, m.end - off);
        uint32_t crc;

        if (len == m.block && kvmsaveMappedIsHole(from, off, len)) {
            if (kvmsaveMappedSumCheck(&m, i, m.zeroCrc) < 0)
                return -1;
            continue;
        }
        if (kvmsaveMappedSumBlock(&m, buf, i, &crc) < 0 ||
            kvmsaveMappedSumCheck(&m, i, crc) < 0 ||
            kvmsaveMappedWrite(to, toPath, buf, len, off) < 0)
            return -1;
    }
    /* A hole at the end still counts: the file reaches the stream's end. */
    if (ftruncate(to, m.end) < 0) {
        virReportSystemError(errno, _("cannot extend save image '%s'"), toPath);
        return -1;
    }
    return 0;
}
