// The devices one serving thread hosts on its ring. A device's own thread
// hosts that device's queues and ends with it; a pool's thread (one server
// for many devices: the daemon) hosts the queues of any number of devices,
// attached and let go while the others serve.
//
// Each device gets its places on the ring (RingPlace): a fixed-file slot for
// its /dev/ublkcN, a user_data queue index per served queue (which routes
// CQEs back to its engine), buffer-table slots (zero copy) and buffer group
// ids (batch). A device leaves once its engine is inactive (STOP_DEV aborted
// every fetch and nothing is in flight); its user_data queue indices are
// reused only once its target's own operations have ended too, so that no
// late CQE can reach another device's engine.
import { AsyncLocalStorage } from 'node:async_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Ring } from '../../uring/ring.js';
import { native } from '../../native.js';
import { blockInFlight } from '../block-in-flight.js';
import { abortable } from '../../abortable.js';
import { settledWithin } from '../../settled-within.js';
import { loadTarget } from '../target-loader.js';
import type { Target, TargetOptions } from '../target.js';
import type { QueueAssignment, ServingMode } from '../mode.js';
import type { ShmemRegion } from '../control/shmem.js';
import { mapDescriptors, TagBuffers } from './queue-memory.js';
import { ClassicEngine } from './engine-classic.js';
import { BatchEngine } from './engine-batch.js';
import type { Engine, EngineDeps, LoopTally, RingPlace, ServedQueue } from './engine.js';
import type { LoopClient, QuitReader } from './serve-loop.js';
import type { Waker } from './waker.js';
import { C_QUEUE, mapStats, SLOT_WORDS } from '../stats.js';
import { ShmemViews } from './shmem-views.js';
import { SlotRanges } from './slot-ranges.js';
import { KIND_BATCH, KIND_QUIT, KIND_TICK, KIND_UBLK, KIND_WAKE, nextSqe, udKind, udQueue, userDataLo } from './worker-ring.js';
import { prepTimeout, setUserData } from '../../uring/prep.js';
import { IORING_SQ_CQ_OVERFLOW } from '../../uring/constants.js';

export interface WorkerQueue extends QueueAssignment {
  /** Batch: memfd holding the queue's tag buffers, shared by its threads (any thread may get any tag). */
  bufFd?: number;
}

/** One device's queues for a thread to serve. */
export interface DeviceAttach {
  /** The main thread's name for this attachment. */
  key: number;
  mode: ServingMode;
  devId: number;
  charFd: number;
  queues: WorkerQueue[];
  depth: number;
  maxIoBytes: number;
  targetUrl: string;
  options: TargetOptions;
  shared: unknown;
  /** memfd of the device's counters (stats.ts). */
  statsFd: number;
  /** UBLK_F_SHMEM_ZC: the regions registered for the device (control/shmem.ts). */
  shmem: ShmemRegion[];
  /**
   * Zero copy on a pool's thread: the first of the buffer-table slots the
   * main thread reserved for the device's tags (ThreadPool.reserve), which it
   * did before ADD_DEV to know whether zero copy fits. Unset: the thread picks.
   */
  bufBase?: number;
}

/** What a thread tells the main thread about a device it was given. */
export type HostReport =
  /** Armed: START_DEV (or END_USER_RECOVERY) may go. */
  | { type: 'ready'; key: number }
  /** The device has left the thread (after its queues stopped, or it failed to arm): `error` says why it failed. */
  | { type: 'done'; key: number; error?: string }
  /** The device's target broke (an exception escaped it on a pool thread): stop the device; it leaves afterwards. */
  | { type: 'failed'; key: number; error: string };

/** How many of each place a ring has room for. */
export interface RingTables {
  files: number;
  /** user_data queue indices: 12 bits (worker-ring.ts). */
  uds: number;
  /** Buffer-table slots (zero copy); 0: the ring has no table. */
  buffers: number;
  bgids: number;
}

const ENGINES: Record<ServingMode['engine'], new (deps: EngineDeps) => Engine> = {
  classic: ClassicEngine,
  batch: BatchEngine,
};

/** Idle trimming: seconds between ticks, and idle ticks before a device's buffers are trimmed (startTicks). */
const TICK_S = 5, IDLE_TICKS = 2;

