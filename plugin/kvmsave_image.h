/*
 * kvmsave_image.h: the kvmsave save-image format (docs/image-format.md)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * An image is a header (magic, version, the guest's UUID, its domain XML
 * and provenance), the QEMU migration stream cut into checksummed chunks,
 * zero padding and a fixed-size trailer at the very end that marks the
 * image complete. All integers are little-endian; the header and the file
 * size are multiples of KVMSAVE_IMAGE_ALIGN so O_DIRECT works on both.
 */
#pragma once

#include "internal.h"

#define KVMSAVE_IMAGE_MAGIC "KVMSAVE\n"
#define KVMSAVE_IMAGE_MAGIC_LEN 8
#define KVMSAVE_IMAGE_MAJOR 1
#define KVMSAVE_IMAGE_MINOR 3

#define KVMSAVE_IMAGE_ALIGN 4096
#define KVMSAVE_IMAGE_FIXED_HEADER_LEN 64
#define KVMSAVE_IMAGE_CHUNK_HEADER_LEN 32
#define KVMSAVE_IMAGE_TRAILER_LEN 64
#define KVMSAVE_IMAGE_TRAILER_MAGIC "KVMSEND\n"
#define KVMSAVE_IMAGE_CHUNK_MAGIC "KSCK"

/* Raw bytes of QEMU's stream per chunk, and the largest chunk accepted. */
#define KVMSAVE_IMAGE_CHUNK_SIZE (4 * 1024 * 1024)
/* ...per chunk of an image of several streams, each read on its own. */
#define KVMSAVE_IMAGE_STREAM_CHUNK_SIZE (1024 * 1024)
#define KVMSAVE_IMAGE_CHUNK_MAX (16 * 1024 * 1024)
/* Largest header (the domain XML is the bulk of it). */
#define KVMSAVE_IMAGE_HEADER_MAX (16 * 1024 * 1024)

/* Header flags */
#define KVMSAVE_IMAGE_FLAG_RUNNING (1U << 0)

/* Field tags in the header; a set KVMSAVE_IMAGE_FIELD_CRITICAL bit means a
 * reader that does not know the tag must refuse the image. */
typedef enum {
    KVMSAVE_IMAGE_FIELD_XML = 1,
    KVMSAVE_IMAGE_FIELD_NAME = 2,
    KVMSAVE_IMAGE_FIELD_QEMU_VERSION = 3,
    KVMSAVE_IMAGE_FIELD_MACHINE = 4,
    KVMSAVE_IMAGE_FIELD_HOST_CPU = 5,
    KVMSAVE_IMAGE_FIELD_PRODUCER = 6,
    KVMSAVE_IMAGE_FIELD_STREAMS = 7,    /* since 1.2, critical */
    KVMSAVE_IMAGE_FIELD_DISKS = 8,      /* since 1.3 */
} kvmsaveImageFieldTag;
#define KVMSAVE_IMAGE_FIELD_CRITICAL 0x1

/* QEMU's streams in one image: its main migration stream, and one per
 * multifd channel (since 1.2). */
#define KVMSAVE_IMAGE_STREAMS_MAX 256

/* Chunk encodings */
typedef enum {
    KVMSAVE_IMAGE_ENCODING_RAW = 0,
    KVMSAVE_IMAGE_ENCODING_ZSTD = 1,    /* one zstd frame, since 1.1 */
} kvmsaveImageEncoding;

/* Set by the fuzz target only (tests/fuzz/imagefuzz.c): checksums are
 * still computed, but a mismatch is not an error, so that the fuzzer's
 * mutations reach the parsing behind them. */
extern bool kvmsaveImageIgnoreChecksums;

/* The image formats a save can be asked for (typed parameter
 * "image_format"): how its chunks are encoded. */
int kvmsaveImageFormatFromString(const char *name);
const char *kvmsaveImageFormatToString(int format);

