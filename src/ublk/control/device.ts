// A ublk device served by this process: ADD_DEV, parameters, the serving
// threads, START_DEV; and the reverse on stop. This is the library's main entry.
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { native } from '../../native.js';
import { processAlive } from '../../process-alive.js';
import { settledWithin } from '../../settled-within.js';
import { abortable, abortError } from '../../abortable.js';
import { StallWatch } from '../../stall-watch.js';
import { EACCES, EBUSY, ENOENT, MFD_CLOEXEC } from '../../sys.js';
import { UblkControl, UblkControlError, blockDevicePath, charDevicePath, isRoot, type DevInfo } from './control.js';
import { checkDeviceOptions, type CheckedDeviceOptions } from './device-options.js';
import { kernelHasZonedDevices, NO_ZONED_DEVICES } from './kernel-zoned.js';
import type { UblkParams } from '../abi/params.js';
import { featureNames, UBLK_F_BATCH_IO, UBLK_F_PER_IO_DAEMON, UBLK_ATTR_FUA, UBLK_ATTR_READ_ONLY, UBLK_ATTR_VOLATILE_CACHE, UBLK_F_CMD_IOCTL_ENCODE, UBLK_F_QUIESCE, UBLK_F_ZONED,
  UBLK_S_DEV_FAIL_IO, UBLK_S_DEV_QUIESCED } from '../abi/uapi.js';
import { blockInFlight } from '../block-in-flight.js';
import { loadTarget, resolveTarget } from '../target-loader.js';
import { checkTargetOptions, type CopyMode, type TargetOptions, type TargetSetup } from '../target.js';
import { assignQueues, checkAssignment, checkKernelSupports, MAX_BUFFER_SLOTS, ModeError, recoveryOf, servingMode, type RecoveryPolicy, type ServingMode } from '../mode.js';
import { integrityParams, type IntegrityChoice } from '../integrity.js';
import { createStatsFd, mapStats, progressMark, readQueueStats, totalStats, type BatchStats, type QueueStats } from '../stats.js';
import type { WorkerQueue } from '../worker/worker.js';
import { ownThread, type QueueWorker, type Reservation, type ThreadPool } from './serving-thread.js';
import { checkShmemFile, SharedRegion } from './shmem.js';
import { DEFAULT_SCHEDULER, setScheduler } from './scheduler.js';

/** A device's options; each is a row of DEVICE_OPTIONS (device-options.ts), where its range and default are. */
/** Device options; UBLK_F_INTEGRITY's (`metadataSize` and the rest) are integrity.ts's. */
export interface DeviceOptions extends IntegrityChoice {
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
  /**
   * Serving threads, any number for any number of queues. Default: one per
   * queue. Batch mode shares queues between threads; classic mode deals the
   * tags of all queues out to them (UBLK_F_PER_IO_DAEMON).
   */
  threads?: number;
  /**
   * µs a serving thread keeps waiting for more requests once they come in
   * bursts, to serve them in one loop turn (0, the default: off).
   */
  coalesceUsec?: number;
  /**
   * µs a serving thread spins, watching its ring, before it sleeps after
   * serving requests (0: never). Costs CPU; saves the wake-ups. Default:
   * adaptive (worker/poll-governor.ts), spinning only while that serves more
   * requests per second than sleeping.
   */
  pollUsec?: number;
  /**
   * How request data travels (see CopyMode). Default: zero copy where the
   * target and the kernel allow it, else kernel ('user' for a zoned target): defaultCopy() in mode.ts.
   */
  copy?: CopyMode;
  /**
   * Zero copy: let the driver register each request's pages (AUTO_BUF_REG,
   * the default) or register them explicitly with REGISTER_IO_BUF per request.
   */
  autoBufReg?: boolean;
  /** UBLK_F_USER_RECOVERY: the device outlives its server, and UblkDevice.recover() attaches a new one. Default 'none'. */
  recovery?: RecoveryPolicy;
  /** UBLK_F_NEED_GET_DATA (classic, kernel copy): WRITE data is copied in on the server's request. Default false. */
  needGetData?: boolean;
  /**
   * UBLK_F_SHMEM_ZC: a file the application doing IO maps MAP_SHARED too (hugetlbfs,
   * tmpfs, /proc/PID/fd/N of a memfd); requests whose buffers lie in it are served in place (control/shmem.ts).
   */
  shmem?: string;
  /** With `shmem`: registered read-only, for WRITE requests only. Default false. */
  shmemReadOnly?: boolean;
  /** false: UBLK_F_NO_AUTO_PART_SCAN, no partition scan when the device starts. Default true. */
  partScan?: boolean;
  /**
   * The block I/O scheduler set on /dev/ublkbN once it starts (scheduler.ts):
   * default 'none'; 'kernel' keeps the kernel's choice (mq-deadline for one queue).
   */
  scheduler?: string;
  /** Request buffers' alignment in bytes, a power of 2 up to 4096 (UBLK_PARAM_TYPE_DMA_ALIGN). */
  dmaAlign?: number;
  /** Segment limits (UBLK_PARAM_TYPE_SEGMENT): any of them sends all three, the others unlimited. */
  maxSegments?: number;
  maxSegmentSize?: number;
  /** Bytes, a power of 2: no segment crosses a multiple of it. */
  segmentBoundary?: number;
}

