/*
 * mkcorpus.c: writes the fuzz target's seed corpus (tests/fuzz/corpus)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Small valid images of every kind the writer makes: raw and zstd chunks,
 * no chunk at all, several streams, a header of several blocks, a sparse
 * image (with the smallest blocks, to stay small); and stock
 * libvirt images of each compression, made with its programs as stock
 * libvirt does. Run by hand after a format change: tests/fuzz/mkcorpus DIR.
 */
#include <config.h>

#include <fcntl.h>
#include <unistd.h>
#include <gio/gio.h>

#include "kvmsave_imagewriter.h"
#include "kvmsave_mapped.h"
#include "kvmsave_stock.h"
#include "virerror.h"
#include "virfile.h"
#include "viruuid.h"

static int
writeSeed(const char *dir, const char *name, unsigned int streams, int format,
          size_t chunks, size_t xmlPad)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_autoptr(kvmsaveImageHeader) hdr = kvmsaveImageHeaderNew();
    g_autoptr(kvmsaveImageWriter) w = NULL;
    g_autoptr(GString) xml = g_string_new("<domain type='qemu'><name>seed</name>");
    unsigned char buf[700];
    size_t i;
    int fd;

    ignore_value(virUUIDParse("6f1b3a52-3c1e-4b8e-9d4e-1c2b3a4d5e6f", hdr->uuid));
    hdr->created = 1795000000;
    hdr->flags = KVMSAVE_IMAGE_FLAG_RUNNING;
    hdr->streams = streams;
    for (i = 0; i < xmlPad; i++)
        g_string_append(xml, "<!-- padding -->");
    g_string_append(xml, "</domain>");
    hdr->xml = g_string_free(g_steal_pointer(&xml), FALSE);
    hdr->name = g_strdup("seed");
    hdr->qemuVersion = g_strdup("7.2.0");
    hdr->machine = g_strdup("pc-i440fx-7.2");
    hdr->producer = g_strdup("kvmsave mkcorpus");

    if ((fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644)) < 0)
        return -1;
    w = kvmsaveImageWriterNew(fd, path, false);
    kvmsaveImageWriterSetFormat(w, format);
    if (kvmsaveImageWriteHeader(w, hdr) < 0)
        goto error;
    for (i = 0; i < chunks; i++) {
        size_t len = 100 + 150 * i % sizeof(buf);
        size_t j;

        for (j = 0; j < len; j++)
            buf[j] = i % 2 ? "QEVM saved pages "[j % 17] : (j * 7919 + i) >> 3;
        if (i == 0 && streams > 0)
            memcpy(buf, "QEVM", 4);
        if (kvmsaveImageWriteChunk(w, i % streams, buf, len) < 0)
            goto error;
    }
    if (kvmsaveImageWriterFinish(w) < 0)
        goto error;
    return close(fd);

 error:
    close(fd);
    return -1;
}


/* A sparse image of 4096-byte blocks: data, a hole, half a block. */
static int
writeSparseSeed(const char *dir, const char *name)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_autoptr(kvmsaveImageHeader) hdr = kvmsaveImageHeaderNew();
    g_autoptr(kvmsaveImageWriter) w = NULL;
    g_autofree uint32_t *table = NULL;
    unsigned char buf[4096];
    uint64_t streamBytes = 2 * sizeof(buf) + sizeof(buf) / 2;
    VIR_AUTOCLOSE fd = -1;
    VIR_AUTOCLOSE rfd = -1;
    size_t j;

    ignore_value(virUUIDParse("6f1b3a52-3c1e-4b8e-9d4e-1c2b3a4d5e6f", hdr->uuid));
    hdr->created = 1795000000;
    hdr->xml = g_strdup("<domain type='qemu'><name>seed</name></domain>");
    hdr->qemuVersion = g_strdup("10.0.2");
    hdr->mappedOffset = 4096;
    hdr->mappedBlock = 4096;
    hdr->mappedChannels = 2;
    for (j = 0; j < sizeof(buf); j++)
        buf[j] = "QEVM mapped pages "[j % 18];

    if ((fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644)) < 0 ||
        (rfd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return -1;
    w = kvmsaveImageWriterNew(fd, path, false);
    if (kvmsaveImageWriteHeader(w, hdr) < 0 ||
        pwrite(fd, buf, sizeof(buf), 4096) != sizeof(buf) ||
        pwrite(fd, buf, sizeof(buf) / 2, 4096 + 2 * sizeof(buf)) != sizeof(buf) / 2 ||
        kvmsaveMappedSumFinish(kvmsaveMappedSumStart(rfd, path, false, hdr,
                                                     streamBytes, NULL, 1),
                               false, &table) < 0 ||
        kvmsaveImageWriterFinishMapped(w, hdr, streamBytes, table) < 0)
        return -1;
    return 0;
}


