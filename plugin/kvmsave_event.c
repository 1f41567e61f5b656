/*
 * kvmsave_event.c: domain lifecycle and job events as stock libvirt sends them
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include "kvmsave_event.h"
#include "kvmsave_eventpriv.h"
#include "kvmsave_conn.h"
#include "datatypes.h"
#include "domain_event.h"
#include "object_event.h"
#include "virerror.h"
#include "virlog.h"
#include "virtypedparam.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.event");

/* A rewrite the engines announced; it lapses if its event never comes. */
typedef struct _kvmsaveEventRule kvmsaveEventRule;
struct _kvmsaveEventRule {
    unsigned char uuid[VIR_UUID_BUFLEN];
    int type;
    int detail;
    int newType;
    int newDetail;
    gint64 expires;             /* G_MAXINT64 while its operation runs */
};

/* A callback ID given to the client: kvmsave's own or the inner driver's. */
typedef struct _kvmsaveEventCallback kvmsaveEventCallback;
struct _kvmsaveEventCallback {
    int id;                     /* what the client sees */
    int realID;
    bool ours;
};

struct _kvmsaveEvents {
    virConnectPtr outer;        /* not referenced */
    virConnectPtr inner;        /* not referenced */
    virObjectEventState *state; /* the outer connection's callbacks of kvmsave's kinds */
    int innerLifecycleID;       /* our forwarders on the inner connection */
    int innerJobCompletedID;
    GMutex forwarderLock;       /* two threads registering add one forwarder */
    GList *rules;               /* of kvmsaveEventRule */
    GArray *callbacks;          /* of kvmsaveEventCallback */
    int nextID;
};

/* Every kvmsave connection of the process, for kvmsaveEventsExpect. */
static GMutex kvmsaveEventsLock;
static GList *kvmsaveEventsAll;


kvmsaveEvents *
kvmsaveEventsNew(virConnectPtr outer, virConnectPtr inner)
{
    kvmsaveEvents *ev = g_new0(kvmsaveEvents, 1);

    if (!(ev->state = virObjectEventStateNew())) {
        g_free(ev);
        return NULL;
    }
    ev->outer = outer;
    ev->inner = inner;
    ev->innerLifecycleID = -1;
    ev->innerJobCompletedID = -1;
    g_mutex_init(&ev->forwarderLock);
    ev->nextID = 1;
    ev->callbacks = g_array_new(FALSE, FALSE, sizeof(kvmsaveEventCallback));

    g_mutex_lock(&kvmsaveEventsLock);
    kvmsaveEventsAll = g_list_prepend(kvmsaveEventsAll, ev);
    g_mutex_unlock(&kvmsaveEventsLock);
    return ev;
}


void
kvmsaveEventsFree(kvmsaveEvents *ev)
{
    if (!ev)
        return;
    g_mutex_lock(&kvmsaveEventsLock);
    kvmsaveEventsAll = g_list_remove(kvmsaveEventsAll, ev);
    g_list_free_full(ev->rules, g_free);
    g_mutex_unlock(&kvmsaveEventsLock);

    if (ev->innerLifecycleID >= 0)
        ignore_value(virConnectDomainEventDeregisterAny(ev->inner,
                                                        ev->innerLifecycleID));
    if (ev->innerJobCompletedID >= 0)
        ignore_value(virConnectDomainEventDeregisterAny(ev->inner,
                                                        ev->innerJobCompletedID));
    virObjectUnref(ev->state);
    g_mutex_clear(&ev->forwarderLock);
    g_array_free(ev->callbacks, TRUE);
    g_free(ev);
}


void
kvmsaveEventRulesAdd(GList **rules, const unsigned char *uuid,
                     int type, int detail, int newType, int newDetail)
{
    kvmsaveEventRule *rule = g_new0(kvmsaveEventRule, 1);

    memcpy(rule->uuid, uuid, VIR_UUID_BUFLEN);
    rule->type = type;
    rule->detail = detail;
    rule->newType = newType;
    rule->newDetail = newDetail;
    rule->expires = G_MAXINT64;
    *rules = g_list_append(*rules, rule);
}


void
kvmsaveEventRulesSettle(GList *rules, gint64 now, const unsigned char *uuid)
{
    GList *l;

    for (l = rules; l; l = l->next) {
        kvmsaveEventRule *rule = l->data;

        if (rule->expires == G_MAXINT64 &&
            memcmp(rule->uuid, uuid, VIR_UUID_BUFLEN) == 0)
            rule->expires = now + KVMSAVE_EVENT_RULE_LIFETIME;
    }
}


void
kvmsaveEventsExpect(const unsigned char *uuid, int type, int detail,
                    int newType, int newDetail)
{
    GList *l;

    g_mutex_lock(&kvmsaveEventsLock);
    for (l = kvmsaveEventsAll; l; l = l->next) {
        kvmsaveEvents *ev = l->data;

        if (g_atomic_int_get(&ev->innerLifecycleID) < 0)
            continue; /* nobody listens there */
        kvmsaveEventRulesAdd(&ev->rules, uuid, type, detail, newType, newDetail);
    }
    g_mutex_unlock(&kvmsaveEventsLock);
}


