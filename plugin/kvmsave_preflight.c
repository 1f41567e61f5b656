/*
 * kvmsave_preflight.c: what a restore checks before it starts QEMU
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvmsave_preflight.h"
#include "kvmsave_xml.h"
#include "domain_conf.h"
#include "virarch.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"
#include "virstring.h"
#include "kvmsave_compat.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.preflight");


/* What identifies a disk's contents without reading them. */
typedef struct {
    unsigned long long size;
    long long mtimeSec;
    long mtimeNsec;
    unsigned long long inode;
} kvmsaveDiskStat;


static int
kvmsaveDiskStatGet(const char *path, kvmsaveDiskStat *ds)
{
    struct stat sb;

    if (stat(path, &sb) < 0)
        return -1;
    ds->size = sb.st_size;
    ds->mtimeSec = sb.st_mtim.tv_sec;
    ds->mtimeNsec = sb.st_mtim.tv_nsec;
    ds->inode = sb.st_ino;
    /* A block device's size is not in its inode. */
    if (S_ISBLK(sb.st_mode)) {
        VIR_AUTOCLOSE fd = open(path, O_RDONLY | O_CLOEXEC);
        off_t end;

        if (fd < 0 || (end = lseek(fd, 0, SEEK_END)) < 0)
            return -1;
        ds->size = end;
    }
    return 0;
}


/* The local disks of @def with a path: what a save records. */
static const char *
kvmsaveDiskPath(virDomainDiskDef *disk)
{
    int type;

    if (!disk->src || !disk->src->path || !disk->dst)
        return NULL;
    /* Not a directory (type='dir'): any file added to it would count. */
    type = virStorageSourceGetActualType(disk->src);
    if (type != VIR_STORAGE_TYPE_FILE && type != VIR_STORAGE_TYPE_BLOCK)
        return NULL;
    return disk->src->path;
}


/* Fixed widths: the same disks always make the same length. */
static void
kvmsaveDiskRecordAppend(GString *out, const char *target, const char *path,
                        const kvmsaveDiskStat *ds)
{
    g_autofree char *escTarget = g_uri_escape_string(target, NULL, false);
    g_autofree char *escPath = g_uri_escape_string(path, "/", false);

    g_string_append_printf(out, "%s %020llu %020lld.%09ld %020llu %s\n",
                           escTarget, ds->size, ds->mtimeSec, ds->mtimeNsec,
                           ds->inode, escPath);
}


int
kvmsavePreflightRecordDisks(const char *domxml, char **disks)
{
    g_autoptr(virDomainDef) def = NULL;
    g_autoptr(GString) out = g_string_new(NULL);
    size_t i;

    *disks = NULL;
    if (!(def = kvmsaveXMLParseDef(domxml)))
        return -1;
    for (i = 0; i < def->ndisks; i++) {
        const char *path = kvmsaveDiskPath(def->disks[i]);
        kvmsaveDiskStat ds;

        if (!path)
            continue;
        if (kvmsaveDiskStatGet(path, &ds) < 0) {
            /* Not ours to see (a daemon's namespace): unchecked on restore. */
            VIR_WARN("cannot stat disk %s (%s) of domain %s: %s; a restore will not check it",
                     def->disks[i]->dst, path, def->name, g_strerror(errno));
            continue;
        }
        kvmsaveDiskRecordAppend(out, def->disks[i]->dst, path, &ds);
    }
    if (out->len > 0)
        *disks = g_string_free(g_steal_pointer(&out), false);
    return 0;
}


/* A disk as the DISKS field records it. */
typedef struct {
    char *target;
    char *path;
    kvmsaveDiskStat st;
} kvmsaveDiskRecord;


static void
kvmsaveDiskRecordFree(gpointer opaque)
{
    kvmsaveDiskRecord *rec = opaque;

    g_free(rec->target);
    g_free(rec->path);
    g_free(rec);
}


