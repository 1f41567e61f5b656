"""Image formats: raw and zstd chunks, chosen per call or by the root's
configuration; both restore with the guest's memory intact."""

import json
import os

import pytest


def save_params(env, guest, img, fmt=None):
    params = {'file': img}
    if fmt:
        params['image_format'] = fmt
    out = env.python(f'''
        import json
        dom = conn.lookupByName({guest.name!r})
        try:
            dom.saveParams({params!r})
            print(json.dumps(None))
        except libvirt.libvirtError as e:
            print(json.dumps([e.get_error_code(), e.get_error_message()]))
    ''').stdout.strip().splitlines()[-1]
    return json.loads(out)


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
    verify = env.wrapper and os.path.join(os.path.dirname(env.wrapper), 'tools', 'kvmsave-image')
    if verify and os.path.exists(verify):
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
