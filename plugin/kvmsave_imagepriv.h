/*
 * kvmsave_imagepriv.h: image codec functions for the tests only
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "kvmsave_image.h"

/* The name of a chunk encoding, or NULL. */
const char *kvmsaveImageFormatToString(int format);
