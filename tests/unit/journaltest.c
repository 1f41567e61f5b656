/*
 * journaltest.c: unit tests of the job journal (kvmsave_journal.c): its
 * lock tells a live job from a dead one, and recovery of a dead save that
 * had not paused its guest removes what it left. (Recovery of guests:
 * tests/integration/test_kill.py.) The unnamed journal that a file system
 * without O_TMPFILE leaves for a minute. The sockets' directories of a killed
 * job: named in its journal before they exist, removed by recovery, a
 * lazy restore's left to its live page server. The sweep of the cgroups a killed
 * start left, in cgroup v1's and v2's layout, on fake trees: this host is
 * cgroup v1 and the chroots bind its /sys, so no test here meets v2.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <utime.h>

#include "testutil.h"
#include "kvmsave_journal.h"
#include "kvmsave_lazy.h"
#include "kvmsave_recoverpriv.h"
#include "kvmsave_stream.h"
#include "kvmsave_util.h"
#include "virfile.h"
#include "viruuid.h"

static const unsigned char uuid[VIR_UUID_BUFLEN] = {
    0x6b, 0x61, 0x65, 0x6e, 0x00, 0x01, 0x40, 0x00,
    0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
};


/* A connection with a root and no inner driver: recovery then finds no
 * guest to stop or resume. */
static kvmsaveConn *
testConn(void)
{
    kvmsaveConn *priv = g_new0(kvmsaveConn, 1);

    priv->root = g_dir_make_tmp("kvmsave-journaltest-XXXXXX", NULL);
    priv->embedded = true;
    ck_assert_ptr_nonnull(priv->root);
    return priv;
}


static void
testConnFree(kvmsaveConn *priv)
{
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", priv->root);

    ck_assert_int_eq(system(cmd), 0);
    g_free(priv->root);
    g_free(priv);
}


static char *
journalPath(kvmsaveConn *priv)
{
    char uuidstr[VIR_UUID_STRING_BUFLEN];

    virUUIDFormat(uuid, uuidstr);
    return g_strdup_printf("%s/run/kvmsave/jobs/%s.job", priv->root, uuidstr);
}


/* In a child: begin a save journal that names @temp, reach "prepared",
 * tell the parent through @ready, then wait to be killed. */
static pid_t
childJob(kvmsaveConn *priv, const char *temp)
{
    int ready[2];
    pid_t pid;
    char c;

    ck_assert_int_eq(pipe(ready), 0);
    if ((pid = fork()) == 0) {
        kvmsaveJournal *j = kvmsaveJournalBegin(priv, uuid, KVMSAVE_JOURNAL_SAVE, NULL);

        if (!j)
            _exit(1);
        kvmsaveJournalSet(j, "name", "guest\nwith a newline");
        kvmsaveJournalSet(j, "temp", temp);
        kvmsaveJournalSetInt(j, "paused", 1);
        if (kvmsaveJournalWrite(j, "prepared") < 0)
            _exit(2);
        ignore_value(write(ready[1], "r", 1));
        pause();
        _exit(0);
    }
    close(ready[1]);
    ck_assert_int_eq(read(ready[0], &c, 1), 1);
    close(ready[0]);
    return pid;
}


static void
killChild(pid_t pid)
{
    int status;

    kill(pid, SIGKILL);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
}


START_TEST(test_live_journal_of_another_process_refuses_a_second_job)
{
    kvmsaveConn *priv = testConn();
    g_autofree char *temp = g_build_filename(priv->root, ".kvmsave-x.tmp", NULL);
    g_autofree char *path = journalPath(priv);
    pid_t pid = childJob(priv, temp);

    virResetLastError();
    ck_assert_ptr_null(kvmsaveJournalBegin(priv, uuid, KVMSAVE_JOURNAL_RESTORE, NULL));
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_INVALID,
                    "another save/restore job is running for this guest (in another process)");
    /* A live job is not recovered. */
    kvmsaveJournalRecover(priv);
    ck_assert_int_eq(access(path, F_OK), 0);

    killChild(pid);
    testConnFree(priv);
}
END_TEST


