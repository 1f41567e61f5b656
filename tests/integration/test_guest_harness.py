# SPDX-License-Identifier: LGPL-2.1-or-later
"""Tests of the test guest and harness themselves, against stock libvirt.

* Console parser tests on synthetic logs (no VM, no root).
* One end-to-end test with libvirt's own embedded QEMU driver
  (``qemu:///embed?root=ROOT``) and plain virsh: boot the guest, stock
  ``virsh save`` / ``virsh restore``, `Console.assert_continued` passes; then
  the harness must fail when the guest does not go on (left paused) and when
  it was restarted (destroy + start).

Run as root with Debian's Python, which has python3-libvirt:
    /usr/bin/python3 -m pytest -v -s tests/integration/test_guest_harness.py
(-s shows the timings the end-to-end test prints).
"""

import os
import time

import pytest

import kvmsave_harness as h

BOOT_A = '11111111-2222-3333-4444-555555555555'
BOOT_B = '66666666-7777-8888-9999-000000000000'
MD5 = '0123456789abcdef0123456789abcdef'
MD5_OTHER = 'fedcba9876543210fedcba9876543210'


# ---------------------------------------------------------------------------
# Console parser, on synthetic logs
# ---------------------------------------------------------------------------

def _log(tmp_path, text):
    path = tmp_path / 'console.log'
    path.write_bytes(text.encode())
    return h.Console(str(path), poll=0.01)


def _beats(first, last, boot=BOOT_A, md5=MD5):
    """Log lines as the guest prints them (CR LF), MEM-OK every 5th beat."""
    out = ''
    for n in range(first, last + 1):
        out += f'KVMSAVE-HB {n} {boot}\r\n'
        if n % 5 == 0:
            out += f'KVMSAVE-MEM-OK {n} {md5}\r\n'
    return out


def test_console_parsing(tmp_path):
    # Firmware escape sequences before a protocol line, CR LF endings, and an
    # unfinished last line (which must not count).
    c = _log(tmp_path, 'SeaBIOS\r\n\x1bc\x1b[?7l\x1b[2JKVMSAVE-BOOT ' + BOOT_A + '\r\n'
             + f'KVMSAVE-MEM-READY {MD5}\r\n' + _beats(1, 5) + 'KVMSAVE-HB 6 1111')
    assert c.boot_id() == BOOT_A
    assert c.heartbeats() == [(n, BOOT_A) for n in range(1, 6)]
    assert c.last_heartbeat() == (5, BOOT_A)
    assert c.wait_mem_ready(timeout=0) == MD5
    assert c.wait_for_heartbeat(min_n=5, timeout=0) == (5, BOOT_A)
    assert c.wait_mem_ok(after_n=0, timeout=0) == MD5
    with pytest.raises(AssertionError, match='timed out'):
        c.wait_for_heartbeat(min_n=6, timeout=0.05)
    # offset: a Console created at the end sees nothing of the old log.
    later = h.Console.at_end(c.path)
    assert later.heartbeats() == [] and later.boot_id() is None


def test_console_guest_error(tmp_path):
    c = _log(tmp_path, f'KVMSAVE-BOOT {BOOT_A}\r\nKVMSAVE-ERROR cannot mount tmpfs\r\n')
    with pytest.raises(AssertionError, match='cannot mount tmpfs'):
        c.wait_mem_ready(timeout=5)


def test_assert_continued_accepts_continuation(tmp_path):
    head = f'KVMSAVE-BOOT {BOOT_A}\r\nKVMSAVE-MEM-READY {MD5}\r\n'
    # Saved after beat 7; beat 8 printed on restore, then MEM-OK 10.
    c = _log(tmp_path, head + _beats(1, 7) + _beats(8, 10))
    assert c.assert_continued(7, BOOT_A, MD5, timeout=0) == 10
    # A skipped beat (before_n + 2) is tolerated.
    c = _log(tmp_path, head + _beats(1, 7) + _beats(9, 10))
    assert c.assert_continued(7, BOOT_A, MD5, timeout=0) == 10
    # MEM-OK 5 printed just before the save does not count: beat 5 is the
    # anchor, the MEM-OK must come after the first later beat.
    c = _log(tmp_path, head + _beats(1, 5) + _beats(6, 9))
    with pytest.raises(AssertionError, match='timed out'):
        c.assert_continued(5, BOOT_A, MD5, timeout=0.05)


