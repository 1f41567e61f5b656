/*
 * jobtest.c: the job table: one job per guest, cancel until commit,
 * progress and completed statistics
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include "testutil.h"
#include "kvmsave_job.h"
#include "viruuid.h"

#define UUID_A "0f2a1c5e-7d3b-4e8f-9a61-2b4c6d8e0a11"
#define UUID_B "5b9d3f71-c2e4-4a86-b0d1-7e3f5a9c2b44"


static void
uuidOf(const char *str, unsigned char *uuid)
{
    ck_assert_int_eq(virUUIDParse(str, uuid), 0);
}


START_TEST(test_one_job_per_guest)
{
    unsigned char a[VIR_UUID_BUFLEN];
    unsigned char b[VIR_UUID_BUFLEN];
    kvmsaveJob *ja;
    kvmsaveJob *jb;

    uuidOf(UUID_A, a);
    uuidOf(UUID_B, b);
    ck_assert_int_eq(kvmsaveJobCheckIdle(a), 0);
    ck_assert_ptr_nonnull(ja = kvmsaveJobBegin(a, KVMSAVE_JOB_SAVE));
    /* A second job on the guest is refused, another guest's is not. */
    ck_assert_ptr_null(kvmsaveJobBegin(a, KVMSAVE_JOB_RESTORE));
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_INVALID, "save");
    virResetLastError();
    ck_assert_int_eq(kvmsaveJobCheckIdle(a), -1);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_INVALID, "save");
    virResetLastError();
    ck_assert_ptr_nonnull(jb = kvmsaveJobBegin(b, KVMSAVE_JOB_RESTORE));
    kvmsaveJobEnd(ja, true);
    kvmsaveJobEnd(jb, false);
    ck_assert_int_eq(kvmsaveJobCheckIdle(a), 0);
    ck_assert_int_eq(kvmsaveJobCheckIdle(b), 0);
    /* The guest is free again. */
    ck_assert_ptr_nonnull(ja = kvmsaveJobBegin(a, KVMSAVE_JOB_RESTORE));
    kvmsaveJobEnd(ja, true);
}
END_TEST


START_TEST(test_cancel_until_commit_only)
{
    unsigned char a[VIR_UUID_BUFLEN];
    kvmsaveJob *job;

    uuidOf(UUID_A, a);
    /* No job: nothing to abort. */
    ck_assert_int_eq(kvmsaveJobAbort(a), 0);

    ck_assert_ptr_nonnull(job = kvmsaveJobBegin(a, KVMSAVE_JOB_SAVE));
    ck_assert(!kvmsaveJobIsCancelled(job));
    ck_assert_int_eq(kvmsaveJobAbort(a), 1);
    ck_assert(kvmsaveJobIsCancelled(job));
    ck_assert(!kvmsaveJobCommit(job));      /* too late for the job */
    kvmsaveJobReportCancelled(job);
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_ABORTED, "canceled by client");
    kvmsaveJobEnd(job, false);
    virResetLastError();

    ck_assert_ptr_nonnull(job = kvmsaveJobBegin(a, KVMSAVE_JOB_RESTORE));
    ck_assert(kvmsaveJobCommit(job));
    ck_assert_int_eq(kvmsaveJobAbort(a), -1);  /* too late for the client */
    KT_ASSERT_ERROR(VIR_ERR_OPERATION_INVALID, "can no longer be cancelled");
    ck_assert(!kvmsaveJobIsCancelled(job));
    kvmsaveJobEnd(job, true);
}
END_TEST


START_TEST(test_progress_and_completed_statistics)
{
    unsigned char a[VIR_UUID_BUFLEN];
    virDomainJobInfo info;
    virTypedParameterPtr params = NULL;
    int nparams = 0;
    int type = -1;
    unsigned long long v = 0;
    kvmsaveJob *job;

    uuidOf(UUID_A, a);
    ck_assert_int_eq(kvmsaveJobGetInfo(a, &info), 0);
    ck_assert_ptr_nonnull(job = kvmsaveJobBegin(a, KVMSAVE_JOB_RESTORE));
    kvmsaveJobSetTotal(job, 1000);
    kvmsaveJobAddProcessed(job, 300);
    kvmsaveJobAddProcessed(job, 100);
    ck_assert_int_eq(kvmsaveJobGetInfo(a, &info), 1);
    ck_assert_int_eq(info.type, VIR_DOMAIN_JOB_UNBOUNDED);
    ck_assert_uint_eq(info.dataTotal, 1000);
    ck_assert_uint_eq(info.dataProcessed, 400);
    ck_assert_uint_eq(info.dataRemaining, 600);
    kvmsaveJobSetProgress(job, 2000, 1500);
    ck_assert_int_eq(kvmsaveJobGetInfo(a, &info), 1);
    ck_assert_uint_eq(info.dataTotal, 2000);
    ck_assert_uint_eq(info.dataProcessed, 1500);
    ck_assert(kvmsaveJobCommit(job));
    kvmsaveJobEnd(job, true);

    /* Ended: no active job, and the completed one's figures kept. */
    ck_assert_int_eq(kvmsaveJobGetInfo(a, &info), 0);
    ck_assert_int_eq(kvmsaveJobGetStats(a, true, true, &type, &params, &nparams), 1);
    ck_assert_int_eq(type, VIR_DOMAIN_JOB_COMPLETED);
    ck_assert_int_eq(virTypedParamsGetULLong(params, nparams,
                                             VIR_DOMAIN_JOB_DATA_PROCESSED, &v), 1);
    ck_assert_uint_eq(v, 1500);
    virTypedParamsFree(params, nparams);
}
END_TEST


static Suite *
jobSuite(void)
{
    Suite *s = suite_create("job");
    TCase *tc = ktTCase("table", 10);

    tcase_add_test(tc, test_one_job_per_guest);
    tcase_add_test(tc, test_cancel_until_commit_only);
    tcase_add_test(tc, test_progress_and_completed_statistics);
    suite_add_tcase(s, tc);
    return s;
}


int
main(void)
{
    return ktRunSuite(jobSuite);
}
