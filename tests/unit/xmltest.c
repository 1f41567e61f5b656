/*
 * xmltest.c: unit tests of kvmsave's domain XML extension and rewriting
 * (kvmsave_xml.c)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <fcntl.h>
#include <unistd.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include "testutil.h"
#include "kvmsave_xml.h"

#define QEMU_NS "http://libvirt.org/schemas/domain/qemu/1.0"
#define UUID "c7a5fdbd-edaf-9455-926a-d65c16db1809"
#define KNS "xmlns:kvmsave='" KVMSAVE_XML_NS_URI "'"

/* A small complete domain; @extra goes right after <uuid>, @metadata is
 * the content of <metadata> (none when NULL), @cmdline the content of
 * <qemu:commandline> (none when NULL). */
static char *
domainXML(const char *extra, const char *metadata, const char *cmdline)
{
    return g_strdup_printf(
        "<domain type='qemu'%s>"
        "<name>t</name>"
        "<uuid>" UUID "</uuid>"
        "%s"
        "<memory unit='KiB'>262144</memory>"
        "<vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
        "<devices><graphics type='vnc' passwd='secret'/></devices>"
        "%s%s%s"
        "%s%s%s"
        "</domain>",
        cmdline ? " xmlns:qemu='" QEMU_NS "'" : "",
        extra ? extra : "",
        metadata ? "<metadata>" : "", metadata ? metadata : "",
        metadata ? "</metadata>" : "",
        cmdline ? "<qemu:commandline>" : "", cmdline ? cmdline : "",
        cmdline ? "</qemu:commandline>" : "");
}


/* A domain whose metadata holds <kvmsave:migrateFrom>@content</...>;
 * @content is XML text, escaped as needed by the caller. */
static char *
migrateFromXML(const char *content)
{
    g_autofree char *meta = g_strdup_printf(
        "<kvmsave:migrateFrom " KNS ">%s</kvmsave:migrateFrom>", content);
    return domainXML(NULL, meta, NULL);
}


static xmlXPathObjectPtr
xpathEval(const char *xml, const char *expr, xmlDocPtr *docOut)
{
    xmlDocPtr doc = xmlReadMemory(xml, strlen(xml), "test.xml", NULL,
                                  XML_PARSE_NONET | XML_PARSE_NOERROR |
                                  XML_PARSE_NOWARNING);
    xmlXPathContextPtr ctxt;
    xmlXPathObjectPtr obj;

    ck_assert_msg(doc != NULL, "output is not well-formed XML: %s", xml);
    ctxt = xmlXPathNewContext(doc);
    xmlXPathRegisterNs(ctxt, BAD_CAST "q", BAD_CAST QEMU_NS);
    xmlXPathRegisterNs(ctxt, BAD_CAST "k", BAD_CAST KVMSAVE_XML_NS_URI);
    obj = xmlXPathEvalExpression(BAD_CAST expr, ctxt);
    xmlXPathFreeContext(ctxt);
    ck_assert_msg(obj != NULL, "bad XPath %s", expr);
    *docOut = doc;
    return obj;
}


/* The number value of XPath @expr over @xml (which must parse). */
static int
xpathNumber(const char *xml, const char *expr)
{
    xmlDocPtr doc;
    xmlXPathObjectPtr obj = xpathEval(xml, expr, &doc);
    int ret = (int) xmlXPathCastToNumber(obj);

    xmlXPathFreeObject(obj);
    xmlFreeDoc(doc);
    return ret;
}


/* The string value of XPath @expr over @xml (which must parse). */
static char *
xpathString(const char *xml, const char *expr)
{
    xmlDocPtr doc;
    xmlXPathObjectPtr obj = xpathEval(xml, expr, &doc);
    xmlChar *s = xmlXPathCastToString(obj);
    char *ret = g_strdup((const char *) s);

    xmlFree(s);
    xmlXPathFreeObject(obj);
    xmlFreeDoc(doc);
    return ret;
}


/* The values of the qemu:arg elements of @xml, joined by '|'. */
static char *
qemuArgs(const char *xml)
{
    xmlDocPtr doc;
    xmlXPathObjectPtr obj = xpathEval(xml, "/domain/q:commandline/q:arg/@value",
                                      &doc);
    GString *str = g_string_new(NULL);
    int i;

    for (i = 0; obj->nodesetval && i < obj->nodesetval->nodeNr; i++) {
        xmlChar *v = xmlNodeGetContent(obj->nodesetval->nodeTab[i]);
        if (i > 0)
            g_string_append_c(str, '|');
        g_string_append(str, (const char *) v);
        xmlFree(v);
    }
    xmlXPathFreeObject(obj);
    xmlFreeDoc(doc);
    return g_string_free(str, FALSE);
}


/* Expect kvmsaveXMLGetMigrateFrom(@xml) to be refused with an XML error. */
static void
assertMigrateFromRefused(const char *xml, const char *substr)
{
    char *path = (char *) "untouched";

    virResetLastError();
    ck_assert_msg(kvmsaveXMLGetMigrateFrom(xml, &path) == -1,
                  "accepted (path '%.200s'): %.300s", NULLSTR(path), xml);
    ck_assert_ptr_null(path);
    KT_ASSERT_ERROR(VIR_ERR_XML_ERROR, substr);
}


/* ---- kvmsaveXMLGetMigrateFrom ---- */

START_TEST(test_migrate_from_absent_returns_0)
{
    const char *metas[] = {
        NULL,                                   /* no <metadata> */
        "",                                     /* empty <metadata> */
        "<app:info xmlns:app='urn:other:app'>/not/ours.img</app:info>",
        "<migrateFrom>/no/namespace.img</migrateFrom>",
        "<x:migrateFrom xmlns:x='urn:kvmsave:domain:2'>/other/ns.img</x:migrateFrom>",
    };
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(metas); i++) {
        g_autofree char *xml = domainXML(NULL, metas[i], NULL);
        char *path = (char *) "untouched";

        ck_assert_msg(kvmsaveXMLGetMigrateFrom(xml, &path) == 0,
                      "case %zu: %s", i, virGetLastErrorMessage());
        ck_assert_ptr_null(path);
        KT_ASSERT_NO_ERROR();
    }
}
END_TEST