/* The journal of a save killed after it created its temporary file,
 * which it returns. */
static char *
deadSave(kvmsaveConn *priv)
{
    char *temp = g_build_filename(priv->root, ".kvmsave-x.tmp", NULL);
    g_autofree char *path = journalPath(priv);

    ck_assert(g_file_set_contents(temp, "partial image", -1, NULL));
    killChild(childJob(priv, temp));
    ck_assert_int_eq(access(path, F_OK), 0);
    return temp;
}


/* A dead save's journal is recovered (its temporary file and the journal
 * removed) by a connection open, or by the next job's begin, which then
 * holds a journal of its own and says it recovered one. */
static void
assertDeadSaveRecovered(bool byBegin)
{
    kvmsaveConn *priv = testConn();
    g_autofree char *path = journalPath(priv);
    g_autofree char *temp = deadSave(priv);
    kvmsaveJournal *j = NULL;
    bool recovered = false;

    if (byBegin) {
        ck_assert_ptr_nonnull(j = kvmsaveJournalBegin(priv, uuid, KVMSAVE_JOURNAL_SAVE,
                                                      &recovered));
        ck_assert(recovered);
    } else {
        kvmsaveJournalRecover(priv);
    }
    ck_assert_int_eq(access(temp, F_OK), -1);
    ck_assert_int_eq(access(path, F_OK), byBegin ? 0 : -1);
    kvmsaveJournalEnd(j);
    ck_assert_int_eq(access(path, F_OK), -1);
    testConnFree(priv);
}


START_TEST(test_dead_save_is_recovered_on_open)
{
    assertDeadSaveRecovered(false);
}
END_TEST


START_TEST(test_dead_journal_is_recovered_when_a_job_begins)
{
    assertDeadSaveRecovered(true);
}
END_TEST


/* A journal whose rewrite a kill cut short mixes two versions: its check
 * line does not match, so recovery acts on none of it. */
START_TEST(test_torn_journal_is_removed_without_acting_on_it)
{
    kvmsaveConn *priv = testConn();
    g_autofree char *path = journalPath(priv);
    g_autofree char *temp = deadSave(priv);
    g_autofree char *text = NULL;
    size_t len;

    ck_assert(g_file_get_contents(path, &text, &len, NULL));
    text[len - 2] ^= 1;     /* a byte of the last field */
    ck_assert(g_file_set_contents(path, text, len, NULL));

    kvmsaveJournalRecover(priv);
    ck_assert_int_eq(access(path, F_OK), -1);
    ck_assert_int_eq(access(temp, F_OK), 0);
    testConnFree(priv);
}
END_TEST


/* A dead job of another inner connection (another daemon) is left for a
 * client of that connection: neither recovered nor taken over, and a new
 * job of the guest says whose journal is in its way. */
START_TEST(test_dead_journal_of_another_connection_is_left_alone)
{
    kvmsaveConn *priv = testConn();
    g_autofree char *path = journalPath(priv);
    g_autofree char *temp = deadSave(priv);
    g_autofree char *text = NULL;
    g_autofree char *body = NULL;
    g_autofree char *edited = NULL;
    g_auto(GStrv) parts = NULL;
    size_t len;

    /* Its job ran over qemu:///foreign (the test connection has none). */
    ck_assert(g_file_get_contents(path, &text, &len, NULL));
    parts = g_strsplit(strchr(text, '\n') + 1, "inner=\n", 2);
    ck_assert_uint_eq(g_strv_length(parts), 2);
    body = g_strconcat(parts[0], "inner=qemu:///foreign\n", parts[1], NULL);
    edited = g_strdup_printf("check=%08x %zu\n%s",
                             kvmsaveCrc32c(0, body, strlen(body)), strlen(body), body);
    ck_assert(g_file_set_contents(path, edited, -1, NULL));

    kvmsaveJournalRecover(priv);
    ck_assert_int_eq(access(path, F_OK), 0);
    ck_assert_int_eq(access(temp, F_OK), 0);
    virResetLastError();
    ck_assert_ptr_null(kvmsaveJournalBegin(priv, uuid, KVMSAVE_JOURNAL_SAVE, NULL));
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_INVALID, "connection 'qemu:///foreign'");
    ck_assert_int_eq(access(path, F_OK), 0);
    testConnFree(priv);
}
END_TEST


