# SPDX-License-Identifier: LGPL-2.1-or-later
"""virt-manager, for real: Save (managed save) and Run (restore) of a guest,
embedded and over the test libvirtd (its own connection, beside the
daemon's other clients).

Debian's virt-manager runs under Xvfb on ``kvmsave:///embed?root=DIR``
(through ./run, so it loads the build tree's plugin) and is driven through
the accessibility tree with dogtail (vmm_driver.py).  Only one process at a
time may hold an embedded root: the guest is defined and started with virsh
before virt-manager starts, and checked with virsh after it has exited;
while it runs, the test only reads files (console log, managed-save image).

Screenshots of each step, virt-manager's debug log, the agent's log and the
timings go to tests/artifacts/virt-manager/ (git-ignored).
"""

import json
import os
import re
import shutil
import tempfile
import time

import pytest

from conftest import TOP
from vmm_driver import VirtManagerSession, missing_requirements

ARTIFACTS = os.path.join(TOP, 'tests', 'artifacts', 'virt-manager')

_MISSING = missing_requirements()
pytestmark = pytest.mark.skipif(
    bool(_MISSING), reason='virt-manager test needs the Debian packages '
    + ' '.join(_MISSING) + ' (scripts/packages.txt)')


@pytest.fixture(scope='module')
def artifacts():
    if os.path.isdir(ARTIFACTS):
        shutil.rmtree(ARTIFACTS)
    os.makedirs(ARTIFACTS)
    return ARTIFACTS


def managed_image(env, guest):
    return os.path.join(env.root, 'lib', 'kvmsave', 'managed-save', guest.uuid + '.save')


def vmm_errors(log):
    """virt-manager's ERROR lines (e.g. "Error calling jobinfo" from the
    save progress thread, which it only logs)."""
    return [line for line in log.splitlines() if re.search(r'\] ERROR \(', line)]


@pytest.mark.libvirtd
def test_save_and_run_in_virt_manager(env, guest, artifacts, monkeypatch):
    # 100 ms per 4 MiB chunk in virt-manager's process: its save lasts
    # some 3 s, so that its progress meter, fed by jobInfo, must move.
    monkeypatch.setenv('KVMSAVE_TEST_CHUNK_DELAY_MS', '100')
    timings = {}
    launcher = [env.wrapper] if env.wrapper else []
    workdir = tempfile.mkdtemp(prefix='kvmsave-vmm-')
    img = managed_image(env, guest)
    assert not os.path.exists(img)
    t_total = time.monotonic()
    session = VirtManagerSession(env.uri, workdir, artifacts, launcher=launcher)
    try:
        session.start()
        timings.update(session.timings)

        # The connection opens and lists the running guest.
        conn = session.call('wait_connected', timeout=120)
        timings['connect_s'] = conn['seconds']
        assert session.call('wait_vm', name=guest.name, timeout=60) == 'Running', conn
        timings['selected_by'] = session.call('select_vm', name=guest.name)
        state = session.call('toolbar')
        session.call('settle')
        session.screenshot('01-running.png')
        assert state['Menu/Save'] and not state['Run'], state

        # Save: Shut Down menu > Save, i.e. virDomainManagedSave, with the
        # progress dialog fed by virDomainGetJobInfo.
        saved = session.call('save', name=guest.name, timeout=180,
                             shot_prefix=os.path.join(artifacts, '02-saving'))
        timings['save_s'] = saved['seconds']
        session.call('settle')
        session.screenshot('03-saved.png')
        assert session.call('vm_status', name=guest.name) == 'Saved'
        guest.checkpoint()      # the guest is stopped: its last heartbeat
        assert os.path.isfile(img)
        progress = saved['dialogs'].get('Saving Virtual Machine')
        assert progress, f'no save progress dialog seen: {saved}'
        timings['save_progress'] = progress['fractions']
        # virt-manager polls jobInfo every 0.5 s and starts the meter once
        # dataTotal > 0: a save of some 3 s must have moved it.
        assert progress['max_fraction'] and 'Saving domain to disk' in progress['texts'], \
            progress

        # Saved: the Run button reads "Restore" (hasManagedSaveImage).
        state = session.call('toolbar')
        assert state.get('Restore') is True and 'Run' not in state, state
        assert not state['Menu/Save'], state

        # Run (labelled Restore): virDomainCreate restores the managed save.
        ran = session.call('run', name=guest.name, timeout=180,
                           shot_prefix=os.path.join(artifacts, '04-restoring'))
        timings['restore_s'] = ran['seconds']
        assert ran['button'] == 'Restore', ran
        session.call('settle')
        session.screenshot('05-running-again.png')
        assert not os.path.exists(img)
        # Running again: Save is offered, the Run button is not.  Its label
        # may still read "Restore": virt-manager asks hasManagedSaveImage
        # when the RESUMED event arrives and caches the answer, and the
        # image is removed only when virDomainCreate returns, a few ms
        # later; stock libvirt 9.0 (qemu:///embed) has the same window.
        state = session.call('toolbar')
        run_label = 'Run' if 'Run' in state else 'Restore'
        timings['label_after_restore'] = run_label
        assert state[run_label] is False and state['Menu/Save'], state

        # Close it; only then may virsh use the root again.
        t0 = time.monotonic()
        session.call('quit')
        assert session.wait_vmm_exit(timeout=60) == 0, session.vmm_log_tail()
        timings['quit_s'] = round(time.monotonic() - t0, 2)
        log = session.vmm_log()
        assert not vmm_errors(log), vmm_errors(log)
    except BaseException:
        if session.xvfb is not None and session.env is not None:
            session.screenshot('failure.png')
        raise
    finally:
        session.close()
        shutil.rmtree(workdir, ignore_errors=True)
        timings['total_gui_s'] = round(time.monotonic() - t_total, 2)
        with open(os.path.join(artifacts, 'timings.json'), 'w') as fh:
            json.dump(timings, fh, indent=2)
        print('virt-manager timings:', json.dumps(timings))

    assert guest.state() == 'running'
    assert re.search(r'Managed save:\s+no', env.virsh.run('dominfo', guest.name).stdout)
    guest.assert_continued()
