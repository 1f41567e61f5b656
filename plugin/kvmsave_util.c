/*
 * kvmsave_util.c: small helpers shared by the kvmsave modules
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <fcntl.h>
#include <unistd.h>
#include <isa-l/crc.h>

#include "kvmsave_util.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.util");

unsigned char *
kvmsaveAlignedAlloc(size_t size)
{
    void *p = NULL;

    if (posix_memalign(&p, 4096, size) != 0)
        abort(); /* as g_malloc does on OOM */
    return p;
}


uint32_t
kvmsaveCrc32c(uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = buf;

    /* ISA-L takes an int length and works on the raw (uninverted) state. */
    crc = ~crc;
    while (len > 0) {
        int n = len > (1U << 30) ? (1 << 30) : (int) len;
        crc = crc32_iscsi((unsigned char *) p, n, crc);
        p += n;
        len -= n;
    }
    return ~crc;
}


ssize_t
kvmsaveReadAt(int fd, void *buf, size_t len, uint64_t off, bool direct)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = pread(fd, (char *) buf + done, len - done, off + done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        done += n;
        if (direct && done < len)
            break;
    }
    return done;
}


void
kvmsaveReportWriteError(int errnum, const char *path)
{
    if (errnum == ENOSPC || errnum == EDQUOT)
        virReportSystemError(errnum,
                             _("the disk is full: save image '%s' does not fit; free some space or save elsewhere"),
                             path);
    else
        virReportSystemError(errnum, _("cannot write save image '%s'"), path);
}


char *
kvmsaveAbsPath(const char *path)
{
    if (!path || !*path) {
        virReportError(VIR_ERR_INVALID_ARG, "%s", _("file name must not be empty"));
        return NULL;
    }
    return g_canonicalize_filename(path, NULL);
}


int
kvmsaveSyncParentDir(const char *path)
{
    g_autofree char *dir = g_path_get_dirname(path);
    VIR_AUTOCLOSE fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0 || fsync(fd) < 0) {
        virReportSystemError(errno, _("cannot sync directory '%s'"), dir);
        return -1;
    }
    return 0;
}


int
kvmsaveReplaceFile(const char *path, const char *text, size_t len)
{
    g_autofree char *tmp = g_strdup_printf("%s.XXXXXX", path);
    int fd;
    int err;

    if ((fd = g_mkstemp_full(tmp, O_WRONLY | O_CLOEXEC, 0600)) < 0)
        return -1;
    if (safewrite(fd, text, len) == (ssize_t) len && VIR_CLOSE(fd) == 0 &&
        rename(tmp, path) == 0)
        return 0;
    err = errno;
    VIR_FORCE_CLOSE(fd);
    unlink(tmp);
    errno = err;
    return -1;
}


void
kvmsaveUnlinkIfExists(const char *path)
{
    if (unlink(path) < 0 && errno != ENOENT)
        VIR_WARN("cannot remove %s: %s", path, g_strerror(errno));
}


/* Tests slow the data path down, so that a cancel or a kill lands in the
 * middle of a stream however fast the machine is. Not for production: it
 * only ever makes saves and restores slower. */
void
kvmsaveTestChunkDelay(void)
{
    static gsize once;
    static unsigned int delayMs;

    if (g_once_init_enter(&once)) {
        const char *v = g_getenv("KVMSAVE_TEST_CHUNK_DELAY_MS");

        if (v)
            delayMs = MIN(g_ascii_strtoull(v, NULL, 10), 10000);
        g_once_init_leave(&once, 1);
    }
    if (delayMs)
        g_usleep(delayMs * 1000);
}
