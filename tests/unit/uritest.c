/*
 * uritest.c: unit tests of the inner URI's daemon socket (kvmsave_uri.c)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include "scratch.h"   /* the scratch directory stands in for /var/run/libvirt */
#include "kvmsave_uri.h"
#include "viruri.h"


static void
touch(const char *name)
{
    g_autofree char *path = scratchPath(name);

    fileWrite(path, "", 0);
}


static void
setup(void)
{
    virResetLastError();
    scratchSetup();
}


static void
teardown(void)
{
    scratchTeardown();
    virResetLastError();
}


/* The rewritten URI as "SCHEME PATH name=value&..." (values unescaped),
 * with DIR in the socket's path written as "@". NULL if left alone. */
static char *
resolve(const char *uri, const char *confMode, bool readonly)
{
    g_autofree char *out = NULL;
    g_autoptr(virURI) parsed = NULL;
    g_autoptr(GString) s = g_string_new(NULL);
    size_t i;

    ck_assert_msg(kvmsaveURIForDaemon(uri, confMode, readonly, scratchDir, &out) == 0,
                  "%s refused: %s", uri, virGetLastErrorMessage());
    KT_ASSERT_NO_ERROR();
    if (!out)
        return NULL;
    parsed = virURIParse(out);
    ck_assert_ptr_nonnull(parsed);
    ck_assert_ptr_null(parsed->server);
    g_string_append_printf(s, "%s %s ", parsed->scheme, parsed->path);
    for (i = 0; i < parsed->paramsCount; i++) {
        const char *v = parsed->params[i].value;

        if (g_str_has_prefix(v, scratchDir))
            g_string_append_printf(s, "%s%s=@%s", i ? "&" : "",
                                   parsed->params[i].name, v + strlen(scratchDir));
        else
            g_string_append_printf(s, "%s%s=%s", i ? "&" : "",
                                   parsed->params[i].name, v);
    }
    return g_string_free(g_steal_pointer(&s), false);
}


#define ASSERT_RESOLVES(uri, conf, ro, expect) \
    do { \
        g_autofree char *got_ = resolve((uri), (conf), (ro)); \
        ck_assert_msg(g_strcmp0(got_, (expect)) == 0, \
                      "%s (remote_mode %s%s) gave \"%s\", expected \"%s\"", \
                      (uri), NULLSTR(conf), (ro) ? ", read-only" : "", \
                      NULLSTR(got_), NULLSTR(expect)); \
    } while (0)


START_TEST(test_other_uris_are_left_alone)
{
    const char *uris[] = {
        "test:///default",
        "qemu:///embed?root=/var/lib/x",
        "qemu+ssh://host/system",
        "qemu://host/system",
        "qemu+tcp:///system",
        "qemu+ext:///system?command=/bin/true",
        "qemu:///system?mode=bogus",
    };
    size_t i;

    touch("libvirt-sock");
    for (i = 0; i < G_N_ELEMENTS(uris); i++)
        ASSERT_RESOLVES(uris[i], NULL, false, NULL);
}
END_TEST


START_TEST(test_auto_prefers_the_modular_daemon)
{
    touch("libvirt-sock");
    ASSERT_RESOLVES("qemu:///system", NULL, false,
                    "qemu+unix /system socket=@/libvirt-sock&mode=direct");
    touch("virtqemud-sock");
    ASSERT_RESOLVES("qemu:///system", NULL, false,
                    "qemu+unix /system socket=@/virtqemud-sock&mode=direct");
    ASSERT_RESOLVES("qemu+unix:///system", "auto", false,
                    "qemu+unix /system socket=@/virtqemud-sock&mode=direct");
}
END_TEST


START_TEST(test_auto_only_the_modular_daemon)
{
    touch("virtqemud-sock");
    ASSERT_RESOLVES("qemu:///system", NULL, false,
                    "qemu+unix /system socket=@/virtqemud-sock&mode=direct");
}
END_TEST


START_TEST(test_read_only_uses_the_read_only_sockets)
{
    touch("libvirt-sock-ro");
    ASSERT_RESOLVES("qemu:///system", NULL, true,
                    "qemu+unix /system socket=@/libvirt-sock-ro&mode=direct");
    touch("virtqemud-sock");    /* read-write only: not for read-only */
    ASSERT_RESOLVES("qemu:///system", NULL, true,
                    "qemu+unix /system socket=@/libvirt-sock-ro&mode=direct");
}
END_TEST


