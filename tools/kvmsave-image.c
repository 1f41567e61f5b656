/*
 * kvmsave-image: inspect and verify kvmsave save images without restoring
 *
 *   kvmsave-image info FILE     header summary
 *   kvmsave-image verify FILE   check every checksum of the image
 *   kvmsave-image xml FILE      the domain XML kept in the image
 */
#include <config.h>

#include <libintl.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>

#include "kvmsave_image.h"
#include "kvmsave_preflight.h"
#include "virerror.h"
#include "viruuid.h"

static void
printError(const char *file)
{
    fprintf(stderr, "kvmsave-image: %s: %s\n", file, virGetLastErrorMessage());
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
    printf(_("stream:        %llu bytes in %llu chunks of up to %u bytes\n"),
           (unsigned long long) tr->streamBytes, (unsigned long long) tr->chunks,
           hdr->chunkSize);
    if (hdr->streams > 1)
        printf(_("streams:       %u (QEMU's main stream and %u multifd channels)\n"),
               hdr->streams, hdr->streams - 1);
    else
        printf("%s", _("streams:       1\n"));
}


int
main(int argc, char **argv)
{
    g_autoptr(kvmsaveImageReader) r = NULL;
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
    if (STREQ(cmd, "info")) {
        printInfo(r);
    } else if (STREQ(cmd, "xml")) {
        fputs(kvmsaveImageReaderHeader(r)->xml, stdout);
    } else {
        if (kvmsaveImageVerify(r) < 0) {
            printError(file);
            return 1;
        }
        printf(_("%s: OK, %llu chunks, every checksum verified\n"), file,
               (unsigned long long) kvmsaveImageReaderTrailer(r)->chunks);
    }
    return 0;
}
