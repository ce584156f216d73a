// The stripe target over two brd disks: fio verify in every copy mode
// (classic and batch), the data where RAID 0 puts it, mkfs/mount/fsck, and
// bad input refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { addDevice, assertClean, brdForFile, cli, delDevice, fioVerify, FULL_ONLY, sh, vmSuite } from './helpers.js';

vmSuite();

const DISKS = brdForFile(2, 32768);

const CASES: Array<[string, string[], boolean]> = [
  ['classic, kernel copy', ['--copy', 'kernel'], false], // npm test's kernel selftest stripe_01 verifies this mode
  ['classic, user copy', ['--copy', 'user'], true],
  ['classic, zero copy', ['--copy', 'zero'], true],
  ['batch, zero copy', ['--batch', '--copy', 'zero'], false],
  ['batch, user copy', ['--batch', '--copy', 'user'], false],
];

for (const [name, args, inTest] of CASES) {
  test(`${name}: fio verify across chunk boundaries`, { skip: !inTest && FULL_ONLY }, () => {
    const dev = addDevice('stripe', '--files', DISKS.join(','), '--chunk-size', '16K', '--queues', '2', ...args);
    try {
      assert.equal(Number(sh('blockdev', '--getsize64', dev).trim()), 64 * 2 ** 20, 'two 32 MiB disks');
      fioVerify(dev, { iodepth: 32, size: '32m', bs: '4k-128k' });
    } finally {
      delDevice(dev);
    }
    assertClean();
  });
}

test('the data lies where RAID 0 puts it: chunk n on disk n mod 2, at (n div 2) chunks', () => {
  const chunk = 16 * 1024;
  const dev = addDevice('stripe', '--files', DISKS.join(','), '--chunk-size', '16K');
  try {
    // Chunk n is filled with byte n, in one 128 KiB write spanning 8 chunks.
    const script = `for n in 0 1 2 3 4 5 6 7; do head -c ${chunk} /dev/zero | tr '\\0' "\\\\$(printf %o $((n + 1)))"; done | ` +
      `dd of=${dev} bs=128k oflag=direct status=none`;
    sh('bash', '-c', script);
  } finally {
    delDevice(dev);
  }
  for (let n = 0; n < 8; n++) {
    const disk = DISKS[n % 2]!, at = Math.floor(n / 2) * chunk;
    const fd = fs.openSync(disk, 'r');
    const buf = Buffer.alloc(chunk);
    fs.readSync(fd, buf, 0, chunk, at);
    fs.closeSync(fd);
    assert.ok(buf.every((b) => b === n + 1), `chunk ${n} on ${disk} at ${at}`);
  }
  assertClean();
});

test('mkfs, mount and fsck through a stripe device', () => {
  const dev = addDevice('stripe', '--files', DISKS.join(','));
  try {
    sh('mkfs.ext4', '-q', dev);
    fs.mkdirSync('/mnt/stripe', { recursive: true });
    sh('mount', dev, '/mnt/stripe');
    try {
      sh('dd', 'if=/dev/urandom', 'of=/mnt/stripe/data', 'bs=1M', 'count=8', 'status=none');
      sh('sync');
    } finally {
      sh('umount', '/mnt/stripe');
    }
    sh('fsck.ext4', '-n', '-f', dev);
  } finally {
    delDevice(dev);
  }
  assertClean();
});

test('bad stripe options are refused with one line, and nothing is created', () => {
  for (const [args, msg] of [
    [['--files', `${DISKS[0]},/nonexistent`], /\/nonexistent: no such file/],
    [['--files', DISKS.join(','), '--chunk-size', '24K'], /--chunk-size must be a power of 2, got 24576/],
    [['--files', DISKS.join(','), '--chunk-size', '2K'], /--chunk-size/],
    [['--chunk-size', '64K'], /--files/],
  ] as Array<[string[], RegExp]>) {
    const r = cli('add', 'stripe', ...args);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.stderr, msg);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
  assertClean();
});
