/*
 * imagefuzz.c: libFuzzer target for the save-image parser
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Each input is a whole image file: decoded as a header from memory, then
 * opened from a memfd as a restore or kvmsave-image would, every chunk read
 * and checked, by the reader of all chunks and by each stream's reader.
 * Inputs with stock libvirt's magic go through its header parser and
 * stream decoders (seeds stock-*.img) the same way.
 * Inputs whose last byte is odd are parsed with checksum mismatches
 * ignored (the last byte of a valid image is the trailer checksum's).
 * Errors are the expected outcome for almost every input; what must never
 * happen is a crash, a sanitizer report, a hang or a leak.
 *
 * Build: CC=clang ./configure --enable-sanitizers --enable-fuzz; run:
 * make check-fuzz FUZZ_SECONDS=600 (docs/testing.md).
 */
#include <config.h>

#include <sys/mman.h>
#include <unistd.h>

#include "kvmsave_imagereader.h"
#include "virerror.h"
#include "libvirt/libvirt.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Stream readers tried at most: each starts threads. */
#define FUZZ_STREAMS_MAX 4

static void
fuzzReadAll(kvmsaveImageReader *r)
{
    const kvmsaveImageHeader *hdr = kvmsaveImageReaderHeader(r);
    unsigned int s;

    /* A stock libvirt image has its one stream only. */
    for (s = 0; s < hdr->streams && s < FUZZ_STREAMS_MAX &&
         !kvmsaveImageReaderBackendData(r, &kvmsaveStockBackend); s++) {
        g_autoptr(kvmsaveImageReader) sr = kvmsaveImageReaderOpenStream(r, s);

        if (sr)
            ignore_value(kvmsaveImageVerify(sr));
        virResetLastError();
    }
    ignore_value(kvmsaveImageVerify(r));
    virResetLastError();
}


/* libvirt's per-thread error objects need it, in the readers' threads. */
int
LLVMFuzzerInitialize(int *argc G_GNUC_UNUSED, char ***argv G_GNUC_UNUSED)
{
    if (virInitialize() < 0)
        abort();
    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(kvmsaveImageHeader) hdr = NULL;
    g_autoptr(kvmsaveImageReader) r = NULL;
    g_autofree char *path = NULL;
    size_t needed = 0;
    int fd;

    /* Half the inputs get past every checksum: mutations rarely fix one. */
    kvmsaveImageIgnoreChecksums = size > 0 && (data[size - 1] & 1);
    ignore_value(kvmsaveImageHeaderDecode(data, size, "fuzz", &needed, &hdr));
    virResetLastError();

    if ((fd = memfd_create("kvmsave-fuzz", MFD_CLOEXEC)) < 0)
        abort();
    if (size > 0 && write(fd, data, size) != (ssize_t) size)
        abort();
    path = g_strdup_printf("/proc/self/fd/%d", fd);
    if ((r = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_CACHED)))
        fuzzReadAll(r);
    virResetLastError();
    g_clear_pointer(&r, kvmsaveImageReaderFree);
    close(fd);
    return 0;
}