/* One line of the DISKS field, or NULL when it does not parse. */
static kvmsaveDiskRecord *
kvmsaveDiskRecordParse(const char *line)
{
    g_auto(GStrv) f = g_strsplit(line, " ", 0);
    g_auto(GStrv) t = NULL;
    kvmsaveDiskRecord *rec;
    kvmsaveDiskStat ds;

    if (g_strv_length(f) != 5)
        return NULL;
    t = g_strsplit(f[2], ".", 0);
    if (g_strv_length(t) != 2 ||
        virStrToLong_ullp(f[1], NULL, 10, &ds.size) < 0 ||
        virStrToLong_ll(t[0], NULL, 10, &ds.mtimeSec) < 0 ||
        virStrToLong_l(t[1], NULL, 10, &ds.mtimeNsec) < 0 ||
        virStrToLong_ullp(f[3], NULL, 10, &ds.inode) < 0)
        return NULL;
    rec = g_new0(kvmsaveDiskRecord, 1);
    rec->st = ds;
    if (!(rec->target = g_uri_unescape_string(f[0], NULL)) ||
        !(rec->path = g_uri_unescape_string(f[4], NULL))) {
        kvmsaveDiskRecordFree(rec);
        return NULL;
    }
    return rec;
}


/* The records of DISKS field @disks; NULL with *bad pointing at a copy of
 * the first line that does not parse. */
static GPtrArray *
kvmsaveDiskRecordsParse(const char *disks, char **bad)
{
    g_auto(GStrv) lines = g_strsplit(disks, "\n", 0);
    g_autoptr(GPtrArray) recs = g_ptr_array_new_with_free_func(kvmsaveDiskRecordFree);
    size_t i;

    for (i = 0; lines[i]; i++) {
        kvmsaveDiskRecord *rec;

        if (!*lines[i])
            continue;
        if (!(rec = kvmsaveDiskRecordParse(lines[i]))) {
            *bad = g_strdup(lines[i]);
            return NULL;
        }
        g_ptr_array_add(recs, rec);
    }
    return g_steal_pointer(&recs);
}


int
kvmsavePreflightRecordDisksAgain(const char *disks, char **again)
{
    g_autoptr(GString) out = g_string_new(NULL);
    g_autoptr(GPtrArray) recs = NULL;
    g_autofree char *bad = NULL;
    size_t i;

    if (!(recs = kvmsaveDiskRecordsParse(disks, &bad))) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       _("invalid disk record '%s'"), bad);
        return -1;
    }
    for (i = 0; i < recs->len; i++) {
        kvmsaveDiskRecord *rec = g_ptr_array_index(recs, i);
        kvmsaveDiskStat now;

        /* Keep the first record of a disk that cannot be seen now. */
        if (kvmsaveDiskStatGet(rec->path, &now) < 0)
            VIR_WARN("cannot stat disk %s (%s) after the migration: %s; its record from before it is kept",
                     rec->target, rec->path, g_strerror(errno));
        else
            rec->st = now;
        kvmsaveDiskRecordAppend(out, rec->target, rec->path, &rec->st);
    }
    *again = g_string_free(g_steal_pointer(&out), false);
    return 0;
}


/* @sec.@nsec as UTC, to the nanosecond: two writes may share a second. */
static char *
kvmsaveFormatMtime(long long sec, long nsec)
{
    g_autoptr(GDateTime) t = g_date_time_new_from_unix_utc(sec);
    g_autofree char *s = t ? g_date_time_format(t, "%Y-%m-%d %H:%M:%S") : NULL;

    return g_strdup_printf("%s.%09ld UTC", NULLSTR(s), nsec);
}


char *
kvmsavePreflightDescribeDisks(const char *disks)
{
    g_autoptr(GString) out = g_string_new(NULL);
    g_autoptr(GPtrArray) recs = NULL;
    g_autofree char *bad = NULL;
    size_t i;

    if (!(recs = kvmsaveDiskRecordsParse(disks, &bad)))
        return NULL;
    for (i = 0; i < recs->len; i++) {
        kvmsaveDiskRecord *rec = g_ptr_array_index(recs, i);
        g_autofree char *when = kvmsaveFormatMtime(rec->st.mtimeSec,
                                                   rec->st.mtimeNsec);

        g_string_append_printf(out, _("%s '%s': %llu bytes, modified %s, inode %llu\n"),
                               rec->target, rec->path, rec->st.size, when,
                               rec->st.inode);
    }
    return g_string_free(g_steal_pointer(&out), false);
}


