# SPDX-License-Identifier: LGPL-2.1-or-later
"""Run Debian's virt-manager under Xvfb and drive it through AT-SPI (dogtail).

Used by test_virt_manager.py.  Two halves:

* `VirtManagerSession` lives in the pytest process.  It starts a private X
  server (Xvfb), a private D-Bus session bus (the AT-SPI bus is activated
  on it), GLib settings in a file of its own, virt-manager on one
  connection URI, and an *agent* subprocess; it never touches the pytest
  process's own environment.
* The agent (``/usr/bin/python3 vmm_driver.py agent``) runs in the GUI
  environment, imports dogtail and answers one JSON request per line on
  stdin (see `Agent`).  Keeping dogtail out of the pytest process means its
  environment (DISPLAY, the accessibility bus) and its logging stay out of
  the other tests, and a hung AT-SPI call can be ended by ending the agent.

Widgets are found through the accessibility tree by role and name (the
names virt-manager gives them, in the C locale) and operated through their
AT-SPI actions ("click").  The one exception is selecting a row of the VM
list: GTK 3's tree view accessible refuses AtkSelection with more than one
column (the manager has two), so the row's cell is focused through
AtkComponent.grabFocus (which puts the tree view's cursor, hence the
selection, on the row) and, only if that does not select it, clicked with
XTest at the cell's extents as reported by AT-SPI (no fixed coordinates).

Every process started here runs in its own session (process group) and is
ended by its own pid or process-group id, never by name.
"""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEM_PYTHON = '/usr/bin/python3'

# Programs and Python modules the session needs, with the Debian package
# that provides each (all listed in scripts/packages.txt).
REQUIREMENTS = [
    ('virt-manager', 'virt-manager'),
    ('Xvfb', 'xvfb'),
    ('dbus-daemon', 'dbus-daemon'),
    ('gsettings', 'libglib2.0-bin'),
    ('/usr/share/glib-2.0/schemas/org.gnome.desktop.interface.gschema.xml',
     'gsettings-desktop-schemas'),
    ('import', 'imagemagick'),
    ('/usr/libexec/at-spi-bus-launcher', 'at-spi2-core'),
]
PY_REQUIREMENTS = [('dogtail', 'python3-dogtail'), ('pyatspi', 'python3-pyatspi')]

MANAGER_TITLE = 'Virtual Machine Manager'


def missing_requirements():
    """Debian packages missing for a session (empty list: all there)."""
    missing = []
    for prog, pkg in REQUIREMENTS:
        if os.path.isabs(prog):
            if not os.path.exists(prog):
                missing.append(pkg)
        elif shutil.which(prog) is None:
            missing.append(pkg)
    for mod, pkg in PY_REQUIREMENTS:
        probe = subprocess.run([SYSTEM_PYTHON, '-c', f'import importlib.util, sys; '
                                f'sys.exit(importlib.util.find_spec({mod!r}) is None)'],
                               capture_output=True)
        if probe.returncode != 0:
            missing.append(pkg)
    return missing


def take_screenshot(path, env):
    """PNG of the whole X screen (ImageMagick's import), or None on failure."""
    proc = subprocess.run(['import', '-window', 'root', path], env=env,
                          capture_output=True, timeout=60)
    return path if proc.returncode == 0 and os.path.exists(path) else None


def _read_line(fh, timeout, what):
    """One line from a pipe within `timeout` seconds (str, without newline)."""
    deadline = time.monotonic() + timeout
    buf = b''
    fd = fh.fileno()
    while not buf.endswith(b'\n'):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f'timed out after {timeout}s waiting for {what}')
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 1)
        if not chunk:
            raise EOFError(f'{what}: pipe closed (got {buf!r})')
        buf += chunk
    return buf.decode().rstrip('\n')


class AgentError(AssertionError):
    """The agent reported a failure (its message names what it saw)."""


class GuiError(RuntimeError):
    """virt-manager shows an error dialog (raised in the agent)."""


