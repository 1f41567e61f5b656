#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""What it costs this host to touch fresh memory, the floor of an eager
restore: MiB of anonymous memory written one byte per 4 KiB page, by one
thread or two (halves, or alternating blocks as multifd channels get
their packets), with transparent huge pages or without, each after a
cache drop and --settle seconds (so that the memory is no longer backed
on a host whose balloon reports freed pages).

    /usr/bin/python3 bench/experiments/first_touch.py --mib 768 --repeat 2

Needs root (the cache drop) and a C compiler.
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import time

SOURCE = r'''
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
static char *base; static size_t len, blk; static int nthr;
static void *run(void *a)
{
    size_t i = (size_t) a, b, o;
    for (b = i * blk; b < len; b += nthr * blk)
        for (o = 0; o < blk && b + o < len; o += 4096)
            base[b + o] = 1;
    return NULL;
}
int main(int argc, char **argv)
{
    struct timespec t0, t1; pthread_t t[2]; long i;
    len = (size_t) atol(argv[1]) << 20; nthr = atoi(argv[2]);
    blk = argv[4][0] == '0' ? len / nthr : (size_t) atol(argv[4]) << 10;
    base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    madvise(base, len, atoi(argv[3]) ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (i = 0; i < nthr; i++) pthread_create(&t[i], NULL, run, (void *) i);
    for (i = 0; i < nthr; i++) pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%.3f\n", (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}
'''

# (label, threads, THP, block KiB; 0: each thread one half)
CASES = [('1 thread, THP', 1, 1, 0), ('2 threads, halves, THP', 2, 1, 0),
         ('2 threads, 512 KiB alternating, THP', 2, 1, 512),
         ('1 thread, 4 KiB pages', 1, 0, 0), ('2 threads, halves, 4 KiB pages', 2, 0, 0)]


def drop_caches():
    os.sync()
    with open('/proc/sys/vm/drop_caches', 'w') as fh:
        fh.write('3\n')


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--mib', type=int, default=768)
    p.add_argument('--repeat', type=int, default=2)
    p.add_argument('--settle', type=float, default=10)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, 't.c'), os.path.join(d, 't')
        with open(src, 'w') as fh:
            fh.write(SOURCE)
        subprocess.run(['cc', '-O2', '-pthread', src, '-o', exe], check=True)
        times = {c[0]: [] for c in CASES}
        for _ in range(args.repeat):
            for label, nthr, thp, blk in CASES:
                drop_caches()
                time.sleep(args.settle)
                out = subprocess.run([exe, str(args.mib), str(nthr), str(thp), str(blk)],
                                     check=True, capture_output=True, text=True).stdout
                times[label].append(float(out))
    print(f'{args.mib} MiB of fresh memory, {args.settle:g} s after a cache drop; '
          f'seconds, median (min-max) of {args.repeat}')
    for label, t in times.items():
        print(f'  {label:40s} {statistics.median(t):6.2f} ({min(t):.2f}-{max(t):.2f})')


if __name__ == '__main__':
    main()
