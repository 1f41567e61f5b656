/*
 * kvmsave_monitor.h: QMP commands sent through libvirt's monitor
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Everything goes through virDomainQemuMonitorCommandWithFiles(), so the
 * domain's QEMU is reached on libvirt's own monitor connection and file
 * descriptors are handed over with SCM_RIGHTS: no path and no shell ever
 * reaches QEMU.
 */
#pragma once

#include "internal.h"
#include "virjson.h"

typedef enum {
    KVMSAVE_MIGRATION_NONE,
    KVMSAVE_MIGRATION_ACTIVE,   /* setup, active, device, ... */
    KVMSAVE_MIGRATION_COMPLETED,
    KVMSAVE_MIGRATION_FAILED,   /* failed, cancelled */
} kvmsaveMigrationState;

typedef struct _kvmsaveMigrationStatus kvmsaveMigrationStatus;
struct _kvmsaveMigrationStatus {
    kvmsaveMigrationState state;
    char *status;               /* QEMU's own word for it */
    char *error;                /* QEMU's error-desc, if any */
    unsigned long long transferred;
    unsigned long long total;
    unsigned long long remaining;
    double mbps;                /* QEMU's throughput, Mbit/s */
};
void kvmsaveMigrationStatusClear(kvmsaveMigrationStatus *st);

/* Run @cmd with @args (NULL for none; consumed), passing @fds; returns the
 * "return" member of QEMU's reply, or NULL with an error reported. */
virJSONValue *kvmsaveMonitorCommand(virDomainPtr dom, const char *cmd,
                                    virJSONValue *args,
                                    int *fds, unsigned int nfds);

int kvmsaveMonitorGetFd(virDomainPtr dom, const char *fdname, int fd);
int kvmsaveMonitorCloseFd(virDomainPtr dom, const char *fdname);
int kvmsaveMonitorSetUnlimitedBandwidth(virDomainPtr dom);
/* migrate, or migrate-incoming, to SCHEME:TARGET: "fd" and a getfd name,
 * or "unix" and a socket path (multifd needs a socket QEMU opens itself). */
int kvmsaveMonitorMigrate(virDomainPtr dom, const char *scheme,
                          const char *target);
int kvmsaveMonitorMigrateIncoming(virDomainPtr dom, const char *scheme,
                                  const char *target);
/* QEMU's multifd: @channels streams besides the main one, or off (0). A
 * save sets it every time, as libvirt's own save sets every capability it
 * knows: QEMU keeps them from one migration to the next. */
int kvmsaveMonitorSetMultifd(virDomainPtr dom, unsigned int channels);
/* Turn QEMU's migration capability @name on or off. */
int kvmsaveMonitorSetCapability(virDomainPtr dom, const char *name, bool state);
/* Set QEMU's boolean migration parameter @name. */
int kvmsaveMonitorSetParameterBool(virDomainPtr dom, const char *name, bool state);
/* Put @fd into fdset *@fdset, or into a new one when it is -1 (add-fd),
 * labelled @opaque if not NULL: *@fdset its ID, for "/dev/fdset/N". */
int kvmsaveMonitorAddFd(virDomainPtr dom, int fd, const char *opaque,
                        int *fdset);
int kvmsaveMonitorRemoveFd(virDomainPtr dom, int fdset);
/* Remove every fdset holding a descriptor labelled @opaque: those a
 * killed client left in QEMU. */
int kvmsaveMonitorRemoveFdsetsOf(virDomainPtr dom, const char *opaque);

int kvmsaveMonitorMigrateCancel(virDomainPtr dom);
int kvmsaveMonitorMigrateWaitEnd(virDomainPtr dom);
int kvmsaveMonitorQueryMigrate(virDomainPtr dom, kvmsaveMigrationStatus *st);
char *kvmsaveMonitorQemuVersion(virDomainPtr dom);

/* Called at every poll with QEMU's status; returns true to stop waiting. */
typedef bool (*kvmsaveMigrationPoll)(const kvmsaveMigrationStatus *st,
                                     void *opaque);

/* Poll query-migrate until it completes (0) or fails (-1, with an error
 * naming @what), or until @poll asks to stop (-2, no error). */
int kvmsaveMonitorWaitMigration(virDomainPtr dom, const char *what,
                                kvmsaveMigrationPoll poll, void *opaque);
