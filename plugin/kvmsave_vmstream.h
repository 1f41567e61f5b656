/*
 * kvmsave_vmstream.h: the layout of a QEMU migration stream in a file
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * A restore that serves the guest's pages itself must know where each
 * page lies and where the devices' state begins and ends, without
 * decoding the devices' state (QEMU's vmstate is not self-describing).
 * This walks the parts of the stream that are: the header, the
 * configuration, RAM's sections and its page records, and finds the end
 * of the device sections from QEMU_VM_EOF and the JSON description QEMU
 * appends after it (migration/savevm.c, migration/ram.c).
 */
#pragma once

#include "internal.h"

/* Bytes of one target page (x86: 4 KiB). */
#define KVMSAVE_VM_PAGE_SIZE 4096

typedef struct _kvmsaveVMBlock kvmsaveVMBlock;
struct _kvmsaveVMBlock {
    char *name;                 /* RAMBlock idstr, e.g. "pc.ram" */
    uint64_t length;            /* used_length, bytes */
    /* A mapped-ram stream: where the block's page bitmap and its pages
     * lie in the file (absolute offsets). */
    uint64_t bitmapOffset;
    uint64_t pagesOffset;
};

typedef struct _kvmsaveVMStream kvmsaveVMStream;
struct _kvmsaveVMStream {
    char *machine;              /* the configuration's machine type */
    char **caps;                /* capabilities it lists, NULL-terminated */
    bool mapped;                /* "mapped-ram": pages at fixed offsets */
    /* The configuration's list of capabilities, [capsStart, capsEnd) of
     * the file (0, 0: none), which a stream of another layout drops. */
    uint64_t capsStart;
    uint64_t capsEnd;
    bool footers;               /* sections end with a footer */
    uint64_t configEnd;         /* file offset past header and configuration */
    uint32_t ramSection;        /* the section id of "ram" */
    uint32_t ramInstance;
    uint32_t ramVersion;
    kvmsaveVMBlock *blocks;
    size_t nblocks;
    uint64_t pages;             /* page records seen (plain streams) */
    /* RAM's END section came before the first device section, so no page
     * follows devStart. */
    bool ramEnded;
    /* The device sections, [devStart, devEnd) of the file, and whether
     * QEMU's description follows QEMU_VM_EOF. */
    uint64_t devStart;
    uint64_t devEnd;
    bool vmdesc;
};

void kvmsaveVMStreamFree(kvmsaveVMStream *vm);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveVMStream, kvmsaveVMStreamFree);

/* One page record of a plain stream, as the walk meets it; offsets are
 * the stream's. */
typedef struct _kvmsaveVMRecord kvmsaveVMRecord;
struct _kvmsaveVMRecord {
    size_t block;               /* index into vm->blocks */
    uint64_t page;              /* page number within the block */
    uint64_t record;            /* offset of the record's be64 */
    uint64_t payload;           /* offset of the page's data or fill byte */
    bool data;                  /* 4096 bytes follow, not one fill byte */
    bool named;                 /* it names its block (no RAM_CONTINUE) */
};

/* Hears each page record. Returns -1 (with an error reported) to stop
 * the walk. */
typedef int (*kvmsaveVMRecordFn)(const kvmsaveVMStream *vm,
                                 const kvmsaveVMRecord *rec, void *opaque);

/* Where the stream's bytes come from. @view points *@p at the bytes from
 * @pos on and sets *@len to how many are there (at least one; @want is a
 * hint of how many the walk needs, never past its end). A view stays
 * valid until the next call. Returns -1 with an error reported. The walk
 * reads forward, except that kvmsaveVMStreamFindEnd reads the tail. */
typedef struct _kvmsaveVMSource kvmsaveVMSource;
struct _kvmsaveVMSource {
    int (*view)(void *opaque, uint64_t pos, size_t want,
                const unsigned char **p, size_t *len);
    void *opaque;
};

typedef enum {
    /* Stop after RAM's setup: the configuration and blocks are known,
     * devStart and devEnd are 0. */
    KVMSAVE_VM_PARSE_SETUP_ONLY = 1 << 0,
    /* Stop at the first device section: devEnd stays 0. */
    KVMSAVE_VM_PARSE_NO_END = 1 << 1,
} kvmsaveVMParseFlags;

/* Walk the stream in [@start, @end) of @src (@path names it in errors):
 * @recordFn, if set, hears every page record of a plain stream. */
kvmsaveVMStream *kvmsaveVMStreamParseFrom(const kvmsaveVMSource *src,
                                          const char *path,
                                          uint64_t start, uint64_t end,
                                          unsigned int flags,
                                          kvmsaveVMRecordFn recordFn,
                                          void *opaque);

/* The same, of the file @fd, read with pread. */
kvmsaveVMStream *kvmsaveVMStreamParse(int fd, const char *path,
                                      uint64_t start, uint64_t end,
                                      kvmsaveVMRecordFn recordFn, void *opaque);

/* Set vm->devEnd and vm->vmdesc from the tail of the stream, which ends
 * at @end of @src; vm->devStart must be known. */
int kvmsaveVMStreamFindEnd(const kvmsaveVMSource *src, const char *path,
                           uint64_t end, kvmsaveVMStream *vm);

/* The block of @vm named @name, or -1. */
ssize_t kvmsaveVMStreamFindBlock(const kvmsaveVMStream *vm, const char *name);
