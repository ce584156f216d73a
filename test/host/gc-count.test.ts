// GcCount: the serving threads' garbage collections and heap allocation, as the counters show them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GcCount } from '../../src/ublk/worker/gc-count.js';
import { C_GC_MAJOR, C_GC_MINOR, C_HEAP_BYTES, SLOT_WORDS } from '../../src/ublk/stats.js';

test('GcCount: counts what a loop allocates and the collections it causes, and next to nothing for a loop that allocates nothing', () => {
  const words = new Float64Array(2 * SLOT_WORDS);
  const gc = new GcCount(words, SLOT_WORDS); // the second slot
  gc.sample();
  gc.sample();
  const quiet = words[SLOT_WORDS + C_HEAP_BYTES]!;
  let x = 0;
  for (let i = 0; i < 1e6; i++) x = (x + i * 7) % 1009;
  gc.sample();
  const idle = words[SLOT_WORDS + C_HEAP_BYTES]! - quiet;
  assert.ok(idle < 4096, `a loop without allocation: ${idle} bytes counted (${x})`);
  const before = words[SLOT_WORDS + C_HEAP_BYTES]!;
  let keep: number[][] = [];
  for (let i = 0; i < 200_000; i++) {
    keep.push([i, i + 1, i + 2, i + 3]); // about 64 bytes each, dropped every thousand
    if (keep.length === 1000) keep = [];
  }
  gc.stop();
  const allocated = words[SLOT_WORDS + C_HEAP_BYTES]! - before;
  assert.ok(allocated > 200_000 * 32, `200000 small arrays: ${allocated} bytes counted`);
  assert.ok(words[SLOT_WORDS + C_GC_MINOR]! + words[SLOT_WORDS + C_GC_MAJOR]! >= 1, 'they cost collections');
  assert.equal(words[C_HEAP_BYTES], 0, 'the first slot untouched');
});
