/*
 * kvmsave_job.c: save/restore jobs: one per guest, progress, cancel, stats
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include "kvmsave_job.h"
#include "kvmsave_jobboard.h"
#include "virerror.h"
#include "virtypedparam.h"
#include "viruuid.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

struct _kvmsaveJob {
    char uuid[VIR_UUID_STRING_BUFLEN];
    kvmsaveJobKind kind;
    gint64 started;             /* monotonic, microseconds */
    gint64 elapsed;             /* set when the job ends */
    unsigned long long total;
    unsigned long long processed;
    unsigned long long bps;
    bool cancelled;
    bool committed;             /* past the point of no return */
    bool ended;
    bool ok;
    char *errmsg;
    kvmsaveJobBoard *board;     /* seen by other processes there */
    gint64 published;           /* monotonic: last on the board */
};

/* Other processes see a job's progress this often. */
#define KVMSAVE_JOB_PUBLISH_US (100 * 1000)

/* Protects both tables and every field of the jobs in them. */
static GMutex kvmsaveJobLock;
static GHashTable *kvmsaveJobsActive;     /* UUID string -> kvmsaveJob */
static GHashTable *kvmsaveJobsCompleted;  /* UUID string -> kvmsaveJob */


static void
kvmsaveJobFree(kvmsaveJob *job)
{
    if (!job)
        return;
    kvmsaveJobBoardFree(job->board);
    g_free(job->errmsg);
    g_free(job);
}


static void
kvmsaveJobTablesInit(void)
{
    if (!kvmsaveJobsActive) {
        kvmsaveJobsActive = g_hash_table_new(g_str_hash, g_str_equal);
        kvmsaveJobsCompleted = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                                     (GDestroyNotify) kvmsaveJobFree);
    }
}


static const char *
kvmsaveJobKindName(kvmsaveJobKind kind)
{
    switch (kind) {
    case KVMSAVE_JOB_SAVE: return _("save");
    case KVMSAVE_JOB_RESTORE: return _("restore");
    case KVMSAVE_JOB_IMAGE_DEFINE: return _("save image define");
    }
    return "";
}


static void
kvmsaveJobReportBusy(kvmsaveJob *job)
{
    virReportError(VIR_ERR_OPERATION_INVALID,
                   _("another save/restore job is running for this guest (%s)"),
                   kvmsaveJobKindName(job->kind));
}


/* Elapsed time in ms and throughput in bytes/s; lock held. */
static void
kvmsaveJobTimes(kvmsaveJob *job, unsigned long long *elapsedMs,
                unsigned long long *bps)
{
    gint64 us = job->ended ? job->elapsed : g_get_monotonic_time() - job->started;

    *elapsedMs = us / 1000;
    if (job->bps)
        *bps = job->bps;
    else
        *bps = us > 0 ? job->processed * G_USEC_PER_SEC / us : 0;
}


/* The figures of @job; lock held. */
static void
kvmsaveJobGetFigures(kvmsaveJob *job, kvmsaveJobFigures *fig)
{
    memset(fig, 0, sizeof(*fig));
    fig->timed = true;
    kvmsaveJobTimes(job, &fig->elapsed, &fig->bps);
    fig->operation = job->kind == KVMSAVE_JOB_SAVE ?
        VIR_DOMAIN_JOB_OPERATION_SAVE : VIR_DOMAIN_JOB_OPERATION_RESTORE;
    fig->total = job->total;
    fig->processed = job->processed;
    fig->ended = job->ended;
    fig->ok = job->ok;
    fig->cancelled = job->cancelled;
    fig->errmsg = job->ended ? job->errmsg : NULL;
}


kvmsaveJob *
kvmsaveJobBegin(const unsigned char *uuid, kvmsaveJobKind kind)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveJobLock);
    kvmsaveJob *job;
    char uuidstr[VIR_UUID_STRING_BUFLEN];

    kvmsaveJobTablesInit();
    virUUIDFormat(uuid, uuidstr);
    if ((job = g_hash_table_lookup(kvmsaveJobsActive, uuidstr))) {
        kvmsaveJobReportBusy(job);
        return NULL;
    }
    job = g_new0(kvmsaveJob, 1);
    memcpy(job->uuid, uuidstr, sizeof(uuidstr));
    job->kind = kind;
    job->started = g_get_monotonic_time();
    g_hash_table_insert(kvmsaveJobsActive, job->uuid, job);
    return job;
}


void
kvmsaveJobEnd(kvmsaveJob *job, bool ok)
{
    ignore_value(kvmsaveJobEndStats(job, ok, NULL, NULL));
}


