/*
 * kvmsave_args.c: argument checks shared by the driver's entry points
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include "kvmsave_args.h"
#include "virerror.h"

#define VIR_FROM_THIS VIR_FROM_QEMU


int
kvmsaveCheckSaveFlags(unsigned int flags, unsigned int allowed,
                      const char *func)
{
    if (flags & ~allowed) {
        virReportError(VIR_ERR_INVALID_ARG,
                       _("unsupported flags (0x%x) in function %s"),
                       flags & ~allowed, func);
        return -1;
    }
    if ((flags & VIR_DOMAIN_SAVE_RUNNING) && (flags & VIR_DOMAIN_SAVE_PAUSED)) {
        virReportError(VIR_ERR_INVALID_ARG, "%s",
                       _("the running and paused flags are mutually exclusive"));
        return -1;
    }
    return 0;
}


/* The value of integer parameter @p, which must lie in [@min, @max]. */
static int
kvmsaveTypedParamGetInt(virTypedParameterPtr p, int min, int max, int *value)
{
    long long v;

    switch ((virTypedParameterType) p->type) {
    case VIR_TYPED_PARAM_INT:
        v = p->value.i;
        break;
    case VIR_TYPED_PARAM_UINT:
        v = p->value.ui;
        break;
    case VIR_TYPED_PARAM_LLONG:
        v = p->value.l;
        break;
    case VIR_TYPED_PARAM_ULLONG:
        v = MIN(p->value.ul, (unsigned long long) LLONG_MAX);
        break;
    case VIR_TYPED_PARAM_DOUBLE:
    case VIR_TYPED_PARAM_BOOLEAN:
    case VIR_TYPED_PARAM_STRING:
    case VIR_TYPED_PARAM_LAST:
    default:
        virReportError(VIR_ERR_INVALID_ARG,
                       _("parameter '%s' must be an integer"), p->field);
        return -1;
    }
    if (v < min || v > max) {
        virReportError(VIR_ERR_INVALID_ARG,
                       _("parameter '%s' must be between %d and %d, not %lld"),
                       p->field, min, max, v);
        return -1;
    }
    *value = v;
    return 0;
}


int
kvmsaveParseSaveParams(virTypedParameterPtr params, int nparams,
                       const char **file, const char **dxml,
                       const char **format, const char **mode, int *channels)
{
    int i;
    bool seenFile = false;
    bool seenDxml = false;
    bool seenFormat = false;
    bool seenMode = false;
    bool seenChannels = false;

    *file = NULL;
    *dxml = NULL;
    if (format)
        *format = NULL;
    if (mode)
        *mode = NULL;
    if (channels)
        *channels = 0;
    if (nparams < 0 || (nparams > 0 && !params)) {
        virReportError(VIR_ERR_INVALID_ARG, "%s",
                       _("invalid typed parameter list"));
        return -1;
    }
    for (i = 0; i < nparams; i++) {
        const char *name = params[i].field;
        const char **slot = NULL;
        bool *seen = NULL;

        if (STREQ(name, VIR_DOMAIN_SAVE_PARAM_FILE)) {
            slot = file;
            seen = &seenFile;
        } else if (STREQ(name, VIR_DOMAIN_SAVE_PARAM_DXML)) {
            slot = dxml;
            seen = &seenDxml;
        } else if (format && STREQ(name, KVMSAVE_SAVE_PARAM_IMAGE_FORMAT)) {
            slot = format;
            seen = &seenFormat;
        } else if (mode && STREQ(name, KVMSAVE_RESTORE_PARAM_RESTORE_MODE)) {
            slot = mode;
            seen = &seenMode;
        } else if (channels && STREQ(name, KVMSAVE_SAVE_PARAM_PARALLEL_CHANNELS)) {
            seen = &seenChannels;
        } else {
            g_autoptr(GString) names = g_string_new(NULL);

            g_string_append_printf(names, "'%s', '%s'", VIR_DOMAIN_SAVE_PARAM_FILE,
                                   VIR_DOMAIN_SAVE_PARAM_DXML);
            if (format)
                g_string_append_printf(names, ", '%s'", KVMSAVE_SAVE_PARAM_IMAGE_FORMAT);
            if (mode)
                g_string_append_printf(names, ", '%s'", KVMSAVE_RESTORE_PARAM_RESTORE_MODE);
            if (channels)
                g_string_append_printf(names, ", '%s'", KVMSAVE_SAVE_PARAM_PARALLEL_CHANNELS);
            virReportError(VIR_ERR_INVALID_ARG,
                           _("unknown parameter '%s' (kvmsave takes %s here)"),
                           name, names->str);
            return -1;
        }

        if (*seen) {
            virReportError(VIR_ERR_INVALID_ARG,
                           _("parameter '%s' given more than once"), name);
            return -1;
        }
        *seen = true;

        if (!slot) {
            /* parallel.channels: an int in libvirt, but any integer type
             * is taken (libvirt-python passes a Python int as ullong). */
            if (kvmsaveTypedParamGetInt(&params[i], 1,
                                        KVMSAVE_PARALLEL_CHANNELS_MAX,
                                        channels) < 0)
                return -1;
            continue;
        }
        if (params[i].type != VIR_TYPED_PARAM_STRING) {
            virReportError(VIR_ERR_INVALID_ARG,
                           _("parameter '%s' must be a string"), name);
            return -1;
        }
        *slot = params[i].value.s;
    }
    return 0;
}


int
kvmsaveCheckStartFlags(unsigned int flags, const char *source)
{
    unsigned int allowed = VIR_DOMAIN_START_PAUSED |
        VIR_DOMAIN_START_BYPASS_CACHE | VIR_DOMAIN_START_RESET_NVRAM;

    if (flags & ~allowed) {
        virReportError(VIR_ERR_INVALID_ARG,
                       _("start flags 0x%x cannot be used when the domain restores from %s (only paused, bypass-cache and reset-nvram)"),
                       flags & ~allowed, source);
        return -1;
    }
    return 0;
}


unsigned int
kvmsaveStartToRestoreFlags(unsigned int startFlags)
{
    unsigned int flags = VIR_DOMAIN_SAVE_RUNNING | KVMSAVE_RESTORE_IS_START;

    if (startFlags & VIR_DOMAIN_START_PAUSED)
        flags = VIR_DOMAIN_SAVE_PAUSED | KVMSAVE_RESTORE_IS_START;
    if (startFlags & VIR_DOMAIN_START_BYPASS_CACHE)
        flags |= VIR_DOMAIN_SAVE_BYPASS_CACHE;
    if (startFlags & VIR_DOMAIN_START_RESET_NVRAM)
        flags |= VIR_DOMAIN_SAVE_RESET_NVRAM;
    return flags;
}


int
kvmsaveRestoreModeFromString(const char *mode)
{
    if (STREQ(mode, "eager"))
        return KVMSAVE_RESTORE_MODE_EAGER;
    if (STREQ(mode, "lazy"))
        return KVMSAVE_RESTORE_MODE_LAZY;
    return -1;
}
