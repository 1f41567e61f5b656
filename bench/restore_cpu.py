#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Where a restore's time goes: the same image restored again and again,
stock libvirt's and kvmsave's side by side, each restore timed with the
CPU its client (virsh, kvmsave in it) and its QEMU used, user and system.

    /usr/bin/python3 bench/restore_cpu.py --memory 4096 --data 3072 --repeat 4

One guest per driver, saved once (virsh save); then REPEAT rounds, the
drivers in alternating order, each a cache drop, a wait of --settle
seconds, `virsh restore --paused` and a destroy.  The wait matters on a
VM whose balloon reports freed pages to its host after a few seconds:
without it, a restore right after the other driver's destroy gets the
memory that destroy freed still backed, and is several times faster than
one that must fault in reported pages (docs/performance.md).  QEMU's CPU is read from /proc right after the restore
returned, while the guest is still paused: all of it is its start and its
load of the stream.  Needs root, the build tree's ./run and the test guest.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, '..'))
sys.path.insert(0, os.path.join(TOP, 'tests', 'integration'))
os.environ.setdefault('KVMSAVE_GUEST_DIR', '/var/cache/kvmsave-bench/guest')

import kvmsave_harness as h   # noqa: E402

TICK = os.sysconf('SC_CLK_TCK')


def drop_caches():
    os.sync()
    with open('/proc/sys/vm/drop_caches', 'w') as fh:
        fh.write('3\n')


def qemu_cpu(root):
    """(user, system) seconds of the QEMU of ROOT, or None."""
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as fh:
                cmd = fh.read()
            with open(f'/proc/{pid}/stat') as fh:
                f = fh.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if b'qemu-system' in cmd and root.encode() in cmd:
            return int(f[11]) / TICK, int(f[12]) / TICK
    return None


class Side:
    def __init__(self, scheme, base, args):
        self.label = 'stock' if scheme == 'qemu' else 'kvmsave raw'
        self.root = os.path.join(base, scheme)
        os.makedirs(os.path.join(self.root, 'etc'))
        os.chmod(self.root, 0o755)
        with open(os.path.join(self.root, 'etc', 'qemu.conf'), 'w') as fh:
            fh.write(h.DEFAULT_QEMU_CONF)
        wrap = [os.path.join(TOP, 'run')] if scheme == 'kvmsave' else []
        self.virsh = wrap + ['virsh', '-c', h.embed_uri(self.root, scheme)]
        self.console = h.console_path(self.root, 'bench')
        self.xml = h.domain_xml('bench', self.console, uuid=str(uuidlib.uuid4()),
                                memory_mib=args.memory, data_mib=args.data,
                                fill='random')
        self.image = os.path.join(self.root, 'bench.img')
        self.samples = []

    def run(self, *argv, check=True):
        return subprocess.run(self.virsh + list(argv), check=check,
                              capture_output=True, text=True)

    def setup(self):
        xml = os.path.join(self.root, 'bench.xml')
        with open(xml, 'w') as fh:
            fh.write(self.xml)
        self.run('define', xml)
        self.run('start', 'bench')
        h.Console(self.console).wait_mem_ready(timeout=900)
        self.run('save', 'bench', self.image)

    def restore(self, settle):
        drop_caches()
        time.sleep(settle)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.monotonic()
        self.run('restore', '--paused', self.image)
        elapsed = time.monotonic() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cu = after.ru_utime - before.ru_utime
        cs = after.ru_stime - before.ru_stime
        qu, qs = qemu_cpu(self.root)
        self.samples.append({'elapsed': elapsed, 'client_user': cu,
                             'client_sys': cs, 'qemu_user': qu, 'qemu_sys': qs})
        # An embedded root's next process may already have stopped it.
        self.run('destroy', 'bench', check=False)
        while qemu_cpu(self.root):
            time.sleep(0.1)


def table(sides, args):
    cols = ('elapsed', 'client_user', 'client_sys', 'qemu_user', 'qemu_sys')
    lines = [f'guest {args.memory} MiB RAM, {args.data} MiB random data; medians of '
             f'{args.repeat} restores of one image, {args.settle:g} s after a cache drop; seconds',
             f'{"":14s}' + ''.join(f'{c:>13s}' for c in cols) + '   elapsed min-max']
    for s in sides:
        med = {c: statistics.median(x[c] for x in s.samples) for c in cols}
        el = [x['elapsed'] for x in s.samples]
        lines.append(f'{s.label:14s}' + ''.join(f'{med[c]:13.2f}' for c in cols) +
                     f'   {min(el):.2f}-{max(el):.2f}')
    return '\n'.join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--memory', type=int, default=4096)
    p.add_argument('--data', type=int, default=3072)
    p.add_argument('--repeat', type=int, default=4)
    p.add_argument('--settle', type=float, default=10,
                   help='seconds between the cache drop and each restore (default 10)')
    p.add_argument('--json')
    args = p.parse_args()
    base = tempfile.mkdtemp(prefix='kvmsave-restore-cpu-', dir='/var/tmp')
    os.chmod(base, 0o755)
    sides = [Side('qemu', base, args), Side('kvmsave', base, args)]
    try:
        for s in sides:
            s.setup()
        for r in range(args.repeat):
            for s in sides if r % 2 == 0 else sides[::-1]:
                s.restore(args.settle)
                print(f'r{r} {s.label:12s} ' + ' '.join(
                    f'{k}={v:.2f}' for k, v in s.samples[-1].items()), flush=True)
    finally:
        for s in sides:
            s.run('destroy', 'bench', check=False)
            s.run('undefine', 'bench', check=False)
        subprocess.run(['rm', '-rf', base])
    print(table(sides, args))
    if args.json:
        with open(args.json, 'w') as fh:
            json.dump({'args': vars(args), 'samples': {s.label: s.samples for s in sides}},
                      fh, indent=1)


if __name__ == '__main__':
    main()