int
kvmsaveJobEndStats(kvmsaveJob *job, bool ok, virTypedParameterPtr *params,
                   int *nparams)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveJobLock);
    kvmsaveJobFigures fig;
    int ret = 0;

    if (!job)
        return 0;
    g_hash_table_remove(kvmsaveJobsActive, job->uuid);
    job->ended = true;
    job->ok = ok;
    job->elapsed = g_get_monotonic_time() - job->started;
    if (!ok)
        job->errmsg = g_strdup(virGetLastErrorMessage());
    kvmsaveJobGetFigures(job, &fig);
    if (job->board) {
        kvmsaveJobBoardPublish(job->board, &fig, job->committed);
        g_clear_pointer(&job->board, kvmsaveJobBoardFree);
    }
    /* Taken here: once the lock goes, another thread may take the
     * completed job, or end another one of the same guest. */
    if (params && ok && (ret = kvmsaveJobFiguresToParams(&fig, params, nparams)) == 0)
        ret = 1;
    if (job->kind == KVMSAVE_JOB_IMAGE_DEFINE) {
        kvmsaveJobFree(job);
        return ret;
    }
    g_hash_table_replace(kvmsaveJobsCompleted, job->uuid, job);
    return ret;
}


void
kvmsaveJobSetProgress(kvmsaveJob *job, unsigned long long total,
                      unsigned long long processed)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveJobLock);

    job->total = total;
    job->processed = MIN(processed, total);
}


void
kvmsaveJobSetTotal(kvmsaveJob *job, unsigned long long total)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveJobLock);

    job->total = total;
}


void
kvmsaveJobAddProcessed(kvmsaveJob *job, unsigned long long bytes)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveJobLock);

    job->processed += bytes;
}


void
kvmsaveJobSetRate(kvmsaveJob *job, unsigned long long bps)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveJobLock);

    job->bps = bps;
}


void
kvmsaveJobSetBoard(kvmsaveJob *job, kvmsaveJobBoard *board)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveJobLock);

    kvmsaveJobBoardFree(job->board);
    job->board = board;
    /* At once: a dead job's status may still be there. */
    job->published = g_get_monotonic_time();
    {
        kvmsaveJobFigures fig;

        kvmsaveJobGetFigures(job, &fig);
        kvmsaveJobBoardPublish(job->board, &fig, job->committed);
    }
}


bool
kvmsaveJobIsCancelled(kvmsaveJob *job)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveJobLock);
    gint64 now;

    if (!job->board)
        return job->cancelled;
    /* Other processes are heard and told at most every publish period:
     * the engines poll far more often, and each look is a syscall. */
    now = g_get_monotonic_time();
    if (now - job->published >= KVMSAVE_JOB_PUBLISH_US) {
        kvmsaveJobFigures fig;

        /* An abort from another process, as kvmsaveJobAbort from this one. */
        if (!job->cancelled && !job->committed &&
            kvmsaveJobBoardAbortAsked(job->board))
            job->cancelled = true;
        job->published = now;
        kvmsaveJobGetFigures(job, &fig);
        kvmsaveJobBoardPublish(job->board, &fig, job->committed);
    }
    return job->cancelled;
}


void
kvmsaveJobReportCancelled(kvmsaveJob *job)
{
    virReportError(VIR_ERR_OPERATION_ABORTED, _("%s job: canceled by client"),
                   kvmsaveJobKindName(job->kind));
}


/* The save or restore job of a guest, from @table; image defines are no
 * domain jobs to clients. Lock held. */
static kvmsaveJob *
kvmsaveJobLookup(GHashTable **table, const unsigned char *uuid)
{
    char uuidstr[VIR_UUID_STRING_BUFLEN];
    kvmsaveJob *job;

    kvmsaveJobTablesInit();
    virUUIDFormat(uuid, uuidstr);
    if (!(job = g_hash_table_lookup(*table, uuidstr)) ||
        job->kind == KVMSAVE_JOB_IMAGE_DEFINE)
        return NULL;
    return job;
}


int
kvmsaveJobCheckIdle(const unsigned char *uuid)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveJobLock);
    kvmsaveJob *job;

    if (!(job = kvmsaveJobLookup(&kvmsaveJobsActive, uuid)))
        return 0;
    kvmsaveJobReportBusy(job);
    return -1;
}


int
kvmsaveJobAbort(const unsigned char *uuid)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveJobLock);
    kvmsaveJob *job;

    if (!(job = kvmsaveJobLookup(&kvmsaveJobsActive, uuid)))
        return 0;
    if (job->committed) {
        virReportError(VIR_ERR_OPERATION_INVALID,
                       _("the %s job has completed its work and can no longer be cancelled"),
                       kvmsaveJobKindName(job->kind));
        return -1;
    }
    job->cancelled = true;
    return 1;
}


