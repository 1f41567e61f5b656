/*
 * kvmsave_uri.h: which daemon an inner URI such as qemu:///system reaches
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "internal.h"

/* Where libvirt's remote driver looks for the system daemons' sockets:
 * LOCALSTATEDIR/run/libvirt of libvirt's own build (remote_sockets.c). */
#define KVMSAVE_DAEMON_SOCKET_DIR "/var/run/libvirt"

/* Make @uri, an inner URI, reach the daemon a plain client would reach.
 *
 * Inside the embedded process libvirt's remote driver believes it runs in
 * a daemon: it always takes the modular daemon's socket (virtqemud-sock)
 * and refuses mode=legacy. For a local daemon URI (DRIVER[+unix]:///system
 * or /session, no server) this picks the socket as the remote driver's
 * "auto" mode does for a plain client: the modular daemon's if it exists,
 * else libvirtd's; mode=legacy or mode=direct (from @uri, else @confMode,
 * libvirt.conf's remote_mode) picks one of them; an explicit socket= is
 * kept. *@result is then DRIVER+unix:///PATH?...&socket=SOCKET&mode=direct
 * (the "+unix" with a socket makes libvirt route it to the remote driver
 * even when this process also holds an embedded QEMU driver).
 *
 * *@result is NULL when @uri is left as it is: not a local daemon URI, an
 * unknown mode (the remote driver reports it), or a user session whose
 * daemon is not running (the remote driver starts it). With neither
 * socket present for the system daemons, reports VIR_ERR_NO_CONNECT naming
 * both and returns -1. @sockDir: the system sockets' directory
 * (KVMSAVE_DAEMON_SOCKET_DIR; another one in tests). */
int kvmsaveURIForDaemon(const char *uri, const char *confMode, bool readonly,
                        const char *sockDir, char **result);
