# SPDX-License-Identifier: LGPL-2.1-or-later
"""Soak (opt-in: make check-soak, or KVMSAVE_SOAK=1): KVMSAVE_SOAK_CYCLES
(default 100) save/restore cycles of one guest, all in one client process
(kvmsave runs inside it), the guest's heartbeat and memory checked after
every restore. The client's open file descriptors and resident memory are
reported at the start and the end, and must not grow."""

import json
import os
import subprocess

import pytest

from conftest import module_env, started_guest
from kvmsave_harness import SYSTEM_PYTHON

pytestmark = pytest.mark.skipif(not os.environ.get('KVMSAVE_SOAK'),
                                reason='opt-in: make check-soak (KVMSAVE_SOAK=1)')

CYCLES = int(os.environ.get('KVMSAVE_SOAK_CYCLES', '100'))
# Allocator noise allowed on the resident memory between cycle 10 and the end.
RSS_SLACK_KIB = 4096

# A client that saves or restores on each line of input and answers with
# its own fd count and RSS.
CLIENT = r'''
import json, os, sys, libvirt
libvirt.virEventRegisterDefaultImpl()
conn = libvirt.open(sys.argv[1])
name, img = sys.argv[2], sys.argv[3]
for line in sys.stdin:
    try:
        if line.strip() == 'save':
            conn.lookupByName(name).save(img)
        else:
            conn.restore(img)
        out = {'ok': True}
    except libvirt.libvirtError as e:
        out = {'ok': False, 'error': str(e)}
    with open('/proc/self/status') as fh:
        out['rss_kib'] = next(int(l.split()[1]) for l in fh if l.startswith('VmRSS:'))
    out['fds'] = len(os.listdir('/proc/self/fd'))
    print(json.dumps(out), flush=True)
'''

senv = module_env('kvmsave-soak-')


@pytest.fixture(scope='module')
def sguest(senv):
    return started_guest(senv, 'soakguest', memory_mib=256, data_mib=64)


def test_save_restore_cycles_keep_memory_fds_and_rss_flat(senv, sguest):
    img = senv.image('soak.img')
    pre = [senv.wrapper] if senv.wrapper else []
    client = subprocess.Popen(pre + [SYSTEM_PYTHON, '-c', CLIENT, senv.uri, sguest.name, img],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def call(what):
        client.stdin.write(what + '\n')
        client.stdin.flush()
        res = json.loads(client.stdout.readline())
        assert res['ok'], (what, res)
        return res

    samples = []
    try:
        for i in range(CYCLES):
            call('save')
            sguest.checkpoint()
            res = call('restore')
            sguest.assert_continued()
            samples.append(res)
            if i % 10 == 0 or i == CYCLES - 1:
                print(f'cycle {i + 1:4}: fds {res["fds"]:4}  RSS {res["rss_kib"] / 1024:7.1f} MiB',
                      flush=True)
    finally:
        client.stdin.close()
        client.wait(timeout=60)
    first, settled, last = samples[0], samples[min(9, len(samples) - 1)], samples[-1]
    print(f'start (cycle 1): fds {first["fds"]}, RSS {first["rss_kib"] / 1024:.1f} MiB; '
          f'end (cycle {len(samples)}): fds {last["fds"]}, RSS {last["rss_kib"] / 1024:.1f} MiB')
    assert last['fds'] <= first['fds'], (first, last)
    assert last['rss_kib'] <= settled['rss_kib'] + RSS_SLACK_KIB, (settled, last)
