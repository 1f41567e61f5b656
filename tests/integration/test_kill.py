# SPDX-License-Identifier: LGPL-2.1-or-later
"""A client killed (SIGKILL) at a random point of a save or a restore, in
embedded mode: the process that dies holds the embedded driver.  The next
connection to the root finishes or undoes the job from its journal; after
it the guest runs on as before, or it is shut off with a complete image at
the target, never anything in between, and its memory is intact.

The kill points come from a seeded generator: the seed is printed, and
KVMSAVE_KILL_SEED=N replays a run.  KVMSAVE_KILL_TRIALS sets the number of
trials per operation with one stream (default 10), KVMSAVE_KILL_MF_TRIALS
those of saves with 2 multifd channels and restores of their images, fed
on 3 streams, and of sparse saves and restores (QEMU 9.0 and later), which
QEMU writes and reads itself (default 5 each); test_daemon_faults.py adds
5 over a libvirtd: 20 per operation in all."""

import glob
import hashlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import module_env, sha256, started_guest
from kvmsave_harness import SYSTEM_PYTHON, Console, qemu_migration, qemu_open_files
from test_sparse_images import HAVE_SPARSE

# In the suite of every supported Debian release (scripts/suite).
pytestmark = pytest.mark.every_release

TRIALS = int(os.environ.get('KVMSAVE_KILL_TRIALS', '10'))
MF_TRIALS = int(os.environ.get('KVMSAVE_KILL_MF_TRIALS', '5'))
SEED = int(os.environ.get('KVMSAVE_KILL_SEED', str(int(time.time()))))
# 20 ms per 4 MiB chunk: the stream of this guest lasts about half a second, so
# the kill points spread over connect, pause, stream, finish and stop.  Multifd
# streams are cut into 1 MiB chunks: 5 ms each is the same delay per byte.
def chunk_delay_ms(channels):
    return '20' if channels == 1 else '5'


# 1 and 2: chunked images of one stream and of 3; 'sparse': a sparse
# image with 2 multifd channels, where no chunk delay applies (QEMU writes
# and reads the file itself), so kills spread over its shorter span.
MODES = [1, 2, pytest.param('sparse', marks=pytest.mark.skipif(
    not HAVE_SPARSE, reason='sparse images need QEMU 9.0 or later'))]


kenv = module_env('kvmsave-kill-')


@pytest.fixture(scope='module')
def kguest(kenv):
    return started_guest(kenv, 'killguest', memory_mib=256, data_mib=64)


def killed(env, args, delay, channels=1):
    """Run the command line ARGS and SIGKILL it (its whole process group)
    after DELAY seconds; returns its exit status: 0, or -SIGKILL.  A job
    that failed by itself, before its kill, fails the test."""
    delay_ms = chunk_delay_ms(channels)
    p = subprocess.Popen(args, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=dict(os.environ, KVMSAVE_TEST_CHUNK_DELAY_MS=delay_ms))
    try:
        _, err = p.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        _, err = p.communicate(timeout=60)
    assert p.returncode in (0, -signal.SIGKILL), \
        f'{args} failed by itself (status {p.returncode}): {err.decode(errors="replace")}'
    return p.returncode


def save_args(env, guest, img, channels):
    """A save of GUEST to IMG: virsh's, or with multifd channels (virsh 9.0
    has no option for them) libvirt-python's saveParams."""
    if channels == 1:
        return env.virsh.prefix + ['save', guest.name, img]
    fmt = 'sparse' if channels == 'sparse' else 'raw'
    code = ('import libvirt, sys; libvirt.virEventRegisterDefaultImpl(); '
            'libvirt.open(sys.argv[1]).lookupByName(sys.argv[2])'
            '.saveParams({"file": sys.argv[3], "parallel.channels": 2, '
            '"image_format": sys.argv[4]})')
    pre = [env.wrapper] if env.wrapper else []
    return pre + [SYSTEM_PYTHON, '-c', code, env.uri, guest.name, img, fmt]


def mode_seed(channels):
    """Each mode's own kill points, those of 1 and 2 as they always were."""
    return {1: 2, 2: 4, 'sparse': 6}[channels]


