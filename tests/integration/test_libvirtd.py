# SPDX-License-Identifier: LGPL-2.1-or-later
"""kvmsave over a libvirtd (qemu:///system, the `libvirtd` fixture): the
daemon's guests saved and restored through kvmsave and looked at with plain
virsh in between; QEMU reads no path; multifd; which daemon socket
``uri=qemu:///system`` reaches (namespaces with made-up socket
directories); the URI aliases of libvirt.conf."""

import os
import re
import subprocess

import pytest

import libvirt_consts as C
from conftest import lifecycle_events, run_wrapper
from kvmsave_harness import (LIBVIRTD_SOCKET, SOCKET_DIR, SYSTEM_URI,
                             VIRTQEMUD_SOCKET, Virsh, cleanup_root,
                             in_mount_namespace, inner_uri_param, make_root,
                             run_python)
from test_image_formats import image_info, multifd_dirs, restore_params, save_params

# In the suite of every supported Debian release (scripts/suite).
pytestmark = pytest.mark.every_release


@pytest.fixture(scope='module')
def env(libvirtd):
    e = libvirtd.env()
    yield e
    e.cleanup()


def private_dir(env):
    """A directory only root may enter: QEMU's user cannot open what is in it."""
    path = os.path.join(env.root, 'private')
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def qemu_user_can_read(path):
    return subprocess.run(['runuser', '-u', 'libvirt-qemu', '--', 'test', '-r', path],
                          check=False).returncode == 0


def test_plain_virsh_sees_the_guest_saved_and_restored(env, guest):
    plain = env.plain_virsh
    inactive = plain.run('dumpxml', '--inactive', guest.name).stdout
    img = os.path.join(private_dir(env), 'guest.img')

    env.virsh.run('save', guest.name, img)
    guest.checkpoint()
    assert plain.domstate(guest.name) == 'shut off'
    assert re.search(r'Persistent:\s+yes', plain.run('dominfo', guest.name).stdout)
    assert plain.run('dumpxml', '--inactive', guest.name).stdout == inactive
    assert not qemu_user_can_read(img)      # QEMU gets the data, never the path

    env.virsh.run('restore', img)
    assert plain.domstate(guest.name) == 'running'
    assert plain.run('dumpxml', '--inactive', guest.name).stdout == inactive
    assert 'migrateFrom' not in plain.run('dumpxml', '--inactive', guest.name).stdout
    guest.assert_continued()


def test_multifd_save_and_restore(env, guest):
    img = os.path.join(private_dir(env), 'multifd.img')
    before = multifd_dirs()
    assert save_params(env, guest, img, channels=2) is None
    guest.checkpoint()
    assert env.plain_virsh.domstate(guest.name) == 'shut off'
    assert 'streams:       3' in image_info(env, img)
    assert restore_params(env, img) is None
    assert env.plain_virsh.domstate(guest.name) == 'running'
    guest.assert_continued()
    assert multifd_dirs() == before


def test_multifd_restore_through_the_migration_destination_leaves_no_trace(env, guest):
    # The daemon's migration destination starts the QEMU of a multifd
    # restore: no <qemu:commandline>, no taint; kvmsave's clients see a
    # restore's events, the daemon's own clients an incoming migration's.
    img = os.path.join(private_dir(env), 'multifd-trace.img')
    assert save_params(env, guest, img, channels=2) is None
    evs = lifecycle_events(env, guest, f'''
conn.restoreParams({{'file': {img!r}}})
''')
    assert evs == [(C.STARTED, C.STARTED_RESTORED),
                   (C.RESUMED, C.RESUMED_FROM_SNAPSHOT)], evs
    live = env.plain_virsh.run('dumpxml', guest.name).stdout
    assert 'commandline' not in live and 'migrateFrom' in live, live
    assert 'taint' not in env.plain_virsh.run('dominfo', guest.name).stdout
    assert env.plain_virsh.domstate(guest.name, reason=True) == 'running (migrated)'


