# SPDX-License-Identifier: LGPL-2.1-or-later
"""Debian's own /usr/lib/libvirt/libvirt-guests.sh, unmodified, with URIS
a kvmsave URI: at "host shutdown" (`stop`, ON_SHUTDOWN=suspend,
BYPASS_CACHE=1) it saves both running guests by kvmsave's managed save and
lists them, at "boot" (`start`, ON_BOOT=start) it starts them again from
their images, and each continues with its memory intact; it exits 0 both
times. Over a daemon its progress lines, which a second virsh reads with
`domjobinfo` while `virsh managedsave` runs, show the data saved so far.

The script hard-codes its configuration (/etc/default/libvirt-guests), its
list of saved guests (/var/lib/libvirt/libvirt-guests) and its lock
(/var/lock/libvirt-guests): it runs in a private mount namespace where
scratch directories are bound over those three directories. The test
libvirtd runs outside it, with its own. Debian 13's script (libvirt 11.3)
has the same paths and output; it adds PERSISTENT_ONLY, whose default
for suspend (persistent guests only) is what Debian 12's does."""

import os
import re
import shlex
import subprocess

import pytest

from conftest import started_guest
from kvmsave_harness import in_mount_namespace

pytestmark = pytest.mark.every_release

SCRIPT = '/usr/lib/libvirt/libvirt-guests.sh'
# In the saving virsh, per 4 MiB chunk of the stream (about 26 here): each
# save lasts over 6.5 s, and the script polls the job 5 s into it.
CHUNK_DELAY_MS = '250'
UNITS = {'B': 1, 'KiB': 1 << 10, 'MiB': 1 << 20, 'GiB': 1 << 30}


@pytest.fixture(scope='module')
def guests(env):
    return [started_guest(env, f'lg{i}') for i in (1, 2)]


def managed_image(env, guest):
    return os.path.join(env.root, 'lib', 'kvmsave', 'managed-save', guest.uuid + '.save')


class Host:
    """The script's /etc/default, /var/lib/libvirt and /var/lock: scratch
    directories, the configuration naming only the env's URI."""

    def __init__(self, env, scratch):
        self.env = env
        self.dirs = {d: scratch / d for d in ('default', 'lib', 'lock')}
        for d in self.dirs.values():
            d.mkdir()
        assert not re.search(r'\s', env.uri)       # the script splits URIS at blanks
        (self.dirs['default'] / 'libvirt-guests').write_text(
            f'URIS={shlex.quote(env.uri)}\nON_BOOT=start\nON_SHUTDOWN=suspend\n'
            'BYPASS_CACHE=1\nPARALLEL_SHUTDOWN=0\nSHUTDOWN_TIMEOUT=10\n')
        self.listfile = self.dirs['lib'] / 'libvirt-guests'
        self.lockfile = self.dirs['lock'] / 'libvirt-guests'

    def run(self, action, **environ):
        """`libvirt-guests.sh ACTION` with ENVIRON added: its output."""
        env = {k: v for k, v in os.environ.items() if k != 'LANGUAGE'}
        env.update(environ, LC_ALL='C.UTF-8')
        binds = [(self.dirs['default'], '/etc/default'),
                 (self.dirs['lib'], '/var/lib/libvirt'), (self.dirs['lock'], '/var/lock')]
        wrapper = [self.env.wrapper] if self.env.wrapper else []
        proc = subprocess.run(in_mount_namespace(binds, wrapper + [SCRIPT, action]),
                              env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=600)
        print(f'--- libvirt-guests.sh {action} ---\n{proc.stdout}')
        assert proc.returncode == 0, f'{action} exited {proc.returncode}:\n{proc.stdout}'
        return proc.stdout


def polls(output, name):
    """What the script printed for guest NAME while its save ran: one line
    per poll, between its first line ("...") and its last ("done")."""
    lines = re.findall(rf'^Suspending {re.escape(name)}: (.*)$', output, re.M)
    assert lines[:1] == ['...'] and lines[-1:] == ['done'], output
    return lines[1:-1]


def size(text):
    """Bytes of a size as virsh prints it ("133.422 MiB")."""
    number, unit = text.split()
    return float(number) * UNITS[unit]


@pytest.mark.libvirtd
def test_libvirt_guests_saves_at_shutdown_and_restores_at_boot(env, guests, tmp_path):
    host = Host(env, tmp_path)
    names = sorted(g.name for g in guests)
    if env.plain_virsh:
        # the script saves every running guest of the daemon, which other
        # test sessions may share: none but this test's may run
        running = env.plain_virsh.run('list', '--name').stdout.split()
        assert sorted(running) == names, f'other guests run in the daemon: {running}'
    host.lockfile.touch()           # as the last `start` left it

    out = host.run('stop', KVMSAVE_TEST_CHUNK_DELAY_MS=CHUNK_DELAY_MS)
    for g in guests:
        assert g.state() == 'shut off'
        assert os.path.isfile(managed_image(env, g)), 'no managed save image of kvmsave'
        g.checkpoint()
    saved = env.virsh.run('list', '--all', '--name', '--with-managed-save').stdout.split()
    assert sorted(saved) == names
    uri, *uuids = host.listfile.read_text().split()
    assert uri == env.uri and sorted(uuids) == sorted(g.uuid for g in guests)
    assert not host.lockfile.exists()

    for g in guests:
        seen = polls(out, g.name)
        # embedded, the second virsh cannot open the root the saving one
        # holds ("resource busy ... in use by process N"): the script hides
        # the error and prints "..."
        assert seen, f'the save of {g.name} was over before the first poll'
        if env.backend == 'libvirtd':
            completed = env.virsh.run('domjobinfo', '--completed', g.name).stdout
            total = size(re.search(r'^Data total:\s+(.*)$', completed, re.M)[1])
            done = [size(p) for p in seen if p != '...']
            assert any(0 < b < total for b in done) and done == sorted(done), \
                (g.name, seen, total)

    out = host.run('start')
    for g in guests:
        assert re.search(rf'^Resuming guest {re.escape(g.name)}: done$', out, re.M), out
        g.assert_continued()
        assert g.state() == 'running'
        assert not os.path.exists(managed_image(env, g))
    assert not host.listfile.exists()
    assert host.lockfile.exists()