void
kvmsaveEventsSettle(const unsigned char *uuid)
{
    GList *l;
    gint64 now = g_get_monotonic_time();

    g_mutex_lock(&kvmsaveEventsLock);
    for (l = kvmsaveEventsAll; l; l = l->next)
        kvmsaveEventRulesSettle(((kvmsaveEvents *) l->data)->rules, now, uuid);
    g_mutex_unlock(&kvmsaveEventsLock);
}


void
kvmsaveEventsExpectDestroy(const unsigned char *uuid, int stoppedDetail)
{
    kvmsaveEventsExpect(uuid, VIR_DOMAIN_EVENT_SHUTDOWN,
                        VIR_DOMAIN_EVENT_SHUTDOWN_HOST, -1, 0);
    kvmsaveEventsExpect(uuid, VIR_DOMAIN_EVENT_STOPPED,
                        VIR_DOMAIN_EVENT_STOPPED_DESTROYED,
                        VIR_DOMAIN_EVENT_STOPPED, stoppedDetail);
}


void
kvmsaveEventsForget(const unsigned char *uuid)
{
    GList *l;

    g_mutex_lock(&kvmsaveEventsLock);
    for (l = kvmsaveEventsAll; l; l = l->next) {
        kvmsaveEvents *ev = l->data;
        GList *r = ev->rules;

        while (r) {
            GList *next = r->next;
            kvmsaveEventRule *rule = r->data;

            if (memcmp(rule->uuid, uuid, VIR_UUID_BUFLEN) == 0) {
                ev->rules = g_list_delete_link(ev->rules, r);
                g_free(rule);
            }
            r = next;
        }
    }
    g_mutex_unlock(&kvmsaveEventsLock);
}


bool
kvmsaveEventRulesApply(GList **rules, gint64 now, const unsigned char *uuid,
                       int *type, int *detail)
{
    GList *l = *rules;

    while (l) {
        kvmsaveEventRule *rule = l->data;
        GList *next = l->next;

        if (rule->expires < now) {
            *rules = g_list_delete_link(*rules, l);
            g_free(rule);
        } else if (memcmp(rule->uuid, uuid, VIR_UUID_BUFLEN) == 0 &&
                   rule->type == *type && rule->detail == *detail) {
            bool keep = rule->newType >= 0;

            *type = rule->newType;
            *detail = rule->newDetail;
            *rules = g_list_delete_link(*rules, l);
            g_free(rule);
            return keep;
        }
        l = next;
    }
    return true;
}


/* Apply the first matching rule to (*type, *detail); false to drop. */
static bool
kvmsaveEventsRewrite(kvmsaveEvents *ev, const unsigned char *uuid,
                     int *type, int *detail)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveEventsLock);

    return kvmsaveEventRulesApply(&ev->rules, g_get_monotonic_time(),
                                  uuid, type, detail);
}


/* The inner driver's lifecycle event, on the event loop thread. */
static int
kvmsaveEventsForward(virConnectPtr inner G_GNUC_UNUSED, virDomainPtr dom,
                     int type, int detail, void *opaque)
{
    kvmsaveEvents *ev = opaque;
    virObjectEvent *event;

    if (!kvmsaveEventsRewrite(ev, dom->uuid, &type, &detail)) {
        VIR_DEBUG("dropped lifecycle event %d/%d of %s", type, detail, dom->name);
        return 0;
    }
    if ((event = virDomainEventLifecycleNew(dom->id, dom->name, dom->uuid,
                                            type, detail)))
        virObjectEventStateQueue(ev->state, event);
    return 0;
}


/* The event takes its own copy of @params. */
static void
kvmsaveEventsQueueJobCompleted(kvmsaveEvents *ev, virDomainPtr dom,
                               virTypedParameterPtr params, int nparams)
{
    virTypedParameterPtr copy = NULL;
    virObjectEvent *event;

    virTypedParamsCopy(&copy, params, nparams);
    if ((event = virDomainEventJobCompletedNewFromDom(dom, copy, nparams)))
        virObjectEventStateQueue(ev->state, event);
}


/* The inner driver's JOB_COMPLETED (of a migration, say), as it is. */
static void
kvmsaveEventsForwardJobCompleted(virConnectPtr inner G_GNUC_UNUSED,
                                 virDomainPtr dom, virTypedParameterPtr params,
                                 int nparams, void *opaque)
{
    kvmsaveEventsQueueJobCompleted(opaque, dom, params, nparams);
}


void
kvmsaveEventsJobCompleted(const unsigned char *uuid, const char *name, int id,
                          virTypedParameterPtr params, int nparams)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveEventsLock);
    /* The event keeps only these three fields. A real virDomain would
     * reference a connection that another thread may be closing. */
    virDomain dom = { .name = (char *) name, .id = id };
    GList *l;

    memcpy(dom.uuid, uuid, VIR_UUID_BUFLEN);
    for (l = kvmsaveEventsAll; l; l = l->next) {
        kvmsaveEvents *ev = l->data;

        if (g_atomic_int_get(&ev->innerJobCompletedID) >= 0) /* listened to */
            kvmsaveEventsQueueJobCompleted(ev, &dom, params, nparams);
    }
}