# ---- which socket uri=qemu:///system reaches ------------------------------

def serving_socket():
    """The system socket of the daemon under test, as a plain client picks it."""
    return VIRTQEMUD_SOCKET if os.path.exists(VIRTQEMUD_SOCKET) else LIBVIRTD_SOCKET


def sockets_namespace(tmp_path, entries, etc=None):
    """Bind mounts for a namespace whose /var/run/libvirt holds only
    `entries`: name -> 'daemon' (a link to the daemon's socket, seen
    through REAL), or 'dead' (a plain file: it exists, nothing answers).
    With `etc`, that directory replaces /etc/libvirt."""
    real, fake = tmp_path / 'real', tmp_path / 'fake'
    real.mkdir()
    fake.mkdir()
    target = real / os.path.basename(serving_socket())
    for name, what in entries.items():
        if what == 'daemon':
            (fake / name).symlink_to(target)
        else:
            (fake / name).write_text('')
    binds = [(SOCKET_DIR, real), (fake, SOCKET_DIR)]
    return binds + ([(etc, '/etc/libvirt')] if etc else [])


def kvmsave_virsh(env, binds, inner=SYSTEM_URI, readonly=False):
    wrapper = run_wrapper()
    uri = env.daemon.kvmsave_uri(env.root, inner)
    return Virsh(in_mount_namespace(binds, ([wrapper] if wrapper else []) +
                                    ['virsh'] + (['-r'] if readonly else []) +
                                    ['-c', uri]))


def plain_virsh(binds):
    return Virsh(in_mount_namespace(binds, ['virsh', '-c', SYSTEM_URI]))


def reaches_daemon(virsh):
    out = virsh.run('version', check=False)
    return out.returncode == 0 and 'Running hypervisor: QEMU' in out.stdout


def test_socket_of_the_modular_daemon_first(env, tmp_path):
    binds = sockets_namespace(tmp_path, {'virtqemud-sock': 'daemon',
                                         'libvirt-sock': 'dead'})
    assert reaches_daemon(kvmsave_virsh(env, binds))
    assert reaches_daemon(plain_virsh(binds))


def test_socket_of_libvirtd_without_a_modular_daemon(env, tmp_path):
    binds = sockets_namespace(tmp_path, {'libvirt-sock': 'daemon'})
    assert reaches_daemon(kvmsave_virsh(env, binds))
    assert reaches_daemon(plain_virsh(binds))


def test_socket_read_only(env, tmp_path):
    binds = sockets_namespace(tmp_path, {'libvirt-sock-ro': 'daemon',
                                         'libvirt-sock': 'dead'})
    assert reaches_daemon(kvmsave_virsh(env, binds, readonly=True))


def test_no_daemon_is_a_clear_error(env, tmp_path):
    binds = sockets_namespace(tmp_path, {})
    err = kvmsave_virsh(env, binds).fails('version')
    assert (f"neither '{VIRTQEMUD_SOCKET}' (virtqemud) nor '{LIBVIRTD_SOCKET}' "
            "(libvirtd) exists; start virtqemud or libvirtd") in err, err


def test_explicit_mode_and_socket_are_respected(env, tmp_path):
    binds = sockets_namespace(tmp_path, {'virtqemud-sock': 'dead',
                                         'libvirt-sock': 'daemon'})
    # auto takes the modular daemon's socket, as a plain client does ...
    for v in (kvmsave_virsh(env, binds), plain_virsh(binds)):
        err = v.fails('version')
        assert f"Failed to connect socket to '{VIRTQEMUD_SOCKET}'" in err, err
    # ... unless the URI says otherwise
    assert reaches_daemon(kvmsave_virsh(env, binds, SYSTEM_URI + '?mode=legacy'))
    alt = tmp_path / 'alt-sock'
    alt.symlink_to(tmp_path / 'real' / os.path.basename(serving_socket()))
    assert reaches_daemon(kvmsave_virsh(env, binds, f'{SYSTEM_URI}?socket={alt}'))
    err = kvmsave_virsh(env, binds, f'{SYSTEM_URI}?socket={tmp_path}/none').fails('version')
    assert f"Failed to connect socket to '{tmp_path}/none'" in err, err


