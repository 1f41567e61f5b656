/*
 * flagstest.c: unit tests of kvmsave's argument checks (kvmsave_args.c)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include "testutil.h"
#include "kvmsave_args.h"

#define FUNC "kvmsaveDomainSaveFlags"


static void
setStringParam(virTypedParameterPtr p, const char *field, const char *value)
{
    memset(p, 0, sizeof(*p));
    g_strlcpy(p->field, field, VIR_TYPED_PARAM_FIELD_LENGTH);
    p->type = VIR_TYPED_PARAM_STRING;
    p->value.s = (char *) value;
}


static void
setIntParam(virTypedParameterPtr p, const char *field, int value)
{
    memset(p, 0, sizeof(*p));
    g_strlcpy(p->field, field, VIR_TYPED_PARAM_FIELD_LENGTH);
    p->type = VIR_TYPED_PARAM_INT;
    p->value.i = value;
}


/* ---- kvmsaveCheckSaveFlags ---- */

START_TEST(test_check_flags_accepts_allowed_combinations)
{
    const unsigned int saveOK[] = {
        0,
        VIR_DOMAIN_SAVE_BYPASS_CACHE,
        VIR_DOMAIN_SAVE_RUNNING,
        VIR_DOMAIN_SAVE_PAUSED,
        VIR_DOMAIN_SAVE_BYPASS_CACHE | VIR_DOMAIN_SAVE_RUNNING,
        VIR_DOMAIN_SAVE_BYPASS_CACHE | VIR_DOMAIN_SAVE_PAUSED,
    };
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(saveOK); i++) {
        ck_assert_msg(kvmsaveCheckSaveFlags(saveOK[i], KVMSAVE_SAVE_FLAGS,
                                            FUNC) == 0,
                      "save flags 0x%x refused: %s", saveOK[i],
                      virGetLastErrorMessage());
        KT_ASSERT_NO_ERROR();
    }
    ck_assert_int_eq(kvmsaveCheckSaveFlags(VIR_DOMAIN_SAVE_RESET_NVRAM |
                                           VIR_DOMAIN_SAVE_BYPASS_CACHE |
                                           VIR_DOMAIN_SAVE_PAUSED,
                                           KVMSAVE_RESTORE_FLAGS, FUNC), 0);
    ck_assert_int_eq(kvmsaveCheckSaveFlags(VIR_DOMAIN_SAVE_RUNNING,
                                           KVMSAVE_IMAGE_DEFINE_FLAGS, FUNC), 0);
    KT_ASSERT_NO_ERROR();
}
END_TEST


START_TEST(test_check_flags_refuses_running_with_paused)
{
    const unsigned int allowed[] = {
        KVMSAVE_SAVE_FLAGS, KVMSAVE_RESTORE_FLAGS, KVMSAVE_IMAGE_DEFINE_FLAGS,
    };
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(allowed); i++) {
        virResetLastError();
        ck_assert_int_eq(kvmsaveCheckSaveFlags(VIR_DOMAIN_SAVE_RUNNING |
                                               VIR_DOMAIN_SAVE_PAUSED,
                                               allowed[i], FUNC), -1);
        KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "mutually exclusive");
    }
}
END_TEST


START_TEST(test_check_flags_refuses_unknown_bits_naming_function)
{
    ck_assert_int_eq(kvmsaveCheckSaveFlags(1U << 20, KVMSAVE_SAVE_FLAGS,
                                           FUNC), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, FUNC);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "0x100000");

    /* Only the offending bits are reported, the allowed one is not. */
    virResetLastError();
    ck_assert_int_eq(kvmsaveCheckSaveFlags(VIR_DOMAIN_SAVE_BYPASS_CACHE |
                                           0x80000000U,
                                           KVMSAVE_SAVE_FLAGS,
                                           "virDomainRestoreFlags"), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "(0x80000000)");
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "virDomainRestoreFlags");
}
END_TEST


