dnl SPDX-License-Identifier: LGPL-2.1-or-later
dnl Compiler warnings: a broad set always, errors with --enable-werror.
AC_DEFUN([KVMSAVE_WARNINGS], [
  AC_ARG_ENABLE([werror],
    [AS_HELP_STRING([--enable-werror], [treat compiler warnings as errors])],
    [], [enable_werror=no])

  WARN_CFLAGS=
  for w in -Wall -Wextra -Wformat=2 -Wformat-security -Wshadow \
           -Wpointer-arith -Wcast-align -Wwrite-strings -Wmissing-prototypes \
           -Wstrict-prototypes -Wmissing-declarations -Wnested-externs \
           -Wold-style-definition -Wundef -Wjump-misses-init \
           -Wlogical-op -Wduplicated-cond -Wnull-dereference \
           -Wimplicit-fallthrough -Wframe-larger-than=65536 \
           -Wno-unused-parameter -Wno-missing-field-initializers \
           -Wno-sign-compare -fno-common; do
    KVMSAVE_CC_FLAG([$w], [WARN_CFLAGS="$WARN_CFLAGS $w"])
  done
  dnl Off where the compiler has them (probed by their positive form: gcc
  dnl takes any -Wno-X). clang 19's -Wextra warns of casts between function
  dnl types, which libvirt's event API requires (VIR_DOMAIN_EVENT_CALLBACK);
  dnl libvirt builds itself with -Wno-cast-function-type for the same reason.
  for w in cast-function-type-mismatch; do
    KVMSAVE_CC_FLAG([-W$w], [WARN_CFLAGS="$WARN_CFLAGS -Wno-$w"])
  done
  if test "x$enable_werror" = xyes; then
    WARN_CFLAGS="$WARN_CFLAGS -Werror"
  fi
  AC_SUBST([WARN_CFLAGS])
])

dnl KVMSAVE_CC_FLAG(FLAG, IF-OK, [IF-NOT]): does the compiler take FLAG?
AC_DEFUN([KVMSAVE_CC_FLAG], [
  AS_VAR_PUSHDEF([cache], [kvmsave_cv_cc_flag_$1])
  AC_CACHE_CHECK([whether $CC accepts $1], [cache], [
    save_CFLAGS=$CFLAGS
    CFLAGS="$CFLAGS -Werror $1"
    AC_COMPILE_IFELSE([AC_LANG_PROGRAM([], [])],
      [AS_VAR_SET([cache], [yes])], [AS_VAR_SET([cache], [no])])
    CFLAGS=$save_CFLAGS])
  AS_VAR_IF([cache], [yes], [$2], [$3])
  AS_VAR_POPDEF([cache])
])