/* A file system without O_TMPFILE has a new journal made under a
 * temporary name (.UUID-XXXXXX) before it is locked and linked: one of a
 * dead job goes once it is a minute old; a younger one, or a locked one,
 * may be a live job's and stays. */
static char *
unnamedJournal(const char *dir, const char *suffix, time_t age)
{
    char *path = g_strdup_printf("%s/.6b61656e-0001-4000-8000-000000000001-%s",
                                 dir, suffix);
    struct utimbuf times = { .actime = time(NULL) - age, .modtime = time(NULL) - age };

    ck_assert(g_file_set_contents(path, "", 0, NULL));
    ck_assert_int_eq(utime(path, &times), 0);
    return path;
}


START_TEST(test_unnamed_journal_goes_when_a_minute_old_and_unlocked)
{
    kvmsaveConn *priv = testConn();
    g_autofree char *dir = kvmsaveJournalDir(priv);
    g_autofree char *old = NULL;
    g_autofree char *young = NULL;
    g_autofree char *locked = NULL;
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    VIR_AUTOCLOSE fd = -1;

    ck_assert_int_eq(g_mkdir_with_parents(dir, 0700), 0);
    old = unnamedJournal(dir, "Old001", 120);
    young = unnamedJournal(dir, "Yng001", 5);
    locked = unnamedJournal(dir, "Lck001", 120);
    ck_assert_int_ge(fd = open(locked, O_RDWR | O_CLOEXEC), 0);
    ck_assert_int_eq(fcntl(fd, F_OFD_SETLK, &fl), 0);

    kvmsaveJournalRecover(priv);
    ck_assert_int_eq(access(old, F_OK), -1);
    ck_assert_int_eq(access(young, F_OK), 0);
    ck_assert_int_eq(access(locked, F_OK), 0);
    testConnFree(priv);
}
END_TEST


START_TEST(test_ended_job_leaves_no_journal_and_frees_the_guest)
{
    kvmsaveConn *priv = testConn();
    g_autofree char *path = journalPath(priv);
    kvmsaveJournal *j = kvmsaveJournalBegin(priv, uuid, KVMSAVE_JOURNAL_RESTORE, NULL);

    ck_assert_ptr_nonnull(j);
    kvmsaveJournalSet(j, "image", "/images/a b.img");
    ck_assert_int_eq(kvmsaveJournalWrite(j, "starting"), 0);
    ck_assert_int_eq(access(path, F_OK), 0);
    kvmsaveJournalEnd(j);
    ck_assert_int_eq(access(path, F_OK), -1);
    ck_assert_ptr_nonnull(j = kvmsaveJournalBegin(priv, uuid, KVMSAVE_JOURNAL_SAVE, NULL));
    kvmsaveJournalEnd(j);
    testConnFree(priv);
}
END_TEST


typedef enum {
    DIR_NAMED,          /* killed after the journal named it */
    DIR_CREATED,        /* ...and after it was made, with its socket */
} dirStep;


/* In a child: begin a restore journal, name a directory for QEMU's
 * sockets in it as a multifd job does (kvmsaveStreamJournalDir), or with
 * @lazy as a lazy restore does, write "starting", and with DIR_CREATED
 * make the directory and listen on its socket. Tell the parent the
 * directory's name, then wait to be killed. Returns the name. */
