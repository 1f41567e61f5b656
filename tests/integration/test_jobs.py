# SPDX-License-Identifier: LGPL-2.1-or-later
"""Job progress and cancel of save and restore, on a guest big enough that
a poll from a second thread (or virsh's own watch) sees the job run."""

import glob
import json
import os
import pty
import select
import subprocess
import tempfile
import termios
import threading
import time

import pytest

import libvirt_consts as C
from kvmsave_harness import Virsh, embed_uri
from conftest import lifecycle_events, module_env, sha256, slowed, started_guest, tmpfs
from test_image_formats import call

# In the suite of every supported Debian release (scripts/suite).
pytestmark = pytest.mark.every_release

VIR_ERR_OPERATION_ABORTED = 78
VIR_DOMAIN_JOB_UNBOUNDED = 2
VIR_DOMAIN_JOB_COMPLETED = 3
VIR_DOMAIN_JOB_CANCELLED = 5
VIR_DOMAIN_JOB_OPERATION_SAVE = 2
VIR_DOMAIN_JOB_OPERATION_RESTORE = 3
VIR_DOMAIN_SHUTOFF_DESTROYED = 2


big_env = module_env('kvmsave-jobs-')


@pytest.fixture(scope='module')
def big_obj(big_env):
    return started_guest(big_env, 'bigguest', memory_mib=1024, data_mib=512)


@pytest.fixture
def big(big_obj, monkeypatch):
    # A save or restore of some 3 s: a poll or a Ctrl-C lands mid-job.
    return slowed(big_obj, monkeypatch, 20)



def run(env, code):
    out = env.python(code, timeout=300).stdout.strip().splitlines()
    return json.loads(out[-1])


# A snippet that runs OP in a thread while the main thread polls the job,
# and runs HOOK just before it aborts it.
POLL = r'''
import json, os, signal, threading, time
result = {}
def op():
    try:
        OP
        result['ok'] = True
    except libvirt.libvirtError as e:
        result['error'] = [e.get_error_code(), e.get_error_message()]
t = threading.Thread(target=op)
t.start()
samples = []
aborted = False
while t.is_alive():
    try:
        dom = conn.lookupByName(NAME)
        info = dom.jobInfo()
        stats = dom.jobStats()
    except libvirt.libvirtError:
        time.sleep(0.005)
        continue
    if info[0] != 0:
        samples.append([info[0], info[3], info[4], info[5], stats.get('operation')])
        if ABORT and not aborted and info[4] > 0:
            HOOK
            dom.abortJob()
            aborted = True
    time.sleep(0.01)
t.join()
dom = conn.lookupByName(NAME)
try:
    done = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
except libvirt.libvirtError as e:
    done = {'error': str(e)}
result.update(samples=samples, completed=done, aborted=aborted,
              state=dom.state()[0], reason=dom.state()[1])
print(json.dumps(result))
'''


def poll_job(env, guest, op, abort=False, before_abort='pass'):
    code = (POLL.replace('OP', op).replace('NAME', repr(guest.name))
            .replace('ABORT', 'True' if abort else 'False')
            .replace('HOOK', before_abort))
    return run(env, code)


def mid_job(samples, operation):
    return [s for s in samples
            if s[0] == VIR_DOMAIN_JOB_UNBOUNDED and s[4] == operation
            and 0 < s[2] < s[1] and s[3] == s[1] - s[2]]


def test_progress_is_visible_during_save_and_restore(big_env, big):
    img = big_env.image('progress.img')
    res = poll_job(big_env, big,
                   f"conn.lookupByName({big.name!r}).save({img!r})")
    assert res.get('ok'), res
    assert mid_job(res['samples'], VIR_DOMAIN_JOB_OPERATION_SAVE), res['samples']
    processed = [s[2] for s in res['samples']]
    assert processed == sorted(processed)          # only goes forward
    done = res['completed']
    assert done['type'] == VIR_DOMAIN_JOB_COMPLETED and done['success'] is True
    assert done['operation'] == VIR_DOMAIN_JOB_OPERATION_SAVE
    assert done['data_total'] > 512 << 20 and done['time_elapsed'] > 0
    assert done['data_remaining'] == 0 and done['data_processed'] == done['data_total']
    big.checkpoint()

    res = poll_job(big_env, big, f"conn.restore({img!r})")
    assert res.get('ok'), res
    assert mid_job(res['samples'], VIR_DOMAIN_JOB_OPERATION_RESTORE), res['samples']
    done = res['completed']
    assert done['type'] == VIR_DOMAIN_JOB_COMPLETED
    assert done['operation'] == VIR_DOMAIN_JOB_OPERATION_RESTORE
    assert done['data_processed'] == done['data_total'] > 512 << 20
    big.assert_continued()


