# SPDX-License-Identifier: LGPL-2.1-or-later
"""Integration-test harness for kvmsave: test guests, consoles, virsh.

Plain Python (no pytest inside), so that it can also be used from scripts.

The test guest (tests/guest/, built by tests/guest/build-guest) prints a small
protocol on its serial console, which the domain writes to a file:

    KVMSAVE-BOOT <bootid>          once per boot, random boot id
    KVMSAVE-MEM-READY <md5>        DATA MiB of data in guest RAM (random by
                                   default, see domain_xml's fill), its md5
    KVMSAVE-HB <n> <bootid>        every second, n = 1, 2, ... (restarts on reboot)
    KVMSAVE-MEM-OK <n> <md5>       every 5th beat: the data still hashes right
    KVMSAVE-MEM-BAD <n> <md5>      ... or not
    KVMSAVE-ERROR <message>        the guest's setup failed

A guest that was saved and restored correctly goes on counting with the same
boot id and the same memory; `Console.assert_continued` checks exactly that.

Embedded libvirt (``SCHEME:///embed?root=DIR``) allows one process at a time
per root, so the test process itself never opens a connection: it runs virsh
(`Virsh`) or a Python snippet (`run_python`) in a subprocess for each step.
"""

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
from collections import namedtuple
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    'DEFAULT_GUEST_DIR', 'DEFAULT_QEMU_CONF', 'BUILD_GUEST',
    'guest_dir', 'guest_paths', 'ensure_guest', 'make_root', 'cleanup_root', 'embed_uri', 'console_path',
    'FILLS', 'domain_xml',
    'load_scaled', 'Event', 'Console', 'CommandFailed', 'DiedBySignal', 'Virsh', 'SYSTEM_PYTHON', 'run_python',
    'SYSTEM_URI', 'SOCKET_DIR', 'LIBVIRTD_SOCKET', 'VIRTQEMUD_SOCKET', 'inner_uri_param',
    'in_mount_namespace', 'Libvirtd', 'file_tail', 'qemu_migration',
]

DEFAULT_GUEST_DIR = '/var/cache/kvmsave-tests/guest'
BUILD_GUEST = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'guest', 'build-guest'))

KERNEL_NAME = 'vmlinuz'
INITRD_NAME = 'initramfs.cpio.gz'


# ---------------------------------------------------------------------------
# The guest image
# ---------------------------------------------------------------------------

def guest_dir():
    """Directory holding the built guest (``$KVMSAVE_GUEST_DIR`` or default)."""
    return os.environ.get('KVMSAVE_GUEST_DIR') or DEFAULT_GUEST_DIR


def guest_paths():
    """(kernel, initrd) paths of the built guest; raises if not built yet."""
    d = guest_dir()
    kernel, initrd = os.path.join(d, KERNEL_NAME), os.path.join(d, INITRD_NAME)
    for p in (kernel, initrd):
        if not os.path.isfile(p):
            raise FileNotFoundError(f'{p} is missing: run {BUILD_GUEST} first')
    return kernel, initrd


def ensure_guest(timeout=900):
    """Run build-guest (fast and a no-op when already built); return (kernel, initrd)."""
    subprocess.run([BUILD_GUEST], check=True, timeout=timeout,
                   stdout=subprocess.DEVNULL)
    return guest_paths()


# ---------------------------------------------------------------------------
# Embedded libvirt roots
# ---------------------------------------------------------------------------

# qemu.conf written into a new root.  libvirt's default stdio_handler "logd"
# makes every domain start connect to virtlogd's socket, which exists only
# where virtlogd runs (systemd socket activation; not in containers): with
# "file", QEMU's stdout/stderr go to ROOT/log/qemu/NAME.log instead.
DEFAULT_QEMU_CONF = 'stdio_handler = "file"\n'


def make_root(prefix='kvmsave-test-', qemu_conf=DEFAULT_QEMU_CONF):
    """Create a fresh scratch directory under /var/tmp for an embedded root.

    Mode 0755: QEMU runs as user libvirt-qemu and must traverse it (mkdtemp
    alone gives 0700).  Console logs may be kept in it too (`console_path`).
    Unless `qemu_conf` is None, it is written to ROOT/etc/qemu.conf, where
    the embedded QEMU driver reads its configuration.
    """
    root = tempfile.mkdtemp(prefix=prefix, dir='/var/tmp')
    os.chmod(root, 0o755)
    if qemu_conf is not None:
        os.makedirs(os.path.join(root, 'etc'), mode=0o755)
        with open(os.path.join(root, 'etc', 'qemu.conf'), 'w') as fh:
            fh.write(qemu_conf)
    return root


def embed_uri(root, scheme='qemu'):
    """``SCHEME:///embed?root=ROOT``."""
    return f'{scheme}:///embed?root={root}'


def in_this_root(pid):
    """Whether process PID has the "/" this process has. scripts/check runs
    a chroot per release at once, in the machine's one PID namespace: a
    scan of /proc must not take another chroot's QEMU for one of ours."""
    try:
        theirs = os.stat(f'/proc/{pid}/root')
    except OSError:
        return False
    ours = os.stat('/')
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


