/*
 * kvmsave_postcopy.c: QEMU's postcopy protocol, spoken as the migration
 * source from a saved image
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include "kvmsave_postcopy.h"
#include "virerror.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

/* migration/savevm.c, migration/ram.c */
#define VM_SECTION_START 0x01
#define VM_SECTION_PART 0x02
#define VM_SECTION_END 0x03
#define VM_COMMAND 0x08
#define VM_EOF 0x00
#define VM_SECTION_FOOTER 0x7e
#define RAM_ZERO 0x02
#define RAM_MEM_SIZE 0x04
#define RAM_PAGE 0x08
#define RAM_EOS 0x10
#define RAM_CONTINUE 0x20
#define DISCARD_VERSION 0
#define RECV_BITMAP_END 0x0123456789abcdefULL


static void
put8(GByteArray *out, uint8_t v)
{
    g_byte_array_append(out, &v, 1);
}


static void
put16(GByteArray *out, uint16_t v)
{
    v = GUINT16_TO_BE(v);
    g_byte_array_append(out, (const guint8 *) &v, 2);
}


static void
put32(GByteArray *out, uint32_t v)
{
    v = GUINT32_TO_BE(v);
    g_byte_array_append(out, (const guint8 *) &v, 4);
}


static void
put64(GByteArray *out, uint64_t v)
{
    v = GUINT64_TO_BE(v);
    g_byte_array_append(out, (const guint8 *) &v, 8);
}


static void
putString(GByteArray *out, const char *s)
{
    size_t len = strlen(s);

    put8(out, len);
    g_byte_array_append(out, (const guint8 *) s, len);
}


static uint64_t
get64(const unsigned char *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
    return GUINT64_FROM_BE(v);
}


static uint32_t
get32(const unsigned char *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return GUINT32_FROM_BE(v);
}


void
kvmsavePostcopyPutCmd(GByteArray *out, kvmsavePostcopyCmd cmd,
                      const void *data, uint16_t len)
{
    put8(out, VM_COMMAND);
    put16(out, cmd);
    put16(out, len);
    if (len)
        g_byte_array_append(out, data, len);
}


static void
kvmsavePostcopyPutFooter(GByteArray *out, const kvmsaveVMStream *vm)
{
    if (!vm->footers)
        return;
    put8(out, VM_SECTION_FOOTER);
    put32(out, vm->ramSection);
}


/* RAM's setup as a plain stream declares it: no mapped-ram headers. */
static void
kvmsavePostcopyPutRamSetup(GByteArray *out, const kvmsaveVMStream *vm)
{
    uint64_t total = 0;
    size_t i;

    for (i = 0; i < vm->nblocks; i++)
        total += vm->blocks[i].length;
    put8(out, VM_SECTION_START);
    put32(out, vm->ramSection);
    putString(out, "ram");
    put32(out, vm->ramInstance);
    put32(out, vm->ramVersion);
    put64(out, total | RAM_MEM_SIZE);
    for (i = 0; i < vm->nblocks; i++) {
        putString(out, vm->blocks[i].name);
        put64(out, vm->blocks[i].length);
    }
    put64(out, RAM_EOS);
    kvmsavePostcopyPutFooter(out, vm);
}


/* POSTCOPY_RAM_DISCARD of the first page of the first block, not sent
 * yet. QEMU 7.2 to 10.0 need a discard between ADVISE and LISTEN: without
 * one, LISTEN's own discard step moves the incoming state back from
 * LISTENING to DISCARD, QEMU then loads pages the precopy way into RAM
 * that userfaultfd guards, and hangs. */
static void
kvmsavePostcopyPutDiscard(GByteArray *out, const kvmsaveVMStream *vm)
{
    g_autoptr(GByteArray) d = g_byte_array_new();

    put8(d, DISCARD_VERSION);
    putString(d, vm->blocks[0].name);
    put8(d, 0);
    put64(d, 0);
    put64(d, KVMSAVE_VM_PAGE_SIZE);
    kvmsavePostcopyPutCmd(out, KVMSAVE_POSTCOPY_CMD_RAM_DISCARD, d->data, d->len);
}


