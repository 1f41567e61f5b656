/*
 * kvmsave_stream.h: the plumbing of QEMU's migration streams that a save
 * and a restore share
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Each stream gets a thread: a save's reads QEMU's stream into the image
 * (kvmsave_save.c), a restore's feeds the image to QEMU (kvmsave_feed.c).
 * A stream set runs those threads, keeps the error of each that failed
 * and tells which failed first: its error explains the others' broken
 * pipes. A single save stream reaches QEMU through a socket pair handed
 * over by name (a stream channel); several go through the socket of a
 * multifd directory, which the journal records for recovery.
 */
#pragma once

#include "internal.h"
#include "kvmsave_job.h"
#include "kvmsave_journal.h"
#include "kvmsave_multifd.h"

typedef struct _kvmsaveStreamSet kvmsaveStreamSet;

/* The work of stream @i's thread on *@fd, our end of QEMU's stream (or
 * -1: the function opens it there itself). The set closes *@fd when it
 * returns: 0 when the stream went through, 1 when the thread was told to
 * stop, -1 with an error reported. */
typedef int (*kvmsaveStreamFunc)(size_t i, int *fd, void *opaque);

/* Called in stream @i's thread right after it failed and its error was
 * kept; @first when no other stream had failed before. */
typedef void (*kvmsaveStreamFailedFunc)(size_t i, bool first, void *opaque);

/* A set of @n streams whose threads, named @name, run @func (and @failed,
 * if not NULL) with @opaque. */
kvmsaveStreamSet *kvmsaveStreamSetNew(const char *name, size_t n,
                                      kvmsaveStreamFunc func,
                                      kvmsaveStreamFailedFunc failed,
                                      void *opaque);

/* Start stream @i's thread on @fd (taken; -1 for none yet). */
void kvmsaveStreamSetStart(kvmsaveStreamSet *set, size_t i, int fd);

/* How many streams were started. */
size_t kvmsaveStreamSetStarted(kvmsaveStreamSet *set);

/* Wait until the threads of all streams ended (0), one failed (-1) or
 * @job was cancelled (-2, nothing reported). */
int kvmsaveStreamSetWait(kvmsaveStreamSet *set, kvmsaveJob *job);

/* Join the started threads in order; -1 at the first that failed (or
 * stopped), leaving the rest to kvmsaveStreamSetFree. */
int kvmsaveStreamSetJoin(kvmsaveStreamSet *set);

/* Join the threads that are left (whoever runs them must have told them
 * to stop) and free the set. Returns the error of the stream that failed
 * first, NULL if none did; *@which (if not NULL) is that stream. */
virErrorPtr kvmsaveStreamSetFree(kvmsaveStreamSet *set, size_t *which);


typedef struct _kvmsaveStreamChannel kvmsaveStreamChannel;

/* A single stream's channel: a connected pair of unix stream sockets,
 * close-on-exec, and a name for QEMU's end that is unique to the job,
 * made of @what. QEMU moves its stream through a socket faster than
 * through a pipe (docs/performance.md). */
kvmsaveStreamChannel *kvmsaveStreamChannelNew(const char *what);

/* Our end of the channel, now the caller's. */
int kvmsaveStreamChannelTakeOurs(kvmsaveStreamChannel *ch);

/* Hand QEMU's end to the QEMU of @dom through its monitor and have it
 * migrate into it. */
int kvmsaveStreamChannelMigrate(kvmsaveStreamChannel *ch, virDomainPtr dom);

/* Close what is left; QEMU gives back its end if it took it but did not
 * start migrating into it. */
void kvmsaveStreamChannelFree(kvmsaveStreamChannel *ch);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveStreamChannel, kvmsaveStreamChannelFree);


/* Name a directory for QEMU's multifd sockets (kvmsaveMultifdDirName) and
 * record it in @journal, to be written with its next phase before the
 * directory is created (kvmsaveMultifdNew*): recovery after a killed
 * client removes it, and no kill leaves one the journal does not name. */
char *kvmsaveStreamJournalDir(kvmsaveJournal *journal);