@contextlib.contextmanager
def machine_lock(name, timeout=1800):
    """Hold the machine-wide lock NAME for the block, for tests that change
    the kernel's own state (a sysctl) while other chroots' suites run.

    An abstract unix socket: every chroot of the machine shares it (one
    network namespace), and it goes with the process that holds it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    end = time.monotonic() + timeout
    try:
        while True:
            try:
                sock.bind(f'\0kvmsave-tests-{name}')
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE or time.monotonic() > end:
                    raise RuntimeError(f'cannot take the machine-wide lock {name}: {e}') from e
                time.sleep(0.5)
        yield
    finally:
        sock.close()


def console_path(root, name):
    """Conventional console log path for domain `name`, inside `root`."""
    return os.path.join(root, f'console-{name}.log')


def _root_qemu_pids(root):
    """PIDs of QEMU processes that belong to `root`, from its pid files.

    Only QEMU processes (argv[0] qemu-*) whose command line mentions `root`
    are returned, so neither a stale pid file nor ROOT/run/qemu/driver.pid
    (the client process holding the root) can make us signal anything else.
    """
    pids = set()
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if not f.endswith('.pid'):
                continue
            try:
                with open(os.path.join(dirpath, f)) as fh:
                    pid = int(fh.read().strip())
                with open(f'/proc/{pid}/cmdline', 'rb') as fh:
                    cmdline = fh.read()
            except (OSError, ValueError):
                continue
            argv0 = os.path.basename(cmdline.split(b'\0', 1)[0])
            if argv0.startswith(b'qemu-') and root.encode() in cmdline:
                pids.add(pid)
    return sorted(pids)


def qemu_open_files(root):
    """(pid, fd, target) of every file the QEMU processes of `root` have
    open: what they would keep on disk after it was removed."""
    files = []
    for pid in _root_qemu_pids(root):
        try:
            fds = os.listdir(f'/proc/{pid}/fd')
        except OSError:
            continue
        for fd in fds:
            try:
                files.append((pid, fd, os.readlink(f'/proc/{pid}/fd/{fd}')))
            except OSError:
                continue
    return files


def cleanup_root(root, virsh=None, timeout=60):
    """Destroy every running domain of the embedded root and remove it.

    `virsh` is a `Virsh` for the root's URI (or None).  Domains are destroyed
    through it; QEMU processes still alive afterwards (e.g. because the
    driver under test could not connect) are killed by the PID in their pid
    file.  Never raises for a root that is already gone.
    """
    if not root or not os.path.isdir(root):
        return
    if virsh is not None:
        try:
            listing = virsh.run('list', '--name', check=False, timeout=timeout)
            for name in listing.stdout.split():
                try:
                    virsh.destroy(name, timeout=timeout)
                except CommandFailed:
                    pass    # the pid-file sweep below still kills it
        except (OSError, subprocess.SubprocessError):
            pass
    for pid in _root_qemu_pids(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    # Give killed QEMUs a moment to exit before their files go.
    deadline = time.monotonic() + 10
    while _root_qemu_pids(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------
# Domain XML
# ---------------------------------------------------------------------------

# Contents of the guest's data region (tests/guest/init, kvmsave.fill=).
FILLS = ('random', 'text', 'zero')


def domain_xml(name, console_path, uuid=None, memory_mib=256, data_mib=32,
               extra_metadata='', fill='random', extra_devices=''):
    """Domain XML for a test guest.

    type='qemu' (TCG: nested KVM does not boot Linux on the test machines),
    direct kernel boot of the built guest, 1 vCPU, no disk, no NIC, no
    balloon, no USB; the serial console goes to `console_path` with
    append='on' so that a restarted QEMU (restore, reboot) does not truncate
    it.  `extra_metadata` (raw XML) is inserted inside <metadata>.
    `fill` is the content of the guest's data region (kernel parameter
    kvmsave.fill): 'random' (incompressible), 'text' (compressible text and
    code, about 3-4x with zstd) or 'zero' (allocated, all zeros).
    `console_path`'s directory must be traversable by user libvirt-qemu.
    """
    if fill not in FILLS:
        raise ValueError(f'fill must be one of {", ".join(FILLS)}, not {fill!r}')
    kernel, initrd = guest_paths()
    cmdline = f'console=ttyS0 quiet kvmsave.data={int(data_mib)} kvmsave.fill={fill}'
    uuid_xml = f'\n  <uuid>{escape(str(uuid))}</uuid>' if uuid else ''
    src = f'<source path={quoteattr(console_path)} append=\'on\'/>'
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>{uuid_xml}
  <metadata>{extra_metadata}</metadata>
  <memory unit='MiB'>{int(memory_mib)}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(kernel)}</kernel>
    <initrd>{escape(initrd)}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <!-- A named model TCG emulates fully; host-passthrough needs KVM. -->
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <controller type='usb' model='none'/>
    <serial type='file'>
      {src}
      <target port='0'/>
    </serial>
    <console type='file'>
      {src}
      <target type='serial' port='0'/>
    </console>
    <memballoon model='none'/>{extra_devices}
  </devices>
</domain>
"""


# ---------------------------------------------------------------------------
# Console log
# ---------------------------------------------------------------------------

# One protocol line.  kind: 'BOOT', 'MEM-READY', 'HB', 'MEM-OK', 'MEM-BAD',
# 'ERROR'; n: beat number or None; value: boot id, md5 or message; line: the
# 0-based index among complete lines of the log window.
Event = namedtuple('Event', 'line kind n value')

