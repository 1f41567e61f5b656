"""Lifecycle events of save and restore, as stock libvirt sends them."""

import json
import os
import subprocess

import libvirt_consts as C

# Runs in a client process: register a lifecycle callback, do OPS on the
# same connection, print the guest's events as JSON.
EVENTS = r'''
import json, threading, time
dom = conn.lookupByName(NAME)
events = []
def cb(conn, d, event, detail, opaque):
    if d.UUIDString() == dom.UUIDString():
        events.append([event, detail])
conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, cb, None)
def settle():
    end = time.time() + 3
    n = -1
    while time.time() < end and n != len(events):
        n = len(events)
        time.sleep(0.5)
OPS
settle()
print(json.dumps(events))
'''


def lifecycle_events(env, guest, ops):
    code = EVENTS.replace('NAME', repr(guest.name)).replace('OPS', ops)
    out = env.python(code).stdout.strip().splitlines()[-1]
    return [tuple(e) for e in json.loads(out)]


def test_save_sends_stopped_saved_and_restore_started_restored_resumed(env, guest):
    img = env.image('events.img')
    evs = lifecycle_events(env, guest, f'''
dom.save({img!r})
settle()
events.append(['mark', 0])
conn.restore({img!r})
''')
    mark = evs.index(('mark', 0))
    save, restore = evs[:mark], evs[mark + 1:]
    assert (C.STOPPED, C.STOPPED_SAVED) in save
    assert (C.STOPPED, C.STOPPED_DESTROYED) not in save
    assert save[-1] == (C.STOPPED, C.STOPPED_SAVED)
    assert restore[0] == (C.STARTED, C.STARTED_RESTORED), restore
    assert all(e[0] != C.SHUTDOWN for e in save), save
    assert restore[-1] == (C.RESUMED, C.RESUMED_FROM_SNAPSHOT), restore
    assert (C.RESUMED, C.RESUMED_UNPAUSED) not in restore, restore
    assert (C.STARTED, C.STARTED_BOOTED) not in restore
    assert all(e[0] != C.SUSPENDED for e in restore), restore
    guest.checkpoint()


def test_paused_restore_ends_with_suspended(env, guest):
    img = env.image('events-paused.img')
    evs = lifecycle_events(env, guest, f'''
dom.save({img!r})
settle()
events.append(['mark', 0])
conn.restoreFlags({img!r}, None, libvirt.VIR_DOMAIN_SAVE_PAUSED)
''')
    restore = evs[evs.index(('mark', 0)) + 1:]
    assert restore == [(C.STARTED, C.STARTED_RESTORED),
                       (C.SUSPENDED, C.SUSPENDED_PAUSED)], restore
    env.virsh.run('resume', guest.name)


def test_failed_save_sends_resumed(env, guest, tmp_path):
    small = tmp_path / 'small'
    small.mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', str(small)],
                   check=True)
    try:
        img = str(small / 'full.img')
        evs = lifecycle_events(env, guest, f'''
try:
    dom.save({img!r})
    events.append(['saved', 0])
except libvirt.libvirtError as e:
    events.append(['error', e.get_error_code()])
''')
        assert evs[-1][0] == 'error', evs
        lifecycle = [e for e in evs if e[0] != 'error']
        assert lifecycle == [(C.SUSPENDED, C.SUSPENDED_PAUSED),
                             (C.RESUMED, C.RESUMED_UNPAUSED)], evs
        assert os.listdir(small) == []
        assert guest.state() == 'running'
    finally:
        subprocess.run(['umount', str(small)], check=True)
