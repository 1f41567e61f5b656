#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Does QEMU multifd (several parallel streams) make save and restore faster?

A one-off experiment that decided kvmsave's parallel.channels design; its
results are in bench/results/HISTORY.md ("Parallel channels").  It stands apart
from kvmsave's code and does not follow it.  QEMU is driven directly over
QMP (no libvirt, no kvmsave): one TCG guest (1 vCPU, --memory MiB, the test
guest of tests/guest with --data MiB of --fill content in its RAM) is booted,
paused with `stop` once its data is in memory, and then saved and restored
over and over, for each channel configuration of --channels:

  fd     a single stream through a pipe: `getfd` of its write end
         (F_SETPIPE_SZ 1 MiB), `migrate fd:NAME`; one thread reads the pipe
         in 4 MiB pieces and writes them to a file.  Restore: a thread feeds
         the file into a pipe, `migrate-incoming fd:NAME`.
  fdsock the same with one end of a unix socketpair instead of the pipe
         (QEMU then uses its socket channel), as a control for fd vs 0.
  0      a single stream over a unix socket (`migrate unix:PATH`, multifd
         off); the bench listens and writes what it receives to a file.
  N>=1   multifd: capability `multifd`, parameter `multifd-channels` N,
         `migrate unix:PATH`; QEMU 7.2 opens the main channel first, then N
         multifd channels; the bench accepts them all, one thread and one
         file per connection (the main file must start with 'QEVM', every
         channel file with the multifd magic 0x11223344 and its channel id).
         Restore: a QEMU with `-incoming defer`, the same capability and
         parameter, `migrate-incoming unix:PATH2`; the bench connects the
         main channel first, then one connection per channel file, and
         sends all files concurrently, one thread each.

Measured for each configuration, --repeat times (the order of the
configurations alternates between repeats; one untimed warm-up save and
restore comes first), page cache dropped before each timed step:
  save->disk     from `migrate` to QEMU's MIGRATION event `completed` AND
                 every receiver having written its file and fdatasync'ed it
  save->discard  the same with receivers that throw the data away: QEMU's
                 own production rate plus the transport, no disk
  restore        from `migrate-incoming` to the destination's MIGRATION
                 event `completed` (the files are read cold); the restored
                 guest is then resumed (`cont`) and must print a heartbeat of
                 the same boot and, with --verify mem, a memory check with
                 the md5 of its data (KVMSAVE-MEM-OK).  The restore QEMU's
                 RAM is backed on first touch, inside the timed step, unless
                 --prealloc (-mem-prealloc) backs it before.
  CPU            QEMU's utime+stime over the step (/proc/PID/stat), the part
                 of it in the migration threads (live_migration and
                 multifdsend_* on save, multifdrecv_* on restore, where the
                 main stream is loaded by QEMU's main thread; sampled every
                 50 ms from /proc/PID/task, QEMU runs with debug-threads=on),
                 and the bench's own CPU (its receivers or feeders, which
                 stand in for kvmsave's I/O thread).

