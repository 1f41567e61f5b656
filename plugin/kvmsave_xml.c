/*
 * kvmsave_xml.c: the kvmsave domain XML extension and XML rewriting
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Domain XML from users and from images is parsed with libxml2 with no
 * network access, no DTD loading and no entity substitution.
 */
#include <config.h>

#include <libxml/parser.h>
#include <libxml/relaxng.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include "kvmsave_xml.h"
#include "kvmsave_schema.h"
#include "domain_conf.h"
#include "virerror.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

#define QEMU_NS_URI "http://libvirt.org/schemas/domain/qemu/1.0"



static xmlDocPtr
kvmsaveXMLParseRoot(const char *xml, const char *rootName)
{
    xmlDocPtr doc;

    if (!xml) {
        virReportError(VIR_ERR_XML_ERROR, _("missing <%s> XML"), rootName);
        return NULL;
    }
    /* No XML_PARSE_NOENT (entities stay unexpanded), no DTD loading. */
    doc = xmlReadMemory(xml, strlen(xml), "domain.xml", NULL,
                        XML_PARSE_NONET | XML_PARSE_NOWARNING |
                        XML_PARSE_NOERROR);
    if (!doc || !xmlDocGetRootElement(doc)) {
        const xmlError *err = xmlGetLastError();
        virReportError(VIR_ERR_XML_ERROR, _("cannot parse <%s> XML: %s"),
                       rootName,
                       err && err->message ? err->message : _("empty document"));
        xmlFreeDoc(doc);
        return NULL;
    }
    /* A DTD could declare entities; domain XML never needs one. */
    if (doc->intSubset || doc->extSubset) {
        virReportError(VIR_ERR_XML_ERROR,
                       _("<%s> XML must not contain a document type declaration"),
                       rootName);
        xmlFreeDoc(doc);
        return NULL;
    }
    if (!xmlStrEqual(xmlDocGetRootElement(doc)->name, BAD_CAST rootName)) {
        virReportError(VIR_ERR_XML_ERROR,
                       _("expected <%s> as the XML's root element"), rootName);
        xmlFreeDoc(doc);
        return NULL;
    }
    return doc;
}


static xmlDocPtr
kvmsaveXMLParse(const char *xml)
{
    return kvmsaveXMLParseRoot(xml, "domain");
}


/* The root element, serialized without an XML declaration. */
static char *
kvmsaveXMLFormat(xmlDocPtr doc)
{
    xmlBufferPtr buf = xmlBufferCreate();
    char *ret;

    if (xmlNodeDump(buf, doc, xmlDocGetRootElement(doc), 0, 0) < 0) {
        xmlBufferFree(buf);
        virReportError(VIR_ERR_INTERNAL_ERROR, "%s",
                       _("cannot format domain XML"));
        return NULL;
    }
    ret = g_strdup_printf("%s\n", (const char *) xmlBufferContent(buf));
    xmlBufferFree(buf);
    return ret;
}


static xmlXPathObjectPtr
kvmsaveXMLEval(xmlDocPtr doc, const char *expr)
{
    g_autoptr(xmlXPathContext) ctxt = xmlXPathNewContext(doc);

    xmlXPathRegisterNs(ctxt, BAD_CAST "k", BAD_CAST KVMSAVE_XML_NS_URI);
    xmlXPathRegisterNs(ctxt, BAD_CAST "q", BAD_CAST QEMU_NS_URI);
    return xmlXPathEvalExpression(BAD_CAST expr, ctxt);
}


/* Validation errors are summed up in our own error, not printed. */
static void G_GNUC_PRINTF(2, 3)
kvmsaveXMLIgnoreError(void *ctx G_GNUC_UNUSED,
                      const char *msg G_GNUC_UNUSED, ...)
{
}