/**
 * How long a target's close() is waited for before its device leaves
 * regardless (its registered /dev/ublkcN would otherwise hold DEL_DEV): a
 * broken target's, and any other's.
 */
const BROKEN_CLOSE_MS = 2000, CLOSE_MS = 10_000;

/** How long a leaving device waits for its target's own ring operations to end after close(). */
const OWN_OPS_WAIT_MS = 2000;

class HostedDevice {
  engine: Engine | null = null;
  target: Target | null = null;
  readonly served: ServedQueue[] = [];
  shmem: ShmemViews | null = null;
  stats: Float64Array | null = null;
  readonly place: RingPlace = { charFixed: -1, bufBase: -1, bgidBase: -1 };
  udBase = -1;
  /** Set once it is on the leaving list. */
  leaving = false;
  /** An exception escaped its target (failDevice). */
  broken = false;
  /** Idle trimming (tick): requests dispatched at the last tick, ticks since with nothing in flight, buffers trimmed. */
  lastDispatched = 0;
  idleTicks = 0;
  trimmed = false;
  /** Its departure, once begun (flush, quitAll: a device leaves once). */
  departing: Promise<void> | null = null;
  /** Fires when the main thread gives up its arming (cancel): a target still opening is not waited for. */
  readonly arming = new AbortController();
  /** Armed and reported ready: cancel() no longer applies. */
  armed = false;
  constructor(readonly cfg: DeviceAttach) {}
}

export class ThreadHost implements LoopClient {
  readonly tally: LoopTally = { asyncInFlight: 0, dispatched: 0, owned: 0 };
  /** By user_data queue index. */
  private readonly byUd: Array<HostedDevice | undefined> = [];
  private readonly devices = new Map<number, HostedDevice>();
  /** Batch engines: flushed before every enter. */
  private readonly flushers: Engine[] = [];
  /** Devices whose fetches were aborted: checked every turn until their engine is inactive. */
  private readonly leaving: HostedDevice[] = [];
  /** Attaches and departures under way (each also counts in tally.asyncInFlight, so the loop visits the event loop). */
  private pending = 0;
  private readonly files: SlotRanges;
  private readonly uds: SlotRanges;
  private readonly buffers: SlotRanges;
  private readonly bgids: SlotRanges;
  /** Where the serving loop's quit READ reports; set before the loop starts. */
  quit: QuitReader | null = null;
  /** A pool thread's wake READ completed with `res` (worker.ts). */
  onWake: ((res: number) => void) | null = null;
  /**
   * A pool thread's: the device whose code runs now, carried through the
   * timers and promises its target makes, so that an exception escaping a
   * target is that device's failure, not the thread's (failCurrent).
   */
  private readonly context: AsyncLocalStorage<HostedDevice> | null;

  /**
   * `pooled`: the loop runs until told to quit, with or without devices;
   * else it ends once the last device has left.
   */
  constructor(private readonly ring: Ring, private readonly waker: Waker, tables: RingTables, private readonly pooled: boolean,
    private readonly report: (m: HostReport) => void) {
    this.files = new SlotRanges(tables.files);
    this.uds = new SlotRanges(tables.uds);
    this.buffers = new SlotRanges(tables.buffers);
    this.bgids = new SlotRanges(tables.bgids);
    this.context = pooled ? new AsyncLocalStorage() : null;
    ring.registerFiles(new Array<number>(tables.files).fill(-1));
    if (tables.buffers) ring.registerBuffersSparse(tables.buffers);
  }

  get active(): boolean {
    return this.pooled || this.devices.size > 0 || this.pending > 0;
  }

  /** The counters of the device attached as `key`, while it is here. */
  statsOf(key: number): Float64Array | null {
    return this.devices.get(key)?.stats ?? null;
  }

  /** Messages the main thread announced on the wake eventfd and the event loop has not delivered yet: the loop must visit it. */
  expectMessages(n: number): void {
    this.tally.asyncInFlight += n;
  }

  /** A message announced with expectMessages arrived. */
  messageArrived(): void {
    this.tally.asyncInFlight--;
  }

