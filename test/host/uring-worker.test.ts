// Rings inside worker_threads: each worker has its own libuv loop for the
// Poller, and a SINGLE_ISSUER|DEFER_TASKRUN ring belongs to the thread that
// created it. This file is also the workers' module (tests register only on
// the main thread).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker, isMainThread, parentPort } from 'node:worker_threads';
import { native } from '../../src/native.js';
import {
  Ring, RingWakeup, prepRead, prepNop, setUserData, IORING_ENTER_GETEVENTS,
} from '../../src/uring/index.js';

type Job =
  | { kind: 'read'; fifo: string }
  | { kind: 'exit-while-polling'; how: 'exit' | 'wait-for-terminate' }
  | { kind: 'enter-foreign'; fd: number };

/** Runs in the worker. */
export async function workerMain(job: Job): Promise<unknown> {
  if (job.kind === 'enter-foreign') {
    return { submit: native.enter(job.fd, 1, 0, 0), getevents: native.enter(job.fd, 0, 0, IORING_ENTER_GETEVENTS) };
  }
  const ring = Ring.create({ entries: 8, singleIssuer: true, deferTaskrun: true });
  const wakeup = new RingWakeup(ring);
  if (job.kind === 'exit-while-polling') {
    // Leave the poller running and the ring open: thread teardown must close
    // the uv handle itself, or Node aborts in uv_loop_close.
    wakeup.start();
    if (job.how === 'exit') process.exit(0);
    parentPort!.postMessage({ ready: true });
    return new Promise(() => {});
  }
  const fd = fs.openSync(job.fifo, 'r+');
  const buf = new Uint8Array(native.alloc(4096));
  try {
    let s = ring.getSqe();
    prepNop(ring, s);
    setUserData(ring, s, 1, 0);
    s = ring.getSqe();
    prepRead(ring, s, fd, native.addressOf(buf), 64, -1);
    setUserData(ring, s, 2, 0);
    ring.submit();
    setTimeout(() => fs.writeSync(fd, 'from the worker'), 20);
    const seen: number[][] = [];
    while (seen.length < 2) {
      if (ring.cqReady() === 0) await wakeup.wait();
      ring.submit();
      ring.reap((lo, _hi, res) => seen.push([lo, res]));
    }
    return { seen, text: Buffer.from(buf.subarray(0, 15)).toString() };
  } finally {
    wakeup.close();
    ring.close();
    fs.closeSync(fd);
  }
}

if (!isMainThread) {
  const [{ job }] = (await once(parentPort!, 'message')) as [{ job: Job }];
  workerMain(job).then((result) => parentPort!.postMessage({ result }), (e: Error) => parentPort!.postMessage({ error: e.stack }));
}

function spawn(job: Job): Worker {
  const w = new Worker(new URL(import.meta.url));
  w.postMessage({ job });
  return w;
}

async function runJob(job: Job): Promise<unknown> {
  const w = spawn(job);
  // Listened for from the start: the worker may exit in the same turn that
  // delivers its message, before a listener added after that message (the
  // test then waited forever: "Promise resolution is still pending").
  const exited = once(w, 'exit');
  const [msg] = (await once(w, 'message')) as [{ result?: unknown; error?: string }];
  await exited;
  if (msg.error) throw new Error(msg.error);
  return msg.result;
}

if (isMainThread) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'uring-worker-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('a DEFER_TASKRUN ring with eventfd wakeup works inside a worker', { timeout: 20_000 }, async () => {
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const result = await runJob({ kind: 'read', fifo });
    assert.deepEqual(result, { seen: [[1, 0], [2, 15]], text: 'from the worker' });
  });

  test('a worker that exits or is terminated with a started poller tears down cleanly', { timeout: 20_000 }, async () => {
    const a = spawn({ kind: 'exit-while-polling', how: 'exit' });
    const [codeA] = (await once(a, 'exit')) as [number];
    assert.equal(codeA, 0);
    const b = spawn({ kind: 'exit-while-polling', how: 'wait-for-terminate' });
    await once(b, 'message');
    await b.terminate();
    // The process is still alive and the main thread's loop still works.
    await new Promise((r) => setTimeout(r, 10));
  });

  test('a SINGLE_ISSUER|DEFER_TASKRUN ring refuses other threads (-EEXIST)', { timeout: 20_000 }, async () => {
    const ring = Ring.create({ entries: 4, singleIssuer: true, deferTaskrun: true });
    try {
      assert.deepEqual(await runJob({ kind: 'enter-foreign', fd: ring.fd }), { submit: -17, getevents: -17 });
      const s = ring.getSqe();
      prepNop(ring, s);
      assert.equal(ring.submit(), 1, 'the owner thread is unaffected');
    } finally {
      ring.close();
    }
  });
}