START_TEST(test_check_flags_refuses_known_flag_not_allowed_here)
{
    /* RESET_NVRAM is a restore flag, not a save flag. */
    ck_assert_int_eq(kvmsaveCheckSaveFlags(VIR_DOMAIN_SAVE_RESET_NVRAM,
                                           KVMSAVE_SAVE_FLAGS, FUNC), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, FUNC);

    /* Defining an image's XML does not bypass any cache. */
    virResetLastError();
    ck_assert_int_eq(kvmsaveCheckSaveFlags(VIR_DOMAIN_SAVE_BYPASS_CACHE,
                                           KVMSAVE_IMAGE_DEFINE_FLAGS,
                                           "virDomainSaveImageDefineXML"), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "virDomainSaveImageDefineXML");
}
END_TEST


/* ---- kvmsaveParseSaveParams ---- */

START_TEST(test_parse_params_takes_file_and_dxml)
{
    virTypedParameter params[2];
    const char *file = NULL;
    const char *dxml = NULL;

    setStringParam(&params[0], VIR_DOMAIN_SAVE_PARAM_FILE, "/var/lib/x.img");
    setStringParam(&params[1], VIR_DOMAIN_SAVE_PARAM_DXML, "<domain/>");
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 2, &file, &dxml, NULL, NULL, NULL), 0);
    KT_ASSERT_NO_ERROR();
    ck_assert_ptr_eq(file, params[0].value.s);
    ck_assert_ptr_eq(dxml, params[1].value.s);
    ck_assert_str_eq(file, "/var/lib/x.img");
    ck_assert_str_eq(dxml, "<domain/>");
}
END_TEST


START_TEST(test_parse_params_image_format_only_where_taken)
{
    virTypedParameter params[2];
    const char *file = NULL;
    const char *dxml = NULL;
    const char *format = NULL;

    setStringParam(&params[0], VIR_DOMAIN_SAVE_PARAM_FILE, "/x.img");
    setStringParam(&params[1], KVMSAVE_SAVE_PARAM_IMAGE_FORMAT, "zstd");
    /* saveParams takes it ... */
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 2, &file, &dxml, &format, NULL, NULL), 0);
    ck_assert_str_eq(format, "zstd");
    ck_assert_ptr_null(dxml);
    /* ... restoreParams does not */
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 2, &file, &dxml, NULL, NULL, NULL), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "image_format");
    virResetLastError();
    /* and only once */
    setStringParam(&params[0], KVMSAVE_SAVE_PARAM_IMAGE_FORMAT, "raw");
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 2, &file, &dxml, &format, NULL, NULL), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "more than once");
}
END_TEST


START_TEST(test_parse_params_restore_mode_only_where_taken)
{
    virTypedParameter params[2];
    const char *file = NULL;
    const char *dxml = NULL;
    const char *mode = NULL;

    setStringParam(&params[0], VIR_DOMAIN_SAVE_PARAM_FILE, "/x.img");
    setStringParam(&params[1], KVMSAVE_RESTORE_PARAM_RESTORE_MODE, "lazy");
    /* restoreParams takes it ... */
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 2, &file, &dxml, NULL, &mode, NULL), 0);
    ck_assert_str_eq(mode, "lazy");
    ck_assert_int_eq(kvmsaveRestoreModeFromString(mode), KVMSAVE_RESTORE_MODE_LAZY);
    ck_assert_int_eq(kvmsaveRestoreModeFromString("eager"), KVMSAVE_RESTORE_MODE_EAGER);
    ck_assert_int_eq(kvmsaveRestoreModeFromString("later"), -1);
    /* ... saveParams does not */
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 2, &file, &dxml, NULL, NULL, NULL), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "restore_mode");
    virResetLastError();
    /* a string */
    setIntParam(&params[1], KVMSAVE_RESTORE_PARAM_RESTORE_MODE, 1);
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 2, &file, &dxml, NULL, &mode, NULL), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "must be a string");
}
END_TEST


