/*
 * kvmsave-image: inspect and verify kvmsave save images without restoring
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 *   kvmsave-image info FILE     header summary
 *   kvmsave-image verify FILE   check every checksum of the image (the
 *                               page index's too)
 *   kvmsave-image xml FILE      the domain XML kept in the image
 *
 * Images of stock libvirt are read too; they carry no checksums, so
 * verify checks what can be: header, XML, the stream decoded to its end
 * (a sparse image's read to its end). For sparse images, info also
 * shows where QEMU put each RAM block's pages and the devices' state.
 */
#include <config.h>

#include <fcntl.h>
#include <libintl.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>

#include "kvmsave_decompress.h"
#include "kvmsave_imagereader.h"
#include "kvmsave_preflight.h"
#include "kvmsave_stock.h"
#include "kvmsave_vmstream.h"
#include "virerror.h"
#include "virfile.h"
#include "viruuid.h"

static void
printError(const char *file)
{
    fprintf(stderr, "kvmsave-image: %s: %s\n", file, virGetLastErrorMessage());
}


/* The RAM blocks and device state of a mapped-ram stream in
 * [@start, @end) of the image @r reads. */
static void
printMappedLayout(kvmsaveImageReader *r, uint64_t start, uint64_t end)
{
    g_autofree char *path = kvmsaveImageReaderSelfPath(r);
    g_autoptr(kvmsaveVMStream) vm = NULL;
    VIR_AUTOCLOSE fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t i;

    if (fd < 0 || !(vm = kvmsaveVMStreamParse(fd, path, start, end, NULL, NULL))) {
        printf(_("RAM:           the layout cannot be read: %s\n"),
               fd < 0 ? g_strerror(errno) : virGetLastErrorMessage());
        virResetLastError();
        return;
    }
    for (i = 0; i < vm->nblocks; i++)
        printf(_("RAM block:     %s, %llu bytes, pages at offset %llu\n"),
               vm->blocks[i].name, (unsigned long long) vm->blocks[i].length,
               (unsigned long long) vm->blocks[i].pagesOffset);
    printf(_("device state:  %llu bytes at offset %llu\n"),
           (unsigned long long) (vm->devEnd - vm->devStart),
           (unsigned long long) vm->devStart);
}