def test_remote_mode_of_libvirt_conf_is_respected(env, tmp_path):
    etc = tmp_path / 'etc'
    etc.mkdir()
    (etc / 'libvirt.conf').write_text('remote_mode = "legacy"\n')
    binds = sockets_namespace(tmp_path, {'virtqemud-sock': 'dead',
                                         'libvirt-sock': 'daemon'}, etc=etc)
    assert reaches_daemon(kvmsave_virsh(env, binds))
    assert reaches_daemon(plain_virsh(binds))


def test_daemon_beside_an_embedded_connection(env, guest):
    """Once a process holds libvirt's QEMU driver (an embedded kvmsave
    connection), a plain qemu:///system would go to that driver; kvmsave's
    inner URI still reaches the daemon."""
    embedded = make_root(prefix='kvmsave-beside-')
    try:
        wrapper = run_wrapper()
        out = run_python([wrapper] if wrapper else [], f'kvmsave:///embed?root={embedded}', f'''
            conn.listAllDomains()       # the embedded QEMU driver is loaded
            daemon = libvirt.open({env.uri!r})
            print(daemon.lookupByName({guest.name!r}).UUIDString())
            daemon.close()
        ''').stdout.split()
        assert out[-1] == guest.uuid
    finally:
        cleanup_root(embedded)


# ---- virsh -c kvmsave: an alias in libvirt.conf ----------------------------

def test_uri_aliases(env, guest, tmp_path):
    embedded = make_root(prefix='kvmsave-alias-')
    etc = tmp_path / 'etc'
    etc.mkdir()
    (etc / 'libvirt.conf').write_text(
        'uri_aliases = [\n'
        f'  "kvmsave=kvmsave:///embed?root={embedded}",\n'
        f'  "kvmsave-system=kvmsave:///embed?root={env.root}'
        f'&uri={inner_uri_param(SYSTEM_URI)}",\n'
        ']\n')
    wrapper = run_wrapper()
    binds = [(etc, '/etc/libvirt')]

    def alias_virsh(alias):
        return Virsh(in_mount_namespace(binds, ([wrapper] if wrapper else []) +
                                        ['virsh', '-c', alias]))
    try:
        v = alias_virsh('kvmsave')
        assert v.run('uri').stdout.strip() == f'kvmsave:///embed?root={embedded}'
        assert v.run('list', '--all').returncode == 0

        v = alias_virsh('kvmsave-system')
        assert v.run('uri').stdout.strip() == env.uri
        img = os.path.join(private_dir(env), 'alias.img')
        v.run('save', guest.name, img)
        guest.checkpoint()
        assert env.plain_virsh.domstate(guest.name) == 'shut off'
        v.run('restore', img)
        guest.assert_continued()
    finally:
        cleanup_root(embedded)


def test_make_install_prints_the_aliases(tmp_path):
    wrapper = run_wrapper()
    if not wrapper:
        pytest.skip('no build tree')
    out = subprocess.run(['make', '-C', os.path.dirname(wrapper), 'install',
                          f'DESTDIR={tmp_path}'],
                         check=True, capture_output=True, text=True).stdout
    assert 'uri_aliases = [' in out, out
    assert '"kvmsave=kvmsave:///embed?root=/var/lib/kvmsave"' in out, out
    assert ('"kvmsave-system=kvmsave:///embed?root=/var/lib/kvmsave-system'
            f'&uri={inner_uri_param(SYSTEM_URI)}"') in out, out
    # it only says so: no libvirt.conf is written
    assert not (tmp_path / 'etc' / 'libvirt').exists()
    assert not any('libvirt.conf' in files for _, _, files in os.walk(tmp_path))
