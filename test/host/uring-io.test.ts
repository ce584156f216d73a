// File I/O through the ring against real temp files: read/write, fixed
// buffers and files, fsync, fallocate, offsets beyond 32 bits.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native } from '../../src/native.js';
import {
  Ring, prepRead, prepWrite, prepReadFixed, prepWriteFixed, prepFsync, prepFallocate, prepTimeout,
  setUserData, setSqeFlags, setOffset64, setAddr, LAYOUTS,
  IOSQE_FIXED_FILE, IORING_FSYNC_DATASYNC,
} from '../../src/uring/index.js';

const FALLOC_FL_KEEP_SIZE = 0x01, FALLOC_FL_PUNCH_HOLE = 0x02, FALLOC_FL_ZERO_RANGE = 0x10;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'uring-io-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let fileNo = 0;

function tempFile(): { fd: number; file: string } {
  const file = path.join(dir, `f${fileNo++}`);
  return { fd: fs.openSync(file, 'w+'), file };
}

/** Submits what is prepared, waits for `n` CQEs and returns their results by user_data lo. */
function run(ring: Ring, n: number): Map<number, number> {
  assert.ok(ring.submitAndWait(n) >= 0);
  const res = new Map<number, number>();
  while (res.size < n) {
    ring.reap((lo, _hi, r) => res.set(lo, r));
    if (res.size < n) ring.submitAndWait(1);
  }
  return res;
}

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

test('WRITE then READ against a temp file', () => {
  const ring = Ring.create({ entries: 8 });
  const { fd } = tempFile();
  try {
    const out = pattern(10_000, 3);
    const back = new Uint8Array(10_000);
    let s = ring.getSqe();
    prepWrite(ring, s, fd, native.addressOf(out), out.length, 4096);
    setUserData(ring, s, 1, 0);
    assert.deepEqual([...run(ring, 1)], [[1, 10_000]]);
    assert.equal(fs.fstatSync(fd).size, 4096 + 10_000);
    s = ring.getSqe();
    prepRead(ring, s, fd, native.addressOf(back), back.length, 4096);
    setUserData(ring, s, 2, 0);
    assert.deepEqual([...run(ring, 1)], [[2, 10_000]]);
    assert.deepEqual(back, out);
    const direct = Buffer.alloc(100);
    fs.readSync(fd, direct, 0, 100, 4096 + 500);
    assert.deepEqual(new Uint8Array(direct), out.subarray(500, 600));
  } finally {
    ring.close();
    fs.closeSync(fd);
  }
});

test('offsets beyond 2^32 reach the kernel intact (number and lo/hi forms)', () => {
  const ring = Ring.create({ entries: 8 });
  const { fd } = tempFile();
  try {
    const data = pattern(512, 9);
    const big = 5 * 2 ** 32 + 4096;
    let s = ring.getSqe();
    prepWrite(ring, s, fd, native.addressOf(data), data.length, big);
    setUserData(ring, s, 1, 0);
    assert.equal(run(ring, 1).get(1), 512);
    assert.equal(fs.fstatSync(fd).size, big + 512);
    s = ring.getSqe();
    prepWrite(ring, s, fd, 0, data.length, 0);
    setAddr(ring, s, native.addressOf(data));
    setOffset64(ring, s, 8192, 6);
    setUserData(ring, s, 2, 0);
    assert.equal(run(ring, 1).get(2), 512);
    assert.equal(fs.fstatSync(fd).size, 6 * 2 ** 32 + 8192 + 512);
    const back = Buffer.alloc(512);
    fs.readSync(fd, back, 0, 512, big);
    assert.deepEqual(new Uint8Array(back), data);
  } finally {
    ring.close();
    fs.closeSync(fd);
  }
});

