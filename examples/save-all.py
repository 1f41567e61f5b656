#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Save every running guest of a libvirt connection to a directory, and
restore them later, with kvmsave (or any libvirt driver with save/restore).

    save-all.py [-c URI] save DIR       save all active guests into DIR
    save-all.py [-c URI] restore DIR    restore the guests DIR's manifest lists

URI defaults to kvmsave:///embed?root=/var/lib/kvmsave.  `save` writes one
image per guest and DIR/manifest.json naming them; `restore` reads the
manifest, restores each image not restored yet and records that it was.
While a save or restore runs (in a worker thread), the main thread polls
the guest's job and prints its progress.  Ctrl-C cancels the running job
(virDomainAbortJob) and stops.  The exit status is 0 when every guest was
saved (restored), 1 when any failed, 2 for usage errors, 130 after Ctrl-C.

Uninstalled, from the build tree:  ./run /usr/bin/python3 examples/save-all.py ...
"""

import argparse
import json
import os
import re
import signal
import sys
import threading
import time

import libvirt

DEFAULT_URI = 'kvmsave:///embed?root=/var/lib/kvmsave'
MANIFEST = 'manifest.json'
MANIFEST_VERSION = 1
POLL_SECONDS = 0.1


class Failure(Exception):
    """An error that ends the whole run (as opposed to one guest's)."""


def say(*args):
    print(*args, flush=True)


def warn(*args):
    print('save-all:', *args, file=sys.stderr, flush=True)


def libvirt_message(err):
    """The text of a libvirtError (libvirt's own message, code in brackets)."""
    return f'{err.get_error_message()} [code {err.get_error_code()}]'


# ---------------------------------------------------------------------------
# libvirt setup
# ---------------------------------------------------------------------------

def start_event_loop():
    """libvirt needs an event loop in the client for embedded drivers such
    as kvmsave:///embed (and for keepalive and events): register the
    default implementation, then run it in a thread, before opening."""
    libvirt.virEventRegisterDefaultImpl()

    def run():
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=run, name='libvirt-event-loop', daemon=True).start()


