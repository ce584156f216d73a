// Entry point of a serving thread: its own ring, the memory of the queues it
// serves, the target's per-worker instance, and the serving loop until the
// queues stop. Classic mode: exactly one queue. Batch mode: any queues.
import { parentPort, workerData } from 'node:worker_threads';
import { Ring } from '../uring/ring.js';
import { RingWakeup } from '../uring/wakeup.js';
import { native } from '../native.js';
import { loadTarget } from './target-loader.js';
import { mapDescriptors, TagBuffers } from './queue-memory.js';
import { ClassicQueue } from './queue-classic.js';
import { BatchQueues } from './queue-batch.js';
import { QuitReader, serveLoop, type LoopClient } from './serve-loop.js';
import { Dispatcher, type DataPath } from './dispatch.js';
import type { TargetOptions } from './target.js';

export interface WorkerQueue {
  q: number;
  /** Batch: this thread PREPs the queue (one thread per queue does). */
  prep: boolean;
  /** Batch: memfd holding the queue's tag buffers, shared by its threads. */
  bufFd?: number;
  /** Batch: provided buffers for this thread's fetch command on the queue. */
  fetchBuffers: number;
}

export interface WorkerConfig {
  mode: 'classic' | 'batch';
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
  /** Batch: live counters (Float64Array, see STAT_* in queue-batch). */
  stats: SharedArrayBuffer;
  /** Coalescing window of the serving loop in µs (0: off). */
  coalesceUsec: number;
  /** Polling window of the serving loop in µs (0: off). */
  pollUsec: number;
  /** Copy mode and how the target touches data. */
  path: DataPath;
}


export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'done'; error?: string };

const post = (m: WorkerMessage): void => parentPort!.postMessage(m);

interface Engine extends LoopClient {
  readonly error: string | null;
  /** Arms the queues (FETCH_REQ, or PREP + FETCH_IO_CMDS) and checks the kernel took it. */
  arm(): void;
}

type Bufs = Array<TagBuffers | null>;

function classicEngine(ring: Ring, cfg: WorkerConfig, desc: Uint32Array[], bufs: Bufs, d: Dispatcher): Engine {
  const queue = new ClassicQueue(ring, cfg.queues[0]!.q, cfg.depth, desc[0]!, bufs[0]!, d, cfg.path);
  return Object.assign(queue, {
    arm(): void {
      queue.fetchAll();
      ring.submit();
      // FETCH_REQ only completes when a request arrives, and none can before
      // START_DEV: a CQE now means the kernel refused a fetch.
      ring.reap(queue.onCqe);
    },
  });
}

function batchEngine(ring: Ring, cfg: WorkerConfig, desc: Uint32Array[], bufs: Bufs, d: Dispatcher): Engine {
  const specs = cfg.queues.map((wq, i) => ({ q: wq.q, prep: wq.prep, fetchBuffers: wq.fetchBuffers, desc: desc[i]!, bufs: bufs[i]! }));
  const batch = new BatchQueues(ring, cfg.depth, specs, d, cfg.path, cfg.stats);
  return Object.assign(batch, {
    arm(): void {
      // PREP completes at once; START_DEV waits until every tag of every queue is prepared.
      batch.prepAll();
      while (batch.preparing && !batch.error) {
        ring.submitAndWait(1);
        ring.reap(batch.onCqe);
      }
      if (batch.error) return;
      batch.fetchAll();
      ring.submit();
      ring.reap(batch.onCqe);
    },
  });
}

async function main(cfg: WorkerConfig): Promise<void> {
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
  const desc: Uint32Array[] = [];
  const bufs: Bufs = [];
  let wakeup: RingWakeup | null = null;
  try {
    ring.registerFiles([cfg.charFd]);
    // Zero copy: an empty buffer table with a slot per tag this ring serves,
    // where the driver (AUTO_BUF_REG) or the engine registers request pages.
    if (cfg.path.copy === 'zero') ring.registerBuffersSparse(perRing);
    for (const wq of cfg.queues) {
      desc.push(mapDescriptors(cfg.charFd, wq.q, cfg.depth));
      // Zero copy moves no data through server memory: no tag buffers.
      bufs.push(cfg.path.copy === 'zero' ? null : new TagBuffers(cfg.depth, cfg.maxIoBytes, wq.bufFd));
    }
    const dispatcher = new Dispatcher(ring, cfg.path);
    const target = await mod.open({
      devId: cfg.devId, queueId: cfg.queues[0]!.q, depth: cfg.depth, maxIoBytes: cfg.maxIoBytes,
      options: cfg.options, shared: cfg.shared, io: dispatcher,
    });
    dispatcher.bind(target);
    wakeup = new RingWakeup(ring);
    const engine = (cfg.mode === 'batch' ? batchEngine : classicEngine)(ring, cfg, desc, bufs, dispatcher);
    const quit = new QuitReader(ring, cfg.quitFd);
    engine.arm();
    if (engine.error) throw new Error(engine.error);
    post({ type: 'ready' });
    await serveLoop(ring, wakeup, engine, quit, { coalesceUsec: cfg.coalesceUsec, coalesceMax: cfg.depth * nq, pollUsec: cfg.pollUsec });
    await target.close?.();
    if (engine.error) throw new Error(engine.error);
  } finally {
    wakeup?.close();
    ring.close(); // drops the registered /dev/ublkcN reference that DEL_DEV waits for
    for (const d of desc) native.munmap(d.buffer as ArrayBuffer);
    for (const b of bufs) b?.free();
  }
}

main(workerData as WorkerConfig).then(
  () => post({ type: 'done' }),
  (e: unknown) => post({ type: 'done', error: (e as Error)?.message ?? String(e) }),
);