@pytest.mark.parametrize('after, message', [
    (f'KVMSAVE-BOOT {BOOT_B}\r\n' + f'KVMSAVE-MEM-READY {MD5}\r\n' + _beats(1, 5, BOOT_B),
     'rebooted'),
    (_beats(1, 5), 'counter did not continue'),                 # restarted, same id
    (_beats(11, 15), 'counter did not continue'),               # jumped ahead
    (_beats(8, 10, boot=BOOT_B), 'boot id'),                    # another guest
    (_beats(8, 10, md5=MD5_OTHER), 'memory changed'),
    (_beats(8, 9) + f'KVMSAVE-HB 10 {BOOT_A}\r\nKVMSAVE-MEM-BAD 10 {MD5_OTHER}\r\n',
     'corrupt'),
    ('', 'timed out'),                                          # never resumed
], ids=['reboot', 'restart-same-id', 'jump', 'other-boot-id', 'md5-changed', 'mem-bad',
        'stalled'])
def test_assert_continued_rejects(tmp_path, after, message):
    head = f'KVMSAVE-BOOT {BOOT_A}\r\nKVMSAVE-MEM-READY {MD5}\r\n' + _beats(1, 7)
    c = _log(tmp_path, head + after)
    with pytest.raises(AssertionError, match=message) as info:
        c.assert_continued(7, BOOT_A, MD5, timeout=0.05)
    assert 'tail of console' in str(info.value)


def test_assert_continued_missing_anchor(tmp_path):
    # The log lost the beat the test saw (e.g. truncated by a restarted QEMU).
    c = _log(tmp_path, f'KVMSAVE-BOOT {BOOT_A}\r\n' + _beats(9, 10))
    with pytest.raises(AssertionError, match='not in the console log'):
        c.assert_continued(7, BOOT_A, MD5, timeout=0.05)


def test_assert_continued_sees_only_the_restore_it_is_asked_about(tmp_path):
    # Saved after beat 7 and restored twice: the first restore went on to
    # MEM-OK 10, the second printed beat 8 and stalled.  Seen from where
    # the second began (Guest.restoring), the first cannot answer for it.
    head = f'KVMSAVE-BOOT {BOOT_A}\r\nKVMSAVE-MEM-READY {MD5}\r\n' + _beats(1, 7) + _beats(8, 10)
    c = _log(tmp_path, head)
    second = h.Console.at_end(c.path, poll=0.01)
    with open(c.path, 'a') as fh:
        fh.write(_beats(8, 8))
    assert c.assert_continued(7, BOOT_A, MD5, timeout=0) == 10
    with pytest.raises(AssertionError, match='timed out'):
        second.assert_continued(7, BOOT_A, MD5, timeout=0.05, restored_here=True)
    with open(c.path, 'a') as fh:
        fh.write(_beats(9, 10))
    assert second.assert_continued(7, BOOT_A, MD5, timeout=0, restored_here=True) == 10
    # an image older than the beat the test noted: the counter went back
    third = h.Console.at_end(c.path, poll=0.01)
    with open(c.path, 'a') as fh:
        fh.write(_beats(5, 6))
    with pytest.raises(AssertionError, match='counter did not continue'):
        third.assert_continued(7, BOOT_A, MD5, timeout=0.05, restored_here=True)


# ---------------------------------------------------------------------------
# End to end, with stock libvirt
# ---------------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason='embedded libvirt QEMU needs root')


@pytest.fixture(scope='module')
def guest_image():
    return h.ensure_guest()


@pytest.fixture
def stock_root(guest_image):
    """A fresh embedded root and a plain virsh for it; cleaned up afterwards."""
    root = h.make_root()
    virsh = h.Virsh(['virsh', '-c', h.embed_uri(root)])
    yield root, virsh
    h.cleanup_root(root, virsh)


def _timing(label, seconds):
    print(f'\nTIMING {label}: {seconds:.2f} s', end='')


def running_and_memory(uri, name):
    """Whether the guest NAME runs, and its memory, as a plain embedded
    client sees it. Stock libvirt 9.0's own embedded client can crash at
    exit while a guest of its root runs (kvmsave's connections wait that
    out): this one ends without running its libraries' destructors."""
    code = f'''
dom = conn.lookupByName({name!r})
print(dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING, dom.maxMemory())
''' + h.PLAIN_QUICK_EXIT
    return h.run_python([], uri, code).stdout.split()