# Matched with re.search at the END of a line: firmware or kernel escape
# sequences may precede a protocol line on the same line.
_PATTERNS = [
    ('BOOT', re.compile(r'KVMSAVE-BOOT (\S+)$')),
    ('MEM-READY', re.compile(r'KVMSAVE-MEM-READY ([0-9a-f]{32})$')),
    ('HB', re.compile(r'KVMSAVE-HB (\d+) (\S+)$')),
    ('MEM-OK', re.compile(r'KVMSAVE-MEM-OK (\d+) ([0-9a-f]{32})$')),
    ('MEM-BAD', re.compile(r'KVMSAVE-MEM-BAD (\d+) (\S*)$')),
    ('ERROR', re.compile(r'KVMSAVE-ERROR (.*)$')),
]


def load_scaled(seconds):
    """`seconds` on an idle machine, stretched by how far the load average
    exceeds the CPUs: a TCG guest runs that much slower."""
    return seconds * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


class Console:
    """Reader for a test guest's console log file.

    The file is re-read on every call (it is small: about one line per
    second).  Only complete lines count: a line the guest is still writing
    is ignored until its newline arrives.  `offset` (bytes) makes the reader
    ignore what came before, e.g. ``Console.at_end(path)`` before starting a
    guest again on the same log.  Wait methods poll every `poll` seconds and
    raise AssertionError, with the tail of the log, on timeout or on a guest
    error line.
    """

    def __init__(self, path, offset=0, poll=0.2):
        self.path = path
        self.offset = offset
        self.poll = poll

    @classmethod
    def at_end(cls, path, **kw):
        """A Console that only sees what is written to `path` from now on."""
        try:
            size = os.path.getsize(path)
        except FileNotFoundError:
            size = 0
        return cls(path, offset=size, **kw)

    # -- reading ------------------------------------------------------------

    def text(self):
        """The log from `offset` on (may be empty if the file does not exist)."""
        try:
            with open(self.path, 'rb') as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return ''
        return data.decode('utf-8', errors='replace')

    def lines(self):
        """Complete lines, without CR/LF."""
        parts = self.text().split('\n')
        return [p.rstrip('\r') for p in parts[:-1]]   # last part: unfinished

    def tail(self, count=30):
        """The last `count` lines (complete or not), for error messages."""
        text = self.text().replace('\r', '')
        return '\n'.join(text.split('\n')[-count:])

    def events(self):
        """All protocol lines, in order, as `Event`s."""
        out = []
        for i, line in enumerate(self.lines()):
            line = line.rstrip()
            for kind, pat in _PATTERNS:
                m = pat.search(line)
                if not m:
                    continue
                if kind in ('HB', 'MEM-OK', 'MEM-BAD'):
                    out.append(Event(i, kind, int(m.group(1)), m.group(2)))
                else:
                    out.append(Event(i, kind, None, m.group(1)))
                break
        return out

    def _fail(self, message):
        raise AssertionError(
            f'{message}\n--- tail of console {self.path} ---\n{self.tail()}\n---')

    # -- simple queries -----------------------------------------------------

    def boot_id(self):
        """Boot id of the latest boot, or None."""
        ids = [e.value for e in self.events() if e.kind == 'BOOT']
        return ids[-1] if ids else None

    def heartbeats(self):
        """All heartbeats as a list of (n, bootid), in log order."""
        return [(e.n, e.value) for e in self.events() if e.kind == 'HB']

    def last_heartbeat(self):
        """The latest heartbeat (n, bootid), or None."""
        hbs = self.heartbeats()
        return hbs[-1] if hbs else None

    # -- waiting ------------------------------------------------------------

    def _wait(self, what, timeout, check):
        """Poll until check(events) returns non-None; return that value.
        `timeout` is for an idle machine: it grows with the load."""
        timeout = load_scaled(timeout)
        deadline = time.monotonic() + timeout
        while True:
            evs = self.events()
            for e in evs:
                if e.kind == 'ERROR':
                    self._fail(f'guest reported an error while waiting for {what}: {e.value}')
            result = check(evs)
            if result is not None:
                return result
            if time.monotonic() >= deadline:
                self._fail(f'timed out after {timeout:.0f}s waiting for {what}')
            time.sleep(self.poll)

    @staticmethod
    def _current_boot(evs):
        """Events of the latest boot (all events if no BOOT line is seen)."""
        starts = [i for i, e in enumerate(evs) if e.kind == 'BOOT']
        return evs[starts[-1]:] if starts else evs

    def wait_for_heartbeat(self, min_n=None, timeout=60, boot_id=None):
        """Wait for a heartbeat (n >= min_n, of boot `boot_id` if given).

        Returns the latest heartbeat (n, bootid) once it qualifies.
        """
        def check(evs):
            hbs = [e for e in evs if e.kind == 'HB']
            if not hbs:
                return None
            last = hbs[-1]
            if boot_id is not None and last.value != boot_id:
                return None
            if min_n is not None and last.n < min_n:
                return None
            return (last.n, last.value)
        what = 'a heartbeat' + (f' >= {min_n}' if min_n is not None else '') + \
            (f' of boot {boot_id}' if boot_id else '')
        return self._wait(what, timeout, check)

    def wait_mem_ready(self, timeout=60):
        """Wait for KVMSAVE-MEM-READY of the latest boot; return its md5."""
        def check(evs):
            for e in self._current_boot(evs):
                if e.kind == 'MEM-READY':
                    return e.value
            return None
        return self._wait('KVMSAVE-MEM-READY', timeout, check)

    def wait_mem_ok(self, after_n, timeout=60):
        """Wait for a memory check of a beat n > after_n (latest boot).

        Returns the md5 of KVMSAVE-MEM-OK; raises AssertionError on
        KVMSAVE-MEM-BAD.
        """
        def check(evs):
            for e in self._current_boot(evs):
                if e.kind == 'MEM-BAD' and e.n > after_n:
                    self._fail(f'guest memory is corrupt: KVMSAVE-MEM-BAD {e.n} {e.value}')
                if e.kind == 'MEM-OK' and e.n > after_n:
                    return e.value
            return None
        return self._wait(f'KVMSAVE-MEM-OK after beat {after_n}', timeout, check)

    def assert_continued(self, before_n, boot_id, md5, timeout=60, restored_here=False):
        """Assert that the guest went on from heartbeat `before_n` of `boot_id`.

        Typically `before_n` is the last heartbeat seen before a save (best
        with the guest suspended) and this is called after the restore.
        Looks at the log after that heartbeat and requires, within `timeout`:

        * no new boot, no heartbeat of another boot id;
        * the first heartbeat after `before_n` is before_n+1 or before_n+2
          (the counter continued; a restarted guest would count from 1),
          and the counter only goes up after that;
        * then a KVMSAVE-MEM-OK with `md5` (the guest's RAM survived), and
          no KVMSAVE-MEM-BAD or MEM-OK with another md5.

        `restored_here`: this Console's view starts where a restored guest
        began to write, so when it holds no `before_n` the guest goes on
        from the start of the view.

        Fails as soon as the log proves otherwise; returns the beat number of
        the MEM-OK that concluded the check.
        """
        def check(evs):
            anchor = None
            for i, e in enumerate(evs):
                if e.kind == 'HB' and e.n == before_n and e.value == boot_id:
                    anchor = i
            if anchor is None and restored_here:
                anchor = -1     # the view starts where the restored guest did
            if anchor is None:
                self._fail(f'heartbeat {before_n} of boot {boot_id} is not in the console '
                           f'log (log truncated, or wrong boot id?)')
            first = prev = None
            for e in evs[anchor + 1:]:
                if e.kind == 'BOOT':
                    self._fail(f'guest rebooted after heartbeat {before_n}: '
                               f'new boot id {e.value} (expected {boot_id} to continue)')
                if e.kind == 'MEM-BAD':
                    self._fail(f'guest memory is corrupt after heartbeat {before_n}: '
                               f'KVMSAVE-MEM-BAD {e.n} {e.value}')
                if e.kind == 'MEM-READY':
                    self._fail(f'guest refilled its memory after heartbeat {before_n} '
                               f'(it restarted)')
                if e.kind == 'HB':
                    if e.value != boot_id:
                        self._fail(f'heartbeat {e.n} after heartbeat {before_n} has boot id '
                                   f'{e.value}, expected {boot_id} (guest restarted)')
                    if first is None:
                        if e.n not in (before_n + 1, before_n + 2):
                            self._fail(f'first heartbeat after {before_n} is {e.n}, expected '
                                       f'{before_n + 1} or {before_n + 2} (counter did not continue)')
                        first = e.n
                    elif e.n <= prev:
                        self._fail(f'heartbeat counter went back from {prev} to {e.n}')
                    prev = e.n
                if e.kind == 'MEM-OK':
                    if e.value != md5:
                        self._fail(f'guest memory changed: KVMSAVE-MEM-OK {e.n} {e.value}, '
                                   f'expected md5 {md5}')
                    if first is not None:
                        return e.n
            return None
        return self._wait(f'the guest to continue after heartbeat {before_n} of boot '
                          f'{boot_id} with memory md5 {md5}', timeout, check)


