// The SQE a ring target (loop, stripe) queues to move a request's data to or
// from its file, in kernel and zero copy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { queueFileRw } from '../../src/targets/file-rw.js';
import { Ring } from '../../src/uring/index.js';
import { LAYOUTS } from '../../src/uring/layout.js';
import { IORING_OP_READ, IORING_OP_WRITE_FIXED } from '../../src/uring/constants.js';
import { UBLK_IO_OP_READ, UBLK_IO_OP_WRITE } from '../../src/ublk/abi/uapi.js';
import type { CopyMode, TargetIo } from '../../src/ublk/target.js';
import { RWF_DSYNC } from '../../src/sys.js';
import type { UblkRequest } from '../../src/ublk/worker/request.js';

const F = LAYOUTS.io_uring_sqe.fields;
/** An address as mmap gives them (above 2^32), and a file position above 4 GiB. */
const ADDR = 0x7f12_3456_7000, FILE_OFF = 5 * 2 ** 30 + 8192;

function fakeIo(ring: Ring, copy: CopyMode): TargetIo {
  // Nothing is submitted: every SQE asked for is slot 0, overwritten each time.
  return { ring, copy, reserve: () => {}, sqe: () => 0 } as unknown as TargetIo;
}

test('queueFileRw: the SQE holds the address past the request offset, the 64-bit file offset, and for a FUA write RWF_DSYNC', () => {
  const ring = Ring.create({ entries: 8 });
  try {
    const u8 = ring.sqeU8, view = new DataView(u8.buffer, u8.byteOffset, 64);
    const read = { op: UBLK_IO_OP_READ, bufferAddress: ADDR, fua: false } as UblkRequest;
    queueFileRw(fakeIo(ring, 'kernel'), read, 0, 7, FILE_OFF, 0xfff_f000, 4096, 0);
    assert.equal(u8[F.opcode[0]], IORING_OP_READ);
    assert.equal(view.getInt32(F.fd[0], true), 7);
    assert.equal(view.getBigUint64(F.addr[0], true), BigInt(ADDR + 0xfff_f000), 'the low half carries into the high one');
    assert.equal(view.getBigUint64(F.off[0], true), BigInt(FILE_OFF));
    assert.equal(view.getUint32(F.len[0], true), 4096);
    const write = { op: UBLK_IO_OP_WRITE, bufferAddress: 0, bufIndex: 9, fua: true } as UblkRequest;
    queueFileRw(fakeIo(ring, 'zero'), write, 0, 7, FILE_OFF, 8192, 4096, 0);
    assert.equal(u8[F.opcode[0]], IORING_OP_WRITE_FIXED);
    assert.equal(view.getBigUint64(F.addr[0], true), 8192n, 'zero copy: an offset in the registered buffer');
    assert.equal(view.getUint16(F.buf_index[0], true), 9);
    assert.equal(view.getUint32(F.rw_flags[0], true), RWF_DSYNC, 'FUA');
  } finally {
    ring.close();
  }
});
