"""examples/save-all.py: saves every running guest to a directory with a
manifest and progress, then restores them; failures exit non-zero."""

import json
import os
import re
import subprocess

from conftest import TOP

SCRIPT = 'examples/save-all.py'


def save_all(env, *args, timeout=300):
    """Run the example from the top of the tree against env.uri."""
    pre = [env.wrapper] if env.wrapper else []
    cmd = pre + ['/usr/bin/python3', SCRIPT, '-c', env.uri] + [str(a) for a in args]
    return subprocess.run(cmd, cwd=TOP, capture_output=True, text=True,
                          timeout=timeout)


def manifest(directory):
    with open(os.path.join(directory, 'manifest.json')) as fh:
        return json.load(fh)


def progress(out, guest, op):
    """The percentages printed for `op` of `guest`."""
    return [int(p) for p in re.findall(
        rf'^{re.escape(guest.name)}: {op}: +(\d+)% ', out, re.M)]


def test_save_all_then_restore_all(env, guest, tmp_path):
    out_dir = tmp_path / 'saved'

    res = save_all(env, 'save', out_dir)
    assert res.returncode == 0, res
    assert guest.state() == 'shut off'
    guest.checkpoint()

    m = manifest(out_dir)
    assert m['version'] == 1 and m['uri'] == env.uri
    [entry] = m['guests']
    assert entry['name'] == guest.name and entry['uuid'] == guest.uuid
    assert entry['state'] == 'running' and entry['persistent'] is True
    assert 'restored' not in entry
    img = out_dir / entry['image']
    assert img.is_file() and oct(img.stat().st_mode & 0o777) == '0o600'
    assert [f for f in os.listdir(out_dir) if f.startswith('.kvmsave')] == []
    assert sorted(os.listdir(out_dir)) == sorted(['manifest.json', entry['image']])
    pct = progress(res.stdout, guest, 'save')
    assert pct and pct[-1] == 100 and pct == sorted(pct), res.stdout
    assert f'saved 1 of 1 guests to {out_dir}' in res.stdout

    res = save_all(env, 'restore', out_dir)
    assert res.returncode == 0, res
    guest.assert_continued()
    assert guest.state() == 'running'
    pct = progress(res.stdout, guest, 'restore')
    assert pct and pct[-1] == 100 and pct == sorted(pct), res.stdout
    assert f'{guest.name}: running' in res.stdout
    assert 'restored' in manifest(out_dir)['guests'][0]
    assert img.is_file()            # the image is kept; the manifest says it served

    # Nothing left to restore: a second restore does not touch the guest.
    res = save_all(env, 'restore', out_dir)
    assert res.returncode == 0, res
    assert 'nothing left to restore' in res.stdout
    assert guest.state() == 'running'


def test_a_paused_guest_comes_back_paused(env, guest, tmp_path):
    out_dir = tmp_path / 'paused'
    env.virsh.run('suspend', guest.name)
    res = save_all(env, 'save', out_dir)
    assert res.returncode == 0, res
    guest.checkpoint()
    assert manifest(out_dir)['guests'][0]['state'] == 'paused'

    res = save_all(env, 'restore', out_dir)
    assert res.returncode == 0, res
    assert f'{guest.name}: paused' in res.stdout
    assert guest.state() == 'paused'
    env.virsh.run('resume', guest.name)
    guest.assert_continued()


def test_restore_without_a_manifest_fails(env, guest, tmp_path):
    res = save_all(env, 'restore', tmp_path)
    assert res.returncode == 1, res
    assert 'manifest.json does not exist' in res.stderr
    assert guest.state() == 'running'


def test_a_corrupt_image_fails_the_restore_and_keeps_the_manifest_entry(env, guest, tmp_path):
    out_dir = tmp_path / 'corrupt'
    res = save_all(env, 'save', out_dir)
    assert res.returncode == 0, res
    guest.checkpoint()
    entry = manifest(out_dir)['guests'][0]
    img = out_dir / entry['image']
    with open(img, 'r+b') as fh:          # one byte of chunk 0's data
        fh.seek(1 << 20)
        b = fh.read(1)
        fh.seek(1 << 20)
        fh.write(bytes([b[0] ^ 0xff]))

    res = save_all(env, 'restore', out_dir)
    assert res.returncode == 1, res
    assert f'{guest.name}: restore failed' in res.stderr
    assert 'checksum mismatch' in res.stderr, res.stderr
    assert guest.state() == 'shut off'
    assert 'restored' not in manifest(out_dir)['guests'][0]

    # Another save into the same directory is refused while the manifest
    # lists an image not restored; the (rebooted) guest is not touched.
    guest.start()
    res = save_all(env, 'save', out_dir)
    assert res.returncode == 1, res
    assert 'still lists images not restored' in res.stderr
    assert guest.state() == 'running'


def test_a_bad_uri_exits_non_zero(env, tmp_path):
    pre = [env.wrapper] if env.wrapper else []
    res = subprocess.run(pre + ['/usr/bin/python3', SCRIPT, '-c',
                                f'kvmsave:///embed?root={env.root}&bogus=1',
                                'save', str(tmp_path)],
                         cwd=TOP, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res
    assert 'unknown parameter' in res.stderr
