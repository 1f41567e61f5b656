/*
 * kvmsave_jobboard.c: save and restore jobs as every process sees them
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <fcntl.h>
#include <unistd.h>

#include "kvmsave_jobboard.h"
#include "kvmsave_journal.h"
#include "kvmsave_util.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"
#include "viruuid.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.jobboard");

#define KVMSAVE_JOBBOARD_GROUP "job"

struct _kvmsaveJobBoard {
    char *status;               /* JOBS/board/UUID.status */
    char *abort;                /* JOBS/board/UUID.abort */
    gint64 started;             /* wall clock, microseconds */
};


/* JOBS/board/UUID.@suffix, and JOBS/UUID.job in *@journal if asked. */
static char *
kvmsaveJobBoardPath(kvmsaveConn *priv, const unsigned char *uuid,
                    const char *suffix, char **journal)
{
    g_autofree char *dir = kvmsaveJournalDir(priv);
    char uuidstr[VIR_UUID_STRING_BUFLEN];

    virUUIDFormat(uuid, uuidstr);
    if (journal)
        *journal = g_strdup_printf("%s/%s.job", dir, uuidstr);
    return g_strdup_printf("%s/board/%s.%s", dir, uuidstr, suffix);
}


kvmsaveJobBoard *
kvmsaveJobBoardNew(kvmsaveConn *priv, const unsigned char *uuid)
{
    g_autoptr(kvmsaveJobBoard) board = g_new0(kvmsaveJobBoard, 1);
    g_autofree char *dir = NULL;

    board->status = kvmsaveJobBoardPath(priv, uuid, "status", NULL);
    board->abort = kvmsaveJobBoardPath(priv, uuid, "abort", NULL);
    board->started = g_get_real_time();
    dir = g_path_get_dirname(board->status);
    if (g_mkdir_with_parents(dir, 0700) < 0) {
        virReportSystemError(errno, _("cannot create the job board directory '%s'"),
                             dir);
        return NULL;
    }
    /* This process holds the guest's journal: no job of it runs elsewhere. */
    kvmsaveUnlinkIfExists(board->abort);
    return g_steal_pointer(&board);
}


void
kvmsaveJobBoardForget(const char *journal)
{
    g_autofree char *dir = g_path_get_dirname(journal);
    g_autofree char *base = g_path_get_basename(journal);
    g_autofree char *uuid = NULL;
    const char *suffixes[] = { "status", "abort" };
    size_t i;

    if (!g_str_has_suffix(base, ".job"))
        return;
    uuid = g_strndup(base, strlen(base) - strlen(".job"));
    for (i = 0; i < G_N_ELEMENTS(suffixes); i++) {
        g_autofree char *path = g_strdup_printf("%s/board/%s.%s", dir, uuid,
                                                suffixes[i]);

        kvmsaveUnlinkIfExists(path);
    }
}


int
kvmsaveJobBoardAttach(kvmsaveConn *priv, kvmsaveJob *job,
                      const unsigned char *uuid)
{
    kvmsaveJobBoard *board;

    if (priv->embedded)
        return 0;
    if (!(board = kvmsaveJobBoardNew(priv, uuid)))
        return -1;
    kvmsaveJobSetBoard(job, board);
    return 0;
}


void
kvmsaveJobBoardFree(kvmsaveJobBoard *board)
{
    if (!board)
        return;
    kvmsaveUnlinkIfExists(board->abort);
    g_free(board->status);
    g_free(board->abort);
    g_free(board);
}


void
kvmsaveJobBoardPublish(kvmsaveJobBoard *board, const kvmsaveJobFigures *fig,
                       bool committed)
{
    g_autoptr(GKeyFile) kf = g_key_file_new();
    g_autofree char *text = NULL;
    gsize len;

    g_key_file_set_integer(kf, KVMSAVE_JOBBOARD_GROUP, "operation", fig->operation);
    g_key_file_set_int64(kf, KVMSAVE_JOBBOARD_GROUP, "started", board->started);
    g_key_file_set_uint64(kf, KVMSAVE_JOBBOARD_GROUP, "elapsed", fig->elapsed);
    g_key_file_set_uint64(kf, KVMSAVE_JOBBOARD_GROUP, "bps", fig->bps);
    g_key_file_set_uint64(kf, KVMSAVE_JOBBOARD_GROUP, "total", fig->total);
    g_key_file_set_uint64(kf, KVMSAVE_JOBBOARD_GROUP, "processed", fig->processed);
    g_key_file_set_boolean(kf, KVMSAVE_JOBBOARD_GROUP, "ended", fig->ended);
    g_key_file_set_boolean(kf, KVMSAVE_JOBBOARD_GROUP, "ok", fig->ok);
    g_key_file_set_boolean(kf, KVMSAVE_JOBBOARD_GROUP, "cancelled", fig->cancelled);
    g_key_file_set_boolean(kf, KVMSAVE_JOBBOARD_GROUP, "committed", committed);
    if (fig->errmsg)
        g_key_file_set_string(kf, KVMSAVE_JOBBOARD_GROUP, "error", fig->errmsg);
    text = g_key_file_to_data(kf, &len, NULL);
    /* Not synced: the status matters while the job runs, and an fsync
     * could wait behind the save's own writeback. */
    if (kvmsaveReplaceFile(board->status, text, len) < 0)
        VIR_WARN("cannot publish the job's status in %s: %s",
                 board->status, g_strerror(errno));
}


