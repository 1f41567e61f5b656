/*
 * kvmsave_vmstream.c: the layout of a QEMU migration stream in a file
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <unistd.h>

#include "kvmsave_vmstream.h"
#include "viralloc.h"
#include "virerror.h"
#include "virlog.h"
#include "virstring.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.vmstream");

/* migration/savevm.c */
#define VM_FILE_MAGIC 0x5145564d        /* "QEVM" */
#define VM_FILE_VERSION 3
#define VM_EOF 0x00
#define VM_SECTION_START 0x01
#define VM_SECTION_PART 0x02
#define VM_SECTION_END 0x03
#define VM_SECTION_FULL 0x04
#define VM_SUBSECTION 0x05
#define VM_VMDESCRIPTION 0x06
#define VM_CONFIGURATION 0x07
#define VM_COMMAND 0x08
#define VM_SECTION_FOOTER 0x7e

/* migration/ram.c: flags in the low bits of a page record's address */
#define RAM_ZERO 0x02
#define RAM_MEM_SIZE 0x04
#define RAM_PAGE 0x08
#define RAM_EOS 0x10
#define RAM_CONTINUE 0x20
#define RAM_HOOK 0x80
#define RAM_MULTIFD_FLUSH 0x200
#define RAM_FLAGS_MASK ((uint64_t) KVMSAVE_VM_PAGE_SIZE - 1)

#define MAPPED_RAM_HEADER_LEN 28        /* be32 version, 3 x be64, packed */
#define MAPPED_RAM_VERSION 1

/* QEMU's JSON description of the devices can be large; the search for
 * its start looks this far back from the stream's end. */
#define VMDESC_MAX (64 * 1024 * 1024)
#define VMDESC_WINDOW (1024 * 1024)

#define READER_BUF (64 * 1024)

/* Reads of the stream through its source; a mapped-ram stream jumps
 * over each block's pages. */
typedef struct _kvmsaveVMReader kvmsaveVMReader;
struct _kvmsaveVMReader {
    const kvmsaveVMSource *src;
    const char *path;
    uint64_t pos;
    uint64_t end;
    /* The block of the last page record, which a RAM_CONTINUE record
     * names; QEMU 7.2 keeps it across RAM sections, as its loader does. */
    ssize_t block;
    kvmsaveVMRecordFn recordFn;
    void *opaque;
};

/* The source of a file, read with pread a buffer at a time. */
typedef struct _kvmsaveVMFile kvmsaveVMFile;
struct _kvmsaveVMFile {
    int fd;
    const char *path;
    unsigned char buf[READER_BUF];
    uint64_t bufStart;
    size_t bufLen;
};


static void G_GNUC_PRINTF(3, 0)
kvmsaveVMBadAtV(const char *path, uint64_t pos, const char *fmt, va_list ap)
{
    g_autofree char *why = g_strdup_vprintf(fmt, ap);

    virReportError(VIR_ERR_OPERATION_FAILED,
                   _("cannot read the QEMU migration stream in '%s' at offset %llu: %s"),
                   path, (unsigned long long) pos, why);
}


static int G_GNUC_PRINTF(3, 4)
kvmsaveVMBadAt(const char *path, uint64_t pos, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    kvmsaveVMBadAtV(path, pos, fmt, ap);
    va_end(ap);
    return -1;
}


static int G_GNUC_PRINTF(2, 3)
kvmsaveVMBad(kvmsaveVMReader *r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    kvmsaveVMBadAtV(r->path, r->pos, fmt, ap);
    va_end(ap);
    return -1;
}


static int
kvmsaveVMFileView(void *opaque, uint64_t pos, size_t want,
                  const unsigned char **p, size_t *len)
{
    kvmsaveVMFile *f = opaque;

    if (pos < f->bufStart || pos >= f->bufStart + f->bufLen) {
        ssize_t got;

        if ((got = pread(f->fd, f->buf, MIN(READER_BUF, want), pos)) <= 0) {
            if (got < 0) {
                virReportSystemError(errno, _("cannot read '%s'"), f->path);
                return -1;
            }
            return kvmsaveVMBadAt(f->path, pos, "%s", _("the file ends too early"));
        }
        f->bufStart = pos;
        f->bufLen = got;
    }
    *p = f->buf + (pos - f->bufStart);
    *len = f->bufStart + f->bufLen - pos;
    return 0;
}


