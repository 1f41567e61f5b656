/*
 * testutil.h: helpers shared by kvmsave's unit tests (Check framework)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "virerror.h"

/* Assert that the last libvirt error has @ecode and that its message
 * contains @substr. */
#define KT_ASSERT_ERROR(ecode, substr) \
    do { \
        virErrorPtr kt_err_ = virGetLastError(); \
        ck_assert_msg(kt_err_ != NULL, \
                      "expected error %d mentioning \"%s\", got no error", \
                      (int) (ecode), (substr)); \
        ck_assert_msg(kt_err_->code == (int) (ecode), \
                      "expected error code %d, got %d: %s", (int) (ecode), \
                      kt_err_->code, NULLSTR(kt_err_->message)); \
        ck_assert_msg(kt_err_->message && strstr(kt_err_->message, (substr)), \
                      "error message \"%s\" does not mention \"%s\"", \
                      NULLSTR(kt_err_->message), (substr)); \
    } while (0)

/* Assert that some error is set whose message contains @substr,
 * whatever its code. */
#define KT_ASSERT_ERROR_MSG(substr) \
    do { \
        const char *kt_msg_ = virGetLastError() ? virGetLastErrorMessage() : NULL; \
        ck_assert_msg(kt_msg_ != NULL, \
                      "expected an error mentioning \"%s\", got no error", \
                      (substr)); \
        ck_assert_msg(strstr(kt_msg_, (substr)) != NULL, \
                      "error message \"%s\" does not mention \"%s\"", \
                      kt_msg_, (substr)); \
    } while (0)

#define KT_ASSERT_NO_ERROR() \
    do { \
        virErrorPtr kt_err_ = virGetLastError(); \
        ck_assert_msg(kt_err_ == NULL, "unexpected error %d: %s", \
                      kt_err_ ? kt_err_->code : 0, \
                      kt_err_ ? NULLSTR(kt_err_->message) : ""); \
    } while (0)


/* Checked fixture: every test starts without a pending error. */
static inline void
ktResetError(void)
{
    virResetLastError();
}


/* Initialize libvirt, build and run the suite and return the exit status
 * for main(): non-zero when any test failed. */
static inline int
ktRunSuite(Suite *(*make)(void))
{
    SRunner *sr;
    int failed;

    if (virInitialize() < 0) {
        fprintf(stderr, "virInitialize failed: %s\n", virGetLastErrorMessage());
        return EXIT_FAILURE;
    }
    sr = srunner_create(make());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}


/* A TCase with the error-resetting fixture and a generous timeout. */
static inline TCase *
ktTCase(const char *name, double timeout)
{
    TCase *tc = tcase_create(name);

    tcase_add_checked_fixture(tc, ktResetError, ktResetError);
    tcase_set_timeout(tc, timeout);
    return tc;
}