/* Why the disk at @path, saved at @savedPath, is not what was saved, or
 * NULL when it is. */
static char *
kvmsaveDiskChange(const char *path, const char *savedPath,
                  const kvmsaveDiskStat *saved)
{
    kvmsaveDiskStat now;

    if (kvmsaveDiskStatGet(path, &now) < 0)
        return g_strdup_printf(_("it cannot be read (%s)"), g_strerror(errno));
    if (now.inode != saved->inode) {
        if (STREQ(path, savedPath))
            return g_strdup_printf(_("it is another file now (inode %llu, saved %llu)"),
                                   now.inode, saved->inode);
        return g_strdup_printf(_("it is not the file saved as '%s' (inode %llu, saved %llu)"),
                               savedPath, now.inode, saved->inode);
    }
    if (now.size != saved->size)
        return g_strdup_printf(_("its size is %llu bytes, saved %llu"),
                               now.size, saved->size);
    if (now.mtimeSec != saved->mtimeSec || now.mtimeNsec != saved->mtimeNsec) {
        g_autofree char *when = kvmsaveFormatMtime(now.mtimeSec, now.mtimeNsec);
        g_autofree char *then = kvmsaveFormatMtime(saved->mtimeSec,
                                                   saved->mtimeNsec);

        return g_strdup_printf(_("it was modified at %s, after the save left it at %s"),
                               when, then);
    }
    return NULL;
}


static const char *
kvmsaveDefDiskPath(virDomainDef *def, const char *target)
{
    size_t i;

    for (i = 0; i < def->ndisks; i++) {
        if (STREQ_NULLABLE(def->disks[i]->dst, target))
            return kvmsaveDiskPath(def->disks[i]);
    }
    return NULL;
}


static int
kvmsavePreflightDisks(virDomainDef *def, const char *disks, const char *image)
{
    g_autoptr(GPtrArray) recs = NULL;
    g_autofree char *bad = NULL;
    size_t i;

    if (!(recs = kvmsaveDiskRecordsParse(disks, &bad))) {
        virReportError(VIR_ERR_OPERATION_FAILED,
                       _("save image '%s' has a corrupt header: invalid disk record '%s'"),
                       image, bad);
        return -1;
    }
    for (i = 0; i < recs->len; i++) {
        kvmsaveDiskRecord *rec = g_ptr_array_index(recs, i);
        g_autofree char *why = NULL;
        const char *path;

        /* The file the guest will use: an alternate XML may move it. */
        if (!(path = kvmsaveDefDiskPath(def, rec->target)))
            path = rec->path;
        if ((why = kvmsaveDiskChange(path, rec->path, &rec->st))) {
            virReportError(VIR_ERR_OPERATION_INVALID,
                           _("disk %s ('%s') has changed since the guest was saved to '%s': %s; the guest restored over a changed disk would corrupt it. Put the disk back as it was saved, or force the restore if the change is safe (see FORCING A RESTORE in kvmsave(7))"),
                           rec->target, path, image, why);
            return -1;
        }
    }
    return 0;
}


/* Whether CPU mode @mode is supported and, for a custom CPU, whether
 * @model is among the models domain capabilities @domcaps list. */
static bool
kvmsaveDomCapsHas(const char *domcaps, const char *mode, const char *model)
{
    g_autofree char *expr = NULL;
    g_autofree char *val = NULL;

    if (!model) {
        expr = g_strdup_printf("/domainCapabilities/cpu/mode[@name='%s']/@supported",
                               mode);
        val = kvmsaveXMLGetString(domcaps, "domainCapabilities", expr);
        return STREQ_NULLABLE(val, "yes");
    }
    /* A name XPath cannot quote is no model QEMU has. */
    if (strchr(model, '\'') || strchr(model, '"'))
        return false;
    expr = g_strdup_printf("/domainCapabilities/cpu/mode[@name='%s']/model[.='%s']",
                           mode, model);
    val = kvmsaveXMLGetString(domcaps, "domainCapabilities", expr);
    return !!val;
}


