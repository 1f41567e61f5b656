dnl SPDX-License-Identifier: LGPL-2.1-or-later
dnl Sanitizers and fuzzing (docs/testing.md):
dnl   --enable-sanitizers  build everything with AddressSanitizer and
dnl                        UndefinedBehaviorSanitizer (for the unit tests
dnl                        and the fuzz target; such a module cannot be
dnl                        loaded by an unsanitized libvirt)
dnl   --enable-fuzz        build the libFuzzer target of the image parser,
dnl                        tests/fuzz/imagefuzz (needs clang)
AC_DEFUN([KVMSAVE_SANITIZERS], [
  AC_ARG_ENABLE([sanitizers],
    [AS_HELP_STRING([--enable-sanitizers], [build with ASan and UBSan])],
    [], [enable_sanitizers=no])
  AC_ARG_ENABLE([fuzz],
    [AS_HELP_STRING([--enable-fuzz], [build the libFuzzer image target (clang)])],
    [], [enable_fuzz=no])

  SAN_CFLAGS=
  if test "x$enable_sanitizers" = xyes; then
    flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
    KVMSAVE_CC_FLAG([$flags], [SAN_CFLAGS="$flags"],
      [AC_MSG_ERROR([$CC cannot build with $flags])])
  fi
  FUZZ_CFLAGS=
  if test "x$enable_fuzz" = xyes; then
    dnl Coverage for everything, libFuzzer's main only in the target.
    KVMSAVE_CC_FLAG([-fsanitize=fuzzer-no-link],
      [SAN_CFLAGS="$SAN_CFLAGS -fsanitize=fuzzer-no-link"],
      [AC_MSG_ERROR([$CC cannot build libFuzzer targets: use CC=clang])])
    FUZZ_CFLAGS="-fsanitize=fuzzer"
  fi
  AC_SUBST([SAN_CFLAGS])
  AC_SUBST([FUZZ_CFLAGS])
  AM_CONDITIONAL([ENABLE_FUZZ], [test "x$enable_fuzz" = xyes])
])