def proc_stat(path):
    """A /proc/PID[/task/TID]/stat file as (comm, fields after the comm:
    state, ppid, ...), or None once the process is gone."""
    try:
        with open(path) as fh:
            st = fh.read()
    except OSError:
        return None
    return st[st.index('(') + 1:st.rindex(')')], st.rsplit(')', 1)[1].split()


class QemuReaper(threading.Thread):
    """This process becomes a child subreaper and reaps exited QEMUs at once.

    QEMU daemonizes, so its parent is the nearest subreaper: normally PID 1,
    which on a usual host (systemd) reaps it at once.  In some containers
    PID 1 reaps slowly, and libvirt's kill of QEMU waits until the zombie is
    gone.  With PR_SET_CHILD_SUBREAPER the QEMUs that virsh starts from here
    on become this process's children; this thread reaps any that exited
    (daemonized ones only, see orphan(): virsh, dd and the like are waited
    for by whoever started them).  Used by bench.py --reap and by the
    integration tests.
    """

    PR_SET_CHILD_SUBREAPER = 36

    def __init__(self, interval=0.01):
        super().__init__(daemon=True)
        self.interval = interval
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(self.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), 'prctl(PR_SET_CHILD_SUBREAPER)')
        self.reaped = 0

    @staticmethod
    def children():
        pids = set()
        for tid in os.listdir('/proc/self/task'):
            try:
                with open(f'/proc/self/task/{tid}/children') as fh:
                    pids.update(int(x) for x in fh.read().split())
            except OSError:
                pass
        return pids

    @staticmethod
    def orphan(pid, fields, own_session):
        """Whether a child was re-parented here rather than started here.
        A child started here is in this session, or leads its own
        (start_new_session).  A daemonized one is neither: QEMU, or the
        fork libvirt made for it when libvirt killed it before its exec
        (then still named after virsh or python).  Only those are reaped:
        the others' status belongs to their subprocess.Popen."""
        session = int(fields[3])
        return session not in (own_session, pid)

    def run(self):
        own_session = os.getsid(0)
        while True:
            for pid in self.children():
                st = proc_stat(f'/proc/{pid}/stat')
                if st and st[1][0] == 'Z' and self.orphan(pid, st[1], own_session):
                    try:
                        os.waitpid(pid, os.WNOHANG)
                        self.reaped += 1
                    except ChildProcessError:
                        pass
            time.sleep(self.interval)