def trials(channels):
    return TRIALS if channels == 1 else MF_TRIALS


def held_by_qemu(env):
    """Temporary image files a QEMU of the root holds open: a sparse save's,
    in an fdset, unlinked."""
    return [f'QEMU {pid} fd {fd}: {target}'
            for pid, fd, target in qemu_open_files(env.root) if '/.kvmsave-' in target]


def leftovers(env):
    """Temporary image files (also those QEMU holds open), job journals and
    multifd socket directories: none may survive recovery."""
    tmp = [f for f in os.listdir(env.images) if f.startswith('.kvmsave-')]
    jobs = os.path.join(env.root, 'run', 'kvmsave', 'jobs')
    journals = os.listdir(jobs) if os.path.isdir(jobs) else []
    return tmp + journals + held_by_qemu(env) + \
        glob.glob(os.path.join(tempfile.gettempdir(), 'kvmsave-mfd-*'))


def timed(env, args, channels=1):
    """Seconds of an uninterrupted virsh ARGS (with the same chunk delay):
    the kill points spread over 0 to a little more than that."""
    t = time.monotonic()
    assert killed(env, args, 600, channels) == 0
    return time.monotonic() - t


def after_killed_save(env, img, rc, state, where):
    """A save killed with status RC left the guest in STATE: either a
    complete, valid image at IMG with the guest gone (the image is then
    restored and removed), or no image with the guest running. Returns the
    outcome."""
    if os.path.exists(img):
        assert state == 'shut off', (where, state)
        subprocess.run([env.image_tool, 'verify', img], check=True,
                       capture_output=True)
        env.virsh.run('restore', img)
        os.unlink(img)
        return 'saved' if rc == 0 else 'killed, image completed'
    assert state == 'running', (where, state)
    return 'killed, guest resumed' if rc != 0 else 'saved?'


def after_killed_restore(env, img, rc, state, where):
    """A restore of IMG killed with status RC left the guest in STATE:
    shut off (it is then restored) or running, never half-restored (a
    restored guest runs: the image says so). Returns the outcome."""
    if state == 'shut off':
        env.virsh.run('restore', img)
        return 'killed, restore undone'
    assert state == 'running', (where, state)
    return 'restored' if rc == 0 else 'killed, restore finished'


def assert_no_migration(env, guest, where):
    """The guest's QEMU has no migration running after a recovery (QEMU
    would refuse the next save's capabilities) and mapped-ram is off."""
    status, mapped = qemu_migration(env.wrapper, env.root, guest.name)
    assert status in ('none', 'completed', 'failed', 'cancelled'), (where, status)
    assert not mapped, (where, 'mapped-ram is left on')


def recoveries(env, what):
    """The log lines of recoveries of WHAT ('save' or 'restore') so far."""
    log = os.path.join(env.root, 'log', 'kvmsave.log')
    if not os.path.exists(log):
        return []
    with open(log, errors='replace') as fh:
        return [l for l in fh if f'recovered an interrupted {what}' in l]


@pytest.mark.parametrize('channels', MODES)
def test_killed_saves_leave_the_guest_running_or_a_complete_image(kenv, kguest, channels):
    rng = random.Random(SEED + mode_seed(channels))
    print(f'seed {SEED} (KVMSAVE_KILL_SEED={SEED} replays this run)')
    kguest.ensure_running()
    calib = kenv.image('kill-calibrate.img')
    for _ in range(2):          # the first one also probes QEMU's capabilities
        span = timed(kenv, save_args(kenv, kguest, calib, channels), channels) * 1.1
        kenv.virsh.run('restore', calib)
        os.unlink(calib)
    outcomes = []
    for i in range(trials(channels)):
        delay = rng.uniform(0.0, span)
        where = f'seed {SEED}, trial {i}, kill after {delay:.3f} s'
        img = kenv.image(f'kill-save-{i}.img')
        kguest.ensure_running()
        kguest.checkpoint()
        rc = killed(kenv, save_args(kenv, kguest, img, channels), delay, channels)
        state = kguest.state()      # the first connection after the kill recovers
        assert leftovers(kenv) == [], where
        if state == 'running':
            assert_no_migration(kenv, kguest, where)
        outcomes.append(after_killed_save(kenv, img, rc, state, where))
        kguest.assert_continued()
        print(f'{where}: {outcomes[-1]}')
    print('outcomes:', {o: outcomes.count(o) for o in set(outcomes)})
    assert recoveries(kenv, 'save'), 'no kill landed inside a save job'