def test_abort_during_save_keeps_the_guest_running(big_env, big):
    img = big_env.image('aborted.img')
    big.checkpoint()
    res = poll_job(big_env, big,
                   f"conn.lookupByName({big.name!r}).save({img!r})", abort=True)
    assert res['aborted'], res
    assert res['error'][0] == VIR_ERR_OPERATION_ABORTED, res
    assert res['state'] == 1                       # running
    assert res['completed']['type'] == VIR_DOMAIN_JOB_CANCELLED
    assert not os.path.exists(img)
    assert [f for f in os.listdir(big_env.images) if f.startswith('.kvmsave')] == []
    big.assert_continued()


def test_abort_during_restore_leaves_it_shut_off_and_the_image_intact(big_env, big):
    img = big_env.image('restore-abort.img')
    big_env.virsh.run('save', big.name, img)
    assert_aborted_restore_keeps_the_image(big_env, big, img)


def assert_aborted_restore_keeps_the_image(env, guest, img):
    guest.checkpoint()
    before = sha256(img)
    res = poll_job(env, guest, f"conn.restore({img!r})", abort=True)
    assert res['aborted'], res
    assert res['error'][0] == VIR_ERR_OPERATION_ABORTED, res
    assert res['state'] == 5                       # shut off
    assert sha256(img) == before
    env.virsh.run('restore', img)
    guest.assert_continued()


def multifd_params(img, channels):
    return f"{{'file': {img!r}, 'parallel.channels': {channels}}}"


def test_abort_of_a_multifd_save_leaves_the_guest_able_to_save_again(big_env, big):
    """A cancelled multifd save resumes the guest with QEMU's multifd
    capability off again: libvirt's own save of it (through an fd, which
    multifd cannot use) works, and no socket directory is left."""
    img = big_env.image('mfd-aborted.img')
    before = multifd_dirs()
    res = poll_job(big_env, big, f"conn.lookupByName({big.name!r})"
                   f".saveParams({multifd_params(img, 4)})", abort=True)
    assert res['aborted'], res
    assert res['error'][0] == VIR_ERR_OPERATION_ABORTED, res
    assert res['state'] == 1                       # running
    assert not os.path.exists(img)
    assert [f for f in os.listdir(big_env.images) if f.startswith('.kvmsave')] == []
    assert multifd_dirs() == before
    stock = Virsh(['virsh', '-c', embed_uri(big_env.root)])
    stock.run('save', big.name, img)
    big.checkpoint()
    stock.run('restore', img)
    big.assert_continued()


def test_abort_of_a_multifd_restore_leaves_it_shut_off_and_the_image_intact(big_env, big):
    img = big_env.image('mfd-restore-abort.img')
    assert run(big_env, f"conn.lookupByName({big.name!r})"
                        f".saveParams({multifd_params(img, 2)}); print('null')") is None
    assert_aborted_restore_keeps_the_image(big_env, big, img)


def test_aborted_multifd_restore_kills_a_qemu_that_outlives_sigterm(
        big_env, big, monkeypatch, tmp_path):
    """QEMU loading multifd streams can heed no SIGTERM: at a sync point it
    waits for its channels with the BQL held, and its handler only asks the
    main loop to quit. Stopped here (SIGSTOP, which SIGTERM does not end
    either), it is killed by kvmsave once libvirt's SIGTERM had its chance,
    not after libvirt's 10 s wait, and libvirt stops the guest as destroyed."""
    img = big_env.image('mfd-restore-stopped.img')
    assert run(big_env, f"conn.lookupByName({big.name!r})"
                        f".saveParams({multifd_params(img, 2)}); print('null')") is None
    big.checkpoint()
    before = sha256(img)
    log = tmp_path / 'client.log'
    monkeypatch.setenv('LIBVIRT_LOG_FILTERS', '1:kvmsave.multifd 1:util.process')
    monkeypatch.setenv('LIBVIRT_LOG_OUTPUTS', f'1:file:{log}')
    pidfile = os.path.join(big_env.root, 'run', 'qemu', f'{big.name}.pid')
    res = poll_job(big_env, big, f"conn.restore({img!r})", abort=True,
                   before_abort=f"os.kill(int(open({pidfile!r}).read()), signal.SIGSTOP)")
    monkeypatch.delenv('LIBVIRT_LOG_OUTPUTS')
    assert res['aborted'], res
    assert res['error'][0] == VIR_ERR_OPERATION_ABORTED, res
    assert res['state'] == 5                       # shut off
    assert res['reason'] == VIR_DOMAIN_SHUTOFF_DESTROYED, res
    text = log.read_text()
    assert 'outlived SIGTERM' in text, text[-2000:]
    assert 'Timed out waiting after SIGTERM' not in text
    assert sha256(img) == before
    big_env.virsh.run('restore', img)
    big.assert_continued()