static char *
childDirJob(kvmsaveConn *priv, bool lazy, dirStep step, pid_t *pid)
{
    char buf[PATH_MAX] = "";
    int ready[2];
    ssize_t n;

    ck_assert_int_eq(pipe(ready), 0);
    if ((*pid = fork()) == 0) {
        kvmsaveJournal *j = kvmsaveJournalBegin(priv, uuid, KVMSAVE_JOURNAL_RESTORE, NULL);
        g_autofree char *dir = NULL;
        kvmsaveMultifd *m = NULL;

        if (!j)
            _exit(1);
        if (lazy) {
            if ((dir = kvmsaveMultifdDirName()))
                kvmsaveJournalSet(j, "lazy", dir);
        } else {
            dir = kvmsaveStreamJournalDir(j);
        }
        if (!dir || access(dir, F_OK) == 0 ||
            kvmsaveJournalWrite(j, "starting") < 0)
            _exit(2);
        if (step == DIR_CREATED &&
            (!(m = kvmsaveMultifdNewPrivate(dir)) ||
             kvmsaveMultifdListen(m, 1) < 0))
            _exit(3);
        ignore_value(write(ready[1], dir, strlen(dir)));
        close(ready[1]);
        pause();
        _exit(0);
    }
    close(ready[1]);
    n = read(ready[0], buf, sizeof(buf) - 1);
    close(ready[0]);
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    return g_strdup(buf);
}


/* A job killed after its journal named the directory of its sockets,
 * before or after it made it: recovery leaves none. */
static void
assertDeadJobDirRemoved(bool lazy, dirStep step)
{
    kvmsaveConn *priv = testConn();
    g_autofree char *path = journalPath(priv);
    g_autofree char *dir = NULL;
    pid_t pid;

    dir = childDirJob(priv, lazy, step, &pid);
    killChild(pid);
    ck_assert(g_str_has_prefix(dir, g_get_tmp_dir()));
    ck_assert_int_eq(access(dir, F_OK), step == DIR_CREATED ? 0 : -1);
    kvmsaveJournalRecover(priv);
    ck_assert_int_eq(access(dir, F_OK), -1);
    ck_assert_int_eq(access(path, F_OK), -1);
    testConnFree(priv);
}


START_TEST(test_dead_job_named_its_multifd_dir_before_making_it)
{
    assertDeadJobDirRemoved(false, DIR_NAMED);
}
END_TEST


START_TEST(test_dead_job_multifd_dir_and_socket_go)
{
    assertDeadJobDirRemoved(false, DIR_CREATED);
}
END_TEST


START_TEST(test_dead_lazy_restore_named_its_dir_before_making_it)
{
    assertDeadJobDirRemoved(true, DIR_NAMED);
}
END_TEST


START_TEST(test_dead_lazy_restore_dir_goes_without_a_page_server)
{
    assertDeadJobDirRemoved(true, DIR_CREATED);
}
END_TEST


/* The page server of a lazy restore outlives its client and needs the
 * sockets' directory (QEMU's recovery socket is made in it): while it
 * holds its lock, recovery of the killed client's journal leaves the
 * directory to it, which removes it when it ends. */
START_TEST(test_dead_lazy_restore_dir_stays_with_a_live_page_server)
{
    kvmsaveConn *priv = testConn();
    g_autofree char *path = journalPath(priv);
    g_autofree char *lazydir = g_build_filename(priv->root, "run", "kvmsave", "lazy", NULL);
    g_autofree char *lock = NULL;
    g_autofree char *dir = NULL;
    char uuidstr[VIR_UUID_STRING_BUFLEN];
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    VIR_AUTOCLOSE lockfd = -1;
    pid_t pid;

    virUUIDFormat(uuid, uuidstr);
    lock = g_strdup_printf("%s/%s.status.lock", lazydir, uuidstr);
    ck_assert_int_eq(g_mkdir_with_parents(lazydir, 0700), 0);
    /* The page server's lock (an open file description's, so that it
     * holds against this process's own check too). */
    ck_assert_int_ge(lockfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600), 0);
    ck_assert_int_eq(fcntl(lockfd, F_OFD_SETLK, &fl), 0);

    dir = childDirJob(priv, true, DIR_CREATED, &pid);
    killChild(pid);
    kvmsaveJournalRecover(priv);
    ck_assert_int_eq(access(path, F_OK), -1);
    ck_assert_int_eq(access(dir, F_OK), 0);

    /* The page server ends: it removes the directory itself. */
    VIR_FORCE_CLOSE(lockfd);
    kvmsaveMultifdRemoveDir(dir);
    ck_assert_int_eq(access(dir, F_OK), -1);
    testConnFree(priv);
}
END_TEST


