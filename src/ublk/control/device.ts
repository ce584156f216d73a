// A ublk device served by this process: ADD_DEV, parameters, the serving
// threads, START_DEV; and the reverse on stop. This is the library's main entry.
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { native } from '../../native.js';
import { EFD_CLOEXEC, ENOENT, MFD_CLOEXEC } from '../../sys.js';
import { UblkControl, blockDevicePath, charDevicePath, type DevInfo } from './control.js';
import { checkDeviceOptions } from './device-options.js';
import type { UblkParams } from '../abi/params.js';
import { featureNames, UBLK_ATTR_FUA, UBLK_ATTR_VOLATILE_CACHE, UBLK_F_CMD_IOCTL_ENCODE } from '../abi/uapi.js';
import { loadTarget, resolveTarget } from '../target-loader.js';
import { checkTargetOptions, type CopyMode, type TargetOptions, type TargetSetup } from '../target.js';
import { assignQueues, checkAssignment, checkKernelSupports, servingMode, type ServingMode } from '../mode.js';
import { createStatsFd, mapStats, readQueueStats, totalStats, type BatchStats, type QueueStats } from '../stats.js';
import type { WorkerConfig, WorkerMessage, WorkerQueue } from '../worker/worker.js';

/** A device's options; each is a row of DEVICE_OPTIONS (device-options.ts), where its range and default are. */
export interface DeviceOptions {
  /** Built-in target name ('null', 'memory', 'loop') or the path/URL of a target module. */
  target: string | URL;
  /** Options for the target, checked against its `options` rows; `size` in bytes. */
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
   * bursts, to serve them in one loop turn (0, the default: off).
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

/** Largest discard/write-zeroes in sectors: avoids a u32 byte-count overflow in older kernels. */
const MAX_DISCARD_SECTORS = 0xffffffff >>> 9;

/** The size a target's setup announced: a bug of the target's, not the user's, if wrong. */
function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0 || size % 512) {
    throw new Error(`the target's setup gave the size ${size}, not a positive multiple of 512 bytes`);
  }
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
}

const ONE = new BigUint64Array([1n]);

/** The device's counters: their memfd, the main thread's read-only view, and how many slots. */
interface Counters {
  fd: number;
  words: Float64Array;
  slots: number;
}

/**
 * Batch mode hands any tag to any thread serving its queue, so the tag
 * buffers of each queue live in a memfd that each of them maps. One fd per
 * queue (or none, where the mode has no tag buffers); the caller closes them.
 */
function sharedTagBuffers(mode: ServingMode, queues: number, bytes: number): number[] {
  if (mode.engine !== 'batch' || !mode.tagBuffers) return [];
  return Array.from({ length: queues }, () => {
    const fd = native.memfdCreate('ublk-ts-tag-buffers', MFD_CLOEXEC);
    fs.ftruncateSync(fd, bytes);
    return fd;
  });
}

