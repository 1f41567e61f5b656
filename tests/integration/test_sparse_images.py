# SPDX-License-Identifier: LGPL-2.1-or-later
"""kvmsave's own sparse images (image_format "sparse", QEMU 9.0 and later):
QEMU writes its mapped-ram stream into the image itself, from an fdset,
with multifd channels, and with direct-io when the save bypasses the cache;
kvmsave then checksums it block by block. On restore QEMU reads the file
itself while kvmsave checks every block, and the guest runs only once both
are done: a damaged block is refused, the image kept. An older QEMU
refuses the format before the guest is touched."""

import os
import re
import subprocess

import pytest

from conftest import sha256
from kvmsave_harness import qemu_migration, qemu_open_files
from test_corruption import flip
from test_image_formats import call, image_info, restore_params, save_params

QEMU_VERSION = tuple(int(x) for x in re.search(
    r'version (\d+)\.(\d+)',
    subprocess.run(['qemu-system-x86_64', '--version'], capture_output=True,
                   text=True, check=True).stdout).groups())
HAVE_SPARSE = QEMU_VERSION >= (9, 0)
needs_sparse = pytest.mark.skipif(
    not HAVE_SPARSE, reason=f'QEMU {QEMU_VERSION[0]}.{QEMU_VERSION[1]} has no mapped-ram '
    '(test_sparse_save_refused_before_qemu_9 covers it)')
# In the suite of every supported Debian release (scripts/suite): on
# Debian 13 these save and restore sparse images, on Debian 12 the refusal.
pytestmark = pytest.mark.every_release

SAVE_BYPASS_CACHE = 1
MAPPED_OFFSET = 1024 * 1024
BLOCK = 1024 * 1024
OPERATION_FAILED = 9
OPERATION_UNSUPPORTED = 84


def verify(env, img):
    return subprocess.run([env.image_tool, 'verify', img], capture_output=True, text=True)


def held_by_qemu(env, path):
    """The descriptors a QEMU of the root still has open on PATH: an
    fdset left in it keeps the file, even once it is removed."""
    return [f'QEMU {pid} fd {fd}: {target}'
            for pid, fd, target in qemu_open_files(env.root)
            if target.split(' (deleted)')[0] == path]


def data_block(img):
    """The number and offset of a block of the stream that holds data, past
    the first one (the stream's own header)."""
    fd = os.open(img, os.O_RDONLY)
    try:
        off = os.lseek(fd, MAPPED_OFFSET + 8 * BLOCK, os.SEEK_DATA)
    finally:
        os.close(fd)
    return (off - MAPPED_OFFSET) // BLOCK, off


@needs_sparse
@pytest.mark.libvirtd
@pytest.mark.parametrize('channels', [1, 4])
def test_sparse_image_round_trips_with_holes_for_zero_pages(env, guest, channels):
    img = env.image(f'sparse-{channels}.img')
    assert save_params(env, guest, img, 'sparse', channels) is None
    guest.checkpoint()
    info = image_info(env, img)
    assert 'kvmsave image 1.5' in info and 'layout:        sparse' in info, info
    assert f'saved with {channels} multifd channels' in info, info
    # where QEMU put the guest's RAM, read from its stream
    ram = re.search(r'RAM block: +pc\.ram, (\d+) bytes, pages at offset (\d+)', info)
    assert ram and int(ram.group(1)) == guest.memory_mib * 1024 * 1024, info
    assert int(ram.group(2)) > MAPPED_OFFSET and int(ram.group(2)) % BLOCK == 0, info
    assert re.search(r'device state: +\d+ bytes at offset \d+', info), info
    st = os.stat(img)
    # the guest's zero pages are holes: fewer blocks than the size
    assert st.st_blocks * 512 < st.st_size, (st.st_blocks, st.st_size)
    assert verify(env, img).returncode == 0
    # any channel count loads it: QEMU reads the pages at their offsets
    assert restore_params(env, img, 2) is None
    assert guest.state() == 'running'
    guest.assert_continued()
    assert held_by_qemu(env, img) == []