bool
kvmsaveJobBoardAbortAsked(kvmsaveJobBoard *board)
{
    return access(board->abort, F_OK) == 0;
}


/* The status at @path; NULL if there is none (or none readable). */
static GKeyFile *
kvmsaveJobBoardLoad(const char *path, kvmsaveJobFigures *fig, char **errmsg,
                    bool *committed)
{
    g_autoptr(GKeyFile) kf = g_key_file_new();
    const char *g = KVMSAVE_JOBBOARD_GROUP;
    gint64 started;

    if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, NULL))
        return NULL;
    memset(fig, 0, sizeof(*fig));
    fig->timed = true;
    fig->operation = g_key_file_get_integer(kf, g, "operation", NULL);
    started = g_key_file_get_int64(kf, g, "started", NULL);
    fig->elapsed = g_key_file_get_uint64(kf, g, "elapsed", NULL);
    fig->bps = g_key_file_get_uint64(kf, g, "bps", NULL);
    fig->total = g_key_file_get_uint64(kf, g, "total", NULL);
    fig->processed = MIN(g_key_file_get_uint64(kf, g, "processed", NULL), fig->total);
    fig->ended = g_key_file_get_boolean(kf, g, "ended", NULL);
    fig->ok = g_key_file_get_boolean(kf, g, "ok", NULL);
    fig->cancelled = g_key_file_get_boolean(kf, g, "cancelled", NULL);
    *committed = g_key_file_get_boolean(kf, g, "committed", NULL);
    *errmsg = g_key_file_get_string(kf, g, "error", NULL);
    /* A running job's time goes on after its last publication. */
    if (!fig->ended && started > 0 && g_get_real_time() > started)
        fig->elapsed = (g_get_real_time() - started) / 1000;
    return g_steal_pointer(&kf);
}


int
kvmsaveJobBoardRead(kvmsaveConn *priv, const unsigned char *uuid,
                    bool completed, bool keep, kvmsaveJobFigures *fig,
                    char **errmsg)
{
    g_autofree char *journal = NULL;
    g_autofree char *path = kvmsaveJobBoardPath(priv, uuid, "status", &journal);
    g_autoptr(GKeyFile) kf = NULL;
    bool committed;

    if (priv->embedded ||
        !(kf = kvmsaveJobBoardLoad(path, fig, errmsg, &committed)))
        return 0;
    /* A running job whose process died is the next connection's to
     * recover, not a job to show. */
    if (completed != fig->ended ||
        (!fig->ended && !kvmsaveJournalIsLive(journal))) {
        g_clear_pointer(errmsg, g_free);
        return 0;
    }
    if (completed && !keep)
        ignore_value(unlink(path));
    return 1;
}


int
kvmsaveJobBoardGetStats(kvmsaveConn *priv, const unsigned char *uuid,
                        bool completed, bool keep, int *type,
                        virTypedParameterPtr *params, int *nparams)
{
    g_autofree char *errmsg = NULL;
    kvmsaveJobFigures fig;

    if (kvmsaveJobBoardRead(priv, uuid, completed, keep, &fig, &errmsg) == 0)
        return 0;
    fig.errmsg = errmsg;
    if (kvmsaveJobFiguresToParams(&fig, params, nparams) < 0)
        return -1;
    *type = kvmsaveJobFiguresType(&fig);
    return 1;
}


int
kvmsaveJobBoardGetInfo(kvmsaveConn *priv, const unsigned char *uuid,
                       virDomainJobInfoPtr info)
{
    g_autofree char *errmsg = NULL;
    kvmsaveJobFigures fig;

    if (kvmsaveJobBoardRead(priv, uuid, false, true, &fig, &errmsg) == 0)
        return 0;
    kvmsaveJobFiguresToInfo(&fig, info);
    return 1;
}


int
kvmsaveJobBoardAbort(kvmsaveConn *priv, const unsigned char *uuid)
{
    g_autofree char *journal = NULL;
    g_autofree char *path = kvmsaveJobBoardPath(priv, uuid, "status", &journal);
    g_autofree char *abort = kvmsaveJobBoardPath(priv, uuid, "abort", NULL);
    g_autofree char *errmsg = NULL;
    g_autoptr(GKeyFile) kf = NULL;
    kvmsaveJobFigures fig;
    bool committed;
    VIR_AUTOCLOSE fd = -1;

    if (priv->embedded ||
        !(kf = kvmsaveJobBoardLoad(path, &fig, &errmsg, &committed)) ||
        fig.ended || !kvmsaveJournalIsLive(journal))
        return 0;
    if (committed) {
        virReportError(VIR_ERR_OPERATION_INVALID, "%s",
                       _("the job has completed its work and can no longer be cancelled"));
        return -1;
    }
    if ((fd = open(abort, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0) {
        virReportSystemError(errno, _("cannot ask the job to stop through '%s'"),
                             abort);
        return -1;
    }
    return 1;
}