export interface CreateHooks {
  /**
   * Serve the device on these shared threads (one server for many devices)
   * instead of threads of its own; its queues all go to one of them. Such a
   * device cannot be let go of alone (release, quiesce): it ends with stop().
   */
  pool?: ThreadPool;
  /**
   * Send the device's control commands through this control device, which
   * the caller owns (one for many devices: a descriptor and a ring fewer
   * per device), instead of one the device opens and closes.
   */
  control?: UblkControl;
  /**
   * Told the device's id right after ADD_DEV, before anything can fail or
   * kill the process: whoever started this process deletes the device
   * should it die before the device is live.
   */
  added?(id: number): void;
  /**
   * Told once this process holds the device's /dev/ublkcN (created, or
   * being recovered), before its target opens: from then on until it is
   * live, only this process can give the start up (`signal`).
   */
  opened?(id: number): void;
  /**
   * Gives up creating (or recovering) the device when it fires (a `del` of
   * the device while it starts, the server told to stop): a target's setup or
   * open that has not settled is not waited for (and undone when it does),
   * and the device is removed (a recovery's left as it was found); the promise rejects with the signal's reason.
   */
  signal?: AbortSignal;
}

/** Largest discard/write-zeroes in sectors: avoids a u32 byte-count overflow in older kernels. */
const MAX_DISCARD_SECTORS = 0xffffffff >>> 9;

/** The size a target's setup announced: a bug of the target's, not the user's, if wrong. */
function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0 || size % 512) {
    throw new Error(`the target's setup gave the size ${size}, not a positive multiple of 512 bytes`);
  }
}

/** The device's largest request: --max-io, lowered to what the target takes (whole pages). */
function maxIoBytes(asked: number, target: number | undefined): number {
  if (target === undefined || target >= asked) return asked;
  const pages = Math.floor(target / 4096) * 4096;
  if (pages === 0) throw new Error(`the target takes requests of at most ${target} bytes, less than the 4096 every block device must take`);
  return pages;
}

