// The native addon on its own: memory, errno conventions, eventfd/memfd, Poller.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { native, errnoName, ErrnoError, check } from '../../src/native.js';

const PROT_READ = 1, PROT_WRITE = 2, MAP_SHARED = 1;
const EFD_NONBLOCK = 0o4000, EFD_CLOEXEC = 0o2000000;
const nativeUrl = new URL('../../src/native.js', import.meta.url).href;

function u64le(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

test('alloc returns page-aligned zeroed memory; munmap detaches and is idempotent', () => {
  const ab = native.alloc(8192 + 3);
  assert.equal(ab.byteLength, 8195);
  assert.equal(native.addressOf(ab) % 4096, 0);
  const view = new Uint8Array(ab);
  assert.ok(view.every((b) => b === 0));
  view.fill(0xa5);
  assert.equal(view[8194], 0xa5);
  native.munmap(ab);
  assert.equal(ab.byteLength, 0);
  assert.equal(view.length, 0, 'existing views see the detached buffer');
  native.munmap(ab);
});

test('addressOf adds a view\'s byteOffset', () => {
  const ab = native.alloc(4096);
  const base = native.addressOf(ab);
  assert.equal(native.addressOf(new Uint8Array(ab, 100, 8)), base + 100);
  assert.equal(native.addressOf(new Uint32Array(ab, 64)), base + 64);
  assert.equal(native.addressOf(new DataView(ab, 7)), base + 7);
  assert.throws(() => native.addressOf(42 as unknown as ArrayBuffer), TypeError);
  native.munmap(ab);
});

/** Whether /proc/self/maps has a mapping that starts at `addr`. */
function mappedAt(addr: number): boolean {
  const hex = addr.toString(16);
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n').some((l) => l.startsWith(hex + '-'));
}

/** Allocates 64 KiB in a worker thread, optionally keeps it mapped, lets the thread exit; returns the address. */
async function allocInThread(keep: boolean): Promise<number> {
  const w = new Worker(`import(${JSON.stringify(nativeUrl)}).then(({ native }) => {
    const ab = native.alloc(65536);
    if (${keep}) native.keepMapped(ab);
    require('node:worker_threads').parentPort.postMessage(native.addressOf(ab));
  });`, { eval: true });
  const exited = once(w, 'exit'); // before the message: the worker may exit in the turn that delivers it
  const [addr] = (await once(w, 'message')) as [number];
  await exited;
  return addr;
}

test('keepMapped keeps memory mapped after the thread that made it is gone (the kernel may hold its address)', async () => {
  const gone = await allocInThread(false);
  assert.equal(mappedAt(gone), false, 'without keepMapped a thread\'s memory is unmapped when it exits');
  const kept = await allocInThread(true);
  assert.equal(mappedAt(kept), true);
  const ab = native.alloc(4096);
  native.keepMapped(ab);
  const addr = native.addressOf(ab);
  native.munmap(ab);
  assert.equal(ab.byteLength, 0, 'munmap still detaches');
  assert.equal(mappedAt(addr), true, 'munmap leaves a kept mapping in place');
});

test('munmap refuses buffers it did not map', () => {
  assert.throws(() => native.munmap(new ArrayBuffer(16)), TypeError);
});

test('mmap of a memfd shares data with writes through the fd', () => {
  const fd = native.memfdCreate('uring-test', 0);
  try {
    fs.ftruncateSync(fd, 8192);
    const ab = native.mmap(8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    fs.writeSync(fd, Buffer.from('mapped!'), 0, 7, 4096);
    assert.equal(Buffer.from(ab, 4096, 7).toString(), 'mapped!');
    new Uint8Array(ab)[0] = 0x42;
    const back = Buffer.alloc(1);
    fs.readSync(fd, back, 0, 1, 0);
    assert.equal(back[0], 0x42);
    native.munmap(ab);
  } finally {
    fs.closeSync(fd);
  }
});

test('failures throw Error with .code and negative .errno', () => {
  assert.throws(() => native.mmap(4096, PROT_READ, MAP_SHARED, -1, 0), { code: 'EBADF', errno: -9 });
  assert.throws(() => native.setup(0, new Uint8Array(120)), { code: 'EINVAL', errno: -22 });
  assert.throws(() => native.setup(4, new Uint8Array(16)), { code: 'EINVAL' });
  assert.throws(() => native.eventfd(0, -1), { code: 'EINVAL' });
});

test('hot-path calls return -errno instead of throwing', () => {
  assert.equal(native.enter(-1, 0, 0, 0), -9);
  // fd -1 is the kernel's "blind" register path (no ring), so use an unused fd.
  assert.equal(native.register(99_999, 4, Int32Array.of(0), 1), -9);
  assert.equal(native.register(99_999, 4, 'x' as unknown as null, 1), -22, 'a non-buffer arg is -EINVAL');
  assert.equal(native.fallocate(-1, 0, 0, 4096), -9);
});

test('errnoName, ErrnoError and check', () => {
  assert.equal(errnoName(-22), 'EINVAL');
  assert.equal(errnoName(11), 'EAGAIN');
  assert.equal(errnoName(-95), 'EOPNOTSUPP');
  assert.equal(errnoName(-4095), 'E4095');
  const e = new ErrnoError(-2, 'open');
  assert.ok(e instanceof Error);
  assert.equal(e.code, 'ENOENT');
  assert.equal(e.errno, -2);
  assert.match(e.message, /open/);
  assert.equal(check(7, 'x'), 7);
  assert.throws(() => check(-16, 'busy'), { code: 'EBUSY', errno: -16 });
});

test('memfd + fallocate extend the file and report errors', () => {
  const fd = native.memfdCreate('falloc', 0);
  try {
    assert.equal(native.fallocate(fd, 0, 0, 1 << 20), 0);
    assert.equal(fs.fstatSync(fd).size, 1 << 20);
    assert.equal(native.fallocate(fd, 0xff, 0, 4096), -95);
  } finally {
    fs.closeSync(fd);
  }
});

test('Poller drains an eventfd, runs microtasks right after the callback, and closes twice', { timeout: 10_000 }, async () => {
  const efd = native.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  const order: string[] = [];
  let calls = 0;
  let woke!: () => void;
  const wokeP = new Promise<void>((r) => (woke = r));
  const poller = native.createPoller(efd, true, (status) => {
    assert.equal(status, 0);
    calls++;
    void Promise.resolve().then(() => order.push('microtask'));
    setImmediate(() => {
      order.push('immediate');
      woke();
    });
  });
  poller.start();
  fs.writeSync(efd, u64le(3));
  await wokeP;
  assert.deepEqual(order, ['microtask', 'immediate']);
  assert.equal(calls, 1, 'the counter was drained, so the level-triggered poll fired once');
  assert.throws(() => fs.readSync(efd, Buffer.alloc(8)), { code: 'EAGAIN' });
  poller.stop();
  fs.writeSync(efd, u64le(1));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(calls, 1, 'a stopped poller does not call back');
  poller.start();
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(calls, 2, 'restarting sees the pending count');
  poller.close();
  poller.close();
  assert.throws(() => poller.start());
  poller.stop();
  poller.ref();
  poller.unref();
  fs.closeSync(efd);
});

test('Poller without drain leaves the fd to the callback', { timeout: 10_000 }, async () => {
  const efd = native.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  let calls = 0;
  const poller = native.createPoller(efd, false, () => {
    calls++;
    if (calls === 3) fs.readSync(efd, Buffer.alloc(8));
  });
  poller.start();
  fs.writeSync(efd, u64le(1));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(calls, 3, 'level-triggered until the callback reads');
  poller.close();
  fs.closeSync(efd);
});

test('createPoller validates its arguments', () => {
  assert.throws(() => native.createPoller(0, true, 5 as unknown as () => void), TypeError);
  assert.throws(() => native.createPoller(-1, true, () => {}), { code: 'EBADF' });
});

function runChild(code: string, args: string[] = []): ReturnType<typeof spawnSync> {
  return spawnSync(process.execPath, [...args, '--input-type=module', '-e', code], { encoding: 'utf8', timeout: 20_000 });
}

test('an unref\'d poller does not keep the process alive; a throwing callback is an uncaught exception', () => {
  const r = runChild(`
    import { native } from ${JSON.stringify(nativeUrl)};
    import * as fs from 'node:fs';
    const a = native.eventfd(0, ${EFD_NONBLOCK | EFD_CLOEXEC});
    const idle = native.createPoller(a, true, () => {});
    idle.start();
    idle.unref();
    const b = native.eventfd(1, ${EFD_NONBLOCK | EFD_CLOEXEC});
    const p = native.createPoller(b, true, () => { throw new Error('boom'); });
    process.on('uncaughtException', (e) => { console.log('caught', e.message); p.close(); });
    p.start();
  `);
  assert.equal(r.error, undefined);
  assert.equal(r.status, 0, String(r.stderr));
  assert.match(String(r.stdout), /caught boom/);
});

test('pollers dropped without close() are collected without crashing', () => {
  const r = runChild(`
    import { native } from ${JSON.stringify(nativeUrl)};
    const fds = [];
    for (let i = 0; i < 200; i++) {
      const fd = native.eventfd(0, ${EFD_NONBLOCK | EFD_CLOEXEC});
      fds.push(fd);
      const p = native.createPoller(fd, true, () => {});
      if (i % 2) { p.start(); p.stop(); }
    }
    for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setImmediate(r)); }
    for (let i = 0; i < 3; i++) { const x = native.alloc(1 << 20); }
    globalThis.gc();
    await new Promise((r) => setTimeout(r, 20));
    console.log('ok');
  `, ['--expose-gc']);
  assert.equal(r.status, 0, String(r.stderr));
  assert.match(String(r.stdout), /ok/);
});

test('madvise: on a page-aligned range of a buffer 0, else -errno; outside the buffer a RangeError', () => {
  const MADV_NOHUGEPAGE = 15;
  const buf = native.alloc(4 << 20);
  try {
    assert.equal(native.madvise(buf, 0, 4 << 20, MADV_NOHUGEPAGE), 0);
    assert.equal(native.madvise(buf, 1, 4096, MADV_NOHUGEPAGE), -22, 'an unaligned start: -EINVAL');
    assert.throws(() => native.madvise(buf, 4096, 4 << 20, MADV_NOHUGEPAGE), RangeError);
  } finally {
    native.munmap(buf);
  }
});

test('copyBytes: between views at offsets, overlapping too, without a view made for it; outside a buffer a RangeError', () => {
  const a = new Uint8Array(16).map((_, i) => i);
  const b = new Uint8Array(new ArrayBuffer(32), 8, 16);
  native.copyBytes(b, 4, a, 2, 6);
  assert.deepEqual([...b.subarray(4, 10)], [2, 3, 4, 5, 6, 7]);
  assert.equal(new Uint8Array(b.buffer)[12], 2, 'a view\'s offset counts');
  native.copyBytes(a, 1, a, 0, 8); // overlapping: memmove
  assert.deepEqual([...a.subarray(0, 10)], [0, 0, 1, 2, 3, 4, 5, 6, 7, 9]);
  assert.throws(() => native.copyBytes(b, 10, a, 0, 7), RangeError);
  assert.throws(() => native.copyBytes(b, 0, a, 12, 5), RangeError);
  native.copyBytes(b, 16, a, 16, 0); // nothing, at the ends: fine
});

test('pread/pwrite: a range of a view at a 64-bit offset given as halves (the low one modulo 2^32), -errno, RangeError outside the buffer', () => {
  // tmpfs takes offsets past 2^53; the low half 2^31 + 4096 is passed as a negative int32 (`| 0`).
  const file = `/dev/shm/native-rw-${process.pid}`;
  const fd = fs.openSync(file, 'w+');
  try {
    const lo = 2 ** 31 + 4096, hi = 2 ** 22;
    const src = new Uint8Array(new ArrayBuffer(64), 16, 32).map((_, i) => i + 1);
    assert.equal(native.pwrite(fd, src, 8, 16, lo | 0, hi), 16);
    const got = Buffer.alloc(16);
    assert.equal(fs.readSync(fd, got, 0, 16, (BigInt(hi) << 32n) + BigInt(lo)), 16, 'at hi:lo');
    assert.deepEqual([...got], [...src.subarray(8, 24)]);
    const dst = new Uint8Array(40);
    assert.equal(native.pread(fd, dst, 4, 16, lo, hi), 16, 'lo given unsigned: the same place');
    assert.deepEqual([...dst.subarray(4, 20)], [...src.subarray(8, 24)]);
    assert.equal(native.pread(fd, dst, 0, 16, 0, hi + 1), 0, 'past the end: 0 bytes');
    assert.equal(native.pread(fd, dst, 0, 16, lo, 0), 16, 'a hole below: zeros');
    assert.equal(native.pread(-1, dst, 0, 16, 0, 0), -9, 'EBADF');
    assert.throws(() => native.pread(fd, dst, 30, 16, 0, 0), RangeError);
    assert.throws(() => native.pwrite(fd, src, -1, 4, 0, 0), RangeError);
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
});

test('rwMany: a batch of pwrites or preads at 64-bit offsets, each result (bytes or -errno) in place of its buffer offset; RangeError outside the buffer', () => {
  const file = `/dev/shm/native-rw-many-${process.pid}`;
  const fd = fs.openSync(file, 'w+');
  try {
    const far = 2 ** 40 + 512;
    const src = new Uint8Array(new ArrayBuffer(8192), 4096, 4096).map((_, i) => (i * 7) & 0xff);
    const t = new Float64Array([0, 100, far, 100, 50, 0, 4000, 0, 10]);
    native.rwMany(fd, src, t, 3, true);
    assert.deepEqual([...t.filter((_, i) => i % 3 === 0)], [100, 50, 0]);
    const got = Buffer.alloc(100);
    assert.equal(fs.readSync(fd, got, 0, 100, BigInt(far)), 100);
    assert.deepEqual([...got], [...src.subarray(0, 100)], 'the first entry at 2^40 + 512');
    const dst = new Uint8Array(200);
    const r = new Float64Array([10, 50, 0, 0, 8, far + 96, 0, 8, far * 2]);
    native.rwMany(fd, dst, r, 3, false);
    assert.deepEqual([...r.filter((_, i) => i % 3 === 0)], [50, 4, 0], 'a short read at the end, nothing past it');
    assert.deepEqual([...dst.subarray(10, 60)], [...src.subarray(100, 150)]);
    const bad = new Float64Array([0, 4, 0]);
    native.rwMany(-1, dst, bad, 1, false);
    assert.equal(bad[0], -9, 'EBADF');
    assert.throws(() => native.rwMany(fd, dst, new Float64Array([190, 20, 0]), 1, false), RangeError);
    assert.throws(() => native.rwMany(fd, dst, new Float64Array(3), 2, false), RangeError, 'more entries than the table');
    assert.throws(() => native.rwMany(fd, dst, new Int32Array(3) as unknown as Float64Array, 1, false), TypeError);
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
});