typedef struct _kvmsaveImageHeader kvmsaveImageHeader;
struct _kvmsaveImageHeader {
    uint16_t major;
    uint16_t minor;
    uint32_t headerSize;        /* offset of the first chunk */
    unsigned char uuid[VIR_UUID_BUFLEN];
    int64_t created;            /* seconds since the epoch, UTC */
    uint32_t flags;             /* KVMSAVE_IMAGE_FLAG_* */
    uint32_t chunkSize;         /* nominal raw bytes per chunk */
    uint32_t crc;               /* header checksum, as read or written */
    uint32_t streams;           /* 1, or 1 + QEMU's multifd channels */
    char *xml;                  /* domain XML (secure, migratable) */
    char *name;
    char *qemuVersion;
    char *machine;
    char *hostCPU;
    char *producer;
    char *disks;                /* the disks as saved (kvmsave_preflight.h) */
};

kvmsaveImageHeader *kvmsaveImageHeaderNew(void);
void kvmsaveImageHeaderFree(kvmsaveImageHeader *hdr);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveImageHeader, kvmsaveImageHeaderFree);

typedef struct _kvmsaveImageTrailer kvmsaveImageTrailer;
struct _kvmsaveImageTrailer {
    uint64_t chunks;
    uint64_t streamBytes;       /* raw bytes of QEMU's stream */
    uint64_t dataEnd;           /* offset just past the last chunk */
    uint32_t headerCrc;         /* ties the trailer to its header */
    int64_t completed;
};

/* Serialize @hdr (padded to KVMSAVE_IMAGE_ALIGN); sets hdr->headerSize
 * and hdr->crc. */
int kvmsaveImageHeaderEncode(kvmsaveImageHeader *hdr,
                             unsigned char **buf, size_t *len);
/* Parse a header from @buf of @len bytes. When the header is longer than
 * @len, returns 1 and sets *needed to its full size. @what names the
 * image in error messages. */
int kvmsaveImageHeaderDecode(const unsigned char *buf, size_t len,
                             const char *what, size_t *needed,
                             kvmsaveImageHeader **hdr);

void kvmsaveImageTrailerEncode(const kvmsaveImageTrailer *tr,
                               unsigned char buf[KVMSAVE_IMAGE_TRAILER_LEN]);
int kvmsaveImageTrailerDecode(const unsigned char buf[KVMSAVE_IMAGE_TRAILER_LEN],
                              const char *what, kvmsaveImageTrailer *tr);


/* Writing an image, sequentially, through an aligned buffer. */
typedef struct _kvmsaveImageWriter kvmsaveImageWriter;

kvmsaveImageWriter *kvmsaveImageWriterNew(int fd, const char *path,
                                          bool direct);
void kvmsaveImageWriterFree(kvmsaveImageWriter *w);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveImageWriter, kvmsaveImageWriterFree);

/* Encode the chunks that follow with @format (KVMSAVE_IMAGE_ENCODING_*); a
 * chunk that does not shrink is stored raw. */
void kvmsaveImageWriterSetFormat(kvmsaveImageWriter *w, int format);
/* Encoding workers for the chunks (default: one per CPU, at most 4). */
void kvmsaveImageWriterSetThreads(kvmsaveImageWriter *w, size_t threads);
int kvmsaveImageWriteHeader(kvmsaveImageWriter *w, kvmsaveImageHeader *hdr);
/* The buffer for the next chunk's raw bytes (KVMSAVE_IMAGE_CHUNK_MAX
 * long), waiting while the disk is behind; NULL with an error when writing
 * failed. The same buffer is returned until it is queued. */
unsigned char *kvmsaveImageWriterNextBuffer(kvmsaveImageWriter *w);
/* Queue the first @len bytes of that buffer as the next chunk. Workers
 * encode chunks in parallel and a writer thread puts them on disk in
 * order; a failure there shows in a later call. */
