# SPDX-License-Identifier: LGPL-2.1-or-later
"""Bad input gets a clear error and loses nothing: guest fine, images intact."""

import os
import shutil
import subprocess

import pytest

from conftest import sha256, tmpfs



@pytest.fixture(scope='module')
def good_image(env, guest_obj):
    """A complete image of the module's guest (which keeps running)."""
    g = guest_obj
    g.ensure_running()
    img = env.image('good.img')
    env.virsh.run('save', g.name, img)
    g.checkpoint()
    env.virsh.run('restore', img)
    g.assert_continued()
    return img


def test_unwritable_directory(env, guest, tmp_path):
    with tmpfs(tmp_path / 'ro', 'ro,size=1m') as ro:
        guest.checkpoint()
        err = env.virsh.fails('save', guest.name, str(ro / 'x.img'))
        assert 'cannot create a save image in directory' in err
        assert 'Read-only file system' in err
        assert guest.state() == 'running'
        guest.assert_continued()


def test_save_refused_before_pausing_when_the_disk_cannot_hold_the_guest(env, guest, tmp_path):
    # 256 MiB of guest RAM may need up to 320 MiB; the tmpfs has 64.
    with tmpfs(tmp_path / 'small', 'size=64m') as small:
        old = small / 'old.img'
        old.write_bytes(os.urandom(1 << 20))
        before = sha256(old)
        guest.checkpoint()
        err = env.virsh.fails('save', guest.name, str(old))
        assert 'not enough free space for save image' in err, err
        assert "the guest's 256 MiB of RAM may need up to 320 MiB" in err, err
        assert 'free some space or save elsewhere' in err, err
        assert os.listdir(small) == ['old.img']
        assert sha256(old) == before
        assert guest.state() == 'running'
        guest.assert_continued()


def test_target_is_a_directory(env, guest):
    d = env.image('a-directory')
    os.mkdir(d)
    guest.checkpoint()
    err = env.virsh.fails('save', guest.name, d)
    assert 'is a directory' in err
    assert os.listdir(d) == []
    assert guest.state() == 'running'
    guest.assert_continued()


def test_existing_image_untouched_when_save_fails(env, guest, good_image, tmp_path):
    target = env.image('keep.img')
    shutil.copyfile(good_image, target)
    before = sha256(target)
    live = env.virsh.run('dumpxml', '--migratable', guest.name).stdout
    bad = tmp_path / 'bad.xml'
    bad.write_text(live.replace(guest.uuid, '00000000-0000-4000-8000-000000000001'))
    guest.checkpoint()
    err = env.virsh.fails('save', guest.name, target, '--xml', str(bad))
    assert 'not compatible' in err
    assert sha256(target) == before
    assert sorted(f for f in os.listdir(env.images) if f.startswith('.')) == []
    assert guest.state() == 'running'
    guest.assert_continued()


def test_nonexistent_image(env, guest):
    err = env.virsh.fails('restore', env.image('does-not-exist.img'))
    assert 'No such file or directory' in err
    assert guest.state() == 'running'


def fresh_image(env, guest, name):
    """Save the guest (stopping it) and note where it stopped."""
    img = env.image(name)
    env.virsh.run('save', guest.name, img)
    guest.checkpoint()
    return img


