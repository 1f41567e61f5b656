dnl kvmsave-compat.m4: what differs between the libvirt releases kvmsave
dnl builds against, probed on the fetched libvirt source
dnl
dnl SPDX-License-Identifier: LGPL-2.1-or-later
dnl
dnl Each difference is a feature probe, not a version switch, so that a
dnl backport or a Debian patch is seen as what it is. The results are
dnl WITH_LIBVIRT_* in config.h, read by plugin/kvmsave_compat.h.

dnl KVMSAVE_LIBVIRT_GLIB_VERSION: libvirt's internal headers are written
dnl for the GLib API of the version in its meson.build (2.56 in 9.0, 2.66
dnl in 11.3); its config.h pins GLIB_VERSION_MIN_REQUIRED/MAX_ALLOWED to it,
dnl and so does ours.
AC_DEFUN([KVMSAVE_LIBVIRT_GLIB_VERSION], [
  AC_MSG_CHECKING([which GLib API libvirt's headers are written for])
  libvirt_glib=`sed -n "s/^glib_version *= *'\(@<:@0-9@:>@*\)\.\(@<:@0-9@:>@*\).*/\1_\2/p" "$LIBVIRT_SOURCE_DIR/meson.build" | head -n 1`
  AS_IF([test -z "$libvirt_glib"],
    [AC_MSG_ERROR([no glib_version in $LIBVIRT_SOURCE_DIR/meson.build])])
  AC_MSG_RESULT([GLIB_VERSION_$libvirt_glib])
  AC_DEFINE_UNQUOTED([GLIB_VERSION_MIN_REQUIRED], [GLIB_VERSION_$libvirt_glib],
    [GLib API libvirt's internal headers are written for])
  AC_DEFINE_UNQUOTED([GLIB_VERSION_MAX_ALLOWED], [GLIB_VERSION_$libvirt_glib],
    [GLib API libvirt's internal headers are written for])
])

dnl KVMSAVE_LIBVIRT_PROBE(WHAT, DEFINE, INCLUDES, BODY, DESCRIPTION):
dnl compile BODY against libvirt's internal headers; define DEFINE if it
dnl compiles.
AC_DEFUN([KVMSAVE_LIBVIRT_PROBE], [
  AC_CACHE_CHECK([whether libvirt's headers $1], [kvmsave_cv_$2], [
    save_CPPFLAGS=$CPPFLAGS
    CPPFLAGS="$CPPFLAGS $LIBVIRT_INTERNAL_CFLAGS $LIBVIRT_CFLAGS $GLIB_CFLAGS $LIBXML_CFLAGS"
    AC_COMPILE_IFELSE([AC_LANG_PROGRAM([KVMSAVE_LIBVIRT_CONFIG_TEXT
#include "internal.h"
$3], [$4])],
      [kvmsave_cv_$2=yes], [kvmsave_cv_$2=no])
    CPPFLAGS=$save_CPPFLAGS])
  AS_IF([test "x$kvmsave_cv_$2" = xyes], [AC_DEFINE([$2], [1], [$5])])
])

AC_DEFUN([KVMSAVE_LIBVIRT_COMPAT], [
  AC_REQUIRE([KVMSAVE_CHECK_LIBVIRT_SOURCE])
  AC_REQUIRE([KVMSAVE_CHECK_DEPS])
  KVMSAVE_LIBVIRT_GLIB_VERSION

  dnl The sanity check of the probe itself: a probe that cannot compile
  dnl anything would take every feature for missing.
  KVMSAVE_LIBVIRT_PROBE([compile], [WITH_LIBVIRT_INTERNAL_PROBE],
    [#include "virobject.h"], [virObjectUnref(NULL);],
    [libvirt's internal headers compile (configure's probe)])
  AS_IF([test "x$kvmsave_cv_WITH_LIBVIRT_INTERNAL_PROBE" != xyes],
    [AC_MSG_FAILURE([libvirt's internal headers in $LIBVIRT_SOURCE_DIR do not compile])])

  dnl 11.3's datatypes.h declares g_autoptr(virDomain) itself.
  KVMSAVE_LIBVIRT_PROBE([declare g_autoptr(virDomain)],
    [WITH_LIBVIRT_VIRDOMAIN_AUTOPTR],
    [#include "datatypes.h"], [g_autoptr(virDomain) d = NULL; (void) d;],
    [libvirt's datatypes.h declares the g_autoptr cleanup of virDomain])

  dnl 11.3 dropped virStrToLong_l (virStrToLong_ll remains).
  KVMSAVE_LIBVIRT_PROBE([declare virStrToLong_l],
    [WITH_LIBVIRT_VIRSTRTOLONG_L],
    [#include "virstring.h"], [(void) virStrToLong_l;],
    [libvirt's virstring.h declares virStrToLong_l])

  dnl The QEMU driver's save image header, which the probe below reads:
  dnl its failing to compile would look like the older restore.
  KVMSAVE_LIBVIRT_PROBE([compile qemu/qemu_saveimage.h],
    [WITH_LIBVIRT_QEMU_SAVEIMAGE_PROBE],
    [#include "qemu/qemu_saveimage.h"], [(void) qemuSaveImageOpen;],
    [libvirt's qemu/qemu_saveimage.h compiles (configure's probe)])
  AS_IF([test "x$kvmsave_cv_WITH_LIBVIRT_QEMU_SAVEIMAGE_PROBE" != xyes],
    [AC_MSG_FAILURE([libvirt's qemu/qemu_saveimage.h in $LIBVIRT_SOURCE_DIR does not compile])])

  dnl 11.3's restore reads the image's metadata through an open of its
  dnl own (qemuSaveImageGetMetadata), closes it, and opens the image again
  dnl for QEMU (qemuSaveImageOpen, no longer returning the metadata),
  dnl reading the header a second time; 9.0's qemuSaveImageOpen does both
  dnl on one open. The feeder of a FIFO serves each open. (Not
  dnl qemuSaveImageGetMetadata's signature: Debian 13's security update
  dnl added parameters to it.)
  KVMSAVE_LIBVIRT_PROBE([read a restore's header twice],
    [WITH_LIBVIRT_RESTORE_READS_HEADER_TWICE],
    [#include "qemu/qemu_saveimage.h"],
    [int (*opener)(virQEMUDriver *, const char *, bool, bool,
                   virFileWrapperFd **, bool) = qemuSaveImageOpen;
     (void) opener;
     (void) qemuSaveImageGetMetadata;],
    [libvirt's QEMU restore opens the image for its metadata, then again])
])
