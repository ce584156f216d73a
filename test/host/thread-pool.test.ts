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

test("zero-copy slots are reserved on the least loaded thread with room in its buffer table, and given back", async () => {
  const { ThreadPool } = await import(POOL);
  const { MAX_BUFFER_SLOTS } = await import('../../src/ublk/mode.js');
  const pool = new ThreadPool(2, { coalesceUsec: 0 });
  try {
    const a = pool.reserve(10_000), b = pool.reserve(10_000);
    assert.ok(a && b && a.thread !== b.thread, 'one on each thread');
    assert.equal(pool.reserve(MAX_BUFFER_SLOTS - 9_999), null, 'no thread has that much left');
    const c = pool.reserve(MAX_BUFFER_SLOTS - 10_000);
    assert.equal(c?.thread, a.thread, 'a tie in load goes to the first thread with room');
    assert.equal(c.bufBase, 10_000);
    assert.equal(pool.reserve(1)?.thread, b.thread, 'the only one with room');
    pool.cancel(a);
    const d = pool.reserve(10_000);
    assert.equal(d?.thread, a.thread, 'room given back is reused');
    assert.equal(d.bufBase, 0);
  } finally {
    await pool.close();
  }
});
