# SPDX-License-Identifier: LGPL-2.1-or-later
"""What bench.py times after a restore returns: the guest's first
heartbeat, and the end of a lazy restore's job (kvmsave's page server
sending the last page), with the page server's peak RSS."""

import os
import re
import time


def page_server_rss_mib(root):
    """The peak RSS (MiB) of the largest page server of ROOT's lazy
    restores now running, or 0."""
    peak = 0
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as fh:
                argv = fh.read().split(b'\0')
            if not argv[0].endswith(b'kvmsave-pagesrv') or \
                    not any(root.encode() in a for a in argv):
                continue
            with open(f'/proc/{pid}/status') as fh:
                hwm = re.search(r'VmHWM:\s+(\d+) kB', fh.read())
        except OSError:
            continue
        if hwm:
            peak = max(peak, int(hwm.group(1)) / 1024)
    return peak


def lazy_state(side):
    """The state word of the last lazy restore of SIDE's guest, or None."""
    uuid = re.search(r'<uuid>([^<]+)</uuid>', side.xml).group(1)
    try:
        with open(os.path.join(side.root, 'run', 'kvmsave', 'lazy', f'{uuid}.status')) as fh:
            return fh.readline().split()[0]
    except (FileNotFoundError, IndexError):
        return None


def after_restore(side, run, before_n, boot, timeout):
    """What follows the return of a restore, timed from its start: the
    guest's first heartbeat after it (the guest runs its own code again),
    and the end of the restore's job: for a lazy restore the page
    server's last page (its peak RSS too), else the return itself."""
    out = {'restore_done_s': run.seconds, 'pagesrv_rss_mib': 0}
    deadline = time.monotonic() + timeout
    heartbeat = None
    done = not side.lazy
    while (heartbeat is None or not done) and time.monotonic() < deadline:
        if heartbeat is None:
            hb = side.console.last_heartbeat()
            if hb and hb[1] == boot and hb[0] > before_n:
                heartbeat = time.time() - run.t0
        if not done:
            out['pagesrv_rss_mib'] = max(out['pagesrv_rss_mib'],
                                         page_server_rss_mib(side.root))
            state = lazy_state(side)
            if state == 'failed':
                raise RuntimeError(f'{side.label}: the lazy restore failed')
            if state == 'done':
                done = True
                out['restore_done_s'] = time.time() - run.t0
        time.sleep(0.005)
    if heartbeat is None or not done:
        raise RuntimeError(f'{side.label}: no heartbeat or no end of the restore '
                           f'within {timeout}s')
    out['heartbeat_s'] = heartbeat
    return out