@needs_sparse
def test_sparse_save_and_restore_bypassing_the_cache(env, guest):
    img = env.image('sparse-direct.img')
    assert call(env, f"conn.lookupByName({guest.name!r}).saveParams("
                     f"{{'file': {img!r}, 'image_format': 'sparse', "
                     f"'parallel.channels': 2}}, {SAVE_BYPASS_CACHE})") is None
    guest.checkpoint()
    assert verify(env, img).returncode == 0
    assert call(env, f"conn.restoreParams({{'file': {img!r}}}, "
                     f"{SAVE_BYPASS_CACHE})") is None
    guest.assert_continued()
    # as a guest started afresh: no save stopped early inherits them
    assert qemu_migration(env.wrapper, env.root, guest.name)[1] is False, 'mapped-ram is left on'


@needs_sparse
@pytest.mark.libvirtd
def test_damaged_sparse_block_is_refused_and_the_image_kept(env, guest):
    img = env.image('sparse-damaged.img')
    assert save_params(env, guest, img, 'sparse', 2) is None
    guest.checkpoint()
    block, off = data_block(img)
    flip(img, off + 100)
    damaged = sha256(img)
    res = verify(env, img)
    assert res.returncode == 1 and f'block {block} at offset' in res.stderr, res.stderr

    err = restore_params(env, img)
    assert err and err[0] == OPERATION_FAILED, err
    assert f'block {block} at offset {MAPPED_OFFSET + block * BLOCK}' in err[1], err
    assert 'data checksum mismatch' in err[1], err
    # the guest never ran on it, and the image is as it was
    assert guest.name not in env.virsh.run('list', '--name').stdout.split()
    assert sha256(img) == damaged

    flip(img, off + 100)
    assert restore_params(env, img) is None
    guest.assert_continued()


@needs_sparse
def test_sparse_image_xml_is_redefined_with_its_stream_in_place(env, guest):
    img = env.image('sparse-define.img')
    assert save_params(env, guest, img, 'sparse', 2) is None
    guest.checkpoint()
    xml = env.virsh.run('save-image-dumpxml', img).stdout
    xml = xml.replace('</domain>', '<description>redefined</description></domain>')
    xmlfile = env.image('sparse-define.xml')
    with open(xmlfile, 'w') as fh:
        fh.write(xml)
    env.virsh.run('save-image-define', img, xmlfile)
    assert 'redefined' in env.virsh.run('save-image-dumpxml', img).stdout
    assert verify(env, img).returncode == 0
    st = os.stat(img)
    assert st.st_blocks * 512 < st.st_size, 'the copy lost its holes'
    env.virsh.run('restore', img)
    guest.assert_continued()


@needs_sparse
def test_sparse_managed_save_from_the_root_configuration(env, guest):
    conf = os.path.join(env.root, 'etc', 'kvmsave.conf')
    with open(conf, 'w') as fh:
        fh.write('image_format = "sparse"\n')
    try:
        env.virsh.run('managedsave', guest.name)
        guest.checkpoint()
        managed = [l for l in os.popen(f'find {env.root} -name "*.save"').read().split()]
        env.virsh.run('start', guest.name)
        guest.assert_continued()
        # the image is gone, and no QEMU keeps it open unlinked
        assert managed and not any(os.path.exists(m) for m in managed), managed
        assert [h for m in managed for h in held_by_qemu(env, m)] == []
    finally:
        os.unlink(conf)


@pytest.mark.skipif(HAVE_SPARSE, reason=f'QEMU {QEMU_VERSION[0]}.{QEMU_VERSION[1]} '
                    'has mapped-ram (the tests above save sparse images)')
def test_sparse_save_refused_before_qemu_9(env, guest):
    img = env.image('sparse-old.img')
    err = save_params(env, guest, img, 'sparse')
    assert err and err[0] == OPERATION_UNSUPPORTED, err
    assert 'QEMU 9.0 or later' in err[1] and "'raw' or 'zstd'" in err[1], err
    assert guest.state() == 'running'
    assert not os.path.exists(img)
