/*
 * embedtest.c: unit tests of the embedded driver's status repair
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * The repair of guest statuses that a client killed inside libvirt 9.0's
 * stop left without a monitor (kvmsaveEmbedRepairStatuses). The whole
 * path, with libvirt finishing the stop: tests/integration/test_kill.py.
 */
#include <config.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "kvmsave_embed.h"

static char *root;
static char *status;

/* A status as libvirt 9.0 leaves it (trimmed): no <monitor>. */
#define STATUS_HEAD "<domstatus state='shutdown' reason='unknown' pid='%lld'>\n" \
    "  <taint flag='custom-monitor'/>\n"
#define STATUS_TAIL "  <libDir path='/r/lib/qemu/domain-1-%s'/>\n" \
    "  <domain type='qemu' id='1'>\n" \
    "    <name>%s</name>\n" \
    "  </domain>\n" \
    "</domstatus>\n"


static void
setup(void)
{
    g_autofree char *dir = NULL;

    root = g_dir_make_tmp("kvmsave-embedtest-XXXXXX", NULL);
    ck_assert_ptr_nonnull(root);
    dir = g_build_filename(root, "run", "qemu", NULL);
    ck_assert_int_eq(g_mkdir_with_parents(dir, 0700), 0);
    status = g_build_filename(dir, "guest.xml", NULL);
}


static void
teardown(void)
{
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", root);

    ck_assert_int_eq(system(cmd), 0);
    g_clear_pointer(&root, g_free);
    g_clear_pointer(&status, g_free);
}


static void
writeStatus(long long pid, const char *name, const char *monitor)
{
    g_autofree char *text = g_strdup_printf(STATUS_HEAD "%s" STATUS_TAIL, pid,
                                            monitor ? monitor : "", name, name);

    ck_assert(g_file_set_contents(status, text, -1, NULL));
}


static char *
readStatus(void)
{
    char *text = NULL;

    ck_assert(g_file_get_contents(status, &text, NULL, NULL));
    return text;
}


/* A child whose command line names guest @name as libvirt names it to
 * QEMU ("-name guest=NAME,debug-threads=on"). */
static pid_t
fakeQemu(const char *escaped)
{
    g_autofree char *arg = g_strdup_printf("guest=%s,debug-threads=on", escaped);
    pid_t pid = fork();

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", "sleep 60; exit 0", "qemu", "-name", arg, (char *) NULL);
        _exit(127);
    }
    /* Until the exec is seen: a forked child still has our command line. */
    for (;;) {
        g_autofree char *path = g_strdup_printf("/proc/%lld/cmdline", (long long) pid);
        g_autofree char *cmd = NULL;
        gsize len = 0;

        if (g_file_get_contents(path, &cmd, &len, NULL) &&
            memmem(cmd, len, arg, strlen(arg)))
            return pid;
        g_usleep(1000);
    }
}


static void
reap(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}


START_TEST(test_status_of_a_gone_qemu_gets_its_monitor_back)
{
    pid_t pid = fork();
    g_autofree char *text = NULL;

    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(0);
    waitpid(pid, NULL, 0);
    writeStatus(pid, "guest", NULL);
    kvmsaveEmbedRepairStatuses(root);
    text = readStatus();
    ck_assert_ptr_nonnull(strstr(text, "<monitor path=\"/r/lib/qemu/domain-1-guest/monitor.sock\" type=\"unix\"/>"));
    ck_assert_ptr_nonnull(strstr(text, "<name>guest</name>"));
    ck_assert_ptr_nonnull(strstr(text, "<taint flag=\"custom-monitor\"/>"));
}
END_TEST


START_TEST(test_status_of_the_guests_live_qemu_gets_its_monitor_back)
{
    pid_t pid = fakeQemu("a,,b");
    g_autofree char *text = NULL;

    writeStatus(pid, "a,b", NULL);
    kvmsaveEmbedRepairStatuses(root);
    reap(pid);
    text = readStatus();
    ck_assert_ptr_nonnull(strstr(text, "/r/lib/qemu/domain-1-a,b/monitor.sock"));
}
END_TEST


START_TEST(test_status_whose_pid_is_another_process_is_left_alone)
{
    pid_t pid = fakeQemu("other");
    g_autofree char *before = NULL;
    g_autofree char *after = NULL;

    writeStatus(pid, "guest", NULL);
    before = readStatus();
    kvmsaveEmbedRepairStatuses(root);
    reap(pid);
    after = readStatus();
    ck_assert_str_eq(after, before);
}
END_TEST


START_TEST(test_status_with_a_monitor_is_left_alone)
{
    g_autofree char *before = NULL;
    g_autofree char *after = NULL;

    writeStatus(0, "guest", "  <monitor path='/r/m.sock' type='unix'/>\n");
    before = readStatus();
    kvmsaveEmbedRepairStatuses(root);
    after = readStatus();
    ck_assert_str_eq(after, before);
}
END_TEST


START_TEST(test_files_that_are_no_status_are_left_alone)
{
    g_autofree char *other = g_build_filename(root, "run", "qemu", "x.xml", NULL);
    g_autofree char *text = NULL;

    ck_assert(g_file_set_contents(status, "not XML <", -1, NULL));
    ck_assert(g_file_set_contents(other, "<domain><name>x</name></domain>", -1, NULL));
    kvmsaveEmbedRepairStatuses(root);
    text = readStatus();
    ck_assert_str_eq(text, "not XML <");
    g_clear_pointer(&text, g_free);
    ck_assert(g_file_get_contents(other, &text, NULL, NULL));
    ck_assert_str_eq(text, "<domain><name>x</name></domain>");
    KT_ASSERT_NO_ERROR();
}
END_TEST


static Suite *
embedSuite(void)
{
    Suite *s = suite_create("embed");
    TCase *tc = ktTCase("status repair", 20);

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_status_of_a_gone_qemu_gets_its_monitor_back);
    tcase_add_test(tc, test_status_of_the_guests_live_qemu_gets_its_monitor_back);
    tcase_add_test(tc, test_status_whose_pid_is_another_process_is_left_alone);
    tcase_add_test(tc, test_status_with_a_monitor_is_left_alone);
    tcase_add_test(tc, test_files_that_are_no_status_are_left_alone);
    suite_add_tcase(s, tc);
    return s;
}


int
main(void)
{
    return ktRunSuite(embedSuite);
}