@pytest.mark.parametrize('channels', MODES)
def test_killed_restores_leave_the_guest_restored_or_shut_off_with_the_image(kenv, kguest,
                                                                           channels):
    rng = random.Random(SEED + mode_seed(channels) + 1)
    print(f'seed {SEED} (KVMSAVE_KILL_SEED={SEED} replays this run)')
    img = kenv.image('kill-restore.img')
    kguest.ensure_running()
    for _ in range(2):
        assert killed(kenv, save_args(kenv, kguest, img, channels), 600, channels) == 0
        span = timed(kenv, kenv.virsh.prefix + ['restore', img], channels) * 1.1
    outcomes = []
    for i in range(trials(channels)):
        delay = rng.uniform(0.0, span)
        where = f'seed {SEED}, trial {i}, kill after {delay:.3f} s'
        kguest.ensure_running()
        assert killed(kenv, save_args(kenv, kguest, img, channels), 600, channels) == 0
        kguest.checkpoint()
        before = sha256(img)
        rc = killed(kenv, kenv.virsh.prefix + ['restore', img], delay, channels)
        state = kguest.state()      # the first connection after the kill recovers
        assert leftovers(kenv) == [], where
        assert sha256(img) == before, where
        outcomes.append(after_killed_restore(kenv, img, rc, state, where))
        kguest.assert_continued()
        print(f'{where}: {outcomes[-1]}')
    print('outcomes:', {o: outcomes.count(o) for o in set(outcomes)})
    assert recoveries(kenv, 'restore'), 'no kill landed inside a restore job'


def crc32c(data):
    crc = 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xffffffff


def test_recovery_removes_the_empty_cpuset_a_killed_start_left(kenv, kguest):
    """libvirt 9.0 makes a cgroup v1 cpuset with mkdir, then fills it: a
    client killed in between leaves an empty one that the guest's next
    start reuses and fails on.  Made here by hand, with the journal of a
    restore killed while it started the guest."""
    hsh = hashlib.sha256(kenv.root.encode()).hexdigest()[:8]
    cg = f'/sys/fs/cgroup/cpuset/machine/qemu-embed-{hsh}-1-{kguest.name}.libvirt-qemu'
    if not os.path.isdir('/sys/fs/cgroup/cpuset/machine'):
        pytest.skip('no cgroup v1 cpuset hierarchy with a machine partition')
    img = kenv.image('kill-cgroup.img')
    kguest.ensure_running()
    kenv.virsh.run('save', kguest.name, img)
    kguest.checkpoint()
    os.makedirs(cg + '/vcpu0', exist_ok=True)
    with open(cg + '/vcpu0/cpuset.cpus', 'w') as fh:
        fh.write('\n')
    body = (f'kind=restore\nphase=starting\nuuid={kguest.uuid}\nimage={img}\n'
            f'name={kguest.name}\nrunning=1\n').encode()
    jobs = os.path.join(kenv.root, 'run', 'kvmsave', 'jobs')
    os.makedirs(jobs, exist_ok=True)
    with open(os.path.join(jobs, kguest.uuid + '.job'), 'wb') as fh:
        fh.write(b'check=%08x %d\n' % (crc32c(body), len(body)) + body)

    assert kguest.state() == 'shut off'       # that connection recovers
    assert not os.path.exists(cg)
    assert leftovers(kenv) == []
    with open(os.path.join(kenv.root, 'log', 'kvmsave.log'), errors='replace') as fh:
        assert any('that a killed start of guest' in line for line in fh)
    kenv.virsh.run('restore', img)
    kguest.assert_continued()


