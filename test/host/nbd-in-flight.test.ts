// The NBD connection's table of requests waiting for replies (handles, chunk
// coverage of structured replies) and its send queue: no allocation per request.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InFlight } from '../../src/nbd/in-flight.js';
import { GcCount } from '../../src/ublk/worker/gc-count.js';
import { C_HEAP_BYTES, SLOT_WORDS } from '../../src/ublk/stats.js';
import type { UblkRequest } from '../../src/ublk/worker/request.js';
import { NbdConnection, OP_RECV, OP_SEND } from '../../src/nbd/connection.js';
import { NBD_CMD_WRITE, NBD_SIMPLE_REPLY_MAGIC, REQUEST_BYTES } from '../../src/nbd/constants.js';
import { Ring } from '../../src/uring/index.js';

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

test('NbdConnection: a WRITE sent and its reply received, one at a time (QD 1), allocate next to nothing (the send queue emptied with length = 0 made new storage each time)', () => {
  const ring = Ring.create({ entries: 8 });
  let replied = 0;
  // Nothing is submitted: every SQE the connection asks for is slot 0, overwritten, and its CQEs are played by hand.
  const conn = new NbdConnection({ ring, ownSqe: () => 0, reserve: () => {}, replied: () => void replied++ }, -1, 0, false, () => assert.fail('the connection died'));
  const stage = (conn as unknown as { stage: Uint8Array }).stage;
  const v = new DataView(stage.buffer, stage.byteOffset, 16);
  const write = { offset: 4096, length: 4096, bufferAddress: 0 } as UblkRequest;
  let seq = 0;
  const cycle = (n: number) => {
    for (let i = 0; i < n; i++) {
      conn.queue(write, NBD_CMD_WRITE, 0);
      conn.onCqe(OP_SEND, REQUEST_BYTES + write.length);
      // The simple reply: magic, error 0, the handle (slot 0, its use count).
      v.setUint32(0, NBD_SIMPLE_REPLY_MAGIC);
      v.setUint32(4, 0);
      v.setUint32(8, ++seq);
      v.setUint32(12, 0);
      conn.onCqe(OP_RECV, 16);
    }
  };
  try {
    cycle(50_000);
    assert.equal(replied, 50_000);
    const words = new Float64Array(SLOT_WORDS);
    const gc = new GcCount(words, 0);
    gc.sample();
    const before = words[C_HEAP_BYTES]!;
    const n = 200_000;
    cycle(n);
    gc.sample();
    gc.stop();
    assert.equal(replied, 50_000 + n);
    // Measured: 16 bytes (a 64-bit buffer address boxed on its way to the iovec, as in
    // test/vm/hot-path.test.ts); 169 when the send queue was emptied with length = 0.
    const perRequest = (words[C_HEAP_BYTES]! - before) / n;
    assert.ok(perRequest < 48, `${perRequest.toFixed(1)} bytes per request`);
  } finally {
    ring.close();
  }
});
