dnl SPDX-License-Identifier: LGPL-2.1-or-later
dnl Tools the test suite uses.
AC_DEFUN([KVMSAVE_CHECK_TEST_TOOLS], [
  PKG_CHECK_MODULES([CHECK], [check >= 0.15], [have_check=yes], [have_check=no])
  AM_CONDITIONAL([HAVE_CHECK], [test "x$have_check" = xyes])
  dnl Debian's interpreter first: it is the one with python3-libvirt and
  dnl python3-pytest, whatever python3 comes first on PATH (pyenv, venv).
  AC_PATH_PROG([PYTHON3], [python3], [], [/usr/bin$PATH_SEPARATOR$PATH])
  AC_PATH_PROG([VIRSH], [virsh])
])