START_TEST(test_no_daemon_names_both_sockets)
{
    g_autofree char *out = NULL;
    g_autofree char *direct = g_build_filename(scratchDir, "virtqemud-sock", NULL);
    g_autofree char *legacy = g_build_filename(scratchDir, "libvirt-sock", NULL);
    const char *msg;

    ck_assert_int_eq(kvmsaveURIForDaemon("qemu:///system", NULL, false, scratchDir,
                                         &out), -1);
    ck_assert_ptr_null(out);
    KT_ASSERT_ERROR(VIR_ERR_NO_CONNECT, "start virtqemud or libvirtd");
    msg = virGetLastErrorMessage();
    ck_assert_msg(strstr(msg, direct) && strstr(msg, legacy) &&
                  strstr(msg, "qemu:///system"), "message: %s", msg);

    virResetLastError();
    ck_assert_int_eq(kvmsaveURIForDaemon("lxc:///system", NULL, false, scratchDir,
                                         &out), -1);
    KT_ASSERT_ERROR(VIR_ERR_NO_CONNECT, "(virtlxcd)");
}
END_TEST


START_TEST(test_mode_picks_the_socket)
{
    touch("virtqemud-sock");
    touch("libvirt-sock");
    ASSERT_RESOLVES("qemu:///system?mode=legacy", NULL, false,
                    "qemu+unix /system socket=@/libvirt-sock&mode=direct");
    ASSERT_RESOLVES("qemu:///system", "legacy", false,
                    "qemu+unix /system socket=@/libvirt-sock&mode=direct");
    /* The URI's mode wins over libvirt.conf's, as in the remote driver. */
    ASSERT_RESOLVES("qemu:///system?mode=direct", "legacy", false,
                    "qemu+unix /system socket=@/virtqemud-sock&mode=direct");
    ASSERT_RESOLVES("qemu:///system?MODE=auto", "legacy", false,
                    "qemu+unix /system socket=@/virtqemud-sock&mode=direct");
}
END_TEST


START_TEST(test_mode_names_a_missing_socket)
{
    /* As a plain client with that mode: the remote driver then reports
     * that the socket is missing. */
    ASSERT_RESOLVES("qemu:///system?mode=direct", NULL, false,
                    "qemu+unix /system socket=@/virtqemud-sock&mode=direct");
    ASSERT_RESOLVES("qemu:///system", "legacy", false,
                    "qemu+unix /system socket=@/libvirt-sock&mode=direct");
}
END_TEST


START_TEST(test_explicit_socket_is_kept)
{
    touch("virtqemud-sock");
    ASSERT_RESOLVES("qemu:///system?socket=/elsewhere/sock", NULL, false,
                    "qemu+unix /system socket=/elsewhere/sock&mode=direct");
    /* mode=legacy with a socket would be refused in this process. */
    ASSERT_RESOLVES("qemu:///system?mode=legacy&socket=/elsewhere/sock",
                    "legacy", false,
                    "qemu+unix /system socket=/elsewhere/sock&mode=direct");
    ASSERT_RESOLVES("qemu+unix:///system?socket=/a%20b/s%26ck", NULL, false,
                    "qemu+unix /system socket=/a b/s&ck&mode=direct");
}
END_TEST


START_TEST(test_other_parameters_are_kept)
{
    touch("libvirt-sock");
    ASSERT_RESOLVES("qemu:///system?no_tty=1&mode=auto&keyfile=/k", NULL,
                    false,
                    "qemu+unix /system no_tty=1&keyfile=/k&socket=@/libvirt-sock&mode=direct");
}
END_TEST


START_TEST(test_other_drivers_and_root_sessions)
{
    touch("virtlxcd-sock");
    ASSERT_RESOLVES("lxc:///system", NULL, false,
                    "lxc+unix /system socket=@/virtlxcd-sock&mode=direct");
    if (geteuid() == 0) {
        /* root's session URIs go to the system daemons too */
        touch("libvirt-sock");
        ASSERT_RESOLVES("qemu:///session", NULL, false,
                        "qemu+unix /session socket=@/libvirt-sock&mode=direct");
    }
}
END_TEST


START_TEST(test_bad_uri_is_an_error)
{
    g_autofree char *out = NULL;

    ck_assert_int_eq(kvmsaveURIForDaemon("qemu:///system?a=%zz bad uri", NULL,
                                         false, scratchDir, &out), -1);
    ck_assert_ptr_null(out);
    ck_assert_ptr_nonnull(virGetLastError());
}
END_TEST


static Suite *
uriSuite(void)
{
    Suite *s = suite_create("uri");
    TCase *tc = ktTCase("daemon socket", 10);

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_other_uris_are_left_alone);
    tcase_add_test(tc, test_auto_prefers_the_modular_daemon);
    tcase_add_test(tc, test_auto_only_the_modular_daemon);
    tcase_add_test(tc, test_read_only_uses_the_read_only_sockets);
    tcase_add_test(tc, test_no_daemon_names_both_sockets);
    tcase_add_test(tc, test_mode_picks_the_socket);
    tcase_add_test(tc, test_mode_names_a_missing_socket);
    tcase_add_test(tc, test_explicit_socket_is_kept);
    tcase_add_test(tc, test_other_parameters_are_kept);
    tcase_add_test(tc, test_other_drivers_and_root_sessions);
    tcase_add_test(tc, test_bad_uri_is_an_error);
    suite_add_tcase(s, tc);
    return s;
}


int
main(void)
{
    return ktRunSuite(uriSuite);
}
