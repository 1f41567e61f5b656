/*
 * kvmsave_event.h: domain lifecycle and job events as stock libvirt sends them
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * kvmsave drives the inner driver with plain calls (suspend, create
 * paused, resume, destroy), whose lifecycle events say what those calls
 * did: "destroyed", "booted". Clients expect what a save or restore is:
 * STOPPED/SAVED, STARTED/RESTORED. So the outer connection keeps its own
 * lifecycle callbacks, forwards the inner driver's events to them, and
 * the engines announce, just before each call, how its event is to be
 * rewritten (or dropped). JOB_COMPLETED, which the inner driver never
 * sends for kvmsave's own jobs, kvmsave sends itself, beside the inner
 * driver's. Other event kinds go to the inner driver as is.
 */
#pragma once

#include "kvmsave_conn.h"


kvmsaveEvents *kvmsaveEventsNew(virConnectPtr outer, virConnectPtr inner);
void kvmsaveEventsFree(kvmsaveEvents *ev);

/* The next lifecycle event (@type, @detail) of guest @uuid becomes
 * (@newType, @newDetail) on every kvmsave connection of this process, or
 * is dropped when @newType is -1. */
void kvmsaveEventsExpect(const unsigned char *uuid, int type, int detail,
                         int newType, int newDetail);

/* kvmsave destroys guest @uuid's QEMU: clients see no SHUTDOWN, and its
 * STOPPED/DESTROYED event as STOPPED/@stoppedDetail. */
void kvmsaveEventsExpectDestroy(const unsigned char *uuid, int stoppedDetail);

/* The operation on guest @uuid that announced rewrites ended: what it
 * announced may still come, but no longer for ever. */
void kvmsaveEventsSettle(const unsigned char *uuid);

/* Drop what was announced for @uuid (the call that would have caused
 * the event failed). */
void kvmsaveEventsForget(const unsigned char *uuid);

/* Guest @uuid (@name, @id) ended a job well: JOB_COMPLETED with its
 * statistics @params on every kvmsave connection of this process that
 * listens for it. @params stay the caller's. */
void kvmsaveEventsJobCompleted(const unsigned char *uuid, const char *name,
                               int id, virTypedParameterPtr params,
                               int nparams);

/* Driver entry points. */
int kvmsaveEventsRegister(virConnectPtr conn,
                          virConnectDomainEventCallback callback,
                          void *opaque, virFreeCallback freecb);
int kvmsaveEventsDeregister(virConnectPtr conn,
                            virConnectDomainEventCallback callback);
int kvmsaveEventsRegisterAny(virConnectPtr conn, virDomainPtr dom,
                             int eventID,
                             virConnectDomainEventGenericCallback callback,
                             void *opaque, virFreeCallback freecb);
int kvmsaveEventsDeregisterAny(virConnectPtr conn, int callbackID);
