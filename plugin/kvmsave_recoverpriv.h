/*
 * kvmsave_recoverpriv.h: the cgroup sweep of kvmsave_recover.c, for its
 * unit test (tests/unit/journaltest.c)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

/* Where the host mounts its cgroup hierarchies. */
#define KVMSAVE_CGROUP_ROOT "/sys/fs/cgroup"

/* Remove the cgroups under @cgroot (KVMSAVE_CGROUP_ROOT but in tests)
 * that a killed start of guest @name left in the QEMU driver embedded
 * at @root, in cgroup v1's layout or, when @cgroot is the unified
 * hierarchy, in cgroup v2's; groups still holding a task stay. */
void kvmsaveRecoverRemoveStaleCgroups(const char *cgroot, const char *root,
                                      const char *name);