function deviceParams(setup: TargetSetup, maxIoBytes: number, o: CheckedDeviceOptions): UblkParams {
  const caps = setup.caps ?? {};
  const p: UblkParams = {
    basic: {
      attrs: (caps.flush ? UBLK_ATTR_VOLATILE_CACHE : 0) | (caps.fua ? UBLK_ATTR_FUA : 0) | (setup.readOnly ? UBLK_ATTR_READ_ONLY : 0),
      logical_bs_shift: setup.logicalBlockSize === 4096 ? 12 : 9,
      physical_bs_shift: 12,
      io_opt_shift: 12,
      io_min_shift: 9,
      max_sectors: maxIoBytes >> 9,
      dev_sectors: setup.size / 512,
    },
  };
  if (o.dmaAlign !== undefined) p.dma = { alignment: o.dmaAlign - 1 };
  if (o.maxSegments !== undefined || o.maxSegmentSize !== undefined || o.segmentBoundary !== undefined) {
    p.seg = {
      max_segments: o.maxSegments ?? 65535,
      max_segment_size: o.maxSegmentSize ?? 2 ** 32 - 1,
      seg_boundary_mask: (o.segmentBoundary ?? 2 ** 32) - 1,
    };
  }
  if (setup.zoned) {
    // The zone size is chunk_sectors; a ZONE_APPEND fits in a request and in a zone.
    const zoneSectors = setup.zoned.zoneSize / 512;
    p.basic.chunk_sectors = zoneSectors;
    p.zoned = {
      max_open_zones: setup.zoned.maxOpen, max_active_zones: setup.zoned.maxActive,
      max_zone_append_sectors: Math.min(zoneSectors, maxIoBytes >> 9),
    };
  }
  const integrity = integrityParams(o, p.basic.logical_bs_shift!);
  if (integrity) p.integrity = integrity;
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

/**
 * The queues ADD_DEV can give: it clamps the count to the CPUs the kernel
 * may ever bring up (nr_cpu_ids: /sys/devices/system/cpu/possible, e.g.
 * "0-3"). Infinity where that cannot be read.
 */
function possibleCpus(): number {
  try {
    const last = /(\d+)\s*$/.exec(fs.readFileSync('/sys/devices/system/cpu/possible', 'utf8'));
    return last ? Number(last[1]) + 1 : Infinity;
  } catch {
    return Infinity;
  }
}

/** Why a zero-copy device cannot go on a daemon's threads (`recovering`: the device being recovered). */
function noRoomForZeroCopy(tags: number, recovering?: number): string {
  const table = `(queues x depth; a thread's buffer table holds ${MAX_BUFFER_SLOTS})`;
  if (recovering !== undefined && tags > MAX_BUFFER_SLOTS) {
    return `device ${recovering} was created with zero copy and has ${tags} tags ${table}: no daemon thread can serve it; ` +
      `'ublk-ts recover ${recovering}' gives it a server of its own`;
  }
  if (recovering !== undefined) {
    return `device ${recovering} was created with zero copy, and no serving thread of the daemon has room left for its ${tags} tags ${table}: ` +
      `'ublk-ts recover ${recovering}' gives it a server of its own`;
  }
  return tags > MAX_BUFFER_SLOTS
    ? `zero copy: the device has ${tags} tags ${table}: use a smaller --depth or --queues, or --copy kernel`
    : `zero copy: no serving thread of the daemon has room left for ${tags} more tags ${table}: delete devices, or use --copy kernel`;
}

/**
 * Waits until every serving thread has armed its queues; should `signal`
 * fire first, they are told to give up (a target's open may never settle),
 * and this waits for them to let go of the device.
 */
async function readyUnlessAborted(workers: QueueWorker[], signal: AbortSignal | undefined): Promise<void> {
  const cancel = (): void => {
    const why = abortError(signal!).message;
    for (const w of workers) w.cancel(why);
  };
  signal?.addEventListener('abort', cancel, { once: true });
  try {
    await Promise.all(workers.map((w) => w.ready));
  } finally {
    signal?.removeEventListener('abort', cancel);
  }
}

/**
 * Checks that device `id` can take this server (created with recovery, the
 * same flags, the same size) and starts its recovery. The kernel moves a
 * device to QUIESCED/FAIL_IO only once its old server has let go of
 * /dev/ublkcN, so START_USER_RECOVERY is retried while it says -EBUSY.
 */
async function startRecovery(ctrl: UblkControl, info: DevInfo, mode: ServingMode, size: number): Promise<DevInfo> {
  const id = info.dev_id;
  const was = recoveryOf(info.flags);
  if (was === 'none') throw new ModeError(`device ${id} was not created with --recovery: it cannot take a new server`);
  const wanted = mode.flags & ~UBLK_F_QUIESCE;
  if ((info.flags & wanted) !== wanted || was !== mode.recovery) {
    throw new ModeError(`device ${id} was created with ${featureNames(info.flags).join(' ')}, not with this mode's ${featureNames(wanted).join(' ')}`);
  }
  if (info.ublksrv_pid > 0 && info.state !== UBLK_S_DEV_QUIESCED && info.state !== UBLK_S_DEV_FAIL_IO && processAlive(info.ublksrv_pid)) {
    throw new ModeError(`device ${id} is served by process ${info.ublksrv_pid}: nothing to recover (quiesce it, or stop that server, first)`);
  }
  const params = await ctrl.getParams(id);
  if (params.basic.dev_sectors * 512 !== size) {
    throw new ModeError(`device ${id} has ${params.basic.dev_sectors * 512} bytes, but its target now has ${size}`);
  }
  for (let i = 0; ; i++) {
    try {
      await ctrl.startUserRecovery(id);
      return info;
    } catch (e) {
      if (!(e instanceof UblkControlError && e.errno === -EBUSY) || i >= 100) throw e;
      await sleep(100);
    }
  }
}

/**
 * Opens /dev/ublkcN, which appears asynchronously where udev is in charge of
 * /dev; an unprivileged device's node is root's until udev gives it to its
 * owner (README: unprivileged devices), so EACCES is waited out too.
 */
async function openCharDevice(id: number): Promise<number> {
  const path = charDevicePath(id);
  for (let i = 0; ; i++) {
    try {
      return fs.openSync(path, fs.constants.O_RDWR);
    } catch (e) {
      const errno = (e as NodeJS.ErrnoException).errno;
      const waiting = errno === -ENOENT || (errno === -EACCES && !isRoot());
      if (!waiting || i >= 100) {
        if (errno === -EACCES && !isRoot()) {
          throw new Error(`no permission to open ${path} (still root's after 10 s): the udev rule that gives users their ` +
            'devices is missing (README: unprivileged devices)');
        }
        throw e;
      }
      await sleep(100);
    }
  }
}

/**
 * Why quiescing a device with these flags would fail IO, or null. In batch
 * mode (Linux 7.2) QUIESCE_DEV does not wait for idle tags, and ending the
 * queue's fetches (ublk_batch_cancel_queue) sets its force_abort, with which
 * the driver fails every request that arrives while no server runs (with
 * recovery, ublk_prep_req returns BLK_STS_IOERR) instead of holding it; the
 * VM test saw reads and the journal's writes fail between the quiesce and
 * `recover`, whatever the policy. Nothing a server does avoids it.
 */
export function batchQuiesceLoses(flags: number): string | null {
  if (!(flags & UBLK_F_BATCH_IO)) return null;
  return 'a batch-mode device cannot be quiesced without failing IO (the kernel fails its requests from QUIESCE_DEV until `recover`); ' +
    'with --recovery reissue, stop its server (kill it) and `recover` instead: the kernel hands the requests it had to the new server';
}

/** quiesce(): how long nothing must be in flight before the serving threads are let go, and how often to look. */
const DRAIN_QUIET_MS = 200, DRAIN_POLL_MS = 20;

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

export class UblkDevice {
  /** Resolves when every queue worker has stopped (after stop(), or when the device was stopped from outside). */
  readonly stopped: Promise<void>;
  private destroying: Promise<void> | null = null;
  /** release() let go of the device (it waits for a new server) rather than stop() removing it. */
  released = false;

  private constructor(
    private readonly ctrl: UblkControl,
    readonly info: DevInfo,
    /** Bytes (changed by resize()). */
    public size: number,
    private charFd: number,
    private readonly workers: QueueWorker[],
    private readonly setup: TargetSetup,
    private readonly counters: Counters,
    readonly mode: ServingMode,
    private readonly shmem: SharedRegion | null,
    /** The device opened `ctrl` (CreateHooks.control not given) and closes it when it ends. */
    private readonly ownsControl: boolean,
  ) {
    this.stopped = Promise.all(workers.map((w) => w.done)).then(() => {});
    // A serving thread that fails while the device lives fails the device: it
    // is stopped and removed; with recovery, this server lets go of it (the
    // kernel quiesces it, and `recover` attaches a new server).
    for (const w of workers) {
      void w.done.then((err) => {
        if (err === undefined || this.destroying) return;
        // On shared threads the device cannot be let go of alone: it is stopped (teardown).
        const letGo = mode.recovery !== 'none' && !this.pooled;
        console.error(`ublk-ts: ${this.path}: a serving thread failed (${err}); ${letGo ? 'leaving the device to recovery' : 'stopping the device'}`);
        void (letGo ? this.release() : this.abandon()).catch(() => {});
      });
    }
  }

  /** Served by a ThreadPool's shared threads (CreateHooks.pool). */
  get pooled(): boolean { return this.workers.some((w) => !w.ownThread); }

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
  static create(opts: DeviceOptions, hooks: CreateHooks = {}): Promise<UblkDevice> {
    return UblkDevice.attach(opts, null, hooks);
  }

  /**
   * Attaches a new server to device `id`, created with `recovery` and left
   * without a server (QUIESCED, or FAIL_IO): START_USER_RECOVERY, every tag
   * fetched or prepared again, END_USER_RECOVERY. `opts` must be what the
   * device was created with. On failure the device stays as it was, for another try.
   */
  static recover(id: number, opts: DeviceOptions, hooks: Pick<CreateHooks, 'pool' | 'control' | 'signal' | 'opened'> = {}): Promise<UblkDevice> {
    return UblkDevice.attach(opts, id, hooks);
  }

  private static async attach(opts: DeviceOptions, recoverId: number | null, hooks: CreateHooks = {}): Promise<UblkDevice> {
    const { target, options, ...deviceOptions } = opts;
    const o = checkDeviceOptions(deviceOptions, 'library');
    const targetUrl = resolveTarget(target);
    const mod = await loadTarget(targetUrl);
    const targetOptions = checkTargetOptions(mod, options ?? {}, 'library');
    const { signal } = hooks;
    const setup = await abortable(Promise.resolve(mod.setup(targetOptions, { metadataSize: o.metadataSize ?? 0, threads: o.threads ?? o.queues ?? 1 })),
      signal, (late) => late.cleanup?.());
    let ctrl: UblkControl | null = null;
    let info: DevInfo | null = null;
    let charFd = -1;
    const workers: QueueWorker[] = [];
    let memfds: number[] = [];
    const counters: Counters = { fd: -1, words: new Float64Array(0), slots: 0 };
    let shmem: SharedRegion | null = null;
    let room: Reservation | null = null;
    try {
      checkSize(setup.size);
      ctrl = hooks.control ?? UblkControl.open();
      const features = await ctrl.getFeatures();
      if (!(features & UBLK_F_CMD_IOCTL_ENCODE)) throw new Error('the ublk driver lacks UBLK_F_CMD_IOCTL_ENCODE (ublk-ts needs Linux 6.5 or later)');
      // A user who is not root gets an unprivileged device (UBLK_F_UNPRIVILEGED_DEV), which is theirs only.
      // A device being recovered keeps its copy mode, which its flags tell where none is given.
      const existing = recoverId === null ? null : await ctrl.getDevInfo(recoverId);
      const deviceFlags = existing && o.copy === undefined ? existing.flags : undefined;
      const choose = (noBufferRoom: boolean): ServingMode => servingMode({ ...o, unprivileged: !isRoot(), noBufferRoom, deviceFlags },
        { name: mod.name, data: setup.data, logicalBlockSize: setup.logicalBlockSize, recoverable: setup.recoverable ?? mod.recoverable,
          integrity: setup.integrity, zoned: setup.zoned !== undefined }, features);
      let mode = choose(false);
      if (hooks.pool && mode.copy === 'zero') {
        // On a daemon's threads zero copy needs room in one's buffer table for
        // every tag, taken before ADD_DEV sets the flags; without it, the
        // default mode does without zero copy.
        const tags = existing ? existing.nr_hw_queues * existing.queue_depth : Math.min(o.queues, possibleCpus()) * o.depth;
        room = hooks.pool.reserve(tags);
        if (room === null) mode = choose(true);
        if (room === null && mode.copy === 'zero') throw new ModeError(noRoomForZeroCopy(tags, existing?.dev_id));
      }
      checkKernelSupports(mode, features);
      if (mode.flags & UBLK_F_ZONED && kernelHasZonedDevices() === false) throw new ModeError(NO_ZONED_DEVICES);
      if (o.shmem !== undefined) checkShmemFile(o.shmem); // before anything is created
      signal?.throwIfAborted();

      if (existing === null) {
        info = await ctrl.addDev({
          nr_hw_queues: o.queues, queue_depth: o.depth, max_io_buf_bytes: maxIoBytes(o.maxIoBytes, setup.maxIoBytes), dev_id: o.id, flags: mode.flags,
        });
        if ((info.flags & mode.flags) !== mode.flags) throw new Error(`the kernel did not grant ${featureNames(mode.flags & ~info.flags).join(', ')}`);
        hooks.added?.(info.dev_id);
        charFd = await openCharDevice(info.dev_id);
        hooks.opened?.(info.dev_id);
        await ctrl.setParams(info.dev_id, deviceParams(setup, info.max_io_buf_bytes, o));
        if (o.shmem !== undefined) shmem = await SharedRegion.register(ctrl, info.dev_id, o.shmem, o.shmemReadOnly === true);
      } else {
        info = await startRecovery(ctrl, existing, mode, setup.size);
        charFd = await openCharDevice(info.dev_id);
        hooks.opened?.(info.dev_id);
      }
      // (no-op unless the kernel clamped the queues below the estimate)
      if (room) room = hooks.pool!.shrink(room, info.nr_hw_queues * info.queue_depth);
      // The kernel may have clamped the queue count to the CPU count: serve
      // exactly the queues that exist (a worker for a missing queue would hang deletion).
      const plan = assignQueues(mode, info.nr_hw_queues, hooks.pool ? 1 : o.threads, info.queue_depth);
      // (on a daemon's threads one group: the one its reservation is for)
      if (hooks.pool && plan.length !== 1) throw new Error(`a device on a daemon's threads is served by one, not ${plan.length}`);
      checkAssignment(mode, plan, info.nr_hw_queues, info.queue_depth);
      if (plan.some((t) => t.some((a) => a.tags)) && !(info.flags & UBLK_F_PER_IO_DAEMON)) {
        throw new ModeError(`this kernel's ublk driver lacks PER_IO_DAEMON (needed for --threads other than --queues in classic mode)`);
      }
      memfds = sharedTagBuffers(mode, info.nr_hw_queues, info.queue_depth * info.max_io_buf_bytes);
      signal?.throwIfAborted(); // (before any thread is given the device)
      counters.slots = plan.flat().length;
      counters.fd = createStatsFd(counters.slots);
      counters.words = mapStats(counters.fd, false);
      for (const assigned of plan) {
        const queues: WorkerQueue[] = assigned.map((a) => ({ ...a, bufFd: memfds[a.q] }));
        const device = {
          mode, devId: info.dev_id, charFd, statsFd: counters.fd, depth: info.queue_depth, maxIoBytes: info.max_io_buf_bytes, targetUrl,
          options: targetOptions, shared: setup.shared, queues, shmem: shmem ? [shmem.region] : [],
        };
        workers.push(hooks.pool ? hooks.pool.attach(device, room ?? undefined) : ownThread({ coalesceUsec: o.coalesceUsec, pollUsec: o.pollUsec }, device));
        room = null;
      }
      await readyUnlessAborted(workers, signal);
      if (recoverId === null) {
        await ctrl.startDev(info.dev_id, process.pid);
        setScheduler(info.dev_id, o.scheduler ?? DEFAULT_SCHEDULER, o.scheduler !== undefined);
      } else {
        await ctrl.endUserRecovery(info.dev_id, process.pid);
      }
      signal?.throwIfAborted(); // (cancelled during the start: stopped, as asked)
      return new UblkDevice(ctrl, info, setup.size, charFd, workers, setup, counters, mode, shmem, hooks.control === undefined);
    } catch (e) {
      // A failed recovery leaves the device without a server, as it found it.
      // (On shared threads a device's fetches cannot be let go of without STOP_DEV: a failed recovery there stops it.)
      await teardown(ctrl, info?.dev_id, charFd, workers, setup, counters, shmem, recoverId === null || hooks.pool ? 'stop' : 'release', false,
        hooks.control === undefined);
      throw signal?.aborted ? abortError(signal) : e;
    } finally {
      // Workers map the tag buffers themselves; their fds are not needed past start.
      for (const fd of memfds) native.close(fd);
      if (room) hooks.pool!.cancel(room); // reserved, but no device reached the thread
    }
  }

  /**
   * Changes the device's size (UPDATE_SIZE). The target always serves at
   * least the size the kernel announces: growing, the target's `resize`
   * first (which may refuse), then the kernel's; shrinking, the kernel's
   * first, so that requests still in its old range are served, and a
   * refused UPDATE_SIZE leaves the data past the new end in place. One
   * resize at a time (control commands complete in any order): one asked
   * for while another is under way waits for it, for `resizeWaitMs` at
   * most, and then fails without starting (a target's resize that never
   * returns would otherwise hold every later one for good). Shrinking
   * while the end of the device is in use is the user's business, as with
   * any block device.
   */
  resize(size: number): Promise<void> {
    const prior = this.resizing;
    const run = (prior ? this.awaitResize(prior) : Promise.resolve()).then(() => this.resizeNow(size));
    const mine = run.catch(() => {});
    // One that gave up waiting ends, the one it waited for may not: the next waits for both.
    this.resizing = prior ? Promise.all([prior, mine]).then(() => {}) : mine;
    return run;
  }

  /** How long a resize waits for the one before it to end. */
  resizeWaitMs = 30_000;

  /** Every resize asked for so far has ended (settles then). */
  private resizing: Promise<void> | null = null;

  private awaitResize(prior: Promise<void>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ModeError(`an earlier resize of ${this.path} has not ended within ${this.resizeWaitMs / 1000} s ` +
        '(its target has not finished resizing); this one was not started: try again later, or `del` the device')), this.resizeWaitMs);
    });
    return Promise.race([prior, late]).finally(() => clearTimeout(timer));
  }

  private async resizeNow(size: number): Promise<void> {
    const lbs = this.mode.logicalBlockSize;
    if (!Number.isSafeInteger(size) || size <= 0 || size % lbs) {
      throw new ModeError(`a size must be a positive multiple of the ${lbs}-byte logical block, got ${size}`);
    }
    if (!this.setup.resize) throw new ModeError(`the target of ${this.path} cannot change its size`);
    const growing = size >= this.size;
    if (growing) await this.setup.resize(size);
    await this.ctrl.updateSize(this.id, size / 512);
    this.size = size;
    if (!growing) await this.setup.resize(size);
  }

  /** Stops the device (in-flight IO is finished first), deletes it and releases everything. Idempotent. */
  stop(): Promise<void> {
    return this.end('stop');
  }

  /** A serving thread died: the device is failed without waiting for the requests it had (see Ending), and deleted. */
  private abandon(): Promise<void> {
    return this.end('abandon');
  }

  /**
   * Lets go of a device created with recovery, without stopping it: the
   * serving threads quit and every reference to /dev/ublkcN is closed, so the
   * kernel moves it to QUIESCED (or FAIL_IO) for `recover` to take over.
   * IO meanwhile waits or fails as the recovery policy says.
   */
  release(): Promise<void> {
    if (this.mode.recovery === 'none') return Promise.reject(new ModeError(`${this.path} was not created with --recovery: use stop()`));
    if (this.pooled) return Promise.reject(new ModeError(POOLED_ALONE));
    return this.end('release');
  }

  /**
   * Live replacement (UBLK_F_QUIESCE, granted with recovery where the kernel
   * has it): QUIESCE_DEV holds new IO and cancels the idle fetches, the
   * serving threads finish the requests they hold, and once none is in
   * flight every reference is closed as in release(): the device waits,
   * QUIESCED, for `recover`, with nothing failed. Should QUIESCE_DEV fail (no idle tag
   * within `timeoutMs`), the device is let go of all the same, and the error
   * thrown afterwards.
   */
  quiesce(timeoutMs = 30_000): Promise<void> {
    if (this.mode.recovery === 'none') return Promise.reject(new ModeError(`${this.path} was not created with --recovery: nothing could take over`));
    if (this.pooled) return Promise.reject(new ModeError(POOLED_ALONE));
    if (!(this.info.flags & UBLK_F_QUIESCE)) {
      return Promise.reject(new ModeError(`${this.path} has no UBLK_F_QUIESCE (the kernel lacks it): kill its server and recover instead`));
    }
    const unsafe = batchQuiesceLoses(this.info.flags);
    if (unsafe !== null) return Promise.reject(new ModeError(`${this.path}: ${unsafe}`));
    return this.end('release', async () => {
      await this.ctrl.quiesceDev(this.id, timeoutMs);
      await this.drained(timeoutMs);
    });
  }

  /**
   * After QUIESCE_DEV: it cancelled the idle fetches, but the requests the
   * serving threads hold still finish, and their commits arm fetches it does
   * not cancel (closing the rings will). Returns once nothing has been in
   * flight for a while (a request started just before the cancel may still be
   * on its way to a thread), by the threads' count and the kernel's
   * (blockInFlight: a request the rings still hold as a linked commit would
   * fail once they close; not known: the threads' count alone), the threads ended, or `timeoutMs` passed.
   */
  private async drained(timeoutMs: number): Promise<void> {
    const end = Date.now() + timeoutMs;
    let ended = false;
    void this.stopped.then(() => { ended = true; });
    for (let quiet = 0; quiet < DRAIN_QUIET_MS && !ended && Date.now() < end; quiet += DRAIN_POLL_MS) {
      if (this.stats().some((q) => q.inFlight > 0) || (blockInFlight(this.id) ?? 0) > 0) quiet = -DRAIN_POLL_MS;
      await sleep(DRAIN_POLL_MS);
    }
  }

  /**
   * The one way a live device ends (see Ending); the first call decides, later
   * ones get its promise. `before` runs first; should it throw, the device
   * still ends, and its error is thrown then.
   */
  private end(ending: Ending, before?: () => Promise<void>): Promise<void> {
    this.destroying ??= (async () => {
      let failed: unknown = null;
      await before?.().catch((e: unknown) => { failed = e; });
      this.released = ending === 'release';
      const fd = this.charFd;
      this.charFd = -1;
      // Shared threads keep a device's fetches armed until STOP_DEV aborts them: its only way out is a stop.
      await teardown(this.ctrl, this.id, fd, this.workers, this.setup, this.counters, this.shmem, this.pooled ? 'stop' : ending, true,
        this.ownsControl);
      if (failed) throw failed;
    })();
    return this.destroying;
  }
}

