#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""kvmsave benchmark: stock libvirt's virsh save/restore against kvmsave's,
side by side on the same kind of guest, and against the disk itself.

    bench/run --memory 1024 --data 512 --fill random --repeat 3
    /usr/bin/python3 bench/bench.py ...        (the guest must be built)

See bench/README.md for what is measured and how.  Needs root (drop_caches),
the build tree's ./run (the uninstalled plugin) and the test guest
(tests/guest/build-guest, which bench/run runs first).
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, '..'))
sys.path.insert(0, os.path.join(TOP, 'tests', 'integration'))
sys.path.insert(0, HERE)      # bench's own modules (stages, report), from any cwd

# The benchmark's guest lives in its own directory by default, so that a test
# suite running from another checkout (whose init may differ) never rebuilds
# it under us, nor we under it.  The harness reads the variable at call time.
DEFAULT_BENCH_GUEST_DIR = '/var/cache/kvmsave-bench/guest'
os.environ.setdefault('KVMSAVE_GUEST_DIR', DEFAULT_BENCH_GUEST_DIR)

import kvmsave_harness as h   # noqa: E402
from after_restore import after_restore   # noqa: E402
from report import format_stages, format_table   # noqa: E402
from stages import LOG_FILTERS, QemuWatch, restore_stages, save_stages   # noqa: E402

STOCK = 'stock'
# kvmsave's formats restored lazily (--formats): 'lazy' or 'lazy:N' saves
# sparse, 'lazy-raw' and 'lazy-zstd' one stream of chunks with their page
# index (which QEMU 7.2 can be served from too).
LAZY = 'lazy'


def lazy_save_format(fmt):
    """The save format of a lazy row's FMT ('lazy', 'lazy-raw', ...), or
    None if FMT is not lazy."""
    name = fmt.partition(':')[0]
    if name == LAZY:
        return 'sparse'
    if name.startswith(LAZY + '-'):
        return name[len(LAZY) + 1:]
    return None
UFFD_SYSCTL = '/proc/sys/vm/unprivileged_userfaultfd'

# libvirt's save_image_format names (qemuSaveFormat in src/qemu/qemu_saveimage.c,
# libvirt 11.3): the formats --stock-formats takes.  libvirt runs the
# compressor of that name (found in PATH); raw and sparse need none.
STOCK_FORMATS = ('raw', 'gzip', 'bzip2', 'xz', 'lzop', 'zstd', 'sparse')
# sparse is QEMU's mapped-ram capability (QEMU 9.0+).
SPARSE_MIN_QEMU = (9, 0)


# Saves in a format other than raw: virsh 9.0 cannot pass typed parameters,
# so a Python client calls virDomainSaveParams with 'image_format' (libvirt
# 11.2's name).  Its no-op twin gives the Python client's baseline RSS.
_PY_CONNECT = '''
import sys, threading, libvirt
libvirt.virEventRegisterDefaultImpl()
def _loop():
    while True:
        libvirt.virEventRunDefaultImpl()
threading.Thread(target=_loop, daemon=True).start()
conn = libvirt.open(sys.argv[1])
dom = conn.lookupByName(sys.argv[2])
'''
PY_SAVE = _PY_CONNECT + '''
dom.saveParams({'file': sys.argv[3], 'image_format': sys.argv[4],
                'parallel.channels': int(sys.argv[5])}, 0)
conn.close()
'''
PY_NOOP = _PY_CONNECT + '''
dom.state()
conn.close()
'''


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def die(msg):
    print(f'bench: {msg}', file=sys.stderr)
    sys.exit(1)


def note(msg):
    print(f'bench: {msg}', file=sys.stderr, flush=True)


def drop_caches():
    """Write back dirty pages, then drop the page cache (and slab caches)."""
    os.sync()
    with open('/proc/sys/vm/drop_caches', 'w') as fh:
        fh.write('3\n')


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def image_size(path):
    """(apparent size, allocated bytes) of an image file."""
    st = os.stat(path)
    return st.st_size, st.st_blocks * 512


def stored_bytes(size, alloc):
    """What an image costs on disk: its size, or its allocated bytes where
    fewer (a sparse image: stock's `sparse` format leaves zero pages as
    holes, and its size is the guest's RAM)."""
    return min(size, alloc)


# ---------------------------------------------------------------------------
# Stock libvirt's formats (--stock-formats)
# ---------------------------------------------------------------------------

def split_format(fmt):
    """'FMT' or 'FMT:N' -> (FMT, N or None)."""
    name, _, n = fmt.partition(':')
    return name, (int(n) if n else None)


def stock_label(fmt):
    """The row of a stock format: plain 'stock' for raw, as before
    --stock-formats; 'stock zstd', 'stock sparse:2' ..."""
    return STOCK if fmt == 'raw' else f'{STOCK} {fmt}'


def stock_save_args(fmt):
    """virsh arguments (before DOMAIN FILE) of a stock save in FMT[:N]:
    plain `save` for raw (the roots' qemu.conf sets no save_image_format),
    else libvirt 11.2+'s `save --image-format FMT [--parallel-channels N]`."""
    if fmt == 'raw':
        return ['save']
    name, n = split_format(fmt)
    return ['save', '--image-format', name] + (['--parallel-channels', str(n)] if n else [])