START_TEST(test_parse_params_parallel_channels)
{
    virTypedParameter params[2];
    const char *file = NULL;
    const char *dxml = NULL;
    const char *format = NULL;
    int channels = -1;
    static const int bad[] = { 0, -1, KVMSAVE_PARALLEL_CHANNELS_MAX + 1 };
    size_t i;

    setStringParam(&params[0], VIR_DOMAIN_SAVE_PARAM_FILE, "/x.img");
    setIntParam(&params[1], KVMSAVE_SAVE_PARAM_PARALLEL_CHANNELS, 3);
    /* saves and restores take it, an int */
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 2, &file, &dxml, &format, NULL,
                                            &channels), 0);
    ck_assert_int_eq(channels, 3);
    channels = -1;
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 2, &file, &dxml, NULL, NULL,
                                            &channels), 0);
    ck_assert_int_eq(channels, 3);
    /* absent is 0, the default */
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 1, &file, &dxml, NULL, NULL,
                                            &channels), 0);
    ck_assert_int_eq(channels, 0);
    KT_ASSERT_NO_ERROR();

    /* where it is not taken, the message lists what is */
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 2, &file, &dxml, NULL, NULL,
                                            NULL), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "unknown parameter 'parallel.channels'");
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "'file', 'dxml' here");
    virResetLastError();

    for (i = 0; i < G_N_ELEMENTS(bad); i++) {
        setIntParam(&params[1], KVMSAVE_SAVE_PARAM_PARALLEL_CHANNELS, bad[i]);
        ck_assert_int_eq(kvmsaveParseSaveParams(params, 2, &file, &dxml, NULL, NULL,
                                                &channels), -1);
        KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "must be between 1 and 16");
        virResetLastError();
    }
    setStringParam(&params[1], KVMSAVE_SAVE_PARAM_PARALLEL_CHANNELS, "2");
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 2, &file, &dxml, NULL, NULL,
                                            &channels), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "must be an integer");
    virResetLastError();

    /* libvirt-python passes a Python int as an unsigned long long */
    params[1].type = VIR_TYPED_PARAM_ULLONG;
    params[1].value.ul = 4;
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 2, &file, &dxml, NULL, NULL,
                                            &channels), 0);
    ck_assert_int_eq(channels, 4);
    params[1].value.ul = 1ULL << 40;
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 2, &file, &dxml, NULL, NULL,
                                            &channels), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "must be between 1 and 16");
    virResetLastError();

    setIntParam(&params[0], KVMSAVE_SAVE_PARAM_PARALLEL_CHANNELS, 2);
    setIntParam(&params[1], KVMSAVE_SAVE_PARAM_PARALLEL_CHANNELS, 2);
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 2, &file, &dxml, NULL, NULL,
                                            &channels), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "more than once");
}
END_TEST


START_TEST(test_parse_params_order_does_not_matter)
{
    virTypedParameter params[2];
    const char *file = NULL;
    const char *dxml = NULL;

    setStringParam(&params[0], VIR_DOMAIN_SAVE_PARAM_DXML, "<domain/>");
    setStringParam(&params[1], VIR_DOMAIN_SAVE_PARAM_FILE, "/x.img");
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 2, &file, &dxml, NULL, NULL, NULL), 0);
    ck_assert_str_eq(file, "/x.img");
    ck_assert_str_eq(dxml, "<domain/>");
}
END_TEST


START_TEST(test_parse_params_file_only_leaves_dxml_null)
{
    virTypedParameter params[1];
    const char *file = NULL;
    const char *dxml = "stale";

    setStringParam(&params[0], VIR_DOMAIN_SAVE_PARAM_FILE, "/x.img");
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 1, &file, &dxml, NULL, NULL, NULL), 0);
    ck_assert_str_eq(file, "/x.img");
    ck_assert_ptr_null(dxml);
}
END_TEST


START_TEST(test_parse_params_empty_list_gives_nulls)
{
    const char *file = "stale";
    const char *dxml = "stale";

    ck_assert_int_eq(kvmsaveParseSaveParams(NULL, 0, &file, &dxml, NULL, NULL, NULL), 0);
    KT_ASSERT_NO_ERROR();
    ck_assert_ptr_null(file);
    ck_assert_ptr_null(dxml);
}
END_TEST


