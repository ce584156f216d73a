// The VM itself, before any ublk-ts code: the kernel, the ublk driver and the
// tools the other VM tests rely on (modprobe, fio with io_uring, mkfs/fsck).
// If this file fails, the other VM tests' failures say nothing about ublk-ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';

function sh(cmd: string, ...args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 120_000 });
  assert.ifError(r.error);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} exited ${r.status}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

test('runs inside the test VM', () => {
  assert.equal(process.env.UBLK_TS_IN_VM, '1', 'VM tests must be run by scripts/vmrun (npm test), not on the host');
});

test('kernel is Linux 7.0 or newer', () => {
  const m = /^(\d+)\.(\d+)/.exec(release());
  assert.ok(m, `unparsable kernel release ${release()}`);
  assert.ok(Number(m[1]) >= 7, `kernel ${release()} is older than 7.0`);
});

test('ublk_drv is loaded: /dev/ublk-control is a character device', () => {
  assert.ok(existsSync('/dev/ublk-control'), '/dev/ublk-control is missing (ublk_drv not loaded?)');
  assert.ok(statSync('/dev/ublk-control').isCharacterDevice());
});

test('null_blk loads, serves fio over io_uring, and unloads', () => {
  if (existsSync('/sys/module/null_blk')) sh('rmmod', 'null_blk');
  sh('modprobe', 'null_blk', 'nr_devices=1');
  try {
    assert.ok(statSync('/dev/nullb0').isBlockDevice(), '/dev/nullb0 is not a block device');
    const out = sh(
      'fio', '--name=smoke', '--filename=/dev/nullb0', '--ioengine=io_uring', '--direct=1',
      '--rw=randrw', '--bs=4k', '--size=16m', '--iodepth=8', '--output-format=json',
    );
    const job = (JSON.parse(out) as { jobs: { error: number; read: { total_ios: number }; write: { total_ios: number } }[] }).jobs[0]!;
    assert.equal(job.error, 0, 'fio reported an error');
    assert.ok(job.read.total_ios > 0 && job.write.total_ios > 0, 'fio did no I/O');
  } finally {
    sh('rmmod', 'null_blk');
  }
  assert.ok(!existsSync('/dev/nullb0'), '/dev/nullb0 is still there after rmmod');
});

test('mkfs.ext4 and fsck.ext4 work on an image file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'smoke-'));
  try {
    const img = join(dir, 'fs.img');
    writeFileSync(img, '');
    sh('truncate', '-s', '64M', img);
    sh('mkfs.ext4', '-q', '-F', img);
    sh('fsck.ext4', '-f', '-n', img);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