static void
printInfo(kvmsaveImageReader *r)
{
    const kvmsaveImageHeader *hdr = kvmsaveImageReaderHeader(r);
    const kvmsaveImageTrailer *tr = kvmsaveImageReaderTrailer(r);
    char uuid[VIR_UUID_STRING_BUFLEN];
    g_autoptr(GDateTime) created = g_date_time_new_from_unix_utc(hdr->created);
    g_autoptr(GDateTime) completed = g_date_time_new_from_unix_utc(tr->completed);
    g_autofree char *createdStr = created ? g_date_time_format(created, "%Y-%m-%dT%H:%M:%SZ") : NULL;
    g_autofree char *completedStr = completed ? g_date_time_format(completed, "%Y-%m-%dT%H:%M:%SZ") : NULL;

    virUUIDFormat(hdr->uuid, uuid);
    printf(_("format:        kvmsave image %u.%u\n"), hdr->major, hdr->minor);
    printf(_("domain:        %s\n"), NULLSTR(hdr->name));
    printf(_("uuid:          %s\n"), uuid);
    printf(_("state:         %s on restore\n"),
           hdr->flags & KVMSAVE_IMAGE_FLAG_RUNNING ? _("running") : _("paused"));
    printf(_("created:       %s\n"), NULLSTR(createdStr));
    printf(_("completed:     %s\n"), NULLSTR(completedStr));
    printf(_("QEMU:          %s\n"), NULLSTR(hdr->qemuVersion));
    printf(_("machine type:  %s\n"), NULLSTR(hdr->machine));
    printf(_("host CPU:      %s\n"), NULLSTR(hdr->hostCPU));
    printf(_("written by:    %s\n"), NULLSTR(hdr->producer));
    if (hdr->disks) {
        g_autofree char *disks = kvmsavePreflightDescribeDisks(hdr->disks);
        g_auto(GStrv) lines = g_strsplit(disks ? disks : _("(corrupt)\n"), "\n", 0);
        size_t i;

        for (i = 0; lines[i] && *lines[i]; i++)
            printf(_("disk:          %s\n"), lines[i]);
    }
    printf(_("header:        %u bytes, crc32c %08x\n"), hdr->headerSize, hdr->crc);
    if (hdr->mappedOffset) {
        printf(_("stream:        %llu bytes at offset %llu, checksummed in %llu blocks of %u bytes\n"),
               (unsigned long long) tr->streamBytes,
               (unsigned long long) hdr->mappedOffset,
               (unsigned long long) tr->chunks, hdr->mappedBlock);
        printf(_("layout:        sparse: QEMU's mapped-ram, saved with %u multifd channels; QEMU reads the file itself, which needs QEMU 9.0 or later\n"),
               hdr->mappedChannels);
        printMappedLayout(r, hdr->mappedOffset, hdr->mappedOffset + tr->streamBytes);
        return;
    }
    printf(_("stream:        %llu bytes in %llu chunks of up to %u bytes\n"),
           (unsigned long long) tr->streamBytes, (unsigned long long) tr->chunks,
           hdr->chunkSize);
    if (hdr->streams > 1)
        printf(_("streams:       %u (QEMU's main stream and %u multifd channels)\n"),
               hdr->streams, hdr->streams - 1);
    else
        printf("%s", _("streams:       1\n"));
    if (hdr->indexLen)
        printf(_("page index:    %llu bytes in room for %llu, crc32c %08x\n"),
               (unsigned long long) hdr->indexLen,
               (unsigned long long) hdr->indexReserve, hdr->indexCrc);
    else if (hdr->indexReserve)
        printf(_("page index:    none (room for %llu bytes)\n"),
               (unsigned long long) hdr->indexReserve);
    else
        printf("%s", _("page index:    none\n"));
}


static void
printStockInfo(kvmsaveImageReader *r, kvmsaveStockImage *stock)
{
    const kvmsaveImageHeader *hdr = kvmsaveImageReaderHeader(r);
    const kvmsaveStockInfo *info = kvmsaveStockImageInfo(stock);
    const char *compression = kvmsaveCompressToString(info->compressed);
    char uuid[VIR_UUID_STRING_BUFLEN];
    g_autoptr(GDateTime) mtime =
        g_date_time_new_from_unix_utc(kvmsaveImageReaderTrailer(r)->completed);
    g_autofree char *mtimeStr = mtime ? g_date_time_format(mtime, "%Y-%m-%dT%H:%M:%SZ") : NULL;

    virUUIDFormat(hdr->uuid, uuid);
    if (info->swapped)
        printf(_("format:        stock libvirt save image, version %u, of the other byte order\n"),
               info->version);
    else
        printf(_("format:        stock libvirt save image, version %u\n"), info->version);
    printf(_("domain:        %s\n"), NULLSTR(hdr->name));
    printf(_("uuid:          %s\n"), uuid);
    printf(_("state:         %s on restore\n"),
           hdr->flags & KVMSAVE_IMAGE_FLAG_RUNNING ? _("running") : _("paused"));
    printf(_("modified:      %s\n"), NULLSTR(mtimeStr));
    printf(_("machine type:  %s\n"), NULLSTR(hdr->machine));
    if (info->cookie)
        printf(_("XML area:      %u bytes, domain XML and save cookie\n"), info->dataLen);
    else
        printf(_("XML area:      %u bytes, domain XML\n"), info->dataLen);
    printf(_("stream:        %llu bytes at offset %llu, %s\n"),
           (unsigned long long) info->streamSize,
           (unsigned long long) info->streamOffset, compression);
    if (info->compressed == KVMSAVE_COMPRESS_SPARSE) {
        printf("%s", _("layout:        QEMU's mapped-ram (save_image_format \"sparse\"): QEMU reads the file itself, which needs QEMU 9.0 or later\n"));
        printMappedLayout(r, info->streamOffset, info->streamOffset + info->streamSize);
    }
    if (info->compressed == KVMSAVE_COMPRESS_RAW ||
        info->compressed == KVMSAVE_COMPRESS_SPARSE)
        printf("%s", _("checksums:     none: stock libvirt images carry none, so silent corruption goes unnoticed\n"));
    else
        printf(_("checksums:     none of the image's own; %s's checks of its stream are made by verify and restore\n"),
               compression);
}


