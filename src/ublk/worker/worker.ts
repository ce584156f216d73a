// Entry point of a serving thread: its own ring, the devices it hosts
// (thread-host.ts), and the serving loop until they stop or it is told to
// quit. A device's own thread is given its device at start and ends with
// it; a pool's thread is given devices by message, any time.
import { parentPort, workerData } from 'node:worker_threads';
import { Ring } from '../../uring/ring.js';
import { RingWakeup } from '../../uring/wakeup.js';
import { MAX_BUFFER_SLOTS } from '../mode.js';
import { QuitReader, serveLoop, type LoopCounters } from './serve-loop.js';
import { Waker } from './waker.js';
import { requestsDispatched, SLOT_WORDS } from '../stats.js';
import { ThreadHost, type DeviceAttach, type HostReport, type RingTables } from './thread-host.js';
import { EventfdReader, KIND_WAKE } from './worker-ring.js';

export type { DeviceAttach, WorkerQueue } from './thread-host.js';

export interface ThreadConfig {
  /** eventfd the main thread writes to when this thread must stop regardless. */
  quitFd: number;
  /** Coalescing window of the serving loop in µs (0: off). */
  coalesceUsec: number;
  /** Polling window of the serving loop in µs (0: off; undefined: adaptive, PollGovernor). */
  pollUsec?: number;
  /** A device's own thread: the device. It ends once the device has left. */
  device?: DeviceAttach;
  /** A pool's thread: eventfd the main thread writes 1 to after each message it posts (see PoolMessage). */
  wakeFd?: number;
}

/** What the main thread sends a pool's thread. */
export type PoolMessage =
  | { type: 'attach'; device: DeviceAttach }
  /** The device's stop stalled: fail what its target holds (ThreadHost.breakDevice). */
  | { type: 'break'; key: number }
  /** Give up arming the device, with this error (ThreadHost.cancel); also to a device's own thread. */
  | { type: 'cancel'; key: number; why: string };

export type WorkerMessage =
  /** The ring exists: the main thread closes `ringFd` should this thread die without closing it. */
  | { type: 'started'; ringFd: number }
  | HostReport
  /** The thread ends (its loop's error, if it failed). */
  | { type: 'exit'; error?: string };

const post = (m: WorkerMessage): void => parentPort!.postMessage(m);

/** A pool thread's ring: room for many devices' queues (user_data has 12 bits of queue index). */
const POOL_TABLES: RingTables = { files: 4096, uds: 4096, buffers: MAX_BUFFER_SLOTS, bgids: 4096 };
const POOL_SQ = 4096, POOL_CQ = 65536;

async function main(cfg: ThreadConfig): Promise<void> {
  const own = cfg.device;
  // SINGLE_ISSUER|DEFER_TASKRUN: only this thread submits, and ublk's request
  // delivery runs when this thread asks for completions — no IPIs, no
  // task-work interruptions of JavaScript. Per tag in flight there is one ublk
  // command plus the engine's and the target's own operations (a linked pair
  // at most); multishot fetches post extra CQEs.
  const perRing = own ? own.depth * own.queues.length : POOL_SQ;
  const ring = own
    ? Ring.create({
      entries: Math.min(4096, Math.max(2 * perRing, 32)), cqEntries: Math.min(65536, Math.max(4 * perRing, 64)),
      singleIssuer: true, deferTaskrun: true, taskrunFlag: true,
    })
    : Ring.create({ entries: POOL_SQ, cqEntries: POOL_CQ, singleIssuer: true, deferTaskrun: true, taskrunFlag: true });
  let wakeup: RingWakeup | null = null;
  let host: ThreadHost | null = null;
  let quit: QuitReader | null = null;
  try {
    post({ type: 'started', ringFd: ring.fd });
    const waker = new Waker();
    const tables: RingTables = own
      ? { files: 1, uds: own.queues.length, buffers: own.mode.copy === 'zero' ? perRing : 0, bgids: own.queues.length }
      : POOL_TABLES;
    host = new ThreadHost(ring, waker, tables, !own, post);
    // A device's own thread counts the loop's costs in the device's first slot; a pool's, privately.
    let counters: LoopCounters;
    if (own) {
      // (its arming only: once it serves, STOP_DEV ends it)
      parentPort!.on('message', (m: PoolMessage) => {
        if (m.type === 'cancel') host!.cancel(m.key, m.why);
      });
      await host.attach(own);
      // Armed only now, so that arming's own reaping cannot swallow its CQE: a
      // quit written meanwhile (another queue failed to start) stays in the eventfd.
      quit = new QuitReader(ring, cfg.quitFd);
      host.quit = quit;
      const stats = host.statsOf(own.key);
      counters = stats
        ? { words: stats, base: own.queues[0]!.slot * SLOT_WORDS, requests: () => requestsDispatched(stats) }
        : { words: new Float64Array(SLOT_WORDS), base: 0, requests: () => 0 };
    } else {
      quit = new QuitReader(ring, cfg.quitFd);
      host.quit = quit;
      // The wake eventfd's count: messages posted, which the event loop is to deliver.
      const wake = new EventfdReader(ring, cfg.wakeFd!, KIND_WAKE);
      host.onWake = (res) => host!.expectMessages(wake.reread(res));
      host.startTicks();
      // An exception a device's target let escape fails that device, not the thread and every device on it.
      process.on('uncaughtException', (e) => {
        if (!host!.failCurrent(e)) throw e;
      });
      parentPort!.on('message', (m: PoolMessage) => {
        host!.messageArrived();
        if (m.type === 'attach') void host!.attach(m.device);
        else if (m.type === 'cancel') host!.cancel(m.key, m.why);
        else host!.breakDevice(m.key);
      });
      const tally = host.tally;
      counters = { words: new Float64Array(SLOT_WORDS), base: 0, requests: () => tally.dispatched };
    }
    wakeup = new RingWakeup(ring);
    await serveLoop(ring, wakeup, waker, host, quit, { coalesceUsec: cfg.coalesceUsec, coalesceMax: perRing, pollUsec: cfg.pollUsec }, counters);
    if (quit.fired) await host.quitAll();
  } finally {
    wakeup?.close();
    ring.close(); // drops the registered /dev/ublkcN references that DEL_DEV waits for
    // A 'message' listener keeps the port, and so the thread, alive; removing it does not undo that.
    parentPort?.removeAllListeners('message');
    parentPort?.unref();
  }
}

main(workerData as ThreadConfig).then(
  () => post({ type: 'exit' }),
  (e: unknown) => post({ type: 'exit', error: (e as Error)?.message ?? String(e) }),
);
