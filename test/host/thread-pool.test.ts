// The daemon's shared serving threads (ThreadPool) without a driver: they
// start, each with its ring, and once closed they end, so that the process
// can exit (a pool thread's message listener once kept it alive for good).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const POOL = fileURLToPath(new URL('../../src/ublk/control/serving-thread.js', import.meta.url));

test('a thread pool closes and its process exits', () => {
  const code = `
    import { ThreadPool } from ${JSON.stringify(POOL)};
    const pool = new ThreadPool(3, { coalesceUsec: 0 });
    if (pool.load.join() !== '0,0,0') throw new Error('load ' + pool.load);
    await new Promise((r) => setTimeout(r, 300));
    await pool.close();
    console.log('closed');
  `;
  // A module file, as the CLI is: run with `node -e`, the same code exited even with the listener kept.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'thread-pool-'));
  const file = path.join(dir, 'pool.mjs');
  fs.writeFileSync(file, code);
  const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 20_000 });
  fs.rmSync(dir, { recursive: true });
  assert.equal(r.signal, null, `the process did not exit by itself (killed by ${r.signal}): ${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'closed\n');
});

test('a thread pool needs a thread', async () => {
  const { ThreadPool } = await import(POOL);
  assert.throws(() => new ThreadPool(0, { coalesceUsec: 0 }), /at least one thread/);
});

test("zero-copy slots are reserved on the least loaded thread with room in its buffer table, cut down, and given back", async () => {
  const { ThreadPool } = await import(POOL);
  const { MAX_BUFFER_SLOTS } = await import('../../src/ublk/mode.js');
  const pool = new ThreadPool(2, { coalesceUsec: 0 });
  try {
    const a = pool.reserve(MAX_BUFFER_SLOTS);
    const b = pool.reserve(1);
    assert.ok(a && b && a.thread !== b.thread, 'the first thread full, the second takes the next');
    const c = pool.reserve(1);
    assert.equal(c?.thread, b.thread, 'both carry one device: the first in order is full, so the second');
    assert.equal(c.bufBase, 1);
    assert.equal(pool.reserve(MAX_BUFFER_SLOTS - 1), null, 'no thread has that much left');
    pool.cancel(a);
    const d = pool.reserve(1000);
    assert.equal(d?.thread, a.thread, 'room given back is reused, on the least loaded thread');
    assert.equal(d.bufBase, 0);
    const cut = pool.shrink(d, 400);
    assert.equal(cut.slots, 400);
    assert.equal(pool.reserve(600)?.bufBase, 400, 'what the cut gave back follows what it kept');
    assert.throws(() => pool.shrink(cut, 401), /more than the 400 reserved/);
  } finally {
    await pool.close();
  }
});

test("a device whose target's open has not settled leaves once its start is cancelled (a del while it starts, a stopping server), on a pool's thread and on its own; a target that opens later is closed", async () => {
  const { ThreadPool, ownThread } = await import(POOL);
  const { native } = await import('../../src/native.js');
  const { servingMode } = await import('../../src/ublk/mode.js');
  const { createStatsFd } = await import('../../src/ublk/stats.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cancel-open-'));
  const module = path.join(dir, 'slow-open.mjs');
  // open() settles 4 s on (as a server that answers late would), long after the cancel.
  fs.writeFileSync(module, `
    import fs from 'node:fs';
    export default {
      name: 'slow-open', options: [],
      setup: () => ({ size: 1 << 20 }),
      open: (ctx) => new Promise((r) => setTimeout(() => r({
        read: (q) => q.length, write: (q) => q.length,
        close: () => fs.writeFileSync(${JSON.stringify(dir)} + '/closed-' + ctx.devId, ''),
      }), 4000)),
    };`);
  const fds: number[] = [];
  const device = (devId: number) => {
    // Stand-ins for /dev/ublkcN (its descriptor page is mapped) and the counters.
    const charFd = native.memfdCreate('char-stand-in', 0);
    fs.ftruncateSync(charFd, 4096);
    const statsFd = createStatsFd(1);
    fds.push(charFd, statsFd);
    return {
      mode: servingMode({ batch: false, copy: 'kernel', autoBufReg: true }, { name: 'slow-open' }), devId, charFd, statsFd,
      queues: [{ q: 0, prep: false, fetchBuffers: 0, slot: 0 }], depth: 1, maxIoBytes: 4096,
      targetUrl: pathToFileURL(module).href, options: {}, shared: undefined, shmem: [],
    };
  };
  const pool = new ThreadPool(1, { coalesceUsec: 0 });
  try {
    const workers = [pool.attach(device(1)), ownThread({ coalesceUsec: 0 }, device(2))];
    await new Promise((r) => setTimeout(r, 500)); // both threads are in open() by now
    const t0 = Date.now();
    for (const w of workers) w.cancel('device deleted while it started');
    for (const w of workers) {
      await assert.rejects(w.ready, /device deleted while it started/);
      assert.equal(await w.done, 'device deleted while it started');
    }
    assert.ok(Date.now() - t0 < 3000, `the cancel waited ${Date.now() - t0} ms: for the open`);
    assert.deepEqual(pool.load, [0], 'the device has left the pool thread');
    // The pool's thread lives on: the late target is closed there.
    for (let i = 0; i < 100 && !fs.existsSync(path.join(dir, 'closed-1')); i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(fs.existsSync(path.join(dir, 'closed-1')), 'the target that opened after the cancel was closed');
  } finally {
    await pool.close();
    for (const fd of fds) native.close(fd);
    fs.rmSync(dir, { recursive: true });
  }
});
