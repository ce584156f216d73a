// The main thread's side of the serving threads (worker/worker.ts): a
// device's own thread, started with its device and ending with it, or a
// pool's thread, to which devices are attached while others serve (one
// server for many devices). Either way a device sees a QueueWorker per
// thread that serves some of its queues.
import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { native } from '../../native.js';
import { BUNDLED, compiled, packageFile } from '../../package-files.js';
import { EFD_CLOEXEC } from '../../sys.js';
import type { DeviceAttach, PoolMessage, ThreadConfig, WorkerMessage } from '../worker/worker.js';
import { SlotRanges } from '../worker/slot-ranges.js';
import { MAX_BUFFER_SLOTS } from '../mode.js';

export interface QueueWorker {
  ready: Promise<void>;
  /**
   * Resolves when the device has left the thread (or the thread ended), with
   * its error if it failed; on a pool's thread also, with the error, when its
   * target broke or it failed to arm: it leaves once stopped.
   */
  done: Promise<string | undefined>;
  /**
   * A device's own thread: makes it stop serving and close its ring,
   * whatever the kernel does. A pool's thread cannot let go of one device
   * while its fetches are armed (only STOP_DEV aborts them): nothing.
   */
  quit(): void;
  /**
   * A pool's thread, for a STOP_DEV that stalls on requests the target
   * holds: fails them (and everything the target is asked from then on)
   * with EIO, so that the stop can end. A device's own thread: nothing (quit does more).
   */
  failHeld(): void;
  /**
   * Gives up starting the device (its add was cancelled): the thread stops
   * waiting for its target's open, and it leaves (`ready` rejects with `why`,
   * `done` resolves). Ready already: nothing (STOP_DEV ends it).
   */
  cancel(why: string): void;
  /** Whether quit() lets go of the device without STOP_DEV. */
  readonly ownThread: boolean;
}

const ONE = new BigUint64Array([1n]);

/**
 * A serving thread's entry: the worker bundle for code that runs bundled (the
 * CLI, its servers and daemons), whose thread then starts in about half the
 * time; worker.js for the library, so that its threads load the very modules
 * its user's targets import.
 */
const WORKER_ENTRY = BUNDLED ? packageFile('dist', 'ublk-worker.cjs') : compiled('ublk', 'worker', 'worker.js');

/** How long a thread that has finished serving may take to end before what keeps it running is cut short. */
const LEFTOVERS_MS = 1000;

interface Attachment {
  onReady: () => void;
  onFail: (e: Error) => void;
  onDone: (err?: string) => void;
  queues: string;
}

/** Loop options a thread runs with: a device's own, or the pool's for all of its devices. */
export type LoopSettings = Pick<ThreadConfig, 'coalesceUsec' | 'pollUsec'>;

class ServingThread {
  private readonly quitFd = native.eventfd(0, EFD_CLOEXEC);
  private readonly wakeFd: number;
  private readonly worker: Worker;
  private readonly attached = new Map<number, Attachment>();
  private ringFd = -1;
  private ended = false;
  /**
   * A pool's thread: its buffer table's slots as the main thread hands them
   * to zero-copy devices (ThreadPool.reserve), each device's [start, count]
   * held until the thread reports it gone, and the reservations not attached yet.
   */
  readonly bufferSlots = new SlotRanges(MAX_BUFFER_SLOTS);
  private readonly slotsHeld = new Map<number, [number, number]>();
  reserved = 0;
  /** Resolves when the thread has ended, with its error if it failed. */
  readonly exited: Promise<string | undefined>;
  private onExit!: (err?: string) => void;

  constructor(loop: LoopSettings, device: DeviceAttach | null) {
    this.wakeFd = device ? -1 : native.eventfd(0, EFD_CLOEXEC);
    const cfg: ThreadConfig = device ? { ...loop, quitFd: this.quitFd, device } : { ...loop, quitFd: this.quitFd, wakeFd: this.wakeFd };
    this.exited = new Promise((r) => { this.onExit = r; });
    this.worker = new Worker(WORKER_ENTRY, { workerData: cfg });
    this.worker.on('message', (m: WorkerMessage) => this.onMessage(m));
    // A thread that died (an uncaught exception, also from a target's timer or
    // callback) never ran its clean-up: its ring stays open and the kernel keeps
    // waiting for the requests it had fetched. Closing the ring makes the driver
    // cancel its commands and fail those requests, so nothing hangs.
    this.worker.on('error', (e) => this.end(e.message, true));
    this.worker.on('exit', (code) => this.end(code ? `exit code ${code}` : undefined, code !== 0));
  }

