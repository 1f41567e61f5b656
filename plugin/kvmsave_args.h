/*
 * kvmsave_args.h: argument checks shared by the driver's entry points
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "internal.h"

#define KVMSAVE_SAVE_FLAGS (VIR_DOMAIN_SAVE_BYPASS_CACHE | \
                            VIR_DOMAIN_SAVE_RUNNING | \
                            VIR_DOMAIN_SAVE_PAUSED)
#define KVMSAVE_RESTORE_FLAGS (KVMSAVE_SAVE_FLAGS | \
                               VIR_DOMAIN_SAVE_RESET_NVRAM)
#define KVMSAVE_IMAGE_DEFINE_FLAGS (VIR_DOMAIN_SAVE_RUNNING | \
                                    VIR_DOMAIN_SAVE_PAUSED)

/* Check @flags against @allowed and for RUNNING together with PAUSED;
 * VIR_ERR_INVALID_ARG naming @func otherwise. */
int kvmsaveCheckSaveFlags(unsigned int flags, unsigned int allowed,
                          const char *func);

/* libvirt 11.2's name for the image format of a save. */
#define KVMSAVE_SAVE_PARAM_IMAGE_FORMAT "image_format"

/* libvirt's name for the number of parallel channels between QEMU and
 * the image: for a save, QEMU multifd channels (above 1); for a restore,
 * the workers that verify and decode chunks (architecture.md). */
#define KVMSAVE_SAVE_PARAM_PARALLEL_CHANNELS "parallel.channels"
#define KVMSAVE_PARALLEL_CHANNELS_MAX 16

/* kvmsave's own restore parameter: "eager" or "lazy" (kvmsave_lazy.h). */
#define KVMSAVE_RESTORE_PARAM_RESTORE_MODE "restore_mode"

typedef enum {
    KVMSAVE_RESTORE_MODE_EAGER,
    KVMSAVE_RESTORE_MODE_LAZY,
} kvmsaveRestoreMode;

/* KVMSAVE_RESTORE_MODE_* of @mode, or -1 (nothing reported). */
int kvmsaveRestoreModeFromString(const char *mode);

/* Take "file", "dxml" and, when @format, @mode resp. @channels is not
 * NULL, "image_format", "restore_mode" and "parallel.channels" (an int,
 * 1 to KVMSAVE_PARALLEL_CHANNELS_MAX) from typed parameters; anything
 * else, a wrong type or value or a repeated name is VIR_ERR_INVALID_ARG.
 * Absent parameters are NULL resp. 0. */
int kvmsaveParseSaveParams(virTypedParameterPtr params, int nparams,
                           const char **file, const char **dxml,
                           const char **format, const char **mode,
                           int *channels);

/* Private restore flags: the restore mode a caller chose, over the
 * configuration's default. */
#define KVMSAVE_RESTORE_LAZY (1U << 30)
#define KVMSAVE_RESTORE_EAGER (1U << 29)

/* Start flags (virDomainCreate*) a restore can honour: paused,
 * bypass-cache, reset-nvram; VIR_ERR_INVALID_ARG for the others, naming
 * @source, what the domain restores from. */
int kvmsaveCheckStartFlags(unsigned int flags, const char *source);

/* Not a libvirt flag: the restore is a start (of a managed save image or
 * a migrateFrom), which stock libvirt reports paused as SUSPENDED/PAUSED,
 * where a restore asked paused is SUSPENDED/RESTORED. */
#define KVMSAVE_RESTORE_IS_START (1U << 31)

/* The restore flags for start flags: running unless paused was asked;
 * KVMSAVE_RESTORE_IS_START. */
unsigned int kvmsaveStartToRestoreFlags(unsigned int startFlags);
