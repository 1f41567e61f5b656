/*
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * eventtest.c: the lifecycle event rewrites of kvmsave_event.c: each
 * announced rewrite or drop, used once, per guest, in order, lapsing
 * only once its operation ended;
 * and what clients of a connection over test:///default see
 */
#include <config.h>

#include "testutil.h"
#include "kvmsave_conn.h"
#include "kvmsave_event.h"
#include "kvmsave_eventpriv.h"
#include "viruuid.h"

#define UUID_A "0f2a1c5e-7d3b-4e8f-9a61-2b4c6d8e0a11"
#define UUID_B "5b9d3f71-c2e4-4a86-b0d1-7e3f5a9c2b44"
#define T0 ((gint64) 1000 * G_USEC_PER_SEC)

/* A second guest for test:///default, whose own "test" runs. */
#define GUEST_TWO_XML \
    "<domain type='test'><name>two</name>" \
    "<uuid>" UUID_B "</uuid><memory>1024</memory>" \
    "<os><type>hvm</type></os></domain>"


static void
uuidOf(const char *str, unsigned char *uuid)
{
    ck_assert_int_eq(virUUIDParse(str, uuid), 0);
}


/* ---- the rules, without a connection -------------------------------- */

/* An event's type and detail, by their names; a rewrite that drops it. */
#define EV(type, detail) VIR_DOMAIN_EVENT_##type, VIR_DOMAIN_EVENT_##type##_##detail
#define DROPPED -1, 0

/* Every rewrite the engines announce, by what announces it. */
static const struct {
    const char *what;
    int type;
    int detail;
    int newType;                /* -1: dropped */
    int newDetail;
} announced[] = {
    /* kvmsave_restore.c: several streams through a migration... */
    { "migration: started", EV(STARTED, MIGRATED), EV(STARTED, RESTORED) },
    { "migration: running", EV(RESUMED, MIGRATED), EV(RESUMED, FROM_SNAPSHOT) },
    { "migration: left paused", EV(SUSPENDED, PAUSED), EV(SUSPENDED, RESTORED) },
    /* ...or QEMU's command line... */
    { "command line: started", EV(STARTED, BOOTED), EV(STARTED, RESTORED) },
    { "command line: resumed", EV(RESUMED, UNPAUSED), EV(RESUMED, FROM_SNAPSHOT) },
    { "command line: its pause", EV(SUSPENDED, PAUSED), DROPPED },
    /* ...a start asked paused, as stock libvirt's... */
    { "start asked paused", EV(SUSPENDED, RESTORED), EV(SUSPENDED, PAUSED) },
    /* ...and, with kvmsave_save.c, kvmsave destroying QEMU... */
    { "save", EV(STOPPED, DESTROYED), EV(STOPPED, SAVED) },
    { "failed restore", EV(STOPPED, DESTROYED), EV(STOPPED, FAILED) },
    { "destroy", EV(SHUTDOWN, HOST), DROPPED },
    /* kvmsave_feed.c: a failed feeder killing QEMU. */
    { "killed QEMU", EV(STOPPED, DESTROYED), DROPPED },
};


/* One connection's rules, and two guests, for each test of the rules. */
static GList *rules;
static unsigned char guestA[VIR_UUID_BUFLEN];
static unsigned char guestB[VIR_UUID_BUFLEN];


static void
rulesSetup(void)
{
    rules = NULL;
    uuidOf(UUID_A, guestA);
    uuidOf(UUID_B, guestB);
}


static void
rulesTeardown(void)
{
    g_list_free_full(g_steal_pointer(&rules), g_free);
}


/* Announce that guest @uuid's next (@type, @detail) is to be shown as
 * (@newType, @newDetail), or dropped. */
static void
announce(const unsigned char *uuid, int type, int detail,
         int newType, int newDetail)
{
    kvmsaveEventRulesAdd(&rules, uuid, type, detail, newType, newDetail);
}


/* The operation on guest @uuid that announced rules ends at T0 + @at. */
static void
settle(gint64 at, const unsigned char *uuid)
{
    kvmsaveEventRulesSettle(rules, T0 + at, uuid);
}


/* Guest @uuid sends (@type, @detail) at T0 + @at: assert that clients
 * see (@wantType, @wantDetail), or nothing when @wantType is -1. */
static void
sends(gint64 at, const unsigned char *uuid, int type, int detail,
      int wantType, int wantDetail)
{
    bool kept = kvmsaveEventRulesApply(&rules, T0 + at, uuid, &type, &detail);

    ck_assert_msg(kept == (wantType >= 0), "event %s, expected it %s",
                  kept ? "kept" : "dropped", kept ? "dropped" : "kept");
    if (kept) {
        ck_assert_int_eq(type, wantType);
        ck_assert_int_eq(detail, wantDetail);
    }
}