def test_truncated_image_is_refused_before_the_guest_runs(env, guest):
    img = fresh_image(env, guest, 'to-truncate.img')
    size = os.path.getsize(img)
    for cut in (10, 4096, 4096 + 100, size // 2, size - 4096, size - 1):
        bad = env.image(f'truncated-{cut}.img')
        with open(img, 'rb') as src, open(bad, 'wb') as dst:
            dst.write(src.read(cut))
        err = env.virsh.fails('restore', bad)
        assert 'truncated' in err or 'incomplete' in err, err
        assert guest.state() == 'shut off'
    # nothing was lost: the complete image brings the guest back
    env.virsh.run('restore', img)
    guest.assert_continued()


def test_flipped_byte_is_refused_and_image_kept(env, guest):
    img = fresh_image(env, guest, 'to-flip.img')
    bad = env.image('flipped.img')
    shutil.copyfile(img, bad)
    size = os.path.getsize(bad)
    with open(bad, 'r+b') as fh:
        fh.seek(size // 2)
        b = fh.read(1)
        fh.seek(size // 2)
        fh.write(bytes([b[0] ^ 0x01]))
    before = sha256(bad)
    err = env.virsh.fails('restore', bad)
    assert 'checksum mismatch' in err and 'chunk' in err, err
    assert guest.state() == 'shut off'
    assert sha256(bad) == before
    env.virsh.run('restore', img)
    guest.assert_continued()


def test_bad_first_chunk_fails_instead_of_hanging(env, guest):
    """QEMU never notices a stream that ends before it began to read; the
    restore must fail on the feeder's error, not wait forever."""
    img = fresh_image(env, guest, 'first-chunk.img')
    bad = env.image('first-chunk-bad.img')
    shutil.copyfile(img, bad)
    with open(bad, 'r+b') as fh:
        fh.seek(12)
        chunk0 = int.from_bytes(fh.read(4), 'little')   # the header's size
        fh.seek(chunk0 + 32 + 100)      # inside chunk 0's payload
        b = fh.read(1)
        fh.seek(chunk0 + 32 + 100)
        fh.write(bytes([b[0] ^ 0x20]))
    res = env.virsh.run('restore', bad, check=False, timeout=120)
    assert res.returncode != 0
    assert 'chunk 0' in res.stderr and 'checksum mismatch' in res.stderr, res.stderr
    assert guest.state() == 'shut off'
    env.virsh.run('restore', img)
    guest.assert_continued()


def test_foreign_file_is_refused(env, guest):
    foreign = env.image('foreign.img')
    with open(foreign, 'w') as fh:
        fh.write('this is not a save image\n' * 1000)
    err = env.virsh.fails('restore', foreign)
    assert 'not a kvmsave save image' in err
    err = env.virsh.fails('save-image-dumpxml', foreign)
    assert 'not a kvmsave save image' in err
    assert guest.state() == 'running'


def test_kvmsave_image_tool_verifies_images(env, good_image):
    tool = env.image_tool
    info = subprocess.run([tool, 'info', good_image], capture_output=True, text=True)
    assert info.returncode == 0 and 'kvmsave image 1.5' in info.stdout, info.stdout
    assert 'streams:       1' in info.stdout, info.stdout
    ok = subprocess.run([tool, 'verify', good_image], capture_output=True, text=True)
    assert ok.returncode == 0 and 'every checksum verified' in ok.stdout
    bad = env.image('verify-bad.img')
    shutil.copyfile(good_image, bad)
    with open(bad, 'r+b') as fh:
        fh.seek(os.path.getsize(bad) // 3)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0x80]))
    res = subprocess.run([tool, 'verify', bad], capture_output=True, text=True)
    assert res.returncode == 1 and 'checksum mismatch' in res.stderr


def test_no_libvirt_warnings_on_the_terminal(env, guest):
    img = env.image('quiet.img')
    # A stale label timestamp makes libvirt warn while it restores labels
    # in a child it forks (where its log outputs are reset) when the save
    # stops the guest.
    if 'trusted.libvirt.security.timestamp_dac' in os.listxattr(guest.console_path):
        os.setxattr(guest.console_path, 'trusted.libvirt.security.timestamp_dac', b'12345')
    for args in (('save', guest.name, img), ('restore', img),
                 ('list', '--all')):
        res = env.virsh.run(*args)
        assert 'warning' not in res.stderr.lower(), res.stderr
        assert res.stderr.strip() == ''
        if args[0] == 'save':
            guest.checkpoint()
    guest.assert_continued()
    assert os.path.exists(os.path.join(env.root, 'log', 'kvmsave.log'))
