/*
 * kvmsave_stock.h: save images of stock libvirt's QEMU driver, as kvmsave
 * reads them (docs/image-format.md, "Stock libvirt images")
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * libvirt's own save writes a 92-byte header ("LibvirtQemudSave", host
 * byte order), an area with the domain XML and the save cookie, then
 * QEMU's migration stream, raw, through an external compressor
 * (qemu.conf's save_image_format), or (libvirt 11.2 and later, "sparse")
 * in QEMU's mapped-ram layout, which QEMU reads from the file itself. This module is the image reader's
 * backend for them (kvmsaveStockBackend, kvmsave_imagebackend.h): the
 * reader hands out their decoded stream in blocks, as it does a kvmsave
 * image's chunks, so the restore engine restores both alike.
 */
#pragma once

#include "kvmsave_imagebackend.h"

#define KVMSAVE_STOCK_MAGIC "LibvirtQemudSave"
/* What stock libvirt writes until the save is complete. */
#define KVMSAVE_STOCK_PARTIAL "LibvirtQemudPart"
#define KVMSAVE_STOCK_MAGIC_LEN 16
#define KVMSAVE_STOCK_HEADER_LEN 92
#define KVMSAVE_STOCK_VERSION 2

typedef struct _kvmsaveStockImage kvmsaveStockImage;

/* What the header says, and how far the stream was read. */
typedef struct _kvmsaveStockInfo kvmsaveStockInfo;
struct _kvmsaveStockInfo {
    uint32_t version;
    bool swapped;               /* written on a host of the other byte order */
    int compressed;             /* KVMSAVE_COMPRESS_* */
    uint32_t dataLen;           /* the area of the XML, the cookie, padding */
    char *cookie;               /* the save cookie, or NULL */
    uint64_t streamOffset;      /* where QEMU's stream, as stored, begins */
    uint64_t streamSize;        /* ...and its size in the file */
    uint64_t decoded;           /* bytes of QEMU's stream handed out so far */
};

/* Whether the file that begins with the @len bytes at @buf carries stock
 * libvirt's magic, complete or partial. */
bool kvmsaveStockImageProbe(const unsigned char *buf, size_t len);

/* Parse and check the header and XML area from the first @len bytes of a
 * file (@what names it in errors). Returns 1 and sets *@needed when the
 * area goes past @len, 0 with *@ret, -1 with an error reported. */
int kvmsaveStockHeaderDecode(const unsigned char *buf, size_t len,
                             const char *what, size_t *needed,
                             kvmsaveStockImage **ret);

/* Open the stock image @path of @fileSize bytes on @fd (kept open by the
 * caller; read in aligned blocks, as O_DIRECT needs when @direct), whose
 * first @len bytes are @buf. Fills *@hdr (the domain's UUID and name from
 * its XML, RUNNING from was_running, one stream) and *@tr (the stream's
 * stored size as streamBytes). */
kvmsaveStockImage *kvmsaveStockImageOpen(int fd, bool direct, const char *path,
                                         uint64_t fileSize,
                                         const unsigned char *buf, size_t len,
                                         kvmsaveImageHeader **hdr,
                                         kvmsaveImageTrailer *tr);
void kvmsaveStockImageFree(kvmsaveStockImage *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveStockImage, kvmsaveStockImageFree);

const kvmsaveStockInfo *kvmsaveStockImageInfo(kvmsaveStockImage *s);

/* The next block of QEMU's stream, decoded: 1 with data (valid until the
 * next call), 0 at its end (nothing follows it in the file), -1 with an
 * error (the same on every later call). */
int kvmsaveStockImageRead(kvmsaveStockImage *s,
                          const unsigned char **data, size_t *len);
/* A new descriptor of @s's file, read-only, without O_DIRECT (for QEMU,
 * which reads a sparse image itself), or -1 with an error reported. */
int kvmsaveStockImageReopen(kvmsaveStockImage *s);

/* Bytes of the file the last read went through (the stored stream). */
size_t kvmsaveStockImageLastProgress(kvmsaveStockImage *s);

/* Stock libvirt's header (magic @magic, KVMSAVE_STOCK_MAGIC or _PARTIAL)
 * and its area with @xml and @cookie (or none), of at least @minData
 * bytes: *@len bytes, or NULL with an error when too large. */
unsigned char *kvmsaveStockHeaderFormat(const char *magic, const char *xml,
                                        const char *cookie, bool running,
                                        int compressed, size_t minData,
                                        size_t *len);

/* Write @s again to @fd (a new file, @path in errors) with @xml as its
 * domain XML and @running as was_running: same format, compression and
 * cookie, QEMU's stream copied as stored; flushed to disk. */
int kvmsaveStockImageWrite(kvmsaveStockImage *s, int fd, const char *path,
                           const char *xml, bool running);
