# SPDX-License-Identifier: LGPL-2.1-or-later
"""Over a daemon (qemu:///system, the `libvirtd` fixture), a save or restore
runs in the client process that called it; every other kvmsave client of
the daemon sees its progress, its end (--completed) and can abort it, as
with libvirt's own jobs (the job board, plugin/kvmsave_jobboard.h)."""

import json
import os
import threading

import pytest

from conftest import sha256, slowed, started_guest
from test_image_formats import call
from test_jobs import (VIR_DOMAIN_JOB_CANCELLED, VIR_DOMAIN_JOB_COMPLETED,
                       VIR_DOMAIN_JOB_OPERATION_RESTORE,
                       VIR_DOMAIN_JOB_OPERATION_SAVE, VIR_ERR_OPERATION_ABORTED,
                       mid_job)

# In the suite of every supported Debian release (scripts/suite).
pytestmark = pytest.mark.every_release


@pytest.fixture(scope='module')
def env(libvirtd):
    e = libvirtd.env('kvmsave-xjobs-')
    yield e
    e.cleanup()


@pytest.fixture(scope='module')
def xguest_obj(env):
    return started_guest(env, 'xjob', memory_mib=512, data_mib=256)


@pytest.fixture
def xguest(xguest_obj, monkeypatch):
    # A job of some 3 s: another process's polls land in it.
    return slowed(xguest_obj, monkeypatch, 40)


# Another process: polls the job of guest NAME until it has seen one run
# and end, aborting it once it made progress if ABORT; then reads the
# completed job's statistics.
WATCH = r'''
import json, time
dom = conn.lookupByName(NAME)
samples = []
aborted = False
end = time.monotonic() + 60
while time.monotonic() < end:
    try:
        info = dom.jobInfo()
        stats = dom.jobStats()
    except libvirt.libvirtError:
        # a guest shut off has no job of the daemon's to show
        info = [0]
    if info[0] != 0:
        samples.append([info[0], info[3], info[4], info[5], stats.get('operation'),
                        stats.get('time_elapsed', 0)])
        if ABORT and not aborted and info[4] > 0:
            try:
                dom.abortJob()
                aborted = True
            except libvirt.libvirtError as e:
                aborted = str(e)
    elif samples:
        break
    time.sleep(0.02)
try:
    done = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED |
                        libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
except libvirt.libvirtError as e:
    done = {'error': str(e)}
print(json.dumps({'samples': samples, 'aborted': aborted, 'completed': done}))
'''


def watched(env, guest, op, abort=False):
    """Run OP (a libvirt call, in a client of its own) while another client
    watches the job: (OP's error or None, the watcher's findings)."""
    code = (WATCH.replace('NAME', repr(guest.name))
            .replace('ABORT', 'True' if abort else 'False'))
    seen = {}

    def watch():
        out = env.python(code, timeout=120).stdout.strip().splitlines()
        seen.update(json.loads(out[-1]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    err = call(env, op)
    watcher.join()
    return err, seen


def test_another_client_sees_save_and_restore_progress(env, xguest):
    img = env.image('seen.img')
    err, seen = watched(env, xguest, f'conn.lookupByName({xguest.name!r}).save({img!r})')
    assert err is None, err
    assert mid_job(seen['samples'], VIR_DOMAIN_JOB_OPERATION_SAVE), seen
    processed = [s[2] for s in seen['samples']]
    assert processed == sorted(processed), processed
    assert seen['samples'][-1][5] > 0                # time elapsed
    done = seen['completed']
    assert done['type'] == VIR_DOMAIN_JOB_COMPLETED and done['success'] is True, done
    assert done['operation'] == VIR_DOMAIN_JOB_OPERATION_SAVE
    assert done['data_processed'] == done['data_total'] > 256 << 20
    xguest.checkpoint()

    err, seen = watched(env, xguest, f'conn.restore({img!r})')
    assert err is None, err
    assert mid_job(seen['samples'], VIR_DOMAIN_JOB_OPERATION_RESTORE), seen
    assert seen['completed']['type'] == VIR_DOMAIN_JOB_COMPLETED, seen
    assert seen['completed']['operation'] == VIR_DOMAIN_JOB_OPERATION_RESTORE
    xguest.assert_continued()
    # the watcher kept them: virsh, a third process, reads them too
    out = env.virsh.run('domjobinfo', '--completed', xguest.name).stdout
    assert 'Completed' in out and 'Restore' in out, out


def test_abort_from_another_client_keeps_the_guest_running(env, xguest):
    img = env.image('xaborted.img')
    xguest.checkpoint()
    err, seen = watched(env, xguest, f'conn.lookupByName({xguest.name!r}).save({img!r})',
                        abort=True)
    assert seen['aborted'] is True, seen
    assert err and err[0] == VIR_ERR_OPERATION_ABORTED, err
    assert seen['completed']['type'] == VIR_DOMAIN_JOB_CANCELLED, seen
    assert xguest.state() == 'running'
    assert not os.path.exists(img)
    assert [f for f in os.listdir(env.images) if f.startswith('.kvmsave')] == []
    xguest.assert_continued()


def test_abort_from_another_client_of_a_restore_keeps_the_image(env, xguest):
    img = env.image('xrestore.img')
    env.virsh.run('save', xguest.name, img)
    xguest.checkpoint()
    before = sha256(img)
    err, seen = watched(env, xguest, f'conn.restore({img!r})', abort=True)
    assert seen['aborted'] is True, seen
    assert err and err[0] == VIR_ERR_OPERATION_ABORTED, err
    assert xguest.state() == 'shut off'
    assert sha256(img) == before
    env.virsh.run('restore', img)
    xguest.assert_continued()


def test_no_job_is_no_job_for_another_client(env, xguest):
    out = env.virsh.run('domjobinfo', xguest.name).stdout
    assert 'None' in out, out
    err = call(env, f'conn.lookupByName({xguest.name!r}).abortJob()')
    assert err is not None      # the daemon's own answer: no job to abort