/* The bytes at r->pos, at most @n of them. */
static int
kvmsaveVMView(kvmsaveVMReader *r, size_t n, const unsigned char **p,
              size_t *len)
{
    if (r->pos >= r->end)
        return kvmsaveVMBad(r, "%s", _("the stream ends too early"));
    if (r->src->view(r->src->opaque, r->pos, r->end - r->pos, p, len) < 0)
        return -1;
    *len = MIN(MIN(*len, n), r->end - r->pos);
    return 0;
}


static int
kvmsaveVMRead(kvmsaveVMReader *r, void *out, size_t n)
{
    unsigned char *o = out;

    while (n > 0) {
        const unsigned char *p;
        size_t take;

        if (kvmsaveVMView(r, n, &p, &take) < 0)
            return -1;
        memcpy(o, p, take);
        o += take;
        r->pos += take;
        n -= take;
    }
    return 0;
}


/* The next byte, left in place. */
static int
kvmsaveVMPeekU8(kvmsaveVMReader *r, uint8_t *v)
{
    const unsigned char *p;
    size_t len;

    if (kvmsaveVMView(r, 1, &p, &len) < 0)
        return -1;
    *v = p[0];
    return 0;
}


static int
kvmsaveVMReadU8(kvmsaveVMReader *r, uint8_t *v)
{
    return kvmsaveVMRead(r, v, 1);
}


static int
kvmsaveVMReadBE16(kvmsaveVMReader *r, uint16_t *v)
{
    if (kvmsaveVMRead(r, v, 2) < 0)
        return -1;
    *v = GUINT16_FROM_BE(*v);
    return 0;
}


static int
kvmsaveVMReadBE32(kvmsaveVMReader *r, uint32_t *v)
{
    if (kvmsaveVMRead(r, v, 4) < 0)
        return -1;
    *v = GUINT32_FROM_BE(*v);
    return 0;
}


static int
kvmsaveVMReadBE64(kvmsaveVMReader *r, uint64_t *v)
{
    if (kvmsaveVMRead(r, v, 8) < 0)
        return -1;
    *v = GUINT64_FROM_BE(*v);
    return 0;
}


/* QEMU's counted string: a length byte, then the bytes. */
static char *
kvmsaveVMReadString(kvmsaveVMReader *r)
{
    uint8_t len;
    g_autofree char *s = NULL;

    if (kvmsaveVMReadU8(r, &len) < 0)
        return NULL;
    s = g_new0(char, len + 1);
    if (kvmsaveVMRead(r, s, len) < 0)
        return NULL;
    return g_steal_pointer(&s);
}


static int
kvmsaveVMSkip(kvmsaveVMReader *r, uint64_t n)
{
    if (r->end - r->pos < n)
        return kvmsaveVMBad(r, "%s", _("the stream ends too early"));
    r->pos += n;
    return 0;
}


void
kvmsaveVMStreamFree(kvmsaveVMStream *vm)
{
    size_t i;

    if (!vm)
        return;
    for (i = 0; i < vm->nblocks; i++)
        g_free(vm->blocks[i].name);
    g_free(vm->blocks);
    g_strfreev(vm->caps);
    g_free(vm->machine);
    g_free(vm);
}


ssize_t
kvmsaveVMStreamFindBlock(const kvmsaveVMStream *vm, const char *name)
{
    size_t i;

    for (i = 0; i < vm->nblocks; i++) {
        if (STREQ(vm->blocks[i].name, name))
            return i;
    }
    return -1;
}


/* configuration/capabilities: a count, then counted strings. */
static int
kvmsaveVMParseCaps(kvmsaveVMReader *r, kvmsaveVMStream *vm)
{
    uint32_t n, i;

    if (kvmsaveVMReadBE32(r, &n) < 0)
        return -1;
    if (n > 64)
        return kvmsaveVMBad(r, _("%u capabilities listed"), n);
    vm->caps = g_new0(char *, n + 1);
    for (i = 0; i < n; i++) {
        if (!(vm->caps[i] = kvmsaveVMReadString(r)))
            return -1;
        if (STREQ(vm->caps[i], "mapped-ram"))
            vm->mapped = true;
        else
            return kvmsaveVMBad(r, _("capability '%s', which changes the layout of RAM's setup"),
                                vm->caps[i]);
    }
    return 0;
}


