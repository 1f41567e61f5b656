# SPDX-License-Identifier: LGPL-2.1-or-later
"""Preflight on restore (issue 5, item 5): an image records the guest's
local disks as QEMU left them (path, size, mtime, inode) and the QEMU
version, machine type and host CPU. Before it starts QEMU, a restore
refuses a disk that changed since the save, and a machine type or CPU
model this host cannot provide; each refusal leaves the guest shut off
and the image as it was. `force='disks'` on <kvmsave:migrateFrom>
overrides the disk check."""

import os
import shutil
import subprocess

import pytest

from conftest import Guest, module_env, sha256
from image_edit import FIELD_DISKS, FIELD_MACHINE, FIELD_XML, field, replace_in_field

# In the suite of every supported Debian release (scripts/suite).
pytestmark = pytest.mark.every_release

preflight_env = module_env('kvmsave-preflight-')


def disk_xml(target, path, fmt):
    return f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='{fmt}'/>
      <source file='{path}'/>
      <target dev='{target}' bus='virtio'/>
    </disk>"""


@pytest.fixture(scope='module')
def disky(preflight_env):
    """A running guest with a raw and a qcow2 disk."""
    env = preflight_env
    disks = os.path.join(env.root, 'disks')
    os.makedirs(disks, mode=0o755)
    raw = os.path.join(disks, 'raw disk.img')
    qcow = os.path.join(disks, 'data.qcow2')
    with open(raw, 'wb') as fh:
        fh.truncate(8 << 20)
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', qcow, '16M'], check=True)
    g = Guest(env, 'disky', extra_devices=disk_xml('vda', raw, 'raw') +
              disk_xml('vdb', qcow, 'qcow2'))
    g.raw, g.qcow = raw, qcow
    g.define()
    g.start()
    return g


@pytest.fixture
def guest(disky):
    disky.ensure_running()
    return disky


def saved(env, guest, name):
    """Save the running guest to a new image NAME; its path."""
    img = env.image(name)
    env.virsh.run('save', guest.name, img)
    guest.checkpoint()
    return img


def refused(env, guest, img, *args, expect):
    """A restore of @img must fail saying @expect, starting nothing and
    leaving the image as it was."""
    before = sha256(img)
    err = env.virsh.fails('restore', img, *args)
    for e in expect:
        assert e in err, err
    assert guest.state() == 'shut off'
    assert sha256(img) == before
    return err


def test_an_image_records_each_disk_and_restores_over_unchanged_ones(preflight_env, guest):
    env = preflight_env
    img = saved(env, guest, 'unchanged.img')
    records = field(img, FIELD_DISKS).splitlines()
    assert [r.split(' ')[0] for r in records] == ['vda', 'vdb'], records
    assert records[0].endswith(' ' + guest.raw.replace(' ', '%20')), records
    info = subprocess.run([env.image_tool, 'info', img], capture_output=True,
                          text=True, check=True).stdout
    assert f"vda '{guest.raw}': {8 << 20} bytes" in info, info
    assert f"vdb '{guest.qcow}'" in info, info
    # the qcow2 disk as QEMU left it when the migration ended: it matches
    st = os.stat(guest.qcow)
    assert f' {st.st_ino:020d} ' in records[1], (records[1], st)
    env.virsh.run('restore', img)
    guest.assert_continued()


def test_a_changed_disk_is_refused_and_force_overrides(preflight_env, guest):
    env = preflight_env
    img = saved(env, guest, 'changed.img')
    st = os.stat(guest.raw)

    # modified: a write changes the mtime
    os.utime(guest.raw, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    refused(env, guest, img, expect=['disk vda', guest.raw, 'was modified at',
                                     'force'])
    # grown (the mtime as it was, as a careful tool would leave it)
    with open(guest.raw, 'r+b') as fh:
        fh.truncate(st.st_size + 4096)
    os.utime(guest.raw, ns=(st.st_atime_ns, st.st_mtime_ns))
    refused(env, guest, img, expect=['disk vda', f'its size is {st.st_size + 4096} bytes'])
    with open(guest.raw, 'r+b') as fh:
        fh.truncate(st.st_size)
    # replaced by a copy: another file, whatever its contents
    copy = guest.raw + '.copy'
    shutil.copy2(guest.raw, copy)
    os.replace(copy, guest.raw)
    refused(env, guest, img, expect=['disk vda', 'it is another file now'])
    # gone
    os.rename(guest.raw, copy)
    refused(env, guest, img, expect=['disk vda', 'cannot be read'])
    os.rename(copy, guest.raw)

    # The copy holds the very same bytes: forcing is safe here.
    xml = env.virsh.run('save-image-dumpxml', '--security-info', img).stdout
    forced = xml.replace('<metadata>', "<metadata><kvmsave:migrateFrom xmlns:kvmsave="
                         f"'urn:kvmsave:domain:1' force='disks'>{img}</kvmsave:migrateFrom>", 1)
    assert forced != xml
    env.virsh.create(forced)
    guest.assert_continued()


def test_a_machine_type_or_cpu_model_this_host_lacks_is_refused(preflight_env, guest):
    env = preflight_env
    img = saved(env, guest, 'host.img')
    machine = field(img, FIELD_MACHINE)
    assert machine and machine.startswith('pc-i440fx-'), machine
    future = machine[:-3] + '9.9'   # same length: the header keeps its size

    bad = env.image('host-machine.img')
    shutil.copyfile(img, bad)
    replace_in_field(bad, FIELD_XML, f'machine="{machine}"', f'machine="{future}"')
    replace_in_field(bad, FIELD_MACHINE, machine, future)
    refused(env, guest, bad, expect=[f"machine type '{future}'",
                                     'restore the image on a host that has it'])

    bad = env.image('host-cpu.img')
    shutil.copyfile(img, bad)
    replace_in_field(bad, FIELD_XML, '>qemu64<', '>qemu99<')
    refused(env, guest, bad, expect=["CPU model 'qemu99'"])

    # the image as saved still restores
    env.virsh.run('restore', img)
    guest.assert_continued()