def multifd_dirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), 'kvmsave-mfd-*')))


def interrupt_is_read(master):
    """Whether virsh reads Ctrl-C from the terminal @master as a character.
    virsh turns the terminal's interrupt character off once its job has
    started (vshTTYDisableInterrupt, right after the first progress line)
    and aborts the job when it reads one; a Ctrl-C typed before that is a
    SIGINT, whose flag virsh's job watch never reads (9.0 and 11.3 alike),
    and is lost."""
    return termios.tcgetattr(master)[6][termios.VINTR] == b'\x00'


def test_ctrl_c_of_virsh_save_verbose_cancels_it(big_env, big):
    """virsh on a terminal turns Ctrl-C into an abort of the job it watches."""
    img = big_env.image('ctrl-c.img')
    big.checkpoint()
    master, slave = pty.openpty()
    cmd = big_env.virsh.prefix + ['save', '--verbose', big.name, img]
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave,
                            close_fds=True)
    os.close(slave)
    seen = b''
    deadline = time.monotonic() + 60
    sent = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:         # the terminal closed: virsh is done
                break
            if not chunk:
                break
            seen += chunk
        if not sent and b'Save: [' in seen and interrupt_is_read(master):
            os.write(master, b'\x03')      # Ctrl-C, as typed
            sent = True
        if proc.poll() is not None and not ready:
            break
    proc.wait(timeout=60)
    os.close(master)
    out = seen.decode(errors='replace')
    assert sent, f'no progress shown: {out!r}'
    assert proc.returncode != 0, out
    assert 'canceled by client' in out, out
    assert big.state() == 'running'
    assert not os.path.exists(img)
    big.assert_continued()


# Fills the image's file system once the save has begun: the preflight
# passed (1024 MiB of RAM, a 1200 MiB tmpfs), then the disk runs full.
FILL_DURING_SAVE = r'''
import glob, os, threading
def fill():
    while not glob.glob(os.path.join(DIR, '.kvmsave-*.tmp')):
        time.sleep(0.005)
    # Write until the file system is full: the save writes meanwhile, so
    # a size taken from statvfs beforehand may no longer fit.
    fd = os.open(os.path.join(DIR, 'filler'), os.O_WRONLY | os.O_CREAT, 0o600)
    block = b'\0' * (1 << 20)
    try:
        while True:
            os.write(fd, block)
    except OSError:
        pass
    os.close(fd)
filler = threading.Thread(target=fill)
filler.start()
try:
    dom.save(IMG)
    events.append(['saved', ''])
except libvirt.libvirtError as e:
    events.append(['error', e.get_error_message()])
filler.join()
'''


def test_disk_full_mid_save_resumes_the_guest_and_keeps_the_old_image(big_env, big, tmp_path):
    with tmpfs(tmp_path / 'full', 'size=1200m') as full:
        img = full / 'big.img'
        img.write_bytes(os.urandom(1 << 20))      # an older image at the target
        before = sha256(img)
        big.checkpoint()
        code = FILL_DURING_SAVE.replace('DIR', repr(str(full))).replace('IMG', repr(str(img)))
        evs = lifecycle_events(big_env, big, code)
        assert evs[-1][0] == 'error', evs
        assert 'the disk is full' in evs[-1][1], evs
        assert 'free some space or save elsewhere' in evs[-1][1], evs
        assert evs[:-1] == [(C.SUSPENDED, C.SUSPENDED_PAUSED),
                            (C.RESUMED, C.RESUMED_UNPAUSED)], evs
        assert sorted(os.listdir(full)) == ['big.img', 'filler']
        assert sha256(img) == before
        assert big.state() == 'running'
        big.assert_continued()