function startWorker(cfg: Omit<WorkerConfig, 'quitFd'>): QueueWorker {
  const quitFd = native.eventfd(0, EFD_CLOEXEC);
  const worker = new Worker(new URL('../worker/worker.js', import.meta.url), { workerData: { ...cfg, quitFd } });
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
  const qw: QueueWorker = { ready, done, quit: () => { if (!finished) fs.writeSync(quitFd, ONE); } };
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
    private charFd: number,
    private readonly workers: QueueWorker[],
    private readonly setup: TargetSetup,
    private readonly counters: Counters,
  ) {
    this.stopped = Promise.all(workers.map((w) => w.done)).then(() => {});
  }

  get id(): number { return this.info.dev_id; }
  get path(): string { return blockDevicePath(this.info.dev_id); }
  get queues(): number { return this.info.nr_hw_queues; }
  get depth(): number { return this.info.queue_depth; }
  get flags(): number { return this.info.flags; }

  /**
   * memfd of the live counters (stats.ts), open while the device lives;
   * another process reads them through /proc/<pid>/fd/<statsFd>.
   */
  get statsFd(): number { return this.counters.fd; }

  /** Requests, bytes, errors, requests in flight and batch counters so far, per queue. */
  stats(): QueueStats[] {
    return readQueueStats(this.counters.words, this.counters.slots);
  }

  /** Batch mode: fetch completions, the tags they delivered, commits and fetch re-arms so far, over all queues. */
  get batchStats(): BatchStats {
    const { fetchCqes, tags, commits, rearms } = totalStats(this.stats());
    return { fetchCqes, tags, commits, rearms };
  }

  /** Creates and starts a device; on any failure nothing is left behind. */
  static async create(opts: DeviceOptions): Promise<UblkDevice> {
    const { target, options, ...deviceOptions } = opts;
    const o = checkDeviceOptions(deviceOptions, 'library');
    const targetUrl = resolveTarget(target);
    const mod = await loadTarget(targetUrl);
    const targetOptions = checkTargetOptions(mod, options ?? {}, 'library');
    const setup = await mod.setup(targetOptions);
    let ctrl: UblkControl | null = null;
    let info: DevInfo | null = null;
    let charFd = -1;
    const workers: QueueWorker[] = [];
    let memfds: number[] = [];
    const counters: Counters = { fd: -1, words: new Float64Array(0), slots: 0 };
    try {
      checkSize(setup.size);
      const mode = servingMode(o, { name: mod.name, data: setup.data });
      ctrl = UblkControl.open();
      const features = await ctrl.getFeatures();
      if (!(features & UBLK_F_CMD_IOCTL_ENCODE)) throw new Error('the ublk driver lacks UBLK_F_CMD_IOCTL_ENCODE (ublk-ts needs Linux 6.5 or later)');
      checkKernelSupports(mode, features);

      info = await ctrl.addDev({
        nr_hw_queues: o.queues, queue_depth: o.depth, max_io_buf_bytes: o.maxIoBytes, dev_id: o.id, flags: mode.flags,
      });
      if ((info.flags & mode.flags) !== mode.flags) throw new Error(`the kernel did not grant ${featureNames(mode.flags & ~info.flags).join(', ')}`);
      charFd = await openCharDevice(info.dev_id);
      await ctrl.setParams(info.dev_id, deviceParams(setup, info.max_io_buf_bytes));
      // The kernel may have clamped the queue count to the CPU count: serve
      // exactly the queues that exist (a worker for a missing queue would hang deletion).
      const plan = assignQueues(mode, info.nr_hw_queues, o.threads);
      checkAssignment(mode, plan, info.nr_hw_queues, info.queue_depth);
      memfds = sharedTagBuffers(mode, info.nr_hw_queues, info.queue_depth * info.max_io_buf_bytes);
      counters.slots = plan.flat().length;
      counters.fd = createStatsFd(counters.slots);
      counters.words = mapStats(counters.fd, false);
      for (const assigned of plan) {
        const queues: WorkerQueue[] = assigned.map((a) => ({ ...a, bufFd: memfds[a.q] }));
        workers.push(startWorker({
          mode, devId: info.dev_id, charFd, statsFd: counters.fd, depth: info.queue_depth, maxIoBytes: info.max_io_buf_bytes, targetUrl,
          options: targetOptions, shared: setup.shared, coalesceUsec: o.coalesceUsec, pollUsec: o.pollUsec, queues,
        }));
      }
      await Promise.all(workers.map((w) => w.ready));
      await ctrl.startDev(info.dev_id, process.pid);
      return new UblkDevice(ctrl, info, setup.size, charFd, workers, setup, counters);
    } catch (e) {
      await teardown(ctrl, info?.dev_id, charFd, workers, setup, counters.fd, false);
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
      await teardown(this.ctrl, this.id, fd, this.workers, this.setup, this.counters.fd, true);
    })();
    return this.destroying;
  }
}

// STOP_DEV makes the kernel finish in-flight IO (the workers must still be
// serving) and then abort every armed fetch, which ends the workers. DEL_DEV
// waits until /dev/ublkcN is closed everywhere, rings included, so it comes last.
async function teardown(ctrl: UblkControl | null, id: number | undefined, charFd: number, workers: QueueWorker[],
  setup: TargetSetup, statsFd: number, started: boolean): Promise<void> {
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
    if (statsFd >= 0) native.close(statsFd); // the main thread's mapping stays readable
    await attempt(() => ctrl.delDev(id));
  }
  await attempt(() => setup.cleanup?.());
  ctrl?.close();
  if (started && errors.length) throw errors[0];
}