int kvmsaveImageWriterQueue(kvmsaveImageWriter *w, size_t len);
/* NextBuffer, a copy of @data, Queue, as a chunk of stream @stream.
 * Callers in several threads may call this at once (and only this). */
int kvmsaveImageWriteChunk(kvmsaveImageWriter *w, unsigned int stream,
                           const void *data, size_t len);
/* Have Finish write @hdr over the header written first: a header known
 * only once QEMU is done (the disks as it left them). It must encode to
 * the same size; the header is then kept by the caller until Finish. */
int kvmsaveImageWriterReplaceHeader(kvmsaveImageWriter *w,
                                    kvmsaveImageHeader *hdr);
/* Wait for every queued chunk, write padding and trailer, fdatasync. */
int kvmsaveImageWriterFinish(kvmsaveImageWriter *w);
uint64_t kvmsaveImageWriterStreamBytes(kvmsaveImageWriter *w);


/* Reading an image: header, trailer, then chunk by chunk. */
typedef struct _kvmsaveImageReader kvmsaveImageReader;
/* An image of stock libvirt, which the reader also opens (kvmsave_stock.h). */
typedef struct _kvmsaveStockImage kvmsaveStockImage;

/* How an image's bytes come off the disk. */
typedef enum {
    KVMSAVE_IMAGE_IO_CACHED,    /* through the page cache */
    KVMSAVE_IMAGE_IO_DIRECT,    /* O_DIRECT or fail (VIR_DOMAIN_SAVE_BYPASS_CACHE) */
    KVMSAVE_IMAGE_IO_STREAM,    /* O_DIRECT where the file system has it, else
                                 * cached: a restore reads every byte once */
} kvmsaveImageIO;

/* Open @path, read and check header and trailer; or, for an image of
 * stock libvirt, its header and XML area (kvmsave_stock.h): its stream
 * then comes out of kvmsaveImageReadChunk in blocks, decoded. */
kvmsaveImageReader *kvmsaveImageOpen(const char *path, kvmsaveImageIO io);
void kvmsaveImageReaderFree(kvmsaveImageReader *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveImageReader, kvmsaveImageReaderFree);

/* A reader of the chunks of stream @stream only, of @r's file (opened
 * again) and sharing its header (@r must outlive it). It still walks, and
 * checks the headers of, every chunk, and the totals against the trailer
 * at the end. */
kvmsaveImageReader *kvmsaveImageReaderOpenStream(kvmsaveImageReader *r,
                                                 unsigned int stream);
/* Verifying and decoding workers (default: one per CPU, at most 4). */
void kvmsaveImageReaderSetThreads(kvmsaveImageReader *r, size_t threads);
const kvmsaveImageHeader *kvmsaveImageReaderHeader(kvmsaveImageReader *r);
const kvmsaveImageTrailer *kvmsaveImageReaderTrailer(kvmsaveImageReader *r);
/* Next chunk's raw payload, checked; returns 1 with data, 0 at the end
 * (after checking the totals against the trailer), -1 on error. The data
 * stays valid until the next call. The first call starts a thread that
 * reads ahead and workers that verify and decode chunks in parallel. */
int kvmsaveImageReadChunk(kvmsaveImageReader *r,
                          const unsigned char **data, size_t *len);
/* The encoding the chunk read last was stored with, and its stream. */
int kvmsaveImageReaderLastEncoding(kvmsaveImageReader *r);
unsigned int kvmsaveImageReaderLastStream(kvmsaveImageReader *r);
/* How far the chunk read last took the job: its bytes of QEMU's stream,
 * or for a stock image the bytes of the file read for them (the stream's
 * decoded size is known only at its end). */
size_t kvmsaveImageReaderLastProgress(kvmsaveImageReader *r);
/* The stock libvirt image @r reads, or NULL for a kvmsave image. */
kvmsaveStockImage *kvmsaveImageReaderStock(kvmsaveImageReader *r);
/* Read every chunk, checking all checksums. */
int kvmsaveImageVerify(kvmsaveImageReader *r);