/* The configuration section: the machine type, then the subsections
 * QEMU knows (savevm.c, vmstate_configuration). */
static int
kvmsaveVMParseConfig(kvmsaveVMReader *r, kvmsaveVMStream *vm)
{
    uint32_t len;
    uint8_t type;

    if (kvmsaveVMReadBE32(r, &len) < 0)
        return -1;
    if (len > 256)
        return kvmsaveVMBad(r, _("a machine type of %u bytes"), len);
    vm->machine = g_new0(char, len + 1);
    if (kvmsaveVMRead(r, vm->machine, len) < 0)
        return -1;
    for (;;) {
        g_autofree char *name = NULL;
        uint32_t version;
        uint64_t at = r->pos;

        if (kvmsaveVMPeekU8(r, &type) < 0)
            return -1;
        if (type != VM_SUBSECTION)
            break;
        r->pos++;
        if (!(name = kvmsaveVMReadString(r)) || kvmsaveVMReadBE32(r, &version) < 0)
            return -1;
        if (STREQ(name, "configuration/target-page-bits")) {
            uint32_t bits;

            if (kvmsaveVMReadBE32(r, &bits) < 0)
                return -1;
            if (bits != 12)
                return kvmsaveVMBad(r, _("target pages of %u bits"), bits);
        } else if (STREQ(name, "configuration/capabilities")) {
            if (vm->caps)
                return kvmsaveVMBad(r, "%s", _("a second list of capabilities"));
            if (kvmsaveVMParseCaps(r, vm) < 0)
                return -1;
            vm->capsStart = at;
            vm->capsEnd = r->pos;
        } else if (STREQ(name, "configuration/uuid")) {
            if (kvmsaveVMSkip(r, VIR_UUID_BUFLEN) < 0)
                return -1;
        } else {
            return kvmsaveVMBad(r, _("unknown configuration part '%s'"), name);
        }
    }
    if (!vm->caps)
        vm->caps = g_new0(char *, 1);
    vm->configEnd = r->pos;
    return 0;
}


static int
kvmsaveVMParseFooter(kvmsaveVMReader *r, kvmsaveVMStream *vm, uint32_t id)
{
    uint8_t type;
    uint32_t fid;

    if (!vm->footers)
        return 0;
    if (kvmsaveVMReadU8(r, &type) < 0 || kvmsaveVMReadBE32(r, &fid) < 0)
        return -1;
    if (type != VM_SECTION_FOOTER || fid != id)
        return kvmsaveVMBad(r, _("section %u has no footer"), id);
    return 0;
}


/* A mapped-ram block's header; its pages follow at pagesOffset, and the
 * stream goes on after them. */
static int
kvmsaveVMParseMappedHeader(kvmsaveVMReader *r, kvmsaveVMBlock *b)
{
    uint32_t version;
    uint64_t pageSize;

    if (kvmsaveVMReadBE32(r, &version) < 0 ||
        kvmsaveVMReadBE64(r, &pageSize) < 0 ||
        kvmsaveVMReadBE64(r, &b->bitmapOffset) < 0 ||
        kvmsaveVMReadBE64(r, &b->pagesOffset) < 0)
        return -1;
    if (version != MAPPED_RAM_VERSION || pageSize != KVMSAVE_VM_PAGE_SIZE)
        return kvmsaveVMBad(r, _("block '%s' has a mapped-ram header of version %u with pages of %llu bytes"),
                            b->name, version, (unsigned long long) pageSize);
    if (b->bitmapOffset < r->pos || b->pagesOffset < b->bitmapOffset ||
        b->pagesOffset > r->end || r->end - b->pagesOffset < b->length)
        return kvmsaveVMBad(r, _("block '%s' lies outside the stream"), b->name);
    r->pos = b->pagesOffset + b->length;
    return 0;
}


