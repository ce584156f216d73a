// Entry point of a serving thread: its own ring, the memory of the queues it
// serves, the engine the serving mode names, the target's per-thread
// instance, and the serving loop until the queues stop (engine.ts has the order).
import { parentPort, workerData } from 'node:worker_threads';
import { Ring } from '../../uring/ring.js';
import { RingWakeup } from '../../uring/wakeup.js';
import { native } from '../../native.js';
import { loadTarget } from '../target-loader.js';
import type { TargetOptions } from '../target.js';
import type { QueueAssignment, ServingMode } from '../mode.js';
import { mapDescriptors, TagBuffers } from './queue-memory.js';
import { ClassicEngine } from './engine-classic.js';
import { BatchEngine } from './engine-batch.js';
import type { Engine, EngineDeps, ServedQueue } from './engine.js';
import { QuitReader, serveLoop } from './serve-loop.js';
import { Waker } from './waker.js';
import { C_QUEUE, mapStats, SLOT_WORDS } from '../stats.js';
import { ShmemViews } from './shmem-views.js';
import type { ShmemRegion } from '../control/shmem.js';

export interface WorkerQueue extends QueueAssignment {
  /** Batch: memfd holding the queue's tag buffers, shared by its threads (any thread may get any tag). */
  bufFd?: number;
}

export interface WorkerConfig {
  mode: ServingMode;
  devId: number;
  charFd: number;
  /** eventfd the main thread writes to when this worker must stop regardless. */
  quitFd: number;
  queues: WorkerQueue[];
  depth: number;
  maxIoBytes: number;
  targetUrl: string;
  options: TargetOptions;
  shared: unknown;
  /** memfd of the device's counters (stats.ts). */
  statsFd: number;
  /** Coalescing window of the serving loop in µs (0: off). */
  coalesceUsec: number;
  /** Polling window of the serving loop in µs (0: off; undefined: adaptive, PollGovernor). */
  pollUsec?: number;
  /** UBLK_F_SHMEM_ZC: the regions registered for the device (control/shmem.ts). */
  shmem: ShmemRegion[];
}

export type WorkerMessage =
  /** Armed; `ringFd` is the ring's fd, which the main thread closes should this thread die without closing it. */
  | { type: 'ready'; ringFd: number }
  | { type: 'done'; error?: string };

const post = (m: WorkerMessage): void => parentPort!.postMessage(m);

const ENGINES: Record<ServingMode['engine'], new (deps: EngineDeps) => Engine> = {
  classic: ClassicEngine,
  batch: BatchEngine,
};

async function main(cfg: WorkerConfig): Promise<void> {
  const { mode } = cfg;
  const mod = await loadTarget(cfg.targetUrl);
  const nq = cfg.queues.length;
  // SINGLE_ISSUER|DEFER_TASKRUN: only this thread submits, and ublk's request
  // delivery runs when this thread asks for completions — no IPIs, no
  // task-work interruptions of JavaScript. Per tag in flight there is one ublk
  // command plus the engine's and the target's own operations (a linked pair
  // at most); multishot fetches post extra CQEs.
  const perRing = cfg.depth * nq;
  const ring = Ring.create({
    entries: Math.min(4096, Math.max(2 * perRing, 32)), cqEntries: Math.min(65536, Math.max(4 * perRing, 64)),
    singleIssuer: true, deferTaskrun: true, taskrunFlag: true,
  });
  const served: ServedQueue[] = [];
  let wakeup: RingWakeup | null = null;
  let shmem: ShmemViews | null = null;
  let stopped = false; // the queues stopped: the kernel holds none of our buffer addresses any more
  try {
    ring.registerFiles([cfg.charFd]);
    // Zero copy: an empty buffer table with a slot per tag this ring serves,
    // where the driver (AUTO_BUF_REG) or the engine registers request pages.
    if (mode.copy === 'zero') ring.registerBuffersSparse(perRing);
    for (const wq of cfg.queues) {
      const desc = mapDescriptors(cfg.charFd, wq.q, cfg.depth);
      served.push({ ...wq, desc, bufs: mode.tagBuffers ? new TagBuffers(cfg.depth, cfg.maxIoBytes, wq.bufFd) : null });
    }
    const waker = new Waker();
    const stats = mapStats(cfg.statsFd, true);
    for (const queue of served) stats[queue.slot * SLOT_WORDS + C_QUEUE] = queue.q;
    if (cfg.shmem.length) shmem = new ShmemViews(cfg.shmem);
    const engine = new ENGINES[mode.engine]({ ring, mode, depth: cfg.depth, queues: served, stats, waker, shmem });
    const target = await mod.open({
      devId: cfg.devId, queueId: cfg.queues[0]!.q, depth: cfg.depth, maxIoBytes: cfg.maxIoBytes,
      options: cfg.options, shared: cfg.shared, io: engine.dispatcher,
    });
    engine.dispatcher.attach(target);
    wakeup = new RingWakeup(ring);
    engine.arm();
    if (engine.error) throw new Error(engine.error);
    // Armed only now, so that arm()'s own reaping cannot swallow its CQE: a
    // quit written meanwhile (another queue failed to start) stays in the eventfd.
    const quit = new QuitReader(ring, cfg.quitFd);
    post({ type: 'ready', ringFd: ring.fd });
    await serveLoop(ring, wakeup, waker, engine, quit, { coalesceUsec: cfg.coalesceUsec, coalesceMax: perRing, pollUsec: cfg.pollUsec },
      { words: stats, base: served[0]!.slot * SLOT_WORDS });
    await target.close?.();
    if (engine.error) throw new Error(engine.error);
    stopped = !quit.fired; // told to quit: other threads may still serve with addresses we gave
  } finally {
    wakeup?.close();
    ring.close(); // drops the registered /dev/ublkcN reference that DEL_DEV waits for
    shmem?.free();
    for (const queue of served) {
      native.munmap(queue.desc.buffer as ArrayBuffer);
      if (stopped) queue.bufs?.free();
      else queue.bufs?.keep();
    }
  }
}

main(workerData as WorkerConfig).then(
  () => post({ type: 'done' }),
  (e: unknown) => post({ type: 'done', error: (e as Error)?.message ?? String(e) }),
);