static int
kvmsaveXMLValidateElement(xmlNodePtr node)
{
    static gsize once;
    static xmlRelaxNGPtr schema;
    g_autoptr(xmlDoc) doc = NULL;
    xmlRelaxNGValidCtxtPtr vctxt;
    xmlNodePtr copy;
    int rc;

    if (g_once_init_enter(&once)) {
        xmlRelaxNGParserCtxtPtr pctxt =
            xmlRelaxNGNewMemParserCtxt(kvmsaveDomainSchema,
                                       strlen(kvmsaveDomainSchema));
        schema = xmlRelaxNGParse(pctxt);
        xmlRelaxNGFreeParserCtxt(pctxt);
        g_once_init_leave(&once, 1);
    }
    if (!schema) {
        virReportError(VIR_ERR_INTERNAL_ERROR, "%s",
                       _("cannot compile kvmsave's XML schema"));
        return -1;
    }

    doc = xmlNewDoc(BAD_CAST "1.0");
    copy = xmlDocCopyNode(node, doc, 1);
    xmlDocSetRootElement(doc, copy);
    xmlReconciliateNs(doc, copy);

    vctxt = xmlRelaxNGNewValidCtxt(schema);
    xmlRelaxNGSetValidErrors(vctxt, kvmsaveXMLIgnoreError,
                             kvmsaveXMLIgnoreError, NULL);
    rc = xmlRelaxNGValidateDoc(vctxt, doc);
    xmlRelaxNGFreeValidCtxt(vctxt);
    if (rc != 0) {
        virReportError(VIR_ERR_XML_ERROR,
                       _("invalid <%s:%s> element in the domain's metadata: it must hold only the absolute path of a save image, with force='disks' as its only attribute"),
                       KVMSAVE_XML_NS_PREFIX, (const char *) node->name);
        return -1;
    }
    return 0;
}


int
kvmsaveXMLGetMigrateFrom(const char *domxml, char **path)
{
    bool force;

    return kvmsaveXMLGetMigrateFromForce(domxml, path, &force, NULL);
}


int
kvmsaveXMLGetMigrateFromForce(const char *domxml, char **path,
                              bool *forceDisks, char **mode)
{
    g_autoptr(xmlDoc) doc = NULL;
    g_autoptr(xmlXPathObject) obj = NULL;
    xmlNodePtr node;
    xmlChar *content;
    xmlChar *force;

    *path = NULL;
    *forceDisks = false;
    /* XML that never names our namespace is the inner driver's business. */
    if (domxml && !strstr(domxml, KVMSAVE_XML_NS_URI))
        return 0;
    if (!(doc = kvmsaveXMLParse(domxml)))
        return -1;

    obj = kvmsaveXMLEval(doc, "/domain/metadata/k:*");
    if (!obj || !obj->nodesetval || obj->nodesetval->nodeNr == 0)
        return 0;
    if (obj->nodesetval->nodeNr > 1) {
        virReportError(VIR_ERR_XML_ERROR, "%s",
                       _("the domain's metadata holds more than one kvmsave element"));
        return -1;
    }
    node = obj->nodesetval->nodeTab[0];
    if (kvmsaveXMLValidateElement(node) < 0)
        return -1;

    content = xmlNodeGetContent(node);
    *path = g_strdup((const char *) content);
    xmlFree(content);
    /* The schema allows only "disks". */
    if ((force = xmlGetNoNsProp(node, BAD_CAST "force"))) {
        *forceDisks = true;
        xmlFree(force);
    }
    /* The schema allows only "eager" and "lazy". */
    if (mode) {
        xmlChar *value = xmlGetNoNsProp(node, BAD_CAST "mode");

        *mode = value ? g_strdup((const char *) value) : NULL;
        xmlFree(value);
    }
    return 1;
}


bool
kvmsaveXMLPathIsRepresentable(const char *path)
{
    const char *p;

    if (!g_utf8_validate(path, -1, NULL))
        return false;
    /* XML 1.0 has no way to write other control characters. */
    for (p = path; *p; p++) {
        if ((unsigned char) *p < 0x20 && *p != '\t' && *p != '\n' && *p != '\r')
            return false;
    }
    return true;
}