static kvmsaveEvents *
kvmsaveEventsFromConnect(virConnectPtr conn)
{
    return kvmsaveConnFromConnect(conn)->events;
}


/* Our forwarder of the inner driver's events of kind @eventID, once. */
static int
kvmsaveEventsEnsureForwarder(kvmsaveEvents *ev, int eventID)
{
    int *id = eventID == VIR_DOMAIN_EVENT_ID_LIFECYCLE ?
              &ev->innerLifecycleID : &ev->innerJobCompletedID;
    virConnectDomainEventGenericCallback cb = eventID == VIR_DOMAIN_EVENT_ID_LIFECYCLE ?
        VIR_DOMAIN_EVENT_CALLBACK(kvmsaveEventsForward) :
        VIR_DOMAIN_EVENT_CALLBACK(kvmsaveEventsForwardJobCompleted);

    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&ev->forwarderLock);
    int newID;

    if (g_atomic_int_get(id) >= 0)
        return 0;
    newID = virConnectDomainEventRegisterAny(ev->inner, NULL, eventID, cb, ev, NULL);
    g_atomic_int_set(id, newID);
    return newID < 0 ? -1 : 0;
}


static int
kvmsaveEventsAddCallback(kvmsaveEvents *ev, int realID, bool ours)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveEventsLock);
    kvmsaveEventCallback cb = { .id = ev->nextID++, .realID = realID, .ours = ours };

    g_array_append_val(ev->callbacks, cb);
    return cb.id;
}


/* Take the callback the client knows as @id out of the table. */
static bool
kvmsaveEventsTakeCallback(kvmsaveEvents *ev, int id, kvmsaveEventCallback *out)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&kvmsaveEventsLock);
    size_t i;

    for (i = 0; i < ev->callbacks->len; i++) {
        if (g_array_index(ev->callbacks, kvmsaveEventCallback, i).id == id) {
            *out = g_array_index(ev->callbacks, kvmsaveEventCallback, i);
            g_array_remove_index(ev->callbacks, i);
            return true;
        }
    }
    return false;
}


int
kvmsaveEventsRegister(virConnectPtr conn,
                      virConnectDomainEventCallback callback,
                      void *opaque, virFreeCallback freecb)
{
    kvmsaveEvents *ev = kvmsaveEventsFromConnect(conn);

    if (kvmsaveEventsEnsureForwarder(ev, VIR_DOMAIN_EVENT_ID_LIFECYCLE) < 0)
        return -1;
    return virDomainEventStateRegister(conn, ev->state, callback, opaque, freecb);
}


int
kvmsaveEventsDeregister(virConnectPtr conn,
                        virConnectDomainEventCallback callback)
{
    kvmsaveEvents *ev = kvmsaveEventsFromConnect(conn);

    return virDomainEventStateDeregister(conn, ev->state, callback);
}


int
kvmsaveEventsRegisterAny(virConnectPtr conn, virDomainPtr dom, int eventID,
                         virConnectDomainEventGenericCallback callback,
                         void *opaque, virFreeCallback freecb)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(conn);
    kvmsaveEvents *ev = priv->events;
    int realID;

    /* Lifecycle events are rewritten, and JOB_COMPLETED comes from
     * kvmsave's own jobs too; other kinds are the inner driver's. */
    if (eventID != VIR_DOMAIN_EVENT_ID_LIFECYCLE &&
        eventID != VIR_DOMAIN_EVENT_ID_JOB_COMPLETED) {
        realID = priv->innerDriver->connectDomainEventRegisterAny(conn, dom, eventID,
                                                                  callback, opaque,
                                                                  freecb);
        return realID < 0 ? -1 : kvmsaveEventsAddCallback(ev, realID, false);
    }

    if (kvmsaveEventsEnsureForwarder(ev, eventID) < 0 ||
        virDomainEventStateRegisterID(conn, ev->state, dom, eventID,
                                      callback, opaque, freecb, &realID) < 0)
        return -1;
    return kvmsaveEventsAddCallback(ev, realID, true);
}


int
kvmsaveEventsDeregisterAny(virConnectPtr conn, int callbackID)
{
    kvmsaveConn *priv = kvmsaveConnFromConnect(conn);
    kvmsaveEvents *ev = priv->events;
    kvmsaveEventCallback cb;

    if (!kvmsaveEventsTakeCallback(ev, callbackID, &cb)) {
        virReportError(VIR_ERR_INVALID_ARG,
                       _("could not find event callback %d for deregistration"),
                       callbackID);
        return -1;
    }
    if (cb.ours)
        return virObjectEventStateDeregisterID(conn, ev->state, cb.realID, true);
    return priv->innerDriver->connectDomainEventDeregisterAny(conn, cb.realID);
}
