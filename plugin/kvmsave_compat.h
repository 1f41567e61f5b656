/*
 * kvmsave_compat.h: shims for what differs between libvirt releases
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * kvmsave builds against the internal headers of exactly one libvirt
 * release at a time. configure probes those headers (m4/kvmsave-compat.m4)
 * and this header fills in what one release has and another lacks, so the
 * rest of the code is written once.
 */
#pragma once

#include <limits.h>

#include "internal.h"
#include "datatypes.h"
#include "virstring.h"

/* libvirt 11 declares it in datatypes.h; older releases do not. */
#ifndef WITH_LIBVIRT_VIRDOMAIN_AUTOPTR
G_DEFINE_AUTOPTR_CLEANUP_FUNC(virDomain, virObjectUnref);
#endif

/* libvirt 11 dropped virStrToLong_l. */
#ifndef WITH_LIBVIRT_VIRSTRTOLONG_L
static inline int
virStrToLong_l(char const *s, char **end_ptr, int base, long *result)
{
    long long v;

    if (virStrToLong_ll(s, end_ptr, base, &v) < 0 || v < LONG_MIN || v > LONG_MAX)
        return -1;
    *result = v;
    return 0;
}
#endif
