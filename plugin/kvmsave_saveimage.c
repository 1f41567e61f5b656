/*
 * kvmsave_saveimage.c: save image files: the temporary file a save writes
 * and its commit, and the save-image calls
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * A save writes a temporary file next to its target and renames it over
 * the target only once complete; recovery after a killed client commits
 * or removes such files too (kvmsave_journal.c), and save-image define
 * rewrites an image the same way.
 */
#include <config.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tempname.h"

#include "kvmsave_saveimage.h"
#include "kvmsave_imagereader.h"
#include "kvmsave_job.h"
#include "kvmsave_util.h"
#include "kvmsave_xml.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.saveimage");


char *
kvmsaveTempName(const char *path)
{
    g_autofree char *dir = g_path_get_dirname(path);
    g_autofree char *tmpl = g_build_filename(dir, ".kvmsave-XXXXXX.tmp", NULL);
    struct stat sb;

    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        virReportError(VIR_ERR_INVALID_ARG,
                       _("cannot save to '%s': it is a directory, give a file name"),
                       path);
        return NULL;
    }
    if (gen_tempname(tmpl, 4, 0, GT_NOCREATE) < 0) {
        virReportSystemError(errno,
                             _("cannot create a save image in directory '%s'%s"),
                             dir, "");
        return NULL;
    }
    return g_steal_pointer(&tmpl);
}


int
kvmsaveCreateTempAt(const char *tmppath, bool direct)
{
    int fd = open(tmppath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW |
                  (direct ? O_DIRECT : 0), 0600);

    if (fd < 0) {
        g_autofree char *dir = g_path_get_dirname(tmppath);

        virReportSystemError(errno,
                             _("cannot create a save image in directory '%s'%s"),
                             dir, direct ? _(" for direct I/O (bypass cache)") : "");
    }
    return fd;
}


int
kvmsaveCreateTemp(const char *path, bool direct, char **tmppath)
{
    g_autofree char *name = kvmsaveTempName(path);
    int fd;

    if (!name || (fd = kvmsaveCreateTempAt(name, direct)) < 0)
        return -1;
    *tmppath = g_steal_pointer(&name);
    return fd;
}


int
kvmsaveCommitTemp(const char *tmppath, const char *path)
{
    if (rename(tmppath, path) < 0) {
        virReportSystemError(errno, _("cannot move the finished save image into place at '%s'"),
                             path);
        return -1;
    }
    /* Renamed is done: the image is in place and the guest must go. A
     * failed directory sync only weakens durability against a host crash. */
    if (kvmsaveSyncParentDir(path) < 0) {
        VIR_WARN("save image %s is in place, but its directory could not be synced: %s",
                 path, virGetLastErrorMessage());
        virResetLastError();
    }
    return 0;
}


int
kvmsaveSaveImageDefine(const char *path, const char *dxml, unsigned int flags)
{
    g_autoptr(kvmsaveImageReader) reader = NULL;
    g_autofree char *tmppath = NULL;
    g_autofree char *xml = NULL;
    const kvmsaveImageHeader *old;
    VIR_AUTOCLOSE fd = -1;
    kvmsaveJob *job;
    bool running;
    int ret = -1;

    if (!(reader = kvmsaveImageOpen(path, KVMSAVE_IMAGE_IO_CACHED)))
        return -1;
    old = kvmsaveImageReaderHeader(reader);
    if (!(job = kvmsaveJobBegin(old->uuid, KVMSAVE_JOB_IMAGE_DEFINE)))
        return -1;

    if (dxml && kvmsaveXMLCheckABI(old->xml, dxml) < 0)
        goto cleanup;
    if (flags & VIR_DOMAIN_SAVE_RUNNING)
        running = true;
    else if (flags & VIR_DOMAIN_SAVE_PAUSED)
        running = false;
    else
        running = old->flags & KVMSAVE_IMAGE_FLAG_RUNNING;
    if (!(xml = kvmsaveXMLForImage(dxml ? dxml : old->xml)))
        goto cleanup;

    /* A new file, renamed over the old one when complete: the old image
     * stays intact until then. A stock image stays one (where stock
     * libvirt rewrites it in place). */
    if ((fd = kvmsaveCreateTemp(path, false, &tmppath)) < 0)
        goto cleanup;
    if (kvmsaveImageReaderRewrite(reader, fd, tmppath, xml, running) < 0)
        goto cleanup;
    if (VIR_CLOSE(fd) < 0) {
        virReportSystemError(errno, _("cannot close save image '%s'"), tmppath);
        goto cleanup;
    }
    if (kvmsaveCommitTemp(tmppath, path) < 0)
        goto cleanup;
    g_clear_pointer(&tmppath, g_free);
    ret = 0;

 cleanup:
    if (tmppath)
        unlink(tmppath);
    kvmsaveJobEnd(job, ret == 0);
    return ret;
}
