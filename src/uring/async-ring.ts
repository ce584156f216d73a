// Promise-per-SQE convenience for cold paths (e.g. the ublk control plane):
// each submit() gets a user_data id and resolves with its CQE. The event loop
// is kept alive only while something is in flight.
import { constants } from 'node:os';
import { ErrnoError } from '../native.js';
import { Ring, type RingOptions } from './ring.js';
import { RingWakeup } from './wakeup.js';
import { setUserData } from './prep.js';
import { IORING_CQE_F_MORE } from './constants.js';

export interface CqeResult {
  res: number;
  flags: number;
}

interface Pending {
  resolve: (r: CqeResult) => void;
  reject: (e: Error) => void;
}

export class AsyncRing {
  readonly ring: Ring;
  private readonly wakeup: RingWakeup;
  private readonly inflight = new Map<number, Pending>();
  private nextId = 0;
  private closed = false;

  static create(opts: RingOptions): AsyncRing {
    const ring = Ring.create(opts);
    try {
      return new AsyncRing(ring);
    } catch (e) {
      ring.close();
      throw e;
    }
  }

  private constructor(ring: Ring) {
    this.ring = ring;
    this.wakeup = new RingWakeup(ring);
    this.wakeup.onReadable(() => this.poll());
  }

  /** Requests submitted and not yet completed. */
  get inFlight(): number {
    return this.inflight.size;
  }

  /**
   * Gets an SQE, lets `prep` fill it (user_data is then overwritten), submits
   * it and resolves with its CQE. A negative `res` resolves too: it is the
   * operation's result, not a failure of the ring. For multishot requests only
   * the first CQE is delivered.
   */
  submit(prep: (ring: Ring, s: number) => void): Promise<CqeResult> {
    if (this.closed) return Promise.reject(new ErrnoError(-constants.errno.EBADF, 'AsyncRing.submit after close'));
    const ring = this.ring;
    let s = ring.getSqe();
    if (s < 0) {
      ring.submit();
      s = ring.getSqe();
      if (s < 0) return Promise.reject(new ErrnoError(-constants.errno.EBUSY, 'AsyncRing: submission queue full'));
    }
    try {
      prep(ring, s);
    } catch (e) {
      // The slot is already handed out: leave a NOP (opcode 0) whose CQE,
      // with user_data 0, matches nothing.
      ring.sqeU8.fill(0, s, s + ring.sqeSize);
      return Promise.reject(e);
    }
    const id = this.allocId();
    setUserData(ring, s, id, 0);
    const done = new Promise<CqeResult>((resolve, reject) => this.inflight.set(id, { resolve, reject }));
    this.wakeup.start();
    this.poll();
    return done;
  }

  /** Rejects whatever is in flight and closes the ring (the kernel cancels those requests). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.failAll(new Error('AsyncRing closed'));
    this.wakeup.close();
    this.ring.close();
  }

  private readonly onCqe = (lo: number, _hi: number, res: number, flags: number): void => {
    const p = this.inflight.get(lo);
    if (p === undefined) return;
    if (!(flags & IORING_CQE_F_MORE)) this.inflight.delete(lo);
    p.resolve({ res, flags });
  };

  // Submits anything left over (and, on DEFER_TASKRUN rings, runs the task
  // work that posts CQEs), then reaps.
  private poll(): void {
    try {
      this.ring.submit();
      this.ring.reap(this.onCqe);
    } catch (e) {
      this.failAll(e as Error);
    }
    if (this.inflight.size === 0) this.wakeup.stop();
  }

  private failAll(e: Error): void {
    const pending = [...this.inflight.values()];
    this.inflight.clear();
    for (const p of pending) p.reject(e);
  }

  private allocId(): number {
    do this.nextId = (this.nextId + 1) >>> 0;
    while (this.nextId === 0 || this.inflight.has(this.nextId));
    return this.nextId;
  }
}
