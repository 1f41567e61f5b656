# SPDX-License-Identifier: LGPL-2.1-or-later
"""Lazy restores (restore_mode "lazy"): the guest runs as soon as its
devices are loaded, while kvmsave-pagesrv, a process of its own that
outlives the client, serves the rest of its memory from the image: a
sparse one (QEMU 9.0 or later), or one of one stream in raw or zstd
chunks through its page index (every release, QEMU 7.2 of Debian 12
too), every block or chunk checked before a page of it reaches QEMU.
Asked through restoreParams, the <kvmsave:migrateFrom mode='lazy'>
attribute, or kvmsave.conf. A page server killed at any point is
replaced, and QEMU's postcopy recovery goes on where it stopped; a
damaged block or chunk stops the restore with the guest paused and it
named."""

import configparser
import os
import random
import shutil
import signal
import subprocess
import time

import pytest

import libvirt_consts as C
from conftest import job_completed_events, module_env, sha256, started_guest
from kvmsave_harness import Console, in_this_root, machine_lock
from image_edit import field
from test_corruption import flip
from test_image_formats import call, save_params
from test_sparse_images import (HAVE_SPARSE, OPERATION_UNSUPPORTED, QEMU_VERSION,
                                data_block)

pytestmark = pytest.mark.every_release

OPERATION_INVALID = 55
UFFD_SYSCTL = '/proc/sys/vm/unprivileged_userfaultfd'
UFFD_DEV = '/dev/userfaultfd'
# the "at least 20 trials"
KILL_TRIALS = int(os.environ.get('KVMSAVE_LAZY_KILL_TRIALS', '20'))

lazy_env = module_env('kvmsave-lazy-')


@pytest.fixture(scope='module', autouse=True)
def userfaultfd():
    """The test roots' QEMU runs as libvirt-qemu, without the mount
    namespace in which libvirt would grant it /dev/userfaultfd: this
    module allows unprivileged userfaultfd for its run, and puts the
    host's setting back. The setting is the machine's: the module holds
    it against other chroots' runs of this module."""
    with machine_lock('unprivileged_userfaultfd'):
        with open(UFFD_SYSCTL) as fh:
            old = fh.read().strip()
        with open(UFFD_SYSCTL, 'w') as fh:
            fh.write('1')
        yield
        with open(UFFD_SYSCTL, 'w') as fh:
            fh.write(old)


@pytest.fixture(scope='module')
def lazy_guest(lazy_env):
    # enough memory that serving it takes a while, for the kill trials
    return started_guest(lazy_env, 'lazy1', memory_mib=512, data_mib=160)


@pytest.fixture
def lg(lazy_guest):
    lazy_guest.ensure_running()
    return lazy_guest


def status_path(env, g):
    # not asked of a connection: opening one recovers lost page servers
    return os.path.join(env.root, 'run', 'kvmsave', 'lazy', f'{g.uuid}.status')


def read_status(env, g):
    try:
        with open(status_path(env, g)) as fh:
            first, error = (fh.read().split('\n') + [''])[:2]
    except FileNotFoundError:
        return None
    state, done, total, asked = first.split()
    return state, int(done), int(total), int(asked), error


