/*
 * eioshim.c: I/O errors on chosen files, for the integration tests
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * This machine has no device-mapper (no dm-error target), so the tests
 * inject I/O errors with this LD_PRELOAD library instead: once
 * KVMSAVE_EIO_AFTER bytes (default 0) have gone through reads or writes of
 * files whose path contains KVMSAVE_EIO_PATTERN, every further pread,
 * pwrite, read, write and fdatasync/fsync of such a file fails with EIO,
 * as a failing disk would. Without KVMSAVE_EIO_PATTERN it does nothing.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static unsigned long long eioDone;

static bool
eioFile(int fd)
{
    const char *pattern = getenv("KVMSAVE_EIO_PATTERN");
    char link[64];
    char path[4096];
    ssize_t n;

    if (!pattern || !*pattern || fd < 0)
        return false;
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    if ((n = readlink(link, path, sizeof(path) - 1)) < 0)
        return false;
    path[n] = '\0';
    return strstr(path, pattern) != NULL;
}


/* True when this transfer of @len bytes on @fd must fail. */
static bool
eioFail(int fd, size_t len)
{
    const char *after = getenv("KVMSAVE_EIO_AFTER");

    if (!eioFile(fd))
        return false;
    if (__atomic_add_fetch(&eioDone, len, __ATOMIC_SEQ_CST) - len <
        strtoull(after ? after : "0", NULL, 10))
        return false;
    errno = EIO;
    return true;
}


#define REAL(name) \
    static __typeof__(name) *real; \
    if (!real) \
        real = (__typeof__(name) *) dlsym(RTLD_NEXT, #name)

ssize_t
pwrite(int fd, const void *buf, size_t len, off_t off)
{
    REAL(pwrite);
    return eioFail(fd, len) ? -1 : real(fd, buf, len, off);
}

ssize_t
pwrite64(int fd, const void *buf, size_t len, off_t off)
{
    REAL(pwrite64);
    return eioFail(fd, len) ? -1 : real(fd, buf, len, off);
}

ssize_t
pread(int fd, void *buf, size_t len, off_t off)
{
    REAL(pread);
    return eioFail(fd, len) ? -1 : real(fd, buf, len, off);
}

ssize_t
pread64(int fd, void *buf, size_t len, off_t off)
{
    REAL(pread64);
    return eioFail(fd, len) ? -1 : real(fd, buf, len, off);
}

ssize_t
write(int fd, const void *buf, size_t len)
{
    REAL(write);
    return eioFail(fd, len) ? -1 : real(fd, buf, len);
}

ssize_t
read(int fd, void *buf, size_t len)
{
    REAL(read);
    return eioFail(fd, len) ? -1 : real(fd, buf, len);
}

int
fdatasync(int fd)
{
    REAL(fdatasync);
    return eioFail(fd, 0) ? -1 : real(fd);
}

int
fsync(int fd)
{
    REAL(fsync);
    return eioFail(fd, 0) ? -1 : real(fd);
}
