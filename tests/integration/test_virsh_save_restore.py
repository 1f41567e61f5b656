# SPDX-License-Identifier: LGPL-2.1-or-later
"""virsh save/restore through kvmsave on a real guest, memory checked."""

import os
import re
import stat

import pytest

from conftest import sha256

# In the suite of every supported Debian release (scripts/suite).
pytestmark = pytest.mark.every_release


def save(guest, path, *args):
    guest.env.virsh.run('save', guest.name, path, *args)
    guest.checkpoint()      # the guest is stopped: its last beat is final


@pytest.mark.libvirtd
def test_layered_driver_serves_the_qemu_driver_apis(env, guest):
    v = env.virsh
    assert v.run('uri').stdout.strip() == env.uri
    assert guest.name in v.run('list', '--name').stdout.split()
    xml = v.run('dumpxml', guest.name).stdout
    assert guest.uuid in xml
    info = v.run('dominfo', guest.name).stdout
    assert re.search(r'Persistent:\s+yes', info)
    assert 'QEMU' in v.run('version').stdout


@pytest.mark.libvirtd
def test_save_then_restore_continues_running_guest(env, guest):
    img = env.image('default.img')
    save(guest, img)
    assert guest.state() == 'shut off'
    st = os.stat(img)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_size % 4096 == 0
    # only the image is left behind
    assert sorted(os.listdir(env.images)) == ['default.img']

    env.virsh.run('restore', img)
    assert guest.state() == 'running'
    guest.assert_continued()


@pytest.mark.libvirtd
def test_paused_guest_is_restored_paused(env, guest):
    img = env.image('paused.img')
    env.virsh.run('suspend', guest.name)
    save(guest, img)
    env.virsh.run('restore', img)
    assert guest.state() == 'paused'
    env.virsh.run('resume', guest.name)
    guest.assert_continued()


def test_save_paused_flag_makes_restore_paused(env, guest):
    img = env.image('flag-paused.img')
    save(guest, img, '--paused')
    env.virsh.run('restore', img)
    assert guest.state() == 'paused'
    env.virsh.run('resume', guest.name)
    guest.assert_continued()


def test_save_running_flag_makes_restore_running(env, guest):
    img = env.image('flag-running.img')
    env.virsh.run('suspend', guest.name)
    save(guest, img, '--running')
    env.virsh.run('restore', img)
    assert guest.state() == 'running'
    guest.assert_continued()


def test_restore_flags_override_the_image(env, guest):
    img = env.image('override.img')
    save(guest, img)
    env.virsh.run('restore', img, '--paused')
    assert guest.state() == 'paused'
    env.virsh.run('resume', guest.name)
    guest.assert_continued()


def test_running_and_paused_together_are_refused(env, guest):
    err = env.virsh.fails('save', guest.name, env.image('both.img'),
                          '--running', '--paused')
    assert 'mutually exclusive' in err or 'exclusive' in err
    assert guest.state() == 'running'
    assert not os.path.exists(env.image('both.img'))


def test_bypass_cache_save_and_restore(env, guest):
    img = env.image('direct.img')
    save(guest, img, '--bypass-cache')
    env.virsh.run('restore', img, '--bypass-cache')
    guest.assert_continued()


def bigger_memory(xml):
    new = re.sub(r'<memory unit=.KiB.>\d+</memory>',
                 "<memory unit='KiB'>524288</memory>", xml)
    new = re.sub(r'<currentMemory unit=.KiB.>\d+</currentMemory>',
                 "<currentMemory unit='KiB'>524288</currentMemory>", new)
    assert new != xml
    return new


def with_description(xml, text):
    return xml.replace('</name>', f'</name>\n  <description>{text}</description>', 1)


def test_save_and_restore_with_compatible_xml(env, guest, tmp_path):
    img = env.image('xml.img')
    dxml = tmp_path / 'save.xml'
    live = env.virsh.run('dumpxml', '--security-info', '--migratable', guest.name).stdout
    dxml.write_text(with_description(live, 'saved with --xml'))
    save(guest, img, '--xml', str(dxml))
    assert 'saved with --xml' in env.virsh.run('save-image-dumpxml', img).stdout

    rxml = tmp_path / 'restore.xml'
    rxml.write_text(with_description(live, 'restored with --xml'))
    env.virsh.run('restore', img, '--xml', str(rxml))
    assert 'restored with --xml' in env.virsh.run('dumpxml', guest.name).stdout
    guest.assert_continued()


