#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Bootstrap the build system: gnulib modules from Debian's gnulib package
# (never committed), then autoreconf. Run ./configure afterwards.
set -e
srcdir=$(dirname "$0")
cd "$srcdir"

GNULIB_TOOL=$(command -v "${GNULIB_TOOL:-gnulib-tool}" ||
              echo /usr/share/gnulib/gnulib-tool)
if [ ! -x "$GNULIB_TOOL" ]; then
    echo "autogen.sh: gnulib-tool not found: install Debian's gnulib package" >&2
    exit 1
fi

# full-write: loops around short writes on pipes;
# tempname: O_EXCL creation of the temporary image next to its target.
"$GNULIB_TOOL" --import --quiet --no-changelog --no-vc-files \
    --lib=libgnu --source-base=gnulib/lib --m4-base=gnulib/m4 \
    --aux-dir=build-aux --libtool \
    full-write tempname

autoreconf --force --install --verbose >/dev/null
echo "autogen.sh: now run ./configure"
