# SPDX-License-Identifier: LGPL-2.1-or-later
"""examples/save-all.py: saves every running guest to a directory with a
manifest and progress, then restores them; failures exit non-zero."""

import json
import os
import re
import select
import signal
import subprocess
import time

import pytest

from conftest import TOP, module_env, started_guest

SCRIPT = 'examples/save-all.py'


def command(env, *args):
    pre = [env.wrapper] if env.wrapper else []
    return pre + ['/usr/bin/python3', SCRIPT, '-c', env.uri] + [str(a) for a in args]


def save_all(env, *args, timeout=300):
    """Run the example from the top of the tree against env.uri."""
    return subprocess.run(command(env, *args), cwd=TOP, capture_output=True,
                          text=True, timeout=timeout)


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
    # One byte in the middle, in a chunk QEMU is reading by then. (A bad
    # first chunk, before QEMU read anything, makes the restore hang: QEMU
    # waits on a pipe that hung up, and kvmsave waits on QEMU.)
    middle = img.stat().st_size // 2
    with open(img, 'r+b') as fh:
        fh.seek(middle)
        b = fh.read(1)
        fh.seek(middle)
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


# A guest whose save takes seconds, so that Ctrl-C lands while it runs; in
# a root of its own, so that it is the only guest save-all sees.
big_env = module_env('kvmsave-ex-')


@pytest.fixture
def big(big_env):
    return started_guest(big_env, 'bigguest', memory_mib=1024, data_mib=512)


def test_ctrl_c_cancels_the_running_save_and_the_guest_runs_on(big_env, big, tmp_path):
    out_dir = tmp_path / 'cancelled'
    big.checkpoint()
    proc = subprocess.Popen(command(big_env, 'save', out_dir), cwd=TOP, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = ''
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1)
            if not ready:
                continue
            line = proc.stdout.readline()
            seen += line
            if not line or re.search(r': save: +\d+% ', line):
                break
        assert re.search(r': save: +\d+% ', seen), seen
        proc.send_signal(signal.SIGINT)         # as Ctrl-C on a terminal
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = seen + out
    assert proc.returncode == 130, (out, err)
    assert 'cancelling' in out and 'cancelled' in err, (out, err)
    assert big.state() == 'running'
    assert os.listdir(out_dir) == ['manifest.json']     # no image, no temporary file
    assert manifest(out_dir)['guests'] == []
    big.assert_continued()
