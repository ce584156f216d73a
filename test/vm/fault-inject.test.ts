// The fault-inject target on the real driver: errors with a chosen errno reach
// the reader, delays complete from timers (also with user-copy staging), and a
// server that dies every N requests under fio is restarted by its supervisor
// with no acknowledged write lost.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { addDevice, assertClean, brdForFile, delDevice, fioVerify, FULL_ONLY, idOf, listDevices, run, sh, vmSuite } from './helpers.js';

vmSuite();

const [RAM] = brdForFile(1, 65536) as [string];

for (const [mode, args] of [['classic', []], ['batch', ['--batch']]] as Array<[string, string[]]>) {
  // The error path is the target's, the same in both engines: batch in the full suite.
  test(`${mode}: --error-rate 100 --errno ENOSPC fails every request with ENOSPC, and the device keeps serving`, { skip: mode === 'batch' && FULL_ONLY }, () => {
    const dev = addDevice('fault-inject', '--size', '16M', '--error-rate', '100', '--errno', 'ENOSPC', ...args);
    try {
      const w = run('dd', ['if=/dev/zero', `of=${dev}`, 'bs=4k', 'count=1', 'oflag=direct', 'status=none']);
      assert.notEqual(w.code, 0);
      assert.match(w.stderr, /No space left on device/);
      const r = run('dd', [`if=${dev}`, 'of=/dev/null', 'bs=4k', 'count=1', 'skip=7', 'iflag=direct', 'status=none']);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /No space left on device/);
      assert.equal(listDevices()[0]!.state, 'live');
    } finally {
      delDevice(dev);
    }
    assertClean();
  });
}

test('classic, user copy: --delay-us with --delay-random delays requests (timers), data intact', () => {
  const slow = addDevice('fault-inject', '--size', '16M', '--delay-us', '400000');
  try {
    const t0 = Date.now();
    sh('dd', `if=${slow}`, 'of=/dev/null', 'bs=4k', 'count=1', 'iflag=direct', 'status=none');
    assert.ok(Date.now() - t0 >= 400, `a read took ${Date.now() - t0} ms, less than the 400 ms delay`);
  } finally {
    delDevice(slow);
  }
  const dev = addDevice('fault-inject', '--inner', 'memory', '--size', '32M', '--delay-us', '3000', '--delay-random', '--copy', 'user');
  try {
    fioVerify(dev, { iodepth: 16, size: '8m', bs: '4k-64k' });
  } finally {
    delDevice(dev);
  }
  assertClean();
});

test('batch: --die-after kills the server every N requests; the supervisor re-attaches, and fio verify passes', () => {
  const dev = addDevice('fault-inject', '--inner', 'loop', '--file', RAM, '--die-after', '600', '--recovery', 'reissue', '--batch');
  const id = idOf(dev);
  const logStart = fs.statSync(`/run/ublk-ts/${id}.log`).size; // the log of an earlier device with this id stays
  try {
    fioVerify(dev, { iodepth: 16, size: '16m', bs: '4k-64k', timeoutMs: 600_000 });
    const log = fs.readFileSync(`/run/ublk-ts/${id}.log`, 'utf8').slice(logStart);
    assert.ok((log.match(/re-attached to \/dev\/ublkb\d+/g) ?? []).length >= 1, `the server died and was re-attached:\n${log}`);
  } finally {
    delDevice(dev);
  }
  assertClean();
});
