#!/bin/bash
# Print (as the last line on stdout) an include directory holding the kernel
# UAPI headers of Debian unstable's linux-libc-dev (Linux 7.2+): the ublk and
# io_uring ABI we build against, newer than the host's own /usr/include.
#   gcc -I "$(scripts/uapi-headers.sh | tail -n1)" ...
# The directory has linux/, asm/ (the host architecture's) and asm-generic/,
# so one -I is enough. It is cached per package version under
# ${UBLK_TS_CACHE:-/var/cache/ublk-ts}/uapi-<version>; apt is only asked which
# version is current (a local lookup), the network is used when that version
# is not cached yet.
set -euo pipefail

here=$(dirname "$(readlink -f "$0")")
say() { echo "uapi-headers: $*" >&2; }
die() { say "$*"; exit 1; }

# shellcheck source=debian-cache.sh
. "$here/debian-cache.sh"

ok() { [ -f "$1/linux/ublk_cmd.h" ] && [ -f "$1/linux/io_uring.h" ] && [ -f "$1/asm/ioctl.h" ]; }

ver=$(sid_version linux-libc-dev || true)
if [ -z "$ver" ]; then
  "$here/debian-unstable.sh" >&2 || die "could not set up the Debian unstable apt source"
  ver=$(sid_version linux-libc-dev || true)
fi
if [ -z "$ver" ]; then
  # apt unusable (offline, not root...): fall back to the newest cached copy.
  last=$(ls -d "$CACHE"/uapi-*/usr/include 2>/dev/null | sort -V | tail -n1 || true)
  [ -n "$last" ] && ok "$last" || die "linux-libc-dev/sid is unknown to apt and nothing is cached in $CACHE"
  say "apt does not know linux-libc-dev/sid; using cached $last"
  echo "$last"
  exit 0
fi

dir=$CACHE/uapi-$ver
if ! ok "$dir/usr/include"; then
  say "fetching linux-libc-dev $ver (Debian unstable)"
  tmp=$(mktemp -d "$CACHE/.uapi-tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # The sandbox user apt downloads as cannot write into a root-only temp dir.
  sid_download linux-libc-dev "$ver" "$tmp" || die "cannot download linux-libc-dev=$ver"
  dpkg-deb -x "$tmp"/linux-libc-dev_*.deb "$tmp/x" || die "cannot unpack linux-libc-dev"
  multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
  # asm/ lives under the multiarch triplet in the package, as symlinks into
  # usr/lib/linux/uapi/<arch>; copy it beside linux/ so one -I is enough.
  [ -d "$tmp/x/usr/include/$multiarch/asm" ] || die "linux-libc-dev $ver has no $multiarch/asm headers"
  cp -rL "$tmp/x/usr/include/$multiarch/asm" "$tmp/x/usr/include/asm"
  echo "$ver" > "$tmp/x/version"
  ok "$tmp/x/usr/include" || die "linux-libc-dev $ver lacks linux/ublk_cmd.h or linux/io_uring.h"
  if [ -e "$dir" ] && ! ok "$dir/usr/include"; then rm -rf "$dir"; fi
  # Another run may have won the race; either copy is complete.
  mv -T "$tmp/x" "$dir" 2>/dev/null || ok "$dir/usr/include" || die "cannot install into $dir"
fi
echo "$dir/usr/include"
