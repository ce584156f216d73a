#!/bin/bash
# Build fio ${FIO_VERSION:-3.42} for the kernel selftests and print the
# directory holding the binary as the last line on stdout:
#   PATH=$(scripts/build-fio.sh | tail -n1):$PATH
# test_integrity_02 needs fio >= 3.42 (its --pi_chk/--md_per_io_size on block
# devices); Debian 12 has 3.33, unstable 3.41 (Dec 2026). Built once, cached
# under ${UBLK_TS_CACHE:-/var/cache/ublk-ts}/fio-<version>/ (outside the
# checkout); scripts/test-kernel.sh puts it first in the VM's PATH.
#
# The source, the first that works:
#   1. $FIO_TARBALL, a local fio-<version>.tar.gz (e.g. made with
#      `git archive --prefix=fio-<version>/ fio-<version>` where nothing else is reachable);
#   2. fio's release tarball, brick.kernel.dk/snaps, then GitHub's archive of the tag;
#   3. Debian unstable's orig tarball, once unstable has that version (pool/main/f/fio/).
# Needs make, gcc and libaio-dev (test_integrity_03 uses --ioengine libaio);
# scripts/install-deps.sh installs them.
set -euo pipefail

here=$(dirname "$(readlink -f "$0")")
say() { echo "build-fio: $*" >&2; }
die() { say "$*"; exit 1; }

# shellcheck source=debian-cache.sh
. "$here/debian-cache.sh"

ver=${FIO_VERSION:-3.42}
out=$CACHE/fio-$ver
if [ -x "$out/fio" ] && "$out/fio" --version | grep -qx "fio-$ver"; then echo "$out"; exit 0; fi

[ -f /usr/include/libaio.h ] || die "libaio.h is missing (apt-get install libaio-dev; scripts/install-deps.sh does): fio's libaio engine needs it"
command -v make >/dev/null || die "make is missing (apt-get install make)"

tmp=$(mktemp -d "$CACHE/.fio-tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tarball=$tmp/fio.tar.gz

# A tarball is right if it unpacks to a tree whose FIO-VERSION-GEN names this version.
unpack() {
  rm -rf "$tmp/src" && mkdir "$tmp/src" &&
    tar -xzf "$1" -C "$tmp/src" --strip-components=1 2>/dev/null &&
    grep -q "^DEF_VER=fio-$ver\$" "$tmp/src/FIO-VERSION-GEN"
}

got=
if [ -n "${FIO_TARBALL:-}" ]; then
  unpack "$FIO_TARBALL" && got=$FIO_TARBALL || die "$FIO_TARBALL is not fio $ver's source"
fi
for url in "https://brick.kernel.dk/snaps/fio-$ver.tar.gz" "https://github.com/axboe/fio/archive/refs/tags/fio-$ver.tar.gz"; do
  [ -z "$got" ] || break
  curl -fsSL --retry 2 --connect-timeout 15 -o "$tarball" "$url" 2>/dev/null && unpack "$tarball" && got=$url
done
if [ -z "$got" ]; then
  # Debian unstable, when it has caught up: the upstream tarball under its orig name.
  sid=$(sid_version fio || true)
  if [ -n "$sid" ] && dpkg --compare-versions "$sid" ge "$ver"; then
    up=${sid#*:}
    up=${up%-*}
    for ext in xz gz; do
      f=pool/main/f/fio/fio_$up.orig.tar.$ext
      base=$(apt-cache policy fio | awk '/sid\/main/ { print $2; exit }')
      [ -n "$base" ] && /usr/lib/apt/apt-helper -o APT::Sandbox::User=root download-file "$base/$f" "$tmp/orig.tar.$ext" >&2 2>/dev/null || continue
      if [ "$ext" = xz ]; then xz -dc "$tmp/orig.tar.xz" | gzip > "$tarball"; else mv "$tmp/orig.tar.gz" "$tarball"; fi
      unpack "$tarball" && { got="Debian unstable's fio $sid"; break; }
    done
  fi
fi
[ -n "$got" ] || die "cannot get fio $ver's source (brick.kernel.dk and github.com unreachable, Debian unstable has fio ${sid:-?}); set FIO_TARBALL to a local fio-$ver.tar.gz"

say "building fio $ver from $got"
( cd "$tmp/src" && ./configure --disable-native >&2 && make -j"$(nproc)" fio >&2 ) || die "building fio $ver failed"
grep -q '^CONFIG_LIBAIO=y' "$tmp/src/config-host.mak" || die "fio $ver was configured without libaio (is libaio-dev installed?)"
mkdir "$tmp/out"
mv "$tmp/src/fio" "$tmp/out/fio"
"$tmp/out/fio" --version | grep -qx "fio-$ver" || die "the fio built does not say fio-$ver"
rm -rf "$out"
mv -T "$tmp/out" "$out"
echo "$out"
