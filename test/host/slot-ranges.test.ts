// The allocator of a shared ring's places (fixed files, buffer-table slots,
// user_data queue indices): devices come and go, and a range is reused only
// once given back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SlotRanges } from '../../src/ublk/worker/slot-ranges.js';

test('ranges are taken first fit, given back, merged with their neighbours and reused', () => {
  const r = new SlotRanges(10);
  assert.equal(r.take(3), 0);
  assert.equal(r.take(3), 3);
  assert.equal(r.take(3), 6);
  assert.equal(r.take(2), -1, 'one slot is left');
  assert.equal(r.available, 1);
  r.release(3, 3);
  assert.equal(r.take(4), -1, 'the hole is 3 long, the tail 1: not contiguous');
  r.release(0, 3);
  assert.equal(r.take(6), 0, 'the two holes merged');
  r.release(0, 6);
  r.release(6, 3);
  assert.equal(r.available, 10);
  assert.equal(r.take(10), 0, 'everything merged back into one range');
});

test('giving back what was not taken throws (a double release would hand one place to two devices)', () => {
  const r = new SlotRanges(8);
  const a = r.take(4);
  r.release(a, 4);
  assert.throws(() => r.release(a, 4), /were not taken/);
  assert.throws(() => r.release(6, 4), /were not taken/);
  assert.equal(r.take(8), 0);
});

test('many devices of different sizes arriving and leaving never get overlapping ranges', () => {
  const r = new SlotRanges(4096);
  const held = new Map<number, number>();
  let seed = 7;
  const rand = (n: number): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  for (let i = 0; i < 5000; i++) {
    if (held.size && rand(3) === 0) {
      const starts = [...held.keys()];
      const s = starts[rand(starts.length)]!;
      r.release(s, held.get(s)!);
      held.delete(s);
      continue;
    }
    const n = 1 + rand(64);
    const s = r.take(n);
    if (s < 0) continue;
    for (const [t, m] of held) assert.ok(s + n <= t || t + m <= s, `[${s}, ${s + n}) overlaps [${t}, ${t + m})`);
    held.set(s, n);
  }
  const inUse = [...held.values()].reduce((a, b) => a + b, 0);
  assert.equal(r.available + inUse, 4096);
});

test('takeAt takes exactly the range another table chose, and only if all of it is free', () => {
  const main = new SlotRanges(100), worker = new SlotRanges(100);
  const a = main.take(30), b = main.take(30);
  assert.ok(worker.takeAt(b, 30), 'the middle of a free range');
  assert.ok(worker.takeAt(a, 30), 'the start');
  assert.equal(worker.takeAt(a + 10, 5), false, 'taken already');
  assert.equal(worker.takeAt(90, 20), false, 'past the end');
  assert.ok(worker.takeAt(95, 5), 'the very end');
  assert.equal(worker.available, 35);
  assert.equal(worker.take(35), 60, 'what is left is one range: 60..94');
  worker.release(95, 5);
  worker.release(b, 30);
  worker.release(60, 35);
  worker.release(a, 30);
  assert.equal(worker.take(100), 0, 'everything merged back');
});
