# SPDX-License-Identifier: LGPL-2.1-or-later
"""tools/kvmsave-all: saves every running guest to a directory with a
manifest and progress, in parallel, then restores them; one guest's
failure does not stop the others, and failures exit non-zero."""

import contextlib
import json
import os
import re
import select
import shlex
import signal
import subprocess
import time

import pytest

from conftest import TOP, module_env, slowed, started_guest
from kvmsave_harness import in_this_root

SCRIPT = 'tools/kvmsave-all'


def command(env, *args):
    pre = [env.wrapper] if env.wrapper else []
    return pre + ['/usr/bin/python3', SCRIPT, '-c', env.uri] + [str(a) for a in args]


def save_all(env, *args, timeout=300):
    """Run kvmsave-all from the top of the tree against env.uri."""
    return subprocess.run(command(env, *args), cwd=TOP, capture_output=True,
                          text=True, timeout=timeout)


def manifest(directory):
    with open(os.path.join(directory, 'manifest.json')) as fh:
        return json.load(fh)


def progress(out, guest, op):
    """The percentages printed for `op` of `guest`."""
    return [int(p) for p in re.findall(
        rf'^{re.escape(guest.name)}: {op}: +(\d+)% ', out, re.M)]


@pytest.mark.libvirtd
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

    # The guest boots afresh; a new save replaces the image not restored,
    # which would now run an old copy of it.
    guest.start()
    res = save_all(env, 'save', out_dir)
    assert res.returncode == 0, res
    assert f'{guest.name}: runs again' in res.stdout
    [entry] = manifest(out_dir)['guests']
    assert 'restored' not in entry and entry['saved'] >= manifest(out_dir)['saved']
    guest.checkpoint()
    res = save_all(env, 'restore', out_dir)
    assert res.returncode == 0, res
    guest.assert_continued()


def test_an_unreadable_manifest_is_set_aside_and_the_save_goes_on(env, guest, tmp_path):
    out_dir = tmp_path / 'bad'
    out_dir.mkdir()
    (out_dir / 'manifest.json').write_text('{"version": 1, "guests": [')
    res = save_all(env, 'save', out_dir)
    assert res.returncode == 0, res
    assert 'set aside as' in res.stderr, res.stderr
    [aside] = [f for f in os.listdir(out_dir) if f.startswith('manifest.json.bad-')]
    assert (out_dir / aside).read_text() == '{"version": 1, "guests": ['
    assert [g['name'] for g in manifest(out_dir)['guests']] == [guest.name]
    guest.checkpoint()
    res = save_all(env, 'restore', out_dir)
    assert res.returncode == 0, res
    guest.assert_continued()


