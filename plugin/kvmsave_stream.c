/*
 * kvmsave_stream.c: the plumbing of QEMU's migration streams that a save
 * and a restore share
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvmsave_stream.h"
#include "kvmsave_monitor.h"
#include "virerror.h"
#include "virfile.h"
#include "virlog.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

VIR_LOG_INIT("kvmsave.stream");

typedef struct _kvmsaveStream kvmsaveStream;
struct _kvmsaveStream {
    kvmsaveStreamSet *set;
    size_t i;
    int fd;                     /* our end of QEMU's stream */
    GThread *thread;            /* until joined */
    bool started;
    int rc;
    virErrorPtr err;
    int order;                  /* how many had failed before this one */
};

struct _kvmsaveStreamSet {
    const char *name;
    kvmsaveStreamFunc func;
    kvmsaveStreamFailedFunc failed;
    void *opaque;
    kvmsaveStream *streams;
    size_t n;
    size_t started;
    gint failures;
    GMutex lock;
    GCond cond;
    size_t done;                /* threads that ended, under @lock */
};


kvmsaveStreamSet *
kvmsaveStreamSetNew(const char *name, size_t n, kvmsaveStreamFunc func,
                    kvmsaveStreamFailedFunc failed, void *opaque)
{
    kvmsaveStreamSet *set = g_new0(kvmsaveStreamSet, 1);
    size_t i;

    set->name = name;
    set->func = func;
    set->failed = failed;
    set->opaque = opaque;
    set->n = n;
    set->streams = g_new0(kvmsaveStream, n);
    g_mutex_init(&set->lock);
    g_cond_init(&set->cond);
    for (i = 0; i < n; i++) {
        set->streams[i].set = set;
        set->streams[i].i = i;
        set->streams[i].fd = -1;
        set->streams[i].rc = -1;
    }
    return set;
}


static gpointer
kvmsaveStreamThread(gpointer opaque)
{
    kvmsaveStream *st = opaque;
    kvmsaveStreamSet *set = st->set;
    sigset_t sigs;
    int rc;

    /* A QEMU that gave up makes a write to it fail with EPIPE instead of
     * killing us. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    rc = set->func(st->i, &st->fd, set->opaque);
    if (rc < 0) {
        st->err = virErrorCopyNew(virGetLastError());
        /* The first to fail has the cause; the others' broken pipes follow. */
        st->order = g_atomic_int_add(&set->failures, 1);
        if (set->failed)
            set->failed(st->i, st->order == 0, set->opaque);
    }
    st->rc = rc == 0 ? 0 : -1;
    /* QEMU sees its stream end: early, it fails. */
    VIR_FORCE_CLOSE(st->fd);
    g_mutex_lock(&set->lock);
    set->done++;
    g_cond_signal(&set->cond);
    g_mutex_unlock(&set->lock);
    return NULL;
}


void
kvmsaveStreamSetStart(kvmsaveStreamSet *set, size_t i, int fd)
{
    kvmsaveStream *st = &set->streams[i];

    st->fd = fd;
    st->started = true;
    set->started++;
    st->thread = g_thread_new(set->name, kvmsaveStreamThread, st);
}


size_t
kvmsaveStreamSetStarted(kvmsaveStreamSet *set)
{
    return set->started;
}


int
kvmsaveStreamSetWait(kvmsaveStreamSet *set, kvmsaveJob *job)
{
    int ret = 0;
    size_t i;

    g_mutex_lock(&set->lock);
    while (set->done < set->n) {
        /* A cancel is looked at ten times a second. */
        gint64 until = g_get_monotonic_time() + G_TIME_SPAN_SECOND / 10;

        if (kvmsaveJobIsCancelled(job)) {
            ret = -2;
            break;
        }
        if (g_atomic_int_get(&set->failures) > 0) {
            ret = -1;
            break;
        }
        g_cond_wait_until(&set->cond, &set->lock, until);
    }
    g_mutex_unlock(&set->lock);
    for (i = 0; ret == 0 && i < set->n; i++) {
        if (set->streams[i].rc < 0)
            ret = -1;
    }
    return ret;
}