# ---------------------------------------------------------------------------
# Subprocesses: virsh and Python snippets
# ---------------------------------------------------------------------------

class CommandFailed(subprocess.CalledProcessError):
    """A command exited non-zero; str() shows its stdout and stderr."""

    def __str__(self):
        return (f'command {self.cmd!r} exited with status {self.returncode}\n'
                f'--- stdout ---\n{self.stdout or ""}--- stderr ---\n{self.stderr or ""}---')


class DiedBySignal(AssertionError):
    """A client process (virsh, a Python snippet) was killed by a signal
    nobody sent it: a crash, whatever the test expected of the call."""


def file_tail(path, count):
    """The last COUNT lines of the file PATH, or None if it cannot be read."""
    try:
        with open(path, errors='replace') as fh:
            return '\n'.join(fh.read().splitlines()[-count:])
    except OSError:
        return None


# The daemons this process started (`Libvirtd`): a call that hangs shows
# their threads' stacks, so that the hang can be found, not retried.
TEST_DAEMONS = []


def daemon_stacks():
    """Each running test daemon's threads' backtraces (gdb) and log tails."""
    out = []
    for d in list(TEST_DAEMONS):
        if not d.proc or d.proc.poll() is not None:
            continue
        out.append(f'--- the threads of libvirtd {d.proc.pid} ---')
        if shutil.which('gdb'):
            # libvirtd runs in a mount namespace of its own: its libraries
            # are read at their paths here, not through /proc/PID/root.
            gdb = subprocess.run(['gdb', '-batch', '-nx', '-iex', 'set sysroot /',
                                  '-iex', 'set debuginfod enabled off',
                                  '-p', str(d.proc.pid), '-ex', 'thread apply all bt'],
                                 capture_output=True, text=True, timeout=120)
            out += [line for line in gdb.stdout.splitlines()
                    if line.startswith(('Thread ', '#'))]
        else:
            out.append('(gdb is not installed)')
        out.append(d._log_tails())
    return '\n'.join(out)


class Hung(subprocess.TimeoutExpired):
    """A command did not end in time; str() adds `daemon_stacks()`."""

    def __init__(self, cmd, timeout):
        super().__init__(cmd, timeout)
        self.stacks = daemon_stacks()

    def __str__(self):
        return super().__str__() + ('\n' + self.stacks if self.stacks else '')


def _run(cmd, check, timeout, input=None, env=None):
    try:
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise Hung(cmd, timeout) from None
    if proc.returncode < 0:
        raise DiedBySignal(f'{cmd!r} died by signal {-proc.returncode}\n'
                           f'--- stdout ---\n{proc.stdout}--- stderr ---\n{proc.stderr}---')
    if check and proc.returncode != 0:
        raise CommandFailed(proc.returncode, cmd, proc.stdout, proc.stderr)
    return proc