def stock_restore_args(fmt):
    """virsh arguments (before FILE) of a stock restore of a FMT[:N] image:
    libvirt reads the format from the image's header; the channels are a
    restore option (sparse only)."""
    _, n = split_format(fmt)
    return ['restore'] + (['--parallel-channels', str(n)] if n else [])


def parse_stock_formats(p, text):
    out = []
    for fmt in [f for f in text.split(',') if f]:
        m = re.fullmatch(r'([a-z0-9]+)(?::([1-9][0-9]*))?', fmt)
        if not m or m.group(1) not in STOCK_FORMATS:
            p.error(f'--stock-formats: {fmt!r} is not FMT or FMT:N with FMT one of '
                    f'libvirt\'s save_image_format names ({", ".join(STOCK_FORMATS)})')
        if m.group(2) and m.group(1) != 'sparse':
            # qemuMigrationParamsForSave (libvirt 11.3): "Parallel save is only
            # supported with the 'sparse' save image format".
            p.error(f'--stock-formats: {fmt!r}: libvirt takes parallel channels only with '
                    f'the sparse format')
        if fmt in out:
            p.error(f'--stock-formats: {fmt!r} twice')
        out.append(fmt)
    if not out:
        p.error('--stock-formats needs at least one format')
    return out


def stock_preflight(formats):
    """Fail before any guest boots where the installed libvirt or QEMU
    cannot save in one of the stock formats."""
    if formats == ['raw']:
        return
    version = _cmd(['virsh', '--version']) or 'unknown'
    save_help = _cmd(['virsh', 'help', 'save'])
    restore_help = _cmd(['virsh', 'help', 'restore'])
    for fmt in formats:
        name, n = split_format(fmt)
        if fmt != 'raw' and '--image-format' not in save_help:
            die(f'--stock-formats {fmt}: this virsh (libvirt {version}) has no '
                f'`virsh save --image-format`, which libvirt 11.2 added; run the benchmark '
                f'on Debian 13 (bench/run --release trixie ...) or give --stock-formats raw')
        if n and ('--parallel-channels' not in save_help or
                  '--parallel-channels' not in restore_help):
            die(f'--stock-formats {fmt}: this virsh (libvirt {version}) has no '
                f'`--parallel-channels` for save and restore')
        if name not in ('raw', 'sparse') and not shutil.which(name):
            die(f'--stock-formats {fmt}: libvirt runs the program {name!r} for this format, '
                f'and it is not in PATH (apt-get install {name})')
        if name == 'sparse':
            out = _cmd(['qemu-system-x86_64', '--version'])
            m = re.search(r'version (\d+)\.(\d+)', out)
            if not m or (int(m.group(1)), int(m.group(2))) < SPARSE_MIN_QEMU:
                die(f'--stock-formats {fmt}: the sparse format needs QEMU '
                    f'{".".join(map(str, SPARSE_MIN_QEMU))} or later (mapped-ram); '
                    f'this is {out.splitlines()[0] if out else "unknown"}')


def clean_env(extra=None):
    """The environment without the build tree's module redirection.

    Stock virsh must load only libvirt's installed modules; kvmsave's virsh
    gets its own through ./run.
    """
    env = dict(os.environ)
    for k in ('LIBVIRT_DRIVER_DIR', 'KVMSAVE_LOCALEDIR', 'LIBVIRT_LOG_OUTPUTS',
              'LIBVIRT_LOG_FILTERS', 'LIBVIRT_DEBUG'):
        env.pop(k, None)
    env['LC_ALL'] = 'C.UTF-8'
    if extra:
        env.update(extra)
    return env


class Timed:
    """A finished command: wall time, exit status, peak RSS, output."""

    def __init__(self, argv, seconds, status, maxrss_kib, stdout, stderr, t0, t1):
        self.argv = argv
        self.seconds = seconds
        self.status = status
        self.maxrss_mib = maxrss_kib / 1024.0
        self.stdout = stdout
        self.stderr = stderr
        self.t0 = t0          # wall clock (epoch) at start and end, to
        self.t1 = t1          # line up with libvirt's log timestamps

    def check(self, what, side=None):
        """Raise unless the command succeeded. A stock virsh that printed
        its answer and then died by SIGSEGV is libvirt 9.0's embedded
        exit crash (docs/performance.md, "Short calls through an
        embedded root"): its step is done, so it is counted on SIDE
        (side.exit_crashes) and the run goes on; kvmsave's never is."""
        if (side is not None and side.scheme == 'qemu' and
                self.status == -signal.SIGSEGV and self.stdout.strip()):
            side.exit_crashes.append(what)
            note(f'{what}: stock virsh died by SIGSEGV after its answer (libvirt\'s exit crash)')
            return self
        if self.status != 0:
            argv = ' '.join('<python code>' if '\n' in a else a for a in self.argv)
            raise RuntimeError(f'{what} failed (exit {self.status}): {argv}\n'
                               f'--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}---')
        return self