START_TEST(test_announced_rewrites_are_shown)
{
    int type = announced[_i].type;
    int detail = announced[_i].detail;
    bool kept;

    announce(guestA, type, detail, announced[_i].newType, announced[_i].newDetail);
    kept = kvmsaveEventRulesApply(&rules, T0 + 1, guestA, &type, &detail);
    ck_assert_msg(kept == (announced[_i].newType >= 0),
                  "%s: the event was %s", announced[_i].what,
                  kept ? "kept" : "dropped");
    if (kept)
        ck_assert_msg(type == announced[_i].newType &&
                      detail == announced[_i].newDetail,
                      "%s: shown as %d/%d", announced[_i].what, type, detail);
    ck_assert_msg(rules == NULL, "%s: the rule was not used up",
                  announced[_i].what);
}
END_TEST


START_TEST(test_rule_is_used_up_by_its_event)
{
    announce(guestA, EV(STOPPED, DESTROYED), EV(STOPPED, SAVED));
    sends(0, guestA, EV(STOPPED, DESTROYED), EV(STOPPED, SAVED));
    /* The same event again is the inner driver's own. */
    sends(0, guestA, EV(STOPPED, DESTROYED), EV(STOPPED, DESTROYED));
    ck_assert_ptr_null(rules);
}
END_TEST


START_TEST(test_other_guests_types_and_details_pass_unchanged)
{
    /* No rules: everything passes. */
    sends(0, guestA, EV(SHUTDOWN, HOST), EV(SHUTDOWN, HOST));

    announce(guestA, EV(STARTED, MIGRATED), EV(STARTED, RESTORED));
    /* Another guest's, another detail, another type with the same detail
     * value (RESUMED_MIGRATED == STARTED_MIGRATED): as sent, rule kept. */
    ck_assert_int_eq(VIR_DOMAIN_EVENT_RESUMED_MIGRATED, VIR_DOMAIN_EVENT_STARTED_MIGRATED);
    sends(0, guestB, EV(STARTED, MIGRATED), EV(STARTED, MIGRATED));
    sends(0, guestA, EV(STARTED, BOOTED), EV(STARTED, BOOTED));
    sends(0, guestA, EV(RESUMED, MIGRATED), EV(RESUMED, MIGRATED));
    ck_assert_uint_eq(g_list_length(rules), 1);
    sends(0, guestA, EV(STARTED, MIGRATED), EV(STARTED, RESTORED));
    ck_assert_ptr_null(rules);
}
END_TEST


START_TEST(test_announcements_of_one_event_apply_in_order)
{
    /* A save's destroy, then a killed QEMU's, before either event. */
    announce(guestA, EV(STOPPED, DESTROYED), EV(STOPPED, SAVED));
    announce(guestA, EV(STOPPED, DESTROYED), DROPPED);
    sends(0, guestA, EV(STOPPED, DESTROYED), EV(STOPPED, SAVED));
    sends(0, guestA, EV(STOPPED, DESTROYED), DROPPED);
    ck_assert_ptr_null(rules);
}
END_TEST


START_TEST(test_rule_waits_while_its_operation_runs)
{
    const gint64 hour = (gint64) 3600 * G_USEC_PER_SEC;

    /* A restore on a loaded host may take minutes before QEMU runs. */
    announce(guestA, EV(STARTED, MIGRATED), EV(STARTED, RESTORED));
    sends(hour, guestA, EV(STARTED, MIGRATED), EV(STARTED, RESTORED));
    ck_assert_ptr_null(rules);

    /* Another guest's operation ending leaves this one's rule waiting. */
    announce(guestA, EV(SHUTDOWN, HOST), DROPPED);
    settle(1, guestB);
    sends(hour, guestA, EV(SHUTDOWN, HOST), DROPPED);
    ck_assert_ptr_null(rules);
}
END_TEST


