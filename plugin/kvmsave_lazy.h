/*
 * kvmsave_lazy.h: a lazy restore, whose guest runs as soon as its
 * devices are loaded while kvmsave-pagesrv serves its memory
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * QEMU starts with "-incoming defer" and a monitor of kvmsave's own, as
 * the destination of a postcopy migration whose source is the page
 * server (docs/architecture.md, "Lazy restore"). The page server runs as
 * a process of its own, started per restore, that outlives the client:
 * the restore returns once the guest runs, and the rest of its memory
 * streams in behind it. Other clients see that as the guest's job, from
 * the page server's status file.
 */
#pragma once

#include "kvmsave_conn.h"
#include "kvmsave_imagereader.h"
#include "kvmsave_job.h"

typedef struct _kvmsaveLazy kvmsaveLazy;

/* Whether the image of @reader can be restored lazily: it needs the page
 * layout of format 'sparse'. If not, a warning says that @path restores
 * eagerly. */
bool kvmsaveLazyPossible(kvmsaveImageReader *reader, const char *path);

/* Whether this host lets the inner driver's QEMU take pages on demand,
 * as far as kvmsave can tell before QEMU starts: 0, or -1 with
 * VIR_ERR_OPERATION_UNSUPPORTED naming the setting to change. */
int kvmsaveLazyCheckHost(virConnectPtr inner);

/* Prepare a lazy restore of the guest of @xml and @uuid, creating the
 * directory of its sockets @dir (kvmsaveMultifdDirName), which the
 * caller's journal names. */
kvmsaveLazy *kvmsaveLazyNew(kvmsaveConn *priv, const char *xml,
                            const unsigned char *uuid, const char *dir);
void kvmsaveLazyFree(kvmsaveLazy *lz);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveLazy, kvmsaveLazyFree);

/* The arguments QEMU must start with (NULL-terminated), before its
 * "-incoming defer". */
const char *const *kvmsaveLazyQemuArgs(kvmsaveLazy *lz);

/* With @dom started so, paused: start the page server on the image of
 * @reader and wait until QEMU has the devices' state and can run the
 * guest. The job is committed then. */
int kvmsaveLazyStart(kvmsaveLazy *lz, virDomainPtr dom,
                     kvmsaveImageReader *reader, const char *path,
                     kvmsaveJob *job);

/* Recovery after a client killed in a lazy restore of guest @uuid:
 * remove @dir, the directory its journal named, unless a page server
 * still runs (it removes the directory when it ends). */
void kvmsaveLazyRecoverDir(kvmsaveConn *priv, const unsigned char *uuid,
                           const char *dir);

/* For each lazy restore whose page server was lost with its supervisor
 * (both killed), QEMU waiting in postcopy-paused: start a new page server
 * that recovers it, from the same image file. Failures are logged. */
void kvmsaveLazyRecoverServers(kvmsaveConn *priv);

/* The lazy restore of @dom succeeded: while this process runs, its event
 * loop watches the page server's status file, and its kvmsave connections
 * get JOB_COMPLETED once the last page is in. */
void kvmsaveLazyWatch(kvmsaveConn *priv, virDomainPtr dom);

typedef enum {
    KVMSAVE_LAZY_NONE,
    KVMSAVE_LAZY_SERVING,       /* the guest runs, pages still come */
    KVMSAVE_LAZY_DONE,          /* QEMU has every page */
    KVMSAVE_LAZY_FAILED,
} kvmsaveLazyState;

/* The last lazy restore of guest @uuid, as its page server last said:
 * its state, and its job as @fig, whose errmsg points into *@error, the
 * error that ended it (or NULL). */
kvmsaveLazyState kvmsaveLazyGetJob(kvmsaveConn *priv, const unsigned char *uuid,
                                   kvmsaveJobFigures *fig, char **error);