test('READ_FIXED/WRITE_FIXED with registered buffers', () => {
  const ring = Ring.create({ entries: 8 });
  const { fd } = tempFile();
  const mem = native.alloc(3 * 4096);
  try {
    const bufs = [0, 1, 2].map((i) => new Uint8Array(mem, i * 4096, 4096));
    ring.registerBuffers(bufs);
    bufs[0]!.set(pattern(4096, 1));
    bufs[1]!.set(pattern(4096, 2));
    let s = ring.getSqe();
    prepWriteFixed(ring, s, fd, native.addressOf(bufs[0]!), 4096, 0, 0);
    setUserData(ring, s, 1, 0);
    s = ring.getSqe();
    // A sub-range of buffer 1 at a nonzero file offset.
    prepWriteFixed(ring, s, fd, native.addressOf(bufs[1]!) + 100, 1000, 4096, 1);
    setUserData(ring, s, 2, 0);
    assert.deepEqual(Object.fromEntries(run(ring, 2)), { 1: 4096, 2: 1000 });
    s = ring.getSqe();
    prepReadFixed(ring, s, fd, native.addressOf(bufs[2]!), 4096 + 1000, 0, 2);
    setUserData(ring, s, 3, 0);
    s = ring.getSqe();
    // An address outside buffer 0's registered range is refused.
    prepReadFixed(ring, s, fd, native.addressOf(bufs[1]!), 16, 0, 0);
    setUserData(ring, s, 4, 0);
    const r = run(ring, 2);
    assert.equal(r.get(3), -14, 'buffer 2 is only 4096 bytes: -EFAULT');
    assert.equal(r.get(4), -14);
    s = ring.getSqe();
    prepReadFixed(ring, s, fd, native.addressOf(bufs[2]!), 4096, 0, 2);
    setUserData(ring, s, 5, 0);
    assert.equal(run(ring, 1).get(5), 4096);
    assert.deepEqual(bufs[2], bufs[0]);
    ring.unregisterBuffers();
    s = ring.getSqe();
    prepReadFixed(ring, s, fd, native.addressOf(bufs[2]!), 16, 0, 0);
    setUserData(ring, s, 6, 0);
    assert.equal(run(ring, 1).get(6), -14, 'no buffers registered any more');
  } finally {
    ring.close();
    fs.closeSync(fd);
    native.munmap(mem);
  }
});

test('sparse buffer table: empty slots are refused, registration is exclusive', () => {
  const ring = Ring.create({ entries: 4 });
  const { fd } = tempFile();
  const buf = new Uint8Array(native.alloc(4096));
  try {
    ring.registerBuffersSparse(8);
    assert.throws(() => ring.registerBuffers([buf]), { code: 'EBUSY' });
    const s = ring.getSqe();
    prepReadFixed(ring, s, fd, native.addressOf(buf), 16, 0, 3);
    setUserData(ring, s, 1, 0);
    assert.equal(run(ring, 1).get(1), -14);
    ring.unregisterBuffers();
    assert.throws(() => ring.unregisterBuffers(), { code: 'ENXIO' });
  } finally {
    ring.close();
    fs.closeSync(fd);
  }
});

test('a fixed-file slot set, replaced and emptied while the ring runs (updateFile: one ring, many devices)', () => {
  const ring = Ring.create({ entries: 4 });
  const a = tempFile(), b = tempFile();
  const buf = new Uint8Array(16);
  const readSlot = (slot: number, ud: number): number => {
    const s = ring.getSqe();
    prepRead(ring, s, slot, native.addressOf(buf), 6, 0);
    setSqeFlags(ring, s, IOSQE_FIXED_FILE);
    setUserData(ring, s, ud, 0);
    return run(ring, 1).get(ud)!;
  };
  try {
    fs.writeSync(a.fd, 'file-a');
    fs.writeSync(b.fd, 'file-b');
    ring.registerFiles([-1, -1, -1]);
    assert.equal(readSlot(2, 1), -9, 'a sparse slot: -EBADF');
    ring.updateFile(2, a.fd);
    assert.equal(readSlot(2, 2), 6);
    assert.equal(Buffer.from(buf.subarray(0, 6)).toString(), 'file-a');
    ring.updateFile(2, b.fd);
    assert.equal(readSlot(2, 3), 6);
    assert.equal(Buffer.from(buf.subarray(0, 6)).toString(), 'file-b', 'the slot now names the other file');
    ring.updateFile(2, -1);
    assert.equal(readSlot(2, 4), -9, 'emptied');
    assert.throws(() => ring.updateFile(3, a.fd), /IORING_REGISTER_FILES_UPDATE/, 'a slot past the table');
  } finally {
    ring.close();
    fs.closeSync(a.fd);
    fs.closeSync(b.fd);
  }
});

test('registered files (IOSQE_FIXED_FILE)', () => {
  const ring = Ring.create({ entries: 4 });
  const a = tempFile(), b = tempFile();
  try {
    fs.writeSync(a.fd, 'file-a');
    fs.writeSync(b.fd, 'file-b');
    ring.registerFiles([-1, b.fd, a.fd]);
    const buf = new Uint8Array(16);
    let s = ring.getSqe();
    prepRead(ring, s, 2, native.addressOf(buf), 6, 0);
    setSqeFlags(ring, s, IOSQE_FIXED_FILE);
    setUserData(ring, s, 1, 0);
    assert.equal(run(ring, 1).get(1), 6);
    assert.equal(Buffer.from(buf.subarray(0, 6)).toString(), 'file-a');
    s = ring.getSqe();
    prepRead(ring, s, 0, native.addressOf(buf), 6, 0);
    setSqeFlags(ring, s, IOSQE_FIXED_FILE);
    setUserData(ring, s, 2, 0);
    assert.equal(run(ring, 1).get(2), -9, 'slot 0 is empty: -EBADF');
    ring.unregisterFiles();
    s = ring.getSqe();
    prepRead(ring, s, 1, native.addressOf(buf), 6, 0);
    setSqeFlags(ring, s, IOSQE_FIXED_FILE);
    setUserData(ring, s, 3, 0);
    assert.equal(run(ring, 1).get(3), -9);
  } finally {
    ring.close();
    fs.closeSync(a.fd);
    fs.closeSync(b.fd);
  }
});

