// Data integrity through real tools: fio with crc32c verification, a file
// system made, mounted, used and checked, and DISCARD giving memory back.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { addDevice, assertClean, delDevice, fioVerify, listDevices, sh, vmSuite, FULL_ONLY } from './helpers.js';

vmSuite();

// Every data test runs against both protocol modes.
const MODES: Array<[string, string[]]> = [['classic', []], ['batch', ['--batch']]];

// Batch mode's own run of this is in the full suite (batch data integrity is also checked by batch.c4, engine-edges, stress).
for (const [mode, modeArgs] of MODES) describe(`${mode}: fio crc32c verify, random writes of 512 B to 1 MiB`, { skip: mode === 'batch' && FULL_ONLY }, () => {
  for (const queues of [1, 2]) {
    for (const iodepth of [1, 128]) {
      // npm test keeps the two ends (1 queue at QD 1, 2 queues at QD 128); the crossed pairs are full-suite.
      test(`${queues} queue(s), QD ${iodepth}`, { skip: (queues === 1) !== (iodepth === 1) && FULL_ONLY }, () => {
        const dev = addDevice('memory', '--size', '256M', '--queues', String(queues), ...modeArgs);
        try {
          assert.equal(listDevices()[0]!.queues, queues);
          fioVerify(dev, { iodepth, size: iodepth === 1 ? '24m' : '64m', extra: queues > 1 ? ['--numjobs=2', '--offset_increment=128m'] : [] });
        } finally {
          delDevice(dev);
        }
        assertClean();
      });
    }
  }
});

test('coalescing (--coalesce-us 200) in both modes: fio verify at QD 128', { skip: FULL_ONLY }, () => {
  for (const modeArgs of [[], ['--batch']]) {
    const dev = addDevice('memory', '--size', '128M', '--coalesce-us', '200', ...modeArgs);
    try {
      fioVerify(dev, { iodepth: 128, size: '32m' });
    } finally {
      delDevice(dev);
    }
  }
  assertClean();
});

for (const [mode, modeArgs] of MODES) test(`${mode}: mkfs.ext4, mount, write, compare, umount, fsck -f`, () => {
  const dev = addDevice('memory', '--size', '128M', '--queues', '2', ...modeArgs);
  const mnt = fs.mkdtempSync('/tmp/ublk-mnt-');
  try {
    sh('mkfs.ext4', '-q', '-F', dev);
    sh('mount', dev, mnt);
    const data = crypto.randomBytes(9 * 2 ** 20 + 123);
    fs.writeFileSync(`${mnt}/file.bin`, data);
    fs.mkdirSync(`${mnt}/dir`);
    for (let i = 0; i < 50; i++) fs.writeFileSync(`${mnt}/dir/f${i}`, `file ${i}\n`.repeat(i * 10));
    sh('umount', mnt);
    sh('sh', '-c', `echo 3 > /proc/sys/vm/drop_caches`);
    sh('mount', dev, mnt);
    assert.ok(fs.readFileSync(`${mnt}/file.bin`).equals(data), 'file reads back identically after remount');
    assert.equal(fs.readFileSync(`${mnt}/dir/f49`, 'utf8'), 'file 49\n'.repeat(490));
    sh('umount', mnt);
    sh('fsck.ext4', '-f', '-n', dev);
  } finally {
    spawnQuiet('umount', mnt);
    delDevice(dev);
    fs.rmdirSync(mnt);
  }
  assertClean();
});

/** Bytes the memory target's memfd really holds, read through the server's fd table. */
function memfdBytes(pid: number): number {
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    const link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    if (link.startsWith('/memfd:ublk-ts-memory')) return fs.statSync(`/proc/${pid}/fd/${fd}`).blocks * 512;
  }
  throw new Error('memory target memfd not found');
}

test('the memory target uses memory only for data written, and DISCARD frees it', { skip: FULL_ONLY }, () => {
  const dev = addDevice('memory', '--size', '1G');
  try {
    const pid = listDevices()[0]!.pid!;
    const MiB = 2 ** 20;
    assert.ok(memfdBytes(pid) < MiB, `empty device holds ${memfdBytes(pid)} bytes`);
    // Reading never-written space allocates nothing.
    sh('dd', `if=${dev}`, 'of=/dev/null', 'bs=1M', 'count=256', 'iflag=direct', 'status=none');
    assert.ok(memfdBytes(pid) < MiB, `after reading holes: ${memfdBytes(pid)}`);
    sh('dd', 'if=/dev/urandom', `of=${dev}`, 'bs=1M', 'count=64', 'oflag=direct', 'status=none');
    const written = memfdBytes(pid);
    assert.ok(written >= 64 * MiB && written < 66 * MiB, `64 MiB written holds ${written}`);
    sh('blkdiscard', '-o', '0', '-l', String(32 * MiB), dev);
    const afterDiscard = memfdBytes(pid);
    assert.ok(afterDiscard <= 33 * MiB, `after discarding half: ${afterDiscard}`);
    // Discarded space reads back as zeros; the rest is intact.
    const head = sh('sh', '-c', `dd if=${dev} bs=1M count=32 iflag=direct status=none | od -An -v -tx1 | sort -u`);
    assert.equal(head.trim(), '00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00');
    // BLKZEROOUT: WRITE_ZEROES with NOUNMAP zeroes but keeps the space allocated.
    sh('blkdiscard', '-z', '-o', String(32 * MiB), '-l', String(16 * MiB), dev);
    const zeroed = sh('sh', '-c', `dd if=${dev} bs=1M skip=32 count=16 iflag=direct status=none | od -An -v -tx1 | sort -u`);
    assert.equal(zeroed.trim(), '00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00');
    assert.ok(memfdBytes(pid) >= 32 * MiB, `NOUNMAP keeps memory: ${memfdBytes(pid)}`);
    // Punching a hole in the block device is WRITE_ZEROES without NOUNMAP: frees.
    sh('fallocate', '--punch-hole', '-o', String(32 * MiB), '-l', String(32 * MiB), dev);
    assert.ok(memfdBytes(pid) < MiB, `after punching the rest: ${memfdBytes(pid)}`);
  } finally {
    delDevice(dev);
  }
  assertClean();
});

function spawnQuiet(cmd: string, ...args: string[]): void {
  try { sh(cmd, ...args); } catch { /* cleanup path */ }
}