GByteArray *
kvmsavePostcopyStart(const kvmsaveVMStream *vm, uint64_t start,
                     const unsigned char *config, size_t configLen)
{
    GByteArray *out = g_byte_array_new();
    unsigned char advise[16];
    uint64_t v;

    /* The configuration lists mapped-ram only for a mapped-ram stream
     * (kvmsave_vmstream.c refuses any other capability); QEMU refuses a
     * stream whose list differs from its own. */
    if (vm->capsStart) {
        g_byte_array_append(out, config, vm->capsStart - start);
        g_byte_array_append(out, config + (vm->capsEnd - start),
                            configLen - (vm->capsEnd - start));
    } else {
        g_byte_array_append(out, config, configLen);
    }
    kvmsavePostcopyPutCmd(out, KVMSAVE_POSTCOPY_CMD_OPEN_RETURN_PATH, NULL, 0);
    /* The page sizes of all blocks ORed, then the target's: no huge
     * pages (kvmsave's checks refuse them for a lazy restore). */
    v = GUINT64_TO_BE(KVMSAVE_VM_PAGE_SIZE);
    memcpy(advise, &v, 8);
    memcpy(advise + 8, &v, 8);
    kvmsavePostcopyPutCmd(out, KVMSAVE_POSTCOPY_CMD_ADVISE, advise, sizeof(advise));
    kvmsavePostcopyPutRamSetup(out, vm);
    kvmsavePostcopyPutDiscard(out, vm);
    return out;
}


GByteArray *
kvmsavePostcopyPackage(const unsigned char *dev, size_t devLen)
{
    g_autoptr(GByteArray) pkg = g_byte_array_new();
    GByteArray *out = g_byte_array_new();

    kvmsavePostcopyPutCmd(pkg, KVMSAVE_POSTCOPY_CMD_LISTEN, NULL, 0);
    g_byte_array_append(pkg, dev, devLen);
    kvmsavePostcopyPutCmd(pkg, KVMSAVE_POSTCOPY_CMD_RUN, NULL, 0);
    put8(out, VM_COMMAND);
    put16(out, KVMSAVE_POSTCOPY_CMD_PACKAGED);
    put16(out, 4);
    put32(out, pkg->len);
    g_byte_array_append(out, pkg->data, pkg->len);
    return out;
}


void
kvmsavePostcopySectionBegin(kvmsavePostcopySection *s,
                            const kvmsaveVMStream *vm, GByteArray *out)
{
    s->vm = vm;
    s->out = out;
    s->block = -1;
    put8(out, VM_SECTION_PART);
    put32(out, vm->ramSection);
}


void
kvmsavePostcopySectionPage(kvmsavePostcopySection *s, size_t block,
                           uint64_t page, const unsigned char *data)
{
    uint64_t v = page * KVMSAVE_VM_PAGE_SIZE | (data ? RAM_PAGE : RAM_ZERO);

    /* The block is named on its first page of the section only. */
    if ((ssize_t) block == s->block) {
        put64(s->out, v | RAM_CONTINUE);
    } else {
        put64(s->out, v);
        putString(s->out, s->vm->blocks[block].name);
        s->block = block;
    }
    if (data)
        g_byte_array_append(s->out, data, KVMSAVE_VM_PAGE_SIZE);
    else
        put8(s->out, 0);
}


void
kvmsavePostcopySectionEnd(kvmsavePostcopySection *s)
{
    put64(s->out, RAM_EOS);
    kvmsavePostcopyPutFooter(s->out, s->vm);
}


void
kvmsavePostcopyPutEnd(GByteArray *out, const kvmsaveVMStream *vm)
{
    put8(out, VM_SECTION_END);
    put32(out, vm->ramSection);
    put64(out, RAM_EOS);
    kvmsavePostcopyPutFooter(out, vm);
    put8(out, VM_EOF);
}


void
kvmsavePostcopyPutRecvBitmap(GByteArray *out, const char *block)
{
    g_autoptr(GByteArray) d = g_byte_array_new();

    putString(d, block);
    kvmsavePostcopyPutCmd(out, KVMSAVE_POSTCOPY_CMD_RECV_BITMAP, d->data, d->len);
}


void
kvmsavePostcopyPutResume(GByteArray *out)
{
    kvmsavePostcopyPutCmd(out, KVMSAVE_POSTCOPY_CMD_RESUME, NULL, 0);
}