QEMU 7.2 (migration/migration.c, multifd.c) as found while writing this:
  * multifd needs a socket URI (tcp:, unix:, vsock:).  With `fd:` the
    `migrate` command is accepted, then the migration fails at once ("multifd
    is not supported by current protocol", on QEMU's stderr only; no
    error-desc in query-migrate); `migrate-incoming fd:` fails the same way
    when the stream arrives.  QEMU opens the N extra connections itself, to
    the address of the main one: they cannot be handed over as fds.
  * The destination takes the first connection it accepts as the main
    channel (7.2 does not peek at the magic), so the main stream must be
    connected first; the channels may follow in any order (the id is in
    their first packet, MultiFDInit_t: magic, version, source -uuid, id).
    The destination checks that -uuid matches the source's, and starts
    loading only once all `multifd-channels` connections are there.
  * All streams must be fed at once: the destination syncs every channel
    with the main stream at each RAM_SAVE_FLAG_EOS.
  * The split of pages over the channels is dynamic (whichever channel is
    free takes the next 512 KiB packet): the channel files differ in size
    and content from one save to the next.
  * Zero pages are still found and sent by the single migration thread on
    the main stream; multifd only moves the copying of non-zero pages into
    the channel threads.
  * A completed migration leaves the source in runstate postmigrate, from
    which `migrate` is refused ("Can't migrate the vm that was paused due to
    previous migration"); the bench resumes the source (`cont`) and pauses
    it again (`stop`) before each save, a few milliseconds of guest time.

Run as root (drop_caches), on an otherwise idle machine:

    KVMSAVE_GUEST_DIR=/var/cache/kvmsave-bench/multifd-guest tests/guest/build-guest
    /usr/bin/python3 bench/experiments/multifd.py --memory 1024 --data 512 --fill random
    /usr/bin/python3 bench/experiments/multifd.py --fill text --channels fd,0,1,2,4 \
        --wait-idle 1800 --redo 3 --json text.json

The guest is built by the script itself if needed (tests/guest/build-guest
with KVMSAVE_GUEST_DIR, default /var/cache/kvmsave-bench/multifd-guest).
Other people's work (QEMU processes that are not the bench's, compilers,
pytest) is watched for by polling /proc every 0.5 s and reported under the
table with the load average; on a shared machine, --wait-idle SECONDS waits
for a quiet moment before each configuration and --redo N measures a
disturbed configuration again.  Python 3 standard library only.
"""

import argparse
import datetime
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, os.path.join(TOP, 'tests', 'integration'))
from kvmsave_harness import proc_stat   # noqa: E402
DEFAULT_GUEST_DIR = '/var/cache/kvmsave-bench/multifd-guest'
QEMU = 'qemu-system-x86_64'

PIECE = 4 << 20                 # read/write unit of the bench's threads
PIPE_SIZE = 1 << 20             # F_SETPIPE_SZ, as kvmsave
F_SETPIPE_SZ = getattr(fcntl, 'F_SETPIPE_SZ', 1031)
# As kvmsave (QEMU_DOMAIN_MIG_BANDWIDTH_MAX): INT64_MAX rounded down to MiB.
UNLIMITED_BW = ((2 ** 63 - 1) >> 20) << 20
QEVM_MAGIC = b'QEVM'
MULTIFD_MAGIC = struct.pack('>I', 0x11223344)
CLK_TCK = os.sysconf('SC_CLK_TCK')
MIG_THREAD = re.compile(r'^(live_migration|multifdsend_\d+|multifdrecv_\d+)$')


def log(msg):
    print(f'[{time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


def die(msg):
    print(f'multifd.py: {msg}', file=sys.stderr)
    sys.exit(1)


def drop_caches():
    os.sync()
    with open('/proc/sys/vm/drop_caches', 'w') as fh:
        fh.write('3\n')


# ---------------------------------------------------------------------------
# QMP


class QMPError(Exception):
    pass


class QMP:
    """A minimal synchronous QMP client; events are kept until asked for."""

    def __init__(self, path, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.buf = b''
        self.events = []
        self._read(deadline)                     # greeting
        self.cmd('qmp_capabilities')

    def _read(self, deadline):
        while b'\n' not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError('QMP: no answer')
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError('QMP: connection closed')
            self.buf += data
        line, self.buf = self.buf.split(b'\n', 1)
        msg = json.loads(line)
        if 'event' in msg:
            msg['_t'] = time.monotonic()
        return msg

    def cmd(self, name, args=None, fds=(), timeout=60):
        msg = {'execute': name}
        if args:
            msg['arguments'] = args
        data = json.dumps(msg).encode() + b'\n'
        if fds:
            socket.send_fds(self.sock, [data], list(fds))
        else:
            self.sock.sendall(data)
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if 'event' in m:
                self.events.append(m)
            elif 'error' in m:
                raise QMPError(f'{name}: {m["error"].get("desc", m["error"])}')
            elif 'return' in m:
                return m['return']

    def wait_event(self, pred, timeout):
        """The first kept or new event for which pred(event) is true."""
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if pred(e):
                    return self.events.pop(i)
            self.events.append(self._read(deadline))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def migration_done(e):
    return (e['event'] == 'MIGRATION'
            and e['data']['status'] in ('completed', 'failed', 'cancelled'))


# ---------------------------------------------------------------------------
# QEMU processes


def proc_cpu(pid):
    """utime+stime of a process (all its threads, dead ones too), seconds."""
    st = proc_stat(f'/proc/{pid}/stat')
    if not st:
        raise ProcessLookupError(pid)
    f = st[1]
    return (int(f[11]) + int(f[12])) / CLK_TCK


class ThreadSampler:
    """Samples /proc/PID/task/*/stat every 50 ms: CPU per thread name.

    Migration threads come and go with each migration, so the last sample
    of each thread is kept (a thread's last <= 50 ms may be missed)."""

    def __init__(self, pid):
        self.pid = pid
        self.last = {}                      # tid -> (comm, cpu seconds)
        self.stop_ev = threading.Event()
        self.base = self._sample()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _sample(self):
        out = {}
        try:
            tids = os.listdir(f'/proc/{self.pid}/task')
        except OSError:
            return out
        for tid in tids:
            st = proc_stat(f'/proc/{self.pid}/task/{tid}/stat')
            if st:
                f = st[1]
                out[tid] = (st[0], (int(f[11]) + int(f[12])) / CLK_TCK)
        return out

    def _run(self):
        while not self.stop_ev.wait(0.05):
            self.last.update(self._sample())

    def finish(self):
        self.stop_ev.set()
        self.t.join()
        self.last.update(self._sample())
        mig = 0.0
        for tid, (comm, cpu) in self.last.items():
            if MIG_THREAD.match(comm):
                mig += cpu - self.base.get(tid, (comm, 0.0))[1]
        return mig


class Guest:
    """One qemu-system-x86_64 process with a QMP socket and a serial log."""

    def __init__(self, a, kernel, initrd, workdir, name, incoming=False):
        self.name = name
        self.qmp_path = os.path.join(workdir, f'{name}.qmp')
        self.serial = os.path.join(workdir, f'{name}.serial')
        self.log = os.path.join(workdir, f'{name}.log')
        for p in (self.qmp_path, self.serial):
            if os.path.exists(p):
                os.unlink(p)
        cmdline = (f'console=ttyS0 quiet kvmsave.data={a.data} '
                   f'kvmsave.fill={a.fill}')
        self.argv = [
            QEMU, '-name', f'{name},debug-threads=on', '-machine', 'pc,accel=tcg', '-cpu', 'qemu64',
            '-smp', '1', '-m', str(a.memory),
            '-nodefaults', '-no-user-config', '-display', 'none',
            '-kernel', kernel, '-initrd', initrd, '-append', cmdline,
            '-serial', f'file:{self.serial}',
            '-qmp', f'unix:{self.qmp_path},server=on,wait=off',
        ]
        if incoming:
            self.argv += ['-incoming', 'defer']
            if a.prealloc:
                self.argv += ['-mem-prealloc']
        with open(self.log, 'wb') as lf:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=lf, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.qmp = QMP(self.qmp_path)

    def console(self):
        try:
            with open(self.serial, 'rb') as fh:
                return fh.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            return ''

    def wait_console(self, regex, timeout, since=0):
        """Wait for a console line matching regex; returns the match."""
        deadline = time.monotonic() + timeout
        rx = re.compile(regex, re.M)
        while True:
            text = self.console()
            m = rx.search(text, since)
            if m:
                return m
            bad = re.search(r'^(KVMSAVE-ERROR|KVMSAVE-MEM-BAD).*$', text[since:], re.M)
            if bad:
                raise RuntimeError(f'{self.name}: {bad.group(0).strip()}')
            if self.proc.poll() is not None:
                raise RuntimeError(f'{self.name}: QEMU exited ({self.proc.returncode}); '
                                   f'see {self.log}')
            if time.monotonic() > deadline:
                raise TimeoutError(f'{self.name}: no /{regex}/ on the console '
                                   f'within {timeout} s')
            time.sleep(0.1)

    def stop(self):
        try:
            self.qmp.cmd('quit', timeout=10)
        except Exception:
            pass
        self.qmp.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def set_migration(qmp, channels):
    """Capabilities and parameters for a configuration (both sides)."""
    multifd = isinstance(channels, int) and channels >= 1
    qmp.cmd('migrate-set-capabilities', {'capabilities': [
        {'capability': 'events', 'state': True},
        {'capability': 'multifd', 'state': multifd}]})
    params = {'max-bandwidth': UNLIMITED_BW}
    if multifd:
        params['multifd-channels'] = channels
    qmp.cmd('migrate-set-parameters', params)


# ---------------------------------------------------------------------------
# The bench's data movers (kvmsave's I/O thread stand-ins)


class Receiver(threading.Thread):
    """Reads one stream (socket or pipe) to EOF in 4 MiB pieces and writes
    them to a file (then fdatasync), or throws them away (path None)."""

    def __init__(self, src, path, index):
        super().__init__(daemon=True)
        self.src = src                  # socket or pipe fd
        self.path = path
        self.index = index
        self.nbytes = 0
        self.head = b''
        self.t_end = None
        self.error = None

    def _read_into(self, mv):
        if isinstance(self.src, socket.socket):
            return self.src.recv_into(mv)
        return os.readv(self.src, [mv])

    def run(self):
        buf = bytearray(PIECE)
        mv = memoryview(buf)
        out = None
        try:
            if self.path:
                out = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            eof = False
            while not eof:
                fill = 0
                while fill < PIECE:
                    n = self._read_into(mv[fill:])
                    if n == 0:
                        eof = True
                        break
                    fill += n
                if fill and not self.head:
                    self.head = bytes(mv[:32])
                self.nbytes += fill
                if out is not None and fill:
                    view = mv[:fill]
                    while view:
                        view = view[os.write(out, view):]
            if out is not None:
                os.fdatasync(out)
        except Exception as e:          # reported by the caller
            self.error = e
        finally:
            if out is not None:
                os.close(out)
            if isinstance(self.src, socket.socket):
                self.src.close()
            else:
                os.close(self.src)
            self.t_end = time.monotonic()


class Feeder(threading.Thread):
    """Sends one file, in 4 MiB pieces, into a socket or a pipe, then closes it."""

    def __init__(self, path, dst):
        super().__init__(daemon=True)
        self.path = path
        self.dst = dst
        self.error = None
        self.t_end = None

    def run(self):
        buf = bytearray(PIECE)
        mv = memoryview(buf)
        try:
            with open(self.path, 'rb', buffering=0) as fh:
                while True:
                    n = fh.readinto(buf)
                    if not n:
                        break
                    if isinstance(self.dst, socket.socket):
                        self.dst.sendall(mv[:n])
                    else:
                        view = mv[:n]
                        while view:
                            view = view[os.write(self.dst, view):]
        except Exception as e:
            self.error = e
        finally:
            if isinstance(self.dst, socket.socket):
                self.dst.close()
            else:
                os.close(self.dst)
            self.t_end = time.monotonic()


def classify(head):
    """'main', ('channel', id) or None, from a stream's first bytes."""
    if head[:4] == QEVM_MAGIC:
        return 'main'
    if head[:4] == MULTIFD_MAGIC and len(head) >= 25:
        # MultiFDInit_t: magic, version (be32), uuid[16], id (u8)
        return ('channel', head[24])
    return None


# ---------------------------------------------------------------------------
# Save and restore


def cpu_self():
    t = os.times()
    return t.user + t.system


def save(src, channels, outdir, sockdir, to_disk, timeout):
    """One timed save of the paused source; returns a sample dict."""
    qmp = src.qmp
    # Leave postmigrate (QEMU 7.2 refuses to migrate from it), pause again.
    st = qmp.cmd('query-status')['status']
    deadline = time.monotonic() + 10
    while st == 'finish-migrate' and time.monotonic() < deadline:
        time.sleep(0.05)                # just after `completed`
        st = qmp.cmd('query-status')['status']
    if st == 'postmigrate':
        qmp.cmd('cont')
        qmp.cmd('stop')
    elif st != 'paused':
        raise RuntimeError(f'source is {st}, not paused')
    set_migration(qmp, channels)
    receivers = []
    tag = 'disk' if to_disk else 'null'

    def target(i):
        return os.path.join(outdir, f'c{channels}-{tag}-{i}.bin') if to_disk else None

    drop_caches()
    if channels in ('fd', 'fdsock'):
        if channels == 'fd':
            mine, theirs = os.pipe2(os.O_CLOEXEC)
            fcntl.fcntl(theirs, F_SETPIPE_SZ, PIPE_SIZE)
        else:
            mine, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            mine.settimeout(timeout)
            theirs = peer.detach()
        qmp.cmd('getfd', {'fdname': 'bench'}, fds=[theirs])
        os.close(theirs)
        r = Receiver(mine, target(0), 0)
        receivers.append(r)
        r.start()
        uri = 'fd:bench'
        lst = None
    else:
        spath = os.path.join(sockdir, 'save.sock')
        if os.path.exists(spath):
            os.unlink(spath)
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lst.bind(spath)
        lst.listen(16)
        lst.settimeout(min(timeout, 30))
        uri = f'unix:{spath}'
    want = 1 if channels in ('fd', 'fdsock', 0) else 1 + channels

    sampler = ThreadSampler(src.pid)
    cpu0, self0 = proc_cpu(src.pid), cpu_self()
    t0 = time.monotonic()
    qmp.cmd('migrate', {'uri': uri})
    accept_err = None
    if lst is not None:
        try:
            for i in range(want):
                conn, _ = lst.accept()
                conn.settimeout(timeout)
                r = Receiver(conn, target(i), i)
                receivers.append(r)
                r.start()
        except OSError as e:
            accept_err = e
        finally:
            lst.close()
    ev = qmp.wait_event(migration_done, timeout)
    t_qemu = time.monotonic()
    for r in receivers:
        r.join(timeout)
    t_end = max([t_qemu] + [r.t_end or t_qemu for r in receivers])
    cpu1, self1 = proc_cpu(src.pid), cpu_self()
    mig_cpu = sampler.finish()
    if ev['data']['status'] != 'completed':
        info = qmp.cmd('query-migrate')
        raise RuntimeError(f'save {channels}: {ev["data"]["status"]}: '
                           f'{info.get("error-desc", "")}')
    if accept_err:
        raise RuntimeError(f'save {channels}: accept: {accept_err}')
    for r in receivers:
        if r.error or r.is_alive():
            raise RuntimeError(f'save {channels}: receiver {r.index}: {r.error or "hung"}')
    info = qmp.cmd('query-migrate')
    # Which stream is which: the first connection must be the main one.
    kinds = [classify(r.head) for r in receivers]
    if kinds[0] != 'main' or kinds.count('main') != 1:
        raise RuntimeError(f'save {channels}: streams in accept order are {kinds}; '
                           'the first must be the main stream (QEVM)')
    ids = sorted(k[1] for k in kinds[1:])
    if ids != list(range(want - 1)):
        raise RuntimeError(f'save {channels}: multifd channel ids {ids}')
    files = None
    if to_disk:
        files = {'main': receivers[0].path,
                 'channels': [r.path for r in receivers[1:]]}
    return {
        'time': t_end - t0,
        'qemu_completed': t_qemu - t0,
        'receivers_done': max(r.t_end for r in receivers) - t0,
        'bytes': sum(r.nbytes for r in receivers),
        'bytes_main': receivers[0].nbytes,
        'bytes_channels': [r.nbytes for r in receivers[1:]],
        'qemu_cpu': cpu1 - cpu0,
        'qemu_mig_threads_cpu': mig_cpu,
        'bench_cpu': self1 - self0,
        'qemu_total_time_ms': info.get('total-time'),
        'ram': info.get('ram', {}),
        'files': files,
    }


def restore(a, kernel, initrd, workdir, sockdir, channels, files, src_info, timeout):
    """One timed restore into a fresh QEMU; checks the guest lives on."""
    dst = Guest(a, kernel, initrd, workdir, 'dst', incoming=True)
    try:
        qmp = dst.qmp
        set_migration(qmp, channels)
        feeders = []
        drop_caches()
        sampler = ThreadSampler(dst.pid)
        if channels == 'fd':
            rfd, wfd = os.pipe2(os.O_CLOEXEC)
            fcntl.fcntl(wfd, F_SETPIPE_SZ, PIPE_SIZE)
            qmp.cmd('getfd', {'fdname': 'bench'}, fds=[rfd])
            os.close(rfd)
            cpu0, self0 = proc_cpu(dst.pid), cpu_self()
            t0 = time.monotonic()
            qmp.cmd('migrate-incoming', {'uri': 'fd:bench'})
            feeders.append(Feeder(files['main'], wfd))
        elif channels == 'fdsock':
            mine, qemus = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            qmp.cmd('getfd', {'fdname': 'bench'}, fds=[qemus.fileno()])
            qemus.close()
            mine.settimeout(timeout)
            cpu0, self0 = proc_cpu(dst.pid), cpu_self()
            t0 = time.monotonic()
            qmp.cmd('migrate-incoming', {'uri': 'fd:bench'})
            feeders.append(Feeder(files['main'], mine))
        else:
            spath = os.path.join(sockdir, 'restore.sock')
            if os.path.exists(spath):
                os.unlink(spath)
            cpu0, self0 = proc_cpu(dst.pid), cpu_self()
            t0 = time.monotonic()
            qmp.cmd('migrate-incoming', {'uri': f'unix:{spath}'})
            # QEMU 7.2 takes the first connection it accepts as the main
            # channel (it does not look at the magic): connect it first.
            for path in [files['main']] + files['channels']:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(timeout)
                s.connect(spath)
                feeders.append(Feeder(path, s))
        for f in feeders:
            f.start()
        ev = qmp.wait_event(migration_done, timeout)
        t1 = time.monotonic()
        cpu1, self1 = proc_cpu(dst.pid), cpu_self()
        mig_cpu = sampler.finish()
        for f in feeders:
            f.join(timeout)
        if ev['data']['status'] != 'completed':
            raise RuntimeError(f'restore {channels}: {ev["data"]["status"]}; '
                               f'see {dst.log}')
        for f in feeders:
            if f.error and not isinstance(f.error, (BrokenPipeError, ConnectionResetError)):
                raise RuntimeError(f'restore {channels}: feeder {f.path}: {f.error}')
        st = qmp.cmd('query-status')['status']
        if st != 'paused':
            raise RuntimeError(f'restore {channels}: restored guest is {st}, not paused')
        qmp.cmd('cont')
        # Alive: a heartbeat of the same boot, and with --verify mem the
        # memory check with the md5 the guest had before the save.
        dst.wait_console(rf'^KVMSAVE-HB \d+ {re.escape(src_info["bootid"])}', 30)
        if a.verify == 'mem':
            m = dst.wait_console(r'^KVMSAVE-MEM-OK \d+ (\w+)', 90)
            if m.group(1) != src_info['md5']:
                raise RuntimeError(f'restore {channels}: md5 {m.group(1)} != '
                                   f'{src_info["md5"]}')
        return {
            'time': t1 - t0,
            'qemu_cpu': cpu1 - cpu0,
            'qemu_mig_threads_cpu': mig_cpu,
            'bench_cpu': self1 - self0,
        }
    finally:
        dst.stop()


# ---------------------------------------------------------------------------
# Machine state


class Watch(threading.Thread):
    """Polls /proc every 0.5 s for other people's work: QEMU processes that
    are not ours (our QEMUs are our children; zombies do not count),
    compilers (cc1, cc1plus, ld) and pytest.  `mark()` starts a window;
    `seen()` is what showed up since."""

    COMPILERS = {'cc1', 'cc1plus', 'ld', 'ld.bfd', 'ld.gold', 'as'}

    def __init__(self):
        super().__init__(daemon=True)
        self.lock = threading.Lock()
        self.window = {}
        self.total = {}
        self.start()

    @staticmethod
    def scan():
        me = os.getpid()
        found = {}
        for pid in os.listdir('/proc'):
            if not pid.isdigit():
                continue
            st = proc_stat(f'/proc/{pid}/stat')
            try:
                with open(f'/proc/{pid}/cmdline', 'rb') as fh:
                    cmd = fh.read().replace(b'\0', b' ').decode('utf-8', 'replace').strip()
            except OSError:
                continue
            if not st:
                continue
            comm, (state, ppid) = st[0], st[1][:2]
            if state == 'Z' or int(ppid) == me:
                continue
            if comm.startswith('qemu-system') or comm in Watch.COMPILERS \
                    or ('python' in comm and 'pytest' in cmd):
                found[int(pid)] = cmd[:150] or comm
        return found

    def run(self):
        while True:
            found = self.scan()
            with self.lock:
                self.window.update(found)
                self.total.update(found)
            time.sleep(0.5)

    def mark(self):
        with self.lock:
            self.window = {}

    def seen(self):
        with self.lock:
            return dict(self.window)

    def wait_idle(self, quiet, limit):
        """Wait until nothing was seen for `quiet` seconds (at most `limit`).
        Returns whether it had to wait."""
        t_end = time.monotonic() + limit
        waited = False
        while True:
            self.mark()
            time.sleep(quiet)
            if not self.seen():
                return waited
            if not waited:
                log(f'waiting for the machine to be idle: {list(self.seen().values())[:3]}')
                waited = True
            if time.monotonic() > t_end:
                log('the machine did not become idle; measuring anyway')
                return waited


REPORTED = '/sys/module/page_reporting/parameters/reported_kib'


def reported_mib():
    """Free memory this VM has handed back to its hypervisor so far (free
    page reporting), MiB, or None.  Memory handed back costs a fault in the
    hypervisor when it is touched again."""
    try:
        with open(REPORTED) as fh:
            return int(fh.read()) / 1024
    except (OSError, ValueError):
        return None


def loadavg():
    with open('/proc/loadavg') as fh:
        return float(fh.read().split()[0])


# ---------------------------------------------------------------------------
# Report


def stats(xs):
    return statistics.median(xs), min(xs), max(xs)


def fmt3(xs):
    if not xs:
        return '-'
    med, lo, hi = stats(xs)
    return f'{med:6.2f} ({lo:.2f}-{hi:.2f})'


def label(c):
    if c == 'fd':
        return 'fd: pipe'
    if c == 'fdsock':
        return 'fd: socketpair'
    if c in (0, '0'):
        return 'unix: 1 stream'
    return f'multifd {c}'


def table(a, results, configs):
    mib = 1 << 20
    lines = []
    hdr = (f'{"config":<15} {"save->disk s":>20} {"MB/s":>6} {"save->discard s":>20} '
           f'{"restore s":>20} {"MB/s":>6} {"MiB (main+ch)":>16} '
           f'{"QEMU CPU save":>14} {"QEMU CPU rest":>14} {"bench CPU s/r":>14}')
    lines.append(hdr)
    lines.append('-' * len(hdr))
    for c in configs:
        r = results[str(c)]
        sd = [s['time'] for s in r['save_disk']]
        sn = [s['time'] for s in r['save_null']]
        rs = [s['time'] for s in r['restore']]
        b = statistics.median([s['bytes'] for s in r['save_disk']])
        bm = statistics.median([s['bytes_main'] for s in r['save_disk']])
        mbps_s = b / 1e6 / statistics.median(sd)
        mbps_r = b / 1e6 / statistics.median(rs) if rs else 0
        qcs = statistics.median([s['qemu_cpu'] for s in r['save_disk']])
        qms = statistics.median([s['qemu_mig_threads_cpu'] for s in r['save_disk']])
        qcr = statistics.median([s['qemu_cpu'] for s in r['restore']]) if rs else 0
        qmr = statistics.median([s['qemu_mig_threads_cpu'] for s in r['restore']]) if rs else 0
        bcs = statistics.median([s['bench_cpu'] for s in r['save_disk']])
        bcr = statistics.median([s['bench_cpu'] for s in r['restore']]) if rs else 0
        lines.append(
            f'{label(c):<15} {fmt3(sd):>20} {mbps_s:6.0f} {fmt3(sn):>20} '
            f'{fmt3(rs):>20} {mbps_r:6.0f} {b / mib:7.1f} ({bm / mib:5.1f}) '
            f'{qcs:5.2f} ({qms:4.2f}) {qcr:5.2f} ({qmr:4.2f}) {bcs:5.2f}/{bcr:4.2f}')
    return '\n'.join(lines)


# ---------------------------------------------------------------------------


def parse_channels(s):
    out = []
    for tok in s.split(','):
        tok = tok.strip()
        if tok in ('fd', 'fdsock'):
            out.append(tok)
        elif tok.isdigit() and int(tok) <= 255:
            out.append(int(tok))
        else:
            raise argparse.ArgumentTypeError(f'bad channel count {tok!r}')
    return out


def build_guest():
    env = dict(os.environ)
    env.setdefault('KVMSAVE_GUEST_DIR', DEFAULT_GUEST_DIR)
    out = subprocess.run([os.path.join(TOP, 'tests', 'guest', 'build-guest')],
                         env=env, check=True, capture_output=True, text=True).stdout
    paths = out.split()
    return paths[-2], paths[-1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--memory', type=int, default=1024, help='guest RAM, MiB (1024)')
    p.add_argument('--data', type=int, default=512, help='data in guest RAM, MiB (512)')
    p.add_argument('--fill', choices=('random', 'text', 'zero'), default='random')
    p.add_argument('--repeat', type=int, default=5)
    p.add_argument('--dir', default='/var/tmp', help='where the stream files go (/var/tmp)')
    p.add_argument('--channels', type=parse_channels, default=parse_channels('0,1,2,4'),
                   help="comma-separated: 'fd' (pipe, as kvmsave), 'fdsock' (fd: "
                        "with a socketpair), 0 (one unix "
                        "stream), N>=1 (multifd, N channels); default 0,1,2,4")
    p.add_argument('--verify', choices=('hb', 'mem'), default='mem',
                   help='after each restore: a heartbeat only, or also the '
                        "guest's md5 of its data (default)")
    p.add_argument('--wait-idle', type=float, default=0, metavar='SECONDS',
                   help='before each configuration, wait up to SECONDS until no other '
                        'QEMU, compiler or pytest process has run for 3 s (default 0: '
                        'do not wait)')
    p.add_argument('--redo', type=int, default=0, metavar='N',
                   help='measure a configuration again, up to N times, when other work '
                        'ran during it (default 0: keep it, and say so)')
    p.add_argument('--prealloc', action='store_true',
                   help='start the restore QEMU with -mem-prealloc, so that the timed '
                        'restore does not include backing its RAM (a diagnostic: '
                        'stream cost alone)')
    p.add_argument('--timeout', type=float, default=300)
    p.add_argument('--json', help='write every sample to this file')
    p.add_argument('--keep', action='store_true', help='keep the work directory')
    a = p.parse_args()
    # Clean up (our QEMUs, our files) on SIGTERM and on SIGINT, even when
    # started in the background, where SIGINT is ignored.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if os.geteuid() != 0:
        die('needs root (drop_caches)')

    kernel, initrd = build_guest()
    workdir = tempfile.mkdtemp(prefix='kvmsave-multifd-', dir=a.dir)
    sockdir = tempfile.mkdtemp(prefix='kvmsave-multifd-')        # short unix paths
    started = datetime.datetime.now(datetime.timezone.utc)
    log(f'work directory {workdir}; guest {kernel} {initrd}')
    configs = a.channels
    results = {str(c): {'save_disk': [], 'save_null': [], 'restore': []} for c in configs}
    notes = {'foreign': {}, 'loadavg': [], 'disturbed': 0, 'warmups': 0}
    watch = Watch()
    src = None
    try:
        src = Guest(a, kernel, initrd, workdir, 'src')
        boot = src.wait_console(r'^KVMSAVE-BOOT (\S+)', 120)
        ready = src.wait_console(r'^KVMSAVE-MEM-READY (\w+)', a.timeout)
        src_info = {'bootid': boot.group(1), 'md5': ready.group(1)}
        log(f'guest ready: {a.data} MiB {a.fill}, md5 {src_info["md5"]}')
        src.qmp.cmd('stop')

        # Warm-up, not counted: the first save and restore of a run are
        # much slower here (up to 2 s instead of 0.3-0.5 s), whatever the
        # configuration: memory the host has not touched for a while (page
        # cache, the destination's RAM) is backed again by the hypervisor on
        # first touch (this VM's balloon reports free pages).  The same
        # happens after other work ran, so a wait for idleness or a redo is
        # followed by another warm-up.
        def warm_up(c):
            w = save(src, c, workdir, sockdir, True, a.timeout)
            wn = save(src, c, workdir, sockdir, False, a.timeout)
            wr = restore(a, kernel, initrd, workdir, sockdir, c, w['files'], src_info,
                         a.timeout)
            for path in [w['files']['main']] + w['files']['channels']:
                os.unlink(path)
            log(f'warm-up {label(c)}: save->disk {w["time"]:.2f} s, save->discard '
                f'{wn["time"]:.2f} s, restore {wr["time"]:.2f} s (not counted)')
            return {'config': str(c), 'save_disk': w['time'], 'save_null': wn['time'],
                    'restore': wr['time']}

        notes['warmup'] = warm_up(configs[0])

        for rep in range(a.repeat):
            order = configs if rep % 2 == 0 else list(reversed(configs))
            for c in order:
                for attempt in range(1 + a.redo):
                    waited = a.wait_idle and watch.wait_idle(3, a.wait_idle)
                    if waited or attempt:
                        notes['warmups'] += 1
                        warm_up(c)
                    la = loadavg()
                    rep0 = reported_mib()
                    watch.mark()
                    sd = save(src, c, workdir, sockdir, True, a.timeout)
                    sn = save(src, c, workdir, sockdir, False, a.timeout)
                    rs = restore(a, kernel, initrd, workdir, sockdir, c, sd['files'],
                                 src_info, a.timeout)
                    for path in [sd['files']['main']] + sd['files']['channels']:
                        os.unlink(path)
                    busy = watch.seen()
                    rep1 = reported_mib()
                    if rep0 is not None:
                        sd['reported_mib_during_config'] = rep1 - rep0
                    if not busy:
                        break
                    if attempt < a.redo:
                        notes['disturbed'] += 1
                    log(f'{label(c)}: other work ran during the measurement '
                        f'({len(busy)} processes, e.g. {list(busy.values())[0][:80]})'
                        + ('; measuring again' if attempt < a.redo else '; kept'))
                for q in set(busy.values()):
                    notes['foreign'].setdefault(q, 0)
                    notes['foreign'][q] += 1
                notes['loadavg'].append(la)
                results[str(c)]['save_disk'].append(sd)
                results[str(c)]['save_null'].append(sn)
                results[str(c)]['restore'].append(rs)
                log(f'repeat {rep + 1}/{a.repeat} {label(c):<14} '
                    f'save->disk {sd["time"]:.2f} s (QEMU done {sd["qemu_completed"]:.2f}) '
                    f'save->discard {sn["time"]:.2f} s  restore {rs["time"]:.2f} s  '
                    f'{sd["bytes"] / 2**20:.1f} MiB  QEMU CPU {sd["qemu_cpu"]:.2f}/'
                    f'{rs["qemu_cpu"]:.2f} s  load {notes["loadavg"][-1]:.2f}'
                    + (f'  reported {sd["reported_mib_during_config"]:.0f} MiB'
                       if 'reported_mib_during_config' in sd else ''))
    finally:
        if src is not None:
            src.stop()
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(sockdir, ignore_errors=True)

    qemu_version = subprocess.run([QEMU, '--version'], capture_output=True,
                                  text=True).stdout.splitlines()[0]
    print(f'\nmultifd bench: {qemu_version}; {os.cpu_count()} CPUs; guest TCG 1 vCPU, '
          f'{a.memory} MiB RAM, {a.data} MiB {a.fill} data; {a.repeat} repeats; '
          f'files in {a.dir}; started {started:%Y-%m-%d %H:%M} UTC'
          + ('; restore QEMU with -mem-prealloc' if a.prealloc else ''))
    print('Times in seconds: median (min-max); MB/s = median bytes / median time; '
          'MiB = stream size (main stream in brackets);')
    print('QEMU CPU = utime+stime of QEMU over the step (in brackets: its migration '
          'threads); bench CPU = the receivers (save->disk) / feeders (restore).\n')
    print(table(a, results, configs))
    print(f'\nload average (1 min) before each configuration: median '
          f'{statistics.median(notes["loadavg"]):.2f}, max {max(notes["loadavg"]):.2f}')
    w = notes['warmup']
    print(f'warm-up (not counted) with {label(w["config"])}: '
          f'save->disk {w["save_disk"]:.2f} s, save->discard {w["save_null"]:.2f} s, '
          f'restore {w["restore"]:.2f} s; {notes["warmups"]} more warm-up(s) after waits '
          'for idleness or disturbed measurements')
    if notes['disturbed']:
        print(f'{notes["disturbed"]} measurement(s) of a configuration were disturbed by '
              'other work and measured again.')
    if notes['foreign']:
        print('WARNING: other QEMU, compiler or pytest processes ran during kept measurements:')
        for q, n in list(notes['foreign'].items())[:10]:
            print(f'  during {n} configuration(s): {q}')
        if len(notes['foreign']) > 10:
            print(f'  ... {len(notes["foreign"]) - 10} more')
    else:
        print('No other QEMU, compiler or pytest process ran during the kept measurements '
              '(/proc polled every 0.5 s).')
    if a.json:
        for r in results.values():
            for s in r['save_disk']:
                s.pop('files', None)
            for s in r['save_null']:
                s.pop('files', None)
        with open(a.json, 'w') as fh:
            json.dump({'args': {k: v for k, v in vars(a).items()},
                       'qemu': qemu_version, 'started': started.isoformat(),
                       'results': results, 'notes': notes}, fh, indent=1)


if __name__ == '__main__':
    main()