bool
kvmsaveJobCommit(kvmsaveJob *job)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveJobLock);

    if (job->cancelled ||
        (job->board && kvmsaveJobBoardAbortAsked(job->board))) {
        job->cancelled = true;
        return false;
    }
    job->committed = true;
    return true;
}


int
kvmsaveJobFiguresType(const kvmsaveJobFigures *fig)
{
    if (!fig->ended)
        return VIR_DOMAIN_JOB_UNBOUNDED;
    if (fig->ok)
        return VIR_DOMAIN_JOB_COMPLETED;
    return fig->cancelled ? VIR_DOMAIN_JOB_CANCELLED : VIR_DOMAIN_JOB_FAILED;
}


void
kvmsaveJobFiguresToInfo(const kvmsaveJobFigures *fig, virDomainJobInfoPtr info)
{
    memset(info, 0, sizeof(*info));
    info->type = VIR_DOMAIN_JOB_UNBOUNDED;
    info->timeElapsed = fig->elapsed;
    if (fig->bps && fig->total > fig->processed)
        info->timeRemaining = (fig->total - fig->processed) * 1000 / fig->bps;
    info->dataTotal = info->memTotal = fig->total;
    info->dataProcessed = info->memProcessed = fig->processed;
    info->dataRemaining = info->memRemaining = fig->total - fig->processed;
}


int
kvmsaveJobGetInfo(const unsigned char *uuid, virDomainJobInfoPtr info)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveJobLock);
    kvmsaveJobFigures fig;
    kvmsaveJob *job;

    if (!(job = kvmsaveJobLookup(&kvmsaveJobsActive, uuid)))
        return 0;
    kvmsaveJobGetFigures(job, &fig);
    kvmsaveJobFiguresToInfo(&fig, info);
    return 1;
}


int
kvmsaveJobFiguresToParams(const kvmsaveJobFigures *fig,
                          virTypedParameterPtr *params, int *nparams)
{
    /* The guest's state is its memory: "data" and "memory" agree. */
    const struct { const char *name; unsigned long long value; } fields[] = {
        { VIR_DOMAIN_JOB_DATA_TOTAL, fig->total },
        { VIR_DOMAIN_JOB_DATA_PROCESSED, fig->processed },
        { VIR_DOMAIN_JOB_DATA_REMAINING, fig->total - fig->processed },
        { VIR_DOMAIN_JOB_MEMORY_TOTAL, fig->total },
        { VIR_DOMAIN_JOB_MEMORY_PROCESSED, fig->processed },
        { VIR_DOMAIN_JOB_MEMORY_REMAINING, fig->total - fig->processed },
    };
    virTypedParameterPtr par = NULL;
    int npar = 0;
    int maxpar = 0;
    size_t i;

    if (virTypedParamsAddInt(&par, &npar, &maxpar, VIR_DOMAIN_JOB_OPERATION,
                             fig->operation) < 0)
        goto error;
    if (fig->timed &&
        (virTypedParamsAddULLong(&par, &npar, &maxpar,
                                 VIR_DOMAIN_JOB_TIME_ELAPSED, fig->elapsed) < 0 ||
         virTypedParamsAddULLong(&par, &npar, &maxpar,
                                 VIR_DOMAIN_JOB_MEMORY_BPS, fig->bps) < 0))
        goto error;
    for (i = 0; i < G_N_ELEMENTS(fields); i++) {
        if (virTypedParamsAddULLong(&par, &npar, &maxpar, fields[i].name,
                                    fields[i].value) < 0)
            goto error;
    }
    if (fig->ended &&
        virTypedParamsAddBoolean(&par, &npar, &maxpar,
                                 VIR_DOMAIN_JOB_SUCCESS, fig->ok) < 0)
        goto error;
    if (fig->errmsg &&
        virTypedParamsAddString(&par, &npar, &maxpar,
                                VIR_DOMAIN_JOB_ERRMSG, fig->errmsg) < 0)
        goto error;
    *params = par;
    *nparams = npar;
    return 0;

 error:
    virTypedParamsFree(par, npar);
    return -1;
}


int
kvmsaveJobGetStats(const unsigned char *uuid, bool completed, bool keep,
                   int *type, virTypedParameterPtr *params, int *nparams)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveJobLock);
    kvmsaveJobFigures fig;
    kvmsaveJob *job;

    if (!(job = kvmsaveJobLookup(completed ? &kvmsaveJobsCompleted :
                                 &kvmsaveJobsActive, uuid)))
        return 0;

    kvmsaveJobGetFigures(job, &fig);
    if (kvmsaveJobFiguresToParams(&fig, params, nparams) < 0)
        return -1;
    *type = kvmsaveJobFiguresType(&fig);

    if (completed && !keep) {
        g_hash_table_steal(kvmsaveJobsCompleted, job->uuid);
        kvmsaveJobFree(job);
    }
    return 1;
}
