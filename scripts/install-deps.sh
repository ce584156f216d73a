#!/bin/bash
# Installs what `npm test` needs beyond `npm ci`: the Debian packages that the
# VM runner and the tests use, and the Debian unstable apt source (pinned low,
# by scripts/debian-unstable.sh) that the VM's kernel and the UAPI headers
# come from. The one list of those packages; used by `npm test`
# (scripts/test.mjs, before the VM tests), .ci/run and scripts/vmrun.
#
#   scripts/install-deps.sh [all | vm]
#
# all (default): everything `npm test` needs; vm: only what scripts/vmrun
# needs on the host. Prints one line when all is there (fast: no apt-get
# update then). If something is missing it installs it as root on Debian;
# elsewhere it exits 1 with one line naming what is missing and how to
# install it.
set -euo pipefail

HERE=$(dirname "$(readlink -f "$0")")
say() { echo "install-deps: $*" >&2; }
join() { local sep=$1 out=$2; shift 2; for x; do out+=$sep$x; done; echo "$out"; }
die() { say "$*"; exit 1; }

set_=${1:-all}
case "$set_" in
  all|vm) ;;
  *) echo "usage: install-deps.sh [all | vm]" >&2; exit 2 ;;
esac

# package, a command it brings or a file (checked where there is no dpkg), why we need it.
PKGS=(
  "qemu-system-x86 qemu-system-x86_64 vm"
  "busybox-static  busybox            vm"
  "cpio            cpio               vm"
  "xz-utils        xz                 vm"
  "kmod            depmod             vm"
  "fio             fio                devices"
  "e2fsprogs       mkfs.ext4          devices"
  "util-linux      blkdiscard         devices"
  "fdisk           sfdisk             devices"
  "btrfs-progs     mkfs.btrfs         devices"
  "dmsetup         dmsetup            devices"
  "gcc             gcc                uapi"
  "make            make               fio"
  "libaio-dev      /usr/include/libaio.h fio"
  "qemu-utils      qemu-nbd           nbd"
  "nbdkit          nbdkit             nbd"
  "nbd-client      nbd-client         nbd"
)
declare -A WHY=(
  [vm]="scripts/vmrun boots the test kernel in qemu from a busybox initrd"
  [devices]="the VM tests drive the devices with fio, mkfs, fsck, blkdiscard, sfdisk (mkfs.btrfs: zone appends; dmsetup: a slow backing disk)"
  [uapi]="the host tests compile the kernel's UAPI headers to check the codecs"
  [fio]="scripts/build-fio.sh builds fio 3.42 (with libaio) for the kernel's integrity selftests"
  [nbd]="the nbd target's tests serve exports with qemu-nbd and nbdkit (qemu-img makes and compares images); the benchmark compares with nbd-client"
)
GROUPS_ORDER=(vm devices uapi fio nbd)

declare -A group=() cmd=()
wanted=()
for row in "${PKGS[@]}"; do
  read -r p c g <<<"$row"
  [ "$set_" = all ] || [ "$g" = vm ] || continue
  wanted+=("$p"); cmd[$p]=$c; group[$p]=$g
done

# What is missing: by dpkg's database on Debian, else by the commands.
missing=()
if command -v dpkg-query >/dev/null; then
  # One call for all; packages dpkg never heard of are simply not listed.
  declare -A ok=()
  while read -r p st; do
    [ "$st" = ii ] && ok[$p]=1
  done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${wanted[@]}" 2>/dev/null || true)
  for p in "${wanted[@]}"; do [ -n "${ok[$p]:-}" ] || missing+=("$p"); done
else
  for p in "${wanted[@]}"; do
    if [[ ${cmd[$p]} == /* ]]; then [ -e "${cmd[$p]}" ] || missing+=("$p"); continue; fi
    PATH=$PATH:/usr/sbin:/sbin command -v "${cmd[$p]}" >/dev/null || missing+=("$p")
  done
fi

apt=0
command -v apt-get >/dev/null && apt=1
sid_ok=1
[ "$apt" = 0 ] || "$HERE/debian-unstable.sh" --check || sid_ok=0

if [ ${#missing[@]} = 0 ] && [ "$sid_ok" = 1 ]; then
  say "all present (${wanted[*]}$([ "$apt" = 0 ] || echo ', the Debian unstable apt source'))"
  exit 0
fi

if [ "$apt" = 0 ]; then
  cmds=()
  for p in "${missing[@]}"; do cmds+=("${cmd[$p]}"); done
  die "missing ${cmds[*]} (Debian: ${missing[*]}); this is not Debian (no apt-get): install them with the system's package manager; the VM tests also need apt for Debian unstable's kernel"
fi
if [ "$(id -u)" != 0 ]; then
  what=("${missing[@]}")
  [ "$sid_ok" = 1 ] || what+=("the Debian unstable apt source")
  how=()
  [ ${#missing[@]} = 0 ] || how+=("apt-get install --no-install-recommends ${missing[*]}")
  [ "$sid_ok" = 1 ] || how+=("$HERE/debian-unstable.sh")
  die "missing: $(join ', ' "${what[@]}"); as root, run $HERE/install-deps.sh${1:+ $1} (that is: $(join '; ' "${how[@]}"))"
fi

# Root on Debian. With packages to install, one `apt-get update` below serves
# the new source too; otherwise debian-unstable.sh updates if it must.
if [ "$sid_ok" = 0 ]; then
  "$HERE/debian-unstable.sh" ${missing[0]:+--no-update} || die "scripts/debian-unstable.sh failed"
fi
[ ${#missing[@]} = 0 ] && exit 0

# One line: the packages, grouped by why we need them.
parts=()
for g in "${GROUPS_ORDER[@]}"; do
  ps=()
  for p in "${missing[@]}"; do [ "${group[$p]}" = "$g" ] && ps+=("$p"); done
  [ ${#ps[@]} = 0 ] || parts+=("${ps[*]} (${WHY[$g]})")
done
say "installing $(join ', ' "${parts[@]}")"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || die "apt-get update failed"
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
  die "apt-get install ${missing[*]} failed"
