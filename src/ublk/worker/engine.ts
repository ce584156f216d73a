// What a queue engine is to the rest of a serving thread. Classic
// (engine-classic.ts) and batch (engine-batch.ts) implement it; worker.ts
// builds one and serve-loop.ts drives it.
//
// Lifecycle, in this order:
//   1. construct, with everything it works with (EngineDeps); the engine
//      builds its Dispatcher, which routes finished requests back to the
//      engine's commit path (CommitSink);
//   2. open the target with `engine.dispatcher` as its `ctx.io`, then
//      `dispatcher.attach(target)`;
//   3. arm(): FETCH_REQ per tag, or PREP_IO_CMDS then FETCH_IO_CMDS; an
//      `error` afterwards means the kernel refused;
//   4. serve (serve-loop.ts): flush() before each enter, onCqe for each
//      completion, until `active` is false (every fetch aborted by STOP_DEV,
//      nothing in flight) or the quit eventfd fires;
//   5. the worker closes the ring, then releases the queue memory.
import type { CqeHandler, Ring } from '../../uring/ring.js';
import type { ServingMode, QueueAssignment } from '../mode.js';
import type { Dispatcher } from './dispatch.js';
import type { Waker } from './waker.js';
import type { TagBuffers } from './queue-memory.js';
import type { UblkRequest } from './request.js';
import type { ShmemViews } from './shmem-views.js';

/** A queue a thread serves, with its memory. */
export interface ServedQueue extends QueueAssignment {
  /** Its index in the user_data of this ring's SQEs (worker-ring.ts): unique on the ring. */
  ud: number;
  /** The queue's ublksrv_io_desc array, mmapped from /dev/ublkcN. */
  desc: Uint32Array;
  /** Per-tag buffers (kernel and user copy), or null (zero copy). */
  bufs: TagBuffers | null;
}

/**
 * Where a device's resources sit on a ring, which may serve other devices
 * too (thread-host.ts hands the places out).
 */
export interface RingPlace {
  /** Fixed-file index of the device's /dev/ublkcN. */
  charFixed: number;
  /** Zero copy: buffer-table slot of the first served queue's tag 0; the i-th served queue's tag t is at bufBase + i*depth + t. */
  bufBase: number;
  /** Batch: provided-buffer group id of the first served queue's fetch; the i-th's is bgidBase + i. */
  bgidBase: number;
}

/**
 * What the serving loop watches of every device on its ring: requests whose
 * target answers later (the loop must then return to the event loop),
 * requests dispatched so far, and requests dispatched and not yet committed
 * (the loop then keeps its waits short enough for the targets' timers to
 * run). Each device's Dispatcher adds to it.
 */
export interface LoopTally {
  asyncInFlight: number;
  dispatched: number;
  owned: number;
}

export interface EngineDeps {
  ring: Ring;
  place: RingPlace;
  /** The device's /dev/ublkcN (user copy moves data with pread/pwrite on it). */
  charFd: number;
  tally: LoopTally;
  mode: ServingMode;
  depth: number;
  queues: ServedQueue[];
  /** The device's counters (stats.ts); this thread writes its queues' slots. */
  stats: Float64Array;
  /** Wakes the serving loop when a request completes outside a CQE (a promise, a timer). */
  waker: Waker;
  /** UBLK_F_SHMEM_ZC: the registered shared memory, mapped by this thread (null without --shmem). */
  shmem: ShmemViews | null;
}

/** Where the dispatcher hands a finished request. */
export interface CommitSink {
  /** Commits the request with `result` (an SQE, or an element of the next COMMIT_IO_CMDS). */
  commit(req: UblkRequest, result: number): void;
  /**
   * Classic only: prepares the request's commit as the very next SQE, to be
   * linked after the target's last SQE (TargetIo.linkCommit). Null where the
   * engine cannot link.
   */
  readonly commitNext: ((req: UblkRequest, result: number) => void) | null;
}

export interface Engine {
  readonly dispatcher: Dispatcher;
  /** False once every tag has been aborted and nothing is in flight. */
  readonly active: boolean;
  /** Why the engine stopped, if not by an orderly abort. */
  readonly error: string | null;
  /**
   * Arms the queues and checks that the kernel took it (see `error`). What
   * it reaps meanwhile goes to `reap`, the ring's handler: a ring shared
   * with other devices has their CQEs too.
   */
  arm(reap: CqeHandler): void;
  /** After the last CQE: gives back what the engine registered with the ring (batch: its fetch buffer rings). */
  release?(): void;
  /** Every request object of the queues it serves (one per tag; for failing what a broken target holds). */
  requests(): UblkRequest[];
  /**
   * Turns completions gathered while reaping into SQEs (batch COMMITs).
   * Returns how many of them complete during the submit itself: their CQEs
   * are already there when the wait starts, so they must not end it.
   */
  flush(): number;
  readonly onCqe: CqeHandler;
}