START_TEST(test_rule_lapses_ten_seconds_after_its_operation_ended)
{
    const gint64 life = KVMSAVE_EVENT_RULE_LIFETIME;
    const gint64 end = (gint64) 600 * G_USEC_PER_SEC;

    ck_assert_int_eq(life, 10 * G_USEC_PER_SEC);
    /* Still applied at the end of its lifetime... */
    announce(guestA, EV(SHUTDOWN, HOST), DROPPED);
    settle(end, guestA);
    sends(end + life, guestA, EV(SHUTDOWN, HOST), DROPPED);
    /* ...not a microsecond later, when it is removed. */
    announce(guestA, EV(SHUTDOWN, HOST), DROPPED);
    settle(end, guestA);
    sends(end + life + 1, guestA, EV(SHUTDOWN, HOST), EV(SHUTDOWN, HOST));
    ck_assert_ptr_null(rules);

    /* Settling again does not extend it; another guest's event clears a
     * lapsed rule on its way to its own. */
    announce(guestA, EV(SHUTDOWN, HOST), DROPPED);
    settle(end, guestA);
    settle(end + life, guestA);
    announce(guestB, EV(SHUTDOWN, HOST), DROPPED);
    sends(end + life + 1, guestB, EV(SHUTDOWN, HOST), DROPPED);
    ck_assert_ptr_null(rules);
}
END_TEST


/* ---- clients of kvmsave connections over test:///default -------------- */

/* The close of an outerOpen() connection: its events, its inner one. */
static int
outerClose(virConnectPtr conn)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(conn);

    kvmsaveEventsFree(priv->events);
    virConnectClose(priv->inner);
    g_free(priv);
    return 0;
}


/* A kvmsave connection as kvmsave_driver.c opens one, its inner one
 * test:///default, with only the event entry points put in. */
static virConnectPtr
outerOpen(void)
{
    kvmsaveConn *priv = g_new0(kvmsaveConn, 1);
    virConnectPtr conn;

    ck_assert_ptr_nonnull(priv->inner = virConnectOpen("test:///default"));
    priv->innerDriver = priv->inner->driver;
    priv->table = *priv->innerDriver;
    priv->table.connectClose = outerClose;
    priv->table.connectDomainEventRegister = kvmsaveEventsRegister;
    priv->table.connectDomainEventDeregister = kvmsaveEventsDeregister;
    priv->table.connectDomainEventRegisterAny = kvmsaveEventsRegisterAny;
    priv->table.connectDomainEventDeregisterAny = kvmsaveEventsDeregisterAny;
    ck_assert_ptr_nonnull(conn = virGetConnect());
    priv->outer = conn;
    ck_assert_ptr_nonnull(priv->events = kvmsaveEventsNew(conn, priv->inner));
    conn->driver = &priv->table;
    conn->privateData = priv->inner->privateData;
    return conn;
}


/* The inner connection's guest @name. */
static virDomainPtr
innerGuest(virConnectPtr outer, const char *name)
{
    virDomainPtr dom = virDomainLookupByName(kvmsaveConnFromConnect(outer)->inner,
                                             name);

    ck_assert_ptr_nonnull(dom);
    return dom;
}


/* An event as a client saw it. */
typedef struct {
    char guest[8];
    int type;
    int detail;
} ktSeen;


static int
onLifecycle(virConnectPtr conn G_GNUC_UNUSED, virDomainPtr dom,
            int type, int detail, void *opaque)
{
    ktSeen seen = { .type = type, .detail = detail };

    g_strlcpy(seen.guest, dom->name, sizeof(seen.guest));
    g_array_append_val((GArray *) opaque, seen);
    return 0;
}


/* A client's lifecycle callback on @conn, recording into a new array. */
static int
subscribe(virConnectPtr conn, GArray **seen)
{
    int id;

    *seen = g_array_new(FALSE, TRUE, sizeof(ktSeen));
    id = virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                          VIR_DOMAIN_EVENT_CALLBACK(onLifecycle),
                                          *seen, NULL);
    ck_assert_int_gt(id, 0);
    return id;
}


static void
tick(int timer G_GNUC_UNUSED, void *opaque G_GNUC_UNUSED)
{
}


/* Run the event loop until *@count reaches @n, 5 s at most. */
static void
waitFor(const guint *count, guint n)
{
    gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    int timer = virEventAddTimeout(20, tick, NULL, NULL);

    ck_assert_int_ge(timer, 0);
    while (*count < n && g_get_monotonic_time() < deadline)
        ck_assert_int_eq(virEventRunDefaultImpl(), 0);
    virEventRemoveTimeout(timer);
    ck_assert_uint_ge(*count, n);
}


/* Assert that a client saw exactly "GUEST TYPE/DETAIL" for each of the
 * @n entries of @want. */
static void
assertSeen(GArray *seen, const ktSeen *want, guint n)
{
    guint i;

    ck_assert_uint_eq(seen->len, n);
    for (i = 0; i < n; i++) {
        ktSeen *s = &g_array_index(seen, ktSeen, i);

        ck_assert_msg(STREQ(s->guest, want[i].guest) && s->type == want[i].type &&
                      s->detail == want[i].detail,
                      "event %u: got %s %d/%d, expected %s %d/%d", i,
                      s->guest, s->type, s->detail,
                      want[i].guest, want[i].type, want[i].detail);
    }
}