START_TEST(test_migrate_from_returns_path_exactly)
{
    static const struct {
        const char *xmltext;
        const char *path;
    } cases[] = {
        { "/var/lib/kvmsave/guest.img", "/var/lib/kvmsave/guest.img" },
        { "/srv/my images/guest one.img", "/srv/my images/guest one.img" },
        { "/srv/\"double\" and 'single'.img", "/srv/\"double\" and 'single'.img" },
        { "/srv/back\\slash\\\\.img", "/srv/back\\slash\\\\.img" },
        { "/srv/a&amp;b.img", "/srv/a&b.img" },
        { "/srv/&lt;lt&gt;.img", "/srv/<lt>.img" },
        { "/srv/line1&#10;line2.img", "/srv/line1\nline2.img" },
        { "/srv/tab\there", "/srv/tab\there" },
        { "/srv/trailing space ", "/srv/trailing space " },
        { "/srv/\xc3\xbcnic\xc3\xb8" "de.img", "/srv/\xc3\xbcnic\xc3\xb8" "de.img" },
        { "/", "/" },
        { "<![CDATA[/cdata/<&>.img]]>", "/cdata/<&>.img" },
    };
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *xml = migrateFromXML(cases[i].xmltext);
        g_autofree char *path = NULL;

        ck_assert_msg(kvmsaveXMLGetMigrateFrom(xml, &path) == 1,
                      "case %zu refused: %s", i, virGetLastErrorMessage());
        ck_assert_str_eq(path, cases[i].path);
        KT_ASSERT_NO_ERROR();
    }
}
END_TEST


START_TEST(test_migrate_from_any_prefix_of_the_namespace)
{
    g_autofree char *xml = domainXML(NULL,
        "<ks:migrateFrom xmlns:ks='" KVMSAVE_XML_NS_URI "'>/a.img</ks:migrateFrom>",
        NULL);
    g_autofree char *path = NULL;

    ck_assert_int_eq(kvmsaveXMLGetMigrateFrom(xml, &path), 1);
    ck_assert_str_eq(path, "/a.img");
}
END_TEST


START_TEST(test_migrate_from_force_disks)
{
    g_autofree char *plain = domainXML(NULL,
        "<kvmsave:migrateFrom xmlns:kvmsave='" KVMSAVE_XML_NS_URI "'>/a.img</kvmsave:migrateFrom>",
        NULL);
    g_autofree char *forced = domainXML(NULL,
        "<kvmsave:migrateFrom xmlns:kvmsave='" KVMSAVE_XML_NS_URI "' force='disks'>/a.img</kvmsave:migrateFrom>",
        NULL);
    g_autofree char *other = domainXML(NULL,
        "<kvmsave:migrateFrom xmlns:kvmsave='" KVMSAVE_XML_NS_URI "' force='all'>/a.img</kvmsave:migrateFrom>",
        NULL);
    g_autofree char *path = NULL;
    g_autofree char *path2 = NULL;
    bool force = true;

    ck_assert_int_eq(kvmsaveXMLGetMigrateFromForce(plain, &path, &force, NULL), 1);
    ck_assert(!force);
    ck_assert_int_eq(kvmsaveXMLGetMigrateFromForce(forced, &path2, &force, NULL), 1);
    ck_assert_str_eq(path2, "/a.img");
    ck_assert(force);
    assertMigrateFromRefused(other, "absolute path");
}
END_TEST


START_TEST(test_migrate_from_mode_attribute)
{
    g_autofree char *lazy = domainXML(NULL,
        "<kvmsave:migrateFrom xmlns:kvmsave='" KVMSAVE_XML_NS_URI "' mode='lazy'>/a.img</kvmsave:migrateFrom>",
        NULL);
    g_autofree char *none = domainXML(NULL,
        "<kvmsave:migrateFrom xmlns:kvmsave='" KVMSAVE_XML_NS_URI "'>/a.img</kvmsave:migrateFrom>",
        NULL);
    g_autofree char *other = domainXML(NULL,
        "<kvmsave:migrateFrom xmlns:kvmsave='" KVMSAVE_XML_NS_URI "' mode='later'>/a.img</kvmsave:migrateFrom>",
        NULL);
    g_autofree char *path = NULL;
    g_autofree char *path2 = NULL;
    g_autofree char *mode = NULL;
    g_autofree char *mode2 = g_strdup("x");
    bool force;

    ck_assert_int_eq(kvmsaveXMLGetMigrateFromForce(lazy, &path, &force, &mode), 1);
    ck_assert_str_eq(mode, "lazy");
    g_clear_pointer(&mode2, g_free);
    ck_assert_int_eq(kvmsaveXMLGetMigrateFromForce(none, &path2, &force, &mode2), 1);
    ck_assert_ptr_null(mode2);
    assertMigrateFromRefused(other, "absolute path");
}
END_TEST


START_TEST(test_migrate_from_path_length_limit)
{
    g_autofree char *max = g_strnfill(4096, 'a');
    g_autofree char *over = g_strnfill(4097, 'a');
    g_autofree char *xmlMax = NULL;
    g_autofree char *xmlOver = NULL;
    g_autofree char *path = NULL;

    max[0] = '/';
    over[0] = '/';
    xmlMax = migrateFromXML(max);
    xmlOver = migrateFromXML(over);
    ck_assert_int_eq(kvmsaveXMLGetMigrateFrom(xmlMax, &path), 1);
    ck_assert_str_eq(path, max);
    assertMigrateFromRefused(xmlOver, "absolute path");
}
END_TEST


START_TEST(test_migrate_from_refuses_relative_path)
{
    const char *paths[] = {
        "guest.img", "./guest.img", "../guest.img", " /leading-space.img",
        "~/guest.img", "file:///guest.img",
    };
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(paths); i++) {
        g_autofree char *xml = migrateFromXML(paths[i]);
        assertMigrateFromRefused(xml, "absolute path");
    }
}
END_TEST


