// The loop a queue worker runs. Requests arrive as CQEs; the worker thread is
// the ring's only submitter (SINGLE_ISSUER) and ublk delivers requests as
// deferred task work that only runs inside a GETEVENTS io_uring_enter
// (DEFER_TASKRUN), so the loop is built around one enter per turn:
//
// - while no target promise is pending, nothing in JavaScript can produce work,
//   so the thread blocks inside io_uring_enter(min_complete=1), like kublk does:
//   submit and wait in one syscall, no event-loop round trip;
// - while promises are pending, the thread returns to the event loop and waits
//   for either a settled promise or the ring's eventfd (signalled when task work
//   is queued), then enters without blocking to run that task work.
//
// Coalescing: every loop turn has a fixed cost (waking the thread, entering
// JavaScript), so when requests come in bursts — the last turn brought more
// than one — the wait asks for many CQEs but settles for any after
// `coalesceUsec` (IORING_ENTER_EXT_ARG min_wait_usec): requests arriving close
// together are then served in one turn. A lone request (QD 1) never waits.
//
// Polling: for a window after the last request served, the thread spins on
// the ring (its CQ tail and IORING_SQ_TASKRUN flag: shared memory, no
// syscall) instead of blocking. A request that arrives meanwhile then costs
// the submitter no wake-up of a sleeping thread, and us no sleep and wake-up:
// that is a CPU's time traded for latency, as polling drivers do. By default
// PollGovernor (poll-governor.ts) spins only while that serves more requests
// per second than sleeping; `pollUsec` fixes the window (0: never spin).
//
// Timers: a thread blocked in io_uring_enter runs no JavaScript, so while
// requests are in flight a blocking wait lasts VISIT_USEC at most, and one
// that ends with nothing to reap lets the event loop run before the next: a
// target's timer (nbd's --timeout watchdog, whose requests are all on the
// ring) then fires even when no CQE ever comes. With nothing in flight the
// wait has no bound: an idle device costs no wake-ups.
//
// A worker blocked in io_uring_enter cannot be interrupted from JavaScript, so
// the loop keeps a READ armed on a "quit" eventfd: the main thread writes to it
// to end a worker whose queue the kernel will not abort (e.g. a device that
// never started). Closing the ring afterwards cancels whatever is still armed.
import type { CqeHandler, Ring } from '../../uring/ring.js';
import type { RingWakeup } from '../../uring/wakeup.js';
import { IORING_SQ_TASKRUN } from '../../uring/constants.js';
import { native } from '../../native.js';
import type { LoopTally } from './engine.js';
import type { Waker } from './waker.js';
import { EventfdReader, KIND_QUIT } from './worker-ring.js';
import { C_CQES, C_ENTERS, C_SPIN_POLICY, C_SPIN_PREEMPTIONS, C_SPIN_USEC, C_TURNS } from '../stats.js';
import { FixedPoll, PollGovernor, T_NOW, T_SPIN_START, T_TURN, type PollPolicy } from './poll-governor.js';
import { GcCount } from './gc-count.js';

/** The READ on the quit eventfd; its CQE (KIND_QUIT) sets `fired` (ThreadHost.onCqe), and the loop ends. */
export class QuitReader extends EventfdReader {
  fired = false;

  constructor(ring: Ring, fd: number) {
    super(ring, fd, KIND_QUIT);
  }
}

/** What the loop serves: every device on the ring (thread-host.ts). */
export interface LoopClient {
  /** False: the loop ends. */
  readonly active: boolean;
  readonly tally: LoopTally;
  /** Turns completions gathered while reaping into SQEs; returns how many complete inside the submit (Engine.flush). */
  flush(): number;
  /** Every CQE of the ring, the quit READ's too (KIND_QUIT: it sets the QuitReader's `fired`). */
  readonly onCqe: CqeHandler;
}

export interface LoopOptions {
  /** Coalescing window in µs (0: off). */
  coalesceUsec: number;
  /** CQEs a coalescing wait asks for before its window ends. */
  coalesceMax: number;
  /** Spin window in µs before blocking, after a busy turn (0: off; undefined: PollGovernor decides). */
  pollUsec?: number;
}

/** Where the loop counts its costs: counters (stats.ts) and this thread's slot in them. */
export interface LoopCounters {
  words: Float64Array;
  base: number;
  /** Requests dispatched so far by what adaptive polling judges (a device's every thread, or this one's devices). */
  requests: () => number;
}

/** Turns between two looks at the garbage collector's count (GcCount.sample allocates a little). */
const GC_SAMPLE_TURNS = 1024;

/**
 * Spins until the ring has more than `seen` CQEs (true), or for `windowUsec`
 * from t[T_SPIN_START] (false); leaves the time it ended in t[T_NOW]. Task
 * work that shows up meanwhile is run by a non-blocking enter (submit() adds
 * GETEVENTS when IORING_SQ_TASKRUN is set): a new request then becomes a CQE
 * and ends the spin, while other task work, such as issuing a COMMIT linked
 * to a backing read that completed inline, does not make the thread go to
 * sleep.
 */
function pollRing(ring: Ring, seen: number, t: Float64Array, windowUsec: number): boolean {
  for (;;) {
    for (let i = 0; i < 64; i++) {
      if (ring.cqReadySpin() > seen) {
        native.clockMs(t, T_NOW);
        return true;
      }
      if (ring.sqRingFlags() & IORING_SQ_TASKRUN) ring.submit();
    }
    native.clockMs(t, T_NOW);
    if (t[T_NOW]! >= t[T_SPIN_START]! + windowUsec / 1000) return false;
  }
}

