// A ublk device served by this process: ADD_DEV, parameters, one worker per
// queue, START_DEV; and the reverse on stop. This is the library's main entry.
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { native } from '../native.js';
import { EFD_CLOEXEC, ENOENT, MFD_CLOEXEC } from '../sys.js';
import { UblkControl, blockDevicePath, charDevicePath, type DevInfo } from './control.js';
import type { UblkParams } from './params.js';
import { loadTarget, resolveTarget } from './target-loader.js';
import { COPY_MODES, TargetOptionError, type CopyMode, type TargetOptions, type TargetSetup } from './target.js';
import type { WorkerConfig, WorkerMessage, WorkerQueue } from './worker.js';
import { MAX_BUFFER_SLOTS } from './queue-memory.js';
import type { DataPath } from './dispatch.js';
import { STAT_COMMITS, STAT_COUNT, STAT_FETCH_CQES, STAT_REARMS, STAT_TAGS, type BatchStats } from './queue-batch.js';
import {
  featureNames, UBLK_ATTR_FUA, UBLK_ATTR_VOLATILE_CACHE, UBLK_F_AUTO_BUF_REG, UBLK_F_BATCH_IO, UBLK_F_CMD_IOCTL_ENCODE,
  UBLK_F_SUPPORT_ZERO_COPY, UBLK_F_USER_COPY, UBLK_MAX_NR_QUEUES, UBLK_MAX_QUEUE_DEPTH,
} from './uapi.js';

export interface DeviceOptions {
  /** Built-in target name ('null', 'memory') or the path/URL of a target module. */
  target: string | URL;
  /** Options for the target; `size` in bytes. */
  options?: TargetOptions;
  /** Hardware queues wanted (the kernel clamps this to the CPU count). Default 1. */
  queues?: number;
  /** Queue depth (tags per queue), 1..4096. Default 128. */
  depth?: number;
  /** Device id; default: the kernel picks one. */
  id?: number;
  /** Largest request in bytes; default 1 MiB. */
  maxIoBytes?: number;
  /** Use UBLK_F_BATCH_IO (fails if the kernel lacks it). Default false. */
  batch?: boolean;
  /** Batch mode: serving threads, any number for any number of queues. Default: one per queue. */
  threads?: number;
  /**
   * µs a serving thread keeps waiting for more requests once they come in
   * bursts, to serve them in one loop turn (0, the default: off; measured no
   * gain in the emulated test VM, where wake-ups dominate).
   */
  coalesceUsec?: number;
  /**
   * µs a serving thread spins, watching its ring, before it sleeps after
   * serving requests (0, the default: off). Costs CPU; saves the wake-ups.
   */
  pollUsec?: number;
  /** How request data travels (see CopyMode). Default 'kernel'. */
  copy?: CopyMode;
  /**
   * Zero copy: let the driver register each request's pages (AUTO_BUF_REG,
   * the default) or register them explicitly with REGISTER_IO_BUF per request.
   */
  autoBufReg?: boolean;
}

const DEFAULT_DEPTH = 128;
const DEFAULT_MAX_IO = 1 << 20;
const MAX_DEV_ID = (1 << 20) - 1;
/** Largest discard/write-zeroes in sectors: avoids a u32 byte-count overflow in older kernels. */
const MAX_DISCARD_SECTORS = 0xffffffff >>> 9;

export class DeviceOptionError extends TargetOptionError {}

function checkInt(name: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) throw new DeviceOptionError(`${name} must be an integer from ${min} to ${max}, got ${v}`);
  return v;
}

/** Validates options that need no kernel; throws DeviceOptionError/TargetOptionError. */
export function validateDeviceOptions(o: DeviceOptions): Required<Omit<DeviceOptions, 'id' | 'threads'>> & { id?: number; threads?: number } {
  if (o.threads !== undefined && !o.batch) {
    throw new DeviceOptionError('threads can only be chosen in batch mode (classic mode serves each queue from its own thread)');
  }
  const copy = o.copy ?? 'kernel';
  if (!COPY_MODES.includes(copy)) throw new DeviceOptionError(`copy must be one of ${COPY_MODES.join(', ')}, got ${String(copy)}`);
  if (o.autoBufReg !== undefined && copy !== 'zero') throw new DeviceOptionError('autoBufReg only applies to zero copy');
  return {
    copy,
    autoBufReg: o.autoBufReg ?? true,
    coalesceUsec: checkInt('coalesceUsec', o.coalesceUsec ?? 0, 0, 1_000_000),
    pollUsec: checkInt('pollUsec', o.pollUsec ?? 0, 0, 1_000_000),
    batch: o.batch ?? false,
    threads: o.threads === undefined ? undefined : checkInt('threads', o.threads, 1, 1024),
    target: o.target,
    options: o.options ?? {},
    queues: checkInt('queues', o.queues ?? 1, 1, UBLK_MAX_NR_QUEUES),
    depth: checkInt('depth', o.depth ?? DEFAULT_DEPTH, 1, UBLK_MAX_QUEUE_DEPTH),
    id: o.id === undefined ? undefined : checkInt('id', o.id, 0, MAX_DEV_ID),
    maxIoBytes: checkInt('maxIoBytes', o.maxIoBytes ?? DEFAULT_MAX_IO, 4096, 32 << 20),
  };
}