int
kvmsaveStreamSetJoin(kvmsaveStreamSet *set)
{
    size_t i;

    for (i = 0; i < set->n; i++) {
        kvmsaveStream *st = &set->streams[i];

        if (st->thread)
            g_thread_join(g_steal_pointer(&st->thread));
        if (st->started && st->rc < 0)
            return -1;
    }
    return 0;
}


virErrorPtr
kvmsaveStreamSetFree(kvmsaveStreamSet *set, size_t *which)
{
    kvmsaveStream *first = NULL;
    virErrorPtr err = NULL;
    size_t i;

    if (!set)
        return NULL;
    for (i = 0; i < set->n; i++) {
        kvmsaveStream *st = &set->streams[i];

        if (st->thread)
            g_thread_join(g_steal_pointer(&st->thread));
        if (st->err && (!first || st->order < first->order))
            first = st;
    }
    if (first) {
        err = g_steal_pointer(&first->err);
        if (which)
            *which = first->i;
    }
    for (i = 0; i < set->n; i++) {
        VIR_FORCE_CLOSE(set->streams[i].fd);
        virFreeError(set->streams[i].err);
    }
    g_free(set->streams);
    g_mutex_clear(&set->lock);
    g_cond_clear(&set->cond);
    g_free(set);
    return err;
}


struct _kvmsaveStreamChannel {
    int fds[2];                 /* ours, QEMU's */
    char *fdname;               /* QEMU's name for its end */
    virDomainPtr dom;           /* holds @fdname, not yet migrating */
};


kvmsaveStreamChannel *
kvmsaveStreamChannelNew(const char *what)
{
    g_autoptr(kvmsaveStreamChannel) ch = g_new0(kvmsaveStreamChannel, 1);
    static gint counter;

    ch->fds[0] = ch->fds[1] = -1;
    /* Unique per process and job: several clients may reach one QEMU. */
    ch->fdname = g_strdup_printf("kvmsave-%s-%lld-%d", what, (long long) getpid(),
                                 g_atomic_int_add(&counter, 1));
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ch->fds) < 0) {
        virReportSystemError(errno, "%s",
                             _("cannot create the socket pair for QEMU's migration stream"));
        ch->fds[0] = ch->fds[1] = -1;
        return NULL;
    }
    return g_steal_pointer(&ch);
}


int
kvmsaveStreamChannelTakeOurs(kvmsaveStreamChannel *ch)
{
    int fd = ch->fds[0];

    ch->fds[0] = -1;
    return fd;
}


int
kvmsaveStreamChannelMigrate(kvmsaveStreamChannel *ch, virDomainPtr dom)
{
    if (kvmsaveMonitorGetFd(dom, ch->fdname, ch->fds[1]) < 0)
        return -1;
    ch->dom = virObjectRef(dom);
    VIR_FORCE_CLOSE(ch->fds[1]);
    if (kvmsaveMonitorMigrate(dom, "fd", ch->fdname) < 0)
        return -1;
    /* The migration owns QEMU's end now. */
    virObjectUnref(g_steal_pointer(&ch->dom));
    return 0;
}


void
kvmsaveStreamChannelFree(kvmsaveStreamChannel *ch)
{
    if (!ch)
        return;
    if (ch->dom) {
        ignore_value(kvmsaveMonitorCloseFd(ch->dom, ch->fdname));
        virObjectUnref(ch->dom);
    }
    VIR_FORCE_CLOSE(ch->fds[0]);
    VIR_FORCE_CLOSE(ch->fds[1]);
    g_free(ch->fdname);
    g_free(ch);
}


char *
kvmsaveStreamJournalDir(kvmsaveJournal *journal)
{
    char *dir = kvmsaveMultifdDirName();

    if (dir)
        kvmsaveJournalSet(journal, "multifd", dir);
    return dir;
}