test('FSYNC and FSYNC with IORING_FSYNC_DATASYNC', () => {
  const ring = Ring.create({ entries: 4 });
  const { fd } = tempFile();
  try {
    fs.writeSync(fd, 'sync me');
    let s = ring.getSqe();
    prepFsync(ring, s, fd, 0);
    setUserData(ring, s, 1, 0);
    s = ring.getSqe();
    prepFsync(ring, s, fd, IORING_FSYNC_DATASYNC);
    setUserData(ring, s, 2, 0);
    s = ring.getSqe();
    prepFsync(ring, s, 12345, 0);
    setUserData(ring, s, 3, 0);
    s = ring.getSqe();
    prepFsync(ring, s, fd, 0x80);
    setUserData(ring, s, 4, 0);
    assert.deepEqual(Object.fromEntries(run(ring, 4)), { 1: 0, 2: 0, 3: -9, 4: -22 });
  } finally {
    ring.close();
    fs.closeSync(fd);
  }
});

test('FALLOCATE: allocate, punch a hole (blocks drop), zero a range', () => {
  const ring = Ring.create({ entries: 4 });
  const { fd } = tempFile();
  const MiB = 1 << 20;
  try {
    let s = ring.getSqe();
    prepFallocate(ring, s, fd, 0, 0, 4 * MiB);
    setUserData(ring, s, 1, 0);
    assert.equal(run(ring, 1).get(1), 0);
    assert.equal(fs.fstatSync(fd).size, 4 * MiB, 'mode 0 extends the file to offset + len');
    fs.writeSync(fd, Buffer.alloc(4 * MiB, 0x5a), 0, 4 * MiB, 0);
    fs.fsyncSync(fd);
    const before = fs.fstatSync(fd).blocks;
    assert.ok(before >= (4 * MiB) / 512);

    s = ring.getSqe();
    prepFallocate(ring, s, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, MiB, 2 * MiB);
    setUserData(ring, s, 2, 0);
    assert.equal(run(ring, 1).get(2), 0);
    const st = fs.fstatSync(fd);
    assert.equal(st.size, 4 * MiB);
    assert.equal(before - st.blocks, (2 * MiB) / 512, 'exactly the punched 2 MiB were released');
    const probe = Buffer.alloc(4);
    fs.readSync(fd, probe, 0, 4, MiB);
    assert.deepEqual([...probe], [0, 0, 0, 0]);
    fs.readSync(fd, probe, 0, 4, 3 * MiB);
    assert.deepEqual([...probe], [0x5a, 0x5a, 0x5a, 0x5a]);

    s = ring.getSqe();
    prepFallocate(ring, s, fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 3 * MiB + 4096, 8192);
    setUserData(ring, s, 3, 0);
    assert.equal(run(ring, 1).get(3), 0);
    const zone = Buffer.alloc(16384);
    fs.readSync(fd, zone, 0, zone.length, 3 * MiB);
    assert.ok(zone.subarray(0, 4096).every((b) => b === 0x5a));
    assert.ok(zone.subarray(4096, 12288).every((b) => b === 0));
    assert.ok(zone.subarray(12288).every((b) => b === 0x5a));
    assert.equal(fs.fstatSync(fd).size, 4 * MiB);

    s = ring.getSqe();
    prepFallocate(ring, s, fd, 0, 2 ** 33, 4096);
    setUserData(ring, s, 4, 0);
    assert.equal(run(ring, 1).get(4), 0);
    assert.equal(fs.fstatSync(fd).size, 2 ** 33 + 4096, 'a 64-bit offset is encoded whole');
  } finally {
    ring.close();
    fs.closeSync(fd);
  }
});

test('TIMEOUT completes with -ETIME after the given time', () => {
  const ring = Ring.create({ entries: 4 });
  const TS = LAYOUTS.__kernel_timespec;
  const ts = new Uint32Array(TS.size / 4);
  ts[TS.fields.tv_nsec[0] / 4] = 30_000_000;
  try {
    const s = ring.getSqe();
    prepTimeout(ring, s, native.addressOf(ts), 0, 0);
    setUserData(ring, s, 9, 0);
    const t0 = process.hrtime.bigint();
    assert.equal(run(ring, 1).get(9), -62);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    assert.ok(ms >= 25, `waited ${ms} ms`);
  } finally {
    ring.close();
  }
});