def waits_on_a_futex(pid):
    """Whether the main thread of process PID sleeps on a futex (QEMU's
    main loop sleeps in poll instead)."""
    try:
        with open(f'/proc/{pid}/wchan') as fh:
            return 'futex' in fh.read()
    except OSError:
        return False


def test_restore_killed_while_qemu_waits_for_its_channels_kills_that_qemu_first(kenv, kguest):
    """A multifd restore whose client dies while QEMU's main thread waits
    at a sync point for its channels: the channels fail, and that QEMU never
    runs its main loop again (QEMU 7.2 to 10.0). The next connection's
    libvirt would wait 30 s for its monitor, and its destroy 10 s for
    SIGTERM; it kills that QEMU first, by the journal's record of it. The
    kill lands when QEMU's main thread has slept on a futex for 0.2 s, its
    channels fed slowly."""
    img = kenv.image('kill-mfd-sync.img')
    kguest.ensure_running()
    assert killed(kenv, save_args(kenv, kguest, img, 2), 600, 2) == 0
    kguest.checkpoint()
    before = sha256(img)
    log = Console.at_end(os.path.join(kenv.root, 'log', 'kvmsave.log'))
    pidfile = os.path.join(kenv.root, 'run', 'qemu', f'{kguest.name}.pid')
    p = subprocess.Popen(kenv.virsh.prefix + ['restore', img], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=dict(os.environ, KVMSAVE_TEST_CHUNK_DELAY_MS='20'))
    waited = 0
    deadline = time.monotonic() + 120
    while waited < 20 and p.poll() is None and time.monotonic() < deadline:
        try:
            with open(pidfile) as fh:
                pid = int(fh.read())
        except (OSError, ValueError):
            pid = None
        waited = waited + 1 if pid and waits_on_a_futex(pid) else 0
        time.sleep(0.01)
    assert waited == 20, 'the restore ended before QEMU was seen waiting for its channels'
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=60)
    assert kguest.state() == 'shut off'     # that connection recovers
    text = log.text()
    assert f'killed QEMU process {pid} of the interrupted restore' in text, text
    assert 'still being reconnected to' not in text, text
    assert leftovers(kenv) == []
    assert sha256(img) == before
    kenv.virsh.run('restore', img)
    kguest.assert_continued()


@pytest.mark.skipif(not HAVE_SPARSE, reason='sparse images need QEMU 9.0 or later')
def test_client_killed_while_qemu_writes_a_sparse_image_leaves_qemu_no_file(kenv, kguest):
    """QEMU writes a sparse image itself, from the temporary file kvmsave
    put into an fdset: a client killed while it does must not leave QEMU
    holding that file, unlinked, for as long as the guest runs. The kill
    lands when QEMU is seen holding it."""
    img = kenv.image('kill-sparse-fdset.img')
    kguest.ensure_running()
    kguest.checkpoint()
    p = subprocess.Popen(save_args(kenv, kguest, img, 'sparse'), start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not held_by_qemu(kenv) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert held_by_qemu(kenv), 'the save ended before QEMU was seen writing'
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=60)
    state = kguest.state()      # the first connection after the kill recovers
    assert leftovers(kenv) == []
    assert recoveries(kenv, 'save')
    if state == 'running':
        assert_no_migration(kenv, kguest, 'killed while QEMU wrote')
    after_killed_save(kenv, img, -9, state, 'killed while QEMU wrote')
    kguest.assert_continued()


MFD_GLOB = os.path.join(tempfile.gettempdir(), 'kvmsave-mfd-*')


def mkdir_delayed(args, seconds):
    """ARGS under strace: every mkdir of its first thread (where the
    libvirt-python call below runs the job) returns SECONDS late, the
    directory made.  A kill then lands between making a directory and
    whatever the job does next, as a preemption there would let it."""
    us = int(seconds * 1000000)
    return ['strace', '-qq', '-o', '/dev/null', '-e', 'trace=mkdir,mkdirat',
            '-e', f'inject=mkdir,mkdirat:delay_exit={us}'] + args