char *
kvmsaveXMLFormatMigrateFrom(const char *path)
{
    g_autoptr(xmlDoc) doc = xmlNewDoc(BAD_CAST "1.0");
    xmlNodePtr node = xmlNewDocNode(doc, NULL, BAD_CAST "migrateFrom", NULL);
    xmlBufferPtr buf = xmlBufferCreate();
    char *ret;

    /* xmlNodeAddContent escapes markup characters in the path. */
    xmlNodeAddContent(node, BAD_CAST path);
    xmlDocSetRootElement(doc, node);
    xmlNodeDump(buf, doc, node, 0, 0);
    ret = g_strdup((const char *) xmlBufferContent(buf));
    xmlBufferFree(buf);
    return ret;
}


static void
kvmsaveXMLUnlinkAll(xmlDocPtr doc, const char *expr)
{
    g_autoptr(xmlXPathObject) obj = kvmsaveXMLEval(doc, expr);
    int i;

    if (!obj || !obj->nodesetval)
        return;
    for (i = 0; i < obj->nodesetval->nodeNr; i++) {
        xmlNodePtr node = obj->nodesetval->nodeTab[i];
        if (node->type == XML_ATTRIBUTE_NODE) {
            xmlRemoveProp((xmlAttrPtr) node);
        } else {
            xmlUnlinkNode(node);
            xmlFreeNode(node);
        }
        obj->nodesetval->nodeTab[i] = NULL;
    }
}


#define KVMSAVE_XML_INCOMING_DEFER \
    "/domain/q:commandline/q:arg[@value='defer' and " \
    "not(following-sibling::q:arg) and " \
    "preceding-sibling::q:arg[1][@value='-incoming']]"


bool
kvmsaveXMLHasIncoming(const char *domxml)
{
    g_autoptr(xmlDoc) doc = NULL;
    g_autoptr(xmlXPathObject) obj = NULL;

    /* Parse errors are reported by whoever parses the XML for real. */
    if (!domxml || !strstr(domxml, "defer"))
        return false;
    doc = xmlReadMemory(domxml, strlen(domxml), "domain.xml", NULL,
                        XML_PARSE_NONET | XML_PARSE_NOWARNING | XML_PARSE_NOERROR);
    if (!doc || !xmlDocGetRootElement(doc))
        return false;
    obj = kvmsaveXMLEval(doc, KVMSAVE_XML_INCOMING_DEFER);
    return obj && obj->nodesetval && obj->nodesetval->nodeNr > 0;
}


/* The arguments of a lazy restore's own monitor, "-chardev VALUE" and
 * "-mon VALUE" (kvmsave_lazy.c). */
#define KVMSAVE_XML_LAZY_MONITOR_ARG \
    "(starts-with(@value, '" KVMSAVE_XML_LAZY_CHARDEV_PREFIX "') or " \
    "@value = '" KVMSAVE_XML_LAZY_MON "')"


/* Remove kvmsave's own trailing "-incoming defer" pair, a lazy restore's
 * monitor before it, and then a commandline it left empty. */
static void
kvmsaveXMLUnlinkIncoming(xmlDocPtr doc)
{
    kvmsaveXMLUnlinkAll(doc, KVMSAVE_XML_INCOMING_DEFER);
    kvmsaveXMLUnlinkAll(doc,
                        "/domain/q:commandline/q:arg[(@value='-chardev' or @value='-mon') and "
                        "following-sibling::q:arg[1][" KVMSAVE_XML_LAZY_MONITOR_ARG "]]");
    kvmsaveXMLUnlinkAll(doc,
                        "/domain/q:commandline/q:arg[" KVMSAVE_XML_LAZY_MONITOR_ARG "]");
    kvmsaveXMLUnlinkAll(doc,
                        "/domain/q:commandline/q:arg[@value='-incoming' and "
                        "not(following-sibling::q:arg)]");
    kvmsaveXMLUnlinkAll(doc, "/domain/q:commandline[not(*)]");
}


