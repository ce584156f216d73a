// The daemon's shared serving threads (ThreadPool) without a driver: they
// start, each with its ring, and once closed they end, so that the process
// can exit (a pool thread's message listener once kept it alive for good).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

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
