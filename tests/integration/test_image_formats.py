# SPDX-License-Identifier: LGPL-2.1-or-later
"""Image formats and channel counts: raw and zstd chunks, chosen per call or
by the root's configuration; one stream, or QEMU's main stream and 2 or 4
multifd channels (parallel.channels), each a stream of its own in the
image; every combination restores with the guest's memory intact."""

import glob
import json
import os
import re
import subprocess
import tempfile

import pytest


def call(env, code):
    """Run CODE (a libvirt call) in a client; None, or [code, message]."""
    out = env.python(f'''
        import json
        try:
            {code}
            print(json.dumps(None))
        except libvirt.libvirtError as e:
            print(json.dumps([e.get_error_code(), e.get_error_message()]))
    ''').stdout.strip().splitlines()[-1]
    return json.loads(out)


def save_params(env, guest, img, fmt=None, channels=None):
    params = {'file': img}
    if fmt:
        params['image_format'] = fmt
    if channels:
        params['parallel.channels'] = channels
    return call(env, f'conn.lookupByName({guest.name!r}).saveParams({params!r})')


def restore_params(env, img, channels=None):
    params = {'file': img}
    if channels:
        params['parallel.channels'] = channels
    return call(env, f'conn.restoreParams({params!r})')


@pytest.mark.parametrize('fmt', ['raw', 'zstd'])
@pytest.mark.parametrize('channels', [1, 2, 4])
def test_every_format_and_channel_count_round_trips(env, guest, fmt, channels):
    img = env.image(f'rt-{fmt}-{channels}.img')
    before = multifd_dirs()
    assert save_params(env, guest, img, fmt, channels) is None
    guest.checkpoint()
    info = image_info(env, img)
    assert f'streams:       {channels + 1 if channels > 1 else 1}' in info, info
    # one stream carries a page index, for a lazy restore; verify proves it
    # against the stream
    if channels == 1:
        assert re.search(r'page index:    \d+ bytes in room for', info), info
    else:
        assert 'page index:    none' in info, info
    verify = subprocess.run([env.image_tool, 'verify', img], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    # the image decides its streams: another count on restore changes nothing
    assert restore_params(env, img, 5 - channels) is None
    guest.assert_continued()
    # read once, the image is not left in the page cache
    assert cached_bytes(img) < 1 << 20
    # the multifd sockets' private directories are gone
    assert multifd_dirs() == before


def multifd_dirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), 'kvmsave-mfd-*')))


def cached_bytes(path):
    return int(subprocess.run(['fincore', '--bytes', '--noheadings',
                               '--output', 'RES', path], check=True,
                              capture_output=True, text=True).stdout)


def image_info(env, img):
    return subprocess.run([env.image_tool, 'info', img], check=True,
                          capture_output=True, text=True).stdout


def test_bad_channel_count_is_invalid_arg(env, guest):
    img = env.image('ch-bad.img')
    err = call(env, f"conn.lookupByName({guest.name!r}).saveParams("
                    f"{{'file': {img!r}, 'parallel.channels': 17}})")
    assert err[0] == 8 and 'between 1 and 16' in err[1], err
    err = call(env, f"conn.lookupByName({guest.name!r}).saveParams("
                    f"{{'file': {img!r}, 'parallel.channels': '2'}})")
    assert err[0] == 8, err
    assert guest.state() == 'running'
    if os.path.exists(img):
        os.unlink(img)


def test_zstd_image_is_smaller_and_restores(env, guest):
    raw = env.image('fmt-raw.img')
    zst = env.image('fmt-zstd.img')
    assert save_params(env, guest, raw, 'raw') is None
    guest.checkpoint()
    env.virsh.run('restore', raw)
    guest.assert_continued()

    assert save_params(env, guest, zst, 'zstd') is None
    guest.checkpoint()
    # the guest's RAM beyond its random region (kernel, page cache) shrinks
    assert os.path.getsize(zst) < os.path.getsize(raw) * 0.9, \
        (os.path.getsize(zst), os.path.getsize(raw))
    verify = env.image_tool
    if os.path.exists(verify):
        import subprocess
        res = subprocess.run([verify, 'verify', zst], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    env.virsh.run('restore', zst)
    guest.assert_continued()


def test_unknown_image_format_is_invalid_arg(env, guest):
    err = save_params(env, guest, env.image('fmt-bad.img'), 'lzma')
    assert err[0] == 8 and 'lzma' in err[1]         # VIR_ERR_INVALID_ARG
    assert not os.path.exists(env.image('fmt-bad.img'))
    assert guest.state() == 'running'


def test_root_configuration_sets_the_default_format(env, guest):
    conf = os.path.join(env.root, 'etc', 'kvmsave.conf')
    raw = env.image('conf-raw.img')
    zst = env.image('conf-zstd.img')
    env.virsh.run('save', guest.name, raw)
    guest.checkpoint()
    env.virsh.run('restore', raw)
    guest.assert_continued()
    with open(conf, 'w') as fh:
        fh.write('# default image format of this root\nimage_format = "zstd"\n')
    try:
        env.virsh.run('save', guest.name, zst)
        guest.checkpoint()
        assert os.path.getsize(zst) < os.path.getsize(raw) * 0.9
        env.virsh.run('restore', zst)
        guest.assert_continued()

        with open(conf, 'w') as fh:
            fh.write('image_format = "lzma"\n')
        err = env.virsh.fails('list')
        assert "invalid image_format 'lzma'" in err and 'kvmsave.conf' in err
    finally:
        os.unlink(conf)
    assert guest.state() == 'running'
