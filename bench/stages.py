# SPDX-License-Identifier: LGPL-2.1-or-later
"""Where a timed save or restore spent its time, for bench.py.

libvirt's log of each timed virsh (LOG_FILTERS: kvmsave's debug points and
the QMP traffic) is read for its timestamps, and a QemuWatch thread sees
when the guest's QEMU exits and when it is reaped; save_stages and
restore_stages turn those into seconds per stage (bench/README.md,
"Stages").
"""

import datetime
import os
import re
import sys
import threading
import time

# tests/integration's harness (proc_stat), found from any cwd as bench.py does.
_HARNESS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         '..', 'tests', 'integration'))
if _HARNESS not in sys.path:
    sys.path.insert(0, _HARNESS)

import kvmsave_harness as h   # noqa: E402

# libvirt logging for every timed virsh (both tools alike): kvmsave's debug
# points, QMP traffic at info level (commands sent, replies and events), the
# rest at error.  Each step logs to its own file; the stage breakdown is
# read from the timestamps.  A few dozen lines per step.
LOG_FILTERS = '1:kvmsave 2:qemu.qemu_monitor 4:*'


_LOG_LINE = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\+0000: \d+: (\w+) : (\w+):\d+ : (.*)$')
_EXECUTE = re.compile(r'QEMU_MONITOR_SEND_MSG: .*?"execute":"([^"]+)"')
_EVENT = re.compile(r'QEMU_MONITOR_RECV_EVENT: .*?"event": "([A-Z_]+)"(?:, "data": \{"status": "(\w+)")?')


def _log_time(stamp):
    return datetime.datetime.strptime(stamp, '%Y-%m-%d %H:%M:%S.%f').replace(
        tzinfo=datetime.timezone.utc).timestamp()


def log_markers(path):
    """(time, marker) for each line of interest, in order.

    Markers: 'send:<command>', 'event:<EVENT>' or 'event:MIGRATION:<status>',
    'close' (libvirt closed the monitor: QEMU is gone), and kvmsave's debug
    points 'ks:paused' (header written), 'ks:stream-done', 'ks:image-done',
    'ks:stopped'.
    """
    out = []
    try:
        fh = open(path, errors='replace')
    except FileNotFoundError:
        return out
    with fh:
        for line in fh:
            m = _LOG_LINE.match(line)
            if not m:
                continue
            t = _log_time(m.group(1))
            msg = m.group(4)
            if 'QEMU_MONITOR_SEND_MSG' in msg:
                e = _EXECUTE.search(msg)
                if e:
                    out.append((t, 'send:' + e.group(1)))
            elif 'QEMU_MONITOR_RECV_EVENT' in msg:
                e = _EVENT.search(msg)
                if e:
                    out.append((t, 'event:' + e.group(1) + (':' + e.group(2) if e.group(2) else '')))
            elif 'QEMU_MONITOR_CLOSE' in msg:
                out.append((t, 'close'))
            elif m.group(3) == 'kvmsaveSaveDomain':
                if msg.startswith('header written'):
                    out.append((t, 'ks:paused'))
                elif msg.startswith("QEMU's stream is complete"):
                    out.append((t, 'ks:stream-done'))
                elif msg.startswith('image ') and 'complete, stopping' in msg:
                    out.append((t, 'ks:image-done'))
                elif msg.startswith('guest stopped'):
                    out.append((t, 'ks:stopped'))
    return out


def _first(markers, name, after=None):
    for t, m in markers:
        if m == name and (after is None or t >= after):
            return t
    return None


def _segments(points):
    """[(name, t)...] in order -> {segment: seconds}; a missing point
    merges its segment into the next one."""
    known = [(n, t) for n, t in points if t is not None]
    out = {}
    for (a, ta), (b, tb) in zip(known, known[1:]):
        out[b] = round(max(tb - ta, 0.0), 4)
    return out


def save_stages(path, run, qemu):
    """Where a save's time went (seconds per stage).

    connect: virsh start, connection, reconnect to QEMU, up to QMP "stop"
    pause:   "stop" to "migrate" (getfd, migration parameters)
    stream:  "migrate" to QEMU's MIGRATION "completed" event
    finish:  completed to QEMU's exit (it is a zombie): the image finished
             (kvmsave: poll lag, thread join, fdatasync, rename, fsync of the
             directory) and QEMU killed
    reap:    QEMU a zombie until its parent (PID 1: QEMU daemonizes) reaps it;
             libvirt's kill waits for that (`virProcessKillPainfully`)
    exit:    the rest of libvirt's cleanup and virsh's exit
    finish.poll, finish.sync (kvmsave only, part of finish): QEMU done to
             kvmsave noticing it, and from there to the image committed.
    `qemu` is a QemuWatch of the guest's QEMU during the save.
    """
    mk = log_markers(path)
    stop = _first(mk, 'send:stop')
    migrate = _first(mk, 'send:migrate', stop)
    done = _first(mk, 'event:MIGRATION:completed', migrate)
    seg = _segments([('start', run.t0), ('connect', stop), ('pause', migrate), ('stream', done),
                     ('finish', qemu.zombie), ('reap', qemu.gone), ('exit', run.t1)])
    sd = _first(mk, 'ks:stream-done', done)
    img = _first(mk, 'ks:image-done', sd)
    if done and sd and img:
        seg['finish.poll'] = round(sd - done, 4)
        seg['finish.sync'] = round(img - sd, 4)
    return seg


class QemuWatch(threading.Thread):
    """Watches a QEMU process: when it exits (zombie) and when it is gone.

    Polls /proc/PID/stat every 2 ms.  A process reaped at once
    counts as a zombie for no time.
    """

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.zombie = None
        self.gone = None
        self._halt = threading.Event()

    def run(self):
        path = f'/proc/{self.pid}/stat'
        while not self._halt.is_set():
            st = h.proc_stat(path)
            if not st:
                self.gone = time.time()
                if self.zombie is None:
                    self.zombie = self.gone
                return
            state = st[1][0]
            if state in ('Z', 'X') and self.zombie is None:
                self.zombie = time.time()
            time.sleep(0.002)

    def finish(self):
        self._halt.set()
        self.join()
        return self


def restore_stages(path, run):
    """Where a restore's time went (seconds per stage).

    launch: virsh start, connection, QEMU started and its monitor up
            (first "qmp_capabilities")
    setup:  to "migrate-incoming" (or to the stream's start)
    stream: "migrate-incoming" to the MIGRATION "completed" event
    resume: completed to the RESUME event ("cont")
    exit:   to the end of the virsh process
    """
    mk = log_markers(path)
    qmp = _first(mk, 'send:qmp_capabilities')
    inc = _first(mk, 'send:migrate-incoming', qmp)
    done = _first(mk, 'event:MIGRATION:completed', qmp)
    resume = _first(mk, 'event:RESUME', done)
    return _segments([('start', run.t0), ('launch', qmp), ('setup', inc), ('stream', done),
                      ('resume', resume), ('exit', run.t1)])