static int G_GNUC_PRINTF(2, 3)
kvmsavePostcopyBadMsg(unsigned int type, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *why = NULL;

    va_start(ap, fmt);
    why = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    virReportError(VIR_ERR_OPERATION_FAILED,
                   _("QEMU sent a malformed message of type %u on the migration's return path: %s"),
                   type, why);
    return -1;
}


/* A counted block name at @p, @avail bytes there. */
static int
kvmsavePostcopyGetName(const unsigned char *p, size_t avail, unsigned int type,
                       char *name)
{
    if (avail < 1 || avail < 1 + (size_t) p[0])
        return kvmsavePostcopyBadMsg(type, "%s", _("its block name is cut off"));
    memcpy(name, p + 1, p[0]);
    name[p[0]] = '\0';
    return 1 + p[0];
}


/* RECV_BITMAP's bitmap follows its message, outside its length: be64
 * size, the bitmap, be64 end mark (migration/ram.c,
 * ram_dirty_bitmap_reload). Returns the bytes of all of it past the
 * message's own, 0 if not all there yet. */
static ssize_t
kvmsavePostcopyGetBitmap(const unsigned char *p, size_t avail,
                         kvmsavePostcopyMsg *msg)
{
    uint64_t size;

    if (avail < 8)
        return 0;
    size = get64(p);
    if (size % 8 != 0 || size > (1ULL << 40))
        return kvmsavePostcopyBadMsg(msg->type, _("a bitmap of %llu bytes"),
                                     (unsigned long long) size);
    if (avail - 8 < size + 8)
        return 0;
    if (get64(p + 8 + size) != RECV_BITMAP_END)
        return kvmsavePostcopyBadMsg(msg->type, "%s", _("the bitmap has no end mark"));
    msg->bitmap = p + 8;
    msg->bitmapLen = size;
    return 8 + size + 8;
}


ssize_t
kvmsavePostcopyParseMsg(const unsigned char *buf, size_t len,
                        kvmsavePostcopyMsg *msg)
{
    const unsigned char *d = buf + 4;
    unsigned int type;
    size_t dlen;
    ssize_t extra = 0;

    if (len < 4)
        return 0;
    type = buf[0] << 8 | buf[1];
    dlen = buf[2] << 8 | buf[3];
    if (len - 4 < dlen)
        return 0;
    memset(msg, 0, sizeof(*msg));
    msg->type = type;
    switch (type) {
    case KVMSAVE_POSTCOPY_RP_SHUT:
    case KVMSAVE_POSTCOPY_RP_PONG:
    case KVMSAVE_POSTCOPY_RP_RESUME_ACK:
        if (dlen != 4)
            return kvmsavePostcopyBadMsg(type, _("%zu bytes"), dlen);
        msg->value = get32(d);
        break;
    case KVMSAVE_POSTCOPY_RP_REQ_PAGES:
    case KVMSAVE_POSTCOPY_RP_REQ_PAGES_ID:
        if (dlen < 12)
            return kvmsavePostcopyBadMsg(type, _("%zu bytes"), dlen);
        msg->offset = get64(d);
        msg->length = get32(d + 8);
        if (type == KVMSAVE_POSTCOPY_RP_REQ_PAGES_ID &&
            kvmsavePostcopyGetName(d + 12, dlen - 12, type, msg->block) < 0)
            return -1;
        break;
    case KVMSAVE_POSTCOPY_RP_RECV_BITMAP:
        if (kvmsavePostcopyGetName(d, dlen, type, msg->block) < 0)
            return -1;
        if ((extra = kvmsavePostcopyGetBitmap(d + dlen, len - 4 - dlen, msg)) <= 0)
            return extra;
        break;
    case KVMSAVE_POSTCOPY_RP_SWITCHOVER_ACK:
        break;
    default:
        return kvmsavePostcopyBadMsg(type, "%s", _("its type is unknown"));
    }
    return 4 + dlen + extra;
}


bool
kvmsavePostcopyBitmapHas(const kvmsavePostcopyMsg *msg, uint64_t page)
{
    /* Little-endian longs: bit @page is in byte @page / 8 either way. */
    if (page / 8 >= msg->bitmapLen)
        return false;
    return msg->bitmap[page / 8] >> (page % 8) & 1;
}
