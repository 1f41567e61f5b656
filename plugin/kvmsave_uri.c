/*
 * kvmsave_uri.c: which daemon an inner URI such as qemu:///system reaches
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * A plain client (virsh -c qemu:///system) reaches virtqemud or libvirtd,
 * whichever runs: remoteGetUNIXSocket in libvirt's remote_sockets.c. The
 * same URI opened inside kvmsave's embedded process would only ever try
 * virtqemud, so kvmsave makes the plain client's choice itself.
 */
#include <config.h>

#include <unistd.h>

#include "kvmsave_uri.h"
#include "virbuffer.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"
#include "viruri.h"
#include "virutil.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.uri");


int
kvmsaveURIForDaemon(const char *uristr, const char *confMode, bool readonly,
                    const char *sockDir, char **result)
{
    g_autoptr(virURI) uri = NULL;
    g_autofree char *driver = NULL;
    g_autofree char *daemon = NULL;
    g_autofree char *userDir = NULL;
    g_autofree char *direct = NULL;
    g_autofree char *legacy = NULL;
    g_autofree char *others = NULL;
    g_auto(virBuffer) buf = VIR_BUFFER_INITIALIZER;
    const char *plus;
    const char *sock = NULL;
    const char *mode = confMode;
    const char *suffix;
    bool user;
    size_t i;

    *result = NULL;
    if (!(uri = virURIParse(uristr)))
        return -1;
    /* Local daemons only: not remote hosts, other transports, or URIs a
     * driver in this process serves (test:///default, qemu:///embed). */
    if (!uri->scheme || uri->server || !uri->path ||
        (STRNEQ(uri->path, "/system") && STRNEQ(uri->path, "/session")))
        return 0;
    if ((plus = strchr(uri->scheme, '+')) && STRCASENEQ(plus + 1, "unix"))
        return 0;
    driver = plus ? g_strndup(uri->scheme, plus - uri->scheme)
                  : g_strdup(uri->scheme);

    /* As the remote driver reads them: any case, the last one counts. */
    for (i = 0; i < uri->paramsCount; i++) {
        virURIParam *p = &uri->params[i];

        if (STRCASEEQ(p->name, "socket")) {
            sock = p->value;
            p->ignore = true;
        } else if (STRCASEEQ(p->name, "mode")) {
            mode = p->value;
            p->ignore = true;
        }
    }

    if (!sock) {
        /* Non-root session daemons live in the user's runtime directory,
         * one socket for both read-only and read-write. */
        user = STREQ(uri->path, "/session") && geteuid() != 0;
        if (user)
            sockDir = userDir = virGetUserRuntimeDirectory();
        suffix = readonly && !user ? "sock-ro" : "sock";
        daemon = g_strdup_printf("virt%sd", driver);
        direct = g_strdup_printf("%s/%s-%s", sockDir, daemon, suffix);
        legacy = g_strdup_printf("%s/libvirt-%s", sockDir, suffix);

        if (!mode || STREQ(mode, "auto")) {
            if (virFileExists(direct)) {
                sock = direct;
            } else if (virFileExists(legacy)) {
                sock = legacy;
            } else if (user) {
                return 0;
            } else {
                virReportError(VIR_ERR_NO_CONNECT,
                               _("%s: no daemon serves it: neither '%s' (%s) nor '%s' (libvirtd) exists; start %s or libvirtd, or name the socket in the inner URI (socket=PATH)"),
                               uristr, direct, daemon, legacy, daemon);
                return -1;
            }
        } else if (STREQ(mode, "legacy")) {
            sock = legacy;
        } else if (STREQ(mode, "direct") && !user) {
            sock = direct;
        } else {
            return 0;
        }
    }

    /* mode=direct overrides a remote_mode in libvirt.conf, which the
     * remote driver would refuse here unless "direct". */
    if ((others = virURIFormatParams(uri)))
        virBufferAsprintf(&buf, "%s&", others);
    virBufferAddLit(&buf, "socket=");
    virBufferURIEncodeString(&buf, sock);
    virBufferAddLit(&buf, "&mode=direct");
    g_free(uri->query);
    uri->query = virBufferContentAndReset(&buf);
    g_free(uri->scheme);
    uri->scheme = g_strdup_printf("%s+unix", driver);
    *result = virURIFormat(uri);
    VIR_DEBUG("inner URI %s reaches %s as %s", uristr, sock, *result);
    return 0;
}