START_TEST(test_clients_see_rewrites_and_not_dropped_events)
{
    virConnectPtr conn = outerOpen();
    g_autoptr(virDomain) dom = innerGuest(conn, "test");
    g_autoptr(GArray) legacy = g_array_new(FALSE, TRUE, sizeof(ktSeen));
    g_autoptr(GArray) seen = NULL;
    const ktSeen want[] = {
        { "test", EV(STOPPED, SAVED) },
        { "test", EV(SUSPENDED, PAUSED) },
    };
    int id = subscribe(conn, &seen);

    /* (Stock drivers return 0 from (de)registering; kvmsave passes on
     * libvirt's count of callbacks.) */
    ck_assert_int_ge(virConnectDomainEventRegister(conn, onLifecycle, legacy, NULL), 0);
    kvmsaveEventsExpectDestroy(dom->uuid, VIR_DOMAIN_EVENT_STOPPED_SAVED);
    ck_assert_int_eq(virDomainDestroy(dom), 0);
    kvmsaveEventsExpect(dom->uuid, EV(STARTED, BOOTED), DROPPED);
    ck_assert_int_eq(virDomainCreate(dom), 0);
    ck_assert_int_eq(virDomainSuspend(dom), 0);    /* not announced */
    waitFor(&seen->len, 2);
    waitFor(&legacy->len, 2);

    assertSeen(seen, want, G_N_ELEMENTS(want));
    assertSeen(legacy, want, G_N_ELEMENTS(want));
    ck_assert_int_ge(virConnectDomainEventDeregisterAny(conn, id), 0);
    ck_assert_int_ge(virConnectDomainEventDeregister(conn, onLifecycle), 0);
    ck_assert_int_eq(virDomainResume(dom), 0);
    virConnectClose(conn);
}
END_TEST


START_TEST(test_expect_reaches_every_connection_that_listens)
{
    virConnectPtr one = outerOpen();
    virConnectPtr two = outerOpen();
    virConnectPtr late = outerOpen();
    g_autoptr(virDomain) dom = innerGuest(one, "test");
    g_autoptr(GArray) seenOne = NULL;
    g_autoptr(GArray) seenTwo = NULL;
    g_autoptr(GArray) seenLate = NULL;
    const ktSeen saved = { "test", EV(STOPPED, SAVED) };
    const ktSeen destroyed = { "test", EV(STOPPED, DESTROYED) };
    int idOne = subscribe(one, &seenOne);
    int idTwo = subscribe(two, &seenTwo);
    int idLate;

    kvmsaveEventsExpectDestroy(dom->uuid, VIR_DOMAIN_EVENT_STOPPED_SAVED);
    /* Nobody listened on @late when the save announced its destroy. */
    idLate = subscribe(late, &seenLate);
    ck_assert_int_eq(virDomainDestroy(dom), 0);
    waitFor(&seenOne->len, 1);
    waitFor(&seenTwo->len, 1);
    waitFor(&seenLate->len, 1);

    assertSeen(seenOne, &saved, 1);
    assertSeen(seenTwo, &saved, 1);
    assertSeen(seenLate, &destroyed, 1);
    ck_assert_int_ge(virConnectDomainEventDeregisterAny(one, idOne), 0);
    ck_assert_int_ge(virConnectDomainEventDeregisterAny(two, idTwo), 0);
    ck_assert_int_ge(virConnectDomainEventDeregisterAny(late, idLate), 0);
    ck_assert_int_eq(virDomainCreate(dom), 0);
    virConnectClose(late);
    virConnectClose(two);
    virConnectClose(one);
}
END_TEST


START_TEST(test_forget_withdraws_only_that_guests_rules)
{
    virConnectPtr conn = outerOpen();
    g_autoptr(virDomain) dom = innerGuest(conn, "test");
    g_autoptr(virDomain) two = NULL;
    g_autoptr(GArray) seen = NULL;
    const ktSeen want[] = {
        { "two", EV(STARTED, BOOTED) },
        { "test", EV(STOPPED, DESTROYED) },
        { "two", EV(STOPPED, FAILED) },
    };
    int id = subscribe(conn, &seen);

    ck_assert_ptr_nonnull(two = virDomainCreateXML(kvmsaveConnFromConnect(conn)->inner,
                                                   GUEST_TWO_XML, 0));
    kvmsaveEventsExpectDestroy(dom->uuid, VIR_DOMAIN_EVENT_STOPPED_SAVED);
    kvmsaveEventsExpectDestroy(two->uuid, VIR_DOMAIN_EVENT_STOPPED_FAILED);
    /* The call announced for "test" failed. */
    kvmsaveEventsForget(dom->uuid);
    ck_assert_int_eq(virDomainDestroy(dom), 0);
    ck_assert_int_eq(virDomainDestroy(two), 0);
    waitFor(&seen->len, 3);

    assertSeen(seen, want, G_N_ELEMENTS(want));
    ck_assert_int_ge(virConnectDomainEventDeregisterAny(conn, id), 0);
    ck_assert_int_eq(virDomainCreate(dom), 0);
    virConnectClose(conn);
}
END_TEST


