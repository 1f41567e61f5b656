/*
 * kvmsave-pagesrv: the page server of one lazy restore
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 *   kvmsave-pagesrv [--recover] [--status FILE] --socket-fd N IMAGE
 *
 * Started by kvmsave per lazy restore, with the image open on standard
 * input and its end of QEMU's incoming migration socket as descriptor N;
 * it outlives the client that started it and ends once QEMU has every
 * page. --recover continues a migration QEMU paused after its previous
 * page server was lost. --status FILE is rewritten (atomically, by
 * rename) as the pages go: "state pages total asked", then the error.
 * IMAGE names the image in messages; it is never opened by path.
 */
#include <config.h>

#include <getopt.h>
#include <libintl.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kvmsave_pagesrv.h"
#include "virerror.h"
#include "virfile.h"

#define STATUS_INTERVAL_US (200 * 1000)

typedef struct {
    kvmsavePageServer *ps;
    const char *status;
    GMutex lock;
    GCond cond;
    bool ended;
} Progress;


static void
writeStatus(const char *path, const char *state, kvmsavePageServer *ps,
            const char *error)
{
    g_autofree char *tmp = NULL;
    g_autofree char *text = NULL;
    uint64_t total = 0, done = 0, asked = 0;

    if (!path)
        return;
    if (ps) {
        done = kvmsavePageServerDone(ps, &total);
        asked = kvmsavePageServerAsked(ps);
    }
    tmp = g_strdup_printf("%s.tmp", path);
    text = g_strdup_printf("%s %llu %llu %llu\n%s\n", state,
                           (unsigned long long) done, (unsigned long long) total,
                           (unsigned long long) asked, error ? error : "");
    /* A reader never sees a torn status. */
    if (!g_file_set_contents(tmp, text, -1, NULL) || rename(tmp, path) < 0)
        fprintf(stderr, "kvmsave-pagesrv: cannot write %s\n", path);
}


static gpointer
progressThread(gpointer opaque)
{
    Progress *p = opaque;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&p->lock);

    while (!p->ended) {
        gint64 until = g_get_monotonic_time() + STATUS_INTERVAL_US;

        writeStatus(p->status, "serving", p->ps, NULL);
        while (!p->ended && g_cond_wait_until(&p->cond, &p->lock, until))
            ;
    }
    return NULL;
}


static void
usage(FILE *out)
{
    fprintf(out, "%s", _("usage: kvmsave-pagesrv [--recover] [--status FILE] --socket-fd N IMAGE\n"));
}


static int
serve(const char *image, int sock, bool recover, const char *status)
{
    g_autoptr(kvmsavePageServer) ps = NULL;
    Progress p = { .status = status };
    GThread *t = NULL;
    int rc;

    if (!(ps = kvmsavePageServerOpen(image, STDIN_FILENO)))
        return -1;
    g_mutex_init(&p.lock);
    g_cond_init(&p.cond);
    p.ps = ps;
    if (status)
        t = g_thread_new("kvmsave-status", progressThread, &p);
    rc = kvmsavePageServerRun(ps, sock, recover);
    if (t) {
        g_mutex_lock(&p.lock);
        p.ended = true;
        g_cond_signal(&p.cond);
        g_mutex_unlock(&p.lock);
        g_thread_join(t);
    }
    writeStatus(status, rc == 0 ? "done" : "failed", ps,
                rc == 0 ? NULL : virGetLastErrorMessage());
    g_mutex_clear(&p.lock);
    g_cond_clear(&p.cond);
    return rc;
}


int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "recover", no_argument, NULL, 'r' },
        { "status", required_argument, NULL, 's' },
        { "socket-fd", required_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *localedir = getenv("KVMSAVE_LOCALEDIR");
    const char *status = NULL;
    bool recover = false;
    int sock = -1;
    int c;

    setlocale(LC_ALL, "");
    bindtextdomain(PACKAGE, localedir && *localedir ? localedir : LOCALEDIR);
    textdomain(PACKAGE);
    signal(SIGPIPE, SIG_IGN);
    if (virErrorInitialize() < 0)
        return EXIT_FAILURE;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            recover = true;
            break;
        case 's':
            status = optarg;
            break;
        case 'f':
            sock = atoi(optarg);
            break;
        case 'h':
            usage(stdout);
            return EXIT_SUCCESS;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (sock < 0 || optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    if (serve(argv[optind], sock, recover, status) < 0) {
        fprintf(stderr, "kvmsave-pagesrv: %s: %s\n", argv[optind],
                virGetLastErrorMessage());
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}
