/*
 * kvmsave_saveimage.h: save image files: the temporary file a save writes
 * and its commit, and the save-image calls
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "internal.h"

/* A name for the temporary file of an image at @path, in its directory,
 * that no file has yet: a job names it in its journal before it creates
 * it, so that a client killed at any point leaves no file recovery does
 * not know of. */
char *kvmsaveTempName(const char *path);

/* Create the temporary file @tmppath: 0600, O_EXCL, never following a
 * symlink. Returns the fd. */
int kvmsaveCreateTempAt(const char *tmppath, bool direct);

/* Both: a temporary file for @path; returns the fd and sets *tmppath. */
int kvmsaveCreateTemp(const char *path, bool direct, char **tmppath);

/* Make @tmppath (flushed) the file at @path. */
int kvmsaveCommitTemp(const char *tmppath, const char *path);

/* Rewrite the XML (and the running/paused choice) of the image at @path,
 * atomically. */
int kvmsaveSaveImageDefine(const char *path, const char *dxml,
                           unsigned int flags);
