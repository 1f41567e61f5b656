# SPDX-License-Identifier: LGPL-2.1-or-later
"""pytest fixtures for kvmsave's integration tests on a real QEMU guest.

Every libvirt call runs in a subprocess (virsh, or a Python snippet), because
only one process at a time may hold an embedded root; the tests themselves
only read the guest's console log and the image files.
"""

import contextlib
import glob
import hashlib
import json
import os
import subprocess
import uuid as uuidlib

import pytest

from kvmsave_harness import (DEFAULT_QEMU_CONF, Console, Libvirtd,
                             QemuReaper, Virsh, cleanup_root, console_path,
                             domain_xml, ensure_guest, file_tail, make_root, run_python)

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, '..', '..'))


def sha256(path):
    """Checksum of a file, to prove an image was left untouched."""
    h = hashlib.sha256()
    with open(path, 'rb') as fh:
        for block in iter(lambda: fh.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def tmpfs(path, options):
    """A tmpfs mounted at PATH (created) with mount OPTIONS, for the block."""
    path.mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(['umount', str(path)], check=True)


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
    """Run OPS (Python, with `dom` and `events`) in a client that records
    the guest's lifecycle events; return them as (event, detail) tuples,
    with whatever OPS appended itself."""
    code = EVENTS.replace('NAME', repr(guest.name)).replace('OPS', ops)
    out = env.python(code).stdout.strip().splitlines()[-1]
    return [tuple(e) for e in json.loads(out)]


JOB_EVENTS = r'''
import json, time
dom = conn.lookupByName(NAME)
jobs = []
def on_job():
    return {}
def cb(conn, d, params, opaque):
    if d.UUIDString() == dom.UUIDString():
        jobs.append(dict(params, at=time.monotonic(), **on_job()))
conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, cb, None)
def wait_jobs(n, timeout):
    end = time.monotonic() + timeout
    while len(jobs) < n and time.monotonic() < end:
        time.sleep(0.05)
OPS
print(json.dumps(jobs))
'''


def job_completed_events(env, guest, ops):
    """Run OPS (Python, with `dom`, `jobs` and `wait_jobs(n, timeout)`; it
    may redefine `on_job()` to add what it sees when an event comes) in a
    client that records the guest's JOB_COMPLETED events: their statistics
    as dicts, with `at`, the client's monotonic time of the event."""
    code = JOB_EVENTS.replace('NAME', repr(guest.name)).replace('OPS', ops)
    out = env.python(code, timeout=300).stdout.strip().splitlines()[-1]
    return json.loads(out)


def run_wrapper():
    """The build tree's ./run (uninstalled plugin), or None for an installed one."""
    path = os.environ.get('KVMSAVE_RUN') or os.path.join(TOP, 'run')
    return path if os.path.exists(path) else None


def kvmsave_uri(root):
    return f'kvmsave:///embed?root={root}'


class Guest:
    """A test guest in a kvmsave root: its XML, console and what it proved.

    `boot` and `md5` are the boot id and memory checksum of the running
    guest's current life; `checkpoint()` notes the last heartbeat before an
    operation and `assert_continued()` checks the guest went on from it.
    """

    def __init__(self, env, name, memory_mib=256, data_mib=32, extra_devices=''):
        self.env = env
        self.name = env.guest_name(name)
        self.uuid = str(uuidlib.uuid4())
        self.memory_mib = memory_mib
        self.console_path = console_path(env.root, self.name)
        self.xml = domain_xml(self.name, self.console_path, uuid=self.uuid,
                              memory_mib=memory_mib, data_mib=data_mib,
                              extra_devices=extra_devices)
        self.console = Console(self.console_path)
        self.boot = None
        self.md5 = None
        self.before = None
        # where the current life's output starts in the console log, and
        # whether a restore began there (restoring())
        self.since = 0
        self.restored_here = False

    def define(self):
        self.env.virsh.define(self.xml)

    def wait_booted(self, since=None):
        """Wait for a fresh boot's memory fill and first heartbeats."""
        self.since, self.restored_here = since or 0, False
        console = Console(self.console_path, offset=self.since)
        self.md5 = console.wait_mem_ready(timeout=90)
        self.boot = console.boot_id()
        console.wait_for_heartbeat(min_n=2, boot_id=self.boot, timeout=30)

    def start(self):
        """Boot the defined guest and wait until it runs its checks."""
        offset = Console.at_end(self.console_path).offset
        self.env.virsh.run('start', self.name)
        self.wait_booted(since=offset)

    def checkpoint(self):
        """Remember the latest heartbeat. Call it once the guest is stopped
        (right after a save) or, when an operation must not disturb the
        running guest, right before it."""
        mine = Console(self.console_path, offset=self.since)
        if self.restored_here and mine.last_heartbeat() is None:
            return self.before      # stopped again before its first beat
        self.before = mine.wait_for_heartbeat(boot_id=self.boot)[0]
        return self.before

    def restoring(self):
        """Call right before restoring an image of this guest when the same
        image may be restored again: the restored guest writes from here on,
        and an earlier restore's heartbeats must not answer for it."""
        self.since = Console.at_end(self.console_path).offset
        self.restored_here = True

    def assert_continued(self, timeout=60):
        """The guest went on from the checkpoint, same boot, memory intact."""
        console = Console(self.console_path, offset=self.since)
        return console.assert_continued(self.before, self.boot, self.md5, timeout=timeout,
                                        restored_here=self.restored_here)

    def state(self):
        return self.env.virsh.domstate(self.name)

    def ensure_running(self):
        """Bring the guest to a known running state for the next test."""
        st = self.env.virsh.run('domstate', self.name, check=False)
        if st.returncode != 0:
            self.define()
            st = self.env.virsh.run('domstate', self.name, check=False)
        state = st.stdout.strip()
        if state == 'paused':
            self.env.virsh.run('resume', self.name)
        elif state != 'running':
            self.start()


class Env:
    """A kvmsave root with virsh and Python access to it.

    Over the libvirt QEMU driver embedded in the root (backend 'embedded'),
    or, given `daemon` (a `Libvirtd`), over qemu:///system (backend
    'libvirtd'): guests are then defined in the daemon, under names made
    unique to this root (`guest_name`), and `plain_virsh` is a `Virsh` for
    qemu:///system itself.
    """

    def __init__(self, prefix='kvmsave-it-', daemon=None):
        self.daemon = daemon
        self.backend = 'libvirtd' if daemon else 'embedded'
        self.root = make_root(prefix=prefix, qemu_conf=None if daemon else DEFAULT_QEMU_CONF)
        self.uri = daemon.kvmsave_uri(self.root) if daemon else kvmsave_uri(self.root)
        self.plain_virsh = daemon.plain_virsh if daemon else None
        self.names = []
        self.wrapper = run_wrapper()
        pre = [self.wrapper] if self.wrapper else []
        self.virsh = Virsh(pre + ['virsh', '-c', self.uri])
        self.images = os.path.join(self.root, 'images')
        os.makedirs(self.images, mode=0o755)

    def python(self, code, check=True, timeout=120):
        pre = [self.wrapper] if self.wrapper else []
        return run_python(pre, self.uri, code, check=check, timeout=timeout)

    def image(self, name):
        return os.path.join(self.images, name)

    @property
    def image_tool(self):
        """kvmsave-image of the build tree under test, else the installed one."""
        tool = os.path.join(os.path.dirname(self.wrapper or ''), 'tools', 'kvmsave-image')
        return tool if self.wrapper and os.path.exists(tool) else 'kvmsave-image'

    def guest_name(self, base):
        """The name of guest `base`: as it is in an embedded root, with the
        root's name before it in a daemon that other roots share."""
        name = f'{os.path.basename(self.root)}-{base}' if self.daemon else base
        self.names.append(name)
        if self.daemon:
            self.daemon.names.add(name)
        return name

    def cleanup(self):
        if self.daemon:
            self.daemon.remove_guests(self.names)
            cleanup_root(self.root)
        else:
            cleanup_root(self.root, self.virsh)


def module_env(prefix):
    """A module-scoped fixture: an Env of its own, cleaned up after the
    module (``big_env = module_env('kvmsave-jobs-')``)."""
    @pytest.fixture(scope='module')
    def fixture():
        e = Env(prefix=prefix)
        yield e
        e.cleanup()
    return fixture


def started_guest(env, name, **kw):
    """A new persistent guest in ENV, booted and running its checks."""
    g = Guest(env, name, **kw)
    g.define()
    g.start()
    return g


def slowed(guest, monkeypatch, delay_ms):
    """GUEST running, every save and restore that this test's processes
    run slowed by DELAY_MS per 4 MiB chunk (KVMSAVE_TEST_CHUNK_DELAY_MS):
    a job then lasts seconds however fast the machine, so that a poll, an
    abort or a kill lands in the middle of it."""
    monkeypatch.setenv('KVMSAVE_TEST_CHUNK_DELAY_MS', str(delay_ms))
    guest.ensure_running()
    return guest


@pytest.fixture(scope='session', autouse=True)
def qemu_reaper():
    """The QEMUs the tests start are reaped as soon as they exit, as
    systemd would: where PID 1 reaps late (this project's containers),
    every stop of a QEMU would otherwise wait for it, 1-2 s, because
    libvirt polls until the process is gone."""
    reaper = QemuReaper()
    reaper.start()
    return reaper


@pytest.fixture(scope='session', autouse=True)
def built_guest():
    return ensure_guest()


@pytest.fixture(scope='session')
def libvirtd():
    """A libvirtd serving qemu:///system for the session (`Libvirtd`):
    `.uri` is a kvmsave URI over it, `.virsh` and `.plain_virsh` run
    virsh on that and on qemu:///system, `.env(prefix)` makes an `Env`
    over it. Started on first use, unless a daemon already serves
    qemu:///system; at the end the tests' guests are removed and a daemon
    this fixture started is stopped."""
    d = LibvirtdFixture(run_wrapper()).start()
    yield d
    d.stop()


class LibvirtdFixture(Libvirtd):
    def env(self, prefix='kvmsave-it-'):
        return Env(prefix=prefix, daemon=self)


# Backends of the tests marked libvirtd: their modules run each test under
# the parameter `backend` (module scope, so one Env per backend), the marked
# ones for both backends, the others for 'embedded' only.
BACKENDS = ('embedded', 'libvirtd')


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'libvirtd: run this test over a libvirtd (qemu:///system) '
        'too, besides the embedded QEMU driver')
    config.addinivalue_line(
        'markers', 'every_release: part of the suite of every supported '
        'Debian release, not only of the full suite (scripts/suite)')


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries the tails of its roots' kvmsave log
    and QEMU logs: a failure that a later run does not repeat can still be
    read (a migration QEMU kept, a recovery's warning)."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    roots = {v.root for v in item.funcargs.values() if isinstance(v, Env)}
    for root in sorted(roots):
        logs = [os.path.join(root, 'log', 'kvmsave.log')]
        logs += sorted(glob.glob(os.path.join(root, 'log', 'qemu', '*.log')))
        for path in logs:
            tail = file_tail(path, 40)
            rep.sections.append((f'tail of {path}', '(cannot be read)' if tail is None else tail))


def _module_has_libvirtd_tests(module):
    return any(m.name == 'libvirtd'
               for obj in vars(module).values() if callable(obj)
               for m in getattr(obj, 'pytestmark', []))


def pytest_generate_tests(metafunc):
    if 'backend' not in metafunc.fixturenames or \
            not _module_has_libvirtd_tests(metafunc.module):
        return
    marked = metafunc.definition.get_closest_marker('libvirtd') is not None
    metafunc.parametrize('backend', BACKENDS if marked else BACKENDS[:1],
                         indirect=True, scope='module')


@pytest.fixture(scope='module')
def backend(request):
    """'embedded' (the QEMU driver embedded in the kvmsave root) or
    'libvirtd' (a daemon's qemu:///system, see `libvirtd`)."""
    return getattr(request, 'param', 'embedded')


@pytest.fixture(scope='module')
def env(backend, request):
    if backend == 'libvirtd':
        e = request.getfixturevalue('libvirtd').env()
    else:
        e = Env()
    yield e
    e.cleanup()


@pytest.fixture(scope='module')
def guest_obj(env):
    return started_guest(env, 'guest1')


@pytest.fixture
def guest(guest_obj):
    """The module's persistent guest, running, with a fresh checkpoint."""
    guest_obj.ensure_running()
    return guest_obj