# While OP runs in a thread, try every operation of ATTEMPTS (name -> call)
# on the same guest and connection; each must fail at once.
OVERLAP = r'''
import json, threading, time
dom = conn.lookupByName(NAME)
xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
result = {}
def op():
    try:
        OP
        result['op'] = 'ok'
    except libvirt.libvirtError as e:
        result['op'] = e.get_error_message()
t = threading.Thread(target=op)
t.start()
def busy():
    try:
        return dom.jobInfo()[0] != 0
    except libvirt.libvirtError:      # shut off until the restore starts it
        return False
while not busy() and t.is_alive():
    time.sleep(0.002)
attempts = {}
for name, call in ATTEMPTS.items():
    try:
        call()
        attempts[name] = 'succeeded'
    except libvirt.libvirtError as e:
        attempts[name] = [e.get_error_code(), e.get_error_message()]
result['overlapped'] = t.is_alive()
t.join()
result['attempts'] = attempts
print(json.dumps(result))
'''


def overlap(env, guest, op, attempts):
    code = (OVERLAP.replace('NAME', repr(guest.name)).replace('OP', op)
            .replace('ATTEMPTS', attempts))
    res = run(env, code)
    assert res['overlapped'], f'{op} ended before the attempts did: {res}'
    assert res['op'] == 'ok', res
    for name, got in res['attempts'].items():
        assert got != 'succeeded', f'{name} ran during {op}: {res}'
        assert got[0] == C.VIR_ERR_OPERATION_INVALID, (name, got)
        assert 'another save/restore job is running for this guest' in got[1], (name, got)
    return res


def test_one_job_per_guest_refuses_every_overlapping_operation(big_env, big):
    img = big_env.image('overlap.img')
    other = big_env.image('overlap-other.img')
    big.checkpoint()
    overlap(big_env, big, f'dom.save({img!r})', f'''{{
    'second save': lambda: dom.save({other!r}),
    'managed save': lambda: dom.managedSave(),
    'destroy': lambda: dom.destroy(),
    'destroyFlags': lambda: dom.destroyFlags(0),
    'undefine': lambda: dom.undefine(),
    'define': lambda: conn.defineXML(xml),
}}''')
    assert not os.path.exists(other)
    assert big.state() == 'shut off'

    # The saved image is good: restore it, and overlap that restore.
    before = sha256(img)
    overlap(big_env, big, f'conn.restore({img!r})', f'''{{
    'second restore of the image': lambda: conn.restore({img!r}),
    'save': lambda: dom.save({other!r}),
    'start': lambda: dom.create(),
    'destroy': lambda: dom.destroy(),
    'undefine': lambda: dom.undefine(),
    'define': lambda: conn.defineXML(xml),
}}''')
    assert sha256(img) == before
    assert not os.path.exists(other)
    assert big.state() == 'running'
    big.assert_continued()


def test_second_process_on_an_embedded_root_is_told_to_use_a_daemon(big_env, big):
    """The embedded QEMU driver serves one process per root: while one
    saves, another's domjobinfo fails at once, naming the process that
    holds the root and the daemon mode, neither hanging nor crashing."""
    img = big_env.image('held.img')
    journal = os.path.join(big_env.root, 'run', 'kvmsave', 'jobs', f'{big.uuid}.job')
    result = {}
    saver = threading.Thread(target=lambda: result.update(
        err=call(big_env, f'conn.lookupByName({big.name!r}).save({img!r})')))
    saver.start()
    end = time.monotonic() + 60
    while not os.path.exists(journal) and saver.is_alive() and time.monotonic() < end:
        time.sleep(0.01)
    assert os.path.exists(journal), 'the save never started'
    proc = big_env.virsh.run('domjobinfo', big.name, check=False, timeout=60)
    saver.join()
    assert proc.returncode == 1, proc
    assert 'resource busy' in proc.stderr and 'in use by process' in proc.stderr, proc.stderr
    assert 'uri=qemu:///system' in proc.stderr, proc.stderr
    assert result['err'] is None, result
    big.checkpoint()
    big_env.virsh.run('restore', img)
    big.assert_continued()


def test_an_embedded_root_opened_twice_in_a_process_stays_its_own(big_env, big):
    """A second connection in the process that holds the root, closed
    again, leaves libvirt's lock on the root in place: another process is
    still refused (asking through the lock file itself would drop it)."""
    virsh = big_env.virsh.prefix + ['domstate', big.name]
    out = big_env.python(f'''
        import json, subprocess
        second = libvirt.open(uri)
        second.close()
        p = subprocess.run({virsh!r}, capture_output=True, text=True, timeout=60)
        print(json.dumps([p.returncode, p.stderr]))
    ''').stdout.strip().splitlines()[-1]
    rc, stderr = json.loads(out)
    assert rc == 1 and 'in use by process' in stderr, stderr