/* A directory of the name the journal gave is made only if nothing has
 * that name: one already there is neither taken over nor removed. */
START_TEST(test_multifd_dir_of_a_taken_name_is_refused_and_kept)
{
    g_autofree char *dir = kvmsaveMultifdDirName();
    g_autofree char *other = kvmsaveMultifdDirName();
    kvmsaveMultifd *m;

    ck_assert_ptr_nonnull(dir);
    ck_assert_ptr_nonnull(other);
    ck_assert_str_ne(dir, other);
    ck_assert_int_eq(access(dir, F_OK), -1);
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    virResetLastError();
    ck_assert_ptr_null(kvmsaveMultifdNewPrivate(dir));
    KT_ASSERT_ERROR_MSG("File exists");
    ck_assert_int_eq(access(dir, F_OK), 0);
    ck_assert_int_eq(rmdir(dir), 0);

    ck_assert_ptr_nonnull(m = kvmsaveMultifdNewPrivate(other));
    ck_assert_str_eq(kvmsaveMultifdDir(m), other);
    ck_assert(g_str_has_prefix(kvmsaveMultifdPath(m), other));
    kvmsaveMultifdFree(m);
    ck_assert_int_eq(access(other, F_OK), -1);
}
END_TEST


/* The embedded driver's root in the cgroup tests, and its guest. */
#define CG_ROOT "/var/lib/kvmsave-cgtest"
#define CG_GUEST "my_guest.1"       /* machine name: "myguest.1" */


/* @top/@rel, "HASH" in @rel standing for the first 8 hex digits of the
 * SHA-256 of CG_ROOT, as in libvirt's machine names. */
static char *
cgPath(const char *top, const char *rel)
{
    g_autofree char *hash = g_compute_checksum_for_string(G_CHECKSUM_SHA256,
                                                          CG_ROOT, -1);
    g_auto(GStrv) parts = g_strsplit(rel, "HASH", -1);
    g_autofree char *expanded = NULL;

    hash[8] = '\0';
    expanded = g_strjoinv(hash, parts);
    return g_build_filename(top, expanded, NULL);
}


/* A fake cgroup tree: each of @dirs (cgPath) under a new temporary
 * directory. */
static char *
cgTree(const char *const *dirs)
{
    char *top = g_dir_make_tmp("kvmsave-cgtest-XXXXXX", NULL);
    size_t i;

    ck_assert_ptr_nonnull(top);
    for (i = 0; dirs[i]; i++) {
        g_autofree char *path = cgPath(top, dirs[i]);

        ck_assert_int_eq(g_mkdir_with_parents(path, 0755), 0);
    }
    return top;
}


static bool
cgExists(const char *top, const char *rel)
{
    g_autofree char *path = cgPath(top, rel);

    return access(path, F_OK) == 0;
}


static void
cgTouch(const char *top, const char *rel)
{
    g_autofree char *path = cgPath(top, rel);

    ck_assert(g_file_set_contents(path, "", 0, NULL));
}


static void
cgFree(char *top)
{
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", top);

    ck_assert_int_eq(system(cmd), 0);
    g_free(top);
}


#define CG_GROUP "machine/qemu-embed-HASH-3-myguest.1.libvirt-qemu"


START_TEST(test_cgroup_v1_groups_of_the_guest_go)
{
    static const char *const dirs[] = {
        "cpuset/" CG_GROUP "/vcpu0", "cpuset/" CG_GROUP "/emulator",
        "memory/" CG_GROUP,
        "cpuset/machine/qemu-embed-HASH-3-other.libvirt-qemu",
        "cpuset/machine/qemu-embed-00000000-3-myguest.1.libvirt-qemu",
        CG_GROUP,                   /* v2's layout, not this tree's */
        NULL,
    };
    char *top = cgTree(dirs);

    kvmsaveRecoverRemoveStaleCgroups(top, CG_ROOT, CG_GUEST);
    ck_assert(!cgExists(top, "cpuset/" CG_GROUP));
    ck_assert(!cgExists(top, "memory/" CG_GROUP));
    ck_assert(cgExists(top, "cpuset/machine"));
    ck_assert(cgExists(top, "cpuset/machine/qemu-embed-HASH-3-other.libvirt-qemu"));
    ck_assert(cgExists(top, "cpuset/machine/qemu-embed-00000000-3-myguest.1.libvirt-qemu"));
    ck_assert(cgExists(top, CG_GROUP));
    cgFree(top);
}
END_TEST


