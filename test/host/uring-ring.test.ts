// Ring mechanics: setup options, SQ accounting, user_data round trips, CQ overflow.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Ring, prepNop, setUserData, setSqeFlags, setRwFlags, LAYOUTS,
  IORING_SETUP_CQSIZE, IORING_SETUP_SQE128, IORING_SETUP_DEFER_TASKRUN, IORING_SETUP_SINGLE_ISSUER,
  IORING_FEAT_NODROP, IORING_FEAT_MIN_TIMEOUT, IORING_SQ_CQ_OVERFLOW, IOSQE_IO_LINK, IORING_NOP_INJECT_RESULT,
} from '../../src/uring/index.js';

type Cqe = [lo: number, hi: number, res: number, flags: number];

function reapAll(ring: Ring): Cqe[] {
  const out: Cqe[] = [];
  ring.reap((lo, hi, res, flags) => out.push([lo, hi, res, flags]));
  return out;
}

function nop(ring: Ring, lo: number, hi: number): number {
  const s = ring.getSqe();
  assert.ok(s >= 0, 'SQ has room');
  prepNop(ring, s);
  setUserData(ring, s, lo, hi);
  return s;
}

test('NOP batches round-trip user_data halves, including values >= 2^31', () => {
  const ring = Ring.create({ entries: 32 });
  try {
    const his = [0, 1, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
    for (let round = 0; round < 3; round++) {
      const sent: [number, number][] = [];
      for (let i = 0; i < 30; i++) {
        const lo = (0x9e3779b9 * (i + round * 31)) >>> 0;
        const hi = his[i % his.length]!;
        nop(ring, lo, hi);
        sent.push([lo, hi]);
      }
      assert.equal(ring.pending(), 30);
      assert.equal(ring.submitAndWait(30), 30);
      assert.equal(ring.pending(), 0);
      assert.equal(ring.cqReady(), 30);
      const got = reapAll(ring);
      assert.deepEqual(got.map(([lo, hi]) => [lo, hi]), sent);
      assert.ok(got.every(([, , res, flags]) => res === 0 && flags === 0));
      assert.equal(ring.cqReady(), 0);
    }
  } finally {
    ring.close();
  }
});

test('getSqe returns -1 when the SQ is full and hands out zeroed SQEs', () => {
  const ring = Ring.create({ entries: 4 });
  try {
    assert.equal(ring.sqEntries, 4);
    assert.equal(ring.sqeSize, 64);
    ring.sqeU8.fill(0xff);
    const offs = [0, 1, 2, 3].map(() => ring.getSqe());
    assert.deepEqual(offs, [0, 64, 128, 192]);
    assert.ok(ring.sqeU8.every((b) => b === 0), 'each handed-out SQE was zeroed, whole');
    assert.equal(ring.getSqe(), -1);
    assert.equal(ring.sqSpace(), 0);
    assert.equal(ring.pending(), 4);
    offs.forEach((s, i) => setUserData(ring, s, i, 0));
    assert.equal(ring.submit(), 4);
    assert.equal(ring.sqSpace(), 4);
    ring.sqeU8.fill(0xee);
    const s = ring.getSqe();
    assert.equal(s, 0, 'the SQ wraps');
    assert.ok(ring.sqeU8.subarray(0, 64).every((b) => b === 0));
    assert.ok(ring.sqeU8.subarray(64).every((b) => b === 0xee), 'only that SQE was touched');
    ring.sqeU8.fill(0, 64);
    ring.submitAndWait(5);
    assert.equal(reapAll(ring).length, 5);
  } finally {
    ring.close();
  }
});

test('CQSIZE is honoured and the default CQ is twice the SQ', () => {
  const a = Ring.create({ entries: 8 });
  const b = Ring.create({ entries: 8, cqEntries: 128 });
  try {
    assert.equal(a.cqEntries, 16);
    assert.equal(a.flags & IORING_SETUP_CQSIZE, 0);
    assert.equal(b.cqEntries, 128);
    assert.ok(b.flags & IORING_SETUP_CQSIZE);
    assert.equal(Ring.create({ entries: 5 }).sqEntries, 8, 'entries round up to a power of two');
  } finally {
    a.close();
    b.close();
  }
});

test('SQE128 ring: 128-byte SQEs, zeroed whole, NOP works', () => {
  const ring = Ring.create({ entries: 4, sqe128: true });
  try {
    assert.equal(ring.sqeSize, 128);
    assert.ok(ring.flags & IORING_SETUP_SQE128);
    assert.equal(ring.sqeU8.length, 4 * 128);
    ring.sqeU8.fill(0xff);
    const s0 = nop(ring, 1, 2);
    const s1 = nop(ring, 3, 4);
    assert.deepEqual([s0, s1], [0, 128]);
    assert.ok(ring.sqeU8.subarray(40, 128).every((b) => b === 0), 'the 80-byte command area was zeroed too');
    assert.equal(ring.submitAndWait(2), 2);
    assert.deepEqual(reapAll(ring), [[1, 2, 0, 0], [3, 4, 0, 0]]);
  } finally {
    ring.close();
  }
});

test('NOP with IORING_NOP_INJECT_RESULT returns a negative result through the CQE', () => {
  const ring = Ring.create({ entries: 4 });
  try {
    const s = nop(ring, 7, 0);
    setRwFlags(ring, s, IORING_NOP_INJECT_RESULT);
    ring.sqeU32[(s + LAYOUTS.io_uring_sqe.fields.len[0]) >> 2] = -5 >>> 0;
    ring.submitAndWait(1);
    assert.deepEqual(reapAll(ring), [[7, 0, -5, 0]]);
  } finally {
    ring.close();
  }
});

test('an invalid opcode fails in its own CQE, not in submit', () => {
  const ring = Ring.create({ entries: 4 });
  try {
    const s = nop(ring, 1, 0);
    ring.sqeU8[s] = 250;
    assert.equal(ring.submitAndWait(1), 1);
    assert.deepEqual(reapAll(ring), [[1, 0, -22, 0]]);
  } finally {
    ring.close();
  }
});

test('linked SQEs (IOSQE_IO_LINK) complete in order', () => {
  const ring = Ring.create({ entries: 8 });
  try {
    for (let i = 0; i < 4; i++) setSqeFlags(ring, nop(ring, i, 0), i < 3 ? IOSQE_IO_LINK : 0);
    ring.submitAndWait(4);
    assert.deepEqual(reapAll(ring).map((c) => c[0]), [0, 1, 2, 3]);
  } finally {
    ring.close();
  }
});

for (const deferTaskrun of [false, true]) {
  test(`CQ overflow loses nothing${deferTaskrun ? ' (DEFER_TASKRUN)' : ''}`, () => {
    const ring = Ring.create({ entries: 8, cqEntries: 16, singleIssuer: deferTaskrun, deferTaskrun });
    try {
      assert.ok(ring.features & IORING_FEAT_NODROP);
      const total = 100;
      let next = 0;
      while (next < total) {
        while (next < total && ring.sqSpace() > 0) nop(ring, next++, 0xabc);
        const res = ring.submit();
        assert.ok(res > 0 || res === -16 /* -EBUSY */, `submit: ${res}`);
      }
      assert.equal(ring.cqReady(), 16, 'the CQ is full');
      assert.ok(ring.sqRingFlags() & IORING_SQ_CQ_OVERFLOW, 'the kernel reports the overflow');
      const ids = reapAll(ring).map(([lo, hi]) => (assert.equal(hi, 0xabc), lo));
      assert.deepEqual(ids, Array.from({ length: total }, (_, i) => i), 'all CQEs, in order');
      assert.equal(ring.sqRingFlags() & IORING_SQ_CQ_OVERFLOW, 0);
    } finally {
      ring.close();
    }
  });
}

test('a reap handler may prepare new SQEs', () => {
  const ring = Ring.create({ entries: 4, cqEntries: 64 });
  try {
    for (let i = 0; i < 4; i++) nop(ring, i, 0);
    const seen: number[] = [];
    while (seen.length < 20) {
      ring.submitAndWait(1);
      ring.reap((lo) => {
        seen.push(lo);
        const next = lo + 4;
        if (next < 20) nop(ring, next, 0);
      });
    }
    assert.deepEqual(seen.sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i));
    assert.equal(ring.pending(), 0);
  } finally {
    ring.close();
  }
});

