/*
 * kvmsave_multifd.h: the socket QEMU's migration streams go through
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * QEMU 7.2 opens a multifd migration's connections itself, to a socket
 * address: they cannot be handed to it as file descriptors (docs/
 * performance.md); and libvirt's incoming migration, which a restore
 * starts QEMU with, always listens on an address. So a save listens on,
 * and a restore connects to, a unix socket in a private directory whose
 * name nobody else can learn. The directory goes as soon as every stream
 * is connected, and every connection's peer must be the user QEMU runs as.
 */
#pragma once

#include "internal.h"

typedef struct _kvmsaveMultifd kvmsaveMultifd;

/* A name for a new private directory under the temporary directory, that
 * nothing has yet. A job names it in its journal before it creates it
 * with one of the functions below, so that a client killed at any point
 * leaves no directory that recovery does not know of. */
char *kvmsaveMultifdDirName(void);

/* Save: create @dir (0700, failing if it exists) for a socket that
 * running guest @dom's QEMU connects to; QEMU's user is the live XML's
 * DAC label. */
kvmsaveMultifd *kvmsaveMultifdNew(virDomainPtr dom, const char *dir);
/* Restore: ...for the socket that the QEMU of guest @xml, about to be
 * started on @conn, creates and listens on (docs/architecture.md). */
kvmsaveMultifd *kvmsaveMultifdNewIncoming(virConnectPtr conn, const char *xml,
                                          const char *dir);
/* Restore of one stream: ...for the FIFO the inner driver opens, as root;
 * nobody else may enter it. */
kvmsaveMultifd *kvmsaveMultifdNewPrivate(const char *dir);
/* Close and remove whatever is left. */
void kvmsaveMultifdFree(kvmsaveMultifd *m);
/* Leave the directory in place when @m is freed: another process
 * removes it (kvmsaveMultifdRemoveDir). */
void kvmsaveMultifdKeep(kvmsaveMultifd *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveMultifd, kvmsaveMultifdFree);

/* The directory (recorded for recovery) and the socket's path in it. */
const char *kvmsaveMultifdDir(kvmsaveMultifd *m);
const char *kvmsaveMultifdPath(kvmsaveMultifd *m);

/* Save: listen on the socket, for QEMU's user only. */
int kvmsaveMultifdListen(kvmsaveMultifd *m, unsigned int backlog);
/* Save: the next connection from QEMU, waiting at most @timeout ms.
 * Returns its fd, -2 when none came in time, -1 with an error. */
int kvmsaveMultifdAccept(kvmsaveMultifd *m, int timeout);
/* Restore: a connection to the socket QEMU listens on. */
int kvmsaveMultifdConnect(kvmsaveMultifd *m);
/* Restore, once connected: a pidfd of QEMU's process, or -1; its pid and
 * start time in @pid and @start, for the journal (@pid 0 if unknown). */
int kvmsaveMultifdPeerPidfd(kvmsaveMultifd *m, long long *pid,
                            unsigned long long *start);
/* Recovery: a pidfd of process @pid if it is still the one that started
 * at @start (kvmsaveMultifdPeerPidfd), else -1. */
int kvmsaveMultifdPidfdOf(long long pid, unsigned long long start);
/* SIGKILL the QEMU of @qemuPidfd and wait up to 5 s for it to exit;
 * -1 with errno set if it could not be killed or did not exit. */
int kvmsaveMultifdKillIncoming(int qemuPidfd);
/* Destroy @dom, whose QEMU (@qemuPidfd, or -1) is loading multifd streams
 * and never ran the guest. Such a QEMU may wait for its channels with
 * the BQL held (QEMU 7.2 to 10.0, multifd_recv_sync_main) and heed no
 * SIGTERM, whose handler only asks the blocked main loop to quit; libvirt
 * would then wait 10 s before its SIGKILL. Nothing in it needs a clean
 * exit, so kvmsave kills it if it outlives libvirt's SIGTERM by a grace
 * long enough for libvirt to have sent it: libvirt then stops the guest
 * as destroyed, not as crashed. */
int kvmsaveMultifdDestroyIncoming(virDomainPtr dom, int qemuPidfd);
/* Every stream is connected: remove the socket and the directory. */
void kvmsaveMultifdRemove(kvmsaveMultifd *m);

/* Recovery: remove directory @dir a killed client left, socket and all. */
void kvmsaveMultifdRemoveDir(const char *dir);