static void
printStockVerified(const char *file, kvmsaveStockImage *stock)
{
    const kvmsaveStockInfo *info = kvmsaveStockImageInfo(stock);

    if (info->compressed == KVMSAVE_COMPRESS_SPARSE)
        printf(_("%s: OK as far as it can be checked: header and domain XML are sound, QEMU's mapped-ram stream begins as it should and all of its %llu bytes can be read, but stock libvirt images carry no checksums, and only QEMU can check that stream's layout\n"),
               file, (unsigned long long) info->decoded);
    else if (info->compressed == KVMSAVE_COMPRESS_RAW)
        printf(_("%s: OK as far as it can be checked: header and domain XML are sound and QEMU's stream (%llu bytes) begins as it should, but stock libvirt images carry no checksums, so corruption inside it cannot be detected\n"),
               file, (unsigned long long) info->decoded);
    else
        printf(_("%s: OK as far as it can be checked: header and domain XML are sound and the %s stream decompresses to its end with its own checks passed (%llu bytes of QEMU's stream), but stock libvirt images carry no checksums of their own\n"),
               file, kvmsaveCompressToString(info->compressed),
               (unsigned long long) info->decoded);
}


int
main(int argc, char **argv)
{
    g_autoptr(kvmsaveImageReader) r = NULL;
    kvmsaveStockImage *stock;
    const char *cmd;
    const char *file;
    /* ./run points this at the build tree's catalogs (uninstalled use). */
    const char *localedir = getenv("KVMSAVE_LOCALEDIR");

    setlocale(LC_ALL, "");
    bindtextdomain(PACKAGE, localedir && *localedir ? localedir : LOCALEDIR);
    textdomain(PACKAGE);

    if (argc != 3 ||
        (STRNEQ(argv[1], "info") && STRNEQ(argv[1], "verify") &&
         STRNEQ(argv[1], "xml"))) {
        fprintf(stderr, _("usage: %s info|verify|xml FILE\n"), argv[0]);
        return 2;
    }
    cmd = argv[1];
    file = argv[2];
    if (virInitialize() < 0) {
        fprintf(stderr, "%s", _("kvmsave-image: cannot initialize libvirt\n"));
        return 1;
    }

    if (!(r = kvmsaveImageOpen(file, KVMSAVE_IMAGE_IO_CACHED))) {
        printError(file);
        return 1;
    }
    stock = kvmsaveImageReaderBackendData(r, &kvmsaveStockBackend);
    if (STREQ(cmd, "info")) {
        if (stock)
            printStockInfo(r, stock);
        else
            printInfo(r);
    } else if (STREQ(cmd, "xml")) {
        fputs(kvmsaveImageReaderHeader(r)->xml, stdout);
    } else {
        if (kvmsaveImageVerify(r) < 0) {
            printError(file);
            return 1;
        }
        if (stock)
            printStockVerified(file, stock);
        else if (kvmsaveImageReaderMappedTable(r))
            printf(_("%s: OK, a sparse stream in %llu blocks, every checksum verified\n"),
                   file, (unsigned long long) kvmsaveImageReaderTrailer(r)->chunks);
        else if (kvmsaveImageReaderHeader(r)->indexLen)
            printf(_("%s: OK, %llu chunks and the page index, every checksum verified\n"),
                   file, (unsigned long long) kvmsaveImageReaderTrailer(r)->chunks);
        else
            printf(_("%s: OK, %llu chunks, every checksum verified\n"), file,
                   (unsigned long long) kvmsaveImageReaderTrailer(r)->chunks);
    }
    return 0;
}
