/*
 * kvmsave_eventpriv.h: the event rewrite rules of kvmsave_event.c, for
 * its unit test (tests/unit/eventtest.c)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * A rule is what kvmsaveEventsExpect announced: the next lifecycle event
 * (type, detail) of one guest becomes (newType, newDetail), or is dropped
 * when newType is -1. Each connection keeps its rules in a GList, oldest
 * first; these functions are the decisions on such a list, without a
 * connection, a lock or a clock of their own.
 */
#pragma once

#include "internal.h"

/* How long a rule still waits for its event once the operation that
 * announced it has ended: the inner driver queues an operation's events
 * before the call returns, but delivers them later, from its event loop
 * or over its connection. */
#define KVMSAVE_EVENT_RULE_LIFETIME (10 * G_USEC_PER_SEC)

/* Append to @rules the rewrite of guest @uuid's next event (@type,
 * @detail) into (@newType, @newDetail). It waits for its event however
 * long the operation takes, until kvmsaveEventRulesSettle. Free the list
 * with g_list_free_full(rules, g_free). */
void kvmsaveEventRulesAdd(GList **rules, const unsigned char *uuid,
                          int type, int detail, int newType, int newDetail);

/* The operation on guest @uuid that announced rules ended at @now: those
 * still waiting lapse KVMSAVE_EVENT_RULE_LIFETIME later, when an event
 * that was never sent (a QEMU killed before it could say why it quit)
 * can no longer be awaited. */
void kvmsaveEventRulesSettle(GList *rules, gint64 now, const unsigned char *uuid);

/* Guest @uuid sent event (*@type, *@detail) at @now: the first rule of
 * @rules for exactly that guest, type and detail rewrites it and is used
 * up; rules that lapsed before @now and precede it are removed on the
 * way. Returns false when the event is to be dropped. */
bool kvmsaveEventRulesApply(GList **rules, gint64 now, const unsigned char *uuid,
                            int *type, int *detail);
