# SPDX-License-Identifier: LGPL-2.1-or-later
"""I/O errors mid-save and mid-restore. This machine's kernel has no
device-mapper (no dm-error target), so an LD_PRELOAD library
(tests/eio/eioshim.c, built by `make check`) makes reads and writes of the
image fail with EIO once some megabytes have gone through, as a failing
disk would. A save fails with an error naming the image, the guest
resumes, no temporary file is left and the older image at the target is
byte-identical; a restore fails before the guest ever runs, leaves it shut
off and the image byte-identical, and the image then restores."""

import os

from conftest import TOP, sha256
from kvmsave_harness import Virsh

# Past the header and trailer, inside the stream.
EIO_AFTER = 8 * 1024 * 1024


def eio_virsh(env, pattern):
    build = os.path.dirname(env.wrapper) if env.wrapper else TOP
    lib = os.path.join(build, 'tests', 'eio', '.libs', 'libkvmsave_eio.so')
    assert os.path.exists(lib), f'{lib} is missing: run make check first'
    return Virsh(env.virsh.prefix, env=dict(os.environ, LD_PRELOAD=lib,
                                             KVMSAVE_EIO_PATTERN=pattern,
                                             KVMSAVE_EIO_AFTER=str(EIO_AFTER)))


def temp_files(env):
    return [f for f in os.listdir(env.images) if f.startswith('.kvmsave-')]


def test_io_error_mid_save_resumes_the_guest_and_keeps_the_old_image(env, guest):
    img = env.image('eio-save.img')
    env.virsh.run('save', guest.name, img)
    env.virsh.run('restore', img)
    old = sha256(img)
    guest.checkpoint()
    # the save's temporary file in the image directory fails
    err = eio_virsh(env, '/.kvmsave-').fails('save', guest.name, img)
    assert 'cannot write save image' in err and 'Input/output error' in err, err
    assert guest.state() == 'running'
    assert sha256(img) == old
    assert temp_files(env) == []
    guest.assert_continued()


def test_io_error_mid_restore_leaves_it_shut_off_and_the_image_intact(env, guest):
    img = env.image('eio-restore.img')
    env.virsh.run('save', guest.name, img)
    guest.checkpoint()
    before = sha256(img)
    err = eio_virsh(env, '/eio-restore.img').fails('restore', img)
    assert 'cannot read save image' in err and 'Input/output error' in err, err
    assert guest.state() == 'shut off'
    assert sha256(img) == before
    env.virsh.run('restore', img)
    guest.assert_continued()