@needs_root
def test_stock_save_restore(stock_root):
    root, virsh = stock_root
    uri = h.embed_uri(root)
    name = 'kvmsave-guest'
    con_path = h.console_path(root, name)
    con = h.Console(con_path, poll=0.05)
    image = os.path.join(root, f'{name}.save')

    # -- boot: define + start a persistent guest ---------------------------
    t0 = time.monotonic()
    virsh.define(h.domain_xml(name, con_path, memory_mib=256, data_mib=32))
    t_defined = time.monotonic()
    virsh.run('start', name)
    t_started = time.monotonic()
    boot_id = None
    while boot_id is None and time.monotonic() - t0 < 60:
        boot_id = con.boot_id()
        time.sleep(0.05)
    assert boot_id, f'no KVMSAVE-BOOT line\n{con.tail()}'
    t_booted = time.monotonic()
    md5 = con.wait_mem_ready(timeout=60)
    t_ready = time.monotonic()
    _timing('virsh define (fresh root: probes QEMU capabilities)', t_defined - t0)
    _timing('virsh start', t_started - t_defined)
    _timing('start -> KVMSAVE-BOOT (kernel boot)', t_booted - t_started)
    _timing('KVMSAVE-BOOT -> MEM-READY (fill+hash 32 MiB)', t_ready - t_booted)
    con.wait_for_heartbeat(min_n=3, timeout=30, boot_id=boot_id)
    # run_python: a second client process, with an event loop, sees the
    # guest (a look while it runs: see h.PLAIN_QUICK_EXIT).
    assert running_and_memory(uri, name) == ['True', str(256 * 1024)]

    # -- stock save / restore ----------------------------------------------
    t0 = time.monotonic()
    virsh.run('save', name, image)
    t_saved = time.monotonic()
    assert virsh.domstate(name) == 'shut off'
    # QEMU is gone: the log is final, its last beat is where the guest stopped.
    before_n, before_boot = con.last_heartbeat()
    assert before_boot == boot_id
    virsh.run('restore', image)
    t_restored = time.monotonic()
    assert running_and_memory(uri, name)[0] == 'True'
    mem_ok_n = con.assert_continued(before_n, boot_id, md5, timeout=60)
    t_checked = time.monotonic()
    _timing('virsh save (256 MiB guest)', t_saved - t0)
    print(f'\nSIZE save image: {os.path.getsize(image) / 2**20:.1f} MiB', end='')
    _timing('virsh restore', t_restored - t_saved)
    _timing('restore -> continued + MEM-OK', t_checked - t_restored)
    print(f'\nINFO saved at beat {before_n}, MEM-OK at beat {mem_ok_n}', end='')

    # -- negative: a guest that does not go on is not "continued" -----------
    virsh.run('suspend', name)
    before_n, _ = con.last_heartbeat()
    with pytest.raises(AssertionError, match='timed out'):
        con.assert_continued(before_n, boot_id, md5, timeout=3)
    virsh.run('resume', name)
    con.wait_for_heartbeat(min_n=before_n + 1, timeout=30)

    # -- negative: a restarted guest is caught ------------------------------
    before_n, _ = con.last_heartbeat()
    virsh.destroy(name)               # see Virsh.destroy: embedded-mode race
    assert virsh.domstate(name) == 'shut off'
    virsh.fails('suspend', name)      # not running: virsh must fail
    t0 = time.monotonic()
    virsh.run('start', name)
    with pytest.raises(AssertionError, match='rebooted') as info:
        con.assert_continued(before_n, boot_id, md5, timeout=60)
    _timing('restart detected after start', time.monotonic() - t0)
    print(f'\nINFO harness failure message: {str(info.value).splitlines()[0]}', end='')
    # The console was appended to (append='on'), not truncated, and the new
    # boot counts from 1 with another boot id.
    new_boot = con.boot_id()
    assert new_boot != boot_id
    con.wait_for_heartbeat(timeout=30, boot_id=new_boot)
    beats = con.heartbeats()
    assert (before_n, boot_id) in beats
    assert [n for n, b in beats if b == new_boot][0] == 1
    # stopped here, so that the root's cleanup looks at no running guest
    virsh.destroy(name)