START_TEST(test_migrate_from_refuses_empty_element)
{
    g_autofree char *xml1 = domainXML(NULL,
        "<kvmsave:migrateFrom " KNS "/>", NULL);
    g_autofree char *xml2 = migrateFromXML("");

    assertMigrateFromRefused(xml1, "migrateFrom");
    assertMigrateFromRefused(xml2, "migrateFrom");
}
END_TEST


START_TEST(test_migrate_from_refuses_child_element)
{
    g_autofree char *xml1 = migrateFromXML("/a.img<kvmsave:extra/>");
    g_autofree char *xml2 = migrateFromXML("<path>/a.img</path>");
    g_autofree char *xml3 = migrateFromXML("/a<b/>.img");

    assertMigrateFromRefused(xml1, "migrateFrom");
    assertMigrateFromRefused(xml2, "migrateFrom");
    assertMigrateFromRefused(xml3, "migrateFrom");
}
END_TEST


START_TEST(test_migrate_from_refuses_attribute)
{
    g_autofree char *xml = domainXML(NULL,
        "<kvmsave:migrateFrom " KNS " verify='no'>/a.img</kvmsave:migrateFrom>",
        NULL);

    assertMigrateFromRefused(xml, "migrateFrom");
}
END_TEST


START_TEST(test_migrate_from_refuses_two_elements)
{
    g_autofree char *xml1 = domainXML(NULL,
        "<kvmsave:migrateFrom " KNS ">/a.img</kvmsave:migrateFrom>"
        "<kvmsave:migrateFrom " KNS ">/b.img</kvmsave:migrateFrom>", NULL);
    g_autofree char *xml2 = domainXML(NULL,
        "<kvmsave:migrateFrom " KNS ">/a.img</kvmsave:migrateFrom>"
        "<kvmsave:other " KNS ">x</kvmsave:other>", NULL);

    assertMigrateFromRefused(xml1, "more than one");
    assertMigrateFromRefused(xml2, "more than one");
}
END_TEST


START_TEST(test_migrate_from_refuses_unknown_kvmsave_element)
{
    g_autofree char *xml = domainXML(NULL,
        "<kvmsave:restoreFrom " KNS ">/a.img</kvmsave:restoreFrom>", NULL);

    assertMigrateFromRefused(xml, "restoreFrom");
}
END_TEST


/* Malformed XML that names kvmsave's namespace is refused here; without
 * it, the XML is left to the inner driver, which reports its own error. */
START_TEST(test_migrate_from_refuses_malformed_xml)
{
    const char *xmls[] = {
        "<domain type='qemu' xmlns:k='urn:kvmsave:domain:1'><name>t</name>",
        "<domain type='qemu' xmlns:k='urn:kvmsave:domain:1'><name>t</domain>",
        "<domain xmlns:k='urn:kvmsave:domain:1' a='1' a='2'/>",
        "urn:kvmsave:domain:1 is not xml at all",
    };
    const char *foreign[] = { "", "not xml at all", "<domain a='1' a='2'/>" };
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(xmls); i++)
        assertMigrateFromRefused(xmls[i], "cannot parse");
    for (i = 0; i < G_N_ELEMENTS(foreign); i++) {
        char *path = (char *) "untouched";
        ck_assert_int_eq(kvmsaveXMLGetMigrateFrom(foreign[i], &path), 0);
        ck_assert_ptr_null(path);
    }
}
END_TEST


START_TEST(test_migrate_from_refuses_other_root_and_null)
{
    char *path = (char *) "untouched";

    assertMigrateFromRefused("<capabilities xmlns:k='urn:kvmsave:domain:1'/>",
                             "<domain>");
    virResetLastError();
    ck_assert_int_eq(kvmsaveXMLGetMigrateFrom(NULL, &path), -1);
    ck_assert_ptr_null(path);
    KT_ASSERT_ERROR(VIR_ERR_XML_ERROR, "missing");
}
END_TEST


START_TEST(test_migrate_from_refuses_internal_entities)
{
    g_autofree char *body = migrateFromXML("/a/&x;");
    g_autofree char *xml = g_strdup_printf(
        "<!DOCTYPE domain [<!ENTITY x \"internal.img\">]>%s", body);
    g_autofree char *path = NULL;

    ck_assert_int_eq(kvmsaveXMLGetMigrateFrom(xml, &path), -1);
    ck_assert_ptr_null(path);
    KT_ASSERT_ERROR(VIR_ERR_XML_ERROR, "document type declaration");
}
END_TEST


START_TEST(test_path_representable_only_without_control_characters)
{
    ck_assert(kvmsaveXMLPathIsRepresentable("/a b/'q\"\\/new\nline\ttab\r.img"));
    ck_assert(kvmsaveXMLPathIsRepresentable("/gr\xc3\xbc\xc3\x9f" "e.img"));
    ck_assert(!kvmsaveXMLPathIsRepresentable("/bell\a.img"));
    ck_assert(!kvmsaveXMLPathIsRepresentable("/esc\x1b" ".img"));
    ck_assert(!kvmsaveXMLPathIsRepresentable("/latin1-\xfc" ".img"));
}
END_TEST


START_TEST(test_has_incoming_and_without_incoming)
{
    g_autofree char *plain = domainXML(NULL, NULL, NULL);
    g_autofree char *with = kvmsaveXMLWithIncoming(plain, NULL);
    g_autofree char *other = domainXML(NULL, NULL,
                                       "<qemu:arg value='-incoming'/>"
                                       "<qemu:arg value='defer'/>"
                                       "<qemu:arg value='-S'/>");
    g_autofree char *without = NULL;

    ck_assert_ptr_nonnull(with);
    ck_assert(!kvmsaveXMLHasIncoming(plain));
    ck_assert(kvmsaveXMLHasIncoming(with));
    ck_assert(!kvmsaveXMLHasIncoming(other));   /* not kvmsave's trailing pair */
    ck_assert(!kvmsaveXMLHasIncoming("not xml, but defer"));

    without = kvmsaveXMLWithoutIncoming(with);
    ck_assert_ptr_nonnull(without);
    ck_assert(!kvmsaveXMLHasIncoming(without));
    ck_assert_ptr_null(strstr(without, "commandline"));
    ck_assert_ptr_nonnull(strstr(without, UUID));
}
END_TEST


