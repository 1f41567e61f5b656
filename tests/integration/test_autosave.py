# SPDX-License-Identifier: LGPL-2.1-or-later
"""libvirt 11.2+'s own save of the guests at host shutdown (qemu.conf
``auto_shutdown_try_save``), and kvmsave after it.

The trigger is logind's: virtqemud or libvirtd subscribes to
org.freedesktop.login1.Manager's signal PrepareForShutdown on the system bus
(daemonRunStateInit, src/remote/remote_daemon.c), whose handler runs
virNetDaemonStop, that is virStateStop, qemuStateStop and
virDomainDriverAutoShutdown (src/hypervisor/domain_driver.c): a managed
save of each running persistent guest, in the daemon's save directory, in
qemu.conf's ``save_image_format``. SIGTERM does not trigger it (it only
quits the daemon), nor does anything else for a system daemon. While a
guest runs, the QEMU driver holds a logind inhibitor lock of mode "delay"
on "shutdown" (virInhibitorHold, src/util/virinhibitor.c), so that logind
waits for the saves before it goes on; the lock is let go when the last
guest stops.

A chroot has no logind and no system bus, so this test gives the daemon a
private one (a dbus-daemon of its own, ``DBUS_SYSTEM_BUS_ADDRESS``) on
which fake_logind.py owns org.freedesktop.login1: the daemon takes its
inhibitor lock there and gets the very signal logind sends, from the name
it listens to. What is not real is only the sender's program.
"""

import os
import queue
import re
import signal
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import Env, HERE, sha256, started_guest
from kvmsave_harness import (DEFAULT_QEMU_CONF, LIBVIRTD, SOCKET_DIR, Console,
                             TEST_DAEMONS, Libvirtd, Virsh, daemon_env,
                             daemon_stacks, in_mount_namespace, inner_uri_param)

MIN_VERSION = (11, 2)


def libvirt_version():
    out = subprocess.run([LIBVIRTD, '--version'], check=True, capture_output=True,
                         text=True).stdout
    return tuple(int(n) for n in re.search(r'(\d+)\.(\d+)\.(\d+)', out).groups())


# In the suite of every supported Debian release (scripts/suite).
pytestmark = [
    pytest.mark.every_release,
    pytest.mark.skipif(
        libvirt_version()[:2] < MIN_VERSION,
        reason='the daemon saves guests at host shutdown (auto_shutdown_try_save) '
               'from libvirt 11.2 on; this is libvirt %d.%d.%d' % libvirt_version()),
]


BUS_CONFIG = '''<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={dir}/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{dir}/services</servicedir>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="method_return"/>
    <allow send_type="signal"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="signal"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
'''
# libvirt asks logind for a lock only when login1 is activatable
# (virSystemdHasLogind: ListActivatableNames); it is never activated, the
# name being owned before the daemon starts.
LOGIN1_SERVICE = '[D-BUS Service]\nName=org.freedesktop.login1\nExec=/bin/false\nUser=root\n'


