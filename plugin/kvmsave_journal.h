/*
 * kvmsave_journal.h: what a save or restore has done so far, on disk
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * A job writes ROOT/run/kvmsave/jobs/UUID.job and keeps an open file
 * description lock on it while it runs. The kernel drops the lock when the
 * process dies, however it dies: a journal whose lock can be taken is the
 * record of a job whose client was killed, and the next connection to the
 * root finishes or undoes it (kvmsaveJournalRecover). See
 * docs/architecture.md, "Recovery after a killed client".
 */
#pragma once

#include "kvmsave_conn.h"

typedef struct _kvmsaveJournal kvmsaveJournal;

typedef enum {
    KVMSAVE_JOURNAL_SAVE,
    KVMSAVE_JOURNAL_RESTORE,
} kvmsaveJournalKind;

/* Start the journal of a job on guest @uuid (not written until the first
 * kvmsaveJournalWrite). A live journal of another process for the same
 * guest: VIR_ERR_OPERATION_INVALID, as a second job in this process. A
 * dead one is recovered first, and *@recovered (if given) set: that may
 * have put a new image in place, which a restore must then read. */
kvmsaveJournal *kvmsaveJournalBegin(kvmsaveConn *priv,
                                    const unsigned char *uuid,
                                    kvmsaveJournalKind kind,
                                    bool *recovered);

/* Set a field (kept until the next write). */
void kvmsaveJournalSet(kvmsaveJournal *j, const char *key, const char *value);
void kvmsaveJournalSetInt(kvmsaveJournal *j, const char *key, long long value);

/* Record that the job reached @phase, with every field set so far. */
int kvmsaveJournalWrite(kvmsaveJournal *j, const char *phase);

/* The job ended (well or not, with everything undone): remove the journal. */
void kvmsaveJournalEnd(kvmsaveJournal *j);

/* The directory of @priv's journals (and of their board, kvmsave_jobboard.h). */
char *kvmsaveJournalDir(kvmsaveConn *priv);

/* Whether a live process holds the journal at @path. */
bool kvmsaveJournalIsLive(const char *path);

/* Finish or undo the jobs of killed clients, once per connection open. */
void kvmsaveJournalRecover(kvmsaveConn *priv);
/* Before that, and before the embedded driver's reconnects are waited
 * for: kill the QEMUs of killed clients' restores that were still loading
 * multifd streams (kvmsaveRecoverKillLoader). */
void kvmsaveJournalKillLoaders(kvmsaveConn *priv);
