/*
 * kvmsave_imagereader.h: reading a save image, kvmsave's or stock
 * libvirt's
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Open a file, read and check its header (and a kvmsave image's trailer),
 * then take QEMU's stream out of it block by block, each checked before
 * it is handed out. The formats are backends (kvmsave_imagebackend.h).
 */
#pragma once

#include "kvmsave_imagebackend.h"

typedef struct _kvmsaveImageReader kvmsaveImageReader;

/* How an image's bytes come off the disk. */
typedef enum {
    KVMSAVE_IMAGE_IO_CACHED,    /* through the page cache */
    KVMSAVE_IMAGE_IO_DIRECT,    /* O_DIRECT or fail (VIR_DOMAIN_SAVE_BYPASS_CACHE) */
    KVMSAVE_IMAGE_IO_STREAM,    /* O_DIRECT where the file system has it, else
                                 * cached: a restore reads every byte once */
} kvmsaveImageIO;

/* Open @path and read and check what its format has ahead of QEMU's
 * stream (for kvmsave's own, the header and the trailer). */
kvmsaveImageReader *kvmsaveImageOpen(const char *path, kvmsaveImageIO io);
void kvmsaveImageReaderFree(kvmsaveImageReader *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveImageReader, kvmsaveImageReaderFree);

/* A reader of the chunks of stream @stream only, of @r's file (opened
 * again) and sharing its header (@r must outlive it). It still walks, and
 * checks the headers of, every chunk, and the totals against the trailer
 * at the end. Only kvmsave's own images have several streams. */
kvmsaveImageReader *kvmsaveImageReaderOpenStream(kvmsaveImageReader *r,
                                                 unsigned int stream);
/* Verifying and decoding workers (default: one per CPU, at most 4). */
void kvmsaveImageReaderSetThreads(kvmsaveImageReader *r, size_t threads);
const kvmsaveImageHeader *kvmsaveImageReaderHeader(kvmsaveImageReader *r);
const kvmsaveImageTrailer *kvmsaveImageReaderTrailer(kvmsaveImageReader *r);
/* The data of @r's backend if it is @backend, else NULL. */
void *kvmsaveImageReaderBackendData(kvmsaveImageReader *r,
                                    const kvmsaveImageBackend *backend);
/* Next block of QEMU's stream, checked; returns 1 with data, 0 at the end
 * (after checking the totals against the trailer), -1 on error. The data
 * stays valid until the next call. For kvmsave's own images, the first
 * call starts a thread that reads ahead and workers that verify and
 * decode chunks in parallel. */
int kvmsaveImageReadChunk(kvmsaveImageReader *r,
                          const unsigned char **data, size_t *len);
/* How far the block read last took the job: its bytes of QEMU's stream,
 * or for a stock image the bytes of the file read for them (the stream's
 * decoded size is known only at its end). */
size_t kvmsaveImageReaderLastProgress(kvmsaveImageReader *r);
/* Bytes of QEMU's stream handed out so far. */
uint64_t kvmsaveImageReaderStreamRead(kvmsaveImageReader *r);
/* Whether the image checks every byte of its stream by checksums of its
 * own (stock libvirt images carry none). */
bool kvmsaveImageReaderChecksummed(kvmsaveImageReader *r);
/* The save cookie stock libvirt keeps in its images, or NULL. */
const char *kvmsaveImageReaderCookie(kvmsaveImageReader *r);
/* Write the image again, in its own format, to @fd (a new file, @path in
 * errors) with @xml as its domain XML and @running as the state to restore
 * to; every chunk is checked on its way. */
int kvmsaveImageReaderRewrite(kvmsaveImageReader *r, int fd, const char *path,
                              const char *xml, bool running);
/* Read every chunk, checking all checksums (the page index's too). */
int kvmsaveImageVerify(kvmsaveImageReader *r);
/* The page index of a kvmsave image (since 1.5), read and checked against
 * its checksum: returns 1 with it in *@buf (g_free it) and *@len, 0 when
 * the image has none, -1 with an error naming the image when it is
 * damaged or cannot be read. */
int kvmsaveImageReaderPageIndex(kvmsaveImageReader *r, unsigned char **buf,
                                size_t *len);
/* The checksum table of a sparse image (kvmsave_mapped.h); NULL for
 * another. */
const uint32_t *kvmsaveImageReaderMappedTable(kvmsaveImageReader *r);
/* A path that opens the very file the reader checked, whatever its own
 * path names now (/proc/self/fd/N). */
char *kvmsaveImageReaderSelfPath(kvmsaveImageReader *r);