char *
kvmsaveXMLWithoutIncoming(const char *domxml)
{
    g_autoptr(xmlDoc) doc = kvmsaveXMLParse(domxml);

    if (!doc)
        return NULL;
    kvmsaveXMLUnlinkIncoming(doc);
    return kvmsaveXMLFormat(doc);
}


/* What neither an image nor a start may carry over: kvmsave's metadata
 * and its own -incoming. */
static void
kvmsaveXMLStripForImage(xmlDocPtr doc)
{
    kvmsaveXMLUnlinkAll(doc, "/domain/metadata/k:*");
    kvmsaveXMLUnlinkIncoming(doc);
}


char *
kvmsaveXMLForImage(const char *domxml)
{
    g_autoptr(xmlDoc) doc = kvmsaveXMLParse(domxml);

    if (!doc)
        return NULL;
    kvmsaveXMLStripForImage(doc);
    return kvmsaveXMLFormat(doc);
}


char *
kvmsaveXMLWithIncoming(const char *domxml, const char *const *extra)
{
    g_autoptr(xmlDoc) doc = kvmsaveXMLParse(domxml);
    g_autoptr(xmlXPathObject) obj = NULL;
    xmlNodePtr root;
    xmlNodePtr cmdline;
    xmlNsPtr ns;
    xmlNodePtr arg;

    if (!doc)
        return NULL;
    kvmsaveXMLStripForImage(doc);
    root = xmlDocGetRootElement(doc);
    if (!(ns = xmlSearchNsByHref(doc, root, BAD_CAST QEMU_NS_URI)))
        ns = xmlNewNs(root, BAD_CAST QEMU_NS_URI, BAD_CAST "qemu");

    obj = kvmsaveXMLEval(doc, "/domain/q:commandline");
    if (obj && obj->nodesetval && obj->nodesetval->nodeNr > 0)
        cmdline = obj->nodesetval->nodeTab[0];
    else
        cmdline = xmlNewChild(root, ns, BAD_CAST "commandline", NULL);

    for (; extra && *extra; extra++) {
        arg = xmlNewChild(cmdline, ns, BAD_CAST "arg", NULL);
        xmlNewProp(arg, BAD_CAST "value", BAD_CAST *extra);
    }
    arg = xmlNewChild(cmdline, ns, BAD_CAST "arg", NULL);
    xmlNewProp(arg, BAD_CAST "value", BAD_CAST "-incoming");
    arg = xmlNewChild(cmdline, ns, BAD_CAST "arg", NULL);
    xmlNewProp(arg, BAD_CAST "value", BAD_CAST "defer");
    return kvmsaveXMLFormat(doc);
}


char *
kvmsaveXMLWithCookieCPU(const char *domxml, const char *cookie)
{
    g_autoptr(xmlDoc) doc = kvmsaveXMLParse(domxml);
    g_autoptr(xmlDoc) cdoc = NULL;
    g_autoptr(xmlXPathObject) cpu = NULL;
    g_autoptr(xmlXPathObject) old = NULL;
    xmlNodePtr node;

    if (!doc || !(cdoc = kvmsaveXMLParseRoot(cookie, "cookie")))
        return NULL;
    cpu = kvmsaveXMLEval(cdoc, "/cookie/cpu");
    if (!cpu || !cpu->nodesetval || cpu->nodesetval->nodeNr == 0)
        return kvmsaveXMLFormat(doc);

    node = xmlDocCopyNode(cpu->nodesetval->nodeTab[0], doc, 1);
    old = kvmsaveXMLEval(doc, "/domain/cpu");
    if (old && old->nodesetval && old->nodesetval->nodeNr > 0) {
        xmlNodePtr prev = old->nodesetval->nodeTab[0];

        xmlReplaceNode(prev, node);
        xmlFreeNode(prev);
        old->nodesetval->nodeTab[0] = NULL;
    } else {
        xmlAddChild(xmlDocGetRootElement(doc), node);
    }
    return kvmsaveXMLFormat(doc);
}


