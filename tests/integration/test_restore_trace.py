# SPDX-License-Identifier: LGPL-2.1-or-later
"""A guest restored through kvmsave is one that stock libvirt restored, seen
from a plain client of the same QEMU driver: no trace of kvmsave's start
mechanism in its XML, no taint, stock's events and state reasons, and a
live XML that a plain client can define and boot."""

import json

import pytest

from conftest import EVENTS
from kvmsave_harness import PLAIN_QUICK_EXIT, Console, Virsh, run_python


def plain_virsh(env):
    """A client of the QEMU driver itself: the daemon's, or the embedded
    one under the kvmsave root. Only for calls made while no guest of the
    root runs (see PLAIN_QUICK_EXIT)."""
    return env.plain_virsh or Virsh(['virsh', '-c', plain_uri(env)])


def plain_uri(env):
    return 'qemu:///system' if env.daemon else f'qemu:///embed?root={env.root}'


def plain_look(env, guest):
    """The running guest as a plain client sees it: live XML, state and
    reason."""
    code = f'''
import json
dom = conn.lookupByName({guest.name!r})
state, reason = dom.state()
print(json.dumps({{'xml': dom.XMLDesc(0), 'state': [state, reason]}}))
''' + PLAIN_QUICK_EXIT
    pre = [env.wrapper] if env.wrapper else []
    return json.loads(run_python(pre, plain_uri(env), code).stdout.strip().splitlines()[-1])


def restore_record(env, uri, guest, img, flags):
    """Through URI: save the guest to IMG, restore it with FLAGS; the
    restore's lifecycle events, then the guest's state and reason."""
    ops = f'''
dom.save({img!r})
settle()
events.append(['mark', 0])
conn.restoreFlags({img!r}, None, {flags})
settle()
events.append(['state'] + list(conn.lookupByName(NAME).state()))
'''
    code = EVENTS.replace('OPS', ops).replace('NAME', repr(guest.name))
    pre = [env.wrapper] if env.wrapper else []
    out = run_python(pre, uri, code).stdout.strip().splitlines()[-1]
    evs = [tuple(e) for e in json.loads(out)]
    return evs[evs.index(('mark', 0)) + 1:]


@pytest.mark.libvirtd
def test_restored_guest_has_no_qemu_commandline_and_no_taint(env, guest):
    img = env.image('trace.img')
    env.virsh.run('save', guest.name, img)
    guest.checkpoint()
    env.virsh.run('restore', img)
    guest.assert_continued()

    seen = plain_look(env, guest)
    live = seen['xml']
    assert 'commandline' not in live and '-incoming' not in live, live
    assert 'migrateFrom' in live        # the one documented addition
    # The domain's messages (libvirt-python 9.0 has no getMessages), the
    # same whichever client asks.
    info = env.virsh.run('dominfo', guest.name).stdout
    assert 'taint' not in info, info
    assert seen['state'] == [1, 3]      # running (restored)


@pytest.mark.libvirtd
def test_plain_client_defines_the_restored_live_xml_and_it_boots(env, guest):
    img = env.image('redefine.img')
    env.virsh.run('save', guest.name, img)
    env.virsh.run('restore', img)
    live = plain_look(env, guest)['xml']
    plain = plain_virsh(env)
    try:
        env.virsh.destroy(guest.name)
        plain.define(live)
        old_boot = guest.boot
        offset = Console.at_end(guest.console_path).offset
        plain.run('start', guest.name)
        guest.wait_booted(since=offset)
        assert guest.boot != old_boot
        assert plain_look(env, guest)['state'] == [1, 1]    # running (booted)
    finally:
        # the definition now carries migrateFrom: back to the plain one
        env.virsh.define(guest.xml)


@pytest.mark.libvirtd
@pytest.mark.parametrize('flags', [0, 'libvirt.VIR_DOMAIN_SAVE_PAUSED'])
def test_restore_events_and_state_reason_are_stock_libvirts(env, guest, flags):
    stock = restore_record(env, plain_uri(env), guest,
                           env.image('stock-events.img'), flags)
    env.virsh.run('resume', guest.name, check=False)
    ours = restore_record(env, env.uri, guest, env.image('kvmsave-events.img'), flags)
    env.virsh.run('resume', guest.name, check=False)
    assert ours == stock
    assert ours[0] == (2, 2), ours      # STARTED/RESTORED, not MIGRATED
