// The NBD connection's table of requests waiting for replies: handles, chunk
// coverage of structured replies, and no allocation per request.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InFlight } from '../../src/nbd/in-flight.js';
import { GcCount } from '../../src/ublk/worker/gc-count.js';
import { C_HEAP_BYTES, SLOT_WORDS } from '../../src/ublk/stats.js';
import type { UblkRequest } from '../../src/ublk/worker/request.js';

const req = { offset: 0, length: 8192 } as UblkRequest;

test('InFlight: handles name a slot and its use; chunks may not overlap, and their bytes add up', () => {
  const f = new InFlight();
  const a = f.add(req, 1, 0), b = f.add(req, 0, 0);
  assert.equal(f.find(a, f.seq(a)), a);
  assert.equal(f.find(a, f.seq(a) + 1), -1, 'a stale handle');
  assert.ok(f.cover(b, 0, 4096) && f.cover(b, 4096, 4096));
  assert.equal(f.cover(b, 2048, 512), false, 'overlaps');
  assert.equal(f.covered(b), 8192);
  f.release(b);
  const c = f.add(req, 0, 0);
  assert.equal(c, b, 'the slot is reused');
  assert.equal(f.find(b, f.seq(b) - 1), -1, 'the earlier use of the slot is stale');
  assert.ok(f.cover(c, 2048, 512), 'its spans start empty');
  assert.equal(f.covered(c), 512);
  assert.deepEqual(f.drain(), [req, req]);
  assert.equal(f.count, 0);
});

test('InFlight: a READ\'s add, chunk and release allocate nothing (emptying a slot\'s spans with length = 0 allocated about 170 bytes each)', () => {
  const f = new InFlight();
  const cycle = (n: number) => {
    let ok = 0;
    for (let i = 0; i < n; i++) {
      const slot = f.add(req, 0, 0);
      if (f.cover(slot, 0, 4096)) ok++;
      f.release(slot);
    }
    return ok;
  };
  cycle(50_000); // optimised by now
  const words = new Float64Array(SLOT_WORDS);
  const gc = new GcCount(words, 0);
  gc.sample();
  const before = words[C_HEAP_BYTES]!;
  const n = 200_000;
  assert.equal(cycle(n), n);
  gc.sample();
  gc.stop();
  const perRequest = (words[C_HEAP_BYTES]! - before) / n;
  assert.ok(perRequest < 8, `${perRequest.toFixed(1)} bytes per request`);
});