class Virsh:
    """Runs virsh commands: ``Virsh(['virsh', '-c', uri]).run('list', '--all')``.

    `prefix` is the full command prefix, which may start with a wrapper
    (e.g. ``['/path/to/run', 'virsh', '-c', uri]``).  Every call is its own
    process, which holds the embedded root only while it runs.
    """

    def __init__(self, prefix, env=None):
        self.prefix = list(prefix)
        self.env = env

    def run(self, *args, check=True, timeout=120, input=None):
        """Run ``prefix + args``; return the CompletedProcess (text).

        With `check`, a non-zero exit raises `CommandFailed` (which shows
        stdout and stderr).  A timeout raises subprocess.TimeoutExpired.
        """
        return _run(self.prefix + [str(a) for a in args], check, timeout,
                    input=input, env=self.env)

    # virsh 9.0 runs these in a worker thread and watches it with a GLib
    # main loop (virshWatchJob).  A worker that fails at once can call
    # g_main_loop_quit() before the main thread reaches g_main_loop_run();
    # the quit is lost and virsh hangs after printing "error: Failed to ...".
    WATCHED_JOBS = ('save', 'managedsave', 'dump', 'migrate')

    def fails(self, *args, timeout=120):
        """Run a command that must fail; return its stderr.

        A watched-job command caught by virsh's lost-quit race (above) is run
        once more: its first run failed before the hang, as it should, but
        virsh hung before it printed libvirt's error, which the caller
        checks (docs/testing.md).  A client that died by a signal is a crash
        and is never run again.
        """
        if args and args[0] in self.WATCHED_JOBS:
            proc = self._watched_job(args, timeout)
            if proc is None:        # lost the race: the first run failed
                proc = self._watched_job(args, timeout)
        else:
            proc = self.run(*args, check=False, timeout=timeout)
        if proc.returncode == 0:
            raise AssertionError(
                f'expected {self.prefix + list(args)!r} to fail, but it succeeded\n'
                f'--- stdout ---\n{proc.stdout}--- stderr ---\n{proc.stderr}---')
        return proc.stderr

    def _watched_job(self, args, timeout, grace=10):
        """Run a watched-job command; None if virsh hung after its job failed
        (it printed "error: Failed to ..." and did not exit within `grace`
        seconds)."""
        cmd = self.prefix + [str(a) for a in args]
        with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
            p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                 text=True, env=self.env)
            deadline = time.monotonic() + timeout
            failed_at = None
            while p.poll() is None:
                now = time.monotonic()
                if now > deadline:
                    p.kill()
                    p.wait()
                    raise subprocess.TimeoutExpired(cmd, timeout)
                if failed_at is None:
                    err.seek(0)
                    if 'error: Failed to' in err.read():
                        failed_at = now
                elif now - failed_at > grace:
                    p.kill()
                    p.wait()
                    return None
                time.sleep(0.2)
            out.seek(0)
            err.seek(0)
            proc = subprocess.CompletedProcess(cmd, p.returncode, out.read(), err.read())
        if proc.returncode < 0:
            raise DiedBySignal(f'{cmd!r} died by signal {-proc.returncode}\n'
                               f'--- stderr ---\n{proc.stderr}---')
        return proc

    def domstate(self, name, reason=False):
        """'running', 'paused', 'shut off', ... (with reason: 'paused (user)')."""
        args = ['domstate', name] + (['--reason'] if reason else [])
        return self.run(*args).stdout.strip()

    def destroy(self, name, timeout=120):
        """``virsh destroy``, which must succeed.

        Through plain ``qemu:///embed`` only, stock libvirt 9.0's reconnect
        race is let through: a new process reconnects to the running QEMUs
        in a background job, ``virDomainDestroy`` kills QEMU *before* it
        waits for that job, the reconnect then stops the domain and destroy
        reports "domain is not running" although it did destroy it.  A
        kvmsave connection returns from its open only once the reconnect is
        done (plugin/kvmsave_embed.c), so through kvmsave any failure raises
        `CommandFailed`.  Use ``fails('destroy', name)`` to check that
        destroying a stopped domain is refused.
        """
        proc = self.run('destroy', name, check=False, timeout=timeout)
        if proc.returncode == 0:
            return proc
        stock = not any(str(a).startswith('kvmsave:') for a in self.prefix)
        if stock and ('domain is not running' in proc.stderr or
                      'Domain not found' in proc.stderr):
            state = self.run('domstate', name, check=False, timeout=timeout)
            if state.returncode != 0 or state.stdout.strip() == 'shut off':
                return proc
        raise CommandFailed(proc.returncode, proc.args, proc.stdout, proc.stderr)

    def _with_xml_file(self, command, xml, *args, check=True, timeout=120):
        with tempfile.NamedTemporaryFile('w', suffix='.xml', prefix='kvmsave-') as fh:
            fh.write(xml)
            fh.flush()
            return self.run(command, fh.name, *args, check=check, timeout=timeout)

    def create(self, xml, *args, check=True, timeout=120):
        """``virsh create`` from an XML string (transient domain)."""
        return self._with_xml_file('create', xml, *args, check=check, timeout=timeout)

    def define(self, xml, *args, check=True, timeout=120):
        """``virsh define`` from an XML string (persistent domain)."""
        return self._with_xml_file('define', xml, *args, check=check, timeout=timeout)


# Stock libvirt 9.0's embedded driver reconnects to running guests in a
# thread that a short-lived client's exit() can run its libraries'
# destructors under, and crash (architecture.md, "Embedded mode at
# exit"); kvmsave's connections wait for it, a plain one does not. A
# plain embedded client that only looks at a root where guests run ends
# its snippet with this: os._exit() runs no destructors. The tests are
# about what it sees, not about stock's exit.
PLAIN_QUICK_EXIT = """
sys.stdout.flush()
import os
os._exit(0)
"""


# Debian's interpreter, where python3-libvirt is installed: a `python3` found
# first on PATH (pyenv, venv) usually lacks the libvirt module.
SYSTEM_PYTHON = '/usr/bin/python3'

