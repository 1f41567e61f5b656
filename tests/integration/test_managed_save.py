# SPDX-License-Identifier: LGPL-2.1-or-later
"""Managed save through kvmsave: save, start, force-boot, remove, undefine."""

import json
import os
import re

import pytest

# In the suite of every supported Debian release (scripts/suite).
pytestmark = pytest.mark.every_release


def managed_image(env, guest):
    return os.path.join(env.root, 'lib', 'kvmsave', 'managed-save', guest.uuid + '.save')


def managedsave(env, guest, *args):
    env.virsh.run('managedsave', guest.name, *args)
    guest.checkpoint()


@pytest.mark.libvirtd
def test_managed_save_then_start_restores_and_removes_the_image(env, guest):
    inactive = env.virsh.run('dumpxml', '--inactive', guest.name).stdout
    managedsave(env, guest)
    assert guest.state() == 'shut off'
    if env.plain_virsh:
        # the daemon sees the guest shut off, its definition intact (the
        # image is kvmsave's: libvirtd itself knows of no managed save)
        assert env.plain_virsh.domstate(guest.name) == 'shut off'
        assert env.plain_virsh.run('dumpxml', '--inactive', guest.name).stdout == inactive
    img = managed_image(env, guest)
    assert os.path.isfile(img) and oct(os.stat(img).st_mode & 0o777) == '0o600'
    assert re.search(r'Managed save:\s+yes', env.virsh.run('dominfo', guest.name).stdout)
    listing = env.virsh.run('list', '--all', '--managed-save').stdout
    assert re.search(rf'{guest.name}\s+saved', listing), listing
    assert guest.name in env.virsh.run('list', '--all', '--name',
                                       '--with-managed-save').stdout.split()
    assert guest.name not in env.virsh.run('list', '--all', '--name',
                                           '--without-managed-save').stdout.split()

    env.virsh.run('start', guest.name)
    guest.assert_continued()
    assert not os.path.exists(img)
    assert env.virsh.run('dumpxml', '--inactive', guest.name).stdout == inactive
    assert re.search(r'Managed save:\s+no', env.virsh.run('dominfo', guest.name).stdout)


def test_start_force_boot_discards_the_image(env, guest):
    managedsave(env, guest)
    old_boot = guest.boot
    offset = guest.console.at_end(guest.console_path).offset
    env.virsh.run('start', '--force-boot', guest.name)
    guest.wait_booted(since=offset)
    assert guest.boot != old_boot
    assert not os.path.exists(managed_image(env, guest))


def test_managedsave_remove_then_start_boots(env, guest):
    managedsave(env, guest)
    env.virsh.run('managedsave-remove', guest.name)
    assert not os.path.exists(managed_image(env, guest))
    old_boot = guest.boot
    guest.start()
    assert guest.boot != old_boot


def test_undefine_refused_while_an_image_exists(env, guest):
    managedsave(env, guest)
    err = env.virsh.fails('undefine', guest.name)
    assert 'managed save image exists' in err
    assert os.path.exists(managed_image(env, guest))
    env.virsh.run('undefine', '--managed-save', guest.name)
    assert not os.path.exists(managed_image(env, guest))
    assert env.virsh.run('domstate', guest.name, check=False).returncode != 0
    guest.define()


def test_managed_save_dumpxml_and_define(env, guest, tmp_path):
    managedsave(env, guest)
    xml = env.virsh.run('managedsave-dumpxml', guest.name).stdout
    assert guest.uuid in xml
    new = tmp_path / 'ms.xml'
    new.write_text(xml.replace('</name>', '</name><description>managed edit</description>', 1))
    env.virsh.run('managedsave-define', guest.name, str(new), '--paused')
    assert 'managed edit' in env.virsh.run('managedsave-dumpxml', guest.name).stdout
    env.virsh.run('start', guest.name)
    assert guest.state() == 'paused'
    env.virsh.run('resume', guest.name)
    guest.assert_continued()


def test_managed_save_of_transient_guest_is_refused(env, guest):
    env.virsh.run('undefine', guest.name)      # running: becomes transient
    try:
        err = env.virsh.fails('managedsave', guest.name)
        assert 'transient' in err
        assert guest.state() == 'running'
    finally:
        guest.define()


def test_managed_save_errors_without_an_image(env, guest):
    err = env.virsh.fails('managedsave-dumpxml', guest.name)
    assert 'does not have a managed save image' in err


@pytest.mark.libvirtd
def test_save_params_without_file_is_a_managed_save(env, guest):
    out = env.python(f'''
        import json
        dom = conn.lookupByName({guest.name!r})
        dom.saveParams({{}})
        print(json.dumps(dom.hasManagedSaveImage()))
    ''').stdout.strip().splitlines()[-1]
    assert json.loads(out) == 1
    guest.checkpoint()
    env.virsh.run('start', guest.name)
    guest.assert_continued()
