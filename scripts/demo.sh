#!/bin/bash
# `npm run demo`: the main job, inside the VM — a memory-backed block device
# served by TypeScript, formatted, mounted, used, and removed.
set -euo pipefail
cd "$(dirname "$0")/.."
ublk() { echo "+ ublk-ts $*" >&2; node bin/ublk-ts.js "$@"; }
say() { printf '\n== %s\n' "$*"; }

say "kernel $(uname -r); ublk features:"
ublk features | tr '\n' ' '; echo

say "create a 256 MiB RAM disk with 2 queues"
dev=$(ublk add memory --size 256M --queues 2)
echo "device: $dev"
ublk list

say "format and mount it"
mkfs.ext4 -q "$dev"
mkdir -p /mnt/demo
mount "$dev" /mnt/demo
df -h /mnt/demo

say "write a file, drop caches, read it back"
head -c 20M /dev/urandom > /tmp/demo.bin
cp /tmp/demo.bin /mnt/demo/
sync; echo 3 > /proc/sys/vm/drop_caches
cmp /tmp/demo.bin /mnt/demo/demo.bin && echo "read back identically: $(sha256sum < /mnt/demo/demo.bin | cut -c1-16)…"

say "live numbers while fio reads the device"
fio --name=demo --filename="$dev" --readonly --rw=randread --bs=4k --direct=1 --ioengine=io_uring --iodepth=8 \
  --time_based --runtime=4 --eta=never --output=/dev/null &
sleep 1
ublk stats "${dev#/dev/ublkb}"
wait

say "unmount, check, remove"
umount /mnt/demo
fsck.ext4 -f -n "$dev"
ublk del "${dev#/dev/ublkb}"
ls /dev/ublk* 2>/dev/null | grep -v ublk-control || echo "no ublk devices left"