def test_incompatible_xml_is_refused_and_changes_nothing(env, guest, tmp_path):
    img = env.image('incompatible.img')
    live = env.virsh.run('dumpxml', '--security-info', '--migratable', guest.name).stdout
    bad = tmp_path / 'bad.xml'
    bad.write_text(bigger_memory(live))
    guest.checkpoint()
    err = env.virsh.fails('save', guest.name, img, '--xml', str(bad))
    assert 'not compatible' in err
    assert guest.state() == 'running'
    assert not os.path.exists(img)
    guest.assert_continued()

    save(guest, img)
    before = sha256(img)
    err = env.virsh.fails('restore', img, '--xml', str(bad))
    assert 'not compatible' in err
    assert guest.state() == 'shut off'
    assert sha256(img) == before
    env.virsh.run('restore', img)
    guest.assert_continued()


def test_save_image_dumpxml_and_define(env, guest, tmp_path):
    img = env.image('define.img')
    save(guest, img)
    xml = env.virsh.run('save-image-dumpxml', img).stdout
    assert guest.uuid in xml and f'<name>{guest.name}</name>' in xml

    new = tmp_path / 'new.xml'
    new.write_text(with_description(xml, 'edited in the image'))
    st_before = os.stat(img)
    env.virsh.run('save-image-define', img, str(new), '--paused')
    assert 'edited in the image' in env.virsh.run('save-image-dumpxml', img).stdout
    assert os.stat(img).st_ino != st_before.st_ino   # rewritten, renamed in place
    assert stat.S_IMODE(os.stat(img).st_mode) == 0o600

    bad = tmp_path / 'bad.xml'
    bad.write_text(bigger_memory(xml))
    before = sha256(img)
    err = env.virsh.fails('save-image-define', img, str(bad))
    assert 'not compatible' in err
    assert sha256(img) == before

    env.virsh.run('restore', img)
    assert guest.state() == 'paused'
    assert 'edited in the image' in env.virsh.run('dumpxml', guest.name).stdout
    env.virsh.run('resume', guest.name)
    guest.assert_continued()


@pytest.mark.libvirtd
def test_restore_of_unknown_uuid_is_transient(env, guest):
    img = env.image('transient.img')
    save(guest, img)
    env.virsh.run('undefine', guest.name)
    try:
        env.virsh.run('restore', img)
        info = env.virsh.run('dominfo', guest.name).stdout
        assert re.search(r'Persistent:\s+no', info)
        guest.assert_continued()
        env.virsh.destroy(guest.name)
        assert env.virsh.run('domstate', guest.name, check=False).returncode != 0
    finally:
        if env.virsh.run('domstate', guest.name, check=False).returncode != 0:
            guest.define()


@pytest.mark.libvirtd
def test_restore_into_shut_off_guest_keeps_its_definition(env, guest):
    img = env.image('persistent.img')
    inactive = env.virsh.run('dumpxml', '--inactive', guest.name).stdout
    save(guest, img)
    env.virsh.run('restore', img)
    info = env.virsh.run('dominfo', guest.name).stdout
    assert re.search(r'Persistent:\s+yes', info)
    assert env.virsh.run('dumpxml', '--inactive', guest.name).stdout == inactive
    if env.plain_virsh:     # what the daemon itself says
        assert env.plain_virsh.run('dumpxml', '--inactive', guest.name).stdout == inactive
    guest.assert_continued()


def test_restored_guest_names_its_image_in_live_xml(env, guest):
    img = env.image('named.img')
    save(guest, img)
    env.virsh.run('restore', img)
    xml = env.virsh.run('dumpxml', guest.name).stdout
    assert re.search(r'<kvmsave:migrateFrom xmlns:kvmsave="urn:kvmsave:domain:1">'
                     + re.escape(img) + '</kvmsave:migrateFrom>', xml)
    # ... only in the live XML, not in the persistent definition
    assert 'migrateFrom' not in env.virsh.run('dumpxml', '--inactive', guest.name).stdout
    guest.assert_continued()


def test_restore_refused_while_guest_runs(env, guest):
    img = env.image('refused.img')
    save(guest, img)
    guest.start()           # a fresh boot of the same guest
    guest.checkpoint()
    err = env.virsh.fails('restore', img)
    assert 'Requested operation is not valid' in err and 'already running' in err
    assert guest.state() == 'running'
    guest.assert_continued()


@pytest.mark.parametrize('name', [
    'with space.img',
    'quote\'and"double.img',
    'back\\slash.img',
    'new\nline.img',
    '$(touch pwned)`id`;&|<>*.img',
])
def test_file_names_with_special_characters(env, guest, name):
    img = env.image(name)
    save(guest, img)
    assert os.path.isfile(img)
    assert not os.path.exists(os.path.join(env.images, 'pwned'))
    assert env.virsh.run('save-image-dumpxml', img).stdout.count(guest.uuid) == 1
    env.virsh.run('restore', img)
    guest.assert_continued()
