/*
 * kvmsave_driver.h: the libvirt connection driver kvmsave registers
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

/* Called by libvirt when it loads libvirt_driver_kvmsave.so for a
 * kvmsave:///embed?root=DIR URI. */
int kvmsaveRegister(void);