START_TEST(test_migrate_from_refusal_prints_nothing_to_stderr)
{
    g_autofree char *xml = migrateFromXML("relative.img");
    char tmpl[] = "/tmp/kvmsave-xmltest-stderr-XXXXXX";
    int fd = mkstemp(tmpl);
    int saved;
    off_t size;

    ck_assert_int_ge(fd, 0);
    unlink(tmpl);
    fflush(stderr);
    saved = dup(2);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_eq(dup2(fd, 2), 2);
    assertMigrateFromRefused(xml, "absolute path");
    fflush(stderr);
    ck_assert_int_eq(dup2(saved, 2), 2);
    close(saved);
    size = lseek(fd, 0, SEEK_END);
    close(fd);
    ck_assert_msg(size == 0, "%lld bytes printed to stderr by a refusal",
                  (long long) size);
}
END_TEST


/* A file whose content is a valid absolute path: were the external
 * entity expanded, the result would be accepted and carry this text. */
#define SECRET "/secret-entity-content.img"

static char *secretDir;
static char *secretFile;

/* Unchecked fixture: runs in the parent, so the file is removed even
 * when a test fails. */
static void
secretSetup(void)
{
    g_autoptr(GError) gerr = NULL;

    secretDir = g_dir_make_tmp("kvmsave-xmltest-XXXXXX", &gerr);
    if (!secretDir) {
        fprintf(stderr, "g_dir_make_tmp: %s\n", gerr->message);
        abort();
    }
    secretFile = g_build_filename(secretDir, "secret", NULL);
    if (!g_file_set_contents(secretFile, SECRET, -1, NULL))
        abort();
}


static void
secretTeardown(void)
{
    unlink(secretFile);
    rmdir(secretDir);
    g_clear_pointer(&secretFile, g_free);
    g_clear_pointer(&secretDir, g_free);
}


START_TEST(test_migrate_from_does_not_expand_external_entities)
{
    const char *file = secretFile;
    const char *sources[] = { file, "/etc/passwd" };
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(sources); i++) {
        g_autofree char *body = migrateFromXML("&x;");
        g_autofree char *xml = g_strdup_printf(
            "<!DOCTYPE domain [<!ENTITY x SYSTEM \"file://%s\">]>%s",
            sources[i], body);
        g_autofree char *path = NULL;
        int rc;

        virResetLastError();
        rc = kvmsaveXMLGetMigrateFrom(xml, &path);
        ck_assert_msg(rc == -1 || rc == 1, "rc %d", rc);
        if (rc == 1) {
            ck_assert_msg(!strstr(path, SECRET) && !strstr(path, "root:"),
                          "external entity expanded into '%s'", path);
        } else {
            ck_assert_ptr_null(path);
            KT_ASSERT_ERROR(VIR_ERR_XML_ERROR, "document type declaration");
        }
    }

    /* Nor in an entity used with a valid prefix. */
    {
        g_autofree char *body = migrateFromXML("/prefix&x;");
        g_autofree char *xml = g_strdup_printf(
            "<!DOCTYPE domain [<!ENTITY x SYSTEM \"file://%s\">]>%s",
            file, body);
        g_autofree char *path = NULL;

        virResetLastError();
        if (kvmsaveXMLGetMigrateFrom(xml, &path) == 1)
            ck_assert_msg(!strstr(path, SECRET),
                          "external entity expanded into '%s'", path);
    }

    /* Nor through an external parameter entity in the internal subset. */
    {
        g_autofree char *body = migrateFromXML("/a.img");
        g_autofree char *xml = g_strdup_printf(
            "<!DOCTYPE domain [<!ENTITY %% p SYSTEM \"file://%s\"> %%p;]>%s",
            file, body);
        g_autofree char *path = NULL;

        virResetLastError();
        if (kvmsaveXMLGetMigrateFrom(xml, &path) == 1)
            ck_assert_str_eq(path, "/a.img");
    }
}
END_TEST


START_TEST(test_rewrites_do_not_expand_external_entities)
{
    const char *file = secretFile;
    g_autofree char *body = domainXML("<description>&x;</description>",
                                      NULL, NULL);
    g_autofree char *xml = g_strdup_printf(
        "<!DOCTYPE domain [<!ENTITY x SYSTEM \"file://%s\">]>%s", file, body);
    g_autofree char *image = kvmsaveXMLForImage(xml);
    g_autofree char *secure = kvmsaveXMLStripSecure(xml);
    g_autofree char *incoming = kvmsaveXMLWithIncoming(xml, NULL);

    ck_assert_msg(!image || !strstr(image, SECRET), "ForImage: %s", image);
    ck_assert_msg(!secure || !strstr(secure, SECRET), "StripSecure: %s", secure);
    ck_assert_msg(!incoming || !strstr(incoming, SECRET),
                  "WithIncoming: %s", incoming);
}
END_TEST


/* ---- kvmsaveXMLFormatMigrateFrom ---- */

START_TEST(test_format_migrate_from_round_trips_nasty_paths)
{
    const char *paths[] = {
        "/var/lib/kvmsave/guest.img",
        "/srv/with space/and  two",
        "/srv/\"double\"'single'",
        "/srv/back\\slash\\\\",
        "/srv/a&b&amp;c",
        "/srv/<tag>/</migrateFrom>",
        "/srv/]]>cdata-end",
        "/srv/line1\nline2\n",
        "/srv/cr\rlf\r\n",
        "/srv/tab\t",
        "/srv/trailing ",
        "/srv/&#10;literal-entity-text",
        /* split so that \xb8 ends there; parenthesized for clang's
         * -Wstring-concatenation */
        ("/srv/\xc3\xbcnic\xc3\xb8" "de"),
    };
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(paths); i++) {
        g_autofree char *elem = kvmsaveXMLFormatMigrateFrom(paths[i]);
        g_autofree char *nsElem = NULL;
        g_autofree char *xml = NULL;
        g_autofree char *path = NULL;
        size_t len;

        ck_assert_ptr_nonnull(elem);
        len = strlen(elem);
        ck_assert_msg(g_str_has_prefix(elem, "<migrateFrom>") &&
                      g_str_has_suffix(elem, "</migrateFrom>"),
                      "unexpected element: %s", elem);
        /* What virDomainSetMetadata(key="kvmsave", uri=NS) would store. */
        nsElem = g_strdup_printf("<kvmsave:migrateFrom " KNS ">%.*s"
                                 "</kvmsave:migrateFrom>",
                                 (int) (len - strlen("<migrateFrom>") -
                                        strlen("</migrateFrom>")),
                                 elem + strlen("<migrateFrom>"));
        xml = domainXML(NULL, nsElem, NULL);
        ck_assert_msg(kvmsaveXMLGetMigrateFrom(xml, &path) == 1,
                      "path %zu refused: %s", i, virGetLastErrorMessage());
        ck_assert_str_eq(path, paths[i]);
    }
}
END_TEST


