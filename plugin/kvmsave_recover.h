/*
 * kvmsave_recover.h: finishing or undoing the job of a killed client
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "kvmsave_conn.h"

/* Recover the job whose journal @path is open on @fd, locked by us, on
 * @priv's inner connection, whose URI is @ours; remove the journal.
 * False (and the journal's connection in *@foreign) when it is the job
 * of another connection's guest, left alone. */
bool kvmsaveRecoverJob(kvmsaveConn *priv, const char *ours, const char *path,
                       int fd, char **foreign);

/* Before the embedded driver's reconnects are waited for: kill the QEMU
 * of a killed client's restore whose journal, @path open on @fd and
 * locked by us, says it was still loading (kvmsaveRecoverJob then finds
 * its guest shut off). */
void kvmsaveRecoverKillLoader(const char *ours, const char *path, int fd);
