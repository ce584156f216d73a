// The serving loop's wait protocol, against a scripted ring: what the kernel
// shows in the SQ flags and the CQ decides whether the loop may sleep on the
// ring's eventfd (the scripted one never fires).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serveLoop, type LoopClient, type QuitReader } from '../../src/ublk/worker/serve-loop.js';
import { Waker } from '../../src/ublk/worker/waker.js';
import { SLOT_WORDS } from '../../src/ublk/stats.js';
import type { Ring } from '../../src/uring/ring.js';
import type { RingWakeup } from '../../src/uring/wakeup.js';

interface Script {
  /** IORING_SQ_TASKRUN */
  taskrun: boolean;
  /** Whether deferred task work is really pending (it posts one CQE when run). */
  work: boolean;
}

/**
 * Runs the loop with one request awaited elsewhere (a timer, a socket) until
 * it completes or `ms` pass; returns the enters made. A plain submit runs no
 * task work (the kernel ran out of its batch, say); runTaskWork clears the
 * flag and runs what there is, as the kernel does.
 */
async function runLoop(script: Script, completeElsewhere: (finish: () => void) => void, ms = 2000, log: string[] = []): Promise<number> {
  let ready = 0, enters = 0;
  const ring = {
    enters: 0,
    eventfdSignals: (on: boolean) => void log.push(`signals ${on ? 'on' : 'off'}`),
    submit: () => {
      if (++enters > 10_000) throw new Error('the loop spins');
      return 0;
    },
    runTaskWork: () => {
      if (++enters > 10_000) throw new Error('the loop spins');
      script.taskrun = false;
      if (script.work) ready++;
      script.work = false;
      return 0;
    },
    cqReady: () => {
      log.push('looks');
      return ready;
    },
    enterPending: () => script.taskrun,
    reap: (fn: (lo: number, hi: number, res: number, flags: number) => void) => {
      const n = ready;
      for (; ready > 0; ready--) fn(1, 0, 0, 0);
      return n;
    },
  } as unknown as Ring;
  let active = true;
  const waker = new Waker();
  const client = {
    tally: { asyncInFlight: 1, dispatched: 1, owned: 1 },
    get active() { return active; },
    flush: () => 0,
    onCqe: () => { active = false; },
  } as LoopClient;
  const wakeup = { onReadable: () => {}, start: () => {}, stop: () => {} } as unknown as RingWakeup;
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('the loop slept on an eventfd nothing signals')), ms);
  });
  const done = serveLoop(ring, wakeup, waker, client, { fired: false } as QuitReader, { coalesceUsec: 0, coalesceMax: 1, pollUsec: 0 },
    { words: new Float64Array(SLOT_WORDS), base: 0, requests: () => 1 });
  const finish = (): void => { active = false; waker.wake(); };
  completeElsewhere(finish);
  try {
    await Promise.race([done, hung.catch((e: unknown) => { finish(); throw e; })]);
  } finally {
    clearTimeout(timer);
  }
  return enters;
}

test('task work left with only IORING_SQ_TASKRUN set after a submit is run, not slept on', async () => {
  // Seen on Linux 7.2 in the VM: the eventfd is signalled only when task work
  // lands on an empty list; a run that stops short leaves the rest with just
  // the flag. A loop that slept on the eventfd then hung its device's requests.
  const enters = await runLoop({ taskrun: true, work: true }, () => {});
  assert.equal(enters, 2, 'the submit, then one enter that runs the task work');
});

test('a stale IORING_SQ_TASKRUN (nothing pending) does not keep the loop spinning: it sleeps, and the completion from elsewhere wakes it', async () => {
  // The flag a producer sets after a run already took its work: no enter
  // clears it. Gone round for, it would spin the thread and starve the event
  // loop, where the request's own completion (a timer here) has to run.
  let woken = false;
  const enters = await runLoop({ taskrun: true, work: false }, (finish) => {
    setTimeout(() => { woken = true; finish(); }, 50);
  });
  assert.ok(woken, 'the timer ran');
  assert.ok(enters <= 4, `${enters} enters`);
});

