/*
 * kvmsave_incoming.h: a restore's QEMU, started by the inner driver as the
 * destination of a migration whose source is the image
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "internal.h"

typedef struct _kvmsaveIncoming kvmsaveIncoming;

/* Start guest @xml (named @name) on @inner, paused, waiting for its state
 * on the unix socket @socketPath that its QEMU creates and listens on:
 * one connection for a single stream, or the main stream and then
 * @channels multifd channels when @channels > 0. @paused: the guest is to
 * stay paused when the state is loaded. */
kvmsaveIncoming *kvmsaveIncomingPrepare(virConnectPtr inner, const char *xml,
                                        const char *name,
                                        const char *socketPath,
                                        unsigned int channels, bool paused);

/* The state was all sent: wait until QEMU has loaded it, then resume the
 * guest (or leave it paused). Returns the inner domain, or NULL with an
 * error when QEMU failed to load it; the inner driver then stopped it. */
virDomainPtr kvmsaveIncomingFinish(kvmsaveIncoming *in);

/* Free @in. A guest that was prepared but not finished is the caller's
 * to destroy: libvirt's incoming job ends with it. */
void kvmsaveIncomingFree(kvmsaveIncoming *in);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveIncoming, kvmsaveIncomingFree);
