/*
 * kvmsave_imagewriterpriv.h: image writer functions for the tests only
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "kvmsave_imagewriter.h"

/* Encoding workers for the chunks (default: one per CPU, at most 4). */
void kvmsaveImageWriterSetThreads(kvmsaveImageWriter *w, size_t threads);
