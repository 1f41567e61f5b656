/*
 * kvmsave_embed.h: the embedded QEMU driver's background work in a client
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "internal.h"

/* Call once the inner connection to the QEMU driver embedded in this
 * process is open. Returns when the driver has reconnected to every
 * running guest, and makes exit() stop the driver's threads before the
 * libraries' destructors run. Only the first call in a process waits. */
void kvmsaveEmbedSettle(virConnectPtr inner);

/* Before opening the QEMU driver embedded under @root: 0 if this process
 * may, -1 (VIR_ERR_RESOURCE_BUSY) naming the process that holds it. */
int kvmsaveEmbedCheckFree(const char *root);

/* Before opening the QEMU driver embedded under @root, the first time in
 * this process: give each guest status that a client killed in libvirt
 * 9.0's stop left without its monitor that monitor back, so that the
 * driver loads it and finishes the stop. */
void kvmsaveEmbedRepairStatuses(const char *root);
