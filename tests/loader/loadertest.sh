#!/bin/sh
# tests/loader/loadertest.sh: a kvmsave built for another libvirt is refused
# with a message that says which libvirt it was built for and how to rebuild
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# libvirt loads tests/loader's copy of the loader stub (plugin/kvmsave_loader.c
# built for a made-up libvirt 0.0.1, so its private-symbol tag is missing
# here as a real 9.0 build's is in 11.3) through virsh, as it loads the
# real module; then the real loader without kvmsave_impl.so beside it.
set -u
builddir=${abs_builddir:-$(pwd)}
command -v virsh >/dev/null || { echo "SKIP: no virsh"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

# expect NAME MODULE-DIR TEXT...: virsh fails, and says every TEXT.
expect() {
    name=$1 dir=$2
    shift 2
    if LIBVIRT_DRIVER_DIR=$dir virsh -q -c "kvmsave:///embed?root=$tmp/root" uri \
            >"$tmp/out" 2>&1; then
        echo "FAIL: $name: virsh succeeded"; fail=1; return
    fi
    for text in "$@"; do
        grep -qF -- "$text" "$tmp/out" || { echo "FAIL: $name: no '$text' in:"; cat "$tmp/out"; fail=1; return; }
    done
    echo "PASS: $name"; sed 's/^/  /' "$tmp/out"
}

mkdir "$tmp/other" "$tmp/noimpl"
ln -s "$builddir/tests/loader/.libs/libvirt_driver_kvmsave.so" "$tmp/other/"
# kvmsave_impl.so is there too: the stub must refuse before loading it.
ln -s "$builddir/plugin/.libs/kvmsave_impl.so" "$tmp/other/"
expect "built for another libvirt" "$tmp/other" \
    "kvmsave was built for libvirt 0.0.1 (LIBVIRT_PRIVATE_0.0.1)" \
    "its private symbols are missing" "Rebuild and reinstall it"

ln -s "$builddir/plugin/.libs/libvirt_driver_kvmsave.so" "$tmp/noimpl/"
expect "module missing" "$tmp/noimpl" "cannot be loaded" "kvmsave_impl.so" \
    "Rebuild and reinstall it"
exit $fail
