dnl SPDX-License-Identifier: LGPL-2.1-or-later
dnl The libvirt the plugin is built for, and its internal headers.
dnl
dnl The plugin links against libvirt.so's private symbols (version
dnl LIBVIRT_PRIVATE_x.y.z), so it must be built from the internal headers
dnl of exactly the installed libvirt. They come from Debian's source package,
dnl fetched by build-aux/fetch-libvirt-source into a cache.

AC_DEFUN([KVMSAVE_CHECK_LIBVIRT], [
  PKG_CHECK_MODULES([LIBVIRT], [libvirt >= 9.0.0 libvirt-qemu >= 9.0.0])
  LIBVIRT_VERSION=`$PKG_CONFIG --modversion libvirt`
  AC_SUBST([LIBVIRT_VERSION])
  AC_DEFINE_UNQUOTED([KVMSAVE_LIBVIRT_VERSION], ["$LIBVIRT_VERSION"],
    [the libvirt release kvmsave is built for])
  dnl The loader libvirt loads finds kvmsave under this name beside it.
  AC_DEFINE([KVMSAVE_IMPL_NAME], ["kvmsave_impl.so"],
    [kvmsave's module, loaded by plugin/kvmsave_loader.c])

  libvirt_libdir=`$PKG_CONFIG --variable=libdir libvirt`
  AC_ARG_WITH([driver-dir],
    [AS_HELP_STRING([--with-driver-dir=DIR],
      [libvirt connection-driver directory to install into @<:@LIBDIR-of-libvirt/libvirt/connection-driver@:>@])],
    [KVMSAVE_DRIVER_DIR=$withval],
    [KVMSAVE_DRIVER_DIR=$libvirt_libdir/libvirt/connection-driver])
  AC_SUBST([KVMSAVE_DRIVER_DIR])
  dnl Where libvirt's own driver modules are: ./run links them beside ours
  dnl because LIBVIRT_DRIVER_DIR redirects the lookup of every module.
  LIBVIRT_SYSTEM_DRIVER_DIR=$libvirt_libdir/libvirt/connection-driver
  AC_SUBST([LIBVIRT_SYSTEM_DRIVER_DIR])
])

AC_DEFUN([KVMSAVE_CHECK_LIBVIRT_SOURCE], [
  AC_REQUIRE([KVMSAVE_CHECK_LIBVIRT])
  AC_ARG_WITH([libvirt-source],
    [AS_HELP_STRING([--with-libvirt-source=DIR],
      [unpacked libvirt source matching the installed libvirt @<:@fetched into the cache@:>@])],
    [LIBVIRT_SOURCE_DIR=$withval], [LIBVIRT_SOURCE_DIR=])
  AC_ARG_VAR([KVMSAVE_CACHE_DIR],
    [where the libvirt source package is cached @<:@/var/cache/kvmsave@:>@])
  : "${KVMSAVE_CACHE_DIR:=/var/cache/kvmsave}"

  if test -z "$LIBVIRT_SOURCE_DIR"; then
    AC_MSG_NOTICE([fetching libvirt's source package into $KVMSAVE_CACHE_DIR])
    LIBVIRT_SOURCE_DIR=`$srcdir/build-aux/fetch-libvirt-source "$KVMSAVE_CACHE_DIR"` ||
      AC_MSG_ERROR([could not fetch libvirt's source package; run
  $srcdir/build-aux/fetch-libvirt-source $KVMSAVE_CACHE_DIR as root
or pass --with-libvirt-source=DIR])
  fi

  AC_MSG_CHECKING([libvirt source version in $LIBVIRT_SOURCE_DIR])
  libvirt_src_version=`sed -n "s/^ *version: *'\(@<:@0-9.@:>@*\)'.*/\1/p" "$LIBVIRT_SOURCE_DIR/meson.build" 2>/dev/null | head -n 1`
  AC_MSG_RESULT([${libvirt_src_version:-unknown}])
  if test "x$libvirt_src_version" != "x$LIBVIRT_VERSION"; then
    AC_MSG_ERROR([libvirt source in $LIBVIRT_SOURCE_DIR is version
'${libvirt_src_version:-unknown}' but the installed libvirt is $LIBVIRT_VERSION.
The plugin links against libvirt's private symbols and must be built from
the internal headers of exactly the installed version: remove the directory
and re-run configure to fetch the matching source package])
  fi
  dnl A Debian revision may patch the headers: when both are known, they
  dnl must match too.
  libvirt_deb_installed=`dpkg-query -W -f='${Version}' libvirt-dev 2>/dev/null`
  if test -n "$libvirt_deb_installed" && test -f "$LIBVIRT_SOURCE_DIR/.debian-version"; then
    libvirt_deb_source=`cat "$LIBVIRT_SOURCE_DIR/.debian-version"`
    if test "x$libvirt_deb_source" != "x$libvirt_deb_installed"; then
      AC_MSG_ERROR([libvirt source in $LIBVIRT_SOURCE_DIR is Debian's $libvirt_deb_source
but libvirt-dev $libvirt_deb_installed is installed; re-run configure without
--with-libvirt-source to fetch the matching source package])
    fi
  fi
  if test ! -f "$LIBVIRT_SOURCE_DIR/src/driver-hypervisor.h"; then
    AC_MSG_ERROR([$LIBVIRT_SOURCE_DIR does not look like a libvirt source tree])
  fi

  dnl src/hypervisor for the QEMU driver's own header (qemu/qemu_conf.h),
  dnl which kvmsave_embed.c reads to wait for the embedded driver's work.
  LIBVIRT_INTERNAL_CFLAGS="-I$LIBVIRT_SOURCE_DIR/src -I$LIBVIRT_SOURCE_DIR/src/util -I$LIBVIRT_SOURCE_DIR/src/conf -I$LIBVIRT_SOURCE_DIR/src/hypervisor"
  AC_SUBST([LIBVIRT_SOURCE_DIR])
  AC_SUBST([LIBVIRT_INTERNAL_CFLAGS])
])

dnl What libvirt's own config.h gives its internal headers; config.h's
dnl bottom and configure's probes of those headers (m4/kvmsave-compat.m4).
m4_define([KVMSAVE_LIBVIRT_CONFIG_TEXT], [[
#define WITH_LIBVIRT_INTERNAL_HEADERS 1
#ifndef STATIC_ANALYSIS
# define STATIC_ANALYSIS 0
#endif
#define WITH_SUGGEST_ATTRIBUTE_FORMAT 1
#define BROKEN_GCC_WLOGICALOP_EQUAL_EXPR 1
/* virutil.h stubs these out unless told they exist; this is Linux. */
#define WITH_GETUID 1
#define WITH_GETEUID 1
#define WITH_GETGID 1
#define WITH_GETEGID 1
/* Without it, internal.h defines _(str) as plain str: no translation. */
#if ENABLE_NLS
# define WITH_LIBINTL_H 1
#endif
]])
