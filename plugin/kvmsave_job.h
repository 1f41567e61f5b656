/*
 * kvmsave_job.h: save/restore jobs: one per guest, progress, cancel, stats
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * A job is keyed by the guest's UUID, so a restore has one before its
 * domain exists. The engines update progress from their threads; the
 * driver answers virDomainGetJobInfo/GetJobStats/AbortJob from here while
 * a job runs, and keeps the last completed job's statistics as libvirt
 * does (VIR_DOMAIN_JOB_STATS_COMPLETED).
 */
#pragma once

#include "internal.h"

typedef enum {
    KVMSAVE_JOB_SAVE,
    KVMSAVE_JOB_RESTORE,
    KVMSAVE_JOB_IMAGE_DEFINE,
} kvmsaveJobKind;

typedef struct _kvmsaveJob kvmsaveJob;
typedef struct _kvmsaveJobBoard kvmsaveJobBoard;

/* Start a job for @uuid; VIR_ERR_OPERATION_INVALID if one runs already. */
kvmsaveJob *kvmsaveJobBegin(const unsigned char *uuid, kvmsaveJobKind kind);
/* 0 if no save or restore of @uuid runs; else -1 with the same error as
 * kvmsaveJobBegin, for operations that must not overlap one (destroy,
 * undefine, define, start). */
int kvmsaveJobCheckIdle(const unsigned char *uuid);
/* End it; @ok false takes the current error as the job's error message.
 * Completed statistics are kept for save and restore jobs. */
void kvmsaveJobEnd(kvmsaveJob *job, bool ok);
/* The same; a job that ended well (@ok) also gives its completed
 * statistics in *@params (1), else 0, or -1 on error. */
int kvmsaveJobEndStats(kvmsaveJob *job, bool ok, virTypedParameterPtr *params,
                       int *nparams);

/* Progress: bytes of guest state in total and done so far. */
void kvmsaveJobSetProgress(kvmsaveJob *job, unsigned long long total,
                           unsigned long long processed);
void kvmsaveJobAddProcessed(kvmsaveJob *job, unsigned long long bytes);
void kvmsaveJobSetTotal(kvmsaveJob *job, unsigned long long total);
/* Throughput as measured by QEMU, bytes/s (0: compute from progress). */
void kvmsaveJobSetRate(kvmsaveJob *job, unsigned long long bps);

/* Show the job to other processes on @board (kvmsave_jobboard.h), and
 * take their abort requests from it; the job owns @board. */
void kvmsaveJobSetBoard(kvmsaveJob *job, kvmsaveJobBoard *board);

/* Whether the job was asked to stop. The engines call it at every poll,
 * so it also publishes the job's figures on its board. */
bool kvmsaveJobIsCancelled(kvmsaveJob *job);
/* Report VIR_ERR_OPERATION_ABORTED for a cancelled @job. */
void kvmsaveJobReportCancelled(kvmsaveJob *job);

/* Pass the point of no return: false if the job was cancelled before. */
bool kvmsaveJobCommit(kvmsaveJob *job);

/* Ask the job of @uuid to stop. Returns 1 if there was one, 0 if not,
 * -1 (VIR_ERR_OPERATION_INVALID) if it is past its point of no return. */
int kvmsaveJobAbort(const unsigned char *uuid);

/* The running job of @uuid as virDomainJobInfo. Returns 1 if there is
 * one, 0 if not. */
int kvmsaveJobGetInfo(const unsigned char *uuid, virDomainJobInfoPtr info);

/* What a job reports, from this process's jobs or from a page server's
 * status file. */
typedef struct {
    int operation;              /* virDomainJobOperation */
    bool timed;                 /* elapsed and bps are known */
    unsigned long long elapsed; /* ms */
    unsigned long long bps;
    unsigned long long total;
    unsigned long long processed;
    bool ended;
    bool ok;
    bool cancelled;
    const char *errmsg;
} kvmsaveJobFigures;

/* The virDomainJobType of @fig. */
int kvmsaveJobFiguresType(const kvmsaveJobFigures *fig);

/* A running job's @fig as virDomainJobInfo. */
void kvmsaveJobFiguresToInfo(const kvmsaveJobFigures *fig,
                             virDomainJobInfoPtr info);

/* @fig as the typed parameters of virDomainGetJobStats. */
int kvmsaveJobFiguresToParams(const kvmsaveJobFigures *fig,
                              virTypedParameterPtr *params, int *nparams);

/* Statistics of the running job (or, with @completed, of the last
 * completed one, forgotten unless @keep). Returns 1 when kvmsave has
 * them, 0 when not, -1 on error. */
int kvmsaveJobGetStats(const unsigned char *uuid, bool completed, bool keep,
                       int *type, virTypedParameterPtr *params, int *nparams);