char *
kvmsaveXMLStripSecure(const char *domxml)
{
    g_autoptr(xmlDoc) doc = kvmsaveXMLParse(domxml);

    if (!doc)
        return NULL;
    kvmsaveXMLUnlinkAll(doc, "/domain/devices/graphics/@passwd");
    return kvmsaveXMLFormat(doc);
}


char *
kvmsaveXMLGetString(const char *xml, const char *rootName, const char *expr)
{
    g_autoptr(xmlDoc) doc = kvmsaveXMLParseRoot(xml, rootName);
    g_autoptr(xmlXPathObject) obj = NULL;
    g_autofree char *full = g_strdup_printf("string(%s)", expr);

    if (!doc)
        return NULL;
    obj = kvmsaveXMLEval(doc, full);
    if (!obj || obj->type != XPATH_STRING || !obj->stringval ||
        !*obj->stringval)
        return NULL;
    return g_strdup((const char *) obj->stringval);
}


char *
kvmsaveXMLGetName(const char *domxml)
{
    return kvmsaveXMLGetString(domxml, "domain", "/domain/name");
}


char *
kvmsaveXMLGetUUID(const char *domxml)
{
    return kvmsaveXMLGetString(domxml, "domain", "/domain/uuid");
}


char *
kvmsaveXMLGetMachine(const char *domxml)
{
    return kvmsaveXMLGetString(domxml, "domain", "/domain/os/type/@machine");
}


char *
kvmsaveXMLGetDACLabel(const char *domxml)
{
    return kvmsaveXMLGetString(domxml, "domain",
                               "/domain/seclabel[@model='dac']/label");
}


char *
kvmsaveXMLGetHostCPUModel(const char *capsxml)
{
    return kvmsaveXMLGetString(capsxml, "capabilities",
                               "/capabilities/host/cpu/model");
}


static virDomainXMLOption *
kvmsaveXMLOption(void)
{
    static gsize once;
    static virDomainXMLOption *xmlopt;

    if (g_once_init_enter(&once)) {
        xmlopt = virDomainXMLOptionNew(NULL, NULL, NULL, NULL, NULL, NULL);
        g_once_init_leave(&once, 1);
    }
    return xmlopt;
}


virDomainDef *
kvmsaveXMLParseDef(const char *domxml)
{
    virDomainXMLOption *xmlopt = kvmsaveXMLOption();

    if (!xmlopt)
        return NULL;
    return virDomainDefParseString(domxml, xmlopt, NULL,
                                   VIR_DOMAIN_DEF_PARSE_INACTIVE |
                                   VIR_DOMAIN_DEF_PARSE_SKIP_VALIDATE);
}


int
kvmsaveXMLCheckABI(const char *savedxml, const char *newxml)
{
    virDomainXMLOption *xmlopt = kvmsaveXMLOption();
    g_autoptr(virDomainDef) src = NULL;
    g_autoptr(virDomainDef) dst = NULL;
    virErrorPtr err;

    if (!(src = kvmsaveXMLParseDef(savedxml)) ||
        !(dst = kvmsaveXMLParseDef(newxml)))
        return -1;

    if (!virDomainDefCheckABIStabilityFlags(src, dst, xmlopt,
                                            VIR_DOMAIN_DEF_ABI_CHECK_SKIP_VOLATILE)) {
        g_autofree char *why = NULL;

        /* libvirt's message already starts with the code's own words, in
         * libvirt's own catalog. */
        const char *prefix = dgettext("libvirt", "unsupported configuration");

        err = virGetLastError();
        why = g_strdup(err && err->message ? err->message : _("ABI differs"));
        if (g_str_has_prefix(why, prefix) &&
            g_str_has_prefix(why + strlen(prefix), ": "))
            memmove(why, why + strlen(prefix) + 2,
                    strlen(why) - strlen(prefix) - 1);
        virReportError(VIR_ERR_CONFIG_UNSUPPORTED,
                       _("the alternate domain XML is not compatible with the saved guest: %s"),
                       why);
        return -1;
    }
    return 0;
}