/**
 * How a device ends:
 * - `stop`: STOP_DEV, which makes the kernel finish in-flight IO (the
 *   workers must still be serving) and then abort every armed fetch, ending
 *   the workers; then DEL_DEV, which waits until every opener of
 *   /dev/ublkcN (rings included) and of the stopped /dev/ublkbN has let go,
 *   so it comes last. (DEL_DEV_ASYNC would not wait, but then the driver
 *   still holds the device, and its module, after `del`.) Requests the target still
 *   holds once none has moved for STOP_GRACE_MS are failed the `abandon` way;
 * - `abandon` (a serving thread died): a request the dead thread had taken can
 *   only be failed by the kernel once /dev/ublkcN is released everywhere (no
 *   other thread may commit it), and STOP_DEV would wait for it forever; so
 *   every worker quits and every reference is closed first, the driver aborts
 *   what is left and stops the device, then DEL_DEV;
 * - `release` (recovery): as `abandon`, without DEL_DEV: the kernel keeps the
 *   device, QUIESCED or FAIL_IO, for a new server.
 * A device that never started goes the `stop` way (or `release`, for a failed recovery).
 */
type Ending = 'stop' | 'abandon' | 'release';

const POOLED_ALONE = 'a device on shared serving threads (a daemon\'s) cannot be let go of alone: it ends with stop()';