# The program run_python starts: argv[1] is the URI, argv[2] the snippet.
_PY_WRAPPER = r'''
import sys, threading
import libvirt

# virsh has an event loop; a Python client must register one itself, or
# embedded drivers (and keepalive, domain events) cannot work.
libvirt.virEventRegisterDefaultImpl()

def _event_loop():
    while True:
        libvirt.virEventRunDefaultImpl()

threading.Thread(target=_event_loop, name='libvirt-events', daemon=True).start()

uri, code = sys.argv[1], sys.argv[2]
conn = libvirt.open(uri)
ns = {'__name__': '__snippet__', 'libvirt': libvirt, 'conn': conn, 'uri': uri, 'sys': sys}
try:
    exec(compile(code, '<snippet>', 'exec'), ns)
finally:
    sys.stdout.flush()
    if conn._o is not None:     # unless the snippet closed it already
        conn.close()
'''


def run_python(prefix, uri, code, check=True, timeout=120, python=SYSTEM_PYTHON, env=None):
    """Run a Python snippet against `uri` in a subprocess.

    The command is ``prefix + [python, '-c', WRAPPER, uri, code]`` (python:
    /usr/bin/python3 by default, which has python3-libvirt); `prefix`
    may be empty or a wrapper (e.g. ``['/path/to/run']``).  In the snippet,
    ``libvirt``, ``conn`` (open connection to `uri`, closed afterwards),
    ``uri`` and ``sys`` are defined, and the default event loop runs in a
    daemon thread.  Returns the CompletedProcess (text): print what you need
    (e.g. JSON) and parse its stdout.  With `check`, a non-zero exit (e.g.
    an uncaught exception) raises `CommandFailed`.
    """
    cmd = list(prefix or []) + [python, '-c', _PY_WRAPPER, uri, textwrap.dedent(code)]
    return _run(cmd, check, timeout, env=env)


def qemu_migration(wrapper, root, name):
    """QEMU's own view of guest NAME of the embedded ROOT, through stock
    libvirt on that root: the status of its last migration, and whether
    mapped-ram is on."""
    code = f'''
import json, libvirt_qemu
d = conn.lookupByName({name!r})
q = lambda c: json.loads(libvirt_qemu.qemuMonitorCommand(d, json.dumps({{"execute": c}}), 0))["return"]
caps = {{c["capability"]: c["state"] for c in q("query-migrate-capabilities")}}
print(json.dumps([q("query-migrate").get("status", "none"), caps.get("mapped-ram", False)]))
''' + PLAIN_QUICK_EXIT
    out = run_python([wrapper] if wrapper else [], embed_uri(root), code).stdout
    status, mapped = json.loads(out)
    return status, mapped


# ---------------------------------------------------------------------------
# A libvirtd serving qemu:///system
# ---------------------------------------------------------------------------

SYSTEM_URI = 'qemu:///system'
# Where a plain client looks for the system daemons (libvirt's remote driver).
SOCKET_DIR = '/var/run/libvirt'
LIBVIRTD_SOCKET = f'{SOCKET_DIR}/libvirt-sock'
VIRTQEMUD_SOCKET = f'{SOCKET_DIR}/virtqemud-sock'
LIBVIRTD = '/usr/sbin/libvirtd'


def daemon_env(scratch, **extra):
    """The environment of a test daemon: LIBVIRT_DRIVER_DIR names a
    directory of the installed connection drivers but the node device one.
    From libvirt 10.3 (stateShutdownWait) its stop can deadlock the
    daemon's: nodeStateShutdownWait joins the udev thread while holding the
    lock that thread takes when it wakes to see it is to quit
    (src/node_device/node_device_udev.c), and the daemon exits 1 after 30 s
    ("Make forcefull daemon shutdown"). kvmsave and its tests use no node
    device."""
    import glob
    drivers = os.path.join(scratch, 'connection-driver')
    os.makedirs(drivers, exist_ok=True)
    for so in glob.glob('/usr/lib/*/libvirt/connection-driver/libvirt_driver_*.so') + \
            glob.glob('/usr/lib64/libvirt/connection-driver/libvirt_driver_*.so'):
        name = os.path.basename(so)
        if name != 'libvirt_driver_nodedev.so' and \
                not os.path.exists(os.path.join(drivers, name)):
            os.symlink(so, os.path.join(drivers, name))
    return dict(os.environ, LIBVIRT_DRIVER_DIR=drivers, **extra)


def inner_uri_param(uri):
    """`uri` percent-encoded for kvmsave's ``uri=`` parameter."""
    from urllib.parse import quote
    return quote(uri, safe='')


def in_mount_namespace(binds, cmd):
    """`cmd` run in a private mount namespace where each (source, target)
    of `binds` is bind-mounted first, in order (``unshare -m``)."""
    import shlex
    mounts = ''.join(f'mount --bind {shlex.quote(str(src))} {shlex.quote(str(dst))} && '
                     for src, dst in binds)
    return ['unshare', '-m', '--propagation', 'private', 'sh', '-c',
            mounts + 'exec "$@"', 'sh'] + [str(c) for c in cmd]