def wait_status(env, g, states, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = read_status(env, g)
        if st and st[0] in states:
            return st
        time.sleep(0.05)
    raise AssertionError(f'page server of {g.name} still {read_status(env, g)}')


def page_servers(env):
    """pid -> parent pid of the page servers of ENV's root."""
    out = {}
    for pid in os.listdir('/proc'):
        if not pid.isdigit() or not in_this_root(pid):
            continue
        try:
            # a QEMU waiting for a page may hold its memory map's lock,
            # which reading its cmdline waits for: only servers' are read
            with open(f'/proc/{pid}/comm') as fh:
                if fh.read().strip() != 'kvmsave-pagesrv':
                    continue
            with open(f'/proc/{pid}/cmdline', 'rb') as fh:
                argv = fh.read().split(b'\0')
            with open(f'/proc/{pid}/stat') as fh:
                ppid = int(fh.read().rsplit(')', 1)[1].split()[1])
        except OSError:
            continue
        if argv and argv[0].endswith(b'kvmsave-pagesrv') and \
                any(env.root.encode() in a for a in argv):
            out[int(pid)] = ppid
    return out


def wait_no_page_server(env, timeout=60):
    end = time.monotonic() + timeout
    while page_servers(env) and time.monotonic() < end:
        time.sleep(0.05)
    assert page_servers(env) == {}


# The images a lazy restore serves here: sparse where QEMU writes them.
KINDS = ['raw', 'zstd'] + (['sparse'] if HAVE_SPARSE else [])
# One kind for the tests of a path that all kinds share.
KIND = 'sparse' if HAVE_SPARSE else 'raw'


def save_lazyable(env, g, name, kind=KIND):
    img = env.image(name)
    assert save_params(env, g, img, kind, 2 if kind == 'sparse' else None) is None
    g.checkpoint()
    return img


def data_chunk(img):
    """The number and payload offset of chunk 2 of a chunked image, which
    holds pages of RAM: past the stream's header and RAM's setup."""
    with open(img, 'rb') as fh:
        fh.seek(12)
        off = int.from_bytes(fh.read(4), 'little')
        for k in range(3):
            fh.seek(off)
            head = fh.read(32)
            assert head[:4] == b'KSCK', (img, off)
            if k == 2:
                return k, off + 32
            off += 32 + int.from_bytes(head[16:20], 'little')


def restore_lazy(env, g, img):
    """Restore IMG of G lazily; an error (code, message) or None. G's
    console is read from here on (images are restored more than once)."""
    g.restoring()
    return call(env, f"conn.restoreParams({{'file': {img!r}, 'restore_mode': 'lazy'}})")


def restore_eager(env, g, img):
    g.restoring()
    return call(env, f"conn.restoreParams({{'file': {img!r}}})")


def at_beat_before_check(g):
    """Wait until G has just printed the beat before a memory check (every
    5th): a guest restored from a save taken now checks all its memory at
    its first beat, which keeps the kill trials short."""
    console = Console(g.console_path, offset=g.since)
    n = console.wait_for_heartbeat(boot_id=g.boot)[0]
    while n % 5 != 4:
        n = console.wait_for_heartbeat(min_n=n + 1, boot_id=g.boot)[0]


def qemu_holds_the_monitor_copy(env, g):
    """Whether the QEMU of G's last lazy restore still holds the copy of
    kvmsave's monitor connection it was given (kvmsave_lazy.c)."""
    source = configparser.ConfigParser(interpolation=None)
    source.read(status_path(env, g) + '.source')
    pid, inode = source['restore']['qemu-pid'], source['restore']['qmp-inode']
    fds = f'/proc/{pid}/fd'
    return any(os.readlink(os.path.join(fds, fd)) == f'socket:[{inode}]'
               for fd in os.listdir(fds))


def assert_lazy_done(env, g):
    st = wait_status(env, g, ('done', 'failed'))
    assert st[0] == 'done' and st[1] == st[2] > 0, st
    wait_no_page_server(env)
    g.assert_continued()
    # the page server had QEMU let go of it at the end
    assert not qemu_holds_the_monitor_copy(env, g)


@pytest.mark.parametrize('kind', KINDS)
def test_lazy_restore_through_python_runs_then_fills_memory(lazy_env, lg, kind):
    env, g = lazy_env, lg
    img = save_lazyable(env, g, f'lazy-py-{kind}.img', kind)
    before = sha256(img)
    assert restore_lazy(env, g, img) is None
    assert g.state() == 'running'
    # the job goes on in the page server, seen from another client
    info = env.virsh.run('domjobinfo', g.name).stdout
    st = read_status(env, g)
    if st and st[0] == 'serving':
        assert 'Unbounded' in info or 'None' in info, info
    assert_lazy_done(env, g)
    assert 'None' in env.virsh.run('domjobinfo', g.name).stdout
    assert sha256(img) == before


def test_lazy_restore_sends_job_completed_once_the_last_page_is_in(lazy_env, lg):
    env, g = lazy_env, lg
    img = save_lazyable(env, g, 'lazy-event.img')
    path = status_path(env, g)
    jobs = job_completed_events(env, g, f'''
def on_job():
    with open({path!r}) as fh:
        return {{'status': fh.read().split()}}
conn.restoreParams({{'file': {img!r}, 'restore_mode': 'lazy'}})
returned = time.monotonic()
wait_jobs(1, 120)
time.sleep(1)
for j in jobs:
    j['returned'] = returned
''')
    assert len(jobs) == 1, jobs
    job = jobs[0]
    # sent after the call returned, once the page server said "done"
    assert job['at'] > job['returned'], job
    state, done, total = job['status'][0], int(job['status'][1]), int(job['status'][2])
    assert state == 'done' and done == total > 0, job
    assert job['operation'] == C.JOB_OPERATION_RESTORE and job['success'] is True, job
    assert job['data_total'] == job['data_processed'] == total * 4096, job
    assert job['data_remaining'] == 0, job
    assert_lazy_done(env, g)


def test_lazy_restore_job_cannot_be_aborted(lazy_env, lg):
    env, g = lazy_env, lg
    img = save_lazyable(env, g, 'lazy-abort.img')
    assert restore_lazy(env, g, img) is None
    st = read_status(env, g)
    if st and st[0] == 'serving':
        err = call(env, f'conn.lookupByName({g.name!r}).abortJob()')
        if read_status(env, g)[0] == 'serving':
            assert err and err[0] == OPERATION_INVALID, err
            assert 'lazy restore' in err[1], err
    assert_lazy_done(env, g)


def test_lazy_restore_by_virsh_create_with_migrate_from_mode(lazy_env, lg):
    env, g = lazy_env, lg
    img = save_lazyable(env, g, 'lazy-create.img')
    xml = env.virsh.run('save-image-dumpxml', img).stdout
    xml = xml.replace('</domain>',
                      "<metadata><kvmsave:migrateFrom xmlns:kvmsave='urn:kvmsave:domain:1' "
                      f"mode='lazy'>{img}</kvmsave:migrateFrom></metadata></domain>", 1)
    env.virsh.run('undefine', g.name)
    try:
        path = os.path.join(env.root, 'create.xml')
        with open(path, 'w') as fh:
            fh.write(xml)
        env.virsh.run('create', path)
        assert read_status(env, g) is not None
        assert_lazy_done(env, g)
    finally:
        env.virsh.run('destroy', g.name, check=False)
        g.define()


def test_managed_save_restores_lazily_by_the_config_default(lazy_env, lg):
    env, g = lazy_env, lg
    conf = os.path.join(env.root, 'etc', 'kvmsave.conf')
    os.makedirs(os.path.dirname(conf), exist_ok=True)
    with open(conf, 'w') as fh:
        fh.write(f'image_format = "{KIND}"\nrestore_mode = "lazy"\n')
    try:
        st0 = read_status(env, g)
        env.virsh.run('managedsave', g.name)
        g.checkpoint()
        env.virsh.run('start', g.name)
        st = read_status(env, g)
        assert st is not None and st != st0
        assert_lazy_done(env, g)
    finally:
        os.unlink(conf)


def test_lazy_asked_of_an_image_without_page_layout_restores_eagerly(lazy_env, lg):
    env, g = lazy_env, lg
    # the pages of a multifd save travel in several streams: no index
    img = env.image('lazy-raw2.img')
    assert save_params(env, g, img, 'raw', 2) is None
    g.checkpoint()
    os.makedirs(os.path.dirname(status_path(env, g)), exist_ok=True)
    st0 = read_status(env, g)
    assert call(env, f"conn.restoreParams({{'file': {img!r}, 'restore_mode': 'lazy'}})") is None
    # where kvmsave puts its warnings (kvmsave(7), FILES)
    with open(os.path.join(env.root, 'log', 'kvmsave.log')) as fh:
        log = fh.read()
    assert f"save image '{img}' cannot be restored lazily: it does not say where each page is" in log
    assert read_status(env, g) == st0 and page_servers(env) == {}
    g.assert_continued()


def test_lazy_asked_of_an_image_with_a_damaged_index_restores_eagerly(lazy_env, lg):
    env, g = lazy_env, lg
    img = save_lazyable(env, g, 'lazy-badindex.img', 'raw')
    offset, length, _ = field(img, 10).split()
    flip(img, int(offset) + int(length) // 2)
    os.makedirs(os.path.dirname(status_path(env, g)), exist_ok=True)
    st0 = read_status(env, g)
    assert restore_lazy(env, g, img) is None
    with open(os.path.join(env.root, 'log', 'kvmsave.log')) as fh:
        log = fh.read()
    warning = [line for line in log.splitlines()
               if f"save image '{img}' cannot be restored lazily" in line]
    assert warning and 'page index checksum mismatch' in warning[-1], log[-2000:]
    assert read_status(env, g) == st0 and page_servers(env) == {}
    g.assert_continued()


def test_image_rewritten_by_save_image_define_restores_lazily(lazy_env, lg):
    """save-image-define writes the image again with the new XML: the
    chunks move, the page index comes along, pointed at them."""
    env, g = lazy_env, lg
    img = save_lazyable(env, g, 'lazy-defined.img', 'zstd')
    xml = env.virsh.run('save-image-dumpxml', img).stdout
    xml = xml.replace('</domain>', '<description>' + 'moved ' * 2000 +
                      '</description></domain>', 1)
    path = os.path.join(env.root, 'defined.xml')
    with open(path, 'w') as fh:
        fh.write(xml)
    env.virsh.run('save-image-define', img, path)
    assert 'moved moved' in env.virsh.run('save-image-dumpxml', img).stdout
    offset, length, _ = field(img, 10).split()
    assert int(length) > 0
    st0 = read_status(env, g)
    assert restore_lazy(env, g, img) is None
    st = read_status(env, g)
    assert st is not None and st != st0
    assert_lazy_done(env, g)


def test_unknown_restore_mode_is_refused(lazy_env, lg):
    err = call(lazy_env, "conn.restoreParams({'file': '/nonexistent.img', 'restore_mode': 'later'})")
    assert err and err[0] == 8 and "unknown restore mode 'later'" in err[1], err


def test_killed_page_server_is_replaced_and_the_guest_recovers(lazy_env, lg):
    """SIGKILL to the page server at random points while it serves: QEMU
    pauses the migration, the supervisor has it listen again out of band,
    and a new page server sends what QEMU lacks."""
    env, g = lazy_env, lg
    rng = random.Random(17)
    killed = late = 0
    # Each kind's trials together, from one image restored again and
    # again: the guest goes on from the same state each time, checks its
    # memory at its first beat, and no save is timed per trial.
    trials = [(t, KINDS[t % len(KINDS)]) for t in range(KILL_TRIALS)]
    img = None
    for trial, kind in sorted(trials, key=lambda tk: KINDS.index(tk[1])):
        if img is None or not img.endswith(f'-{kind}.img'):
            g.ensure_running()
            at_beat_before_check(g)
            img = save_lazyable(env, g, f'lazy-kill-{kind}.img', kind)
        elif g.state() != 'shut off':
            env.virsh.run('destroy', g.name)
        assert restore_lazy(env, g, img) is None, trial
        time.sleep(rng.uniform(0, 0.3))
        servers = page_servers(env)
        children = [p for p, pp in servers.items() if pp in servers]
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        assert_lazy_done(env, g)
        with open(status_path(env, g) + '.log') as fh:
            late += 'QEMU had every page' in fh.read()
    # most trials hit a page server while it served
    print(f'killed {killed} of {KILL_TRIALS}, {late} after QEMU had every page')
    assert killed >= KILL_TRIALS // 2, killed


SYS_SHUTDOWN = 48        # x86_64: the page server's last call to QEMU


def traced(pid):
    with open(f'/proc/{pid}/status') as fh:
        return 'TracerPid:\t0\n' not in fh.read()


@pytest.mark.skipif(not shutil.which('strace'), reason='needs strace (scripts/packages.txt)')
def test_page_server_killed_after_qemu_had_every_page_ends_done(lazy_env, lg):
    """The serving child killed after QEMU's word that it has every page,
    before the child could say so: QEMU has completed the migration and
    refuses to recover it, and the supervisor, which saw the MIGRATION
    event, reports the restore done instead of failed."""
    env, g = lazy_env, lg
    img = save_lazyable(env, g, 'lazy-kill-late.img', 'zstd')
    assert restore_lazy(env, g, img) is None
    servers = page_servers(env)
    [child] = [p for p, pp in servers.items() if pp in servers]
    # stopped at once, then held 10 s as it enters shutdown(), which it
    # calls once QEMU said it had every page
    os.kill(child, signal.SIGSTOP)
    tracer = subprocess.Popen(['strace', '-qq', '-o', '/dev/null', '-p', str(child),
                               '-e', 'trace=shutdown',
                               '-e', 'inject=shutdown:delay_enter=10000000'])
    try:
        deadline = time.monotonic() + 60
        while not traced(child):
            assert time.monotonic() < deadline, 'strace did not attach'
            time.sleep(0.01)
        os.kill(child, signal.SIGCONT)
        while True:
            with open(f'/proc/{child}/syscall') as fh:
                if fh.read().split()[0] == str(SYS_SHUTDOWN):
                    break
            assert read_status(env, g)[0] == 'serving'
            assert time.monotonic() < deadline, 'the page server did not finish'
            time.sleep(0.01)
        os.kill(child, signal.SIGKILL)
    finally:
        tracer.wait(timeout=60)
    assert_lazy_done(env, g)
    with open(status_path(env, g) + '.log') as fh:
        assert 'QEMU had every page' in fh.read()


def test_killed_supervisor_is_replaced_by_the_next_connection(lazy_env, lg):
    """Both processes of kvmsave-pagesrv killed: QEMU waits in
    postcopy-paused, and the next kvmsave connection starts a page server
    that recovers it, from the same image file."""
    env, g = lazy_env, lg
    img = save_lazyable(env, g, 'lazy-kill-all.img')
    before = sha256(img)
    assert restore_lazy(env, g, img) is None
    servers = page_servers(env)
    for pid in servers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    st = read_status(env, g)
    if st[0] == 'done':
        pytest.skip('the page server finished before it was killed')
    wait_no_page_server(env)
    assert read_status(env, g)[0] == 'serving'
    # any connection: this one asks how the job goes
    env.virsh.run('domjobinfo', g.name)
    with open(os.path.join(env.root, 'log', 'kvmsave.log')) as fh:
        log = fh.read()
    assert f'recovering the lazy restore of guest {g.name}' in log, log[-2000:]
    assert_lazy_done(env, g)
    assert sha256(img) == before


def test_lost_page_server_of_a_guest_that_ended_is_reported(lazy_env, lg):
    """Page server and QEMU both gone: nothing to recover; the job says
    so, and the directory of QEMU's sockets is removed."""
    env, g = lazy_env, lg
    img = save_lazyable(env, g, 'lazy-kill-qemu.img')
    assert restore_lazy(env, g, img) is None
    for pid in page_servers(env):
        os.kill(pid, signal.SIGKILL)
    st = read_status(env, g)
    if st[0] == 'done':
        pytest.skip('the page server finished before it was killed')
    source = configparser.ConfigParser(interpolation=None)
    source.read(status_path(env, g) + '.source')
    sockets = os.path.dirname(source['restore']['sockets'])
    assert os.path.isdir(sockets)
    with open(os.path.join(env.root, 'run', 'qemu', f'{g.name}.pid')) as fh:
        os.kill(int(fh.read()), signal.SIGKILL)
    wait_no_page_server(env)
    info = env.virsh.run('domjobinfo', '--completed', '--anystats', g.name).stdout
    assert 'Failed' in info and 'ended before the last page' in info, info
    assert g.state() == 'shut off'
    assert not os.path.exists(status_path(env, g) + '.source')
    assert not os.path.exists(sockets)


@pytest.mark.parametrize('kind', ['raw'] + (['sparse'] if HAVE_SPARSE else []))
def test_damaged_block_stops_the_restore_and_names_it(lazy_env, lg, kind):
    env, g = lazy_env, lg
    img = save_lazyable(env, g, f'lazy-damaged-{kind}.img', kind)
    if kind == 'sparse':
        block, off = data_block(img)
        block = f'block {block}'
    else:
        chunk, off = data_chunk(img)
        block = f'chunk {chunk}'
    flip(img, off + 100)
    damaged = sha256(img)
    err = restore_lazy(env, g, img)
    if err is None:
        st = wait_status(env, g, ('done', 'failed'))
        assert st[0] == 'failed', st
        assert block in st[4] and 'checksum' in st[4], st
        # domjobinfo --completed says why, from another client
        info = env.virsh.run('domjobinfo', '--completed', '--anystats', g.name).stdout
        assert 'Failed' in info and block in info, info
        # QEMU paused the migration, not the guest's disks or devices: it
        # waits for a page server, and the guest can only be destroyed.
        # Under TCG a vCPU waits for its page holding QEMU's main lock, so
        # libvirt's monitor waits too (docs/architecture.md, "Lazy
        # restore"): the destroy may take libvirt's 30 s job timeout and
        # report the guest gone under it.
        env.virsh.run('destroy', g.name, check=False)
        assert g.state() == 'shut off'
    else:
        assert block in err[1], err
    wait_no_page_server(env)
    assert sha256(img) == damaged
    flip(img, off + 100)
    assert restore_lazy(env, g, img) is None
    assert_lazy_done(env, g)


def test_lazy_only_by_the_config_goes_eagerly_without_userfaultfd(lazy_env, lg):
    env, g = lazy_env, lg
    if QEMU_VERSION >= (8, 1):
        pytest.skip('QEMU 8.1 or later is only refused once it starts')
    conf = os.path.join(env.root, 'etc', 'kvmsave.conf')
    os.makedirs(os.path.dirname(conf), exist_ok=True)
    with open(conf, 'w') as fh:
        fh.write(f'image_format = "{KIND}"\nrestore_mode = "lazy"\n')
    try:
        env.virsh.run('managedsave', g.name)
        g.checkpoint()
        with open(UFFD_SYSCTL, 'w') as fh:
            fh.write('0')
        try:
            env.virsh.run('start', g.name)
        finally:
            with open(UFFD_SYSCTL, 'w') as fh:
                fh.write('1')
    finally:
        os.unlink(conf)
    with open(os.path.join(env.root, 'log', 'kvmsave.log')) as fh:
        log = fh.read()
    assert "as kvmsave.conf's restore_mode 'lazy' cannot be followed" in log
    assert 'vm.unprivileged_userfaultfd=1' in log
    assert page_servers(env) == {}
    g.assert_continued()


def test_lazy_restore_is_refused_without_userfaultfd(lazy_env, lg):
    env, g = lazy_env, lg
    img = save_lazyable(env, g, 'lazy-nouffd.img')
    dev = os.stat(UFFD_DEV) if os.path.exists(UFFD_DEV) else None
    with open(UFFD_SYSCTL, 'w') as fh:
        fh.write('0')
    try:
        if dev:
            os.chmod(UFFD_DEV, 0o600)
            os.chown(UFFD_DEV, 0, 0)
        err = restore_lazy(env, g, img)
    finally:
        with open(UFFD_SYSCTL, 'w') as fh:
            fh.write('1')
        if dev:
            os.chown(UFFD_DEV, dev.st_uid, dev.st_gid)
            os.chmod(UFFD_DEV, dev.st_mode & 0o7777)
    assert err and err[0] == OPERATION_UNSUPPORTED, err
    assert 'vm.unprivileged_userfaultfd=1' in err[1] and 'userfaultfd' in err[1], err
    if QEMU_VERSION < (8, 1):
        # refused before QEMU starts; this QEMU knows no /dev/userfaultfd
        assert '/dev/userfaultfd' not in err[1], err
    assert g.name not in env.virsh.run('list', '--name').stdout.split()
    assert page_servers(env) == {}
    # nothing lost: the same image restores eagerly
    assert call(env, f"conn.restoreParams({{'file': {img!r}, 'restore_mode': 'eager'}})") is None
    g.assert_continued()
