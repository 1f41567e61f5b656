dnl SPDX-License-Identifier: LGPL-2.1-or-later
dnl Decoders for the compressed save images of stock libvirt
dnl (qemu.conf's save_image_format): the libraries Debian keeps for
dnl gzip, bzip2, xz and lzop. kvmsave runs none of those programs.
AC_DEFUN([KVMSAVE_CHECK_STOCK_DECODERS], [
  PKG_CHECK_MODULES([ZLIB], [zlib >= 1.2], [],
    [AC_MSG_ERROR([zlib not found: install zlib1g-dev])])
  PKG_CHECK_MODULES([LZMA], [liblzma >= 5.2], [],
    [AC_MSG_ERROR([liblzma not found: install liblzma-dev])])
  dnl lzop's blocks are LZO1X; kvmsave parses lzop's container itself.
  PKG_CHECK_MODULES([LZO], [lzo2 >= 2.0], [],
    [AC_MSG_ERROR([liblzo2 not found: install liblzo2-dev])])

  dnl libbz2 ships no pkg-config file.
  AC_CHECK_HEADER([bzlib.h], [],
    [AC_MSG_ERROR([bzip2 headers not found: install libbz2-dev])])
  AC_CHECK_LIB([bz2], [BZ2_bzDecompressInit], [BZ2_LIBS=-lbz2],
    [AC_MSG_ERROR([libbz2 not found: install libbz2-dev])])
  AC_SUBST([BZ2_LIBS])

  STOCK_CFLAGS="$ZLIB_CFLAGS $LZMA_CFLAGS $LZO_CFLAGS"
  STOCK_LIBS="$ZLIB_LIBS $LZMA_LIBS $LZO_LIBS $BZ2_LIBS"
  AC_SUBST([STOCK_CFLAGS])
  AC_SUBST([STOCK_LIBS])
])