function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0) throw new TargetOptionError(`size must be a positive number of bytes, got ${size}`);
  if (size % 512) throw new TargetOptionError(`size must be a multiple of 512 bytes, got ${size}`);
}

function deviceParams(setup: TargetSetup, maxIoBytes: number): UblkParams {
  const caps = setup.caps ?? {};
  const p: UblkParams = {
    basic: {
      attrs: (caps.flush ? UBLK_ATTR_VOLATILE_CACHE : 0) | (caps.fua ? UBLK_ATTR_FUA : 0),
      logical_bs_shift: setup.logicalBlockSize === 4096 ? 12 : 9,
      physical_bs_shift: 12,
      io_opt_shift: 12,
      io_min_shift: 9,
      max_sectors: maxIoBytes >> 9,
      dev_sectors: setup.size / 512,
    },
  };
  if (caps.discard || caps.writeZeroes) {
    p.discard = {
      discard_granularity: 4096,
      max_discard_sectors: caps.discard ? MAX_DISCARD_SECTORS : 0,
      max_write_zeroes_sectors: caps.writeZeroes ? MAX_DISCARD_SECTORS : 0,
      max_discard_segments: 1,
    };
  }
  return p;
}

/** How data moves, from the copy mode asked for and what the target can do with it. */
function dataPath(o: { copy: CopyMode; autoBufReg: boolean }, setup: TargetSetup, name: string): DataPath {
  const data = setup.data ?? 'buffer';
  if (o.copy === 'zero' && data === 'buffer') {
    throw new DeviceOptionError(`the ${name} target moves data in JavaScript, which zero copy cannot reach (use --copy kernel or user)`);
  }
  return { copy: o.copy, data, explicitRegistration: o.copy === 'zero' && !o.autoBufReg };
}

function copyFlags(path: DataPath): number {
  if (path.copy === 'user') return UBLK_F_USER_COPY;
  if (path.copy === 'zero') return UBLK_F_SUPPORT_ZERO_COPY | (path.explicitRegistration ? 0 : UBLK_F_AUTO_BUF_REG);
  return 0;
}

/** Opens /dev/ublkcN, which appears asynchronously where udev is in charge of /dev. */
async function openCharDevice(id: number): Promise<number> {
  const path = charDevicePath(id);
  for (let i = 0; ; i++) {
    try {
      return fs.openSync(path, fs.constants.O_RDWR);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).errno !== -ENOENT || i >= 50) throw e;
      await sleep(100);
    }
  }
}

interface QueueWorker {
  ready: Promise<void>;
  /** Resolves when the worker has ended, with its error if it failed. */
  done: Promise<string | undefined>;
  /** Makes the worker stop serving and close its ring, whatever the kernel does. */
  quit(): void;
  /** Batch mode: the worker's live counters. */
  stats: Float64Array;
}

const ONE = new BigUint64Array([1n]);

/**
 * Which thread serves which queue in batch mode. With at most as many threads
 * as queues, queues are dealt round-robin; with more, several threads share a
 * queue (each with its own fetch command) and its first thread PREPs it.
 */
export function assignQueues(queues: number, threads: number): Array<Array<{ q: number; prep: boolean }>> {
  const out = Array.from({ length: threads }, () => [] as Array<{ q: number; prep: boolean }>);
  if (threads <= queues) for (let q = 0; q < queues; q++) out[q % threads]!.push({ q, prep: true });
  else for (let t = 0; t < threads; t++) out[t]!.push({ q: t % queues, prep: t < queues });
  return out;
}