class Libvirtd:
    """A libvirtd that serves qemu:///system for tests, at the default socket.

    `start()` reuses a daemon that already serves qemu:///system (it is then
    never stopped); otherwise it starts ``libvirtd --config FILE --pid-file
    FILE`` as a child, in a private mount namespace where a scratch
    directory's etc/, lib/, log/ and run/ are bind-mounted over
    /etc/libvirt, /var/lib/libvirt, /var/log/libvirt and /run/libvirt: its
    libvirtd.conf, qemu.conf (stdio_handler "file": no virtlogd here),
    guest definitions, state, runtime state and logs are the scratch
    directory's, the host's are untouched.  Only its sockets are the
    system ones (libvirt-sock, -sock-ro, -admin-sock in /var/run/libvirt),
    so that plain ``virsh -c qemu:///system`` and kvmsave's
    ``uri=qemu:///system`` find it with nothing spelled out: the host's
    /run/libvirt is first bind-mounted to scratch sockets/, libvirtd.conf's
    unix_sock_dir.  libvirtd removes whatever is at its socket path before
    binding, so it is started only when nothing serves qemu:///system.

    `uri` is a kvmsave URI over it (root: ROOT, a directory of its own),
    `virsh` a `Virsh` for it, `plain_virsh` one for qemu:///system.
    `names` collects the guests tests defined in it; `stop()` destroys and
    undefines them (every domain, in a daemon this object started), then
    stops the daemon if it started it.
    """

    def __init__(self, wrapper=None, scratch_prefix='kvmsave-libvirtd-'):
        self.wrapper = wrapper
        self.scratch = tempfile.mkdtemp(prefix=scratch_prefix, dir='/var/tmp')
        os.chmod(self.scratch, 0o755)
        self.root = make_root(prefix='kvmsave-ld-', qemu_conf=None)
        self.plain_uri = SYSTEM_URI
        self.uri = self.kvmsave_uri(self.root)
        self.virsh = Virsh(self.prefix + ['virsh', '-c', self.uri])
        self.plain_virsh = Virsh(['virsh', '-c', SYSTEM_URI])
        self.log = os.path.join(self.scratch, 'log', 'libvirtd.log')
        self.proc = None
        self.names = set()

    @property
    def prefix(self):
        return [self.wrapper] if self.wrapper else []

    @property
    def owned(self):
        """Whether this object started the daemon (and will stop it)."""
        return self.proc is not None

    def kvmsave_uri(self, root, inner=SYSTEM_URI):
        return f'kvmsave:///embed?root={root}&uri={inner_uri_param(inner)}'

    def serving(self, timeout=30):
        """Whether a daemon answers on qemu:///system."""
        try:
            return self.plain_virsh.run('version', check=False,
                                        timeout=timeout).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _write_config(self):
        for d in ('etc', 'lib', 'log', 'run', 'sockets'):
            os.makedirs(os.path.join(self.scratch, d), mode=0o755)
        with open(os.path.join(self.scratch, 'etc', 'libvirtd.conf'), 'w') as fh:
            fh.write('# Written by the kvmsave tests: sockets/ is the host\'s /run/libvirt.\n'
                     f'unix_sock_dir = "{self.scratch}/sockets"\n'
                     f'log_outputs = "3:file:{self.log}"\n')
        with open(os.path.join(self.scratch, 'etc', 'qemu.conf'), 'w') as fh:
            fh.write(DEFAULT_QEMU_CONF)

    def start(self, timeout=120):
        """Use the daemon serving qemu:///system, or start one; return self."""
        if self.serving():
            return self
        self._write_config()
        s = self.scratch
        os.makedirs(SOCKET_DIR, mode=0o755, exist_ok=True)
        cmd = in_mount_namespace(
            [(SOCKET_DIR, f'{s}/sockets'), (f'{s}/run', SOCKET_DIR),
             (f'{s}/etc', '/etc/libvirt'), (f'{s}/lib', '/var/lib/libvirt'),
             (f'{s}/log', '/var/log/libvirt')],
            [LIBVIRTD, '--config', f'{s}/etc/libvirtd.conf',
             '--pid-file', f'{s}/libvirtd.pid'])
        with open(os.path.join(s, 'log', 'stderr.log'), 'w') as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err,
                                         env=daemon_env(s))
        if self not in TEST_DAEMONS:
            TEST_DAEMONS.append(self)
        deadline = time.monotonic() + timeout
        while not self.serving():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                logs = self._log_tails()
                self.stop()
                raise RuntimeError(f'libvirtd did not answer on {SYSTEM_URI}\n{logs}')
            time.sleep(0.2)
        return self

    def _log_tails(self, count=20):
        out = []
        for name in ('stderr.log', 'libvirtd.log'):
            tail = file_tail(os.path.join(self.scratch, 'log', name), count)
            if tail is not None:
                out.append(f'--- {name} ---\n{tail}')
        return '\n'.join(out)

    def remove_guests(self, names, timeout=120):
        """Destroy and undefine the domains `names` (missing ones ignored)."""
        v = self.plain_virsh
        for name in names:
            if v.run('domstate', name, check=False, timeout=timeout).returncode != 0:
                continue
            v.run('destroy', name, check=False, timeout=timeout)
            v.run('undefine', '--nvram', name, check=False, timeout=timeout)
        self.names.difference_update(names)

    def stop(self, timeout=60):
        """Remove the tests' guests; stop the daemon if this object started it."""
        if self.owned and self.proc.poll() is None:
            listing = self.plain_virsh.run('list', '--all', '--name', check=False)
            self.remove_guests(set(listing.stdout.split()) | self.names)
        elif self.serving():
            self.remove_guests(set(self.names))
        if self.owned and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self in TEST_DAEMONS:
            TEST_DAEMONS.remove(self)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.scratch, ignore_errors=True)
