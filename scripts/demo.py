# SPDX-License-Identifier: LGPL-2.1-or-later
"""The demo behind scripts/demo: one guest saved and restored by kvmsave."""

import os
import sys
import time

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
sys.path.insert(0, os.path.join(TOP, 'tests', 'integration'))

from kvmsave_harness import (Console, Virsh, cleanup_root, console_path,  # noqa: E402
                             domain_xml, make_root)


def say(text):
    print(f'\n== {text}', flush=True)


def show_beats(console, since_line=0, count=4):
    lines = [l for l in console.lines()[since_line:] if 'KVMSAVE-' in l]
    for line in lines[-count:]:
        print('   guest> ' + line[line.index('KVMSAVE-'):])


def main():
    root = make_root(prefix='kvmsave-demo-', qemu_conf=None)
    uri = f'kvmsave:///embed?root={root}'
    virsh = Virsh([os.path.join(TOP, 'run'), 'virsh', '-c', uri])
    name = 'demo'
    log = console_path(root, name)
    image = os.path.join(root, 'demo guest.img')
    console = Console(log)
    try:
        say(f'define and start a guest under {uri}')
        virsh.define(domain_xml(name, log))
        print(virsh.run('start', name).stdout.strip())
        md5 = console.wait_mem_ready(timeout=90)
        boot = console.boot_id()
        console.wait_for_heartbeat(min_n=3, timeout=30)
        print(f'   the guest filled 32 MiB of its RAM with random data, md5 {md5},')
        print('   and prints a heartbeat every second, re-checking that md5 every 5th:')
        show_beats(console)

        say(f'virsh save {name} "{image}"')
        t = time.monotonic()
        print(virsh.run('save', name, image).stdout.strip())
        print(f'   took {time.monotonic() - t:.2f} s; the guest is now: {virsh.domstate(name)}')
        last = console.last_heartbeat()
        print(f'   last heartbeat before the save: {last[0]}')
        mark = len(console.lines())

        say('the image header (tools/kvmsave-image info)')
        info = os.popen(f'"{TOP}/tools/kvmsave-image" info "{image}"').read()
        print('   ' + info.strip().replace('\n', '\n   '))

        say(f'virsh restore "{image}"')
        t = time.monotonic()
        print(virsh.run('restore', image).stdout.strip())
        print(f'   took {time.monotonic() - t:.2f} s; the guest is now: {virsh.domstate(name)}')
        n = console.assert_continued(last[0], boot, md5, timeout=60)
        show_beats(console, since_line=mark, count=6)
        print(f'\n   The guest went on from heartbeat {last[0]} with the same boot id, and')
        print(f'   at beat {n} it re-verified its memory: md5 {md5} intact.')
    finally:
        cleanup_root(root, virsh)


if __name__ == '__main__':
    main()
