// The serving loop's wait protocol, against a scripted ring: what the kernel
// shows in the SQ flags and the CQ decides whether the loop may sleep.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serveLoop, type QuitReader } from '../../src/ublk/worker/serve-loop.js';
import { Waker } from '../../src/ublk/worker/waker.js';
import { SLOT_WORDS } from '../../src/ublk/stats.js';
import type { Engine } from '../../src/ublk/worker/engine.js';
import type { Ring } from '../../src/uring/ring.js';
import type { RingWakeup } from '../../src/uring/wakeup.js';

test('with a request awaited elsewhere and IORING_SQ_TASKRUN still set after a submit, the loop enters again instead of sleeping on the eventfd', async () => {
  // Seen on Linux 7.2 in the VM: a submit ran the deferred task work it could
  // and left the rest behind with IORING_SQ_TASKRUN set, but the eventfd was
  // never signalled for it (it only is when task work lands on an empty
  // list). The loop slept on the eventfd, and the device's requests hung.
  let taskrun = true, ready = 0, submits = 0;
  const ring = {
    enters: 0,
    submit: () => {
      submits++;
      // The first submit runs nothing (the flag stays set); the second runs
      // the task work, which posts a CQE.
      if (submits === 2) {
        taskrun = false;
        ready = 1;
      }
      return 0;
    },
    cqReady: () => ready,
    enterPending: () => taskrun,
    reap: (fn: (lo: number, hi: number, res: number, flags: number) => void) => {
      const n = ready;
      for (; ready > 0; ready--) fn(1, 0, 0, 0);
      return n;
    },
  } as unknown as Ring;
  let active = true;
  const client = {
    dispatcher: { asyncInFlight: 1, dispatched: 1 },
    get active() { return active; },
    flush: () => 0,
    onCqe: () => { active = false; },
  } as unknown as Engine;
  // The eventfd that is never signalled.
  const wakeup = { onReadable: () => {}, start: () => {}, stop: () => {} } as unknown as RingWakeup;
  const quit = { fired: false } as QuitReader;
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('the loop slept on an eventfd nothing signals')), 2000);
  });
  try {
    await Promise.race([
      serveLoop(ring, wakeup, new Waker(), client, quit, { coalesceUsec: 0, coalesceMax: 1, pollUsec: 0 },
        { words: new Float64Array(SLOT_WORDS), base: 0 }),
      hung,
    ]);
  } finally {
    clearTimeout(timer);
  }
  assert.equal(submits, 2, 'one submit more, no sleep');
});
