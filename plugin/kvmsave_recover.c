/*
 * kvmsave_recover.c: finishing or undoing the job of a killed client
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * A journal (kvmsave_journal.c) whose lock can be taken is the record of
 * a job whose client died. A save that had not completed its image is
 * undone (the guest resumed, the temporary file removed); one whose image
 * was complete is finished (renamed into place, the guest stopped). A
 * restore whose state was not all loaded stops the half-restored guest; a
 * loaded one is resumed as the restore would have. See
 * docs/architecture.md, "Recovery after a killed client".
 */
#include <config.h>

#include <ftw.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvmsave_recover.h"
#include "kvmsave_recoverpriv.h"
#include "kvmsave_imagereader.h"
#include "kvmsave_lazy.h"
#include "kvmsave_monitor.h"
#include "kvmsave_sparse.h"
#include "kvmsave_multifd.h"
#include "kvmsave_saveimage.h"
#include "kvmsave_util.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"
#include "viruuid.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.journal");


/* The fields of a journal, or NULL if it is empty, torn or unreadable. */
static GHashTable *
kvmsaveJournalParse(int fd)
{
    g_autoptr(GHashTable) kv = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                     g_free, g_free);
    g_autofree char *buf = NULL;
    g_auto(GStrv) lines = NULL;
    struct stat sb;
    const char *body;
    unsigned int crc;
    size_t blen;
    ssize_t n;
    size_t i;

    if (fstat(fd, &sb) < 0 || sb.st_size == 0 || sb.st_size > 1024 * 1024)
        return NULL;
    buf = g_new0(char, sb.st_size + 1);
    if ((n = pread(fd, buf, sb.st_size, 0)) != sb.st_size ||
        sscanf(buf, "check=%08x %zu\n", &crc, &blen) != 2 ||
        !(body = strchr(buf, '\n')) ||
        strlen(++body) != blen || kvmsaveCrc32c(0, body, blen) != crc)
        return NULL;
    lines = g_strsplit(body, "\n", -1);
    for (i = 0; lines[i]; i++) {
        char *eq = strchr(lines[i], '=');

        if (!eq)
            continue;
        *eq = '\0';
        g_hash_table_replace(kv, g_strdup(lines[i]), g_strcompress(eq + 1));
    }
    return g_steal_pointer(&kv);
}


static long long
kvmsaveJournalInt(GHashTable *kv, const char *key)
{
    const char *v = g_hash_table_lookup(kv, key);

    return v ? g_ascii_strtoll(v, NULL, 10) : -1;
}


/* The guest's QEMU, if the domain still runs one. */
static virDomainPtr
kvmsaveJournalActiveDomain(kvmsaveConn *priv, GHashTable *kv)
{
    const char *uuidstr = g_hash_table_lookup(kv, "uuid");
    unsigned char uuid[VIR_UUID_BUFLEN];
    virDomainPtr dom;

    if (!uuidstr || virUUIDParse(uuidstr, uuid) < 0)
        return NULL;
    if (!(dom = virDomainLookupByUUID(priv->inner, uuid))) {
        virResetLastError();
        return NULL;
    }
    if (virDomainIsActive(dom) != 1) {
        virResetLastError();
        virObjectUnref(dom);
        return NULL;
    }
    return dom;
}


static bool
kvmsaveJournalIsPaused(virDomainPtr dom)
{
    int state;

    if (virDomainGetState(dom, &state, NULL, 0) < 0) {
        virResetLastError();
        return false;
    }
    return state == VIR_DOMAIN_PAUSED;
}


/* A save: before its image was complete, undo it (migration cancelled,
 * the guest resumed if the save paused it, the temporary file removed);
 * once complete ("committed"), finish it (image in place, guest stopped). */
