// UBLK_F_SHMEM_ZC (--shmem FILE): fio and the server map the same tmpfs file,
// fio's O_DIRECT buffers lie in it, and the driver hands the server those
// requests in place. fio verifies the data; the server's `shmem` counter
// proves the zero-copy path was taken (and stays 0 when fio's buffers are
// elsewhere), so a silent fall-back to copying fails the test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { deviceTotals } from '../../src/cli/stats.js';
import { describe, withControl } from '../../src/cli/devices.js';
import { addDevice, assertClean, cli, cliWith, delDevice, fioVerify, idOf, vmSuite } from './helpers.js';

vmSuite();

const DIR = fs.mkdtempSync('/tmp/ublk-shmem-'); // tmpfs in the VM

/** A file of `size` bytes for the application and the server to share. */
function sharedFile(name: string, size: number): string {
  const file = `${DIR}/${name}`;
  fs.writeFileSync(file, '');
  fs.truncateSync(file, size);
  return file;
}

/** fio verify with its IO buffers in `file` (MAP_SHARED), or in its own memory without it. */
const fio = (dev: string, file?: string): void =>
  fioVerify(dev, { iodepth: 16, size: '4m', bs: '4k-64k', extra: file ? [`--mem=mmapshared:${file}`] : [] });

function totals(dev: string): { shmem: number; reads: number; writes: number } {
  const t = deviceTotals(idOf(dev));
  assert.ok(t, `counters of ${dev}`);
  return t;
}

test('memory target: fio\'s buffers in the registered file are served in place, others copied', async () => {
  const file = sharedFile('buf', 4 << 20);
  const dev = addDevice('memory', '--size', '32M', '--shmem', file);
  try {
    const listed = await withControl((ctrl) => describe(ctrl, idOf(dev))); // what `list --json` prints
    assert.ok(listed?.flags.includes('SHMEM_ZC'), 'list shows SHMEM_ZC');
    assert.equal(listed!.shmem, file);
    fio(dev);
    assert.equal(totals(dev).shmem, 0, 'fio\'s own buffers are not in the shared memory: every request is copied');
    fio(dev, file);
    const t = totals(dev);
    assert.ok(t.shmem > (t.reads + t.writes) / 4, `most of the second run's requests were served in place (${JSON.stringify(t)})`);
  } finally {
    delDevice(dev);
  }
  assertClean();
});

test('loop target, batch mode, --shmem-read-only: its own io_uring writes from the shared pages, READs are copied', () => {
  const file = sharedFile('buf-ro', 4 << 20);
  const backing = sharedFile('backing.img', 32 << 20);
  const dev = addDevice('loop', '--file', backing, '--batch', '--shmem', file, '--shmem-read-only');
  try {
    fio(dev, file);
    const t = totals(dev);
    assert.ok(t.shmem > t.writes / 2 && t.shmem <= t.writes, `writes only (${JSON.stringify(t)})`);
  } finally {
    delDevice(dev);
  }
  assertClean();
});

test('bad --shmem input, or a kernel without SHMEM_ZC, is refused with one line, and nothing is created', () => {
  // The other refusals are host tests (test/host/shmem.test.ts).
  const r = cli('add', 'null', '--size', '1M', '--shmem', `${DIR}/missing`);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--shmem .*missing: no such file/);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  const old = cliWith({ UBLK_TS_FAULT_HIDE_FEATURES: 'SHMEM_ZC' }, 'add', 'null', '--size', '1M', '--shmem', sharedFile('buf-old', 1 << 20));
  assert.notEqual(old.code, 0);
  assert.match(old.stderr, /^ublk-ts: this kernel's ublk driver lacks SHMEM_ZC \(needed for --shmem, Linux 7.1 or later\)\n$/);
  assertClean();
});
