# SPDX-License-Identifier: LGPL-2.1-or-later
"""What a short virsh call costs through an embedded root, and how often it
dies by a signal at exit: kvmsave against plain qemu:///embed (stock), in one
run, on the same root with 0, 1, 2 and 4 running guests.

    /usr/bin/python3 bench/embedded_exit.py [--calls N] [--guests 0,1,2,4]
        [--run PATH] [--baseline NAME=RUN ...]

Every call is `virsh -c URI domstate GUEST`, a process of its own, so each
pays the embedded driver's start and the reconnect to the running guests.
A `--baseline NAME=RUN` row runs kvmsave through another build's ./run (for
instance a build without the fix in plugin/kvmsave_embed.c). See
docs/performance.md, "Short calls through an embedded root".
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'integration'))

from kvmsave_harness import (QemuReaper, Virsh, cleanup_root, console_path,  # noqa: E402
                             domain_xml, embed_uri, ensure_guest, make_root)


def measure(prefix, guest, calls):
    times, signals, failures = [], 0, 0
    for _ in range(calls):
        t0 = time.monotonic()
        proc = subprocess.run(prefix + ['domstate', guest], capture_output=True, text=True)
        times.append(time.monotonic() - t0)
        if proc.returncode < 0:
            signals += 1
        elif proc.returncode != 0:
            failures += 1
    return statistics.median(times), statistics.mean(times), signals, failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--calls', type=int, default=60)
    ap.add_argument('--guests', default='0,1,2,4')
    ap.add_argument('--run', default=os.path.join(HERE, '..', 'run'))
    ap.add_argument('--baseline', action='append', default=[],
                    metavar='NAME=RUN')
    args = ap.parse_args()
    counts = [int(n) for n in args.guests.split(',')]

    QemuReaper().start()
    ensure_guest()
    root = make_root(prefix='kvmsave-bench-exit-')
    kvmsave = [os.path.abspath(args.run), 'virsh', '-c', embed_uri(root, 'kvmsave')]
    drivers = [('kvmsave', kvmsave), ('stock', ['virsh', '-c', embed_uri(root)])]
    for spec in args.baseline:
        name, run = spec.split('=', 1)
        drivers.append((name, [os.path.abspath(run), 'virsh', '-c', embed_uri(root, 'kvmsave')]))
    virsh = Virsh(kvmsave)
    names = []
    try:
        print(f'{args.calls} calls of `virsh domstate` per row; times in ms')
        print(f'| guests | driver | median | mean | per guest over 0 | died by a signal | failed |')
        print('|---:|---|---:|---:|---:|---:|---:|')
        base = {}
        for n in counts:
            while len(names) < n:
                name = f'x{len(names)}'
                virsh.define(domain_xml(name, console_path(root, name), memory_mib=128, data_mib=8))
                virsh.run('start', name)
                names.append(name)
            target = names[0] if names else None
            if target is None:
                virsh.define(domain_xml('idle', console_path(root, 'idle'), memory_mib=128))
                target = 'idle'
            for label, prefix in drivers:
                med, mean, sig, fail = measure(prefix, target, args.calls)
                if n == 0:
                    base[label] = med
                extra = (f'{(med - base[label]) * 1000 / n:.1f}'
                         if n and label in base else '-')
                print(f'| {n} | {label} | {med * 1000:.0f} | {mean * 1000:.0f} | {extra} '
                      f'| {sig} | {fail} |', flush=True)
    finally:
        cleanup_root(root, virsh)


if __name__ == '__main__':
    main()