static void
kvmsaveJournalRecoverSave(kvmsaveConn *priv, GHashTable *kv, const char *phase)
{
    const char *name = g_hash_table_lookup(kv, "name");
    const char *target = g_hash_table_lookup(kv, "target");
    const char *temp = g_hash_table_lookup(kv, "temp");
    g_autoptr(virDomain) dom = kvmsaveJournalActiveDomain(priv, kv);
    bool committed = STREQ(phase, "committed");

    if (committed && temp && target && access(temp, F_OK) == 0) {
        g_autoptr(kvmsaveImageReader) r = kvmsaveImageOpen(temp, KVMSAVE_IMAGE_IO_CACHED);

        if (!r || kvmsaveCommitTemp(temp, target) < 0) {
            VIR_WARN("interrupted save of guest %s: its finished image %s cannot be put in place (%s); undoing the save",
                     NULLSTR(name), temp, virGetLastErrorMessage());
            virResetLastError();
            committed = false;
        }
    }

    if (committed) {
        if (dom && virDomainDestroy(dom) < 0) {
            VIR_WARN("interrupted save of guest %s: the image %s is complete, but the guest cannot be stopped: %s",
                     NULLSTR(name), NULLSTR(target), virGetLastErrorMessage());
            virResetLastError();
            return;
        }
        VIR_WARN("recovered an interrupted save of guest %s: the image %s is complete, the guest %s",
                 NULLSTR(name), NULLSTR(target),
                 dom ? "was stopped" : "was already stopped");
        return;
    }

    if (temp && unlink(temp) < 0 && errno != ENOENT)
        VIR_WARN("cannot remove %s: %s", temp, g_strerror(errno));
    if (dom && STRNEQ(phase, "prepared")) {
        if (kvmsaveMonitorMigrateCancel(dom) < 0 ||
            kvmsaveMonitorMigrateWaitEnd(dom) < 0)
            VIR_WARN("interrupted save of guest %s: %s",
                     NULLSTR(name), virGetLastErrorMessage());
        virResetLastError();
        /* A sparse save's file, which QEMU would hold open unlinked, and
         * its capabilities, which QEMU would keep. */
        if (temp)
            ignore_value(kvmsaveMonitorRemoveFdsetsOf(dom, temp));
        if (kvmsaveJournalInt(kv, "sparse") == 1)
            ignore_value(kvmsaveSparseReset(dom, kvmsaveSparseDomainVersion(dom)));
        virResetLastError();
        if (kvmsaveJournalInt(kv, "paused") == 1 && kvmsaveJournalIsPaused(dom) &&
            virDomainResume(dom) < 0) {
            VIR_WARN("interrupted save of guest %s: cannot resume the guest: %s",
                     NULLSTR(name), virGetLastErrorMessage());
            virResetLastError();
            return;
        }
    }
    VIR_WARN("recovered an interrupted save of guest %s: no image was made, the temporary file is removed, the guest %s",
             NULLSTR(name), dom ? "runs on as before" : "is not running");
}


/* libvirt's machine name for guest @name of the embedded root: the
 * characters virDomainDriverGenerateMachineName keeps. */
static void
kvmsaveJournalMachineNameAppend(GString *buf, const char *name)
{
    bool skip = true;

    for (; *name && buf->len < 64; name++) {
        if (*name == '.' || *name == '-') {
            if (!skip)
                g_string_append_c(buf, *name);
            skip = true;
        } else if (g_ascii_isalnum(*name)) {
            g_string_append_c(buf, *name);
            skip = false;
        }
    }
    while (buf->len > 0 && strchr("-.", buf->str[buf->len - 1]))
        g_string_truncate(buf, buf->len - 1);
}


static int
kvmsaveJournalRmdir(const char *path, const struct stat *sb G_GNUC_UNUSED,
                    int type, struct FTW *ftw G_GNUC_UNUSED)
{
    if (type == FTW_DP)
        ignore_value(rmdir(path));      /* fails while a task is in it */
    return 0;
}


/* The glob of the cgroups of the embedded driver's guest @machine (a
 * machine name's tail, kvmsaveJournalMachineNameAppend) under @cgroot.
 * libvirt without systemd-machined on the system bus makes them as
 * virCgroupNewMachineManual does: partition "machine", group
 * "qemu-embed-HASH-ID-NAME.libvirt-qemu" (virDomainDriverGenerateMachineName),
 * in every controller's hierarchy on cgroup v1, once in the unified
 * hierarchy on cgroup v2, whose root alone has cgroup.controllers. A
 * machined scope (machine.slice) is systemd's, so it is left alone. */
static char *
kvmsaveJournalCgroupGlob(const char *cgroot, const char *root,
                         const char *machine)
{
    g_autofree char *hash = g_compute_checksum_for_string(G_CHECKSUM_SHA256,
                                                          root, -1);
    g_autofree char *controllers = g_build_filename(cgroot, "cgroup.controllers",
                                                    NULL);
    bool unified = access(controllers, F_OK) == 0;

    return g_strdup_printf("%s%s/machine/qemu-embed-%.8s-*-%s.libvirt-qemu",
                           cgroot, unified ? "" : "/*", hash, machine);
}


/* libvirt 9.0 makes a cgroup v1 cpuset group with mkdir and only then
 * copies its parent's CPUs and memory nodes into it. A client killed in
 * between leaves an empty cpuset that the next start of the guest reuses
 * as it is, and fails ("Unable to write to '.../tasks': No space left on
 * device"). The kill may come while QEMU already runs (its vcpu groups
 * are made after it starts), and libvirt's destroy leaves such a group
 * too. cgroup v2 has no such failure (an empty cpuset.cpus takes the
 * parent's), but the killed start's groups stay there all the same. Once
 * the guest is known not to run, its groups go. */
