/*
 * kvmsave_jobboard.h: save and restore jobs as every process sees them
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * A job runs in the process that called save or restore. Over a daemon,
 * other clients (a second virsh, virt-manager, libvirt-guests polling
 * domjobinfo) ask their own process, so the job publishes its figures in
 * JOBS/board/UUID.status (JOBS: the journal's directory, shared by every
 * client of a daemon as root), at most every 100 ms and when it ends. The
 * file is replaced whole by rename(): a reader never sees it torn. The
 * journal's lock (kvmsave_journal.h) says whether the job's process still
 * lives. Another process asks the job to stop by creating
 * JOBS/board/UUID.abort, which the job looks for at its polls.
 */
#pragma once

#include "kvmsave_conn.h"
#include "kvmsave_job.h"

/* The board entry of the job on @uuid, whose journal this process holds.
 * A stale abort request is removed. */
kvmsaveJobBoard *kvmsaveJobBoardNew(kvmsaveConn *priv, const unsigned char *uuid);
/* Remove the board entry of the job whose journal was @journal
 * (JOBS/UUID.job), recovered after its process was killed. */
void kvmsaveJobBoardForget(const char *journal);

/* Put @job, on guest @uuid, on the board of @priv's daemon: nothing for
 * an embedded root, which no other process opens. 0, or -1 with an error
 * reported. */
int kvmsaveJobBoardAttach(kvmsaveConn *priv, kvmsaveJob *job,
                          const unsigned char *uuid);

/* Removes the abort request; the status stays for --completed. */
void kvmsaveJobBoardFree(kvmsaveJobBoard *board);

/* Replace the status with @fig (@committed: past the point of no return).
 * Errors are logged, not reported: the job does not fail for them. */
void kvmsaveJobBoardPublish(kvmsaveJobBoard *board, const kvmsaveJobFigures *fig,
                            bool committed);

/* Whether another process asked the job to stop. */
bool kvmsaveJobBoardAbortAsked(kvmsaveJobBoard *board);

/* The figures of another process's job on @uuid: its running job, or with
 * @completed the last one that ended (forgotten unless @keep). Returns 1
 * with *@fig filled (its errmsg in *@errmsg), 0 if there is none. */
int kvmsaveJobBoardRead(kvmsaveConn *priv, const unsigned char *uuid,
                        bool completed, bool keep, kvmsaveJobFigures *fig,
                        char **errmsg);

/* kvmsaveJobBoardRead as virDomainGetJobStats gives it: 1, 0 if there is
 * no such job, -1 on error. */
int kvmsaveJobBoardGetStats(kvmsaveConn *priv, const unsigned char *uuid,
                            bool completed, bool keep, int *type,
                            virTypedParameterPtr *params, int *nparams);

/* Another process's running job as virDomainJobInfo: 1, or 0 if none. */
int kvmsaveJobBoardGetInfo(kvmsaveConn *priv, const unsigned char *uuid,
                           virDomainJobInfoPtr info);

/* Ask another process's running job on @uuid to stop. Returns 1 if asked,
 * 0 if there is none, -1 (VIR_ERR_OPERATION_INVALID) if it is past its
 * point of no return or the request cannot be made. */
int kvmsaveJobBoardAbort(kvmsaveConn *priv, const unsigned char *uuid);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveJobBoard, kvmsaveJobBoardFree);