class SystemBus:
    """A dbus-daemon of the system type at a private socket, with
    fake_logind.py owning org.freedesktop.login1 on it."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='kvmsave-bus-', dir='/var/tmp')
        self.address = f'unix:path={self.dir}/system_bus_socket'
        self.bus = self.logind = None
        self.reports = queue.Queue()

    def start(self):
        os.makedirs(os.path.join(self.dir, 'services'))
        with open(os.path.join(self.dir, 'services', 'org.freedesktop.login1.service'),
                  'w') as fh:
            fh.write(LOGIN1_SERVICE)
        conf = os.path.join(self.dir, 'bus.conf')
        with open(conf, 'w') as fh:
            fh.write(BUS_CONFIG.format(dir=self.dir))
        self.bus = subprocess.Popen(['dbus-daemon', f'--config-file={conf}', '--nofork',
                                     '--nopidfile', '--print-address'],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    text=True)
        assert self.bus.stdout.readline().strip().startswith(self.address)
        self.logind = subprocess.Popen(['python3', os.path.join(HERE, 'fake_logind.py'),
                                        self.address],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       text=True)
        threading.Thread(target=self._read, daemon=True).start()
        self.expect('ready')
        return self

    def _read(self):
        for line in self.logind.stdout:
            self.reports.put(line.split())

    def expect(self, *words, timeout=60):
        """The next report of fake_logind.py is WORDS."""
        try:
            line = self.reports.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f'fake_logind.py did not report {words} in {timeout} s')
        assert line == list(words), (line, words)

    def prepare_for_shutdown(self):
        self.logind.send_signal(signal.SIGUSR1)
        self.expect('prepare-for-shutdown')

    def close(self):
        for p in (self.logind, self.bus):
            if p:
                p.terminate()
                p.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


class AutoSaveDaemon(Libvirtd):
    """A libvirtd of its own (not the session's `libvirtd` fixture): its
    sockets in its scratch directory, reached as
    ``qemu+unix:///system?socket=...``, the system bus `bus`, and a
    qemu.conf that saves the running persistent guests at host shutdown
    and, unless `restore`, does not start them again itself at its next
    start (``auto_shutdown_restore``, on by default)."""

    def __init__(self, bus, restore=False):
        self.bus = bus
        super().__init__(scratch_prefix='kvmsave-autosave-')
        self.plain_uri = f'qemu+unix:///system?socket={self.scratch}/sockets/libvirt-sock'
        self.uri = self.kvmsave_uri(self.root)
        self.virsh = Virsh(self.prefix + ['virsh', '-c', self.uri])
        self.plain_virsh = Virsh(['virsh', '-c', self.plain_uri])
        s = self.scratch
        for d in ('etc', 'lib', 'log', 'run', 'sockets'):
            os.makedirs(os.path.join(s, d), mode=0o755)
        with open(os.path.join(s, 'etc', 'libvirtd.conf'), 'w') as fh:
            fh.write(f'unix_sock_dir = "{s}/sockets"\n'
                     f'log_outputs = "3:file:{self.log}"\n')
        with open(os.path.join(s, 'etc', 'qemu.conf'), 'w') as fh:
            fh.write(DEFAULT_QEMU_CONF + 'auto_shutdown_try_save = "persistent"\n' +
                     ('' if restore else 'auto_shutdown_restore = 0\n'))

    def kvmsave_uri(self, root, inner=None):
        inner = inner or f'qemu+unix:///system?socket={self.scratch}/sockets/libvirt-sock'
        return f'kvmsave:///embed?root={root}&uri={inner_uri_param(inner)}'

    def start(self, timeout=120):
        s = self.scratch
        os.makedirs(SOCKET_DIR, mode=0o755, exist_ok=True)
        cmd = in_mount_namespace(
            [(f'{s}/run', SOCKET_DIR), (f'{s}/etc', '/etc/libvirt'),
             (f'{s}/lib', '/var/lib/libvirt'), (f'{s}/log', '/var/log/libvirt')],
            [LIBVIRTD, '--config', f'{s}/etc/libvirtd.conf',
             '--pid-file', f'{s}/libvirtd.pid'])
        with open(os.path.join(s, 'log', 'stderr.log'), 'a') as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=err,
                                         env=daemon_env(s, DBUS_SYSTEM_BUS_ADDRESS=self.bus.address))
        if self not in TEST_DAEMONS:
            TEST_DAEMONS.append(self)
        deadline = time.monotonic() + timeout
        while not self.serving():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'libvirtd did not answer on {self.plain_uri}\n'
                                   + self._log_tails())
            time.sleep(0.2)
        return self

    def quit(self):
        """SIGTERM, as systemd stops the daemon once the shutdown goes on."""
        self.proc.terminate()
        # libvirt gives its threads 30 s, then exits 1: their stacks before.
        stacks = ''
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            stacks = daemon_stacks()
        assert self.proc.wait(60) == 0, stacks or self._log_tails()

    def reboot(self):
        """The host goes down (SIGTERM, its guests saved before) and comes
        back: /run/libvirt emptied, which re-arms the daemon's autostart."""
        self.quit()
        run = os.path.join(self.scratch, 'run')
        shutil.rmtree(run)
        os.makedirs(run, mode=0o755)
        self.start()

    def save_image(self, name):
        """Where the daemon keeps guest NAME's managed save image."""
        return os.path.join(self.scratch, 'lib', 'qemu', 'save', f'{name}.save')


@pytest.fixture
def bus():
    b = SystemBus()
    try:
        yield b.start()
    finally:
        b.close()


def _daemon(bus, restore):
    d = AutoSaveDaemon(bus, restore)
    try:
        yield d.start()
    finally:
        d.stop()


@pytest.fixture
def daemon(bus):
    yield from _daemon(bus, restore=False)


@pytest.fixture
def restoring_daemon(bus):
    yield from _daemon(bus, restore=True)


def managed_save(virsh, name):
    """'yes' or 'no': whether VIRSH's connection says NAME has a managed
    save image."""
    return re.search(r'Managed save:\s+(\w+)', virsh.run('dominfo', name).stdout).group(1)


def wait_for_state(virsh, name, state, timeout=120):
    deadline = time.monotonic() + timeout
    while (now := virsh.domstate(name, reason=True)) != state:
        assert time.monotonic() < deadline, f'{name} still {now}, not {state}'
        time.sleep(0.5)


def start_guest(env, bus, name):
    """A guest of ENV's daemon, started through kvmsave: the QEMU driver
    then holds the host's shutdown back."""
    guest = started_guest(env, name)
    bus.expect('inhibit', 'shutdown', 'delay')
    return guest


def host_shutdown(daemon, bus, guest):
    """The host begins to shut down: the daemon saves GUEST and lets go of
    its lock, so that logind may go on."""
    bus.prepare_for_shutdown()
    wait_for_state(daemon.plain_virsh, guest.name, 'shut off (saved)')
    guest.checkpoint()
    bus.expect('released')


@pytest.fixture
def env(request):
    """A kvmsave root over the test's daemon (`daemon` or
    `restoring_daemon`)."""
    name = 'restoring_daemon' if 'restoring_daemon' in request.fixturenames else 'daemon'
    e = Env(prefix='kvmsave-as-', daemon=request.getfixturevalue(name))
    yield e
    e.cleanup()


def test_daemon_saves_at_shutdown_and_the_guest_continues_through_kvmsave(daemon, bus, env):
    guest = start_guest(env, bus, 'autosave')
    host_shutdown(daemon, bus, guest)
    image = daemon.save_image(guest.name)
    with open(image, 'rb') as fh:
        head = fh.read(16 + 4 * 4)
    assert head[:16] == b'LibvirtQemudSave', head   # stock, complete
    assert int.from_bytes(head[28:32], 'little') == 0   # raw (save_image_format)
    # The daemon's image, which kvmsave counts as the guest's managed save
    # image too, and reads as any stock image.
    assert managed_save(daemon.plain_virsh, guest.name) == 'yes'
    assert managed_save(env.virsh, guest.name) == 'yes'
    assert guest.name in env.virsh.run('list', '--all', '--name',
                                       '--with-managed-save').stdout.split()
    assert guest.name not in env.virsh.run('list', '--all', '--name',
                                           '--without-managed-save').stdout.split()
    assert f'<name>{guest.name}</name>' in \
        env.virsh.run('managedsave-dumpxml', guest.name).stdout
    assert f'<name>{guest.name}</name>' in env.virsh.run('save-image-dumpxml', image).stdout

    # The host goes down and comes back; the guest stays shut off with its
    # image (an inactive guest's state reason is not kept).
    daemon.reboot()
    assert daemon.plain_virsh.domstate(guest.name) == 'shut off'
    assert managed_save(daemon.plain_virsh, guest.name) == 'yes'

    # Through kvmsave, which has no image of its own for the guest, start
    # is the daemon's, which restores from its image.
    env.virsh.run('start', guest.name)
    assert daemon.plain_virsh.domstate(guest.name, reason=True) == 'running (restored)'
    assert not os.path.exists(image)
    bus.expect('inhibit', 'shutdown', 'delay')
    guest.assert_continued()


def test_daemon_stopped_without_a_host_shutdown_saves_nothing(daemon, bus, env):
    # systemctl stop (SIGTERM) alone quits the daemon and leaves QEMU
    # running: the save needs logind's signal.
    guest = start_guest(env, bus, 'no-autosave')
    guest.checkpoint()
    daemon.quit()
    daemon.start()
    assert daemon.plain_virsh.domstate(guest.name) == 'running'
    assert not os.path.exists(daemon.save_image(guest.name))
    guest.assert_continued()


def test_daemon_restores_at_its_next_start_by_default(restoring_daemon, bus, env):
    # auto_shutdown_restore (on by default): the daemon marks the saved
    # guests to start once at its next start, from its own image, before
    # any client of kvmsave comes.
    daemon = restoring_daemon
    guest = start_guest(env, bus, 'autorestore')
    host_shutdown(daemon, bus, guest)
    daemon.reboot()
    wait_for_state(daemon.plain_virsh, guest.name, 'running (restored)')
    assert not os.path.exists(daemon.save_image(guest.name))
    guest.assert_continued()


def test_a_start_refuses_two_managed_save_images_and_keeps_both(daemon, bus, env):
    # Both exist when a guest with kvmsave's image was started by the
    # daemon (booting afresh) and then saved at shutdown: one of them is
    # stale, and kvmsave cannot know which one the user wants.
    guest = start_guest(env, bus, 'both')
    env.virsh.run('managedsave', guest.name)
    bus.expect('released')
    first_boot = guest.boot
    mine = os.path.join(env.root, 'lib', 'kvmsave', 'managed-save', guest.uuid + '.save')
    offset = Console.at_end(guest.console_path).offset
    daemon.plain_virsh.run('start', guest.name)
    guest.wait_booted(since=offset)
    assert guest.boot != first_boot
    bus.expect('inhibit', 'shutdown', 'delay')
    host_shutdown(daemon, bus, guest)
    theirs = daemon.save_image(guest.name)
    mine_before, theirs_before = sha256(mine), sha256(theirs)

    err = env.virsh.fails('start', guest.name)
    assert 'two managed save images' in err, err
    assert daemon.plain_virsh.domstate(guest.name) == 'shut off'
    assert (sha256(mine), sha256(theirs)) == (mine_before, theirs_before)

    # managedsave-remove through kvmsave takes kvmsave's first (here the
    # older state); then start restores the daemon's, the newer.
    env.virsh.run('managedsave-remove', guest.name)
    assert not os.path.exists(mine)
    assert os.path.exists(theirs)
    assert managed_save(env.virsh, guest.name) == 'yes'
    env.virsh.run('start', guest.name)
    assert daemon.plain_virsh.domstate(guest.name, reason=True) == 'running (restored)'
    assert not os.path.exists(theirs)
    assert managed_save(env.virsh, guest.name) == 'no'
    bus.expect('inhibit', 'shutdown', 'delay')
    guest.assert_continued()
