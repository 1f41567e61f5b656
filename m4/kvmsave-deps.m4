dnl SPDX-License-Identifier: LGPL-2.1-or-later
dnl Libraries the plugin uses directly.
AC_DEFUN([KVMSAVE_CHECK_DEPS], [
  PKG_CHECK_MODULES([GLIB], [glib-2.0 >= 2.56 gobject-2.0 gio-2.0])
  PKG_CHECK_MODULES([LIBXML], [libxml-2.0 >= 2.9])

  dnl ISA-L supplies the hardware-accelerated CRC-32C (crc32_iscsi).
  AC_CHECK_HEADER([isa-l/crc.h], [],
    [AC_MSG_ERROR([ISA-L headers not found: install libisal-dev])])
  AC_CHECK_LIB([isal], [crc32_iscsi], [ISAL_LIBS=-lisal],
    [AC_MSG_ERROR([libisal not found: install libisal-dev])])
  AC_SUBST([ISAL_LIBS])

  dnl zstd compresses image chunks (image_format "zstd").
  PKG_CHECK_MODULES([ZSTD], [libzstd >= 1.4])

  AC_CHECK_FUNCS([posix_fadvise])
])