void
kvmsaveRecoverRemoveStaleCgroups(const char *cgroot, const char *root,
                                 const char *name)
{
    g_autoptr(GString) machine = g_string_new(NULL);
    g_autofree char *pattern = NULL;
    glob_t g = { 0 };
    size_t i;

    if (!root || !name)
        return;
    kvmsaveJournalMachineNameAppend(machine, name);
    pattern = kvmsaveJournalCgroupGlob(cgroot, root, machine->str);
    if (glob(pattern, GLOB_NOSORT | GLOB_ONLYDIR, NULL, &g) == 0) {
        for (i = 0; i < g.gl_pathc; i++) {
            ignore_value(nftw(g.gl_pathv[i], kvmsaveJournalRmdir, 8,
                              FTW_DEPTH | FTW_PHYS));
            if (access(g.gl_pathv[i], F_OK) < 0)
                VIR_WARN("removed the cgroup %s that a killed start of guest %s left",
                         g.gl_pathv[i], name);
        }
    }
    globfree(&g);
}


static void
kvmsaveJournalRemoveStaleCgroups(kvmsaveConn *priv, const char *name)
{
    kvmsaveRecoverRemoveStaleCgroups(KVMSAVE_CGROUP_ROOT, priv->root, name);
}


/* The QEMU a restore journal names (kvmsaveRestoreHoldQemu) if it is
 * still that process: a pidfd, else -1. */
static int
kvmsaveJournalQemuPidfd(GHashTable *kv)
{
    return kvmsaveMultifdPidfdOf(kvmsaveJournalInt(kv, "qemupid"),
                                 kvmsaveJournalInt(kv, "qemustart"));
}


/* A restore killed while its QEMU loaded multifd streams: once the
 * streams are cut, QEMU's main thread may wait forever for channels that
 * are gone, its main loop stopped (QEMU 7.2 to 10.0: a failing channel
 * does not post the semaphore multifd_recv_sync_main waits on). libvirt's
 * reconnect would wait 30 s for a monitor that never answers, and its
 * destroy 10 s more for SIGTERM. Such a QEMU never ran the guest (a
 * restore resumes it only after journalling "loaded"), so it is killed
 * before the reconnect is waited for; the recovery then finds the guest
 * shut off. */
void
kvmsaveRecoverKillLoader(const char *ours, const char *path, int fd)
{
    g_autoptr(GHashTable) kv = kvmsaveJournalParse(fd);
    const char *kind = kv ? g_hash_table_lookup(kv, "kind") : NULL;
    const char *phase = kv ? g_hash_table_lookup(kv, "phase") : NULL;
    const char *inner = kv ? g_hash_table_lookup(kv, "inner") : NULL;
    VIR_AUTOCLOSE pidfd = -1;

    if (!kind || !phase || STRNEQ(kind, "restore") || STREQ(phase, "loaded") ||
        (inner && STRNEQ(inner, ours)) || (pidfd = kvmsaveJournalQemuPidfd(kv)) < 0)
        return;
    if (kvmsaveMultifdKillIncoming(pidfd) == 0)
        VIR_WARN("killed QEMU process %s of the interrupted restore of %s from %s: it was loading the image and never ran the guest (%s)",
                 (const char *) g_hash_table_lookup(kv, "qemupid"),
                 NULLSTR((const char *) g_hash_table_lookup(kv, "name")),
                 NULLSTR((const char *) g_hash_table_lookup(kv, "image")), path);
    else
        VIR_WARN("cannot kill QEMU process %s of the interrupted restore from %s: %s",
                 (const char *) g_hash_table_lookup(kv, "qemupid"),
                 NULLSTR((const char *) g_hash_table_lookup(kv, "image")),
                 g_strerror(errno));
}


/* A restore: a guest whose state was not all loaded is stopped (the image
 * was only ever read); a loaded one is resumed as the restore would have. */
