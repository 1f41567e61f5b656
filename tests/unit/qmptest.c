/*
 * qmptest.c: unit tests of kvmsave's own QMP connection (kvmsave_qmp.c),
 * against a monitor played here on a unix socket
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "testutil.h"
#include "kvmsave_qmp.h"
#include "virfile.h"
#include "virstring.h"

/* What the played monitor answers each request with: a format taking the
 * request's id (or a line without %s, sent as it is). NULL: close. */
typedef struct {
    int listenfd;
    const char *const *answers;
    GPtrArray *requests;        /* the lines it received */
} Monitor;


static char *
readLine(int fd)
{
    GString *line = g_string_new(NULL);
    char c;

    while (read(fd, &c, 1) == 1) {
        if (c == '\n')
            return g_string_free(line, FALSE);
        g_string_append_c(line, c);
    }
    g_string_free(line, TRUE);
    return NULL;
}


static void
sendLine(int fd, const char *text)
{
    ck_assert_int_eq(safewrite(fd, text, strlen(text)), strlen(text));
    ck_assert_int_eq(safewrite(fd, "\n", 1), 1);
}


static gpointer
monitorThread(gpointer opaque)
{
    Monitor *m = opaque;
    const char *const *a;
    int fd = accept(m->listenfd, NULL, NULL);

    ck_assert_int_ge(fd, 0);
    sendLine(fd, "{\"QMP\": {\"version\": {}, \"capabilities\": [\"oob\"]}}");
    for (a = m->answers; *a; a++) {
        g_autoptr(virJSONValue) req = NULL;
        g_auto(GStrv) parts = NULL;
        char *line = readLine(fd);
        const char *id;

        if (!line)
            break;
        g_ptr_array_add(m->requests, line);
        req = virJSONValueFromString(line);
        id = req ? virJSONValueObjectGetString(req, "id") : NULL;
        /* Lines before the answer, separated by '|'. */
        parts = g_strsplit(*a, "|", -1);
        for (GStrv p = parts; *p; p++) {
            g_auto(GStrv) around = g_strsplit(*p, "%s", -1);
            g_autofree char *text = g_strjoinv(NULLSTR(id), around);

            sendLine(fd, text);
        }
    }
    close(fd);
    return NULL;
}


