# SPDX-License-Identifier: LGPL-2.1-or-later
"""Lifecycle and job events of save and restore, as stock libvirt sends them."""

import os

import libvirt_consts as C
from conftest import job_completed_events, lifecycle_events, slowed, started_guest, tmpfs
from test_preflight import disk_xml


def save_restore_events(env, guest, name, restore):
    """The events of a save to image NAME and of RESTORE (a call, with
    {img!r} for the image), as two lists."""
    img = env.image(name)
    restore = restore.format(img=img)
    evs = lifecycle_events(env, guest, f'''
dom.save({img!r})
settle()
events.append(['mark', 0])
{restore}
''')
    mark = evs.index(('mark', 0))
    return evs[:mark], evs[mark + 1:]


def test_save_sends_stopped_saved_and_restore_started_restored_resumed(env, guest):
    save, restore = save_restore_events(env, guest, 'events.img', 'conn.restore({img!r})')
    assert (C.STOPPED, C.STOPPED_SAVED) in save
    assert (C.STOPPED, C.STOPPED_DESTROYED) not in save
    assert save[-1] == (C.STOPPED, C.STOPPED_SAVED)
    assert restore[0] == (C.STARTED, C.STARTED_RESTORED), restore
    assert all(e[0] != C.SHUTDOWN for e in save), save
    assert restore[-1] == (C.RESUMED, C.RESUMED_FROM_SNAPSHOT), restore
    assert (C.RESUMED, C.RESUMED_UNPAUSED) not in restore, restore
    assert (C.STARTED, C.STARTED_BOOTED) not in restore
    assert all(e[0] != C.SUSPENDED for e in restore), restore
    guest.checkpoint()


def test_paused_restore_ends_with_suspended_restored(env, guest):
    # Stock libvirt 9.0's virDomainRestoreFlags(PAUSED) says SUSPENDED/
    # RESTORED (qemuDomainRestoreInternal starts it with start_paused
    # false); only a start asked paused says SUSPENDED/PAUSED.
    _, restore = save_restore_events(
        env, guest, 'events-paused.img',
        'conn.restoreFlags({img!r}, None, libvirt.VIR_DOMAIN_SAVE_PAUSED)')
    assert restore == [(C.STARTED, C.STARTED_RESTORED),
                       (C.SUSPENDED, C.SUSPENDED_RESTORED)], restore
    env.virsh.run('resume', guest.name)


def test_save_sends_job_completed_with_its_statistics(env, guest):
    # Stock libvirt sends it at the end of a save's migration
    # (qemuMigrationSrcToFile); the inner driver knows nothing of kvmsave's.
    img = env.image('job-event.img')
    jobs = job_completed_events(env, guest, f'''
dom.save({img!r})
wait_jobs(1, 30)
time.sleep(1)
''')
    guest.checkpoint()
    assert len(jobs) == 1, jobs
    job = jobs[0]
    assert job['operation'] == C.JOB_OPERATION_SAVE, job
    assert job['success'] is True, job
    assert job['data_total'] == job['data_processed'] > 0, job
    assert job['data_remaining'] == 0 and job['time_elapsed'] > 0, job
    env.virsh.run('restore', img)
    guest.assert_continued()
    os.unlink(img)


def test_aborted_save_sends_no_job_completed(env, guest, monkeypatch):
    # Stock sends it only once a save's migration succeeded; a save that
    # ends otherwise has only its error.
    slowed(guest, monkeypatch, 100)
    img = env.image('job-event-aborted.img')
    guest.checkpoint()
    jobs = job_completed_events(env, guest, f'''
import threading
def abort():
    while True:
        try:
            if dom.jobInfo()[4] > 0:
                break
        except libvirt.libvirtError:
            pass
        time.sleep(0.01)
    dom.abortJob()
threading.Thread(target=abort, daemon=True).start()
try:
    dom.save({img!r})
    jobs.append({{'saved': True}})
except libvirt.libvirtError as e:
    jobs.append({{'error': e.get_error_code()}})
time.sleep(1)
''')
    assert jobs == [{'error': C.VIR_ERR_OPERATION_ABORTED}], jobs
    assert not os.path.exists(img)
    assert guest.state() == 'running'
    guest.assert_continued()


def test_inner_drivers_own_job_completed_comes_through(env):
    # A backup is the QEMU driver's job, not kvmsave's: its event
    # (qemu_backup.c) must reach kvmsave's clients as the driver sent it.
    disk = os.path.join(env.root, 'backup-disk.img')
    with open(disk, 'wb') as fh:
        fh.truncate(8 << 20)
    g = started_guest(env, 'backup', extra_devices=disk_xml('vda', disk, 'raw'))
    try:
        jobs = job_completed_events(env, g, '''
dom.backupBegin('<domainbackup/>', None)
wait_jobs(1, 60)
''')
        assert len(jobs) == 1, jobs
        assert jobs[0]['operation'] == C.JOB_OPERATION_BACKUP, jobs
        assert jobs[0]['success'] is True, jobs
        copies = [f for f in os.listdir(env.root) if f.startswith('backup-disk.img.')]
        assert len(copies) == 1, os.listdir(env.root)
    finally:
        env.virsh.run('destroy', g.name, check=False)
        env.virsh.run('undefine', g.name, check=False)


def test_save_refused_for_space_never_pauses(env, guest, tmp_path):
    # The guest's 256 MiB of RAM cannot fit in 16 MiB: refused before the
    # pause, so no event at all.  (A disk that fills up mid-save: test_jobs.)
    with tmpfs(tmp_path / 'small', 'size=16m') as small:
        img = str(small / 'full.img')
        evs = lifecycle_events(env, guest, f'''
try:
    dom.save({img!r})
    events.append(['saved', 0])
except libvirt.libvirtError as e:
    events.append(['error', e.get_error_code()])
''')
        assert evs == [('error', C.VIR_ERR_OPERATION_FAILED)], evs
        assert os.listdir(small) == []
        assert guest.state() == 'running'