/* ---- kvmsaveXMLForImage / kvmsaveXMLWithIncoming ---- */

START_TEST(test_for_image_strips_kvmsave_metadata_and_incoming_pair)
{
    g_autofree char *xml = domainXML(NULL,
        "<app:info xmlns:app='urn:other:app'>keep me</app:info>"
        "<kvmsave:migrateFrom " KNS ">/a.img</kvmsave:migrateFrom>",
        "<qemu:arg value='-device'/><qemu:arg value='virtio-rng-pci'/>"
        "<qemu:arg value='-incoming'/><qemu:arg value='defer'/>"
        "<qemu:env name='KEEP' value='1'/>");
    g_autofree char *out = kvmsaveXMLForImage(xml);
    g_autofree char *args = NULL;
    g_autofree char *app = NULL;
    g_autofree char *path = NULL;

    ck_assert_msg(out != NULL, "%s", virGetLastErrorMessage());
    ck_assert_int_eq(xpathNumber(out, "count(/domain/metadata/k:*)"), 0);
    ck_assert_int_eq(kvmsaveXMLGetMigrateFrom(out, &path), 0);
    app = xpathString(out, "string(/domain/metadata/*[local-name()='info'])");
    ck_assert_str_eq(app, "keep me");
    args = qemuArgs(out);
    ck_assert_str_eq(args, "-device|virtio-rng-pci");
    ck_assert_int_eq(xpathNumber(out, "count(/domain/q:commandline/q:env[@name='KEEP'])"), 1);
    /* The rest of the domain is untouched. */
    ck_assert_int_eq(xpathNumber(out, "count(/domain/name[.='t'])"), 1);
    ck_assert_int_eq(xpathNumber(out, "count(/domain/uuid[.='" UUID "'])"), 1);
    ck_assert_int_eq(xpathNumber(out, "count(/domain/devices/graphics[@passwd='secret'])"), 1);
}
END_TEST


START_TEST(test_for_image_drops_commandline_left_empty)
{
    g_autofree char *xml = domainXML(NULL, NULL,
        "<qemu:arg value='-incoming'/><qemu:arg value='defer'/>");
    g_autofree char *out = kvmsaveXMLForImage(xml);

    ck_assert_ptr_nonnull(out);
    ck_assert_int_eq(xpathNumber(out, "count(//q:commandline)"), 0);
    ck_assert_int_eq(xpathNumber(out, "count(//q:arg)"), 0);
}
END_TEST


START_TEST(test_for_image_keeps_other_qemu_args)
{
    g_autofree char *xml = domainXML(NULL, NULL,
        "<qemu:arg value='-set'/><qemu:arg value='device.x.y=defer'/>"
        "<qemu:arg value='-name'/><qemu:arg value='defer'/>"
        "<qemu:arg value='-S'/>");
    g_autofree char *out = kvmsaveXMLForImage(xml);
    g_autofree char *args = NULL;

    ck_assert_ptr_nonnull(out);
    args = qemuArgs(out);
    ck_assert_str_eq(args, "-set|device.x.y=defer|-name|defer|-S");
}
END_TEST


START_TEST(test_for_image_keeps_incoming_pair_not_at_the_end)
{
    /* kvmsave only ever appends its pair; one followed by other args is
     * the user's, and half of it must never be dropped. */
    g_autofree char *xml = domainXML(NULL, NULL,
        "<qemu:arg value='-incoming'/><qemu:arg value='defer'/>"
        "<qemu:arg value='-S'/>");
    g_autofree char *out = kvmsaveXMLForImage(xml);
    g_autofree char *args = NULL;

    ck_assert_ptr_nonnull(out);
    args = qemuArgs(out);
    ck_assert_str_eq(args, "-incoming|defer|-S");
}
END_TEST


START_TEST(test_for_image_refuses_malformed_xml)
{
    ck_assert_ptr_null(kvmsaveXMLForImage("<domain>"));
    KT_ASSERT_ERROR(VIR_ERR_XML_ERROR, "cannot parse");
}
END_TEST


START_TEST(test_with_incoming_adds_exactly_one_pair)
{
    g_autofree char *xml = domainXML(NULL, NULL, NULL);
    g_autofree char *out = kvmsaveXMLWithIncoming(xml, NULL);
    g_autofree char *args = NULL;

    ck_assert_msg(out != NULL, "%s", virGetLastErrorMessage());
    ck_assert_int_eq(xpathNumber(out, "count(/domain/q:commandline)"), 1);
    args = qemuArgs(out);
    ck_assert_str_eq(args, "-incoming|defer");
    ck_assert_int_eq(xpathNumber(out, "count(/domain/devices/graphics)"), 1);
}
END_TEST


START_TEST(test_with_incoming_twice_still_one_pair)
{
    g_autofree char *xml = domainXML(NULL, NULL,
        "<qemu:arg value='-device'/><qemu:arg value='virtio-rng-pci'/>");
    g_autofree char *once = kvmsaveXMLWithIncoming(xml, NULL);
    g_autofree char *twice = NULL;
    g_autofree char *args1 = NULL;
    g_autofree char *args2 = NULL;

    ck_assert_ptr_nonnull(once);
    twice = kvmsaveXMLWithIncoming(once, NULL);
    ck_assert_ptr_nonnull(twice);
    args1 = qemuArgs(once);
    args2 = qemuArgs(twice);
    ck_assert_str_eq(args1, "-device|virtio-rng-pci|-incoming|defer");
    ck_assert_str_eq(args2, "-device|virtio-rng-pci|-incoming|defer");
    ck_assert_int_eq(xpathNumber(twice, "count(/domain/q:commandline)"), 1);
}
END_TEST


