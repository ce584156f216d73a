// UBLK_F_INTEGRITY (Linux 7.0): devices whose blocks carry metadata with
// T10 protection information, which the block layer generates on write and
// checks on read, so a target that lost or misplaced metadata fails the read.
// memory and loop keep it (loop in --metadata-file, where the reference tags
// must be the block numbers), null drops it; bad combinations are refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { addDevice, assertClean, cli, delDevice, fioVerify, listDevices, run, sh, vmSuite } from './helpers.js';

vmSuite();

const PI = ['--copy', 'user', '--metadata-size', '16', '--pi-offset', '8', '--csum-type', 't10dif', '--integrity-reftag'];
const MiB = 2 ** 20;

function file(name: string, bytes: number): string {
  const p = `/tmp/integrity-${name}`;
  fs.writeFileSync(p, '');
  fs.truncateSync(p, bytes);
  return p;
}

test('memory with T10-DIF: fio verify passes the kernel\'s PI checks on every read; list shows the metadata', () => {
  const dev = addDevice('memory', '--size', '32M', ...PI);
  try {
    const name = dev.replace('/dev/', '');
    assert.equal(fs.readFileSync(`/sys/block/${name}/integrity/format`, 'utf8').trim(), 'T10-DIF-TYPE1-CRC');
    const listed = listDevices().find((d) => d.path === dev) as unknown as { flags: string[]; integrity: Record<string, unknown> };
    assert.ok(listed.flags.includes('INTEGRITY'));
    assert.deepEqual(listed.integrity, {
      metadataSize: 16, piOffset: 8, csumType: 't10dif', tagSize: 0, integrityCapable: false, integrityReftag: true, intervalBytes: 512,
    });
    fioVerify(dev, { iodepth: 16, size: '4m', bs: '512-64k' });
  } finally {
    delDevice(dev);
  }
  assertClean();
});

test('loop keeps metadata in --metadata-file: reference tags are block numbers, and a corrupted block fails its read', () => {
  const data = file('data', 8 * MiB), meta = file('meta', 8 * MiB / 512 * 16);
  const dev = addDevice('loop', '--file', data, '--buffered', '--metadata-file', meta, '--init-metadata', ...PI);
  try {
    sh('dd', 'if=/dev/urandom', `of=${dev}`, 'bs=64k', 'count=4', 'oflag=direct', 'status=none');
    sh('dd', `if=${dev}`, 'of=/dev/null', 'bs=64k', 'count=4', 'iflag=direct', 'status=none');
    const m = fs.readFileSync(meta);
    // T10 tuple at --pi-offset 8: guard (2), app tag (2), reference tag (4, big-endian) = the block number.
    for (const block of [0, 1, 255, 511]) assert.equal(m.readUInt32BE(block * 16 + 12), block, `reference tag of block ${block}`);
    assert.ok(m.subarray(512 * 16, 513 * 16).every((b) => b === 0xff), 'unwritten blocks keep --init-metadata\'s 0xff');
    // Change block 3's data behind the device's back: its guard no longer matches.
    const fd = fs.openSync(data, 'r+');
    fs.writeSync(fd, Buffer.alloc(512, 0x5a), 0, 512, 3 * 512);
    fs.closeSync(fd);
    const r = run('dd', [`if=${dev}`, 'of=/dev/null', 'bs=4k', 'count=1', 'iflag=direct', 'status=none']);
    assert.notEqual(r.code, 0, 'reading the corrupted block fails');
    assert.match(r.stderr, /Invalid or incomplete multibyte or wide character|Input\/output error/);
  } finally {
    delDevice(dev);
    fs.rmSync(data);
    fs.rmSync(meta);
  }
  assertClean();
});

test('null drops metadata; metadata without user copy, or on a target that cannot keep it, is refused with one line', () => {
  const dev = addDevice('null', '--size', '64M', '--copy', 'user', '--metadata-size', '8');
  try {
    assert.equal(fs.readFileSync(`/sys/block/${dev.replace('/dev/', '')}/integrity/format`, 'utf8').trim(), 'nop');
    sh('dd', 'if=/dev/zero', `of=${dev}`, 'bs=1M', 'count=4', 'oflag=direct', 'status=none');
  } finally {
    delDevice(dev);
  }
  // (The other refusals are host tests: test/host/integrity.test.ts.)
  const data = file('stripe0', 4 * MiB), data1 = file('stripe1', 4 * MiB);
  for (const [args, msg] of [
    [['memory', '--size', '8M', '--metadata-size', '8'], /--metadata-size needs --copy user/],
    [['stripe', '--files', `${data},${data1}`, '--copy', 'user', '--metadata-size', '8'], /the stripe target does not keep metadata/],
  ] as Array<[string[], RegExp]>) {
    const r = cli('add', ...args);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.stderr, msg);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
  fs.rmSync(data);
  fs.rmSync(data1);
  assertClean();
});
