#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Host shutdown and boot with N guests, side by side in one run:

  libvirt-guests, stock   Debian's libvirt-guests.sh, URIS=qemu:///embed?root=R
                          (stock managed save, one guest after another)
  libvirt-guests, kvmsave the same script, URIS=kvmsave:///embed?root=R
  kvmsave-all -j 1        tools/kvmsave-all save / restore, one at a time
  kvmsave-all -j N        the same, N at a time (kvmsave-guests.service)

"shutdown" is the wall time of `libvirt-guests.sh stop` (`kvmsave-all
save`), "boot" that of `start` (`restore`), caches dropped before each.
Every guest's memory check must pass after each boot.  As root:

    /usr/bin/python3 bench/shutdown.py [--guests 4] [--memory 1024] [--data 512]
        [--jobs 4] [--repeat 2] [--json FILE]

The kvmsave rows share one root and its guests (each boot brings them back
running), the stock row has its own.  libvirt-guests.sh runs unmodified in
a private mount namespace with its configuration and list file in scratch
directories (as tests/integration/test_libvirt_guests.py does).
"""

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, '..'))
sys.path.insert(0, os.path.join(TOP, 'tests', 'integration'))
sys.path.insert(0, HERE)
os.environ.setdefault('KVMSAVE_GUEST_DIR', '/var/cache/kvmsave-bench/guest')

import kvmsave_harness as h   # noqa: E402
from bench import drop_caches   # noqa: E402

SCRIPT = '/usr/lib/libvirt/libvirt-guests.sh'
RUN = os.path.join(TOP, 'run')


def note(msg):
    print(f'shutdown: {msg}', file=sys.stderr, flush=True)


def timed(argv, env=None):
    """Run ARGV; its wall time.  It must succeed."""
    t0 = time.monotonic()
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=1800)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f'shutdown: {shlex.join(argv)} failed ({proc.returncode}):\n'
                 f'{proc.stdout}{proc.stderr}')
    return elapsed


class Root:
    """An embedded root with N guests: URI, virsh, guests and their consoles."""

    def __init__(self, name, kvmsave, a):
        self.dir = h.make_root(prefix=f'kvmsave-shutdown-{name}-')
        if kvmsave:
            self.uri = f'kvmsave:///embed?root={self.dir}'
            self.wrapper = [RUN]
        else:
            self.uri = f'qemu:///embed?root={self.dir}'
            self.wrapper = []
        self.virsh = h.Virsh(self.wrapper + ['virsh', '-c', self.uri])
        self.guests = []
        for i in range(a.guests):
            gname = f'{name}-g{i}'
            console = h.console_path(self.dir, gname)
            xml = h.domain_xml(gname, console, memory_mib=a.memory, data_mib=a.data)
            with tempfile.NamedTemporaryFile('w', suffix='.xml') as fh:
                fh.write(xml)
                fh.flush()
                self.virsh.run('define', fh.name)
            self.guests.append({'name': gname, 'console': h.Console(console)})

    def boot(self):
        """Start every guest, one at a time (TCG guests booting at once on a
        busy host can fail their timer check), and note its memory check."""
        for g in self.guests:
            self.virsh.run('start', g['name'])
            g['md5'] = g['console'].wait_mem_ready(timeout=600)
            g['boot'] = g['console'].boot_id()
            g['console'].wait_for_heartbeat(min_n=2, boot_id=g['boot'], timeout=60)

    def checkpoint(self):
        for g in self.guests:
            state = self.virsh.run('domstate', g['name']).stdout.strip()
            if state != 'shut off':
                sys.exit(f'shutdown: {g["name"]} is {state} after the shutdown')
            g['before'] = g['console'].wait_for_heartbeat(boot_id=g['boot'])[0]

    def assert_continued(self):
        for g in self.guests:
            g['console'].assert_continued(g['before'], g['boot'], g['md5'], timeout=120)

    def remove(self):
        h.cleanup_root(self.dir, self.virsh)        # guests, images, root


def libvirt_guests(root, scratch):
    """(stop argv, start argv, env) of libvirt-guests.sh for ROOT."""
    dirs = {d: os.path.join(scratch, 'lg', d) for d in ('default', 'lib', 'lock')}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(dirs['default'], 'libvirt-guests'), 'w') as fh:
        fh.write(f'URIS={shlex.quote(root.uri)}\nON_BOOT=start\nON_SHUTDOWN=suspend\n'
                 'PARALLEL_SHUTDOWN=0\nSHUTDOWN_TIMEOUT=300\n')
    binds = [(dirs['default'], '/etc/default'), (dirs['lib'], '/var/lib/libvirt'),
             (dirs['lock'], '/var/lock')]
    env = dict(os.environ, LC_ALL='C.UTF-8')
    return ([h.in_mount_namespace(binds, root.wrapper + [SCRIPT, action])
             for action in ('stop', 'start')] + [env])


def kvmsave_all(root, scratch, jobs):
    out = os.path.join(scratch, f'saved-j{jobs}')
    cmd = [RUN, '/usr/bin/python3', os.path.join(TOP, 'tools', 'kvmsave-all'),
           '-c', root.uri, '-j', str(jobs)]

    def stop():
        shutil.rmtree(out, ignore_errors=True)
        return cmd + ['save', out]
    return stop, cmd + ['restore', out]


def measure(label, root, stop, start, env, repeat, results):
    for i in range(repeat):
        drop_caches()
        down = timed(stop() if callable(stop) else stop, env)
        root.checkpoint()
        drop_caches()
        up = timed(start, env)
        root.assert_continued()
        note(f'{label}: shutdown {down:.2f} s, boot {up:.2f} s (run {i + 1})')
        results.setdefault(label, {'shutdown': [], 'boot': []})
        results[label]['shutdown'].append(down)
        results[label]['boot'].append(up)


def table(results, a):
    lines = [f'{a.guests} guests, {a.memory} MiB RAM each, {a.data} MiB random data; '
             f'medians of {a.repeat}, seconds',
             '',
             '| host | shutdown (all saved) | boot (all running) |',
             '|---|---|---|']
    for label, r in results.items():
        lines.append(f'| {label} | {statistics.median(r["shutdown"]):.2f} '
                     f'| {statistics.median(r["boot"]):.2f} |')
    return '\n'.join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--guests', type=int, default=4)
    p.add_argument('--memory', type=int, default=1024, help='MiB of RAM per guest')
    p.add_argument('--data', type=int, default=512, help='MiB of random data per guest')
    p.add_argument('--jobs', type=int, default=4, help='kvmsave-all -j')
    p.add_argument('--repeat', type=int, default=2)
    p.add_argument('--dir', default='/var/tmp')
    p.add_argument('--json')
    a = p.parse_args()
    h.ensure_guest()
    h.QemuReaper().start()          # QEMUs reaped at once, as under systemd
    scratch = tempfile.mkdtemp(prefix='kvmsave-shutdown-', dir=a.dir)
    results = {}
    roots = []
    try:
        stock = Root('stock', False, a)
        roots.append(stock)
        stock.boot()
        stop, start, env = libvirt_guests(stock, os.path.join(scratch, 'stock-lg'))
        measure('libvirt-guests.sh, stock', stock, stop, start, env, a.repeat, results)
        stock.remove()
        roots.remove(stock)

        ks = Root('kvmsave', True, a)
        roots.append(ks)
        ks.boot()
        stop, start, env = libvirt_guests(ks, os.path.join(scratch, 'ks-lg'))
        measure('libvirt-guests.sh, kvmsave', ks, stop, start, env, a.repeat, results)
        for jobs in (1, a.jobs):
            stop, start = kvmsave_all(ks, scratch, jobs)
            measure(f'kvmsave-all -j {jobs}', ks, stop, start, None, a.repeat, results)
    finally:
        for r in roots:
            r.remove()
        shutil.rmtree(scratch, ignore_errors=True)     # the images
    print(table(results, a))
    if a.json:
        with open(a.json, 'w') as fh:
            json.dump({'args': vars(a), 'results': results}, fh, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