static void
kvmsaveJournalRecoverRestore(kvmsaveConn *priv, GHashTable *kv, const char *phase)
{
    const char *image = g_hash_table_lookup(kv, "image");
    g_autoptr(virDomain) dom = kvmsaveJournalActiveDomain(priv, kv);
    long long domid = kvmsaveJournalInt(kv, "domid");
    const char *name = dom ? virDomainGetName(dom) : NULL;
    VIR_AUTOCLOSE pidfd = kvmsaveJournalQemuPidfd(kv);

    if (!dom) {
        kvmsaveJournalRemoveStaleCgroups(priv, g_hash_table_lookup(kv, "name"));
        VIR_WARN("recovered an interrupted restore from %s: the guest is not running, the image is intact",
                 NULLSTR(image));
        return;
    }
    /* Only the QEMU this restore started (a "starting" restore died
     * before it knew the ID: the guest is then paused waiting for it). */
    if (domid >= 0 ? virDomainGetID(dom) != (unsigned int) domid :
        !kvmsaveJournalIsPaused(dom)) {
        VIR_WARN("interrupted restore from %s: guest %s runs, but not from this restore; left alone",
                 NULLSTR(image), name);
        return;
    }
    if (STREQ(phase, "loaded")) {
        if (kvmsaveJournalInt(kv, "running") == 1 && kvmsaveJournalIsPaused(dom) &&
            virDomainResume(dom) < 0) {
            VIR_WARN("interrupted restore from %s: cannot resume guest %s: %s",
                     NULLSTR(image), name, virGetLastErrorMessage());
            virResetLastError();
            return;
        }
        VIR_WARN("recovered an interrupted restore from %s: its state was loaded, guest %s %s",
                 NULLSTR(image), name,
                 kvmsaveJournalInt(kv, "running") == 1 ? "resumed" : "stays paused");
        return;
    }
    if (kvmsaveMultifdDestroyIncoming(dom, pidfd) < 0) {
        VIR_WARN("interrupted restore from %s: cannot stop the half-restored guest %s: %s",
                 NULLSTR(image), name, virGetLastErrorMessage());
        virResetLastError();
        return;
    }
    kvmsaveJournalRemoveStaleCgroups(priv, name);
    VIR_WARN("recovered an interrupted restore from %s: the half-restored guest %s was stopped, the image is intact",
             NULLSTR(image), name);
}


static void
kvmsaveJournalRecoverLazyDir(kvmsaveConn *priv, GHashTable *kv, const char *dir)
{
    const char *uuidstr = g_hash_table_lookup(kv, "uuid");
    unsigned char uuid[VIR_UUID_BUFLEN];

    if (!uuidstr || virUUIDParse(uuidstr, uuid) < 0)
        return;
    kvmsaveLazyRecoverDir(priv, uuid, dir);
}


bool
kvmsaveRecoverJob(kvmsaveConn *priv, const char *ours, const char *path,
                  int fd, char **foreign)
{
    g_autoptr(GHashTable) kv = kvmsaveJournalParse(fd);
    const char *kind = kv ? g_hash_table_lookup(kv, "kind") : NULL;
    const char *phase = kv ? g_hash_table_lookup(kv, "phase") : NULL;
    const char *multifd = kv ? g_hash_table_lookup(kv, "multifd") : NULL;
    const char *lazy = kv ? g_hash_table_lookup(kv, "lazy") : NULL;
    const char *inner = kv ? g_hash_table_lookup(kv, "inner") : NULL;

    /* Its guest lives behind another connection: not ours to touch,
     * unless ours has that very guest (the same daemon, spelled another
     * way). */
    if (inner && STRNEQ(inner, ours)) {
        const char *uuidstr = g_hash_table_lookup(kv, "uuid");
        unsigned char uuid[VIR_UUID_BUFLEN];
        g_autoptr(virDomain) dom = NULL;

        if (!uuidstr || virUUIDParse(uuidstr, uuid) < 0 ||
            !(dom = virDomainLookupByUUID(priv->inner, uuid))) {
            virResetLastError();
            VIR_DEBUG("leaving job journal %s of connection %s", path, inner);
            *foreign = g_strdup(inner);
            return false;
        }
    }
    if (!kv)
        VIR_WARN("removing job journal %s: it is empty or was cut short by the kill; check the guest and the target directory of its job",
                 path);
    else if (!kind || !phase)
        VIR_WARN("removing job journal %s: it records nothing yet", path);
    else if (STREQ(kind, "save"))
        kvmsaveJournalRecoverSave(priv, kv, phase);
    else if (STREQ(kind, "restore"))
        kvmsaveJournalRecoverRestore(priv, kv, phase);
    else
        VIR_WARN("removing job journal %s of unknown kind '%s'", path, kind);
    /* The sockets of QEMU's multifd streams, if it died connecting them. */
    if (multifd)
        kvmsaveMultifdRemoveDir(multifd);
    /* A lazy restore's sockets, unless its page server still uses them. */
    if (lazy)
        kvmsaveJournalRecoverLazyDir(priv, kv, lazy);
    if (unlink(path) < 0 && errno != ENOENT)
        VIR_WARN("cannot remove job journal %s: %s", path, g_strerror(errno));
    return true;
}