def restore_args(env, img):
    """A restore of IMG through libvirt-python, in the process's first
    thread (virsh saves in a thread of its own)."""
    code = ('import libvirt, sys; libvirt.virEventRegisterDefaultImpl(); '
            'libvirt.open(sys.argv[1]).restore(sys.argv[2])')
    pre = [env.wrapper] if env.wrapper else []
    return pre + [SYSTEM_PYTHON, '-c', code, env.uri, img]


def killed_when(args, ready, what):
    """Run ARGS in a session of its own and SIGKILL the session as soon as
    READY(SID) is true (SID: the session's id), polled every half
    millisecond; WHAT says what was waited for."""
    p = subprocess.Popen(args, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    seen = False
    while p.poll() is None and time.monotonic() < deadline and not (seen := ready(p.pid)):
        time.sleep(0.0005)
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=60)
    assert seen, f'the job ended before {what}'


def killed_in_mkdir(args):
    """Run ARGS with its mkdirs delayed, and SIGKILL it as soon as a new
    socket directory exists: while it is still in that mkdir."""
    before = set(glob.glob(MFD_GLOB))
    killed_when(mkdir_delayed(args, 1), lambda _: bool(set(glob.glob(MFD_GLOB)) - before),
                "it made its sockets' directory")


# What makes a socket directory: a multifd save (its listening socket), a
# restore of 3 streams (QEMU's listening socket) and one of 1 (the FIFO
# the inner driver reads).  A lazy restore's needs QEMU 9.0: journaltest.c.
DIR_JOBS = [('save', 2), ('restore', 2), ('restore', 1)]


@pytest.mark.skipif(not shutil.which('strace'), reason='needs strace (scripts/packages.txt)')
@pytest.mark.parametrize('what,channels', DIR_JOBS,
                         ids=[f'{w}-{c}' for w, c in DIR_JOBS])
def test_client_killed_as_it_makes_a_socket_directory_leaves_none(kenv, kguest,
                                                                  what, channels):
    """The journal names each directory before it is made: a client killed
    right after its mkdir leaves none that recovery does not remove (it
    did, with the directory made first and named next)."""
    img = kenv.image(f'kill-mkdir-{what}-{channels}.img')
    kguest.ensure_running()
    if what == 'restore':
        assert killed(kenv, save_args(kenv, kguest, img, channels), 600, channels) == 0
    kguest.checkpoint()
    recovered = len(recoveries(kenv, what))
    if what == 'save':
        killed_in_mkdir(save_args(kenv, kguest, img, channels))
    else:
        before = sha256(img)
        killed_in_mkdir(restore_args(kenv, img))
    state = kguest.state()      # the first connection after the kill recovers
    assert leftovers(kenv) == []
    assert len(recoveries(kenv, what)) > recovered
    if what == 'save':
        assert not os.path.exists(img)
        after_killed_save(kenv, img, -9, state, 'killed in mkdir')
    else:
        assert sha256(img) == before
        after_killed_restore(kenv, img, -9, state, 'killed in mkdir')
        os.unlink(img)
    kguest.assert_continued()


def killed_before_qemu_ran(env, args, name):
    """Run ARGS and SIGKILL it as soon as its start of guest NAME has
    written the domain's first status: starting up, pid 0. libvirt writes
    QEMU's pid before it lets QEMU exec, so no QEMU has run by then."""
    status = os.path.join(env.root, 'run', 'qemu', f'{name}.xml')

    def starting(_):
        try:
            with open(status) as fh:
                return "reason='starting up' pid='0'" in fh.read(1024)
        except FileNotFoundError:
            return False
    killed_when(args, starting, 'its first status was seen')