test('the kernel signals the eventfd from before the loop looks whether it may sleep on it, and not while it blocks in io_uring_enter', async () => {
  // A completion between the look and turning the signals on would go
  // unsignalled, and the loop sleep on it for good.
  const log: string[] = [];
  await runLoop({ taskrun: false, work: false }, (finish) => void setTimeout(finish, 50), 2000, log);
  assert.equal(log[0], 'signals off', 'off while the loop may block in the kernel');
  const on = log.indexOf('signals on'), look = log.indexOf('looks');
  assert.ok(on > 0 && look > on, `turned on before the first look: ${log.join(', ')}`);
  assert.equal(log[log.length - 1], 'signals on', 'on again for the ring\'s other users once the loop ends');
});

/** The loop over a ring on which no CQE ever comes, `owned` requests in flight and none awaited elsewhere. */
function silentRing(onBlock: () => void, submitted = 0) {
  const timed: number[] = [];
  const ring = {
    enters: 0,
    eventfdSignals: () => {},
    submit: () => 0,
    // (A real one would block for good; returning lets the test see the loop come round.)
    submitAndWait: () => { onBlock(); return 0; },
    // io_uring_enter returns the SQEs it took, also where the wait then timed out.
    submitAndWaitTimeout: (_n: number, usec: number) => {
      if (timed.push(usec) > 1000) throw new Error('1000 timed waits and the event loop never ran between them');
      return submitted;
    },
    cqReady: () => 0,
    enterPending: () => false,
    reap: () => 0,
  } as unknown as Ring;
  return { ring, timed };
}

function serveSilent(ring: Ring, owned: number, active: () => boolean): Promise<void> {
  const client = { tally: { asyncInFlight: 0, dispatched: 1, owned }, get active() { return active(); }, flush: () => 0, onCqe: () => {} } as LoopClient;
  const wakeup = { onReadable: () => {}, start: () => {}, stop: () => {} } as unknown as RingWakeup;
  return serveLoop(ring, wakeup, new Waker(), client, { fired: false } as QuitReader, { coalesceUsec: 0, coalesceMax: 1, pollUsec: 0 },
    { words: new Float64Array(SLOT_WORDS), base: 0, requests: () => 1 });
}

test('with a request in flight and no CQE coming, the loop\'s waits are bounded and the event loop runs between them: a target\'s timer fires (nbd\'s --timeout watchdog)', async () => {
  let blocked = 0, fired = false;
  const { ring, timed } = silentRing(() => {
    if (++blocked > 1000) throw new Error('the loop blocked in io_uring_enter without a bound: the timer could never run');
  });
  // The target's timer: its watchdog ends the request (here: the loop).
  setTimeout(() => { fired = true; }, 30);
  await serveSilent(ring, 1, () => !fired);
  assert.ok(fired, 'the timer ran');
  assert.equal(blocked, 0, 'no unbounded wait with a request in flight');
  assert.ok(timed.length >= 1 && timed.every((us) => us > 0 && us <= 1_000_000), `bounded waits: ${timed.slice(0, 5).join(', ')} µs`);
});

test('a timed wait that also submitted SQEs and then ran out still lets the event loop run (the enter returns the SQEs it took, not 0)', async () => {
  let fired = false;
  const { ring, timed } = silentRing(() => { throw new Error('unbounded wait'); }, 1);
  setTimeout(() => { fired = true; }, 30);
  await serveSilent(ring, 1, () => !fired);
  assert.ok(fired && timed.length >= 1, 'the timer ran');
});

test('with nothing in flight the loop blocks without a bound: an idle device costs no wake-ups', async () => {
  let active = true;
  const { ring, timed } = silentRing(() => { active = false; });
  await serveSilent(ring, 0, () => active);
  assert.deepEqual(timed, [], 'no timed wait');
});