/* RAM's setup: the total, then each block; RAM_EOS ends it. */
static int
kvmsaveVMParseRamSetup(kvmsaveVMReader *r, kvmsaveVMStream *vm)
{
    uint64_t v, total;

    if (kvmsaveVMReadBE64(r, &v) < 0)
        return -1;
    if ((v & RAM_FLAGS_MASK) != RAM_MEM_SIZE)
        return kvmsaveVMBad(r, "%s", _("RAM's setup has no size"));
    total = v & ~RAM_FLAGS_MASK;
    while (total > 0) {
        kvmsaveVMBlock b = { 0 };

        if (!(b.name = kvmsaveVMReadString(r)) ||
            kvmsaveVMReadBE64(r, &b.length) < 0)
            goto error;
        if (b.length == 0 || b.length > total ||
            (b.length & RAM_FLAGS_MASK) != 0) {
            kvmsaveVMBad(r, _("block '%s' has %llu bytes"), b.name,
                         (unsigned long long) b.length);
            goto error;
        }
        if (vm->mapped && kvmsaveVMParseMappedHeader(r, &b) < 0)
            goto error;
        total -= b.length;
        VIR_APPEND_ELEMENT(vm->blocks, vm->nblocks, b);
        continue;
     error:
        g_free(b.name);
        return -1;
    }
    for (;;) {
        if (kvmsaveVMReadBE64(r, &v) < 0)
            return -1;
        if (v == RAM_EOS)
            return 0;
        if (v != RAM_HOOK && v != RAM_MULTIFD_FLUSH)
            return kvmsaveVMBad(r, _("RAM's setup holds 0x%llx"),
                                (unsigned long long) v);
    }
}


/* One page record of a plain stream, its header @v read at @at. */
static int
kvmsaveVMParsePage(kvmsaveVMReader *r, kvmsaveVMStream *vm, uint64_t v,
                   uint64_t at)
{
    uint64_t flags = v & RAM_FLAGS_MASK & ~RAM_CONTINUE;
    uint64_t addr = v & ~RAM_FLAGS_MASK;
    kvmsaveVMRecord rec = { .record = at, .data = flags == RAM_PAGE,
                            .named = !(v & RAM_CONTINUE) };

    if (rec.named) {
        g_autofree char *name = kvmsaveVMReadString(r);

        if (!name)
            return -1;
        if ((r->block = kvmsaveVMStreamFindBlock(vm, name)) < 0)
            return kvmsaveVMBad(r, _("a page of unknown block '%s'"), name);
    }
    if (r->block < 0)
        return kvmsaveVMBad(r, "%s", _("a page before any block"));
    if (addr >= vm->blocks[r->block].length)
        return kvmsaveVMBad(r, _("a page at 0x%llx past the end of block '%s'"),
                            (unsigned long long) addr, vm->blocks[r->block].name);
    rec.block = r->block;
    rec.page = addr / KVMSAVE_VM_PAGE_SIZE;
    rec.payload = r->pos;
    if (rec.data) {
        if (kvmsaveVMSkip(r, KVMSAVE_VM_PAGE_SIZE) < 0)
            return -1;
    } else {
        uint8_t fill;

        if (kvmsaveVMReadU8(r, &fill) < 0)
            return -1;
        if (fill != 0)
            return kvmsaveVMBad(r, _("a page filled with 0x%x"), fill);
    }
    vm->pages++;
    if (r->recordFn)
        return r->recordFn(vm, &rec, r->opaque);
    return 0;
}


/* The records of a RAM section (PART or END), up to its RAM_EOS. */
static int
kvmsaveVMParseRamRecords(kvmsaveVMReader *r, kvmsaveVMStream *vm)
{
    for (;;) {
        uint64_t v, flags;
        uint64_t at = r->pos;

        if (kvmsaveVMReadBE64(r, &v) < 0)
            return -1;
        flags = v & RAM_FLAGS_MASK & ~RAM_CONTINUE;
        if (flags == RAM_EOS)
            return 0;
        if (flags == RAM_HOOK || flags == RAM_MULTIFD_FLUSH)
            continue;
        if (vm->mapped || (flags != RAM_PAGE && flags != RAM_ZERO)) {
            virReportError(VIR_ERR_OPERATION_UNSUPPORTED,
                           _("the QEMU migration stream in '%s' holds a RAM record with flags 0x%llx at offset %llu, which kvmsave cannot serve pages from (compressed or delta pages)"),
                           r->path, (unsigned long long) flags,
                           (unsigned long long) at);
            return -1;
        }
        if (kvmsaveVMParsePage(r, vm, v, at) < 0)
            return -1;
    }
}