START_TEST(test_parse_params_refuses_unknown_name)
{
    virTypedParameter params[2];
    const char *file = NULL;
    const char *dxml = NULL;

    setStringParam(&params[0], VIR_DOMAIN_SAVE_PARAM_FILE, "/x.img");
    setStringParam(&params[1], "bandwidth", "100");
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 2, &file, &dxml, NULL, NULL, NULL), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "'bandwidth'");
}
END_TEST


START_TEST(test_parse_params_refuses_wrong_type)
{
    virTypedParameter params[1];
    const char *file = NULL;
    const char *dxml = NULL;

    setIntParam(&params[0], VIR_DOMAIN_SAVE_PARAM_FILE, 42);
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 1, &file, &dxml, NULL, NULL, NULL), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "must be a string");
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, VIR_DOMAIN_SAVE_PARAM_FILE);

    virResetLastError();
    setIntParam(&params[0], VIR_DOMAIN_SAVE_PARAM_DXML, 0);
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 1, &file, &dxml, NULL, NULL, NULL), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "must be a string");
}
END_TEST


START_TEST(test_parse_params_refuses_duplicate)
{
    virTypedParameter params[3];
    const char *file = NULL;
    const char *dxml = NULL;

    setStringParam(&params[0], VIR_DOMAIN_SAVE_PARAM_FILE, "/a.img");
    setStringParam(&params[1], VIR_DOMAIN_SAVE_PARAM_DXML, "<domain/>");
    setStringParam(&params[2], VIR_DOMAIN_SAVE_PARAM_FILE, "/b.img");
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 3, &file, &dxml, NULL, NULL, NULL), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "more than once");
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, VIR_DOMAIN_SAVE_PARAM_FILE);

    virResetLastError();
    setStringParam(&params[2], VIR_DOMAIN_SAVE_PARAM_DXML, "<domain/>");
    ck_assert_int_eq(kvmsaveParseSaveParams(params, 3, &file, &dxml, NULL, NULL, NULL), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "more than once");
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, VIR_DOMAIN_SAVE_PARAM_DXML);
}
END_TEST


START_TEST(test_parse_params_refuses_invalid_list)
{
    virTypedParameter params[1];
    const char *file = NULL;
    const char *dxml = NULL;

    setStringParam(&params[0], VIR_DOMAIN_SAVE_PARAM_FILE, "/a.img");
    ck_assert_int_eq(kvmsaveParseSaveParams(params, -1, &file, &dxml, NULL, NULL, NULL), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "invalid typed parameter list");

    virResetLastError();
    ck_assert_int_eq(kvmsaveParseSaveParams(NULL, 1, &file, &dxml, NULL, NULL, NULL), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "invalid typed parameter list");
}
END_TEST


static Suite *
flagsSuite(void)
{
    Suite *s = suite_create("kvmsave_args");
    TCase *tc;

    tc = ktTCase("save_flags", 10);
    tcase_add_test(tc, test_check_flags_accepts_allowed_combinations);
    tcase_add_test(tc, test_check_flags_refuses_running_with_paused);
    tcase_add_test(tc, test_check_flags_refuses_unknown_bits_naming_function);
    tcase_add_test(tc, test_check_flags_refuses_known_flag_not_allowed_here);
    suite_add_tcase(s, tc);

    tc = ktTCase("save_params", 10);
    tcase_add_test(tc, test_parse_params_takes_file_and_dxml);
    tcase_add_test(tc, test_parse_params_image_format_only_where_taken);
    tcase_add_test(tc, test_parse_params_restore_mode_only_where_taken);
    tcase_add_test(tc, test_parse_params_parallel_channels);
    tcase_add_test(tc, test_parse_params_order_does_not_matter);
    tcase_add_test(tc, test_parse_params_file_only_leaves_dxml_null);
    tcase_add_test(tc, test_parse_params_empty_list_gives_nulls);
    tcase_add_test(tc, test_parse_params_refuses_unknown_name);
    tcase_add_test(tc, test_parse_params_refuses_wrong_type);
    tcase_add_test(tc, test_parse_params_refuses_duplicate);
    tcase_add_test(tc, test_parse_params_refuses_invalid_list);
    suite_add_tcase(s, tc);

    return s;
}


int
main(void)
{
    return ktRunSuite(flagsSuite);
}