def timed(argv, env=None, timeout=900):
    """Run argv, wait with wait4(2): wall time and the child's peak RSS.

    ru_maxrss from wait4 is the largest resident set of the process (the
    maximum over the exec'ed program too, so a `./run` wrapper that execs
    virsh counts as virsh) and of the descendants it waited for.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.time()
        m0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        deadline = m0 + timeout
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                raise RuntimeError(f'timed out after {timeout}s: {" ".join(argv)}')
            time.sleep(0.002)
        m1 = time.monotonic()
        t1 = time.time()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Timed(argv, m1 - m0, proc.returncode, ru.ru_maxrss,
                     out.read().decode(errors='replace'), err.read().decode(errors='replace'), t0, t1)


# ---------------------------------------------------------------------------
# Guests in embedded roots
# ---------------------------------------------------------------------------

class Side:
    """One driver under test: its root, its virsh, its guest."""

    def __init__(self, label, scheme, fmt, prefix, env, root, args, logdir):
        self.label = label            # 'stock', 'stock zstd', 'kvmsave raw' ...
        self.scheme = scheme          # 'qemu' (stock) or 'kvmsave'
        self.fmt = fmt                # the image format, FMT or FMT:N (--formats, --stock-formats)
        # kvmsave's lazy rows: saved as lazy_save_format says, restored lazily
        self.lazy = scheme == 'kvmsave' and lazy_save_format(fmt) is not None
        self.root = root
        self.uri = h.embed_uri(root, scheme)
        self.prefix = list(prefix) + ['virsh', '-c', self.uri]
        self.env = env
        self.virsh = h.Virsh(self.prefix, env=env)
        self.name = 'bench'
        self.console_path = h.console_path(root, self.name)
        self.xml = h.domain_xml(self.name, self.console_path, uuid=str(uuidlib.uuid4()),
                                memory_mib=args.memory, data_mib=args.data, fill=args.fill)
        self.console = h.Console(self.console_path)
        self.imgdir = os.path.join(root, 'images')
        os.makedirs(self.imgdir, mode=0o755, exist_ok=True)
        self.logdir = logdir
        self.boot = None
        self.md5 = None
        self.paused = False
        self.samples = []             # one dict per repeat
        self.exit_crashes = []        # stock's steps whose virsh died at exit

    def log_env(self, tag):
        path = os.path.join(self.logdir, f'{self.key}-{tag}.log')
        return path, dict(self.env, LIBVIRT_LOG_OUTPUTS=f'1:file:{path}',
                          LIBVIRT_LOG_FILTERS=LOG_FILTERS)

    @property
    def key(self):
        return self.label.replace(' ', '-').replace(':', '-')

    def suspend(self):
        if not self.paused:
            self.virsh.run('suspend', self.name)
            self.paused = True

    def resume(self):
        if self.paused:
            self.virsh.run('resume', self.name)
            self.paused = False


def wait_quiet(con, timeout):
    """Wait for a fresh console line that promises a quiet guest.

    The guest hashes its whole data region after every 5th heartbeat (beat
    n % 5 == 0, ended by MEM-OK), which keeps one host CPU busy for seconds.
    A save is started only right after a MEM-OK or a beat n % 5 in (1, 2):
    the next hash is then at least 2 s away, and the save pauses the guest
    well before that.
    """
    seen = len(con.events())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        evs = con.events()
        for e in evs:
            if e.kind in ('ERROR', 'MEM-BAD'):
                raise AssertionError(f'guest reports {e.kind} {e.value}\n{con.tail()}')
        if len(evs) > seen:
            last = evs[-1]
            if last.kind == 'MEM-OK' or (last.kind == 'HB' and last.n % 5 in (1, 2)):
                return
            seen = len(evs)
        time.sleep(0.05)
    raise AssertionError(f'guest not quiet within {timeout}s\n{con.tail()}')


# ---------------------------------------------------------------------------
# Machine description
# ---------------------------------------------------------------------------

def _cmd(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ''


def machine_info(path):
    info = {'nproc': os.cpu_count(), 'kernel': platform.release()}
    try:
        with open('/proc/meminfo') as fh:
            kib = int(re.search(r'MemTotal:\s+(\d+)', fh.read()).group(1))
        info['memory_gib'] = round(kib / 1024 / 1024, 1)
    except (OSError, AttributeError):
        pass
    try:
        with open('/proc/cpuinfo') as fh:
            m = re.search(r'model name\s*:\s*(.*)', fh.read())
        info['cpu'] = m.group(1).strip() if m else ''
    except OSError:
        pass
    src = _cmd(['findmnt', '-no', 'SOURCE,FSTYPE', '-T', path]).split()
    if src:
        info['filesystem'] = src[1] if len(src) > 1 else ''
        dev = src[0]
        info['device'] = dev
        parent = _cmd(['lsblk', '-no', 'PKNAME', dev]) or os.path.basename(dev)
        blk = parent.splitlines()[0] if parent else ''
        base = f'/sys/block/{blk}'
        def sysread(p):
            try:
                with open(os.path.join(base, p)) as fh:
                    return fh.read().strip()
            except OSError:
                return ''
        info['disk'] = {
            'name': blk,
            'model': sysread('device/model') or
                     ('virtio-blk' if sysread('device/vendor') == '0x1af4' else sysread('device/vendor')),
            'size_gib': round(int(sysread('size') or 0) * 512 / 1024 ** 3, 1),
            'rotational': sysread('queue/rotational'),
            'scheduler': sysread('queue/scheduler'),
        }
    info['libvirt'] = _cmd(['virsh', '--version'])
    info['libvirt_package'] = _cmd(['dpkg-query', '-W', '-f=${Version}', 'libvirt0'])
    info['qemu'] = _cmd(['qemu-system-x86_64', '--version']).splitlines()[0:1]
    info['qemu'] = info['qemu'][0] if info['qemu'] else ''
    info['zstd'] = _cmd(['dpkg-query', '-W', '-f=${Version}', 'libzstd1'])
    info['hostname'] = platform.node()
    return info


def tree_version(path):
    """`git describe` of the kvmsave tree that is measured, '-dirty' if it has
    uncommitted changes; '' outside a git work tree."""
    return _cmd(['git', '-C', path, 'describe', '--always', '--dirty'])


def others_running(our_roots):
    """Other QEMU guests and pytest runs on the host (noise in the numbers)."""
    found = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as fh:
                argv = fh.read().split(b'\0')
        except OSError:
            continue
        exe = os.path.basename(argv[0]).decode(errors='replace')
        line = b' '.join(argv).decode(errors='replace')
        if exe.startswith('qemu-system') and not any(r in line for r in our_roots):
            found.append(f'qemu pid {pid}')
        elif 'pytest' in line and 'bench.py' not in line:
            found.append(f'pytest pid {pid}')
    return found


# ---------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------

class Bench:

    def __init__(self, args):
        self.args = args
        self.runwrap = args.run
        self.sides = []
        self.disk = []                # one dict per repeat
        self.baseline = {}            # label -> [Timed of a no-op virsh]
        self.destroys = {}            # label -> seconds of the final virsh destroy
        self.paused_starts = []       # seconds of libvirt's own start --paused
        self.uffd_old = None          # the host's vm.unprivileged_userfaultfd
        self.same_guest = {}          # label -> image sizes of one guest state
        self.scratch = None
        # virsh save --image-format, --parallel-channels (libvirt 11.2+)
        self.virsh_params = '--image-format' in _cmd(['virsh', 'help', 'save'])

    # -- setup -------------------------------------------------------------

    def setup(self):
        a = self.args
        base = tempfile.mkdtemp(prefix='kvmsave-bench-', dir=a.dir)
        os.chmod(base, 0o755)
        self.scratch = base
        self.logdir = os.path.join(base, 'logs')
        os.makedirs(self.logdir)
        qemu_conf = h.DEFAULT_QEMU_CONF

        def mkroot(name):
            r = os.path.join(base, name)
            os.makedirs(os.path.join(r, 'etc'), mode=0o755)
            os.chmod(r, 0o755)
            with open(os.path.join(r, 'etc', 'qemu.conf'), 'w') as fh:
                fh.write(qemu_conf)
            return r

        # One root per driver.  A root shared by both would work (kvmsave's
        # inner driver is qemu:///embed on the same root), but libvirt keys
        # its QEMU capability cache to the newest loaded module's ctime:
        # every switch between a process with and one without the kvmsave
        # module re-probes QEMU (seconds), inside the timed steps.
        for fmt in a.stock_formats:
            self.sides.append(Side(stock_label(fmt), 'qemu', fmt, [], clean_env(),
                                   mkroot(stock_label(fmt).replace(' ', '-').replace(':', '-')),
                                   a, self.logdir))
        for fmt in a.formats:
            # FMT or FMT:N, N multifd channels
            side = Side(f'kvmsave {fmt}', 'kvmsave', fmt, [self.runwrap],
                        clean_env(), mkroot(f'kvmsave-{fmt.replace(":", "-")}'),
                        a, self.logdir)
            if side.lazy:
                # Saved sparse, restored lazily: the root's default.
                with open(os.path.join(side.root, 'etc', 'kvmsave.conf'), 'w') as fh:
                    fh.write('restore_mode = "lazy"\n')
            self.sides.append(side)

        note(f'scratch directory {base}')
        self.module_seen = self.module_ctime()
        for s in self.sides:
            # Probe QEMU's capabilities now (all emulators), not in a timed step.
            s.virsh.run('capabilities', timeout=300)
        # One guest at a time, the others already suspended: TCG guests
        # booting at once on a busy host can miss the kernel's IO-APIC timer
        # check ("Kernel panic - not syncing: IO-APIC + timer doesn't work!"),
        # and with --stock-formats there are many rows.
        t_fill = 300 + a.data * 0.2
        for s in self.sides:
            s.virsh.create(s.xml, timeout=300)
            s.md5 = s.console.wait_mem_ready(timeout=t_fill)
            s.boot = s.console.boot_id()
            note(f'{s.label}: guest up, {a.data} MiB {a.fill} data, md5 {s.md5}')
            s.console.wait_mem_ok(0, timeout=self.guest_timeout())
            s.suspend()

    def guest_timeout(self):
        # Hashing the data region in TCG: about 150 MB/s.
        return 120 + self.args.data * 0.05

    # -- one tool --------------------------------------------------------

    def image_path(self, side, rep):
        return os.path.join(side.imgdir, f'r{rep}.img')

    def module_ctime(self):
        mod = os.path.join(os.path.dirname(os.path.abspath(self.runwrap)), '.drivers',
                           'kvmsave_impl.so')
        try:
            return os.stat(mod).st_ctime
        except OSError:
            return None

    def check_module(self):
        """Re-probe QEMU (untimed) if the kvmsave module was rebuilt.

        libvirt's capability cache is keyed to the newest ctime of the modules
        a process loaded, so a rebuilt module makes the next kvmsave process
        probe QEMU again, for seconds, inside a timed step.
        """
        now = self.module_ctime()
        if now == self.module_seen:
            return
        note('warning: the kvmsave module changed during the run (rebuilt?); probing QEMU again')
        self.noise = sorted(set(getattr(self, 'noise', [])) | {'kvmsave module rebuilt during the run'})
        for s in self.sides:
            if s.scheme == 'kvmsave':
                s.virsh.run('capabilities', timeout=300)
        self.module_seen = now

    def run_side(self, side, rep):
        a = self.args
        self.check_module()
        for other in self.sides:
            if other is not side:
                other.suspend()
        side.resume()
        img = self.image_path(side, rep)
        sample = {'repeat': rep}

        # A no-op virsh of the same connection: startup, reconnect, RSS.
        drop_caches()
        base = timed(self.noop_argv(side), env=side.env).check(f'{side.label} no-op', side)
        sample['noop_s'] = base.seconds
        sample['noop_rss_mib'] = base.maxrss_mib

        drop_caches()
        wait_quiet(side.console, self.guest_timeout())
        before_n, boot = side.console.last_heartbeat()
        log, env = side.log_env(f'save-r{rep}')
        pids = h._root_qemu_pids(side.root)
        if len(pids) != 1:
            raise RuntimeError(f'{side.label}: expected one QEMU in {side.root}, found {pids}')
        watch = QemuWatch(pids[0])
        watch.start()
        run = timed(self.save_argv(side, img), env=env).check(f'{side.label} save', side)
        watch.finish()
        sample['save_s'] = run.seconds
        sample['save_rss_mib'] = run.maxrss_mib
        sample['save_stages'] = save_stages(log, run, watch)
        sample['image_bytes'], sample['image_alloc_bytes'] = image_size(img)

        drop_caches()
        time.sleep(a.settle)
        log, env = side.log_env(f'restore-r{rep}')
        run = timed(self.restore_argv(side, img), env=env).check(f'{side.label} restore', side)
        sample['restore_s'] = run.seconds
        sample['restore_rss_mib'] = run.maxrss_mib
        sample['restore_stages'] = restore_stages(log, run)
        sample.update(after_restore(side, run, before_n, boot, self.guest_timeout()))

        # Never measure a broken restore: the guest must go on counting,
        # same boot, same memory.
        assert boot == side.boot
        side.console.assert_continued(before_n, boot, side.md5, timeout=self.guest_timeout())
        side.suspend()
        side.samples.append(sample)
        if a.verbose:
            st = ' '.join(f'{k}={v:.3f}' for k, v in sample['save_stages'].items())
            rt = ' '.join(f'{k}={v:.3f}' for k, v in sample['restore_stages'].items())
            print(f'  r{rep} {side.label:<14} save {sample["save_s"]:.3f}s restore {sample["restore_s"]:.3f}s '
                  f'image {sample["image_bytes"]} B  RSS save {sample["save_rss_mib"]:.1f} '
                  f'restore {sample["restore_rss_mib"]:.1f} no-op {sample["noop_rss_mib"]:.1f} MiB '
                  f'(no-op virsh {sample["noop_s"]:.3f}s)\n'
                  f'       save:    {st}\n       restore: {rt}', flush=True)

    def start_paused(self, rep):
        """libvirt's own start of the same guest, paused: a copy of the
        stock side's XML under another name and UUID (its console apart),
        created with --paused and destroyed. What a lazy restore adds to
        it is the device state and the page server."""
        s = next(x for x in self.sides if x.scheme == 'qemu')
        xml = h.domain_xml('bench-start', h.console_path(s.root, 'bench-start'),
                           uuid=str(uuidlib.uuid4()), memory_mib=self.args.memory,
                           data_mib=self.args.data, fill=self.args.fill)
        path = os.path.join(self.scratch, 'start-paused.xml')
        with open(path, 'w') as fh:
            fh.write(xml)
        drop_caches()
        time.sleep(self.args.settle)
        run = timed(s.prefix + ['create', '--paused', path], env=s.env).check('start --paused', s)
        # The next embedded process's reconnect may already have stopped
        # a guest paused since its start: then destroy finds none.
        timed(s.prefix + ['destroy', 'bench-start'], env=s.env)
        if 'bench-start' in s.virsh.run('list', '--name').stdout.split():
            raise RuntimeError('the paused copy of the guest still runs')
        self.paused_starts.append(run.seconds)
        if self.args.verbose:
            print(f'  r{rep} virsh create --paused (stock): {run.seconds:.3f}s', flush=True)

    def save_argv(self, side, img):
        if side.fmt == 'raw':
            # Stock's and kvmsave's default format: plain `virsh save` (the
            # bench roots' qemu.conf sets no save_image_format and they hold
            # no kvmsave configuration, so each driver's default, raw).
            return side.prefix + ['save', side.name, img]
        if side.scheme == 'qemu':
            return side.prefix + stock_save_args(side.fmt) + [side.name, img]
        fmt, _, channels = side.fmt.partition(':')
        fmt = lazy_save_format(fmt) or fmt
        if self.virsh_params:
            # libvirt 11.2+'s virsh passes the same typed parameters, so
            # these rows run in virsh like stock's.
            return side.prefix + ['save', '--image-format', fmt,
                                  '--parallel-channels', channels or '1', side.name, img]
        # Other formats, and multifd: virsh 9.0 has no option for typed
        # parameters; the Python binding calls virDomainSaveParams with
        # 'image_format' and 'parallel.channels'.
        return [self.runwrap, h.SYSTEM_PYTHON, '-c', PY_SAVE, side.uri, side.name, img,
                fmt, channels or '1']

    def restore_argv(self, side, img):
        if side.scheme == 'qemu':
            return side.prefix + stock_restore_args(side.fmt) + [img]
        return side.prefix + ['restore', img]

    def noop_argv(self, side):
        if side.scheme == 'qemu' or side.fmt == 'raw' or self.virsh_params:
            return side.prefix + ['domstate', side.name]
        return [self.runwrap, h.SYSTEM_PYTHON, '-c', PY_NOOP, side.uri, side.name]

    # -- the disk --------------------------------------------------------

    def run_disk(self, rep):
        """The disk's own sequential write (with fdatasync) of as many bytes
        as each image, and its cold sequential read of each image."""
        for s in self.sides:
            s.suspend()
        d = {'repeat': rep, 'write_s': {}, 'read_s': {}, 'bytes': {}}
        order = self.sides if rep % 2 == 0 else list(reversed(self.sides))
        for _ in range(self.args.disk_runs):
            for s in order:
                img = self.image_path(s, rep)
                n = stored_bytes(*image_size(img))
                f = os.path.join(self.scratch, 'dd.tmp')
                drop_caches()
                run = timed(['dd', 'if=/dev/zero', f'of={f}', 'bs=4M', f'count={n}',
                             'iflag=count_bytes', 'conv=fdatasync', 'status=none'], env=clean_env())
                run.check('dd write')
                os.unlink(f)
                d['write_s'].setdefault(s.label, []).append(run.seconds)
                d['bytes'][s.label] = n
                drop_caches()
                run = timed(['dd', f'if={img}', 'of=/dev/null', 'bs=4M', 'status=none'], env=clean_env())
                run.check('dd read')
                d['read_s'].setdefault(s.label, []).append(run.seconds)
        self.disk.append(d)
        if self.args.verbose:
            fmt = lambda xs: '/'.join(f'{x:.3f}' for x in xs)  # noqa: E731
            print('  r%d disk          ' % rep + '  '.join(
                f'{k}: write {fmt(d["write_s"][k])}s read {fmt(d["read_s"][k])}s ({d["bytes"][k]} B)'
                for k in d['write_s']), flush=True)
        if not self.args.keep:
            for s in self.sides:
                try:
                    os.unlink(self.image_path(s, rep))
                except FileNotFoundError:
                    pass

    # -- the run -----------------------------------------------------------

    def allow_userfaultfd(self):
        """Lazy rows: the bench roots' QEMU runs as libvirt-qemu without
        the mount namespace in which libvirt would grant it
        /dev/userfaultfd, so unprivileged userfaultfd is allowed for the
        run, and the host's setting put back in teardown (kvmsave itself
        never changes it)."""
        if not any(s.lazy for s in self.sides):
            return
        with open(UFFD_SYSCTL) as fh:
            self.uffd_old = fh.read().strip()
        with open(UFFD_SYSCTL, 'w') as fh:
            fh.write('1')

    def run(self):
        a = self.args
        self.machine = machine_info(a.dir)
        if a.reap:
            h.QemuReaper(interval=0.002).start()
        self.setup()
        self.allow_userfaultfd()
        for rep in range(a.repeat):
            # Alternate the order of the drivers from one repeat to the next.
            order = self.sides if rep % 2 == 0 else list(reversed(self.sides))
            busy = others_running([s.root for s in self.sides])
            if busy:
                note('warning: other guests or test runs on this host: ' + ', '.join(busy))
                self.noise = sorted(set(getattr(self, 'noise', [])) | set(busy))
            note(f'repeat {rep + 1}/{a.repeat}: ' + ', then '.join(s.label for s in order))
            for s in order:
                self.run_side(s, rep)
            self.start_paused(rep)
            self.run_disk(rep)
        for s in self.sides:
            # Not of a guest restored lazily: stock cannot restore what it
            # saves of it (kvmsave(7), "Lazy restore"), and its image is
            # a sparse one's.
            if s.scheme == 'kvmsave' and not s.lazy:
                self.same_guest_sizes(s)

    def same_guest_sizes(self, side):
        """Image sizes of one guest state, kvmsave's and stock's (untimed).

        The timed rows compare two guests, whose memory differs a little
        outside the data region (a few MiB, more with --fill zero).  Here
        the kvmsave guest is saved by kvmsave, restored, and at once saved
        by stock libvirt on the same root (plain virsh on qemu:///embed,
        which makes libvirt probe QEMU again: untimed), then restored by
        stock libvirt, once in each of --stock-formats: the same guest a
        few seconds apart.  Sizes are the bytes stored (stored_bytes).
        """
        for other in self.sides:
            if other is not side:
                other.suspend()
        side.resume()
        a = os.path.join(side.imgdir, 'same-kvmsave.img')
        stock = h.Virsh(['virsh', '-c', h.embed_uri(side.root, 'qemu')], env=clean_env())
        wait_quiet(side.console, self.guest_timeout())
        n, boot = side.console.last_heartbeat()
        timed(self.save_argv(side, a), env=side.env).check(f'{side.label} save (same guest)', side)
        timed(self.restore_argv(side, a), env=side.env).check(f'{side.label} restore (same guest)', side)
        side.console.assert_continued(n, boot, side.md5, timeout=self.guest_timeout())
        g = {'kvmsave_bytes': stored_bytes(*image_size(a)), 'stock': {}}
        for fmt in self.args.stock_formats:
            b = os.path.join(side.imgdir, f'same-stock-{fmt.replace(":", "-")}.img')
            stock.run(*(stock_save_args(fmt) + [side.name, b]), timeout=600)
            stock.run(*(stock_restore_args(fmt) + [b]), timeout=600)
            side.console.assert_continued(n, boot, side.md5, timeout=self.guest_timeout())
            g['stock'][stock_label(fmt)] = stored_bytes(*image_size(b))
            if not self.args.keep:
                os.unlink(b)
        # The first stock row's, as before --stock-formats; and the smallest.
        g['stock_bytes'] = g['stock'][stock_label(self.args.stock_formats[0])]
        g['stock_smallest'] = min(g['stock'], key=g['stock'].get)
        self.same_guest[side.label] = g
        side.virsh.run('capabilities', timeout=300)     # probe again for kvmsave
        side.suspend()
        if not self.args.keep:
            os.unlink(a)
        if self.args.verbose:
            print(f'  same guest      {side.label}: {g["kvmsave_bytes"]} B, stock libvirt: ' +
                  ', '.join(f'{k} {v} B ({g["kvmsave_bytes"] / v:.4f})' for k, v in g['stock'].items()),
                  flush=True)

    def teardown(self):
        if self.uffd_old is not None:
            with open(UFFD_SYSCTL, 'w') as fh:
                fh.write(self.uffd_old)
        for s in self.sides:
            try:
                s.resume()
                t = timed(s.prefix + ['destroy', s.name], env=s.env)
                self.destroys[s.label] = t.seconds
            except Exception:       # noqa: BLE001 - cleanup below kills QEMU anyway
                pass
            if not self.args.keep:
                h.cleanup_root(s.root, s.virsh)
        if self.scratch and not self.args.keep:
            shutil.rmtree(self.scratch, ignore_errors=True)

    # -- results -----------------------------------------------------------

    def results(self):
        a = self.args
        res = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               'command': ' '.join([os.path.relpath(sys.argv[0], TOP)] + sys.argv[1:]),
               'config': {'memory_mib': a.memory, 'data_mib': a.data, 'fill': a.fill,
                          'repeat': a.repeat, 'formats': a.formats,
                          'stock_formats': a.stock_formats, 'disk_runs': a.disk_runs,
                          'reap': a.reap, 'settle_s': a.settle,
                          'kvmsave_run': os.path.abspath(a.run),
                          # bench/run --release: the host tree's, not the chroot's copy's
                          'kvmsave_tree': os.environ.get('KVMSAVE_BENCH_TREE') or
                                          tree_version(os.path.dirname(os.path.abspath(a.run)))},
               'machine': self.machine,
               'noise': getattr(self, 'noise', []),
               'rows': {}, 'samples': {}, 'disk_samples': self.disk,
               'final_destroy_s': self.destroys,
               'start_paused_s': median(self.paused_starts),
               'start_paused_samples': self.paused_starts,
               'same_guest_sizes': self.same_guest}
        for s in self.sides:
            sm = s.samples
            row = {
                'driver': 'stock' if s.scheme == 'qemu' else 'kvmsave',
                'format': s.fmt,
                'save_s': median([x['save_s'] for x in sm]),
                'restore_s': median([x['restore_s'] for x in sm]),
                'heartbeat_s': median([x['heartbeat_s'] for x in sm]),
                'restore_done_s': median([x['restore_done_s'] for x in sm]),
                'pagesrv_rss_mib': max(x['pagesrv_rss_mib'] for x in sm),
                'lazy': s.lazy,
                'exit_crashes': s.exit_crashes,
                'image_bytes': int(median([x['image_bytes'] for x in sm])),
                'image_alloc_bytes': int(median([x['image_alloc_bytes'] for x in sm])),
                'image_stored_bytes': int(median([stored_bytes(x['image_bytes'], x['image_alloc_bytes'])
                                                  for x in sm])),
                'save_rss_mib': max(x['save_rss_mib'] for x in sm),
                'restore_rss_mib': max(x['restore_rss_mib'] for x in sm),
                'noop_rss_mib': max(x['noop_rss_mib'] for x in sm),
                'noop_s': median([x['noop_s'] for x in sm]),
                'disk_write_s': median([x for d in self.disk for x in d['write_s'][s.label]]),
                'disk_read_s': median([x for d in self.disk for x in d['read_s'][s.label]]),
                'save_stages': {k: median([x['save_stages'].get(k) for x in sm])
                                for k in sm[0]['save_stages']},
                'restore_stages': {k: median([x['restore_stages'].get(k) for x in sm])
                                   for k in sm[0]['restore_stages']},
            }
            res['rows'][s.label] = row
            res['samples'][s.label] = sm
        # Every ratio is against stock's best row for that column: with one
        # stock row (Debian 12's default), that row.
        stock = {k: r for k, r in res['rows'].items() if r['driver'] == 'stock'}
        best = {'save': min(stock, key=lambda k: stock[k]['save_s']),
                'restore': min(stock, key=lambda k: stock[k]['restore_s']),
                'image': min(stock, key=lambda k: stock[k]['image_stored_bytes'])}
        res['stock_best'] = best
        for label, row in res['rows'].items():
            row['save_speedup_vs_stock'] = stock[best['save']]['save_s'] / row['save_s']
            row['restore_speedup_vs_stock'] = stock[best['restore']]['restore_s'] / row['restore_s']
            row['save_vs_disk'] = row['save_s'] / row['disk_write_s']
            row['restore_vs_disk'] = row['restore_s'] / row['disk_read_s']
            row['image_vs_stock'] = (row['image_stored_bytes'] /
                                     stock[best['image']]['image_stored_bytes'])
            g = self.same_guest.get(label)
            if g:
                # Same guest state: the fair size ratio, against stock's
                # smallest image of that state.
                row['image_vs_stock'] = g['kvmsave_bytes'] / g['stock'][g['stock_smallest']]
        return res


def parse_args(argv):
    p = argparse.ArgumentParser(
        description='Benchmark kvmsave against stock libvirt save/restore and the disk.')
    p.add_argument('--memory', type=int, default=1024, help='guest RAM, MiB (default 1024)')
    p.add_argument('--data', type=int, default=512,
                   help='MiB of data the guest fills and checks (default 512)')
    p.add_argument('--fill', choices=h.FILLS, default='random',
                   help='content of the data: random, text (compressible), zero (default random)')
    p.add_argument('--repeat', type=int, default=3, help='repeats (default 3)')
    p.add_argument('--formats', default='raw',
                   help='comma-separated kvmsave image formats (default raw)')
    p.add_argument('--stock-formats', default='raw',
                   help='comma-separated stock libvirt save image formats, one row each: '
                        'raw, gzip, bzip2, xz, lzop, zstd, sparse, sparse:N (N parallel '
                        'channels); all but raw need libvirt 11.2+ (default raw)')
    p.add_argument('--disk-runs', type=int, default=3,
                   help='dd runs per image and repeat (default 3; all go into the median)')
    p.add_argument('--dir', default='/var/tmp',
                   help='where roots and images go (default /var/tmp; the disk measured)')
    p.add_argument('--run', default=os.path.join(TOP, 'run'),
                   help="the build tree's ./run wrapper (default: the one next to bench/)")
    p.add_argument('--reap', action='store_true',
                   help='become a child subreaper and reap exited QEMUs at once (as systemd '
                        'would), instead of leaving them to this machine\'s PID 1')
    p.add_argument('--settle', type=float, default=0, metavar='S',
                   help='seconds to wait after the cache drop before each restore and '
                        'paused start, so that the memory the save freed is no longer '
                        'backed on a host whose balloon reports freed pages (default 0)')
    p.add_argument('--json', metavar='FILE', help='write all results and samples as JSON')
    p.add_argument('--verbose', '-v', action='store_true',
                   help='print every sample and the stage breakdown')
    p.add_argument('--keep', action='store_true', help='keep the roots, images and logs')
    a = p.parse_args(argv)
    a.formats = [f for f in a.formats.split(',') if f]
    if not a.formats:
        p.error('--formats needs at least one format')
    a.stock_formats = parse_stock_formats(p, a.stock_formats)
    if a.data >= a.memory:
        p.error('--data must be smaller than --memory')
    if a.repeat < 1 or a.disk_runs < 1:
        p.error('--repeat and --disk-runs must be at least 1')
    return a


def main(argv=None):
    a = parse_args(argv)
    if os.geteuid() != 0:
        die('needs root (drop_caches, embedded QEMU)')
    if not os.access(a.run, os.X_OK):
        die(f'{a.run} is missing: build kvmsave first (scripts/build), or give --run')
    try:
        h.guest_paths()
    except FileNotFoundError as e:
        die(f'{e} (bench/run builds it)')
    stock_preflight(a.stock_formats)
    bench = Bench(a)
    try:
        bench.run()
    finally:
        bench.teardown()
    res = bench.results()
    if a.verbose:
        print(format_stages(res))
    print(format_table(res), flush=True)
    for label, row in res['rows'].items():
        if row['exit_crashes']:
            print(f'{label}: virsh died by SIGSEGV after its answer in '
                  f'{len(row["exit_crashes"])} steps: {", ".join(row["exit_crashes"])}')
    if a.json:
        with open(a.json, 'w') as fh:
            json.dump(res, fh, indent=2, sort_keys=False)
            fh.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