  flush(): number {
    let inline = 0;
    for (let i = 0; i < this.flushers.length; i++) inline += this.flushers[i]!.flush();
    for (let i = this.leaving.length; i-- > 0;) {
      const d = this.leaving[i]!;
      if (d.engine!.active) continue;
      this.leaving.splice(i, 1);
      void this.track(this.departOnce(d));
    }
    if (this.trimDue) this.trimIdle();
    return inline;
  }

  readonly onCqe = (lo: number, hi: number, res: number, flags: number): void => {
    const kind = udKind(lo);
    if (kind === KIND_QUIT) {
      if (this.quit) this.quit.fired = true;
      return;
    }
    if (kind === KIND_WAKE) {
      this.onWake?.(res);
      return;
    }
    if (kind === KIND_TICK) {
      this.tick();
      return;
    }
    const d = this.byUd[udQueue(lo)];
    if (!d) return;
    if (this.context === null) {
      d.engine!.onCqe(lo, hi, res, flags);
    } else {
      this.context.enterWith(d);
      try {
        d.engine!.onCqe(lo, hi, res, flags);
      } catch (e) {
        this.failDevice(d, e);
      }
    }
    // An aborted fetch or batch command: the device may be on its way out.
    if (res < 0 && (kind === KIND_UBLK || kind === KIND_BATCH) && !d.leaving) this.watchLeaving(d);
  };

  private watchLeaving(d: HostedDevice): void {
    d.leaving = true;
    this.leaving.push(d);
  }

  /** Runs `p` as pending work: the loop waits on the event loop meanwhile, and comes round when it ends. */
  private async track(p: Promise<void>): Promise<void> {
    this.pending++;
    this.tally.asyncInFlight++;
    try {
      await p;
    } finally {
      this.pending--;
      this.tally.asyncInFlight--;
      this.waker.wake();
    }
  }

  /**
   * Memory that follows use (pool threads): every TICK_S a TIMEOUT on the
   * ring comes back, and a device that has had nothing dispatched and
   * nothing in flight for IDLE_TICKS ticks in a row gives its tag buffers'
   * pages back (TagBuffers.trim). Two ticks, so that no request completed
   * just now still has its commit, which reads a READ's data from the
   * buffer, waiting to be submitted.
   */
  startTicks(): void {
    const ts = native.alloc(16); // struct __kernel_timespec, kept while the TIMEOUT is armed
    new BigInt64Array(ts)[0] = BigInt(TICK_S);
    this.tickSpec = native.addressOf(ts);
    this.tickMem = ts;
    this.armTick();
  }

  private tickSpec = 0;
  /** The timespec's memory: held, since native.alloc's is freed once collected. */
  private tickMem: ArrayBuffer | null = null;

  private armTick(): void {
    const s = nextSqe(this.ring);
    prepTimeout(this.ring, s, this.tickSpec, 0, 0);
    setUserData(this.ring, s, userDataLo(KIND_TICK, 0, 0), 0);
  }

  private tick(): void {
    if (this.ring.closed) return;
    this.armTick();
    this.trimDue = true; // done in flush(), once this reap is over
    for (let i = this.quarantine.length; i-- > 0;) {
      const d = this.quarantine[i]!;
      if (d.engine!.dispatcher.ownOps > 0) continue;
      this.quarantine.splice(i, 1);
      this.releaseUds(d);
    }
  }

  /** A tick came: idle trimming is to be looked at before the next enter. */
  private trimDue = false;

  /**
   * Trims the buffers of devices idle for IDLE_TICKS ticks. Only between a
   * whole reap and the next enter: the kernel copies a WRITE's data into a
   * tag buffer (and a backing READ linked to its commit fills one) before
   * this thread sees the CQE, so a device counts as idle only if the block
   * layer has nothing of it in flight either (its inflight file in sysfs),
   * and no CQE waits unreaped (it would be such a request's).
   */
  private trimIdle(): void {
    if (this.ring.cqReady() > 0 || this.ring.sqRingFlags() & IORING_SQ_CQ_OVERFLOW) return;
    this.trimDue = false;
    for (const d of this.devices.values()) {
      const engine = d.engine;
      if (!engine || d.broken || d.leaving || !d.served.some((q) => q.bufs)) continue;
      const n = engine.dispatcher.dispatched;
      if (n !== d.lastDispatched) {
        d.lastDispatched = n;
        d.idleTicks = 0;
        d.trimmed = false;
        continue;
      }
      if (d.trimmed) continue;
      if (engine.dispatcher.asyncInFlight > 0 || engine.requests().some((r) => r.owned) || blockLayerBusy(d.cfg.devId)) {
        d.idleTicks = 0;
        continue;
      }
      if (++d.idleTicks < IDLE_TICKS) continue;
      for (const q of d.served) q.bufs?.trim();
      d.trimmed = true;
    }
  }