static GThread *
monitorStart(Monitor *m, const char *const *answers, char **path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    g_autofree char *dir = g_dir_make_tmp("kvmsave-qmptest-XXXXXX", NULL);

    ck_assert_ptr_nonnull(dir);
    *path = g_build_filename(dir, "q", NULL);
    ck_assert_int_eq(virStrcpyStatic(sa.sun_path, *path), 0);
    m->listenfd = socket(AF_UNIX, SOCK_STREAM, 0);
    ck_assert_int_eq(bind(m->listenfd, (struct sockaddr *) &sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(m->listenfd, 1), 0);
    m->answers = answers;
    m->requests = g_ptr_array_new_with_free_func(g_free);
    return g_thread_new("monitor", monitorThread, m);
}


/* Join @t, unless the test did, and remove the socket. */
static void
monitorEnd(Monitor *m, GThread *t, const char *path)
{
    g_autofree char *dir = g_path_get_dirname(path);

    if (t)
        g_thread_join(t);
    close(m->listenfd);
    unlink(path);
    rmdir(dir);
    g_ptr_array_free(m->requests, TRUE);
}


START_TEST(test_connect_negotiates_out_of_band_commands)
{
    const char *const answers[] = { "{\"return\": {}, \"id\": \"%s\"}", NULL };
    g_autofree char *path = NULL;
    Monitor m = { 0 };
    GThread *t = monitorStart(&m, answers, &path);
    g_autoptr(kvmsaveQmp) qmp = kvmsaveQmpConnect(path, 5000);

    ck_assert_msg(qmp != NULL, "%s", virGetLastErrorMessage());
    g_clear_pointer(&qmp, kvmsaveQmpFree);
    monitorEnd(&m, t, path);
}
END_TEST


START_TEST(test_command_skips_events_and_other_answers_and_reports_qemu_error)
{
    const char *const answers[] = {
        "{\"return\": {}, \"id\": \"%s\"}",
        "{\"event\": \"STOP\"}|{\"return\": {}, \"id\": \"stale\"}|"
        "{\"error\": {\"class\": \"GenericError\", \"desc\": \"not paused\"}, \"id\": \"%s\"}",
        "{\"return\": {}, \"id\": \"%s\"}",
        NULL,
    };
    g_autofree char *path = NULL;
    g_autofree char *qemuError = NULL;
    Monitor m = { 0 };
    GThread *t = monitorStart(&m, answers, &path);
    g_autoptr(kvmsaveQmp) qmp = kvmsaveQmpConnect(path, 5000);
    g_autoptr(virJSONValue) args = NULL;

    ck_assert_msg(qmp != NULL, "%s", virGetLastErrorMessage());
    ck_assert_int_ge(virJSONValueObjectAdd(&args, "s:uri", "unix:/r", NULL), 0);
    ck_assert_int_eq(kvmsaveQmpCommand(qmp, "migrate-recover", g_steal_pointer(&args),
                                       true, &qemuError), 1);
    ck_assert_str_eq(qemuError, "not paused");
    ck_assert_int_eq(kvmsaveQmpCommand(qmp, "query-status", NULL, false, &qemuError), 0);
    g_clear_pointer(&qmp, kvmsaveQmpFree);
    monitorEnd(&m, t, path);
}
END_TEST


START_TEST(test_out_of_band_command_is_sent_as_exec_oob_with_an_id)
{
    const char *const answers[] = {
        "{\"return\": {}, \"id\": \"%s\"}",
        "{\"return\": {}, \"id\": \"%s\"}",
        NULL,
    };
    g_autofree char *path = NULL;
    g_autofree char *qemuError = NULL;
    Monitor m = { 0 };
    GThread *t = monitorStart(&m, answers, &path);
    g_autoptr(kvmsaveQmp) qmp = kvmsaveQmpConnect(path, 5000);
    g_autoptr(virJSONValue) first = NULL;
    g_autoptr(virJSONValue) second = NULL;

    ck_assert_msg(qmp != NULL, "%s", virGetLastErrorMessage());
    ck_assert_int_eq(kvmsaveQmpCommand(qmp, "migrate-recover", NULL, true, &qemuError), 0);
    g_clear_pointer(&qmp, kvmsaveQmpFree);
    g_thread_join(t);
    first = virJSONValueFromString(m.requests->pdata[0]);
    second = virJSONValueFromString(m.requests->pdata[1]);
    ck_assert_str_eq(virJSONValueObjectGetString(first, "execute"), "qmp_capabilities");
    ck_assert(strstr(m.requests->pdata[0], "\"oob\""));
    ck_assert_str_eq(virJSONValueObjectGetString(second, "exec-oob"), "migrate-recover");
    ck_assert_ptr_null(virJSONValueObjectGetString(second, "execute"));
    ck_assert_ptr_nonnull(virJSONValueObjectGetString(second, "id"));
    monitorEnd(&m, NULL, path);
}
END_TEST


START_TEST(test_monitor_closed_is_an_error)
{
    const char *const answers[] = { "{\"return\": {}, \"id\": \"%s\"}", NULL };
    g_autofree char *path = NULL;
    g_autofree char *qemuError = NULL;
    Monitor m = { 0 };
    GThread *t = monitorStart(&m, answers, &path);
    g_autoptr(kvmsaveQmp) qmp = kvmsaveQmpConnect(path, 5000);

    ck_assert_msg(qmp != NULL, "%s", virGetLastErrorMessage());
    g_thread_join(t);
    ck_assert_int_eq(kvmsaveQmpCommand(qmp, "query-status", NULL, false, &qemuError), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_FAILED, "QEMU closed its monitor");
    monitorEnd(&m, NULL, path);
}
END_TEST


static Suite *
qmpSuite(void)
{
    Suite *s = suite_create("kvmsave_qmp");
    TCase *tc = ktTCase("qmp", 30);

    tcase_add_test(tc, test_connect_negotiates_out_of_band_commands);
    tcase_add_test(tc, test_command_skips_events_and_other_answers_and_reports_qemu_error);
    tcase_add_test(tc, test_out_of_band_command_is_sent_as_exec_oob_with_an_id);
    tcase_add_test(tc, test_monitor_closed_is_an_error);
    suite_add_tcase(s, tc);
    return s;
}


int
main(void)
{
    return ktRunSuite(qmpSuite);
}