START_TEST(test_cgroup_v2_groups_of_the_guest_go)
{
    static const char *const dirs[] = {
        CG_GROUP "/vcpu0", CG_GROUP "/emulator",
        "machine/qemu-embed-HASH-4-myguest.1.libvirt-qemu",
        "machine/qemu-embed-HASH-3-other.libvirt-qemu",
        "cpuset/" CG_GROUP,         /* v1's layout, not this tree's */
        NULL,
    };
    char *top = cgTree(dirs);

    cgTouch(top, "cgroup.controllers");
    kvmsaveRecoverRemoveStaleCgroups(top, CG_ROOT, CG_GUEST);
    ck_assert(!cgExists(top, CG_GROUP));
    ck_assert(!cgExists(top, "machine/qemu-embed-HASH-4-myguest.1.libvirt-qemu"));
    ck_assert(cgExists(top, "machine/qemu-embed-HASH-3-other.libvirt-qemu"));
    ck_assert(cgExists(top, "cpuset/" CG_GROUP));
    cgFree(top);
}
END_TEST


START_TEST(test_cgroup_with_a_task_stays)
{
    static const char *const dirs[] = { CG_GROUP "/vcpu0", NULL };
    char *top = cgTree(dirs);

    cgTouch(top, "cgroup.controllers");
    cgTouch(top, CG_GROUP "/task");   /* its rmdir fails as with a task in it */
    kvmsaveRecoverRemoveStaleCgroups(top, CG_ROOT, CG_GUEST);
    ck_assert(!cgExists(top, CG_GROUP "/vcpu0"));
    ck_assert(cgExists(top, CG_GROUP));
    cgFree(top);
}
END_TEST


static Suite *
journalSuite(void)
{
    Suite *s = suite_create("kvmsave_journal");
    TCase *tc = ktTCase("journal", 30);

    tcase_add_test(tc, test_live_journal_of_another_process_refuses_a_second_job);
    tcase_add_test(tc, test_dead_save_is_recovered_on_open);
    tcase_add_test(tc, test_dead_journal_is_recovered_when_a_job_begins);
    tcase_add_test(tc, test_torn_journal_is_removed_without_acting_on_it);
    tcase_add_test(tc, test_dead_journal_of_another_connection_is_left_alone);
    tcase_add_test(tc, test_unnamed_journal_goes_when_a_minute_old_and_unlocked);
    tcase_add_test(tc, test_ended_job_leaves_no_journal_and_frees_the_guest);
    tcase_add_test(tc, test_dead_job_named_its_multifd_dir_before_making_it);
    tcase_add_test(tc, test_dead_job_multifd_dir_and_socket_go);
    tcase_add_test(tc, test_dead_lazy_restore_named_its_dir_before_making_it);
    tcase_add_test(tc, test_dead_lazy_restore_dir_goes_without_a_page_server);
    tcase_add_test(tc, test_dead_lazy_restore_dir_stays_with_a_live_page_server);
    tcase_add_test(tc, test_multifd_dir_of_a_taken_name_is_refused_and_kept);
    tcase_add_test(tc, test_cgroup_v1_groups_of_the_guest_go);
    tcase_add_test(tc, test_cgroup_v2_groups_of_the_guest_go);
    tcase_add_test(tc, test_cgroup_with_a_task_stays);
    suite_add_tcase(s, tc);
    return s;
}


int
main(void)
{
    return ktRunSuite(journalSuite);
}