class VirtManagerSession:
    """Xvfb + D-Bus session + virt-manager on `uri` + a dogtail agent.

    `launcher` is a command prefix for virt-manager (e.g. ``['./run']``, so
    that it loads the build tree's plugin).  `workdir` holds the session's
    HOME, XDG directories and sockets; `artifacts` receives virt-manager's
    log, the agent's log and screenshots.  Use as a context manager, or
    call `start()` and `close()`.
    """

    def __init__(self, uri, workdir, artifacts, launcher=(), screen='1280x1024x24'):
        self.uri = uri
        self.workdir = workdir
        self.artifacts = artifacts
        self.launcher = list(launcher)
        self.screen = screen
        self.env = None
        self.display = None
        self.xvfb = self.dbus = self.vmm = self.agent = None
        self._logs = []
        self.timings = {}

    # -- set-up -----------------------------------------------------------

    def start(self, timeout=120):
        try:
            self._start(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _start(self, timeout):
        dirs = {k: os.path.join(self.workdir, k) for k in
                ('home', 'config', 'cache', 'data', 'run', 'tmp')}
        for d in dirs.values():
            os.makedirs(d, mode=0o700, exist_ok=True)
        os.makedirs(self.artifacts, exist_ok=True)

        t0 = time.monotonic()
        self.display = self._start_xvfb(timeout)
        env = {k: v for k, v in os.environ.items()
               if k not in ('WAYLAND_DISPLAY', 'AT_SPI_BUS_ADDRESS', 'NO_AT_BRIDGE',
                            'GTK_MODULES', 'LANGUAGE', 'LC_MESSAGES', 'SESSION_MANAGER',
                            'DBUS_SESSION_BUS_ADDRESS', 'XAUTHORITY', 'PYTHONPATH')}
        env.update({
            'DISPLAY': self.display,
            'GDK_BACKEND': 'x11',
            'HOME': dirs['home'],
            'XDG_CONFIG_HOME': dirs['config'],
            'XDG_CACHE_HOME': dirs['cache'],
            'XDG_DATA_HOME': dirs['data'],
            'XDG_RUNTIME_DIR': dirs['run'],
            'TMPDIR': dirs['tmp'],           # dogtail's scratch and log dirs
            # GLib's own keyfile backend (XDG_CONFIG_HOME/glib-2.0/settings):
            # settings written by `gsettings` below are read by virt-manager
            # and dogtail without a dconf service.
            'GSETTINGS_BACKEND': 'keyfile',
            # Widget names are matched in English.
            'LANG': 'C.UTF-8',
            'LC_ALL': 'C.UTF-8',
        })
        self.env = env
        env['DBUS_SESSION_BUS_ADDRESS'] = self._start_dbus(timeout)
        self._gsettings()
        self.timings['x_and_dbus_s'] = round(time.monotonic() - t0, 2)

        t0 = time.monotonic()
        log = open(os.path.join(self.artifacts, 'virt-manager.log'), 'wb')
        self._logs.append(log)
        self.vmm = subprocess.Popen(
            self.launcher + ['virt-manager', '--no-fork', '--debug', '--connect', self.uri],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, start_new_session=True)

        alog = open(os.path.join(self.artifacts, 'agent.log'), 'wb')
        self._logs.append(alog)
        self.agent = subprocess.Popen(
            [SYSTEM_PYTHON, os.path.abspath(__file__), 'agent'],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=alog,
            env=env, start_new_session=True)
        _read_line(self.agent.stdout, timeout, 'the agent to start')   # "ready"
        self.timings['agent_start_s'] = round(time.monotonic() - t0, 2)

    def _start_xvfb(self, timeout):
        rfd, wfd = os.pipe()
        log = open(os.path.join(self.artifacts, 'xvfb.log'), 'wb')
        self._logs.append(log)
        try:
            # -displayfd: Xvfb picks a free display and writes its number
            # once it accepts connections.
            self.xvfb = subprocess.Popen(
                ['Xvfb', '-displayfd', str(wfd), '-screen', '0', self.screen,
                 '-nolisten', 'tcp', '-noreset'],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                pass_fds=(wfd,), start_new_session=True)
        finally:
            os.close(wfd)
        with os.fdopen(rfd, 'rb', buffering=0) as fh:
            number = _read_line(fh, timeout, 'Xvfb to report its display')
        return ':' + number.strip()

    def _start_dbus(self, timeout):
        # A session bus of our own: at-spi-bus-launcher (the accessibility
        # bus and its registry) is activated on it.  Its own process
        # group, so that the services it activates end with it.
        self.dbus = subprocess.Popen(
            ['dbus-daemon', '--session', '--nofork', '--nopidfile', '--print-address=1'],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=self.env, start_new_session=True)
        return _read_line(self.dbus.stdout, timeout, 'dbus-daemon to report its address')

    def _gsettings(self):
        # In this session's own settings file (XDG_CONFIG_HOME is the session's):
        # dogtail refuses to run unless toolkit accessibility is on, and
        # virt-manager's confirmation before save/shutdown is pinned off
        # (its default) so that the test does not depend on the default.
        for schema, key, value in [
                ('org.gnome.desktop.interface', 'toolkit-accessibility', 'true'),
                ('org.virt-manager.virt-manager.confirm', 'poweroff', 'false')]:
            subprocess.run(['gsettings', 'set', schema, key, value], env=self.env,
                           check=True, capture_output=True, timeout=60)

    # -- use --------------------------------------------------------------

    def call(self, cmd, **args):
        """Run an agent command; return its result or raise AgentError.

        The agent's own timeout is the command's `timeout` argument (120 s
        if it has none); the reply is awaited a minute longer.
        """
        if self.agent is None or self.agent.poll() is not None:
            raise AgentError(f'the agent is not running (command {cmd})')
        timeout = args.get('timeout', 120)
        req = json.dumps({'cmd': cmd, 'args': args}) + '\n'
        self.agent.stdin.write(req.encode())
        self.agent.stdin.flush()
        try:
            reply = json.loads(_read_line(self.agent.stdout, timeout + 60,
                                          f'the agent to answer {cmd}'))
        except (TimeoutError, EOFError) as e:
            raise AgentError(f'{e}\n{self.vmm_log_tail()}') from None
        if not reply['ok']:
            raise AgentError(f'{cmd}: {reply["error"]}\n{self.vmm_log_tail()}')
        return reply['result']

    def screenshot(self, name):
        return take_screenshot(os.path.join(self.artifacts, name), self.env)

    def vmm_log(self):
        try:
            with open(os.path.join(self.artifacts, 'virt-manager.log'), errors='replace') as fh:
                return fh.read()
        except OSError:
            return ''

    def vmm_log_tail(self, n=40):
        return '--- tail of virt-manager.log ---\n' + '\n'.join(self.vmm_log().splitlines()[-n:])

    def wait_vmm_exit(self, timeout=60):
        """Wait for virt-manager to exit (it then no longer holds the root)."""
        try:
            return self.vmm.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f'virt-manager did not exit within {timeout}s\n'
                                 f'{self.vmm_log_tail()}') from None

    # -- tear-down --------------------------------------------------------

    @staticmethod
    def _end(proc, group=False, grace=10):
        """End a process we started: SIGTERM, then SIGKILL (its group if asked)."""
        if proc is None:
            return
        pgid = proc.pid      # start_new_session: the group id is the pid

        def signal_it(sig):
            try:
                if group:
                    os.killpg(pgid, sig)
                elif proc.poll() is None:
                    proc.send_signal(sig)
            except ProcessLookupError:
                pass
        if proc.poll() is None or group:
            signal_it(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                signal_it(signal.SIGKILL)
                proc.wait(timeout=grace)
            if group:
                # Members of the group that outlive its leader (activated
                # services): give them a moment, then kill what is left.
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline:
                    try:
                        os.killpg(pgid, 0)
                    except ProcessLookupError:
                        break
                    time.sleep(0.1)
                else:
                    signal_it(signal.SIGKILL)
        for stream in (proc.stdin, proc.stdout):
            if stream:
                stream.close()

    def close(self):
        if self.agent is not None and self.agent.poll() is None:
            try:
                self.agent.stdin.close()      # EOF: the agent exits
                self.agent.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._end(self.agent)
        self._end(self.vmm, grace=30)
        self._end(self.dbus, group=True)
        self._end(self.xvfb)
        self.agent = self.vmm = self.dbus = self.xvfb = None
        for fh in self._logs:
            fh.close()
        self._logs = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------
# The agent: runs in the GUI environment, imports dogtail.
# ---------------------------------------------------------------------------

class Agent:
    """Commands on virt-manager's manager window, through dogtail/AT-SPI.

    Each public method is a command; arguments come as keywords, results
    must be JSON-serializable.  Failures raise RuntimeError with a message
    that says what was on screen.
    """

    def __init__(self, tree, env):
        self.tree = tree
        self.env = env
        self.app = None

    # -- finding things ----------------------------------------------------

    def _wait(self, what, timeout, fn, poll=0.2):
        """Poll fn() until it returns something true; fail early on an
        error dialog."""
        deadline = time.monotonic() + timeout
        while True:
            if self.app is not None:
                self._check_errors()
            try:
                result = fn()
            except GuiError:
                raise
            except Exception:           # the tree changes under us
                result = None
            if result:
                return result
            if time.monotonic() >= deadline:
                raise RuntimeError(f'timed out after {timeout}s waiting for {what}')
            time.sleep(poll)

    def _find_app(self):
        for app in self.tree.root.applications():
            if app.name == 'virt-manager':
                return app
        return None

    def _windows(self):
        return [w for w in self.app.children if w is not None]

    def _manager(self):
        for w in self._windows():
            if w.name == MANAGER_TITLE:
                return w
        raise RuntimeError('the manager window is gone')

    def _find(self, root, role, name=None, pred=None):
        def match(n):
            return (n.roleName == role and (name is None or n.name == name)
                    and (pred is None or pred(n)))
        return root.findChild(match, retry=False, requireResult=False)

    def _vm_cell(self, vmname):
        table = self._find(self._manager(), 'tree table', 'vm-list')
        if table is None:
            return None
        return self._find(table, 'table cell',
                          pred=lambda n: n.name.split('\n')[0] == vmname and '\n' in n.name)

    @staticmethod
    def _texts(win):
        out = []
        for n in win.findChildren(lambda n: n.roleName in ('label', 'push button', 'alert'),
                                  showingOnly=False):
            if n.name:
                out.append(n.name)
        return out

    def _dialogs(self):
        """Windows other than the manager: [(title, role, texts, progress)]."""
        out = []
        for w in self._windows():
            if w.name == MANAGER_TITLE:
                continue
            try:
                if not w.showing:
                    continue
                pbar = self._find(w, 'progress bar')
                frac = None
                if pbar is not None:
                    frac = pbar.queryValue().currentValue
                out.append({'title': w.name, 'role': w.roleName, 'texts': self._texts(w),
                            'fraction': frac})
            except Exception:               # it closed while we looked
                continue
        return out

    def _check_errors(self):
        """Raise GuiError if virt-manager shows an error or warning dialog."""
        for d in self._dialogs():
            if d['role'] == 'alert' or d['title'].startswith('Error') or \
                    any(t.startswith('Error') for t in d['texts']):
                raise GuiError(f'virt-manager shows an error: {d["title"]!r}: {d["texts"]}')

    # -- commands ----------------------------------------------------------

    def wait_connected(self, timeout=120):
        """Wait for virt-manager's manager window and its connection row.

        Returns the connection row's label and the VM rows (name\\nstatus).
        """
        t0 = time.monotonic()
        self.app = self._wait('virt-manager on the accessibility bus', timeout,
                              self._find_app)
        table = self._wait('the manager window', timeout,
                           lambda: self._find(self._manager(), 'tree table', 'vm-list'))

        def rows():
            cells = [c.name for c in table.findChildren(
                lambda n: n.roleName == 'table cell' and n.name, showingOnly=False)]
            # virt-manager labels the connection row "... - Connecting..."
            # until the initial poll is done.
            if cells and not any('Connecting' in c for c in cells):
                return cells
            return None
        cells = self._wait('the connection row', timeout, rows)
        return {'rows': cells, 'seconds': round(time.monotonic() - t0, 2)}

    def wait_vm(self, name, timeout=60):
        cell = self._wait(f'VM {name} in the list', timeout, lambda: self._vm_cell(name))
        return cell.name.split('\n', 1)[1]

    def vm_status(self, name):
        cell = self._vm_cell(name)
        if cell is None:
            raise RuntimeError(f'VM {name} is not in the list')
        return cell.name.split('\n', 1)[1]

    def settle(self, timeout=60, pause=1.0):
        """Wait until only the manager window is left, then let GTK repaint.

        AT-SPI shows a new status as soon as the list model changes; the
        window is redrawn on a later frame.  After `pause` seconds, one more
        call into the application makes sure its main loop is running, so
        a screenshot taken next shows the state the test just checked.
        """
        self._wait('progress dialogs to close', timeout, lambda: not self._dialogs())
        time.sleep(pause)
        return self._manager().name

    def select_vm(self, name, timeout=30):
        """Make `name` the selected row; returns how ('focus' or 'click')."""
        cell = self._vm_cell(name)
        if cell is None:
            raise RuntimeError(f'VM {name} is not in the list')
        opened = self._find(self._manager(), 'push button', 'Open')

        def selected():
            return opened is not None and opened.sensitive
        cell.grabFocus()
        try:
            self._wait('the row to be selected by focus', 3, selected)
            return 'focus'
        except GuiError:
            raise
        except RuntimeError:
            pass
        cell.click()            # XTest at the cell's AT-SPI extents
        self._wait(f'VM {name} to be selected', timeout, selected)
        return 'click'

    def toolbar(self):
        """Sensitivity of the toolbar buttons and of the shutdown menu."""
        mgr = self._manager()
        tb = self._find(mgr, 'tool bar')
        state = {}
        for n in tb.findChildren(lambda n: n.roleName in ('push button', 'toggle button'),
                                 showingOnly=False):
            state[n.name] = n.sensitive
        menu = self._find(tb, 'toggle button', 'Menu')
        for n in menu.findChildren(lambda n: n.roleName == 'menu item', showingOnly=False):
            state['Menu/' + n.name] = n.sensitive
        return state

    def _activate(self, node, what):
        if node is None:
            raise RuntimeError(f'{what} not found')
        if not node.sensitive:
            raise RuntimeError(f'{what} is not sensitive')
        node.doActionNamed('click')

    def _watch(self, name, want, timeout, shots, t0):
        """Poll until VM `name` shows status `want`; follow dialogs meanwhile.

        `shots` maps a dialog title to a screenshot path prefix: its first
        sighting is saved as PREFIX.png, and (for a progress dialog) the
        first sighting with a moving progress bar as PREFIX-progress.png.
        """
        seen = {}
        status_log = []
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            try:
                status = self.vm_status(name)
            except Exception:
                status = None
            if not status_log or status_log[-1][1] != status:
                status_log.append((round(now - t0, 2), status))
            for d in self._dialogs():
                rec = seen.setdefault(d['title'], {
                    'role': d['role'], 'first_s': round(now - t0, 2), 'texts': [],
                    'max_fraction': None, 'fractions': []})
                rec['last_s'] = round(now - t0, 2)
                for t in d['texts']:
                    if t not in rec['texts']:
                        rec['texts'].append(t)
                f = d['fraction']
                if f is not None:
                    if not rec['fractions'] or rec['fractions'][-1][1] != round(f, 3):
                        rec['fractions'].append((round(now - t0, 2), round(f, 3)))
                    rec['max_fraction'] = max(f, rec['max_fraction'] or 0.0)
                prefix = shots.get(d['title'])
                if prefix and 'shot' not in rec:
                    rec['shot'] = take_screenshot(prefix + '.png', self.env)
                if prefix and f and 'shot_progress' not in rec:
                    rec['shot_progress'] = take_screenshot(prefix + '-progress.png', self.env)
            self._check_errors()
            if status == want:
                return {'seconds': round(now - t0, 2), 'dialogs': seen,
                        'statuses': status_log}
            if now >= deadline:
                raise RuntimeError(f'timed out after {timeout}s waiting for {name} to '
                                   f'show {want!r}; statuses {status_log}, dialogs {seen}')
            time.sleep(0.1)

    def save(self, name, timeout=180, shot_prefix=None):
        """Shut Down menu > Save (a managed save); wait for status Saved.

        The menu is opened first (the toolbar's menu button), as a user
        would, and shot as SHOT_PREFIX-menu.png.
        """
        self.select_vm(name)
        menu = self._find(self._find(self._manager(), 'tool bar'), 'toggle button', 'Menu')
        item = self._find(menu, 'menu item', 'Save')
        self._activate(menu, 'the Shut Down menu button')
        self._wait('the Shut Down menu to open', 30, lambda: item.showing)
        if shot_prefix:
            time.sleep(0.5)                 # let it paint
            take_screenshot(shot_prefix + '-menu.png', self.env)
        t0 = time.monotonic()
        self._activate(item, 'menu item Save')
        shots = {'Saving Virtual Machine': shot_prefix} if shot_prefix else {}
        return self._watch(name, 'Saved', timeout, shots, t0)

    def run(self, name, timeout=180, shot_prefix=None):
        """The Run button, labelled "Restore" for a saved VM; wait for Running."""
        self.select_vm(name)
        mgr = self._manager()
        button = self._find(mgr, 'push button', 'Restore') or self._find(mgr, 'push button', 'Run')
        if button is None:
            raise RuntimeError('neither a Restore nor a Run button')
        label = button.name
        t0 = time.monotonic()
        self._activate(button, f'push button {label}')
        shots = {'Restoring Virtual Machine': shot_prefix} if shot_prefix else {}
        result = self._watch(name, 'Running', timeout, shots, t0)
        result['button'] = label
        return result

    def quit(self):
        """File > Quit."""
        item = self._find(self._manager(), 'menu item', 'Quit')
        self._activate(item, 'menu item Quit')
        return True


def agent_main():
    # Requests come on stdin, replies go to the original stdout; dogtail
    # prints its own chatter on stdout, so fd 1 becomes stderr (the log).
    proto = os.fdopen(os.dup(1), 'w', buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    from dogtail import config
    config.config.logDebugToFile = False
    config.config.actionDelay = 0.1
    config.config.defaultDelay = 0.1
    config.config.searchBackoffDuration = 0.2
    from dogtail import tree

    agent = Agent(tree, dict(os.environ))
    proto.write('ready\n')
    for line in sys.stdin:
        req = json.loads(line)
        t0 = time.monotonic()
        print(f'>>> {req}', file=sys.stderr, flush=True)
        try:
            fn = getattr(agent, req['cmd'])
            if req['cmd'].startswith('_') or not callable(fn):
                raise AttributeError(req['cmd'])
            reply = {'ok': True, 'result': fn(**req['args'])}
        except Exception as e:
            import traceback
            traceback.print_exc()
            reply = {'ok': False, 'error': f'{type(e).__name__}: {e}'}
        print(f'<<< {time.monotonic() - t0:.2f}s {reply}', file=sys.stderr, flush=True)
        proto.write(json.dumps(reply) + '\n')


if __name__ == '__main__':
    if sys.argv[1:] == ['agent']:
        agent_main()
    else:
        sys.exit('usage: vmm_driver.py agent   (started by VirtManagerSession)')
