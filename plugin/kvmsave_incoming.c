/*
 * kvmsave_incoming.c: a restore's QEMU, started by the inner driver as the
 * destination of a migration whose source is the image
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * libvirt's own migration destination (Prepare3/Finish3, the calls a
 * peer-to-peer migration makes over a daemon too) starts QEMU with
 * -incoming, hands it the address, tracks the incoming job, and stops
 * QEMU if the connection that prepared it closes before Finish. A guest
 * started so carries nothing of the mechanism in its XML and is not
 * tainted, unlike one started with <qemu:commandline> arguments.
 *
 * Prepare expects the cookie a migration source sends. kvmsave sends the
 * least libvirt accepts: the guest's name and UUID and a source host of
 * its own (libvirt refuses a migration from its own host UUID, and 9.0
 * dereferences the cookie's capabilities, so an empty list is sent).
 */
#include <config.h>

#include "kvmsave_incoming.h"
#include "kvmsave_xml.h"
#include "libvirt_internal.h"
#include "virbuffer.h"
#include "virerror.h"
#include "virlog.h"
#include "virtypedparam.h"
#include "viruuid.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.incoming");

#define KVMSAVE_INCOMING_HOSTNAME "kvmsave-image"

struct _kvmsaveIncoming {
    virConnectPtr inner;
    virTypedParameterPtr params;
    int nparams;
    unsigned int flags;
};


/* The migration cookie of a source that is an image. */
static char *
kvmsaveIncomingCookie(const char *xml, const char *name)
{
    g_auto(virBuffer) buf = VIR_BUFFER_INITIALIZER;
    g_autofree char *uuid = NULL;
    unsigned char host[VIR_UUID_BUFLEN];
    char hoststr[VIR_UUID_STRING_BUFLEN];

    if (!(uuid = kvmsaveXMLGetUUID(xml)))
        return NULL;
    if (virUUIDGenerate(host) < 0) {
        virReportError(VIR_ERR_INTERNAL_ERROR, "%s",
                       _("cannot generate a UUID for the restore's source"));
        return NULL;
    }
    virUUIDFormat(host, hoststr);

    virBufferAddLit(&buf, "<qemu-migration>\n");
    virBufferAdjustIndent(&buf, 2);
    virBufferEscapeString(&buf, "<name>%s</name>\n", name);
    virBufferEscapeString(&buf, "<uuid>%s</uuid>\n", uuid);
    virBufferAddLit(&buf, "<hostname>" KVMSAVE_INCOMING_HOSTNAME "</hostname>\n");
    virBufferAsprintf(&buf, "<hostuuid>%s</hostuuid>\n", hoststr);
    virBufferAddLit(&buf, "<capabilities/>\n");
    virBufferAdjustIndent(&buf, -2);
    virBufferAddLit(&buf, "</qemu-migration>\n");
    return virBufferContentAndReset(&buf);
}


void
kvmsaveIncomingFree(kvmsaveIncoming *in)
{
    if (!in)
        return;
    virTypedParamsFree(in->params, in->nparams);
    g_free(in);
}


kvmsaveIncoming *
kvmsaveIncomingPrepare(virConnectPtr inner, const char *xml, const char *name,
                       const char *socketPath, unsigned int channels,
                       bool paused)
{
    g_autoptr(kvmsaveIncoming) in = g_new0(kvmsaveIncoming, 1);
    g_autofree char *cookie = NULL;
    g_autofree char *uri = g_strdup_printf("unix://%s", socketPath);
    g_autofree char *uriOut = NULL;
    g_autofree char *cookieOut = NULL;
    int cookieOutLen = 0;
    int maxparams = 0;

    in->inner = inner;
    if (paused)
        in->flags |= VIR_MIGRATE_PAUSED;
    if (virTypedParamsAddString(&in->params, &in->nparams, &maxparams,
                                VIR_MIGRATE_PARAM_DEST_XML, xml) < 0 ||
        virTypedParamsAddString(&in->params, &in->nparams, &maxparams,
                                VIR_MIGRATE_PARAM_DEST_NAME, name) < 0 ||
        virTypedParamsAddString(&in->params, &in->nparams, &maxparams,
                                VIR_MIGRATE_PARAM_URI, uri) < 0)
        return NULL;
    if (channels > 0) {
        in->flags |= VIR_MIGRATE_PARALLEL;
        if (virTypedParamsAddInt(&in->params, &in->nparams, &maxparams,
                                 VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS,
                                 channels) < 0)
            return NULL;
    }
    if (!(cookie = kvmsaveIncomingCookie(xml, name)))
        return NULL;

    VIR_DEBUG("preparing incoming state of %s on %s, %u channels, flags 0x%x",
              name, socketPath, channels, in->flags);
    if (virDomainMigratePrepare3Params(inner, in->params, in->nparams,
                                       cookie, strlen(cookie) + 1,
                                       &cookieOut, &cookieOutLen,
                                       &uriOut, in->flags) < 0)
        return NULL;
    return g_steal_pointer(&in);
}


virDomainPtr
kvmsaveIncomingFinish(kvmsaveIncoming *in)
{
    g_autofree char *cookieOut = NULL;
    int cookieOutLen = 0;

    return virDomainMigrateFinish3Params(in->inner, in->params, in->nparams,
                                         NULL, 0, &cookieOut, &cookieOutLen,
                                         in->flags, 0);
}
