/*
 * kvmsave_postcopy.h: QEMU's postcopy protocol, spoken as the migration
 * source from a saved image
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * A lazy restore hands QEMU the devices' state at once and the guest's
 * pages as it asks for them. Towards QEMU, kvmsave is the source of a
 * postcopy migration (migration/savevm.c, migration/ram.c,
 * migration/migration.c; docs/devel/migration/postcopy.rst):
 *
 *   header and configuration            (mapped-ram's capability dropped)
 *   OPEN_RETURN_PATH, POSTCOPY_ADVISE   (QEMU drops the guest's RAM here)
 *   RAM's setup                         (the blocks, as a plain stream)
 *   POSTCOPY_RAM_DISCARD of one page    (see kvmsavePostcopyStart)
 *   PACKAGED { LISTEN, device sections, RUN }
 *   RAM sections, every page once, asked-for pages first
 *   RAM's END section, QEMU_VM_EOF      -> QEMU answers SHUT(0)
 *
 * QEMU asks for pages on the same socket (the return path). After the
 * source died, QEMU waits in "postcopy-paused"; a new source connects to
 * the address given to migrate-recover, asks QEMU which pages it has
 * (RECV_BITMAP per block), sends POSTCOPY_RESUME and goes on.
 */
#pragma once

#include "kvmsave_vmstream.h"

/* enum qemu_vm_cmd */
typedef enum {
    KVMSAVE_POSTCOPY_CMD_OPEN_RETURN_PATH = 1,
    KVMSAVE_POSTCOPY_CMD_PING = 2,
    KVMSAVE_POSTCOPY_CMD_ADVISE = 3,
    KVMSAVE_POSTCOPY_CMD_LISTEN = 4,
    KVMSAVE_POSTCOPY_CMD_RUN = 5,
    KVMSAVE_POSTCOPY_CMD_RAM_DISCARD = 6,
    KVMSAVE_POSTCOPY_CMD_PACKAGED = 7,
    KVMSAVE_POSTCOPY_CMD_RESUME = 9,
    KVMSAVE_POSTCOPY_CMD_RECV_BITMAP = 10,
} kvmsavePostcopyCmd;

/* enum mig_rp_message_type */
typedef enum {
    KVMSAVE_POSTCOPY_RP_SHUT = 1,
    KVMSAVE_POSTCOPY_RP_PONG = 2,
    KVMSAVE_POSTCOPY_RP_REQ_PAGES_ID = 3,
    KVMSAVE_POSTCOPY_RP_REQ_PAGES = 4,
    KVMSAVE_POSTCOPY_RP_RECV_BITMAP = 5,
    KVMSAVE_POSTCOPY_RP_RESUME_ACK = 6,
    KVMSAVE_POSTCOPY_RP_SWITCHOVER_ACK = 7,
} kvmsavePostcopyRP;

/* A command with @len bytes of @data. */
void kvmsavePostcopyPutCmd(GByteArray *out, kvmsavePostcopyCmd cmd,
                           const void *data, uint16_t len);

/* Everything before the package, for the stream @vm describes, whose
 * header and configuration are @config (@configLen bytes, the file's
 * [start, vm->configEnd)). */
GByteArray *kvmsavePostcopyStart(const kvmsaveVMStream *vm, uint64_t start,
                                 const unsigned char *config, size_t configLen);

/* The package: LISTEN, the device sections @dev, RUN. */
GByteArray *kvmsavePostcopyPackage(const unsigned char *dev, size_t devLen);

/* A RAM section of pages. */
typedef struct _kvmsavePostcopySection kvmsavePostcopySection;
struct _kvmsavePostcopySection {
    const kvmsaveVMStream *vm;
    GByteArray *out;
    ssize_t block;              /* of the last page put, -1: none */
};
void kvmsavePostcopySectionBegin(kvmsavePostcopySection *s,
                                 const kvmsaveVMStream *vm, GByteArray *out);
/* Page @page of block @block: @data (KVMSAVE_VM_PAGE_SIZE bytes), or a
 * zero page when @data is NULL. */
void kvmsavePostcopySectionPage(kvmsavePostcopySection *s, size_t block,
                                uint64_t page, const unsigned char *data);
void kvmsavePostcopySectionEnd(kvmsavePostcopySection *s);

/* RAM's END section and QEMU_VM_EOF: every page was sent. */
void kvmsavePostcopyPutEnd(GByteArray *out, const kvmsaveVMStream *vm);

/* Recovery: ask for the pages QEMU has of @block; then resume. */
void kvmsavePostcopyPutRecvBitmap(GByteArray *out, const char *block);
void kvmsavePostcopyPutResume(GByteArray *out);

/* A message of the return path. */
typedef struct _kvmsavePostcopyMsg kvmsavePostcopyMsg;
struct _kvmsavePostcopyMsg {
    kvmsavePostcopyRP type;
    uint32_t value;             /* SHUT's error, PONG's and RESUME_ACK's value */
    uint64_t offset;            /* REQ_PAGES(_ID): bytes into the block */
    uint32_t length;
    char block[256];            /* REQ_PAGES_ID, RECV_BITMAP: the block */
    /* RECV_BITMAP: 1 bit per page received, little-endian, in the
     * buffer parsed */
    const unsigned char *bitmap;
    uint64_t bitmapLen;
};

/* Parse the message at the start of @buf (@len bytes): its length, 0 if
 * @buf holds only part of it, -1 (error reported) if it is malformed. */
ssize_t kvmsavePostcopyParseMsg(const unsigned char *buf, size_t len,
                                kvmsavePostcopyMsg *msg);

/* Whether page @page is set in a RECV_BITMAP's @bitmap. */
bool kvmsavePostcopyBitmapHas(const kvmsavePostcopyMsg *msg, uint64_t page);
