// UblkRequest: the per-tag object the engines refill for every request.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UblkRequest } from '../../src/ublk/worker/request.js';
import { DESC_NR_SECTORS, DESC_OP_FLAGS, DESC_START_SECTOR, DESC_WORDS } from '../../src/ublk/worker/queue-memory.js';
import { UBLK_IO_OP_FLUSH, UBLK_IO_OP_READ, UBLK_IO_OP_WRITE } from '../../src/ublk/abi/uapi.js';

const DEPTH = 2;

function loaded(req: UblkRequest, desc: Uint32Array, op: number, sector: number, sectors: number): UblkRequest {
  const w = req.tag * DESC_WORDS;
  desc[w + DESC_OP_FLAGS] = op;
  desc[w + DESC_START_SECTOR] = sector;
  desc[w + DESC_NR_SECTORS] = sectors;
  req.load(desc);
  return req;
}

test('req.buffer: a view of the tag buffer made only when asked for, and the same object while the length stays', () => {
  const desc = new Uint32Array(DEPTH * DESC_WORDS);
  const tagBuffer = new Uint8Array(64 << 10);
  const req = new UblkRequest(0, 1, tagBuffer, 1, 0);
  const first = loaded(req, desc, UBLK_IO_OP_WRITE, 8, 8).buffer;
  assert.equal(first.length, 4096);
  assert.equal(first.buffer, tagBuffer.buffer);
  // Refilled for the next requests of the same size: no new view (nothing allocated per request).
  assert.equal(loaded(req, desc, UBLK_IO_OP_READ, 800, 8).buffer, first);
  assert.equal(loaded(req, desc, UBLK_IO_OP_WRITE, 16, 8).buffer, first);
  // Another size: a view of that size, over the same memory.
  const big = loaded(req, desc, UBLK_IO_OP_READ, 0, 128).buffer;
  assert.equal(big.length, 65536);
  big[4095] = 7;
  assert.equal(loaded(req, desc, UBLK_IO_OP_READ, 0, 8).buffer[4095], 7);
  // No data for a FLUSH, and none where the engine has no tag buffer (zero copy).
  assert.equal(loaded(req, desc, UBLK_IO_OP_FLUSH, 0, 0).buffer.length, 0);
  assert.equal(loaded(new UblkRequest(0, 0, null, 0, 0), desc, UBLK_IO_OP_READ, 0, 8).buffer.length, 0);
});
