/*
 * kvmsave_qmp.h: a QMP connection of kvmsave's own, with out-of-band
 * commands
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * libvirt's monitor does not negotiate out-of-band execution, and its
 * commands run in QEMU's main loop. A lazy restore needs a command that
 * runs while the main loop waits for a page that has not arrived
 * (migrate-recover, after its page server was lost), so it keeps a
 * monitor of its own, negotiated while QEMU still answers.
 */
#pragma once

#include "internal.h"
#include "virjson.h"

typedef struct _kvmsaveQmp kvmsaveQmp;

/* Connect to the QMP socket @path and negotiate out-of-band execution,
 * waiting at most @timeout milliseconds for each answer. */
kvmsaveQmp *kvmsaveQmpConnect(const char *path, int timeout);

/* A connection negotiated by another process, on descriptor @fd (taken). */
kvmsaveQmp *kvmsaveQmpAdopt(int fd, int timeout);

void kvmsaveQmpFree(kvmsaveQmp *qmp);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(kvmsaveQmp, kvmsaveQmpFree);

int kvmsaveQmpFD(kvmsaveQmp *qmp);

/* The status of the last MIGRATION event read on @qmp while it waited
 * for an answer ("completed", "postcopy-paused", ...), or NULL. */
const char *kvmsaveQmpMigrationStatus(kvmsaveQmp *qmp);

/* Run @cmd with @args (taken; may be NULL), out of band if @oob. Returns
 * QEMU's answer: 0, or 1 when QEMU refused the command, with its
 * description in *@qemuError; -1 with an error when the connection
 * failed. */
int kvmsaveQmpCommand(kvmsaveQmp *qmp, const char *cmd, virJSONValue *args,
                      bool oob, char **qemuError);
/* The same, passing @passfd (not taken) with the command, for getfd. */
int kvmsaveQmpCommandFD(kvmsaveQmp *qmp, const char *cmd, virJSONValue *args,
                        bool oob, int passfd, char **qemuError);