def test_client_killed_before_qemu_ran_leaves_the_guest_shut_off(kenv, kguest):
    """A restore of 2 streams killed while libvirt starts the QEMU that
    kvmsave had it create, before QEMU's pid is known (libvirt's own
    restore, which a single stream takes, writes no status before it):
    libvirt leaves a status with pid 0 and a start job nobody ends, and
    does not reconnect to it. The next connection shuts the
    guest off (it waited 30 s for that job at open, and its destroy
    failed, before), and the unchanged image then restores."""
    img = kenv.image('kill-start.img')
    kguest.ensure_running()
    assert killed(kenv, save_args(kenv, kguest, img, 2), 600, 2) == 0
    kguest.checkpoint()
    before = sha256(img)
    logpath = os.path.join(kenv.root, 'log', 'kvmsave.log')
    start = os.path.getsize(logpath) if os.path.exists(logpath) else 0
    killed_before_qemu_ran(kenv, restore_args(kenv, img), kguest.name)
    assert kguest.state() == 'shut off'
    assert leftovers(kenv) == []
    with open(logpath, errors='replace') as fh:
        fh.seek(start)
        log = fh.read()
    assert f'guest {kguest.name} was left starting up with no QEMU' in log
    assert 'cannot acquire state change lock' not in log
    assert sha256(img) == before
    kenv.virsh.run('restore', img)
    os.unlink(img)
    kguest.assert_continued()


LINK, LINKAT = 86, 265  # x86_64


@pytest.mark.skipif(not shutil.which('strace'), reason='needs strace (scripts/packages.txt)')
def test_client_killed_as_it_names_its_journal_leaves_none(kenv, kguest):
    """A job's journal is made without a name (O_TMPFILE), locked, and only
    then named. A save killed as it names it (held 2 s in that call) leaves
    no journal and no file: with a temporary name first, it left that one,
    which recovery keeps for a minute since it cannot tell it from a live
    job's between creating and locking it."""
    img = kenv.image('kill-journal.img')
    kguest.ensure_running()
    kguest.checkpoint()
    # The journal's is kvmsave's only link, and the save's first.
    args = ['strace', '-f', '-qq', '-o', '/dev/null', '-e', 'trace=link,linkat',
            '-e', 'inject=link,linkat:delay_enter=2000000'] + save_args(kenv, kguest, img, 1)
    killed_when(args, lambda sid: in_syscall(sid, LINK) or in_syscall(sid, LINKAT),
                'it named its journal')
    assert leftovers(kenv) == []
    assert kguest.state() == 'running'
    assert not os.path.exists(img)
    kguest.assert_continued()


REMOVEXATTR = 197       # x86_64


def in_syscall(pgid, nr):
    """Whether a thread of session PGID is in system call NR."""
    for stat in glob.glob('/proc/[0-9]*/task/[0-9]*/stat'):
        try:
            with open(stat) as fh:
                fields = fh.read().rsplit(')', 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            with open(stat[:-4] + 'syscall') as fh:
                if fh.read().split(' ', 1)[0] == str(nr):
                    return True
        except (OSError, IndexError, ValueError):
            pass
    return False


def libvirt_xattrs(path):
    return [a for a in os.listxattr(path) if a.startswith('trusted.libvirt.security')]


@pytest.mark.skipif(not shutil.which('strace'), reason='needs strace (scripts/packages.txt)')
def test_client_killed_while_libvirt_stops_the_saved_guest_leaves_its_files_reusable(kenv,
                                                                                     kguest):
    """A save killed while libvirt stops the saved guest and gives its
    files their owners back (held in its first removexattr): libvirt 9.0
    had by then saved a status with no monitor, which it cannot load, so
    nobody finished the stop and the guest's next start failed ("Setting
    different DAC user or group on ... which is already in use"). The
    next connection finishes the stop: the console log is root's again,
    with no libvirt references left, and the image restores."""
    img = kenv.image('kill-stop.img')
    kguest.ensure_running()
    kguest.checkpoint()
    args = ['strace', '-f', '-qq', '-o', '/dev/null', '-e', 'trace=removexattr',
            '-e', 'inject=removexattr:delay_enter=2000000'] + save_args(kenv, kguest, img, 1)
    killed_when(args, lambda sid: in_syscall(sid, REMOVEXATTR), 'libvirt restored a label')
    assert kguest.state() == 'shut off'
    assert leftovers(kenv) == []
    console = kguest.console_path
    assert libvirt_xattrs(console) == [] and os.stat(console).st_uid == 0, \
        (libvirt_xattrs(console), os.stat(console).st_uid)
    after_killed_save(kenv, img, -9, 'shut off', 'killed while libvirt stopped the guest')
    kguest.assert_continued()
