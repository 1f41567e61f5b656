#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A stand-in for systemd-logind on a private system bus (test_autosave.py).

    fake_logind.py BUS_ADDRESS

Owns org.freedesktop.login1 on the bus at BUS_ADDRESS and serves the two
parts of logind's shutdown protocol that libvirt uses: the method
org.freedesktop.login1.Manager.Inhibit, which hands back a pipe's write end
as the inhibitor lock (a "delay" lock holds the shutdown back until its
holder closes it), and the signal PrepareForShutdown(true), sent on
SIGUSR1 as logind sends it when a shutdown begins. It reports on stdout,
one line each: "ready" once it owns the name, "inhibit WHAT MODE" for each
lock handed out, "prepare-for-shutdown" once the signal is sent,
"released" when a lock's last holder closed it. SIGTERM ends it.
"""

import os
import signal
import sys

import gi
gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib  # noqa: E402

NAME = 'org.freedesktop.login1'
PATH = '/org/freedesktop/login1'
IFACE = 'org.freedesktop.login1.Manager'
INTROSPECTION = f'''<node><interface name="{IFACE}">
  <method name="Inhibit">
    <arg name="what" type="s" direction="in"/>
    <arg name="who" type="s" direction="in"/>
    <arg name="why" type="s" direction="in"/>
    <arg name="mode" type="s" direction="in"/>
    <arg name="fd" type="h" direction="out"/>
  </method>
  <signal name="PrepareForShutdown"><arg name="start" type="b"/></signal>
</interface></node>'''
# RequestName: DBUS_NAME_FLAG_DO_NOT_QUEUE; reply 1: the primary owner.
DO_NOT_QUEUE, PRIMARY_OWNER = 4, 1


def say(*words):
    print(*words, flush=True)


def released(fd, _condition):
    # Nothing writes to the pipe: readable means every write end is closed.
    say('released')
    os.close(fd)
    return GLib.SOURCE_REMOVE


def method_call(_conn, _sender, _path, _iface, method, params, invocation):
    what, _who, _why, mode = params.unpack()
    r, w = os.pipe()
    GLib.unix_fd_add_full(GLib.PRIORITY_DEFAULT, r, GLib.IOCondition.IN | GLib.IOCondition.HUP,
                          released)
    say('inhibit', what, mode)
    # The list owns w: our copy closes once the reply is sent.
    invocation.return_value_with_unix_fd_list(GLib.Variant('(h)', (0,)),
                                              Gio.UnixFDList.new_from_array([w]))


def main():
    flags = (Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT |
             Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION)
    conn = Gio.DBusConnection.new_for_address_sync(sys.argv[1], flags, None, None)
    node = Gio.DBusNodeInfo.new_for_xml(INTROSPECTION)
    conn.register_object(PATH, node.interfaces[0], method_call, None, None)
    reply = conn.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus',
                           'org.freedesktop.DBus', 'RequestName',
                           GLib.Variant('(su)', (NAME, DO_NOT_QUEUE)),
                           GLib.VariantType('(u)'), Gio.DBusCallFlags.NONE, -1, None)
    if reply.unpack()[0] != PRIMARY_OWNER:
        sys.exit(f'fake_logind: cannot own {NAME} on {sys.argv[1]}')
    loop = GLib.MainLoop()

    def prepare_for_shutdown():
        conn.emit_signal(None, PATH, IFACE, 'PrepareForShutdown', GLib.Variant('(b)', (True,)))
        conn.flush_sync(None)
        say('prepare-for-shutdown')
        return GLib.SOURCE_CONTINUE

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR1, prepare_for_shutdown)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    say('ready')
    loop.run()


if __name__ == '__main__':
    main()
