#!/bin/bash
# Build the kernel's C reference ublk server, kublk
# (tools/testing/selftests/ublk in the kernel source), for the benchmark's
# side-by-side runs, and print its path as the last line on stdout:
#   BENCH_KUBLK=$(scripts/build-kublk.sh | tail -n1) npm run bench
# It is not part of ublk-ts and nothing else uses it. Sources come from Debian
# unstable: linux-source (the same kernel release the VM boots) and
# liburing-dev, linked statically so the binary runs in the VM whatever the
# host's liburing is. The result is cached per version pair under
# ${UBLK_TS_CACHE:-/var/cache/ublk-ts}/kublk-<linux>-<liburing>/kublk.
# linux-source is large (~160 MB download).
set -euo pipefail

here=$(dirname "$(readlink -f "$0")")
say() { echo "build-kublk: $*" >&2; }
die() { say "$*"; exit 1; }

# shellcheck source=debian-cache.sh
. "$here/debian-cache.sh"

[ -n "$(sid_version linux-source)" ] || "$here/debian-unstable.sh" >&2 ||
  die "could not set up the Debian unstable apt source"
# linux-source (sid) depends on linux-source-<release> (= version).
src_pkg=$(apt-cache depends linux-source/sid 2>/dev/null |
  awk '$1 == "Depends:" && $2 ~ /^linux-source-[0-9]/ { print $2; exit }')
[ -n "$src_pkg" ] || die "apt does not know linux-source/sid"
src_ver=$(sid_version "$src_pkg" || true)
uring_ver=$(sid_version liburing-dev || true)
[ -n "$src_ver" ] && [ -n "$uring_ver" ] || die "apt does not know $src_pkg/sid or liburing-dev/sid"

out=$CACHE/kublk-$src_ver-$uring_ver
if [ -x "$out/kublk" ]; then echo "$out/kublk"; exit 0; fi

uapi=$("$here/uapi-headers.sh" | tail -n1)
tmp=$(mktemp -d "$CACHE/.kublk-tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
say "fetching $src_pkg $src_ver and liburing-dev $uring_ver (Debian unstable)"
sid_download "$src_pkg" "$src_ver" "$tmp" && sid_download liburing-dev "$uring_ver" "$tmp" || die "cannot download $src_pkg or liburing-dev"

# Only the ublk selftests are needed.
tarball=usr/src/$src_pkg.tar.xz
dpkg-deb --fsys-tarfile "$tmp"/"$src_pkg"_*.deb | tar -xO "./$tarball" |
  tar -xJ -C "$tmp" --wildcards "$src_pkg/tools/testing/selftests/ublk/*" ||
  die "cannot unpack the ublk selftests from $src_pkg"
dpkg-deb -x "$tmp"/liburing-dev_*.deb "$tmp/uring" || die "cannot unpack liburing-dev"
liburing_a=$(find "$tmp/uring" -name liburing.a | head -n1)
[ -n "$liburing_a" ] || die "liburing-dev has no liburing.a"

dir=$tmp/$src_pkg/tools/testing/selftests/ublk
# kublk is every .c file there but the Makefile's STANDALONE_UTILS.
skip=$(awk -F':?= *' '/^STANDALONE_UTILS[ \t]*:?=/ { print $2 }' "$dir/Makefile")
srcs=$(cd "$dir" && for f in *.c; do case " $skip " in *" $f "*) ;; *) echo "$f" ;; esac; done)
[ -n "$srcs" ] || die "no kublk sources in $dir"
say "compiling $(echo $srcs)"
( cd "$dir" && gcc -O2 -g -D_GNU_SOURCE -I "$tmp/uring/usr/include" -I "$uapi" -I . \
    -o "$tmp/kublk" $srcs "$liburing_a" -lpthread -lm ) >&2 || die "compiling kublk failed"

mkdir -p "$tmp/out"
mv "$tmp/kublk" "$tmp/out/kublk"
echo "$src_pkg $src_ver, liburing $uring_ver" > "$tmp/out/version"
rm -rf "$out"
mv -T "$tmp/out" "$out"
echo "$out/kublk"
