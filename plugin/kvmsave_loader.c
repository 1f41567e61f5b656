/*
 * kvmsave_loader.c: the module libvirt loads, which loads kvmsave itself
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * kvmsave uses libvirt's private symbols, which are versioned per release
 * (LIBVIRT_PRIVATE_x.y.z). Loaded into another libvirt, the module fails in
 * libvirt's dlopen with "version 'LIBVIRT_PRIVATE_9.0.0' not found", which
 * says neither what kvmsave was built for nor what to do. So libvirt loads
 * this stub instead, which uses only libvirt's public API and libc: it
 * checks that the running libvirt has the private symbols kvmsave was built
 * against, then loads the real module (KVMSAVE_IMPL_NAME, in the stub's own
 * directory) and hands registration to it. On a mismatch it reports which
 * libvirt kvmsave was built for and how to rebuild it.
 */
#include <config.h>

#include <dlfcn.h>
#include <stdbool.h>
#include <libintl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "kvmsave_driver.h"

/* What the module was built for; tests/loader builds the stub with a
 * made-up release to see it refused. */
#ifndef KVMSAVE_BUILT_FOR
# define KVMSAVE_BUILT_FOR KVMSAVE_LIBVIRT_VERSION
#endif
#define KVMSAVE_PRIVATE_TAG "LIBVIRT_PRIVATE_" KVMSAVE_BUILT_FOR

#define _(str) dgettext(PACKAGE, str)

/* virReportErrorHelper is private too, but its signature has not changed
 * in years; looked up without a version, it reaches the running libvirt's,
 * so that virsh shows the message. */
typedef void (*kvmsaveReportFunc)(int domcode, int errcode,
                                  const char *filename, const char *funcname,
                                  size_t linenr, const char *fmt, ...);

/* Report @detail; @mismatch: the running libvirt is not the one kvmsave
 * was built for, else kvmsave's module did not load. */
static void
kvmsaveLoaderError(bool mismatch, const char *detail)
{
    unsigned long running = 0;
    char runningStr[32] = "?";
    char *msg;
    int rc;
    kvmsaveReportFunc report;

    if (virGetVersion(&running, NULL, NULL) == 0)
        snprintf(runningStr, sizeof(runningStr), "%lu.%lu.%lu",
                 running / 1000000, running / 1000 % 1000, running % 1000);
    if (mismatch)
        rc = asprintf(&msg,
                      _("kvmsave was built for libvirt %s (%s) and cannot run "
                        "in libvirt %s: %s. Rebuild and reinstall it against "
                        "this libvirt: ./configure && make && make install "
                        "(configure fetches the matching libvirt source)"),
                      KVMSAVE_BUILT_FOR, KVMSAVE_PRIVATE_TAG, runningStr, detail);
    else
        rc = asprintf(&msg,
                      _("kvmsave (built for libvirt %s, running in libvirt %s) "
                        "cannot be loaded: %s. Rebuild and reinstall it: "
                        "./configure && make && make install"),
                      KVMSAVE_BUILT_FOR, runningStr, detail);
    if (rc < 0)
        return;
    report = (kvmsaveReportFunc) dlsym(RTLD_DEFAULT, "virReportErrorHelper");
    if (report)
        report(VIR_FROM_NONE, VIR_ERR_OPERATION_FAILED,
               __FILE__, __func__, __LINE__, "%s", msg);
    else
        fprintf(stderr, "%s\n", msg);
    free(msg);
}

int
kvmsaveRegister(void)
{
    /* ./run points this at the build tree's catalogs (uninstalled use). */
    const char *localedir = getenv("KVMSAVE_LOCALEDIR");
    Dl_info self;
    char *path = NULL;
    const char *slash;
    void *impl;
    int (*reg)(void);

    bindtextdomain(PACKAGE, localedir && *localedir ? localedir : LOCALEDIR);
    bind_textdomain_codeset(PACKAGE, "UTF-8");

    /* The precise cause first: the private symbols' version node. */
    if (!dlvsym(RTLD_DEFAULT, "virObjectUnref", KVMSAVE_PRIVATE_TAG)) {
        kvmsaveLoaderError(true, _("its private symbols are missing"));
        return -1;
    }

    /* The real module sits beside this one (also in ./run's .drivers). */
    if (dladdr((void *) kvmsaveRegister, &self) == 0 || !self.dli_fname) {
        kvmsaveLoaderError(false, _("the loader cannot find its own file"));
        return -1;
    }
    slash = strrchr(self.dli_fname, '/');
    if (asprintf(&path, "%.*s%s",
                 slash ? (int) (slash - self.dli_fname + 1) : 0,
                 self.dli_fname, KVMSAVE_IMPL_NAME) < 0)
        return -1;
    impl = dlopen(path, RTLD_NOW | RTLD_GLOBAL | RTLD_NODELETE);
    free(path);
    if (!impl) {
        kvmsaveLoaderError(false, dlerror());
        return -1;
    }
    /* The handle's own kvmsaveRegister, not this one. */
    reg = (int (*)(void)) dlsym(impl, "kvmsaveRegister");
    if (!reg || reg == kvmsaveRegister) {
        kvmsaveLoaderError(false, _("the module lacks kvmsaveRegister"));
        return -1;
    }
    return reg();
}
