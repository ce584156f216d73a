#!/bin/bash
# Fetch the kernel's own ublk selftests (tools/testing/selftests/ublk: kublk's
# sources, test_common.sh and the test_*.sh scripts) and print the directory
# holding them as the last line on stdout:
#   dir=$(scripts/kernel-selftests.sh | tail -n1); ls "$dir"
# scripts/test-kernel.sh (`npm run test:kernel`) runs them; nothing of the
# kernel goes into the checkout. The source is Debian unstable's
# linux-source, the same release build-kublk.sh builds kublk from and the VM
# boots; only that one directory is unpacked, cached per kernel version under
# ${UBLK_TS_CACHE:-/var/cache/ublk-ts}/ublk-selftests-<linux>/ (apt is only
# asked which version is current, a local lookup; the network is used when
# that version is not cached yet). linux-source is large (~160 MB download).
set -euo pipefail

here=$(dirname "$(readlink -f "$0")")
say() { echo "kernel-selftests: $*" >&2; }
die() { say "$*"; exit 1; }

# shellcheck source=debian-cache.sh
. "$here/debian-cache.sh"

ok() { [ -f "$1/Makefile" ] && [ -f "$1/test_common.sh" ] && [ -f "$1/kublk.c" ]; }

# linux-source (sid) depends on linux-source-<release> (= version): one apt
# lookup gives both (apt-cache takes about a second: keep it to one call).
deps() {
  apt-cache show --no-all-versions linux-source/sid 2>/dev/null |
    awk '/^Depends:/ { if (match($0, /linux-source-[0-9][^ ,]* \(= [^)]*\)/)) print substr($0, RSTART, RLENGTH); exit }'
}
dep=$(deps)
if [ -z "$dep" ] && "$here/debian-unstable.sh" >&2; then dep=$(deps); fi
src_pkg=${dep%% *}
src_ver=${dep##*= }
src_ver=${src_ver%)}
if [ -z "$src_ver" ]; then
  # apt unusable (offline, not root...): fall back to the newest cached copy.
  last=$(ls -d "$CACHE"/ublk-selftests-* 2>/dev/null | sort -V | tail -n1 || true)
  [ -n "$last" ] && ok "$last" || die "linux-source/sid is unknown to apt and nothing is cached in $CACHE"
  say "apt does not know linux-source/sid; using cached $last"
  echo "$last"
  exit 0
fi

dir=$CACHE/ublk-selftests-$src_ver
if ok "$dir"; then echo "$dir"; exit 0; fi

tmp=$(mktemp -d "$CACHE/.ublk-selftests-tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
say "fetching $src_pkg $src_ver (Debian unstable)"
sid_download "$src_pkg" "$src_ver" "$tmp" || die "cannot download $src_pkg=$src_ver"

# Only the ublk selftests are unpacked, their files straight into the cache
# directory (5 path components: linux-source-X/tools/testing/selftests/ublk/).
tarball=usr/src/$src_pkg.tar.xz
mkdir "$tmp/x"
dpkg-deb --fsys-tarfile "$tmp"/"$src_pkg"_*.deb | tar -xO "./$tarball" |
  tar -xJ -C "$tmp/x" --strip-components=5 --wildcards "$src_pkg/tools/testing/selftests/ublk/*" ||
  die "cannot unpack the ublk selftests from $src_pkg"
rm -f "$tmp"/"$src_pkg"_*.deb
ok "$tmp/x" || die "$src_pkg $src_ver has no ublk selftests (Makefile, test_common.sh, kublk.c)"
echo "$src_pkg $src_ver" > "$tmp/x/version"
if [ -e "$dir" ] && ! ok "$dir"; then rm -rf "$dir"; fi
# Another run may have won the race; either copy is complete.
mv -T "$tmp/x" "$dir" 2>/dev/null || ok "$dir" || die "cannot install into $dir"
echo "$dir"