static int
kvmsavePreflightCPU(virConnectPtr inner, virDomainDef *def,
                    const kvmsaveImageHeader *hdr, const char *domcaps,
                    const char *image)
{
    virCPUDef *cpu = def->cpu;
    const char *mode;

    if (!cpu)
        return 0;
    mode = virCPUModeTypeToString(cpu->mode);
    if (cpu->mode == VIR_CPU_MODE_CUSTOM) {
        if (!cpu->model || kvmsaveDomCapsHas(domcaps, mode, cpu->model))
            return 0;
        virReportError(VIR_ERR_CONFIG_UNSUPPORTED,
                       _("this host's QEMU cannot provide CPU model '%s' of the guest saved to '%s' (saved with QEMU %s); restore the image on a host that has it"),
                       cpu->model, image, NULLSTR(hdr->qemuVersion));
        return -1;
    }
    if (!kvmsaveDomCapsHas(domcaps, mode, NULL)) {
        virReportError(VIR_ERR_CONFIG_UNSUPPORTED,
                       _("this host cannot provide CPU mode '%s' of the guest saved to '%s' for a '%s' domain; restore the image on a host that has it"),
                       mode, image, virDomainVirtTypeToString(def->virtType));
        return -1;
    }
    /* The guest saw the saving host's very CPU: only the same one will do. */
    if (cpu->mode == VIR_CPU_MODE_HOST_PASSTHROUGH && hdr->hostCPU) {
        g_autofree char *caps = NULL;
        g_autofree char *here = NULL;

        if (!(caps = virConnectGetCapabilities(inner)))
            return -1;
        here = kvmsaveXMLGetHostCPUModel(caps);
        if (STRNEQ_NULLABLE(here, hdr->hostCPU)) {
            virReportError(VIR_ERR_CONFIG_UNSUPPORTED,
                           _("the guest saved to '%s' uses the host's own CPU (host-passthrough), which was a '%s'; this host's is a '%s'; restore the image on a host with the same CPU"),
                           image, hdr->hostCPU, NULLSTR(here));
            return -1;
        }
    }
    return 0;
}


int
kvmsavePreflightCheck(virConnectPtr inner, const kvmsaveImageHeader *hdr,
                      const char *domxml, const char *path,
                      bool forceDisks)
{
    g_autoptr(virDomainDef) def = NULL;
    g_autofree char *domcaps = NULL;

    if (!(def = kvmsaveXMLParseDef(domxml)))
        return -1;

    /* libvirt answers for this very emulator, arch, machine and type, and
     * fails when the machine type is not among those QEMU has. */
    if (!(domcaps = virConnectGetDomainCapabilities(inner, def->emulator,
                                                     virArchToString(def->os.arch),
                                                     def->os.machine,
                                                     virDomainVirtTypeToString(def->virtType),
                                                     0))) {
        g_autofree char *why = g_strdup(virGetLastErrorMessage());

        virReportError(VIR_ERR_CONFIG_UNSUPPORTED,
                       _("this host cannot provide machine type '%s' of the guest saved to '%s' (saved with QEMU %s): %s; restore the image on a host that has it"),
                       NULLSTR(def->os.machine), path,
                       NULLSTR(hdr->qemuVersion), why);
        return -1;
    }
    if (kvmsavePreflightCPU(inner, def, hdr, domcaps, path) < 0)
        return -1;

    if (!hdr->disks)
        return 0;
    if (forceDisks) {
        VIR_WARN("restoring %s from %s without checking its disks (forced)",
                 def->name, path);
        return 0;
    }
    return kvmsavePreflightDisks(def, hdr->disks, path);
}