  get devices(): number { return this.attached.size; }
  /** Devices here and on their way here (reserved): what the pool balances. */
  get load(): number { return this.attached.size + this.reserved; }
  get alive(): boolean { return !this.ended; }

  /**
   * Serves `device` (its key must be new to this thread); a device's own
   * thread was given it at start. `slots`: how many buffer-table slots from
   * `device.bufBase` were reserved for it, given back when it has left.
   */
  attach(device: DeviceAttach, viaMessage: boolean, slots = 0): QueueWorker {
    if (slots > 0) this.slotsHeld.set(device.key, [device.bufBase!, slots]);
    let a!: Attachment;
    const ready = new Promise<void>((onReady, onFail) => { a = { onReady, onFail, onDone: () => {}, queues: device.queues.map((q) => q.q).join(',') }; });
    const done = new Promise<string | undefined>((r) => { a.onDone = r; });
    ready.catch(() => {}); // observed by whoever awaits it
    this.attached.set(device.key, a);
    if (this.ended) this.settle(device.key, 'the serving thread has ended');
    else if (viaMessage) this.post({ type: 'attach', device });
    const own = !viaMessage;
    return {
      ready, done, ownThread: own,
      quit: () => { if (own) this.quit(); },
      failHeld: () => { if (!own) this.post({ type: 'break', key: device.key }); },
      cancel: (why) => this.post({ type: 'cancel', key: device.key, why }),
    };
  }

  /**
   * A message to the thread. A pool's thread blocked in io_uring_enter learns
   * of it from its wake eventfd; a device's own thread reads messages only while it arms.
   */
  private post(m: PoolMessage): void {
    if (this.ended) return;
    this.worker.postMessage(m);
    if (this.wakeFd >= 0) fs.writeSync(this.wakeFd, ONE);
  }

  /** Makes the thread stop serving every device and close its ring. */
  quit(): void {
    if (!this.ended) fs.writeSync(this.quitFd, ONE);
  }

  private onMessage(m: WorkerMessage): void {
    if (m.type === 'started') this.ringFd = m.ringFd;
    else if (m.type === 'ready') this.attached.get(m.key)?.onReady();
    // A broken target: the device is done with as if it had left (it will, once stopped), and stopped.
    else if (m.type === 'done' || m.type === 'failed') {
      this.settle(m.key, m.error);
      // Only a device that has left gives its slots back: one whose target broke still holds them until stopped.
      const held = m.type === 'done' ? this.slotsHeld.get(m.key) : undefined;
      if (held) {
        this.slotsHeld.delete(m.key);
        this.bufferSlots.release(held[0], held[1]);
      }
    }
    else {
      this.ringFd = -1; // closed by the thread itself
      this.end(m.error, false);
      // Done serving; what still runs there once it has had a moment to
      // end (its last output to flush) is a target's leftovers (a timer, an
      // open that never settled), which would keep the thread, and the process, alive.
      const linger = setTimeout(() => void this.worker.terminate(), LEFTOVERS_MS).unref();
      this.worker.once('exit', () => clearTimeout(linger));
    }
  }

  private settle(key: number, err?: string): void {
    const a = this.attached.get(key);
    if (!a) return;
    this.attached.delete(key);
    a.onFail(new Error(`worker for queue(s) ${a.queues}: ${err ?? 'left before it was ready'}`));
    a.onDone(err);
  }

  private end(err: string | undefined, died: boolean): void {
    if (this.ended) return;
    this.ended = true;
    if (died && this.ringFd >= 0) native.close(this.ringFd);
    this.ringFd = -1;
    native.close(this.quitFd);
    if (this.wakeFd >= 0) native.close(this.wakeFd);
    for (const key of [...this.attached.keys()]) this.settle(key, err ?? (died ? 'the serving thread died' : undefined));
    this.onExit(err);
  }
}