/** How long letting go waits for a shared thread to finish with a device (it cannot be made to; see QueueWorker.quit). */
const SHARED_LETGO_MS = 10_000;

/** How long a stop waits for the target's cleanup(). */
const CLEANUP_MS = 10_000;

/** How long a stop waits with no request moving before it fails the ones the target holds (see teardown). */
const STOP_GRACE_MS = 10_000;

async function teardown(ctrl: UblkControl | null, id: number | undefined, charFd: number, workers: QueueWorker[],
  setup: TargetSetup, counters: Counters, shmem: SharedRegion | null, ending: Ending, report: boolean, closeControl: boolean): Promise<void> {
  const errors: unknown[] = [];
  const attempt = async (f: () => unknown): Promise<void> => {
    try { await f(); } catch (e) { errors.push(e); }
  };
  const letGo = async (): Promise<void> => {
    for (const w of workers) w.quit();
    await Promise.all(workers.map(async (w) => {
      if (w.ownThread) await w.done;
      else if (!(await settledWithin(w.done, SHARED_LETGO_MS))) {
        console.error(`ublk-ts: device ${id}: its shared serving thread still serves it ${SHARED_LETGO_MS / 1000} s on; letting go regardless`);
      }
    }));
    if (charFd >= 0) fs.closeSync(charFd);
    charFd = -1;
  };
  if (ctrl && id !== undefined && ending === 'stop') {
    const stopped = attempt(() => ctrl.stopDev(id));
    // STOP_DEV writes back the device's dirty pages and waits for the
    // requests the workers hold, which takes as long as it takes while
    // requests move. A target that never completes them would make it wait
    // for good, holding the device's lock (every other control command on it
    // would queue behind), and this process could not even exit (its exit
    // waits for the STOP_DEV). So once no request has moved for
    // STOP_GRACE_MS, the device is let go of as in `abandon`: once
    // /dev/ublkcN is closed everywhere, the kernel fails what is left and
    // the stop ends.
    const watch = new StallWatch(() => progressMark(totalStats(readQueueStats(counters.words, counters.slots))), STOP_GRACE_MS);
    while (!(await settledWithin(stopped, 250))) {
      if (!watch.stalled()) continue;
      console.error(`ublk-ts: device ${id}: no request moved for ${STOP_GRACE_MS / 1000} s of STOP_DEV: failing the ones still held`);
      for (const w of workers) w.failHeld(); // shared threads: the target's requests fail, its device stays on the thread
      await letGo();
      await stopped;
    }
  }
  await letGo();
  if (counters.fd >= 0) native.close(counters.fd); // the main thread's mapping stays readable
  if (shmem) await attempt(() => shmem.unregister(id === undefined ? null : ctrl, id ?? -1));
  if (ctrl && id !== undefined && ending !== 'release') await attempt(() => ctrl.delDev(id));
  // (bounded as a target's close() is: a cleanup that never ends must not hold the stop, nor the daemon's `del`)
  await attempt(async () => {
    const cleaning = setup.cleanup?.();
    if (cleaning && !(await settledWithin(Promise.resolve(cleaning), CLEANUP_MS))) {
      console.error(`ublk-ts: device ${id}: its target's cleanup() did not finish within ${CLEANUP_MS / 1000} s: going on without it`);
    }
  });
  if (closeControl) ctrl?.close();
  if (report && errors.length) throw errors[0];
}