/* A section that starts with a header naming it: RAM's setup, or the
 * first device section (where the walk stops, at @start). */
static int
kvmsaveVMParseNamedSection(kvmsaveVMReader *r, kvmsaveVMStream *vm,
                           uint8_t type, uint64_t start, bool *devices)
{
    uint32_t id, instance, version;
    g_autofree char *idstr = NULL;

    if (kvmsaveVMReadBE32(r, &id) < 0 || !(idstr = kvmsaveVMReadString(r)) ||
        kvmsaveVMReadBE32(r, &instance) < 0 || kvmsaveVMReadBE32(r, &version) < 0)
        return -1;
    if (STRNEQ(idstr, "ram")) {
        if (vm->nblocks == 0)
            return kvmsaveVMBad(r, _("section '%s' comes before RAM's"), idstr);
        *devices = true;
        r->pos = start;
        return 0;
    }
    if (type != VM_SECTION_START || vm->nblocks > 0)
        return kvmsaveVMBad(r, "%s", _("a second RAM setup"));
    vm->ramSection = id;
    vm->ramInstance = instance;
    vm->ramVersion = version;
    if (kvmsaveVMParseRamSetup(r, vm) < 0)
        return -1;
    /* QEMU sends footers unless the machine type predates them. */
    if (kvmsaveVMPeekU8(r, &type) < 0)
        return -1;
    vm->footers = type == VM_SECTION_FOOTER;
    return kvmsaveVMParseFooter(r, vm, id);
}


/* RAM's sections and the commands among them, up to the first device
 * section: vm->devStart. With @setupOnly, only up to RAM's setup. */
static int
kvmsaveVMParseRam(kvmsaveVMReader *r, kvmsaveVMStream *vm, bool setupOnly)
{
    bool devices = false;

    while (!devices) {
        uint64_t start = r->pos;
        uint8_t type;
        uint32_t id;
        uint16_t cmd, len;

        if (kvmsaveVMReadU8(r, &type) < 0)
            return -1;
        switch (type) {
        case VM_SECTION_START:
        case VM_SECTION_FULL:
            if (kvmsaveVMParseNamedSection(r, vm, type, start, &devices) < 0)
                return -1;
            if (setupOnly && !devices)
                return 0;
            break;
        case VM_SECTION_PART:
        case VM_SECTION_END:
            if (kvmsaveVMReadBE32(r, &id) < 0)
                return -1;
            if (vm->nblocks == 0 || id != vm->ramSection)
                return kvmsaveVMBad(r, _("section %u is not RAM's"), id);
            if (kvmsaveVMParseRamRecords(r, vm) < 0 ||
                kvmsaveVMParseFooter(r, vm, id) < 0)
                return -1;
            vm->ramEnded = type == VM_SECTION_END;
            break;
        case VM_COMMAND:
            /* QEMU 10 announces the switchover; nothing to keep. */
            if (kvmsaveVMReadBE16(r, &cmd) < 0 || kvmsaveVMReadBE16(r, &len) < 0 ||
                kvmsaveVMSkip(r, len) < 0)
                return -1;
            break;
        case VM_EOF:
            return kvmsaveVMBad(r, "%s", _("the stream holds no device state"));
        default:
            r->pos = start;
            return kvmsaveVMBad(r, _("a section of type 0x%x"), type);
        }
    }
    vm->devStart = r->pos;
    return 0;
}


static int
kvmsaveVMReadAt(kvmsaveVMReader *r, unsigned char *buf, size_t n, uint64_t pos)
{
    r->pos = pos;
    return kvmsaveVMRead(r, buf, n);
}


/* Where the device sections end: at QEMU_VM_EOF, which is the last byte,
 * or followed by QEMU's JSON description (type, be32 length, text).
 * Searched from the end, a window at a time. */
