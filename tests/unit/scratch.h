/*
 * scratch.h: a scratch directory and file helpers for the unit tests
 * that work on files (imagetest.c, stocktest.c, uritest.c)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static char *scratchDir;

/* ---- scratch directory (unchecked fixture: runs in the parent, so it
 * is removed even when a test fails) ---- */

static inline void
scratchSetup(void)
{
    g_autoptr(GError) gerr = NULL;

    scratchDir = g_dir_make_tmp("kvmsave-unittest-XXXXXX", &gerr);
    if (!scratchDir) {
        fprintf(stderr, "cannot create scratch dir: %s\n", gerr->message);
        abort();
    }
}

static inline void
scratchTeardown(void)
{
    GDir *dir = g_dir_open(scratchDir, 0, NULL);
    const char *name;

    while (dir && (name = g_dir_read_name(dir))) {
        g_autofree char *p = g_build_filename(scratchDir, name, NULL);
        if (unlink(p) < 0)
            rmdir(p);
    }
    if (dir)
        g_dir_close(dir);
    rmdir(scratchDir);
    g_clear_pointer(&scratchDir, g_free);
}

static inline char *
scratchPath(const char *name)
{
    return g_build_filename(scratchDir, name, NULL);
}


/* ---- file helpers ---- */

static inline void
fileWrite(const char *path, const void *buf, size_t len)
{
    g_autoptr(GError) gerr = NULL;

    ck_assert_msg(g_file_set_contents(path, buf, len, &gerr),
                  "cannot write %s: %s", path, gerr ? gerr->message : "");
}

static inline unsigned char *
fileRead(const char *path, size_t *len)
{
    g_autoptr(GError) gerr = NULL;
    char *buf = NULL;
    gsize n = 0;

    ck_assert_msg(g_file_get_contents(path, &buf, &n, &gerr),
                  "cannot read %s: %s", path, gerr ? gerr->message : "");
    *len = n;
    return (unsigned char *) buf;
}

static inline uint64_t
fileSize(const char *path)
{
    struct stat sb;

    ck_assert_int_eq(stat(path, &sb), 0);
    return sb.st_size;
}

static inline void
fileTruncate(const char *path, off_t len)
{
    ck_assert_int_eq(truncate(path, len), 0);
}

static inline void
filePatch(const char *path, uint64_t off, const void *buf, size_t len)
{
    int fd = open(path, O_RDWR);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, buf, len, off), (ssize_t) len);
    close(fd);
}

static inline void
filePeek(const char *path, uint64_t off, void *buf, size_t len)
{
    int fd = open(path, O_RDONLY);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pread(fd, buf, len, off), (ssize_t) len);
    close(fd);
}

/* Flip the bits @mask of the byte at @off. */
static inline void
fileFlip(const char *path, uint64_t off, unsigned char mask)
{
    unsigned char b;

    filePeek(path, off, &b, 1);
    b ^= mask;
    filePatch(path, off, &b, 1);
}


#ifdef KT_DATADIR
# include <gio/gio.h>

/* Unpack tests/unit/data/@name.gz into the scratch directory, keeping
 * runs of zeros as holes. */
static inline char *
scratchUnpackData(const char *name)
{
    g_autofree char *gz = g_strdup_printf("%s/%s.gz", KT_DATADIR, name);
    g_autoptr(GFile) in = g_file_new_for_path(gz);
    g_autoptr(GError) gerr = NULL;
    g_autoptr(GFileInputStream) raw = g_file_read(in, NULL, &gerr);
    g_autoptr(GZlibDecompressor) dec = NULL;
    g_autoptr(GInputStream) st = NULL;
    char *path = scratchPath(name);
    int fd;
    char buf[16384];
    gssize n;
    off_t pos = 0;

    ck_assert_msg(raw, "cannot read %s: %s", gz, gerr ? gerr->message : "");
    dec = g_zlib_decompressor_new(G_ZLIB_COMPRESSOR_FORMAT_GZIP);
    st = g_converter_input_stream_new(G_INPUT_STREAM(raw), G_CONVERTER(dec));
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    while ((n = g_input_stream_read(st, buf, sizeof(buf), NULL, &gerr)) > 0) {
        static const char zero[16384];

        /* Keep the holes of a mapped-ram stream. */
        if (memcmp(buf, zero, n) != 0)
            ck_assert_int_eq(pwrite(fd, buf, n, pos), n);
        pos += n;
    }
    ck_assert_msg(n == 0, "cannot unpack %s: %s", gz, gerr ? gerr->message : "");
    ck_assert_int_eq(ftruncate(fd, pos), 0);
    close(fd);
    return path;
}
#endif