test('a throwing handler consumes CQEs up to and including its own', () => {
  const ring = Ring.create({ entries: 4 });
  try {
    for (let i = 0; i < 3; i++) nop(ring, i, 0);
    ring.submitAndWait(3);
    assert.throws(() => ring.reap((lo) => {
      if (lo === 1) throw new Error('handler failed');
    }), /handler failed/);
    assert.deepEqual(reapAll(ring).map((c) => c[0]), [2]);
  } finally {
    ring.close();
  }
});

test('SINGLE_ISSUER|DEFER_TASKRUN setup; DEFER_TASKRUN alone is refused by the kernel', () => {
  const ring = Ring.create({ entries: 4, singleIssuer: true, deferTaskrun: true });
  try {
    assert.equal(ring.flags, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    nop(ring, 5, 6);
    assert.equal(ring.submit(), 1);
    assert.deepEqual(reapAll(ring), [[5, 6, 0, 0]]);
  } finally {
    ring.close();
  }
  assert.throws(() => Ring.create({ entries: 4, deferTaskrun: true }), { code: 'EINVAL' });
  Ring.create({ entries: 4, coopTaskrun: true, taskrunFlag: true }).close();
});

test('close is idempotent and the mappings are gone afterwards', () => {
  const ring = Ring.create({ entries: 4 });
  const view = ring.sqeU8;
  ring.close();
  ring.close();
  assert.equal(ring.closed, true);
  assert.equal(view.length, 0);
  assert.throws(() => ring.registerFiles([0]), { code: 'EBADF' });
});

test('submitAndWaitTimeout: returns when a CQE comes, or once the time is up with none (no -ETIME thrown)', () => {
  const ring = Ring.create({ entries: 8, singleIssuer: true, deferTaskrun: true });
  try {
    nop(ring, 1, 0);
    let t0 = performance.now();
    assert.equal(ring.submitAndWaitTimeout(1, 5_000_000), 1, 'the NOP submitted');
    assert.ok(performance.now() - t0 < 4000, 'it did not wait for the timeout');
    assert.deepEqual(reapAll(ring), [[1, 0, 0, 0]]);
    t0 = performance.now();
    assert.equal(ring.submitAndWaitTimeout(1, 30_000), 0);
    const waited = performance.now() - t0;
    assert.ok(waited >= 25 && waited < 4000, `waited ${waited} ms for a 30 ms timeout`);
    assert.equal(ring.cqReady(), 0);
  } finally {
    ring.close();
  }
});

test('submitAndWaitMin: settles for fewer CQEs when the window ends, and for none (no -ETIME thrown)', (t) => {
  const ring = Ring.create({ entries: 8, singleIssuer: true, deferTaskrun: true });
  try {
    if (!(ring.features & IORING_FEAT_MIN_TIMEOUT)) return t.skip('kernel lacks IORING_FEAT_MIN_TIMEOUT');
    nop(ring, 1, 0);
    // One NOP completes inside the submit; asking for 3 must still return once 20 ms are up.
    let t0 = performance.now();
    assert.equal(ring.submitAndWaitMin(3, 20_000), 1);
    assert.ok(performance.now() - t0 < 5000);
    assert.deepEqual(reapAll(ring), [[1, 0, 0, 0]]);
    // Nothing submitted, nothing to come: the kernel's -ETIME is no error.
    t0 = performance.now();
    assert.equal(ring.submitAndWaitMin(1, 20_000), 0);
    assert.ok(performance.now() - t0 >= 15, 'it waited for the window');
    assert.equal(ring.cqReady(), 0);
  } finally {
    ring.close();
  }
});