def quiet_libvirt():
    """libvirt-python prints every error on stderr by default, also those
    the script expects and handles (e.g. a guest that does not exist yet);
    errors still raise libvirtError."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def open_connection(uri):
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise Failure(f'cannot open {uri}: {libvirt_message(e)}') from e


# ---------------------------------------------------------------------------
# Running one job with progress
# ---------------------------------------------------------------------------

def mib(n):
    return f'{n / (1 << 20):.0f} MiB'


class Interrupted(Exception):
    """Ctrl-C: the running job was cancelled (or had already finished)."""


# Ctrl-C only sets this flag; the main loop acts on it. (An exception
# raised at an arbitrary point, e.g. inside Thread.join(), could leave the
# job running while the script exits: the guest would stay paused.)
INTERRUPT = threading.Event()


def on_sigint(_signum, _frame):
    INTERRUPT.set()


def run_job(label, action, find_domain):
    """Run action() in a worker thread; print the job's progress meanwhile.

    find_domain() returns the virDomain whose job to poll, or raises
    libvirtError while there is none (a restore's guest may not exist yet).
    Returns the domain found last (or None).  Raises what action() raised;
    on Ctrl-C, cancels the job (virDomainAbortJob), waits for it to end and
    raises Interrupted.
    """
    outcome = {}
    done = threading.Event()

    def work():
        try:
            action()
        except Exception as e:          # handed to the main thread
            outcome['error'] = e
        finally:
            done.set()

    worker = threading.Thread(target=work, name=f'job {label}')
    started = time.monotonic()
    worker.start()
    dom = None
    last = None
    cancel = None           # None: not asked; False: asked, not sent; True: sent
    while not done.wait(POLL_SECONDS):
        try:
            dom = dom or find_domain()
        except libvirt.libvirtError:
            pass
        if INTERRUPT.is_set() and not cancel:
            if cancel is None:
                say(f'{label}: cancelling ...')
                cancel = False
            try:
                if dom is not None:
                    dom.abortJob()
                    cancel = True
            except libvirt.libvirtError as e:
                # No job yet (retried at the next poll), or too late.
                outcome.setdefault('cancel_error', libvirt_message(e))
        try:
            # [type, elapsed ms, remaining ms, data total, processed,
            #  remaining, ...]
            info = dom.jobInfo() if dom is not None else None
        except libvirt.libvirtError:
            info = None
        if info and info[0] != libvirt.VIR_DOMAIN_JOB_NONE and info[3] > 0:
            percent = min(100, info[4] * 100 // info[3])
            if percent != last:
                say(f'{label}: {percent:3d}% ({mib(info[4])} of {mib(info[3])})')
                last = percent
    worker.join()

    if 'error' in outcome:
        if cancel is not None and isinstance(outcome['error'], libvirt.libvirtError) \
                and outcome['error'].get_error_code() == libvirt.VIR_ERR_OPERATION_ABORTED:
            raise Interrupted(f'{label}: cancelled')
        raise outcome['error']
    elapsed = time.monotonic() - started
    total = completed_total(dom)
    if last != 100:
        say(f'{label}: 100%' + (f' ({mib(total)} of {mib(total)})' if total else ''))
    say(f'{label}: done in {elapsed:.1f} s')
    if cancel is not None:
        # Ctrl-C came too late to cancel this job: it completed.
        reason = outcome.get('cancel_error')
        say(f'{label}: could not be cancelled, it completed'
            + (f' ({reason})' if reason else ''))
    return dom


def completed_total(dom):
    """Bytes the completed job moved, from its kept statistics (or 0)."""
    if dom is None:
        return 0
    try:
        stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError:
        return 0
    return stats.get('data_total', 0)


# ---------------------------------------------------------------------------
# The manifest
# ---------------------------------------------------------------------------

def manifest_path(directory):
    return os.path.join(directory, MANIFEST)


def read_manifest(directory):
    path = manifest_path(directory)
    try:
        with open(path) as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        raise Failure(f'{path} does not exist: nothing was saved to {directory}') from None
    except (OSError, ValueError) as e:
        raise Failure(f'cannot read {path}: {e}') from e
    if (not isinstance(manifest, dict) or manifest.get('version') != MANIFEST_VERSION
            or not isinstance(manifest.get('guests'), list)):
        raise Failure(f'{path} is not a save-all manifest (version {MANIFEST_VERSION})')
    for g in manifest['guests']:
        if not (isinstance(g, dict) and isinstance(g.get('image'), str)
                and isinstance(g.get('name'), str) and isinstance(g.get('uuid'), str)):
            raise Failure(f'{path}: invalid guest entry {g!r}')
        if os.path.isabs(g['image']) or os.sep in g['image']:
            raise Failure(f'{path}: image {g["image"]!r} is not a file name in {directory}')
    return manifest


def write_manifest(directory, manifest):
    """Replace the manifest atomically (temporary file, fsync, rename)."""
    path = manifest_path(directory)
    tmp = path + '.tmp'
    with open(tmp, 'w') as fh:
        json.dump(manifest, fh, indent=2)
        fh.write('\n')
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def image_name(dom):
    """NAME-UUID.img, the name reduced to characters safe in a file name."""
    safe = re.sub(r'[^A-Za-z0-9._-]', '_', dom.name()).lstrip('.') or 'guest'
    return f'{safe}-{dom.UUIDString()}.img'


def now():
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())


# ---------------------------------------------------------------------------
# save and restore
# ---------------------------------------------------------------------------

STATE_NAMES = {
    libvirt.VIR_DOMAIN_RUNNING: 'running',
    libvirt.VIR_DOMAIN_BLOCKED: 'running',
    libvirt.VIR_DOMAIN_PAUSED: 'paused',
}


def cmd_save(conn, uri, directory):
    os.makedirs(directory, exist_ok=True)
    if os.path.exists(manifest_path(directory)):
        old = read_manifest(directory)
        pending = [g['name'] for g in old['guests'] if not g.get('restored')]
        if pending:
            raise Failure(f'{manifest_path(directory)} still lists images not restored '
                          f'({", ".join(pending)}): restore them first or use another '
                          f'directory')

    try:
        doms = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
    except libvirt.libvirtError as e:
        raise Failure(f'cannot list the guests: {libvirt_message(e)}') from e
    doms.sort(key=lambda d: d.name())
    manifest = {'version': MANIFEST_VERSION, 'uri': uri, 'saved': now(), 'guests': []}
    write_manifest(directory, manifest)
    if not doms:
        say('no running guests: nothing to save')
        return 0

    failed = 0
    for dom in doms:
        name = dom.name()
        if INTERRUPT.is_set():
            raise Interrupted(f'interrupted before saving {name}')
        image = image_name(dom)
        path = os.path.join(os.path.abspath(directory), image)
        try:
            state = STATE_NAMES.get(dom.state()[0], 'other')
            persistent = bool(dom.isPersistent())
            say(f'{name}: saving to {path}')
            run_job(f'{name}: save', lambda: dom.save(path), lambda: dom)
        except libvirt.libvirtError as e:
            warn(f'{name}: save failed: {libvirt_message(e)}')
            failed += 1
            continue
        # Recorded after each guest, so a later failure keeps what was saved.
        manifest['guests'].append({'name': name, 'uuid': dom.UUIDString(),
                                   'image': image, 'state': state,
                                   'persistent': persistent, 'saved': now()})
        write_manifest(directory, manifest)

    say(f'saved {len(manifest["guests"])} of {len(doms)} guests to {directory}'
        f' ({manifest_path(directory)})')
    return 1 if failed else 0


def cmd_restore(conn, directory):
    manifest = read_manifest(directory)
    todo = [g for g in manifest['guests'] if not g.get('restored')]
    if not todo:
        say(f'{manifest_path(directory)}: nothing left to restore')
        return 0

    failed = 0
    for g in todo:
        name, uuid = g['name'], g['uuid']
        if INTERRUPT.is_set():
            raise Interrupted(f'interrupted before restoring {name}')
        path = os.path.join(os.path.abspath(directory), g['image'])
        if not os.path.isfile(path):
            warn(f'{name}: image {path} is missing')
            failed += 1
            continue
        say(f'{name}: restoring from {path}')
        try:
            dom = run_job(f'{name}: restore', lambda: conn.restore(path),
                          lambda: conn.lookupByUUIDString(uuid))
            dom = dom or conn.lookupByUUIDString(uuid)
            state = STATE_NAMES.get(dom.state()[0], 'other')
        except libvirt.libvirtError as e:
            warn(f'{name}: restore failed: {libvirt_message(e)}')
            failed += 1
            continue
        say(f'{name}: {state}')
        # Marked at once: restoring the same image twice would run an old
        # copy of the guest again.
        g['restored'] = now()
        write_manifest(directory, manifest)

    say(f'restored {len(todo) - failed} of {len(todo)} guests from {directory}')
    return 1 if failed else 0


# ---------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(
        prog='save-all.py',
        description='Save all running guests of a libvirt connection to a '
                    'directory, or restore them from it.')
    p.add_argument('-c', '--connect', metavar='URI', default=DEFAULT_URI,
                   help=f'libvirt connection URI (default: {DEFAULT_URI})')
    sub = p.add_subparsers(dest='command', required=True, metavar='COMMAND')
    s = sub.add_parser('save', help='save every active guest into DIR')
    s.add_argument('directory', metavar='DIR')
    r = sub.add_parser('restore', help="restore the guests DIR's manifest lists")
    r.add_argument('directory', metavar='DIR')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGINT, on_sigint)
    start_event_loop()
    quiet_libvirt()
    conn = None
    try:
        conn = open_connection(args.connect)
        if args.command == 'save':
            return cmd_save(conn, args.connect, args.directory)
        return cmd_restore(conn, args.directory)
    except Failure as e:
        warn(e)
        return 1
    except OSError as e:
        warn(e)
        return 1
    except Interrupted as e:
        warn(e)
        return 130
    finally:
        if conn is not None:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass


if __name__ == '__main__':
    sys.exit(main())
