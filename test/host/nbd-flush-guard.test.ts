// What a FLUSH may claim after the device's connections dropped (src/nbd/flush-guard.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FLUSH_GUARD_BYTES, FlushGuard } from '../../src/nbd/flush-guard.js';
import { UBLK_IO_OP_FLUSH, UBLK_IO_OP_READ, UBLK_IO_OP_WRITE } from '../../src/ublk/abi/uapi.js';
import type { UblkRequest } from '../../src/ublk/worker/request.js';

const EIO = 5;
const req = (op: number, fua = false): UblkRequest => ({ op, fua }) as unknown as UblkRequest;
const flush = (g: FlushGuard): number => {
  const f = req(UBLK_IO_OP_FLUSH);
  g.sending(f);
  return g.completed(f, 0);
};

test('FlushGuard: the last connection dropping with unflushed writes fails the next FLUSH once; one dropping while another lives does not', () => {
  // Two serving threads of one device: one guard each over the same counters.
  const sab = new SharedArrayBuffer(FLUSH_GUARD_BYTES);
  const a = new FlushGuard(sab), b = new FlushGuard(sab);
  a.connected();
  b.connected();
  assert.equal(a.completed(req(UBLK_IO_OP_WRITE), 4096), 4096);
  assert.equal(a.dropped(), false, 'b still connected: the server lives, its cache holds the write');
  assert.equal(b.dropped(), true, 'the last connection: a restarted server owes nothing for the unflushed write');
  a.connected();
  assert.equal(b.completed(req(UBLK_IO_OP_READ), 4096), 4096, 'other requests are untouched');
  assert.equal(flush(b), -EIO, 'the next FLUSH, on any thread, hears of it');
  assert.equal(flush(a), 0, 'once');
});

test('FlushGuard: writes a completed FLUSH covered, FUA writes, and a FLUSH in flight at the drop', () => {
  const g = new FlushGuard(new SharedArrayBuffer(FLUSH_GUARD_BYTES));
  g.connected();
  g.completed(req(UBLK_IO_OP_WRITE), 4096);
  assert.equal(flush(g), 0);
  g.completed(req(UBLK_IO_OP_WRITE, true), 4096);
  assert.equal(g.dropped(), false, 'everything acknowledged was flushed (or FUA)');
  g.connected();
  // A FLUSH sent before the drop covers a write acknowledged before it; its reply comes only after the drop (sent again).
  g.completed(req(UBLK_IO_OP_WRITE), 4096);
  const f = req(UBLK_IO_OP_FLUSH);
  g.sending(f);
  assert.equal(g.dropped(), true);
  g.connected();
  g.sending(f);
  assert.equal(g.completed(f, 0), -EIO, 'the resent FLUSH cannot vouch for the write');
  assert.equal(flush(g), 0);
  // A failed FLUSH leaves the news for the next.
  g.completed(req(UBLK_IO_OP_WRITE), 4096);
  assert.equal(g.dropped(), true);
  const failed = req(UBLK_IO_OP_FLUSH);
  g.sending(failed);
  assert.equal(g.completed(failed, -EIO), -EIO);
  assert.equal(flush(g), -EIO);
});
