/*
 * kvmsave_multifd.h: the socket QEMU's multifd streams go through
 *
 * QEMU 7.2 opens a multifd migration's connections itself, to a socket
 * address: they cannot be handed to it as file descriptors (docs/
 * performance.md). So a save listens on, and a restore connects to, a unix
 * socket in a private directory whose name nobody else can learn. The
 * directory goes as soon as every stream is connected, and every
 * connection's peer must be the user QEMU runs as.
 */
#pragma once

#include "internal.h"

typedef struct _kvmsaveMultifd kvmsaveMultifd;

/* A new private directory for @dom's QEMU under the temporary directory,
 * for a socket that QEMU connects to, or (@qemuListens) that QEMU creates
 * and listens on; QEMU's user is the live XML's DAC label. */
kvmsaveMultifd *kvmsaveMultifdNew(virDomainPtr dom, bool qemuListens);
/* Close and remove whatever is left. */
void kvmsaveMultifdFree(kvmsaveMultifd *m);
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
/* Every stream is connected: remove the socket and the directory. */
void kvmsaveMultifdRemove(kvmsaveMultifd *m);

/* Recovery: remove directory @dir a killed client left, socket and all. */
void kvmsaveMultifdRemoveDir(const char *dir);