START_TEST(test_with_incoming_uses_existing_qemu_prefix)
{
    g_autofree char *xml = g_strdup(
        "<domain type='qemu' xmlns:qq='" QEMU_NS "'><name>t</name>"
        "<memory unit='KiB'>262144</memory>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
        "<qq:commandline><qq:arg value='-S'/></qq:commandline></domain>");
    g_autofree char *out = kvmsaveXMLWithIncoming(xml, NULL);
    g_autofree char *args = NULL;

    ck_assert_ptr_nonnull(out);
    ck_assert_int_eq(xpathNumber(out, "count(/domain/q:commandline)"), 1);
    args = qemuArgs(out);
    ck_assert_str_eq(args, "-S|-incoming|defer");
}
END_TEST


START_TEST(test_for_image_undoes_with_incoming)
{
    g_autofree char *xml = domainXML(NULL, NULL,
        "<qemu:arg value='-device'/><qemu:arg value='virtio-rng-pci'/>");
    g_autofree char *with = kvmsaveXMLWithIncoming(xml, NULL);
    g_autofree char *image = NULL;
    g_autofree char *args = NULL;

    ck_assert_ptr_nonnull(with);
    image = kvmsaveXMLForImage(with);
    ck_assert_ptr_nonnull(image);
    args = qemuArgs(image);
    ck_assert_str_eq(args, "-device|virtio-rng-pci");
}
END_TEST


START_TEST(test_for_image_strips_lazy_monitor_only)
{
    const char *const extra[] = {
        "-chardev", KVMSAVE_XML_LAZY_CHARDEV_PREFIX "path=/tmp/q,server=on,wait=off",
        "-mon", KVMSAVE_XML_LAZY_MON, NULL,
    };
    g_autofree char *xml = domainXML(NULL, NULL,
        "<qemu:arg value='-chardev'/><qemu:arg value='socket,id=mine,path=/tmp/m'/>");
    g_autofree char *with = kvmsaveXMLWithIncoming(xml, extra);
    g_autofree char *image = NULL;
    g_autofree char *args = NULL;

    ck_assert_ptr_nonnull(with);
    args = qemuArgs(with);
    ck_assert_str_eq(args, "-chardev|socket,id=mine,path=/tmp/m|"
                     "-chardev|socket,id=kvmsave-qmp,path=/tmp/q,server=on,wait=off|"
                     "-mon|chardev=kvmsave-qmp,mode=control|-incoming|defer");
    ck_assert(kvmsaveXMLHasIncoming(with));
    image = kvmsaveXMLForImage(with);
    ck_assert_ptr_nonnull(image);
    g_free(args);
    args = qemuArgs(image);
    ck_assert_str_eq(args, "-chardev|socket,id=mine,path=/tmp/m");
}
END_TEST


/* ---- kvmsaveXMLStripSecure ---- */

START_TEST(test_strip_secure_removes_graphics_passwords)
{
    g_autofree char *xml = g_strdup(
        "<domain type='qemu'><name>t</name><uuid>" UUID "</uuid>"
        "<memory unit='KiB'>262144</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
        "<devices>"
        "<graphics type='vnc' port='5901' passwd='secret'/>"
        "<graphics type='spice' passwd='hunter2' passwdValidTo='2030-01-01T00:00:00'/>"
        "</devices></domain>");
    g_autofree char *out = kvmsaveXMLStripSecure(xml);

    ck_assert_msg(out != NULL, "%s", virGetLastErrorMessage());
    ck_assert_ptr_null(strstr(out, "secret"));
    ck_assert_ptr_null(strstr(out, "hunter2"));
    ck_assert_int_eq(xpathNumber(out, "count(//@passwd)"), 0);
    ck_assert_int_eq(xpathNumber(out, "count(/domain/devices/graphics)"), 2);
    ck_assert_int_eq(xpathNumber(out, "count(/domain/devices/graphics[@type='vnc' and @port='5901'])"), 1);
    ck_assert_int_eq(xpathNumber(out, "count(/domain/name[.='t'])"), 1);
}
END_TEST


START_TEST(test_strip_secure_refuses_malformed_xml)
{
    ck_assert_ptr_null(kvmsaveXMLStripSecure("<domain><devices></domain>"));
    KT_ASSERT_ERROR(VIR_ERR_XML_ERROR, "cannot parse");
}
END_TEST


/* ---- kvmsaveXMLCheckABI ---- */

START_TEST(test_check_abi_identical_passes)
{
    g_autofree char *xml = domainXML(NULL, NULL, NULL);

    ck_assert_msg(kvmsaveXMLCheckABI(xml, xml) == 0, "%s",
                  virGetLastErrorMessage());
    KT_ASSERT_NO_ERROR();
}
END_TEST


START_TEST(test_check_abi_allows_description_title_metadata)
{
    g_autofree char *saved = domainXML(NULL, NULL, NULL);
    g_autofree char *newxml = domainXML(
        "<title>another title</title><description>changed</description>",
        "<app:info xmlns:app='urn:other:app'>x</app:info>"
        "<kvmsave:migrateFrom " KNS ">/a.img</kvmsave:migrateFrom>", NULL);

    ck_assert_msg(kvmsaveXMLCheckABI(saved, newxml) == 0, "%s",
                  virGetLastErrorMessage());
    KT_ASSERT_NO_ERROR();
}
END_TEST


START_TEST(test_check_abi_allows_graphics_password_change)
{
    g_autofree char *saved = domainXML(NULL, NULL, NULL);
    g_autofree char *newxml = g_strdup(saved);
    char *p = strstr(newxml, "passwd='secret'");

    ck_assert_ptr_nonnull(p);
    memcpy(p, "passwd='other!'", strlen("passwd='other!'"));
    ck_assert_msg(kvmsaveXMLCheckABI(saved, newxml) == 0, "%s",
                  virGetLastErrorMessage());
}
END_TEST


