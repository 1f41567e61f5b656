dnl SPDX-License-Identifier: LGPL-2.1-or-later
dnl Where kvmsave-guests.service goes: systemd reads units from
dnl PREFIX/lib/systemd/system for the prefixes /usr and /usr/local alike.
AC_DEFUN([KVMSAVE_SYSTEMD], [
  AC_ARG_WITH([systemdsystemunitdir],
    [AS_HELP_STRING([--with-systemdsystemunitdir=DIR],
      [install kvmsave-guests.service into DIR @<:@PREFIX/lib/systemd/system@:>@])],
    [], [with_systemdsystemunitdir='${prefix}/lib/systemd/system'])
  AC_SUBST([systemdsystemunitdir], [$with_systemdsystemunitdir])
])