  /** Serves the device's queues from now on; reports ready, or done with why not. */
  attach(cfg: DeviceAttach): Promise<void> {
    const d = new HostedDevice(cfg);
    return this.track(this.context ? this.context.run(d, () => this.arm(d)) : this.arm(d));
  }

  /**
   * An exception escaped a target (from a timer, a callback, a promise no one
   * awaited) on a pool thread: if it is a device's, that device fails, and
   * true; false if it is no device's (the thread's own bug: it dies).
   */
  failCurrent(e: unknown): boolean {
    const d = this.context?.getStore();
    if (!d) return false;
    if (this.devices.has(d.cfg.key)) this.failDevice(d, e);
    // A device that has left (a timer its target left behind): nothing of it remains to fail.
    else console.error(`ublk-ts: device ${d.cfg.devId}, gone from this thread: its target's leftover code failed: ${(e as Error)?.message ?? e}`);
    return true;
  }

  /**
   * Gives up arming device `key` (its add was cancelled: deleted while it
   * started, or its server is stopping): it leaves with `why` as its error
   * as soon as what it awaits (its target's open) is let go of. Armed already: nothing (it ends with STOP_DEV).
   */
  cancel(key: number, why: string): void {
    const d = this.devices.get(key);
    if (d && !d.armed) d.arming.abort(new Error(why));
  }

  /** Stops serving device `key`'s target (the main thread found its stop stalled): what it holds fails with EIO. */
  breakDevice(key: number): void {
    const d = this.devices.get(key);
    if (d) this.failDevice(d, new Error('its stop stalled: requests it held are failed'));
  }

  /**
   * A device whose target broke: its requests fail with EIO from now on
   * (Dispatcher.breakTarget), and the main thread is told, which stops it;
   * the other devices on the thread serve on.
   */
  private failDevice(d: HostedDevice, e: unknown): void {
    if (d.broken) return;
    d.broken = true;
    const why = `its target failed: ${(e as Error)?.message ?? String(e)}`;
    console.error(`ublk-ts: device ${d.cfg.devId}: ${why}; its requests fail with EIO, and it is stopped\n${(e as Error)?.stack ?? ''}`);
    if (d.engine) d.engine.dispatcher.breakTarget(d.engine.requests());
    this.report({ type: 'failed', key: d.cfg.key, error: why });
    this.waker.wake();
  }