/**
 * Submits and waits for one CQE beyond the `inline` ones the submit itself
 * posts. Batch COMMITs complete inside the submit: were their CQEs to end the
 * wait, every batch would cost a whole extra turn (enter + JavaScript) with
 * nothing to do. A partial COMMIT result, though, needs a turn to commit the
 * rest, and with no other request coming, waiting for one more CQE would hold
 * those requests forever; so after COMMIT_GUARD_USEC the wait settles for the
 * inline CQEs (min_wait_usec). With requests `owned` (in flight) the wait
 * lasts VISIT_USEC at most; returns true if it ran out with nothing to reap.
 */
function waitPastInline(ring: Ring, inline: number, owned: number): boolean {
  if (inline > 0) ring.submitAndWaitMin(1 + inline, COMMIT_GUARD_USEC);
  else if (owned === 0) ring.submitAndWait(1);
  else {
    // (what it returns is the SQEs it took, also where the wait then ran out: not a sign of CQEs)
    ring.submitAndWaitTimeout(1, VISIT_USEC);
    return ring.cqReady() === 0;
  }
  return false;
}
const COMMIT_GUARD_USEC = 5000;
const VISIT_USEC = 100_000;

/** One turn of the event loop: timers that are due run (a setTimeout's turn comes after theirs). */
const visitEventLoop = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 0));

/**
 * Whether the thread, having submitted, may sleep on the ring's eventfd: no
 * CQE beyond the `inline` ones, and no task work the eventfd would not
 * announce. IORING_SQ_TASKRUN still set after the submit means either some
 * (a run that stopped short leaves its rest with just the flag) or nothing
 * (a stale flag, which no enter clears): Ring.runTaskWork tells the two
 * apart, and what it brings is served first.
 */
function maySleep(ring: Ring, inline: number): boolean {
  if (ring.cqReady() > inline) return false;
  if (!ring.enterPending()) return true;
  ring.runTaskWork();
  return ring.cqReady() <= inline && !ring.enterPending();
}

export async function serveLoop(ring: Ring, wakeup: RingWakeup, waker: Waker, client: LoopClient, quit: QuitReader,
  opts: LoopOptions, counters: LoopCounters): Promise<void> {
  const gc = new GcCount(counters.words, counters.base);
  try {
    await serve(ring, wakeup, waker, client, quit, opts, counters, gc);
  } finally {
    gc.stop();
    ring.eventfdSignals(true); // (the ring's other users may watch it)
  }
}

async function serve(ring: Ring, wakeup: RingWakeup, waker: Waker, client: LoopClient, quit: QuitReader,
  opts: LoopOptions, { words, base, requests }: LoopCounters, gc: GcCount): Promise<void> {
  const onCqe = client.onCqe;
  wakeup.onReadable(waker.wake);

  const d = client.tally;
  const poll: PollPolicy = opts.pollUsec === undefined ? new PollGovernor(requests) : new FixedPoll(opts.pollUsec);
  const t = poll.times;
  let seen = 0;
  let polled = -1;
  // The eventfd is watched from the first turn that awaits until the first
  // that blocks in io_uring_enter, not started and stopped around every wait:
  // two epoll_ctl calls per wake saved. A wake it reports while no one waits
  // is dropped (Waker), and the turn after a wait looks at the ring anyway.
  // While it is not watched the kernel does not signal it either (a flag in
  // the ring's shared memory); it does again from before the turn looks
  // whether it may sleep, so that nothing arriving after that look goes unsignalled.
  let watching = false;
  let visit = false;
  ring.eventfdSignals(false);
  while (client.active && !quit.fired) {
    const inline = client.flush();
    if (d.asyncInFlight === 0) {
      if (watching) {
        wakeup.stop();
        ring.eventfdSignals(false);
        watching = false;
      }
      const burst = d.dispatched - seen > 1;
      seen = d.dispatched;
      // Ring.submit*() throw on real errors; -EINTR (a process signal landed on
      // this thread) and -EAGAIN/-EBUSY (short of resources, CQ full) just mean
      // reap what is there and go round again.
      if (burst && opts.coalesceUsec > 0) {
        ring.submitAndWaitMin(opts.coalesceMax + inline, opts.coalesceUsec);
      } else if (poll.window > 0) {
        // The window runs from the last request served, over however many
        // turns its own completions (backing IO, commits) take.
        native.clockMs(t, T_TURN);
        if (d.dispatched !== polled) {
          polled = d.dispatched;
          t[T_SPIN_START] = t[T_TURN]!;
        }
        ring.submit();
        const hit = pollRing(ring, inline, t, poll.window);
        words[base + C_SPIN_USEC]! += (t[T_NOW]! - t[T_TURN]!) * 1000;
        poll.spun(hit);
        if (!hit) visit = waitPastInline(ring, inline, d.owned); // a hit's CQE is there already: reap it without another enter
      } else {
        visit = waitPastInline(ring, inline, d.owned);
      }
    } else {
      if (!watching) {
        ring.eventfdSignals(true);
        wakeup.start();
        watching = true;
      }
      ring.submit();
      if (maySleep(ring, inline)) {
        await waker.wait();
        ring.submit(); // runs the deferred task work that woke us, if that was it (IORING_SQ_TASKRUN)
      }
    }
    words[base + C_CQES]! += ring.reap(onCqe);
    words[base + C_ENTERS] = ring.enters;
    if (d.dispatched !== poll.dispatched) {
      poll.turn(d.dispatched);
      words[base + C_SPIN_POLICY] = poll.window > 0 ? 1 : 0;
      words[base + C_SPIN_PREEMPTIONS] = poll.spinPreemptions;
    }
    if (++words[base + C_TURNS]! % GC_SAMPLE_TURNS === 0) gc.sample();
    if (visit) {
      visit = false;
      await visitEventLoop();
    }
  }
}
