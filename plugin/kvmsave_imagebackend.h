/*
 * kvmsave_imagebackend.h: the image formats the image reader opens
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The reader (kvmsave_imagereader.c) opens a file, reads its first block
 * and gives it to the first backend whose probe accepts it. The backend
 * parses its header into a kvmsaveImageHeader and hands out QEMU's stream
 * in blocks, so the restore engine and kvmsave-image treat every format
 * alike. kvmsave's own format is the last backend and takes any file the
 * others did not, so a file of no known format gets its "bad magic" error.
 */
#pragma once

#include "kvmsave_image.h"

/* The file being read, as the reader opened it. */
typedef struct _kvmsaveImageFile kvmsaveImageFile;
struct _kvmsaveImageFile {
    int fd;
    char *path;
    bool direct;                /* O_DIRECT is on */
    bool directOptional;        /* ...and may be turned off if refused */
    uint64_t size;
    int64_t mtime;              /* seconds since the epoch */
    size_t threads;             /* workers a backend may verify with */
};

/* Read [@off, @off + @len) of @f into @buf, in whole blocks as O_DIRECT
 * needs; at least @need bytes must be there, else the image is reported
 * truncated at @what, offset @pos. Returns the bytes read, or -1. */
ssize_t kvmsaveImageFileRead(kvmsaveImageFile *f, unsigned char *buf,
                             size_t len, size_t need, uint64_t off,
                             const char *what, uint64_t pos);

/* Read [@pos, @pos + @need) of @f, a header, trailer or table, into a
 * new aligned buffer; *@start is the file offset of its first byte. */
unsigned char *kvmsaveImageFileReadPart(kvmsaveImageFile *f, uint64_t pos,
                                        size_t need, const char *what,
                                        uint64_t *start);

/* The page index of the image @f with header @hdr, its checksum checked:
 * 1 with its bytes *@buf (g_free them) of *@len, 0 when it has none, -1
 * with an error. */
int kvmsaveImageFilePageIndex(kvmsaveImageFile *f, const kvmsaveImageHeader *hdr,
                              unsigned char **buf, size_t *len);

typedef struct _kvmsaveImageBackend kvmsaveImageBackend;
struct _kvmsaveImageBackend {
    /* Whether every byte of the stream is covered by a checksum of the
     * image's own, checked before it is handed out. */
    bool checksummed;
    /* Whether a file that begins with the @len bytes at @buf is of this
     * format; NULL: any file. */
    bool (*probe)(const unsigned char *buf, size_t len);
    /* Open @f, whose first @len bytes are @buf: fill *@hdr and *@tr and
     * return the backend's data, or NULL with an error reported. */
    void *(*open)(kvmsaveImageFile *f, const unsigned char *buf, size_t len,
                  kvmsaveImageHeader **hdr, kvmsaveImageTrailer *tr);
    void (*free)(void *data);
    /* As kvmsaveImageReadChunk. */
    int (*read)(void *data, const unsigned char **buf, size_t *len);
    /* As kvmsaveImageReaderLastProgress. */
    size_t (*lastProgress)(void *data);
    /* The save cookie of a stock libvirt image; NULL: none. */
    const char *(*cookie)(void *data);
    /* As kvmsaveImageReaderRewrite. */
    int (*rewrite)(void *data, int fd, const char *path, const char *xml,
                   bool running);
};

/* Stock libvirt's save images (kvmsave_stock.c). */
extern const kvmsaveImageBackend kvmsaveStockBackend;
