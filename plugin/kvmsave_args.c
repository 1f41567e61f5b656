/*
 * kvmsave_args.c: argument checks shared by the driver's entry points
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


int
kvmsaveParseSaveParams(virTypedParameterPtr params, int nparams,
                       const char **file, const char **dxml,
                       const char **format)
{
    int i;
    bool seenFile = false;
    bool seenDxml = false;
    bool seenFormat = false;

    *file = NULL;
    *dxml = NULL;
    if (format)
        *format = NULL;
    if (nparams < 0 || (nparams > 0 && !params)) {
        virReportError(VIR_ERR_INVALID_ARG, "%s",
                       _("invalid typed parameter list"));
        return -1;
    }
    for (i = 0; i < nparams; i++) {
        const char **slot = NULL;
        bool *seen = NULL;

        if (STREQ(params[i].field, VIR_DOMAIN_SAVE_PARAM_FILE)) {
            slot = file;
            seen = &seenFile;
        } else if (STREQ(params[i].field, VIR_DOMAIN_SAVE_PARAM_DXML)) {
            slot = dxml;
            seen = &seenDxml;
        } else if (format &&
                   STREQ(params[i].field, KVMSAVE_SAVE_PARAM_IMAGE_FORMAT)) {
            slot = format;
            seen = &seenFormat;
        }

        if (!slot) {
            if (format)
                virReportError(VIR_ERR_INVALID_ARG,
                               _("unknown parameter '%s' (kvmsave takes '%s', '%s' and '%s')"),
                               params[i].field, VIR_DOMAIN_SAVE_PARAM_FILE,
                               VIR_DOMAIN_SAVE_PARAM_DXML,
                               KVMSAVE_SAVE_PARAM_IMAGE_FORMAT);
            else
                virReportError(VIR_ERR_INVALID_ARG,
                               _("unknown parameter '%s' (kvmsave takes '%s' and '%s')"),
                               params[i].field, VIR_DOMAIN_SAVE_PARAM_FILE,
                               VIR_DOMAIN_SAVE_PARAM_DXML);
            return -1;
        }
        if (params[i].type != VIR_TYPED_PARAM_STRING) {
            virReportError(VIR_ERR_INVALID_ARG,
                           _("parameter '%s' must be a string"), params[i].field);
            return -1;
        }
        if (*seen) {
            virReportError(VIR_ERR_INVALID_ARG,
                           _("parameter '%s' given more than once"),
                           params[i].field);
            return -1;
        }
        *seen = true;
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
    unsigned int flags = VIR_DOMAIN_SAVE_RUNNING;

    if (startFlags & VIR_DOMAIN_START_PAUSED)
        flags = VIR_DOMAIN_SAVE_PAUSED;
    if (startFlags & VIR_DOMAIN_START_BYPASS_CACHE)
        flags |= VIR_DOMAIN_SAVE_BYPASS_CACHE;
    if (startFlags & VIR_DOMAIN_START_RESET_NVRAM)
        flags |= VIR_DOMAIN_SAVE_RESET_NVRAM;
    return flags;
}