/** The queues each worker serves: one worker per queue (classic), or `threads` workers (batch). */
function plan(queues: number, o: { batch: boolean; threads?: number; copy: CopyMode }, memfds: number[], bufBytes: number): WorkerQueue[][] {
  if (!o.batch) return Array.from({ length: queues }, (_, q) => [{ q, prep: true, fetchBuffers: 0 }]);
  const threads = o.threads ?? queues;
  // Tag buffers shared by the threads of a queue (any thread may get any tag);
  // zero copy has none.
  for (let q = 0; q < queues && o.copy !== 'zero'; q++) {
    const fd = native.memfdCreate('ublk-ts-tag-buffers', MFD_CLOEXEC);
    memfds.push(fd);
    fs.ftruncateSync(fd, bufBytes);
  }
  // Only one fetch command per queue is active at a time: when threads share a
  // queue, a single buffer each lets the active role move on after every batch.
  const fetchBuffers = threads > queues ? 1 : 4;
  return assignQueues(queues, threads).map((qs) => qs.map(({ q, prep }) => ({ q, prep, bufFd: memfds[q], fetchBuffers })));
}

function startWorker(cfg: Omit<WorkerConfig, 'quitFd' | 'stats'>): QueueWorker {
  const quitFd = native.eventfd(0, EFD_CLOEXEC);
  const stats = new SharedArrayBuffer(STAT_COUNT * Float64Array.BYTES_PER_ELEMENT);
  const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: { ...cfg, quitFd, stats } });
  let onReady!: () => void, onFail!: (e: Error) => void, onDone!: (err?: string) => void;
  const ready = new Promise<void>((res, rej) => { onReady = res; onFail = rej; });
  const done = new Promise<string | undefined>((res) => { onDone = res; });
  let finished = false;
  const finish = (err?: string): void => {
    if (finished) return;
    finished = true;
    native.close(quitFd);
    onFail(new Error(`worker for queue(s) ${cfg.queues.map((q) => q.q).join(',')}: ${err ?? 'exited before it was ready'}`));
    onDone(err);
  };
  const qw: QueueWorker = { ready, done, quit: () => { if (!finished) fs.writeSync(quitFd, ONE); }, stats: new Float64Array(stats) };
  worker.on('message', (m: WorkerMessage) => (m.type === 'ready' ? onReady() : finish(m.error)));
  worker.on('error', (e) => finish(e.message));
  worker.on('exit', (code) => finish(code ? `exit code ${code}` : undefined));
  ready.catch(() => {}); // observed by whoever awaits it
  return qw;
}

export class UblkDevice {
  /** Resolves when every queue worker has stopped (after stop(), or when the device was stopped from outside). */
  readonly stopped: Promise<void>;
  private destroying: Promise<void> | null = null;

  private constructor(
    private readonly ctrl: UblkControl,
    readonly info: DevInfo,
    readonly size: number,
    readonly targetName: string,
    private charFd: number,
    private readonly workers: QueueWorker[],
    private readonly setup: TargetSetup,
  ) {
    this.stopped = Promise.all(workers.map((w) => w.done)).then(() => {});
  }

  get id(): number { return this.info.dev_id; }
  get path(): string { return blockDevicePath(this.info.dev_id); }
  get queues(): number { return this.info.nr_hw_queues; }
  get depth(): number { return this.info.queue_depth; }
  get flags(): number { return this.info.flags; }

  /** Batch mode: fetch completions, the tags they delivered, commits and fetch re-arms so far, over all workers. */
  get batchStats(): BatchStats {
    const sum = (i: number) => this.workers.reduce((n, w) => n + w.stats[i]!, 0);
    return { fetchCqes: sum(STAT_FETCH_CQES), tags: sum(STAT_TAGS), commits: sum(STAT_COMMITS), rearms: sum(STAT_REARMS) };
  }

