#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The same kvmsave save through virsh and through libvirt-python, side by
side: is a save slower from a Python client?

    /usr/bin/python3 bench/experiments/save_clients.py --memory 1024 --data 768 --repeat 4

One guest in a kvmsave root of its own.  REPEAT rounds, the two clients in
alternating order, each a cache drop, a wait of --settle seconds and a
timed save in format raw: `virsh save`, or `saveParams` with
'image_format' 'raw' from bench.py's own Python client (PY_SAVE, with
libvirt's default event loop in a thread), which bench.py uses for saves
in other formats.  Each save is restored (not timed) before the next.
Needs root, the build tree's ./run and the test guest.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, os.path.join(TOP, 'tests', 'integration'))
sys.path.insert(0, os.path.join(TOP, 'bench'))
os.environ.setdefault('KVMSAVE_GUEST_DIR', '/var/cache/kvmsave-bench/guest')

import kvmsave_harness as h   # noqa: E402
from bench import PY_SAVE, drop_caches   # noqa: E402  (PY_SAVE: the very client bench.py times)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--memory', type=int, default=1024)
    p.add_argument('--data', type=int, default=768)
    p.add_argument('--repeat', type=int, default=4)
    p.add_argument('--settle', type=float, default=10,
                   help='seconds between the cache drop and each save (default 10)')
    args = p.parse_args()
    root = tempfile.mkdtemp(prefix='kvmsave-save-clients-', dir='/var/tmp')
    os.chmod(root, 0o755)
    os.makedirs(os.path.join(root, 'etc'))
    with open(os.path.join(root, 'etc', 'qemu.conf'), 'w') as fh:
        fh.write(h.DEFAULT_QEMU_CONF)
    run = os.path.join(TOP, 'run')
    uri = h.embed_uri(root, 'kvmsave')
    virsh = [run, 'virsh', '-c', uri]
    console = h.console_path(root, 'bench')
    xml = os.path.join(root, 'bench.xml')
    image = os.path.join(root, 'bench.img')
    with open(xml, 'w') as fh:
        fh.write(h.domain_xml('bench', console, uuid=str(uuidlib.uuid4()),
                              memory_mib=args.memory, data_mib=args.data, fill='random'))
    clients = {'virsh': virsh + ['save', 'bench', image],
               'python': [run, h.SYSTEM_PYTHON, '-c', PY_SAVE, uri, 'bench', image, 'raw', '1']}
    samples = {c: [] for c in clients}
    try:
        subprocess.run(virsh + ['define', xml], check=True, capture_output=True)
        subprocess.run(virsh + ['start', 'bench'], check=True, capture_output=True)
        h.Console(console).wait_mem_ready(timeout=900)
        for r in range(args.repeat):
            order = list(clients) if r % 2 == 0 else list(clients)[::-1]
            for c in order:
                drop_caches()
                time.sleep(args.settle)
                t = time.monotonic()
                subprocess.run(clients[c], check=True, capture_output=True)
                samples[c].append(time.monotonic() - t)
                print(f'r{r} {c:7s} {samples[c][-1]:.3f}', flush=True)
                subprocess.run(virsh + ['restore', image], check=True, capture_output=True)
                os.unlink(image)
    finally:
        subprocess.run(virsh + ['destroy', 'bench'], capture_output=True)
        subprocess.run(virsh + ['undefine', 'bench'], capture_output=True)
        subprocess.run(['rm', '-rf', root])
    print(f'guest {args.memory} MiB RAM, {args.data} MiB random data; {args.repeat} raw saves '
          f'per client, {args.settle:g} s after a cache drop; seconds')
    print(f'{"client":8s}{"median":>9s}{"min":>9s}{"max":>9s}')
    for c, xs in samples.items():
        print(f'{c:8s}{statistics.median(xs):9.2f}{min(xs):9.2f}{max(xs):9.2f}')


if __name__ == '__main__':
    main()