/* The connections a client's metadata callback was called for. */
typedef struct {
    virConnectPtr conn;
    guint calls;
} ktMetadata;


static int
onMetadata(virConnectPtr conn, virDomainPtr dom G_GNUC_UNUSED,
           int type G_GNUC_UNUSED, const char *nsuri G_GNUC_UNUSED,
           void *opaque)
{
    ktMetadata *md = opaque;

    md->conn = conn;
    md->calls++;
    return 0;
}


START_TEST(test_other_event_kinds_go_to_the_inner_driver)
{
    virConnectPtr conn = outerOpen();
    g_autoptr(virDomain) dom = innerGuest(conn, "test");
    g_autoptr(GArray) seen = NULL;
    ktMetadata md = { 0 };
    int lifecycle = subscribe(conn, &seen);
    int metadata = virConnectDomainEventRegisterAny(conn, NULL,
                                                    VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
                                                    VIR_DOMAIN_EVENT_CALLBACK(onMetadata),
                                                    &md, NULL);

    /* Callback IDs are the connection's own, whoever holds the callback. */
    ck_assert_int_eq(lifecycle, 1);
    ck_assert_int_eq(metadata, 2);
    ck_assert_int_eq(virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_DESCRIPTION,
                                          "eventtest", NULL, NULL,
                                          VIR_DOMAIN_AFFECT_LIVE), 0);
    waitFor(&md.calls, 1);
    ck_assert_ptr_eq(md.conn, conn);

    ck_assert_int_ge(virConnectDomainEventDeregisterAny(conn, metadata), 0);
    ck_assert_int_ge(virConnectDomainEventDeregisterAny(conn, lifecycle), 0);
    ck_assert_int_eq(virConnectDomainEventDeregisterAny(conn, lifecycle), -1);
    KT_ASSERT_ERROR(VIR_ERR_INVALID_ARG, "could not find event callback 1");
    virConnectClose(conn);
}
END_TEST


/* The rules on their own, then through connections (forked per test, so
 * test:///default starts afresh each time; they restore it all the same,
 * for CK_FORK=no). */
static Suite *
eventSuite(void)
{
    TCase *rulesCase = ktTCase("rules", 10);
    TCase *clients = ktTCase("clients", 30);
    Suite *s = suite_create("event");

    tcase_add_checked_fixture(rulesCase, rulesSetup, rulesTeardown);
    tcase_add_loop_test(rulesCase, test_announced_rewrites_are_shown,
                        0, G_N_ELEMENTS(announced));
    tcase_add_test(rulesCase, test_rule_is_used_up_by_its_event);
    tcase_add_test(rulesCase, test_other_guests_types_and_details_pass_unchanged);
    tcase_add_test(rulesCase, test_announcements_of_one_event_apply_in_order);
    tcase_add_test(rulesCase, test_rule_waits_while_its_operation_runs);
    tcase_add_test(rulesCase, test_rule_lapses_ten_seconds_after_its_operation_ended);
    suite_add_tcase(s, rulesCase);

    tcase_add_test(clients, test_clients_see_rewrites_and_not_dropped_events);
    tcase_add_test(clients, test_expect_reaches_every_connection_that_listens);
    tcase_add_test(clients, test_forget_withdraws_only_that_guests_rules);
    tcase_add_test(clients, test_other_event_kinds_go_to_the_inner_driver);
    suite_add_tcase(s, clients);
    return s;
}


/* The errors the tests expect are checked, not printed. */
static void
quiet(void *opaque G_GNUC_UNUSED, virErrorPtr err G_GNUC_UNUSED)
{
}


int
main(void)
{
    virSetErrorFunc(NULL, quiet);
    if (virEventRegisterDefaultImpl() < 0) {
        fprintf(stderr, "no event loop: %s\n", virGetLastErrorMessage());
        return EXIT_FAILURE;
    }
    return ktRunSuite(eventSuite);
}
