/*
 * kvmsave_restore.h: the restore engine
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "kvmsave_conn.h"

/* Restore the guest saved in the image at @path (absolute). @dxml, if set,
 * replaces the saved XML (ABI-checked). @channels: workers verifying and
 * decoding chunks in parallel, 0 for the default. @flags:
 * VIR_DOMAIN_SAVE_BYPASS_CACHE, _RUNNING, _PAUSED, _RESET_NVRAM. Returns
 * the restored (outer) domain. */
virDomainPtr kvmsaveRestoreDomain(kvmsaveConn *priv, const char *path,
                                  const char *dxml, int channels,
                                  unsigned int flags);

/* The domain XML kept in the image at @path (checked: header and trailer);
 * @flags: VIR_DOMAIN_SAVE_IMAGE_XML_SECURE. */
char *kvmsaveRestoreImageXML(const char *path, unsigned int flags);