int
kvmsaveVMStreamFindEnd(const kvmsaveVMSource *src, const char *path,
                       uint64_t end, kvmsaveVMStream *vm)
{
    kvmsaveVMReader rd = { .src = src, .path = path, .end = end };
    kvmsaveVMReader *r = &rd;
    g_autofree unsigned char *buf = g_malloc(VMDESC_WINDOW);
    uint64_t lowest = vm->devStart + 1;
    uint64_t hi = r->end;

    if (r->end - lowest > VMDESC_MAX)
        lowest = r->end - VMDESC_MAX;
    /* The window [lo, hi) holds the 7 bytes around every q in
     * [lo + 1, hi - 6]: EOF, the type, the length and the text's '{'. */
    while (hi >= lowest + 6) {
        uint64_t lo = MAX(hi - MIN(hi, VMDESC_WINDOW), lowest - 1);
        uint64_t q;

        if (kvmsaveVMReadAt(r, buf, hi - lo, lo) < 0)
            return -1;
        for (q = hi - 6; q > lo; q--) {
            const unsigned char *h = buf + (q - 1 - lo);
            uint64_t len = (uint64_t) h[2] << 24 | h[3] << 16 | h[4] << 8 | h[5];

            if (h[0] == VM_EOF && h[1] == VM_VMDESCRIPTION && h[6] == '{' &&
                len == r->end - q - 5) {
                vm->devEnd = q - 1;
                vm->vmdesc = true;
                return 0;
            }
        }
        hi = lo + 6;
    }
    if (kvmsaveVMReadAt(r, buf, 1, r->end - 1) < 0)
        return -1;
    if (buf[0] != VM_EOF) {
        r->pos = r->end - 1;
        return kvmsaveVMBad(r, "%s", _("the stream does not end with QEMU_VM_EOF"));
    }
    vm->devEnd = r->end - 1;
    return 0;
}


/* The header and the configuration, if the stream has one. */
static int
kvmsaveVMParseHead(kvmsaveVMReader *r, kvmsaveVMStream *vm)
{
    uint64_t start = r->pos;
    uint32_t magic, version;
    uint8_t type;

    if (kvmsaveVMReadBE32(r, &magic) < 0 || kvmsaveVMReadBE32(r, &version) < 0)
        return -1;
    if (magic != VM_FILE_MAGIC || version != VM_FILE_VERSION) {
        r->pos = start;
        return kvmsaveVMBad(r, "%s", _("no QEMU migration stream of version 3 starts there"));
    }
    if (kvmsaveVMPeekU8(r, &type) < 0)
        return -1;
    if (type == VM_CONFIGURATION) {
        r->pos++;
        return kvmsaveVMParseConfig(r, vm);
    }
    vm->caps = g_new0(char *, 1);
    vm->configEnd = r->pos;
    return 0;
}


kvmsaveVMStream *
kvmsaveVMStreamParseFrom(const kvmsaveVMSource *src, const char *path,
                         uint64_t start, uint64_t end, unsigned int flags,
                         kvmsaveVMRecordFn recordFn, void *opaque)
{
    kvmsaveVMReader r = { .src = src, .path = path, .pos = start, .end = end,
                          .block = -1, .recordFn = recordFn, .opaque = opaque };
    g_autoptr(kvmsaveVMStream) vm = g_new0(kvmsaveVMStream, 1);
    bool setupOnly = flags & KVMSAVE_VM_PARSE_SETUP_ONLY;

    if (kvmsaveVMParseHead(&r, vm) < 0 ||
        kvmsaveVMParseRam(&r, vm, setupOnly) < 0)
        return NULL;
    if (!(flags & (KVMSAVE_VM_PARSE_SETUP_ONLY | KVMSAVE_VM_PARSE_NO_END)) &&
        kvmsaveVMStreamFindEnd(src, path, end, vm) < 0)
        return NULL;
    VIR_DEBUG("%s: machine %s, %zu blocks, %s, devices [%llu, %llu)",
              path, vm->machine ? vm->machine : "?", vm->nblocks,
              vm->mapped ? "mapped-ram" : "plain",
              (unsigned long long) vm->devStart, (unsigned long long) vm->devEnd);
    return g_steal_pointer(&vm);
}


kvmsaveVMStream *
kvmsaveVMStreamParse(int fd, const char *path, uint64_t start, uint64_t end,
                     kvmsaveVMRecordFn recordFn, void *opaque)
{
    g_autofree kvmsaveVMFile *f = g_new0(kvmsaveVMFile, 1);
    kvmsaveVMSource src = { kvmsaveVMFileView, f };

    f->fd = fd;
    f->path = path;
    return kvmsaveVMStreamParseFrom(&src, path, start, end, 0, recordFn, opaque);
}