let nextKey = 1;

/** A thread of its own for `device`'s queues, ending when they stop. */
export function ownThread(loop: LoopSettings, device: Omit<DeviceAttach, 'key'>): QueueWorker {
  const d: DeviceAttach = { ...device, key: nextKey++ };
  return new ServingThread(loop, d).attach(d, false);
}

/** Room for a zero-copy device's tags in a pool thread's buffer table, taken before ADD_DEV (ThreadPool.reserve). */
export interface Reservation {
  readonly thread: ServingThread;
  readonly bufBase: number;
  readonly slots: number;
}

/**
 * A fixed set of serving threads shared by any number of devices, each
 * device's queues on one of them (the one with the fewest devices, counting
 * those reserved for). A thread
 * that dies takes its devices with it (each fails as a device whose serving
 * thread failed does) and is replaced for the devices that come next.
 *
 * Zero copy registers each request's pages at a slot of the serving thread's
 * buffer table (AUTO_BUF_REG), one slot per tag: a device takes queues x
 * depth slots of a table of MAX_BUFFER_SLOTS, so a thread hosts 128 devices
 * of depth 128 in zero copy, and any number more in kernel copy. Whether a
 * device gets zero copy is decided before ADD_DEV (its flags say so), so the
 * slots are reserved then, on the least loaded thread that has room.
 */
export class ThreadPool {
  private readonly threads: ServingThread[];

  constructor(readonly size: number, private readonly loop: LoopSettings) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`a thread pool needs at least one thread, got ${size}`);
    this.threads = Array.from({ length: size }, () => new ServingThread(loop, null));
  }

  /** Devices per thread, in thread order. */
  get load(): number[] { return this.threads.map((t) => t.devices); }

  /** `slots` contiguous buffer-table slots on the least loaded thread that has them; null: none has. */
  reserve(slots: number): Reservation | null {
    this.replaceDead();
    for (const thread of [...this.threads].sort((a, b) => a.load - b.load)) {
      const bufBase = thread.bufferSlots.take(slots);
      if (bufBase < 0) continue;
      thread.reserved++;
      return { thread, bufBase, slots };
    }
    return null;
  }

  /** Gives back a reservation that attach() will not use. */
  cancel(r: Reservation): void {
    r.thread.reserved--;
    r.thread.bufferSlots.release(r.bufBase, r.slots);
  }

  /** The reservation cut down to its first `slots` (the kernel gave the device fewer queues than asked for). */
  shrink(r: Reservation, slots: number): Reservation {
    if (slots > r.slots) throw new Error(`the device needs ${slots} buffer-table slots, more than the ${r.slots} reserved for it`);
    if (slots === r.slots) return r;
    r.thread.bufferSlots.release(r.bufBase + slots, r.slots - slots);
    return { ...r, slots };
  }

  /** Serves `device` on its reservation's thread, or else the least loaded. */
  attach(device: Omit<DeviceAttach, 'key'>, r?: Reservation): QueueWorker {
    if (r && !r.thread.alive) {
      // The thread died since (its devices fail): the same room on another, if
      // one has it; if none, the device fails as one on a dead thread does.
      const again = this.reserve(r.slots);
      if (again) {
        this.cancel(r);
        r = again;
      }
    }
    if (r) {
      r.thread.reserved--;
      return r.thread.attach({ ...device, key: nextKey++, bufBase: r.bufBase }, true, r.slots);
    }
    this.replaceDead();
    const t = this.threads.reduce((a, b) => (b.load < a.load ? b : a));
    return t.attach({ ...device, key: nextKey++ }, true);
  }

  private replaceDead(): void {
    for (let i = 0; i < this.threads.length; i++) if (!this.threads[i]!.alive) this.threads[i] = new ServingThread(this.loop, null);
  }

  /** Ends every thread (their devices should be gone: what is still served is let go of as a quit does). */
  async close(): Promise<void> {
    for (const t of this.threads) t.quit();
    await Promise.all(this.threads.map((t) => t.exited));
  }
}