def test_a_bad_uri_exits_non_zero(env, tmp_path):
    pre = [env.wrapper] if env.wrapper else []
    res = subprocess.run(pre + ['/usr/bin/python3', SCRIPT, '-c',
                                f'kvmsave:///embed?root={env.root}&bogus=1',
                                'save', str(tmp_path)],
                         cwd=TOP, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res
    assert 'unknown parameter' in res.stderr


# A guest whose save takes seconds, so that Ctrl-C lands while it runs; in
# a root of its own, so that it is the only guest kvmsave-all sees.
big_env = module_env('kvmsave-ex-')


@pytest.fixture
def big(big_env):
    return started_guest(big_env, 'bigguest', memory_mib=1024, data_mib=512)


def test_ctrl_c_cancels_the_running_save_and_the_guest_runs_on(big_env, big, tmp_path,
                                                               monkeypatch):
    out_dir = tmp_path / 'cancelled'
    slowed(big, monkeypatch, 20)        # Ctrl-C lands before the save ends
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
    assert 'cancelling' in out and 'cancelled' in out and 'interrupted' in err, (out, err)
    assert big.state() == 'running'
    assert os.listdir(out_dir) == ['manifest.json']     # no image, no temporary file
    assert manifest(out_dir)['guests'] == []
    big.assert_continued()


# Four guests in a root of their own, for the parallel runs.  The last has
# a disk in a directory of its own, which a test makes read-only.
four_env = module_env('kvmsave-all4-')


@pytest.fixture(scope='module')
def four_obj(four_env):
    disks = os.path.join(four_env.root, 'disks')
    os.makedirs(disks)
    disk = os.path.join(disks, 'd.img')
    with open(disk, 'wb') as fh:
        fh.truncate(8 << 20)
    guests = [started_guest(four_env, f'par{i}') for i in range(3)]
    guests.append(started_guest(four_env, 'par3', extra_devices=f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>"""))
    guests[3].disks = disks
    return guests


@pytest.fixture
def four(four_obj):
    for g in four_obj:
        g.ensure_running()
    return four_obj


def overlap(out, op):
    """The most jobs of `op` that ran at once, from the order of the
    lines: a job starts at "saving to"/"restoring from" and ends at its
    "done" or "failed" line."""
    start = {'save': 'saving to', 'restore': 'restoring from'}[op]
    running = most = 0
    for line in out.splitlines():
        if re.match(rf'\S+: {start} ', line):
            running += 1
            most = max(most, running)
        elif re.match(rf'\S+: {op}: (done in|failed|cancelled)', line):
            running -= 1
    return most


@contextlib.contextmanager
def read_only(directory):
    """DIRECTORY read-only (a read-only bind mount over itself): even root
    cannot open a file in it for writing."""
    subprocess.run(['mount', '--bind', directory, directory], check=True)
    try:
        subprocess.run(['mount', '-o', 'remount,bind,ro', directory], check=True)
        yield
    finally:
        # lazily, and never in place of the test's own failure
        subprocess.run(['umount', '-l', directory])


def test_four_guests_in_parallel_one_failing_restore_spares_the_others(
        four_env, four, tmp_path, monkeypatch):
    out_dir = tmp_path / 'four'
    # each job lasts about a second, so that the jobs that may overlap do
    monkeypatch.setenv('KVMSAVE_TEST_CHUNK_DELAY_MS', '40')
    res = save_all(four_env, '-j', '4', 'save', out_dir)
    assert res.returncode == 0, res
    assert overlap(res.stdout, 'save') > 1, res.stdout
    for g in four:
        assert g.state() == 'shut off'
        g.checkpoint()
        assert progress(res.stdout, g, 'save')[-1] == 100, res.stdout
    assert len(manifest(out_dir)['guests']) == 4
    assert 'saved 4 of 4 guests' in res.stdout

    # The fourth guest's disk cannot be opened for writing: its restore
    # fails, the three others are restored all the same.
    with read_only(four[3].disks):
        res = save_all(four_env, '-j', '2', 'restore', out_dir)
    assert res.returncode == 1, res
    assert 1 < overlap(res.stdout, 'restore') <= 2, res
    assert f'{four[3].name}: restore failed' in res.stderr, res.stderr
    assert 'restored 3 of 4 guests' in res.stdout
    for g in four[:3]:
        assert g.state() == 'running'
        g.assert_continued()
    assert four[3].state() == 'shut off'
    pending = [g['name'] for g in manifest(out_dir)['guests'] if 'restored' not in g]
    assert pending == [four[3].name]

    # Writable again, the next restore brings back only that guest.
    res = save_all(four_env, 'restore', out_dir)
    assert res.returncode == 0, res
    assert 'restored 1 of 1 guests' in res.stdout
    four[3].assert_continued()


def qemu_pid(guest):
    """The pid of the QEMU that runs GUEST."""
    for pid in filter(str.isdigit, os.listdir('/proc')):
        if not in_this_root(pid):
            continue
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as fh:
                args = fh.read().split(b'\0')
        except OSError:
            continue
        if f'guest={guest.name},'.encode() in b','.join(args) + b',':
            return int(pid)
    raise AssertionError(f'no QEMU runs {guest.name}')


def test_a_guest_killed_during_the_saves_does_not_stop_the_others(
        four_env, four, tmp_path, monkeypatch):
    out_dir = tmp_path / 'killed'
    victim = four[1]
    monkeypatch.setenv('KVMSAVE_TEST_CHUNK_DELAY_MS', '100')
    proc = subprocess.Popen(command(four_env, '-j', '4', 'save', out_dir), cwd=TOP,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = ''
    deadline = time.monotonic() + 120
    try:
        line = None
        while line != '' and time.monotonic() < deadline:
            if not select.select([proc.stdout], [], [], 1)[0]:
                continue
            line = proc.stdout.readline()
            seen += line
            if re.match(rf'{re.escape(victim.name)}: save: +\d+% ', line):
                break
        assert re.search(rf'^{re.escape(victim.name)}: save: +\d+% ', seen, re.M), seen
        os.kill(qemu_pid(victim), signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = seen + out
    assert proc.returncode == 1, (out, err)
    assert f'{victim.name}: save failed' in err, err
    assert 'saved 3 of 4 guests' in out, out
    assert [f for f in os.listdir(out_dir) if f.startswith('.kvmsave')] == []
    saved = sorted(g['name'] for g in manifest(out_dir)['guests'])
    assert saved == sorted(g.name for g in four if g is not victim)
    for g in four:
        if g is not victim:
            g.checkpoint()

    res = save_all(four_env, 'restore', out_dir)
    assert res.returncode == 0, res
    for g in four:
        if g is not victim:
            g.assert_continued()
    victim.start()


def environment_lines(text, prefix=''):
    """NAME=value settings, from `Environment=` lines of a unit (prefix
    'Environment=') or from an EnvironmentFile (no prefix)."""
    found = {}
    for line in text.splitlines():
        if line.startswith(prefix) and '=' in line[len(prefix):]:
            name, value = line[len(prefix):].split('=', 1)
            if re.fullmatch(r'[A-Z_]+', name):
                found[name] = value
    return found


def unit_command(env, unit, key, settings):
    """The unit's ExecStart or ExecStop line as systemd runs it: ${NAME}
    from its Environment= defaults and then from its EnvironmentFile
    (SETTINGS), the installed kvmsave-all replaced by the tree's."""
    values = environment_lines(unit, 'Environment=')
    values.update(environment_lines(settings))
    [line] = [ln for ln in unit.splitlines() if ln.startswith(f'{key}=')]
    args = shlex.split(re.sub(r'\$\{(\w+)\}', lambda m: values[m.group(1)],
                              line[len(key) + 1:].lstrip('-')))
    assert os.path.basename(args[0]) == 'kvmsave-all', line
    pre = [env.wrapper] if env.wrapper else []
    return pre + ['/usr/bin/python3', SCRIPT] + args[1:]


def test_the_units_commands_save_the_guests_and_restore_them_at_boot(
        four_env, four, tmp_path):
    with open(os.path.join(TOP, 'systemd', 'kvmsave-guests.service')) as fh:
        unit = fh.read()
    assert 'EnvironmentFile=-/etc/default/kvmsave-guests' in unit
    # a failed restore at boot must leave the unit active, or its stop
    # (the shutdown) would not save the guests
    assert re.search(r'^ExecStart=-/', unit, re.M), unit
    out_dir = tmp_path / 'unit'
    settings = (f'KVMSAVE_URI={four_env.uri}\nKVMSAVE_DIR={out_dir}\n'
                'KVMSAVE_JOBS=2\n')

    def run(key):
        return subprocess.run(unit_command(four_env, unit, key, settings), cwd=TOP,
                              capture_output=True, text=True, timeout=300)

    res = run('ExecStart')              # the first boot: nothing saved yet
    assert res.returncode == 0, res
    assert 'nothing to restore' in res.stdout
    res = run('ExecStop')               # shutdown
    assert res.returncode == 0, res
    assert 'saved 4 of 4 guests' in res.stdout
    assert 1 < overlap(res.stdout, 'save') <= 2, res.stdout
    for g in four:
        assert g.state() == 'shut off'
        g.checkpoint()
    res = run('ExecStart')              # boot
    assert res.returncode == 0, res
    assert 'restored 4 of 4 guests' in res.stdout
    for g in four:
        g.assert_continued()