  /** Creates and starts a device; on any failure nothing is left behind. */
  static async create(opts: DeviceOptions): Promise<UblkDevice> {
    const o = validateDeviceOptions(opts);
    const targetUrl = resolveTarget(o.target);
    const mod = await loadTarget(targetUrl);
    const setup = await mod.setup(o.options);
    let ctrl: UblkControl | null = null;
    let info: DevInfo | null = null;
    let charFd = -1;
    const workers: QueueWorker[] = [];
    const memfds: number[] = [];
    try {
      checkSize(setup.size);
      ctrl = UblkControl.open();
      const features = await ctrl.getFeatures();
      if (!(features & UBLK_F_CMD_IOCTL_ENCODE)) throw new Error('the ublk driver lacks UBLK_F_CMD_IOCTL_ENCODE');
      if (o.batch && !(features & UBLK_F_BATCH_IO)) throw new DeviceOptionError('this kernel\'s ublk driver does not support UBLK_F_BATCH_IO (batch mode needs Linux 7.0 or later)');
      const path = dataPath(o, setup, mod.name);
      const flags = (o.batch ? UBLK_F_BATCH_IO : 0) | copyFlags(path);
      const missing = flags & ~features;
      if (missing) {
        const hint = missing === UBLK_F_AUTO_BUF_REG ? '; --no-auto-buf-reg registers each buffer explicitly instead' : '';
        throw new DeviceOptionError(`this kernel's ublk driver lacks ${featureNames(missing).join(', ')} (needed for --copy ${o.copy})${hint}`);
      }

      info = await ctrl.addDev({
        nr_hw_queues: o.queues, queue_depth: o.depth, max_io_buf_bytes: o.maxIoBytes, dev_id: o.id, flags,
      });
      if ((info.flags & flags) !== flags) throw new Error(`the kernel did not grant ${featureNames(flags & ~info.flags).join(', ')}`);
      charFd = await openCharDevice(info.dev_id);
      await ctrl.setParams(info.dev_id, deviceParams(setup, info.max_io_buf_bytes));
      // The kernel may have clamped the queue count to the CPU count: serve
      // exactly the queues that exist (a worker for a missing queue would hang deletion).
      const base = {
        mode: o.batch ? 'batch' : 'classic', devId: info.dev_id, charFd, depth: info.queue_depth,
        maxIoBytes: info.max_io_buf_bytes, targetUrl, options: o.options, shared: setup.shared, coalesceUsec: o.coalesceUsec, pollUsec: o.pollUsec, path,
      } as const;
      const planned = plan(info.nr_hw_queues, o, memfds, info.queue_depth * info.max_io_buf_bytes);
      if (path.copy === 'zero' && !path.explicitRegistration && (o.threads ?? 0) > info.nr_hw_queues) {
        // AUTO_BUF_REG registers into the ring of whichever fetch delivered the request: rings sharing a queue would collide.
        throw new DeviceOptionError(`zero copy with automatic buffer registration needs at most one thread per queue ` +
          `(${o.threads} threads for ${info.nr_hw_queues} queue(s))`);
      }
      if (path.copy === 'zero' && Math.max(...planned.map((qs) => qs.length)) * info.queue_depth > MAX_BUFFER_SLOTS) {
        throw new DeviceOptionError(`zero copy: a thread can serve at most ${MAX_BUFFER_SLOTS} tags (queues per thread × depth)`);
      }
      for (const queues of planned) {
        workers.push(startWorker({ ...base, queues }));
      }
      await Promise.all(workers.map((w) => w.ready));
      await ctrl.startDev(info.dev_id, process.pid);
      return new UblkDevice(ctrl, info, setup.size, mod.name, charFd, workers, setup);
    } catch (e) {
      await teardown(ctrl, info?.dev_id, charFd, workers, setup, false);
      throw e;
    } finally {
      // Workers map the tag buffers themselves; their fds are not needed past start.
      for (const fd of memfds) native.close(fd);
    }
  }

  /** Stops the device (in-flight IO is finished first), deletes it and releases everything. Idempotent. */
  stop(): Promise<void> {
    this.destroying ??= (async () => {
      const fd = this.charFd;
      this.charFd = -1;
      await teardown(this.ctrl, this.id, fd, this.workers, this.setup, true);
    })();
    return this.destroying;
  }
}

// STOP_DEV makes the kernel finish in-flight IO (the workers must still be
// serving) and then abort every armed fetch, which ends the workers. DEL_DEV
// waits until /dev/ublkcN is closed everywhere, rings included, so it comes last.
async function teardown(ctrl: UblkControl | null, id: number | undefined, charFd: number, workers: QueueWorker[],
  setup: TargetSetup, started: boolean): Promise<void> {
  const errors: unknown[] = [];
  const attempt = async (f: () => unknown): Promise<void> => {
    try { await f(); } catch (e) { errors.push(e); }
  };
  if (ctrl && id !== undefined) {
    await attempt(() => ctrl.stopDev(id));
    // After a successful STOP_DEV every fetch is aborted and nothing is in
    // flight; quitting also covers a device that never started.
    for (const w of workers) w.quit();
    await Promise.all(workers.map((w) => w.done));
    if (charFd >= 0) fs.closeSync(charFd);
    await attempt(() => ctrl.delDev(id));
  }
  await attempt(() => setup.cleanup?.());
  ctrl?.close();
  if (started && errors.length) throw errors[0];
}
