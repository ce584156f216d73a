// RingWakeup: completions wake the event loop through the registered eventfd,
// for every task-run mode a ring can be set up with.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native } from '../../src/native.js';
import {
  Ring, RingWakeup, prepRead, prepNop, setUserData, IORING_SQ_TASKRUN, type RingOptions,
} from '../../src/uring/index.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'uring-wake-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let fifoNo = 0;

function pipeFd(): number {
  const p = path.join(dir, `fifo${fifoNo++}`);
  execFileSync('mkfifo', [p]);
  return fs.openSync(p, 'r+');
}

const MODES: [string, Omit<RingOptions, 'entries'>][] = [
  ['default task work', {}],
  ['COOP_TASKRUN', { coopTaskrun: true }],
  ['COOP_TASKRUN|TASKRUN_FLAG', { coopTaskrun: true, taskrunFlag: true }],
  ['SINGLE_ISSUER|DEFER_TASKRUN', { singleIssuer: true, deferTaskrun: true }],
  ['SINGLE_ISSUER|DEFER_TASKRUN|TASKRUN_FLAG', { singleIssuer: true, deferTaskrun: true, taskrunFlag: true }],
];

for (const [name, opts] of MODES) {
  test(`a pipe READ completed by a later write wakes the loop (${name})`, { timeout: 10_000 }, async () => {
    const ring = Ring.create({ entries: 4, ...opts });
    const wakeup = new RingWakeup(ring);
    const fd = pipeFd();
    const buf = new Uint8Array(native.alloc(4096));
    try {
      const s = ring.getSqe();
      prepRead(ring, s, fd, native.addressOf(buf), 64, -1);
      setUserData(ring, s, 77, 0x80000001);
      assert.equal(ring.submit(), 1);
      assert.equal(ring.cqReady(), 0, 'nothing to read yet');
      setTimeout(() => fs.writeSync(fd, 'late data'), 30);
      await wakeup.wait();
      if (opts.deferTaskrun) {
        // The eventfd fires when the completion is queued as deferred task
        // work; the CQE itself appears only in the next GETEVENTS enter.
        assert.equal(ring.cqReady(), 0, 'deferred: no CQE before entering');
        if (opts.taskrunFlag) assert.ok(ring.sqRingFlags() & IORING_SQ_TASKRUN);
      } else {
        assert.equal(ring.cqReady(), 1, 'the CQE is already posted when the eventfd fires');
      }
      ring.submit();
      const got: number[][] = [];
      ring.reap((lo, hi, res) => got.push([lo, hi, res]));
      assert.deepEqual(got, [[77, 0x80000001, 9]]);
      assert.equal(Buffer.from(buf.subarray(0, 9)).toString(), 'late data');
      assert.equal(ring.sqRingFlags() & IORING_SQ_TASKRUN, 0);
    } finally {
      wakeup.close();
      ring.close();
      fs.closeSync(fd);
    }
  });
}

test('DEFER_TASKRUN|TASKRUN_FLAG: submit() makes a system call only with SQEs to submit or task work flagged', () => {
  const ring = Ring.create({ entries: 4, singleIssuer: true, deferTaskrun: true, taskrunFlag: true });
  const fd = pipeFd();
  const buf = new Uint8Array(native.alloc(4096));
  try {
    assert.equal(ring.submit(), 0);
    assert.equal(ring.enters, 0, 'nothing to submit, no task work: no io_uring_enter');
    const s = ring.getSqe();
    prepRead(ring, s, fd, native.addressOf(buf), 64, -1);
    setUserData(ring, s, 5, 0);
    assert.equal(ring.submit(), 1);
    assert.equal(ring.enters, 1);
    ring.submit();
    assert.equal(ring.enters, 1, 'the READ waits for data: no task work yet');
    fs.writeSync(fd, 'data'); // completes the READ as deferred task work, flagged IORING_SQ_TASKRUN
    ring.submit();
    assert.equal(ring.enters, 2, 'a GETEVENTS enter runs the task work');
    assert.equal(ring.reap(() => {}), 1);
    ring.submit();
    assert.equal(ring.enters, 2);
  } finally {
    ring.close();
    fs.closeSync(fd);
  }
  // Without TASKRUN_FLAG nothing tells when deferred task work waits: every submit enters.
  const plain = Ring.create({ entries: 4, singleIssuer: true, deferTaskrun: true });
  plain.submit();
  assert.equal(plain.enters, 1);
  plain.close();
});

test('onReadable/start/stop: a callback per wake while started, none after stop', { timeout: 10_000 }, async () => {
  const ring = Ring.create({ entries: 8, singleIssuer: true, deferTaskrun: true });
  const wakeup = new RingWakeup(ring);
  const fd = pipeFd();
  const buf = new Uint8Array(native.alloc(4096));
  try {
    let completions = 0;
    let wakes = 0;
    let done!: () => void;
    const allDone = new Promise<void>((r) => (done = r));
    const read = (): void => {
      const s = ring.getSqe();
      prepRead(ring, s, fd, native.addressOf(buf), 1, -1);
      ring.submit();
    };
    wakeup.onReadable(() => {
      wakes++;
      ring.submit();
      ring.reap(() => {
        completions++;
        if (completions < 3) {
          read();
          setTimeout(() => fs.writeSync(fd, 'x'), 5);
        } else {
          done();
        }
      });
    });
    wakeup.start();
    read();
    setTimeout(() => fs.writeSync(fd, 'x'), 5);
    await allDone;
    assert.equal(completions, 3);
    assert.ok(wakes >= 3);
    wakeup.stop();
    const w = wakes;
    const s = ring.getSqe();
    prepNop(ring, s);
    ring.submit();
    ring.reap(() => {});
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(wakes, w, 'stopped: no callbacks');
  } finally {
    wakeup.close();
    wakeup.close();
    ring.close();
    fs.closeSync(fd);
  }
});

test('close() rejects a pending wait() and unregisters the eventfd', { timeout: 10_000 }, async () => {
  const ring = Ring.create({ entries: 4 });
  const wakeup = new RingWakeup(ring);
  const pending = wakeup.wait();
  wakeup.close();
  await assert.rejects(pending, /closed/);
  await assert.rejects(wakeup.wait(), { code: 'EBADF' });
  // The slot is free again: a second eventfd can be registered.
  const again = new RingWakeup(ring);
  again.close();
  ring.close();
});