/* A stock libvirt image whose stream went through @prog ("gzip -c" and
 * the like; NULL for raw): small, with a cookie and little padding. */
static int
writeStockSeed(const char *dir, const char *name, unsigned int compressed,
               const char *prog)
{
    const char *xml = "<domain type='qemu'><name>seed</name>"
        "<uuid>6f1b3a52-3c1e-4b8e-9d4e-1c2b3a4d5e6f</uuid></domain>";
    const char *cookie = "<cookie><cpu mode='custom'><model>qemu64</model></cpu></cookie>";
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_autoptr(GByteArray) img = g_byte_array_new();
    g_autoptr(GBytes) stream = NULL;
    g_autoptr(GBytes) stored = NULL;
    unsigned char head[KVMSAVE_STOCK_HEADER_LEN] = { 0 };
    unsigned char raw[2000];
    uint32_t f[5];
    size_t xmlLen = strlen(xml) + 1;
    size_t cookieLen = strlen(cookie) + 1;
    g_autofree char *area = g_malloc0(xmlLen + cookieLen + 16);
    size_t i;

    for (i = 0; i < sizeof(raw); i++)
        raw[i] = i < 4 ? "QEVM"[i] : i % 3 ? 0 : "saved pages "[i % 12];
    stream = g_bytes_new(raw, sizeof(raw));
    if (prog) {
        const char *argv[] = { prog, "-c", NULL };
        g_autoptr(GSubprocess) p = g_subprocess_newv(argv, G_SUBPROCESS_FLAGS_STDIN_PIPE |
                                                     G_SUBPROCESS_FLAGS_STDOUT_PIPE, NULL);

        if (!p || !g_subprocess_communicate(p, stream, NULL, &stored, NULL, NULL) ||
            !g_subprocess_get_successful(p)) {
            fprintf(stderr, "mkcorpus: %s -c failed\n", prog);
            return -1;
        }
    } else {
        stored = g_bytes_ref(stream);
    }

    f[0] = KVMSAVE_STOCK_VERSION;
    f[1] = xmlLen + cookieLen + 16;
    f[2] = 1;
    f[3] = compressed;
    f[4] = xmlLen;
    memcpy(head, KVMSAVE_STOCK_MAGIC, KVMSAVE_STOCK_MAGIC_LEN);
    memcpy(head + KVMSAVE_STOCK_MAGIC_LEN, f, sizeof(f));
    memcpy(area, xml, xmlLen);
    memcpy(area + xmlLen, cookie, cookieLen);
    g_byte_array_append(img, head, sizeof(head));
    g_byte_array_append(img, (guint8 *) area, f[1]);
    g_byte_array_append(img, g_bytes_get_data(stored, NULL), g_bytes_get_size(stored));
    if (!g_file_set_contents(path, (char *) img->data, img->len, NULL)) {
        fprintf(stderr, "mkcorpus: cannot write %s\n", path);
        return -1;
    }
    return 0;
}


int
main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";

    if (virInitialize() < 0)
        return 1;

    if (writeSeed(dir, "raw-3-chunks.img", 1, KVMSAVE_IMAGE_ENCODING_RAW, 3, 0) < 0 ||
        writeSeed(dir, "zstd-4-chunks.img", 1, KVMSAVE_IMAGE_ENCODING_ZSTD, 4, 0) < 0 ||
        writeSeed(dir, "no-chunks.img", 1, KVMSAVE_IMAGE_ENCODING_RAW, 0, 0) < 0 ||
        writeSeed(dir, "3-streams.img", 3, KVMSAVE_IMAGE_ENCODING_ZSTD, 7, 0) < 0 ||
        writeSeed(dir, "2-block-header.img", 1, KVMSAVE_IMAGE_ENCODING_RAW, 2, 300) < 0 ||
        writeSparseSeed(dir, "sparse.img") < 0) {
        fprintf(stderr, "mkcorpus: %s\n", virGetLastErrorMessage());
        return 1;
    }
    if (writeStockSeed(dir, "stock-raw.img", 0, NULL) < 0 ||
        writeStockSeed(dir, "stock-gzip.img", 1, "gzip") < 0 ||
        writeStockSeed(dir, "stock-bzip2.img", 2, "bzip2") < 0 ||
        writeStockSeed(dir, "stock-xz.img", 3, "xz") < 0 ||
        writeStockSeed(dir, "stock-lzop.img", 4, "lzop") < 0 ||
        writeStockSeed(dir, "stock-zstd.img", 5, "zstd") < 0 ||
        writeStockSeed(dir, "stock-sparse.img", 6, NULL) < 0)
        return 1;
    return 0;
}
