/*
 * mkcorpus.c: writes the fuzz target's seed corpus (tests/fuzz/corpus)
 *
 * Small valid images of every kind the writer makes: raw and zstd chunks,
 * no chunk at all, several streams, a header of several blocks. Run by
 * hand after a format change: tests/fuzz/mkcorpus DIR.
 */
#include <config.h>

#include <fcntl.h>
#include <unistd.h>

#include "kvmsave_image.h"
#include "virerror.h"
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
        writeSeed(dir, "2-block-header.img", 1, KVMSAVE_IMAGE_ENCODING_RAW, 2, 300) < 0) {
        fprintf(stderr, "mkcorpus: %s\n", virGetLastErrorMessage());
        return 1;
    }
    return 0;
}