static void
assertABIRefused(const char *from, const char *to, const char *why)
{
    g_autofree char *saved = domainXML(NULL, NULL, NULL);
    g_autofree char *newxml = NULL;
    char *p;

    ck_assert_msg((p = strstr(saved, from)) != NULL, "no '%s' in base XML", from);
    newxml = g_strdup_printf("%.*s%s%s", (int) (p - saved), saved, to,
                             p + strlen(from));
    virResetLastError();
    ck_assert_msg(kvmsaveXMLCheckABI(saved, newxml) == -1,
                  "ABI change '%s' -> '%s' accepted", from, to);
    KT_ASSERT_ERROR(VIR_ERR_CONFIG_UNSUPPORTED, "not compatible");
    KT_ASSERT_ERROR(VIR_ERR_CONFIG_UNSUPPORTED, why);
}


START_TEST(test_check_abi_refuses_memory_change)
{
    assertABIRefused("<memory unit='KiB'>262144</memory>",
                     "<memory unit='KiB'>524288</memory>", "max memory 524288");
}
END_TEST


START_TEST(test_check_abi_refuses_vcpu_change)
{
    assertABIRefused("<vcpu>1</vcpu>", "<vcpu>2</vcpu>", "vCPU max 2");
}
END_TEST


START_TEST(test_check_abi_refuses_uuid_change)
{
    assertABIRefused(UUID, "c7a5fdbd-edaf-9455-926a-d65c16db1800",
                     "uuid c7a5fdbd-edaf-9455-926a-d65c16db1800");
}
END_TEST


START_TEST(test_check_abi_refuses_machine_change)
{
    assertABIRefused("machine='pc'", "machine='q35'", "machine type q35");
}
END_TEST


START_TEST(test_check_abi_refuses_name_change)
{
    /* libvirt's ABI check forbids renaming a guest behind its back. */
    assertABIRefused("<name>t</name>", "<name>renamed</name>", "name 'renamed'");
}
END_TEST


START_TEST(test_check_abi_refuses_unparsable_xml)
{
    g_autofree char *saved = domainXML(NULL, NULL, NULL);

    ck_assert_int_eq(kvmsaveXMLCheckABI(saved, "<domain type='qemu'>"), -1);
    ck_assert_ptr_nonnull(virGetLastError());
    virResetLastError();
    ck_assert_int_eq(kvmsaveXMLCheckABI("not xml", saved), -1);
    ck_assert_ptr_nonnull(virGetLastError());
}
END_TEST


/* ---- kvmsaveXMLGetMachine / kvmsaveXMLGetHostCPUModel ---- */

START_TEST(test_get_machine)
{
    g_autofree char *xml = domainXML(NULL, NULL, NULL);
    g_autofree char *machine = kvmsaveXMLGetMachine(xml);
    g_autofree char *q35 = kvmsaveXMLGetMachine(
        "<domain type='kvm'><os><type arch='x86_64' "
        "machine='pc-q35-7.2'>hvm</type></os></domain>");

    ck_assert_str_eq(machine, "pc");
    ck_assert_str_eq(q35, "pc-q35-7.2");
}
END_TEST


START_TEST(test_get_machine_absent_is_null)
{
    ck_assert_ptr_null(kvmsaveXMLGetMachine(
        "<domain type='kvm'><os><type arch='x86_64'>hvm</type></os></domain>"));
    ck_assert_ptr_null(kvmsaveXMLGetMachine(
        "<domain type='kvm'><os><type machine=''>hvm</type></os></domain>"));
    KT_ASSERT_NO_ERROR();
    ck_assert_ptr_null(kvmsaveXMLGetMachine("<domain"));
    KT_ASSERT_ERROR(VIR_ERR_XML_ERROR, "cannot parse");
}
END_TEST


#define CAPS_HEAD "<capabilities><host><uuid>" UUID "</uuid>"

START_TEST(test_get_host_cpu_model)
{
    g_autofree char *model = kvmsaveXMLGetHostCPUModel(
        CAPS_HEAD "<cpu><arch>x86_64</arch><model>Skylake-Client-IBRS</model>"
        "<vendor>Intel</vendor><feature name='vmx'/></cpu></host>"
        "<guest><os_type>hvm</os_type><arch name='x86_64'>"
        "<machine>pc</machine></arch></guest></capabilities>");

    ck_assert_str_eq(model, "Skylake-Client-IBRS");
}
END_TEST


START_TEST(test_get_host_cpu_model_absent_is_null)
{
    ck_assert_ptr_null(kvmsaveXMLGetHostCPUModel(
        CAPS_HEAD "<cpu><arch>x86_64</arch></cpu></host></capabilities>"));
    KT_ASSERT_NO_ERROR();
    /* A domain's guest CPU model is not the host's. */
    ck_assert_ptr_null(kvmsaveXMLGetHostCPUModel(
        "<domain><cpu><model>Haswell</model></cpu></domain>"));
    KT_ASSERT_ERROR(VIR_ERR_XML_ERROR, "<capabilities>");
}
END_TEST


/* ---- kvmsaveXMLWithCookieCPU ---- */

#define COOKIE_CPU \
    "<cpu mode='custom' match='exact' check='full'>" \
    "<model fallback='forbid'>qemu64</model>" \
    "<feature policy='require' name='lahf_lm'/></cpu>"

START_TEST(test_cookie_cpu_replaces_the_domain_cpu)
{
    g_autofree char *xml = domainXML("<cpu mode='custom'><model>qemu64</model></cpu>",
                                     NULL, NULL);
    g_autofree char *out = kvmsaveXMLWithCookieCPU(
        xml, "<cookie>" COOKIE_CPU "<slirpHelper/></cookie>");
    g_autofree char *check = NULL;
    g_autofree char *feature = NULL;

    ck_assert_msg(out, "%s", virGetLastErrorMessage());
    ck_assert_int_eq(xpathNumber(out, "count(/domain/cpu)"), 1);
    check = xpathString(out, "string(/domain/cpu/@check)");
    feature = xpathString(out, "string(/domain/cpu/feature/@name)");
    ck_assert_str_eq(check, "full");
    ck_assert_str_eq(feature, "lahf_lm");
    ck_assert_int_eq(xpathNumber(out, "count(/domain/slirpHelper)"), 0);
    ck_assert_int_eq(xpathNumber(out, "count(/domain/uuid)"), 1);
}
END_TEST


