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
    /* The device sections, [devStart, devEnd) of the file, and whether
     * QEMU's description follows QEMU_VM_EOF. */
    uint64_t devStart;
    uint64_t devEnd;
    bool vmdesc;
};

void kvmsaveVMStreamFree(kvmsaveVMStream *vm);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveVMStream, kvmsaveVMStreamFree);

/* A page record of a plain stream: page @page of block @block, its data
 * at @pos in the file, or a zero page when @pos is 0. Returns -1 (with
 * an error reported) to stop the walk. */
typedef int (*kvmsaveVMPageFn)(size_t block, uint64_t page, uint64_t pos,
                               void *opaque);

/* Walk the stream in [@start, @end) of @fd (@path names it in errors):
 * @pageFn, if set, hears every page record of a plain stream. */
kvmsaveVMStream *kvmsaveVMStreamParse(int fd, const char *path,
                                      uint64_t start, uint64_t end,
                                      kvmsaveVMPageFn pageFn, void *opaque);

/* The block of @vm named @name, or -1. */
ssize_t kvmsaveVMStreamFindBlock(const kvmsaveVMStream *vm, const char *name);
