/*
 * kvmsave_util.h: small helpers shared by the kvmsave modules
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "internal.h"

/* Standard CRC-32C (Castagnoli), as in iSCSI and ext4: start with crc = 0,
 * feed data in any number of pieces. */
uint32_t kvmsaveCrc32c(uint32_t crc, const void *buf, size_t len);

/* @size bytes aligned for O_DIRECT (4096); aborts on OOM as g_malloc
 * does. Free with free(), or g_free() (GLib allocates with malloc). */
unsigned char *kvmsaveAlignedAlloc(size_t size);

/* Read [off, off + len) of @fd, retrying after signals and short reads
 * (but not with @direct: under O_DIRECT a short read is the end of the
 * file, and reading on from there would not be aligned): the bytes read,
 * fewer only at the end of the file, or -1 with errno. */
ssize_t kvmsaveReadAt(int fd, void *buf, size_t len, uint64_t off,
                      bool direct);

/* A failed write of save image @path: a full disk says so. */
void kvmsaveReportWriteError(int errnum, const char *path);

/* Absolute, canonical form of a user-supplied path. */
char *kvmsaveAbsPath(const char *path);

/* fsync the directory holding @path, so a rename in it is durable. */
int kvmsaveSyncParentDir(const char *path);

/* Replace @path with the @len bytes of @text so that a reader never sees
 * it torn: a temporary file beside it, renamed over it. Not synced, for
 * status files that matter only while their writer runs. Returns 0, or
 * -1 with errno set and the temporary file gone. */
int kvmsaveReplaceFile(const char *path, const char *text, size_t len);

/* Remove @path if it is there; a failure is only worth a warning. */
void kvmsaveUnlinkIfExists(const char *path);

/* Sleep KVMSAVE_TEST_CHUNK_DELAY_MS (environment, read once; tests only)
 * per chunk of a save or restore stream. */
void kvmsaveTestChunkDelay(void);
