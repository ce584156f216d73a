// Provided-buffer rings: the kernel picks the buffer for a READ with
// IOSQE_BUFFER_SELECT and reports its id in the CQE flags.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native } from '../../src/native.js';
import {
  Ring, PbufRing, prepRead, setUserData, setSqeFlags, setBufGroup,
  IOSQE_BUFFER_SELECT, IORING_CQE_F_BUFFER, IORING_CQE_F_BUF_MORE, IORING_CQE_BUFFER_SHIFT,
} from '../../src/uring/index.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'uring-pbuf-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A FIFO opened O_RDWR: one blocking fd that is both ends of a pipe. */
function pipeFd(name: string): number {
  const p = path.join(dir, name);
  execFileSync('mkfifo', [p]);
  return fs.openSync(p, 'r+');
}

function selectRead(ring: Ring, fd: number, bgid: number, len: number, id: number): void {
  const s = ring.getSqe();
  prepRead(ring, s, fd, 0, len, -1);
  setSqeFlags(ring, s, IOSQE_BUFFER_SELECT);
  setBufGroup(ring, s, bgid);
  setUserData(ring, s, id, 0);
}

function waitOne(ring: Ring): { id: number; res: number; flags: number } {
  let out = { id: -1, res: 0, flags: 0 };
  ring.submitAndWait(1);
  assert.equal(ring.reap((id, _hi, res, flags) => (out = { id, res, flags })), 1);
  return out;
}

test('provided-buffer ring: READ from a pipe lands in the buffer the CQE names', () => {
  const ring = Ring.create({ entries: 8 });
  const fd = pipeFd('plain');
  const SIZE = 256;
  const mem = native.alloc(4 * SIZE);
  const bytes = new Uint8Array(mem);
  const base = native.addressOf(mem);
  const pbuf = PbufRing.register(ring, 7, 4);
  try {
    // Offer buffers 10..13 in reverse memory order, so bid ≠ position.
    for (let i = 0; i < 4; i++) pbuf.add(base + (3 - i) * SIZE, SIZE, 10 + i, i);
    pbuf.advance(4);
    const bidAt = (bid: number): Uint8Array => bytes.subarray((13 - bid) * SIZE, (14 - bid) * SIZE);

    fs.writeSync(fd, 'first');
    selectRead(ring, fd, 7, SIZE, 1);
    let c = waitOne(ring);
    assert.equal(c.id, 1);
    assert.equal(c.res, 5);
    assert.ok(c.flags & IORING_CQE_F_BUFFER);
    assert.equal(c.flags >>> IORING_CQE_BUFFER_SHIFT, 10);
    assert.equal(Buffer.from(bidAt(10).subarray(0, 5)).toString(), 'first');

    // The read is queued before the data exists; the kernel picks the buffer on arrival.
    selectRead(ring, fd, 7, SIZE, 2);
    ring.submit();
    fs.writeSync(fd, 'second!');
    c = waitOne(ring);
    assert.equal(c.res, 7);
    assert.equal(c.flags >>> IORING_CQE_BUFFER_SHIFT, 11);
    assert.equal(Buffer.from(bidAt(11).subarray(0, 7)).toString(), 'second!');
    assert.ok(bidAt(12).every((b) => b === 0) && bidAt(13).every((b) => b === 0), 'other buffers untouched');

    // Use up the rest; then the group is empty: -ENOBUFS.
    for (const text of ['x', 'y']) {
      fs.writeSync(fd, text);
      selectRead(ring, fd, 7, SIZE, 3);
      waitOne(ring);
    }
    fs.writeSync(fd, 'z');
    selectRead(ring, fd, 7, SIZE, 4);
    c = waitOne(ring);
    assert.equal(c.res, -105, 'no buffers left: -ENOBUFS');

    // Give buffer 11 back, it is used next.
    pbuf.recycle(native.addressOf(bidAt(11)), SIZE, 11);
    selectRead(ring, fd, 7, SIZE, 5);
    c = waitOne(ring);
    assert.equal(c.res, 1);
    assert.equal(c.flags >>> IORING_CQE_BUFFER_SHIFT, 11);
    assert.equal(String.fromCharCode(bidAt(11)[0]!), 'z');
  } finally {
    pbuf.unregister();
    pbuf.unregister();
    ring.close();
    fs.closeSync(fd);
    native.munmap(mem);
  }
});

test('incremental provided-buffer ring (IOU_PBUF_RING_INC) consumes one buffer piecewise', (t) => {
  const ring = Ring.create({ entries: 8 });
  let pbuf: PbufRing;
  try {
    pbuf = PbufRing.register(ring, 3, 2, { incremental: true });
  } catch (e) {
    ring.close();
    if ((e as { code?: string }).code === 'EINVAL') return t.skip('kernel lacks IOU_PBUF_RING_INC');
    throw e;
  }
  const fd = pipeFd('inc');
  const buf = new Uint8Array(native.alloc(64));
  try {
    assert.equal(pbuf.incremental, true);
    pbuf.recycle(native.addressOf(buf), 64, 42);
    fs.writeSync(fd, 'abc');
    selectRead(ring, fd, 3, 64, 1);
    let c = waitOne(ring);
    assert.equal(c.res, 3);
    assert.equal(c.flags >>> IORING_CQE_BUFFER_SHIFT, 42);
    assert.ok(c.flags & IORING_CQE_F_BUF_MORE, 'the buffer still has room: more completions will use it');
    fs.writeSync(fd, 'defg');
    selectRead(ring, fd, 3, 64, 2);
    c = waitOne(ring);
    assert.equal(c.res, 4);
    assert.equal(c.flags >>> IORING_CQE_BUFFER_SHIFT, 42);
    assert.equal(Buffer.from(buf.subarray(0, 8)).toString('latin1'), 'abcdefg\0', 'appended where the last read ended');
  } finally {
    pbuf.unregister();
    ring.close();
    fs.closeSync(fd);
  }
});

test('PbufRing rejects a non power-of-two size and a duplicate group id', () => {
  const ring = Ring.create({ entries: 4 });
  try {
    assert.throws(() => PbufRing.register(ring, 1, 3), RangeError);
    const a = PbufRing.register(ring, 1, 8);
    assert.throws(() => PbufRing.register(ring, 1, 8), { code: 'EEXIST' });
    a.unregister();
    PbufRing.register(ring, 1, 8).unregister();
  } finally {
    ring.close();
  }
});