START_TEST(test_cookie_cpu_added_or_absent)
{
    g_autofree char *xml = domainXML(NULL, NULL, NULL);
    g_autofree char *added = kvmsaveXMLWithCookieCPU(xml, "<cookie>" COOKIE_CPU "</cookie>");
    g_autofree char *same = kvmsaveXMLWithCookieCPU(xml, "<cookie><slirpHelper/></cookie>");

    ck_assert_int_eq(xpathNumber(added, "count(/domain/cpu/feature)"), 1);
    ck_assert_int_eq(xpathNumber(same, "count(/domain/cpu)"), 0);
    ck_assert_int_eq(xpathNumber(same, "count(/domain/devices/graphics)"), 1);
    ck_assert_ptr_null(kvmsaveXMLWithCookieCPU(xml, "<cookie>"));
    KT_ASSERT_ERROR(VIR_ERR_XML_ERROR, "<cookie>");
    virResetLastError();
    ck_assert_ptr_null(kvmsaveXMLWithCookieCPU(xml, "<domain/>"));
    KT_ASSERT_ERROR(VIR_ERR_XML_ERROR, "<cookie>");
}
END_TEST


static Suite *
xmlSuite(void)
{
    Suite *s = suite_create("kvmsave_xml");
    TCase *tc;

    tc = ktTCase("migrate_from", 30);
    tcase_add_test(tc, test_migrate_from_absent_returns_0);
    tcase_add_test(tc, test_migrate_from_returns_path_exactly);
    tcase_add_test(tc, test_migrate_from_any_prefix_of_the_namespace);
    tcase_add_test(tc, test_migrate_from_path_length_limit);
    tcase_add_test(tc, test_migrate_from_mode_attribute);
    tcase_add_test(tc, test_migrate_from_force_disks);
    tcase_add_test(tc, test_migrate_from_refuses_relative_path);
    tcase_add_test(tc, test_migrate_from_refuses_empty_element);
    tcase_add_test(tc, test_migrate_from_refuses_child_element);
    tcase_add_test(tc, test_migrate_from_refuses_attribute);
    tcase_add_test(tc, test_migrate_from_refuses_two_elements);
    tcase_add_test(tc, test_migrate_from_refuses_unknown_kvmsave_element);
    tcase_add_test(tc, test_migrate_from_refuses_malformed_xml);
    tcase_add_test(tc, test_migrate_from_refuses_other_root_and_null);
    tcase_add_test(tc, test_migrate_from_refusal_prints_nothing_to_stderr);
    tcase_add_test(tc, test_migrate_from_refuses_internal_entities);
    tcase_add_test(tc, test_path_representable_only_without_control_characters);
    tcase_add_test(tc, test_format_migrate_from_round_trips_nasty_paths);
    suite_add_tcase(s, tc);

    tc = ktTCase("entities", 30);
    tcase_add_unchecked_fixture(tc, secretSetup, secretTeardown);
    tcase_add_test(tc, test_migrate_from_does_not_expand_external_entities);
    tcase_add_test(tc, test_rewrites_do_not_expand_external_entities);
    suite_add_tcase(s, tc);

    tc = ktTCase("rewrite", 30);
    tcase_add_test(tc, test_for_image_strips_kvmsave_metadata_and_incoming_pair);
    tcase_add_test(tc, test_for_image_drops_commandline_left_empty);
    tcase_add_test(tc, test_for_image_keeps_other_qemu_args);
    tcase_add_test(tc, test_for_image_keeps_incoming_pair_not_at_the_end);
    tcase_add_test(tc, test_for_image_refuses_malformed_xml);
    tcase_add_test(tc, test_with_incoming_adds_exactly_one_pair);
    tcase_add_test(tc, test_has_incoming_and_without_incoming);
    tcase_add_test(tc, test_with_incoming_twice_still_one_pair);
    tcase_add_test(tc, test_with_incoming_uses_existing_qemu_prefix);
    tcase_add_test(tc, test_for_image_undoes_with_incoming);
    tcase_add_test(tc, test_for_image_strips_lazy_monitor_only);
    tcase_add_test(tc, test_strip_secure_removes_graphics_passwords);
    tcase_add_test(tc, test_strip_secure_refuses_malformed_xml);
    tcase_add_test(tc, test_cookie_cpu_replaces_the_domain_cpu);
    tcase_add_test(tc, test_cookie_cpu_added_or_absent);
    suite_add_tcase(s, tc);

    tc = ktTCase("check_abi", 30);
    tcase_add_test(tc, test_check_abi_identical_passes);
    tcase_add_test(tc, test_check_abi_allows_description_title_metadata);
    tcase_add_test(tc, test_check_abi_allows_graphics_password_change);
    tcase_add_test(tc, test_check_abi_refuses_memory_change);
    tcase_add_test(tc, test_check_abi_refuses_vcpu_change);
    tcase_add_test(tc, test_check_abi_refuses_uuid_change);
    tcase_add_test(tc, test_check_abi_refuses_machine_change);
    tcase_add_test(tc, test_check_abi_refuses_name_change);
    tcase_add_test(tc, test_check_abi_refuses_unparsable_xml);
    suite_add_tcase(s, tc);

    tc = ktTCase("lookups", 30);
    tcase_add_test(tc, test_get_machine);
    tcase_add_test(tc, test_get_machine_absent_is_null);
    tcase_add_test(tc, test_get_host_cpu_model);
    tcase_add_test(tc, test_get_host_cpu_model_absent_is_null);
    suite_add_tcase(s, tc);

    return s;
}


int
main(void)
{
    return ktRunSuite(xmlSuite);
}
