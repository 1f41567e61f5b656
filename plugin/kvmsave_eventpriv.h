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

/* How long an announced rule waits for its event. */
#define KVMSAVE_EVENT_RULE_LIFETIME (10 * G_USEC_PER_SEC)

/* Append to @rules the rewrite of guest @uuid's next event (@type,
 * @detail) into (@newType, @newDetail), lapsing
 * KVMSAVE_EVENT_RULE_LIFETIME after @now. Free the list with
 * g_list_free_full(rules, g_free). */
void kvmsaveEventRulesAdd(GList **rules, gint64 now, const unsigned char *uuid,
                          int type, int detail, int newType, int newDetail);

/* Guest @uuid sent event (*@type, *@detail) at @now: the first rule of
 * @rules for exactly that guest, type and detail rewrites it and is used
 * up; rules that lapsed before @now and precede it are removed on the
 * way. Returns false when the event is to be dropped. */
bool kvmsaveEventRulesApply(GList **rules, gint64 now, const unsigned char *uuid,
                            int *type, int *detail);
