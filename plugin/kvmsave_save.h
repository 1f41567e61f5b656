/*
 * kvmsave_save.h: the save engine
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "kvmsave_conn.h"

/* Save the running or paused guest @uuid into an image at @path (absolute),
 * stopping it. @dxml, if set, replaces the saved XML (ABI-checked).
 * @format: KVMSAVE_IMAGE_ENCODING_* of the chunks. @channels: QEMU
 * multifd channels, each a stream of its own in the image (above 1; 0 or
 * 1 for one stream, at most KVMSAVE_PARALLEL_CHANNELS_MAX).
 * @flags: VIR_DOMAIN_SAVE_BYPASS_CACHE, _RUNNING, _PAUSED. */
int kvmsaveSaveDomain(kvmsaveConn *priv, const unsigned char *uuid,
                      const char *path, const char *dxml, int format,
                      int channels, unsigned int flags);