  private async arm(d: HostedDevice): Promise<void> {
    const { cfg } = d, { mode } = cfg, nq = cfg.queues.length;
    this.devices.set(cfg.key, d);
    let opening: Promise<Target> | null = null;
    try {
      const cancelled = d.arming.signal;
      const mod = await abortable(loadTarget(cfg.targetUrl), cancelled);
      d.place.charFixed = this.take(this.files, 1, 'devices');
      this.ring.updateFile(d.place.charFixed, cfg.charFd);
      d.udBase = this.take(this.uds, nq, 'queues');
      if (mode.copy === 'zero') d.place.bufBase = this.take(this.buffers, nq * cfg.depth, 'zero-copy tags', cfg.bufBase);
      if (mode.engine === 'batch') d.place.bgidBase = this.take(this.bgids, nq, 'batch queues');
      d.stats = mapStats(cfg.statsFd, true);
      cfg.queues.forEach((wq, i) => {
        const desc = mapDescriptors(cfg.charFd, wq.q, cfg.depth);
        let bufs: TagBuffers | null = null;
        try {
          if (mode.tagBuffers) bufs = new TagBuffers(cfg.depth, cfg.maxIoBytes, wq.bufFd);
        } catch (e) {
          // Not served yet, so depart() would not unmap it: a mapping of
          // /dev/ublkcN left behind keeps the device's DEL_DEV waiting (until
          // the mapping happened to be collected, which an idle thread never does).
          native.munmap(desc.buffer as ArrayBuffer);
          throw e;
        }
        d.served.push({ ...wq, ud: d.udBase + i, desc, bufs });
        d.stats![wq.slot * SLOT_WORDS + C_QUEUE] = wq.q;
      });
      if (cfg.shmem.length) d.shmem = new ShmemViews(cfg.shmem);
      const engine = new ENGINES[mode.engine]({
        ring: this.ring, place: d.place, charFd: cfg.charFd, tally: this.tally, mode, depth: cfg.depth, queues: d.served, stats: d.stats, waker: this.waker, shmem: d.shmem,
      });
      d.engine = engine;
      // An open that never settles (a hung target, a server that never
      // answers) would hold the device, its add and its del for good: the
      // main thread may give up on it (cancel); see closeLate.
      opening = Promise.resolve(mod.open({
        devId: cfg.devId, queueId: cfg.queues[0]!.q, depth: cfg.depth, maxIoBytes: cfg.maxIoBytes,
        options: cfg.options, shared: cfg.shared, io: engine.dispatcher,
      }));
      d.target = await abortable(opening, cancelled);
      engine.dispatcher.attach(d.target);
      for (const q of d.served) this.byUd[q.ud] = d;
      if (mode.engine === 'batch') this.flushers.push(engine);
      engine.arm(this.onCqe);
      if (engine.error) throw new Error(engine.error);
      d.armed = true;
      this.report({ type: 'ready', key: cfg.key });
    } catch (e) {
      const error = (e as Error)?.message ?? String(e);
      if (opening && d.arming.signal.aborted) this.closeLate(opening);
      // Fetches the kernel took stay armed until STOP_DEV (or the ring's
      // end) aborts them: the device leaves once they have.
      if (d.engine?.active) {
        // Reported now, so that the main thread stops the device (STOP_DEV aborts those fetches); it leaves afterwards.
        this.failed.set(d, error);
        this.report({ type: 'failed', key: cfg.key, error });
        if (!d.leaving) this.watchLeaving(d);
      } else {
        await this.departOnce(d, error);
      }
    }
  }

  /**
   * A target whose open was given up (cancel) is closed should it open after
   * all. A pool's thread serves on, so it waits for that in the background
   * (the loop visits the event loop until the open settles, where the
   * target's timers and callbacks run); a device's own thread ends, and the open with it.
   */
  private closeLate(opening: Promise<Target>): void {
    const closed = opening.then((t) => t.close?.()).then(() => {}, () => {});
    if (this.pooled) void this.track(closed);
  }

  /** Why a device that failed to arm failed, reported when it leaves. */
  private readonly failed = new Map<HostedDevice, string>();

  /** `n` places of `table`, from `at` if the main thread chose them. */
  private take(table: SlotRanges, n: number, what: string, at?: number): number {
    if (at !== undefined) {
      if (!table.takeAt(at, n)) throw new Error(`${what} ${at}..${at + n - 1} of this serving thread are not free (${table.available} of ${table.size} free)`);
      return at;
    }
    const first = table.take(n);
    if (first < 0) throw new Error(`this serving thread has no room for ${n} more ${what} (${table.available} of ${table.size} free)`);
    return first;
  }

  /**
   * A device whose queues stopped leaves: its target closed, its memory and
   * places given back. `kept`: the thread was told to quit, and the kernel
   * may still hold the buffer addresses it gave (other threads serve on).
   */
  /** depart(), once per device, in its own context (what its target does while closing is its own). */
  private departOnce(d: HostedDevice, error?: string, kept = false): Promise<void> {
    d.departing ??= this.context ? this.context.run(d, () => this.depart(d, error, kept)) : this.depart(d, error, kept);
    return d.departing;
  }

