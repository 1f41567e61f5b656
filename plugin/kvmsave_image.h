/*
 * kvmsave_image.h: the kvmsave save-image format, encoded and decoded
 * (docs/image-format.md)
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
#define KVMSAVE_IMAGE_MINOR 5

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
/* Largest header (the domain XML, or the room for a page index, is the
 * bulk of it). */
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
    KVMSAVE_IMAGE_FIELD_MAPPED = 9,     /* since 1.4, critical */
    KVMSAVE_IMAGE_FIELD_PAGEINDEX = 10, /* since 1.5 */
} kvmsaveImageFieldTag;
#define KVMSAVE_IMAGE_FIELD_CRITICAL 0x1

/* QEMU's streams in one image: its main migration stream, and one per
 * multifd channel (since 1.2). */
#define KVMSAVE_IMAGE_STREAMS_MAX 256

/* A sparse image (since 1.4): QEMU's mapped-ram stream, as QEMU wrote
 * it, from an offset that leaves the header room to grow, and a table of
 * one checksum per block of it (kvmsave_mapped.h). */
#define KVMSAVE_IMAGE_MAPPED_OFFSET (1024 * 1024)
#define KVMSAVE_IMAGE_MAPPED_OFFSET_MAX (1024 * 1024 * 1024)
#define KVMSAVE_IMAGE_MAPPED_BLOCK (1024 * 1024)
#define KVMSAVE_IMAGE_MAPPED_BLOCK_MIN KVMSAVE_IMAGE_ALIGN
#define KVMSAVE_IMAGE_MAPPED_BLOCK_MAX KVMSAVE_IMAGE_CHUNK_MAX

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
 * "image_format"): how its chunks are encoded, or a sparse image. */
#define KVMSAVE_IMAGE_FORMAT_SPARSE 2
int kvmsaveImageFormatFromString(const char *name);

/* Whether a @stored checksum does not match the @computed one. */
bool kvmsaveImageChecksumBad(uint32_t stored, uint32_t computed);

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
    uint64_t mappedOffset;      /* a sparse image's stream; 0: chunks */
    uint32_t mappedBlock;       /* bytes per checksum of its table */
    uint32_t mappedChannels;    /* the multifd channels that saved it */
    /* The page index (since 1.5): opaque bytes in the header's padding,
     * at indexOffset = alignUp(end of the header checksum), in room for
     * indexReserve bytes (0: no PAGEINDEX field). The encoder writes
     * indexData's indexLen bytes (0: room, but no index); the decoder
     * sets all but indexData, which the reader reads on demand
     * (kvmsaveImageReaderPageIndex). */
    unsigned char *indexData;
    uint64_t indexLen;
    uint64_t indexReserve;
    uint64_t indexOffset;
    uint32_t indexCrc;          /* crc32c of the index */
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
    uint32_t tableCrc;          /* a sparse image's checksum table's */
    int64_t completed;
};

/* Serialize @hdr (padded to KVMSAVE_IMAGE_ALIGN, with the room for its
 * page index); sets hdr->headerSize, hdr->crc, hdr->indexOffset and
 * hdr->indexCrc. The size depends on the fields' lengths and the room, not
 * on the index itself. */
int kvmsaveImageHeaderEncode(kvmsaveImageHeader *hdr,
                             unsigned char **buf, size_t *len);
/* The most room for a page index that @hdr, as it is, leaves in a header
 * (0: none). */
size_t kvmsaveImageHeaderIndexRoom(kvmsaveImageHeader *hdr);
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

/* The header in front of each chunk's stored bytes. */
typedef struct _kvmsaveImageChunkHeader kvmsaveImageChunkHeader;
struct _kvmsaveImageChunkHeader {
    uint16_t encoding;          /* KVMSAVE_IMAGE_ENCODING_* */
    uint16_t stream;            /* 0 for QEMU's main stream, else a channel */
    uint64_t index;             /* the chunk's place in the file, from 0 */
    uint32_t stored;            /* bytes that follow the header */
    uint32_t raw;               /* bytes of QEMU's stream they decode to */
    uint32_t crc;               /* of the stored bytes */
};

/* Serialize @ch with its own checksum. */
void kvmsaveImageChunkHeaderEncode(const kvmsaveImageChunkHeader *ch,
                                   unsigned char buf[KVMSAVE_IMAGE_CHUNK_HEADER_LEN]);
/* Check the magic and checksum of the header of chunk @index at offset
 * @off of image @what, and parse it. Its fields are checked against the
 * image by the reader. */
int kvmsaveImageChunkHeaderDecode(const unsigned char buf[KVMSAVE_IMAGE_CHUNK_HEADER_LEN],
                                  const char *what, uint64_t index, uint64_t off,
                                  kvmsaveImageChunkHeader *ch);
