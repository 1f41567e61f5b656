# SPDX-License-Identifier: LGPL-2.1-or-later
"""Faults over a libvirtd (issue 5, items 1 and 4, "over libvirtd"): the
client killed (SIGKILL) at random points of saves and restores of a guest
of the daemon, and jobs of one guest from kvmsave clients of two different
roots at once. The daemon keeps its QEMUs when a client dies; the next
kvmsave connection to it recovers the job from the host's journal
(/run/kvmsave/jobs), whatever its root.

Fewer kill trials than in embedded mode (test_kill.py), to keep the suite
within its time: KVMSAVE_DAEMON_KILL_TRIALS (default 5) per operation,
seeded as there (KVMSAVE_KILL_SEED)."""

import os
import random
import subprocess
import time

import pytest

from conftest import sha256, started_guest
from test_kill import (SEED, after_killed_restore, after_killed_save, killed,
                       recoveries, timed)

TRIALS = int(os.environ.get('KVMSAVE_DAEMON_KILL_TRIALS', '5'))
HOST_JOBS = '/run/kvmsave/jobs'


@pytest.fixture(scope='module')
def denv(libvirtd):
    e = libvirtd.env('kvmsave-dfault-')
    yield e
    e.cleanup()


@pytest.fixture(scope='module')
def other(libvirtd):
    """A second kvmsave root over the same daemon."""
    e = libvirtd.env('kvmsave-dother-')
    yield e
    e.cleanup()


@pytest.fixture(scope='module')
def dguest(denv):
    return started_guest(denv, 'dkill', memory_mib=256, data_mib=64)


def leftovers(env):
    """Temporary images, journals, and what a killed job showed other
    clients (a running job's status, an abort request): the next
    connection's recovery removes them all."""
    tmp = [f for f in os.listdir(env.images) if f.startswith('.kvmsave-')]
    if not os.path.isdir(HOST_JOBS):
        return tmp
    board = os.path.join(HOST_JOBS, 'board')
    for f in os.listdir(board) if os.path.isdir(board) else []:
        with open(os.path.join(board, f)) as fh:
            if f.endswith('.abort') or 'ended=false' in fh.read():
                tmp.append(f'board/{f}')
    return tmp + [f for f in os.listdir(HOST_JOBS) if f != 'board']


def slow_save(env, guest, img):
    """A save of GUEST to IMG that takes seconds (200 ms per chunk)."""
    return subprocess.Popen(env.virsh.prefix + ['save', guest.name, img],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, KVMSAVE_TEST_CHUNK_DELAY_MS='200'))


def test_killed_saves_over_libvirtd(denv, dguest):
    rng = random.Random(SEED + 10)
    print(f'seed {SEED} (KVMSAVE_KILL_SEED={SEED} replays this run)')
    dguest.ensure_running()
    calib = denv.image('calibrate.img')
    span = timed(denv, denv.virsh.prefix + ['save', dguest.name, calib]) * 1.1
    denv.virsh.run('restore', calib)
    os.unlink(calib)
    outcomes = []
    for i in range(TRIALS):
        delay = rng.uniform(0.0, span)
        where = f'seed {SEED}, trial {i}, kill after {delay:.3f} s'
        img = denv.image(f'dkill-save-{i}.img')
        dguest.ensure_running()
        dguest.checkpoint()
        rc = killed(denv, denv.virsh.prefix + ['save', dguest.name, img], delay)
        state = dguest.state()      # this connection recovers
        assert leftovers(denv) == [], where
        plain = denv.plain_virsh.domstate(dguest.name)
        assert plain == state, (where, plain, state)
        outcomes.append(after_killed_save(denv, img, rc, state, where))
        dguest.assert_continued()
        print(f'{where}: {outcomes[-1]}')
    print('outcomes:', {o: outcomes.count(o) for o in set(outcomes)})


def test_killed_restores_over_libvirtd(denv, dguest):
    rng = random.Random(SEED + 11)
    print(f'seed {SEED} (KVMSAVE_KILL_SEED={SEED} replays this run)')
    img = denv.image('dkill-restore.img')
    dguest.ensure_running()
    denv.virsh.run('save', dguest.name, img)
    span = timed(denv, denv.virsh.prefix + ['restore', img]) * 1.1
    outcomes = []
    for i in range(TRIALS):
        delay = rng.uniform(0.0, span)
        where = f'seed {SEED}, trial {i}, kill after {delay:.3f} s'
        dguest.ensure_running()
        denv.virsh.run('save', dguest.name, img)
        dguest.checkpoint()
        before = sha256(img)
        rc = killed(denv, denv.virsh.prefix + ['restore', img], delay)
        state = dguest.state()
        assert leftovers(denv) == [], where
        assert sha256(img) == before, where
        # never "paused (starting up)" in the daemon: restored or shut off
        assert denv.plain_virsh.domstate(dguest.name) == state, where
        outcomes.append(after_killed_restore(denv, img, rc, state, where))
        dguest.assert_continued()
        print(f'{where}: {outcomes[-1]}')
    print('outcomes:', {o: outcomes.count(o) for o in set(outcomes)})
    assert recoveries(denv, 'restore') or 'killed, restore undone' not in outcomes


def test_jobs_of_one_guest_exclude_each_other_across_roots(denv, other, dguest):
    """A save through one root while another root's client saves the same
    guest of the daemon: exactly one proceeds."""
    dguest.ensure_running()
    dguest.checkpoint()
    img = denv.image('dexcl.img')
    img2 = other.image('dexcl.img')
    slow = slow_save(denv, dguest, img)
    try:
        # wait until its job holds the guest
        for _ in range(200):
            if os.path.isdir(HOST_JOBS) and any(f.endswith('.job') for f in os.listdir(HOST_JOBS)):
                break
            time.sleep(0.05)
        err = other.virsh.fails('save', dguest.name, img2)
        assert 'another save/restore job is running for this guest' in err, err
        assert not os.path.exists(img2)
    finally:
        out, errs = slow.communicate(timeout=300)
    assert slow.returncode == 0, errs
    assert dguest.state() == 'shut off'
    denv.virsh.run('restore', img)
    dguest.assert_continued()


def test_a_plain_destroy_during_a_save_leaves_no_image(denv, dguest):
    """plain virsh -c qemu:///system does not go through kvmsave: a destroy
    under a running save fails the save, and nothing is left behind."""
    dguest.ensure_running()
    img = denv.image('ddestroy.img')
    slow = slow_save(denv, dguest, img)
    try:
        for _ in range(200):
            if denv.plain_virsh.domstate(dguest.name) == 'paused':
                break
            time.sleep(0.05)
        denv.plain_virsh.run('destroy', dguest.name)
    finally:
        out, errs = slow.communicate(timeout=300)
    assert slow.returncode != 0
    assert not os.path.exists(img)
    assert leftovers(denv) == []
    assert dguest.state() == 'shut off'