  private async depart(d: HostedDevice, error?: string, kept = false): Promise<void> {
    let why = error ?? this.failed.get(d) ?? d.engine?.error ?? undefined;
    this.failed.delete(d);
    // A broken target is closed too (its descriptors, sockets, timers), but not waited for long.
    const closing = this.closeTarget(d, d.broken ? BROKEN_CLOSE_MS : CLOSE_MS);
    why ??= (await closing) ?? undefined;
    // The target's own operations still in flight reach it through its engine until they end.
    // (Not after the loop ended, `kept`: nothing reaps their CQEs then, and closing the ring cancels them.)
    const engine = d.engine;
    for (let waited = 0; engine && !kept && engine.dispatcher.ownOps > 0 && waited < OWN_OPS_WAIT_MS && !this.ring.closed; waited += 10) await sleep(10);
    if (engine) {
      const f = this.flushers.indexOf(engine);
      if (f >= 0) this.flushers.splice(f, 1);
      try {
        if (!this.ring.closed) engine.release?.();
      } catch (e) {
        // (what follows must still run: unmapping /dev/ublkcN above all)
        why ??= `releasing its ring resources failed: ${(e as Error)?.message ?? String(e)}`;
      }
      // Own operations still out: the target hears no more of them, and the queue indices wait for them (tick).
      if (engine.dispatcher.ownOps > 0) engine.dispatcher.breakTarget([]);
      engine.dispatcher.forget();
    }
    for (const q of d.served) {
      native.munmap(q.desc.buffer as ArrayBuffer);
      // Buffers shared by a queue's threads (batch mode), left after an error
      // here: the others serve on until STOP_DEV has drained the device, and
      // the kernel may hand one of them a tag whose last address was ours.
      if (kept || (why !== undefined && q.bufs?.shared)) q.bufs?.keep();
      else q.bufs?.free();
    }
    d.shmem?.free();
    if (d.stats) native.munmap(d.stats.buffer as ArrayBuffer);
    if (d.place.charFixed >= 0) {
      if (!this.ring.closed) this.ring.updateFile(d.place.charFixed, -1);
      this.files.release(d.place.charFixed, 1);
    }
    if (engine && engine.dispatcher.ownOps > 0 && !this.ring.closed) this.quarantine.push(d);
    else this.releaseUds(d);
    if (d.place.bufBase >= 0) this.buffers.release(d.place.bufBase, d.cfg.queues.length * d.cfg.depth);
    if (d.place.bgidBase >= 0) this.bgids.release(d.place.bgidBase, d.cfg.queues.length);
    this.devices.delete(d.cfg.key);
    this.report(why === undefined ? { type: 'done', key: d.cfg.key } : { type: 'done', key: d.cfg.key, error: why });
  }

  /** Closes the device's target, waiting at most `ms`: why it failed, or null. */
  private async closeTarget(d: HostedDevice, ms: number): Promise<string | null> {
    const failure = (e: unknown): string => `the target's close failed: ${(e as Error)?.message ?? String(e)}`;
    try {
      const closing = d.target?.close?.();
      if (!closing) return null;
      let failed: string | null = null;
      const closed = Promise.resolve(closing).catch((e: unknown) => { failed = failure(e); });
      if (await settledWithin(closed, ms)) return failed;
      // (a broken target's: its failure is reported already)
      if (d.broken) return null;
      const late = `its target's close() did not finish within ${ms / 1000} s: the device left without it`;
      console.error(`ublk-ts: device ${d.cfg.devId}: ${late}`);
      return late;
    } catch (e) {
      return failure(e);
    }
  }

  /**
   * After the loop ended by quit (the ring is closed next, which cancels
   * whatever is armed): every device still here leaves, its buffers kept mapped.
   */
  async quitAll(): Promise<void> {
    this.leaving.length = 0;
    for (const d of [...this.devices.values()]) await this.departOnce(d, undefined, true);
  }

  /** Devices gone whose target's own operations are still out: their queue indices wait (tick). */
  private readonly quarantine: HostedDevice[] = [];

  private releaseUds(d: HostedDevice): void {
    for (const q of d.served) this.byUd[q.ud] = undefined;
    if (d.udBase >= 0) this.uds.release(d.udBase, d.cfg.queues.length);
  }
}

/** Whether the block layer has requests of device `id` in flight (not known: not idle). */
function blockLayerBusy(id: number): boolean {
  return (blockInFlight(id) ?? 1) > 0;
}
