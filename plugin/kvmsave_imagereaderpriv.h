/*
 * kvmsave_imagereaderpriv.h: image reader functions for the tests only
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "kvmsave_imagereader.h"

/* The stream of the chunk of a kvmsave image read last. */
unsigned int kvmsaveImageReaderLastStream(kvmsaveImageReader *r);
