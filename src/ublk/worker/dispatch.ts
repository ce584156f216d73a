// A request's life inside a worker, between the engine's fetch and its commit:
//
//   [copy in]  user copy, WRITE: pread /dev/ublkcN → tag buffer
//              (then the request's metadata, if any: integrity.ts)
//   [register] zero copy, `ring` target, when the pages are not in the buffer
//              table yet (no AUTO_BUF_REG, or it failed): REGISTER_IO_BUF
//   target     its method's result: a number, a promise, or PENDING and later
//              `complete()` (after the target's own io_uring operations)
//   [copy out] user copy, READ: pwrite tag buffer → /dev/ublkcN
//              (then the metadata)
//   [unregister] after an explicit registration: UNREGISTER_IO_BUF
//   commit     handed to the engine (COMMIT_AND_FETCH_REQ or a COMMIT_IO_CMDS element)
//
// Registering is an io_uring operation on the worker ring; its CQE comes back
// as KIND_STAGE. The user copies are plain pread/pwrite system calls on the
// serving thread, as kublk makes them: /dev/ublkcN lacks FMODE_NOWAIT, so
// io_uring would hand each to an io-wq thread, a wake-up and a trip across
// CPUs per request (user copy at 4k QD 1 ran at 0.44x kernel copy that way).
// They never wait (the request's pages are in memory) and copy no more than
// kernel copy does on the same thread. Targets thus find the data in the tag
// buffer in user copy as in kernel copy. The dispatcher is also the
// target's `ctx.io`.
import { EIO, EOPNOTSUPP } from '../../sys.js';
import type { Ring } from '../../uring/ring.js';
import { addSqeFlags, setUserData, sqeFlags } from '../../uring/prep.js';
import { IORING_CQE_F_MORE, IOSQE_CQE_SKIP_SUCCESS, IOSQE_IO_LINK } from '../../uring/constants.js';
import { PENDING, type CopyMode, type IoResult, type Target, type TargetIo } from '../target.js';
import type { ServingMode } from '../mode.js';
import type { CommitSink, LoopTally, RingPlace, ServedQueue } from './engine.js';
import { C_ERRORS, C_INFLIGHT, C_OTHER, C_READ_BYTES, C_READS, C_SHMEM, C_WRITE_BYTES, C_WRITES, SLOT_WORDS } from '../stats.js';
import type { PromiseSettlers, UblkRequest } from './request.js';
import type { Waker } from './waker.js';
import type { ShmemViews } from './shmem-views.js';
import {
  UBLK_IO_F_INTEGRITY, UBLK_IO_OP_DISCARD, UBLK_IO_OP_FLUSH, UBLK_IO_OP_READ, UBLK_IO_OP_REPORT_ZONES, UBLK_IO_OP_WRITE,
  UBLK_IO_OP_WRITE_ZEROES, UBLK_IO_OP_ZONE_APPEND, UBLK_IO_OP_ZONE_CLOSE, UBLK_IO_OP_ZONE_FINISH, UBLK_IO_OP_ZONE_OPEN,
  UBLK_IO_OP_ZONE_RESET, UBLK_IO_OP_ZONE_RESET_ALL, UBLK_U_IO_REGISTER_IO_BUF, UBLK_U_IO_UNREGISTER_IO_BUF,
} from '../abi/uapi.js';
import { copyIntegrity, RequestIntegrity } from './integrity.js';
import { CHAR_DEV_FIXED, KIND_OWN, KIND_STAGE, KIND_TARGET, nextSqe, prepIoCmd, reserveSqes, userDataLo } from './worker-ring.js';

const OP_NAMES: Record<number, string> = {
  [UBLK_IO_OP_READ]: 'READ', [UBLK_IO_OP_WRITE]: 'WRITE', [UBLK_IO_OP_FLUSH]: 'FLUSH', [UBLK_IO_OP_DISCARD]: 'DISCARD',
  [UBLK_IO_OP_WRITE_ZEROES]: 'WRITE_ZEROES', [UBLK_IO_OP_ZONE_APPEND]: 'ZONE_APPEND', [UBLK_IO_OP_REPORT_ZONES]: 'REPORT_ZONES',
};

/** Requests with data from the kernel (user copy: copied in first), and with a reply for it (copied out after). */
const dataIn = (op: number): boolean => op === UBLK_IO_OP_WRITE || op === UBLK_IO_OP_ZONE_APPEND;
const dataOut = (op: number): boolean => op === UBLK_IO_OP_READ || op === UBLK_IO_OP_REPORT_ZONES;

/** The upper user_data half of a KIND_STAGE CQE (exported for the host tests, which play those CQEs). */
export const STEP_REGISTER = 2, STEP_UNREGISTER = 3;

export class Dispatcher implements TargetIo {
  /** Requests whose promise has not settled yet. */
  asyncInFlight = 0;
  /** The serving loop's view, which other devices' dispatchers on this thread add to too. */
  readonly tally: LoopTally;
  /** Requests dispatched so far. */
  dispatched = 0;
  /** Requests dispatched and not yet handed to the commit path (in tally.owned too, until forget()). */
  owned = 0;
  /** The target's request-less operations in flight (ownSqe). */
  ownOps = 0;
  readonly copy: CopyMode;
  readonly charDevFixed: number;
  readonly charFd: number;
  private target!: Target;
  /** User copy: the request's data moves between /dev/ublkcN (this fd) and the tag buffer by pread/pwrite; else -1. */
  private readonly userCopyFd: number;
  private readonly mayRegister: boolean;
  private readonly registerAll: boolean;
  /** breakTarget() was called. */
  private broken = false;
  /** Kinds of target errors logged so far (each is logged once). */
  private readonly warned = new Set<string>();
  private readonly logicalBlockSize: number;
  /** UBLK_F_INTEGRITY: sizes flagged requests' metadata. */
  private readonly integrity: RequestIntegrity | null;

  /** The user_data queue field of the target's request-less operations (KIND_OWN): its first queue's, so the engine finds this device. */
  private readonly ownUd: number;
  /** Per queue id: where its slot starts in `stats`. */
  private readonly statBase: number[] = [];
  private readonly stats: Float64Array;
  /** UBLK_F_SHMEM_ZC: this thread's mappings of the registered regions. */
  private readonly shmem: ShmemViews | null;

  constructor(readonly ring: Ring, mode: ServingMode, private readonly sink: CommitSink, private readonly waker: Waker,
    counters: { stats: Float64Array; queues: ReadonlyArray<Pick<ServedQueue, 'q' | 'slot'> & { ud?: number }>; shmem?: ShmemViews | null;
      place?: Pick<RingPlace, 'charFixed'>; charFd?: number; tally?: LoopTally }) {
    this.tally = counters.tally ?? { asyncInFlight: 0, dispatched: 0, owned: 0 };
    this.charDevFixed = counters.place?.charFixed ?? CHAR_DEV_FIXED;
    this.charFd = counters.charFd ?? -1;
    this.ownUd = counters.queues[0]?.ud ?? 0;
    this.stats = counters.stats;
    this.shmem = counters.shmem ?? null;
    for (const queue of counters.queues) this.statBase[queue.q] = queue.slot * SLOT_WORDS;
    this.copy = mode.copy;
    this.userCopyFd = mode.copy === 'user' ? counters.charFd ?? -1 : -1;
    if (mode.copy === 'user' && this.userCopyFd < 0) throw new Error('user copy needs the device\'s /dev/ublkcN (charFd)');
    this.mayRegister = mode.mayRegister;
    this.registerAll = mode.registerAll;
    this.logicalBlockSize = mode.logicalBlockSize;
    this.integrity = mode.metadataSize ? new RequestIntegrity(mode.metadataSize, mode.logicalBlockSize) : null;
  }

  /** The target this dispatcher serves, opened with this dispatcher as its `io`; once, before the engine arms. */
  attach(target: Target): void {
    this.target = target;
  }

  /**
   * The target is broken (an exception escaped it on a thread other devices
   * share, or its device's stop stalled): it is called no more, and what it
   * calls (complete, hold) is ignored. Every request it holds with no ring
   * operation in flight fails now, one with operations fails when the last
   * completes (a backing operation that never does still holds it), and
   * every new request fails at once, all with EIO.
   */
  breakTarget(requests: readonly UblkRequest[]): void {
    if (this.broken) return;
    this.broken = true;
    for (const req of requests) {
      // Its promises, should they ever settle, are ignored (settle), and the
      // serving loop no longer waits for them (nor does the device's end).
      this.addAsync(-req.promises);
      req.promises = 0;
      req.awaitsPromise = false;
      if (req.owned && req.ringOps === 0 && !req.staged) this.finish(req, -EIO);
    }
  }

  /** The device leaves the thread: what it still owns no longer counts in the loop's tally. */
  forget(): void {
    this.tally.owned -= this.owned;
    this.owned = 0;
  }

  private addAsync(n: number): void {
    this.asyncInFlight += n;
    this.tally.asyncInFlight += n;
  }

  // ---- TargetIo ----

  sqe(req: UblkRequest, sub: number): number {
    const s = nextSqe(this.ring);
    setUserData(this.ring, s, userDataLo(KIND_TARGET, req.ud, req.tag), sub);
    req.ringOps++;
    // Asked for from outside a CQE (a timer, a socket): the serving loop may be
    // waiting on the event loop, and must come round to submit it.
    if (req.external) this.waker.wake();
    return s;
  }

  reserve(n: number): void {
    reserveSqes(this.ring, n);
  }

  ownSqe(sub: number): number {
    const s = nextSqe(this.ring);
    setUserData(this.ring, s, userDataLo(KIND_OWN, this.ownUd, 0), sub);
    this.ownOps++;
    // Asked for from outside a CQE (a socket connected again): the loop may be waiting on the event loop.
    if (this.asyncInFlight > 0) this.waker.wake();
    return s;
  }

  background(work: Promise<unknown>): void {
    this.tally.asyncInFlight++;
    // (A rejection still reaches the process as an unhandled one, as before the loop knew of it.)
    void work.finally(() => {
      this.tally.asyncInFlight--;
      this.waker.wake();
    });
  }

  hold(req: UblkRequest): void {
    if (this.broken) return;
    if (req.owned && !req.external) {
      req.external = true;
      this.addAsync(1);
    }
  }

  complete(req: UblkRequest, result: number): void {
    // A broken target's requests were failed for it (breakTarget): the tag may be another request's by now.
    if (this.broken) return;
    // Completed from outside a CQE (a timer, a socket): the serving loop may be waiting on the event loop.
    const external = req.external;
    if (external) {
      req.external = false;
      this.addAsync(-1);
    }
    this.finish(req, this.check(req, result));
    if (external) this.waker.wake();
  }

  linkCommit(req: UblkRequest, s: number, result: number): boolean {
    // A step after the target (copy out, unregister) must come before the commit.
    const commitNext = this.sink.commitNext, ring = this.ring;
    if (!commitNext || (this.userCopyFd >= 0 && dataOut(req.op)) || req.registered || ring.sqSpace() < 1) return false;
    // IOSQE_CQE_SKIP_SUCCESS on every SQE of the chain: a chain that succeeds
    // posts only the commit's CQE (the tag's next request), so the request
    // costs no wake-up and no JavaScript turn of its own. One that fails posts
    // the failed SQE's CQE and, the chain not being IOSQE_IO_HARDLINK, none
    // for the rest, the cancelled commit included (io_uring_enter(2)).
    let chain = 1;
    for (let p = ring.sqeBefore(s); p >= 0 && sqeFlags(ring, p) & IOSQE_IO_LINK; p = ring.sqeBefore(p)) chain++;
    // Any other operation of the request still to post a CQE would be taken for the chain's failure.
    if (req.ringOps !== chain) return false;
    addSqeFlags(ring, s, IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS);
    for (let p = ring.sqeBefore(s); p >= 0 && sqeFlags(ring, p) & IOSQE_IO_LINK; p = ring.sqeBefore(p)) addSqeFlags(ring, p, IOSQE_CQE_SKIP_SUCCESS);
    commitNext(req, result);
    // Done as far as this thread knows: nothing more comes for it unless the chain fails (onCqe).
    req.ringOps = 0;
    req.linkedResult = result;
    req.owned = false;
    this.count(req, result);
    return true;
  }

  // ---- engine side ----

  dispatch(req: UblkRequest): void {
    this.dispatched++;
    this.tally.dispatched++;
    req.owned = true;
    req.deferred = NaN;
    req.linkedResult = NaN; // a linked chain before this request succeeded (its commit fetched this one)
    req.awaitsPromise = false;
    const op = req.op, st = this.stats, b = this.statBase[req.queue]!;
    st[b + C_INFLIGHT]!++;
    this.owned++;
    this.tally.owned++;
    if (op === UBLK_IO_OP_READ) {
      st[b + C_READS]!++;
      st[b + C_READ_BYTES]! += req.length;
    } else if (op === UBLK_IO_OP_WRITE) {
      st[b + C_WRITES]!++;
      st[b + C_WRITE_BYTES]! += req.length;
    } else {
      st[b + C_OTHER]!++;
    }
    if (req.shmemIndex >= 0) {
      st[b + C_SHMEM]!++;
      if (!this.shmem?.place(req)) {
        this.failed(new Error(`queue ${req.queue} tag ${req.tag}: the kernel named shared memory buffer ${req.shmemIndex} ` +
          `at ${req.shmemOffset} for ${req.length} bytes, which this server did not register as such`));
        return this.done(req, -EIO);
      }
    }
    if (dataIn(op) || dataOut(op)) {
      if (this.integrity !== null && req.flags & UBLK_IO_F_INTEGRITY) this.integrity.load(req);
      if (this.userCopyFd >= 0 && dataIn(op)) {
        const r = this.copyIn(req);
        if (r < 0) return this.done(req, r);
      }
      if (this.mayRegister && (this.registerAll || req.needsRegistration)) return this.step(req, STEP_REGISTER);
    }
    this.run(req);
  }

  /** A CQE of kind KIND_OWN (a multishot operation's last one has no IORING_CQE_F_MORE). */
  onOwnCqe(hi: number, res: number, flags: number): void {
    if (!(flags & IORING_CQE_F_MORE)) this.ownOps--;
    if (this.broken) return;
    try {
      this.target.onOwnCqe!(res, flags, hi);
    } catch (e) {
      this.failed(e);
    }
  }

  /** A CQE of kind KIND_TARGET or KIND_STAGE for `req`; `hi` is the upper user_data half. */
  onCqe(req: UblkRequest, kind: number, hi: number, res: number, flags: number): void {
    if (kind === KIND_TARGET) {
      if (!req.owned && req.linkedResult === req.linkedResult) this.linkFailed(req);
      req.ringOps--;
      if (req.deferred === req.deferred) { // completed already: not the target's any more
        if (req.ringOps === 0) this.finish(req, req.deferred);
        return;
      }
      if (this.broken) {
        if (req.owned && req.ringOps === 0) this.finish(req, -EIO);
        return;
      }
      try {
        this.target.onCqe!(req, res, flags, hi);
      } catch (e) {
        if (req.owned) this.finish(req, this.failed(e));
      }
      this.awaitElsewhere(req);
      return;
    }
    req.staged = false;
    const fail = res < 0 ? res : -EIO;
    switch (hi) {
      case STEP_REGISTER:
        if (res === 0) {
          req.registered = true;
          this.run(req);
        } else {
          this.done(req, fail);
        }
        break;
      case STEP_UNREGISTER:
        req.registered = false;
        if (res < 0) this.failed(new Error(`UNREGISTER_IO_BUF of queue ${req.queue} tag ${req.tag} failed with ${res}`));
        this.done(req, res < 0 ? -EIO : req.result);
        break;
    }
  }

  private run(req: UblkRequest): void {
    if (this.broken) return this.finish(req, -EIO);
    const t = this.target;
    let r: IoResult;
    try {
      switch (req.op) {
        case UBLK_IO_OP_READ: r = t.read(req); break;
        case UBLK_IO_OP_WRITE: r = t.write(req); break;
        case UBLK_IO_OP_FLUSH: r = t.flush ? t.flush(req) : -EOPNOTSUPP; break;
        case UBLK_IO_OP_DISCARD: r = t.discard ? t.discard(req) : -EOPNOTSUPP; break;
        case UBLK_IO_OP_WRITE_ZEROES: r = t.writeZeroes ? t.writeZeroes(req) : -EOPNOTSUPP; break;
        case UBLK_IO_OP_ZONE_APPEND: r = t.zoneAppend ? t.zoneAppend(req) : -EOPNOTSUPP; break;
        case UBLK_IO_OP_REPORT_ZONES: r = t.reportZones ? t.reportZones(req) : -EOPNOTSUPP; break;
        case UBLK_IO_OP_ZONE_OPEN: case UBLK_IO_OP_ZONE_CLOSE: case UBLK_IO_OP_ZONE_FINISH: case UBLK_IO_OP_ZONE_RESET:
        case UBLK_IO_OP_ZONE_RESET_ALL: r = t.zoneManage ? t.zoneManage(req) : -EOPNOTSUPP; break;
        default: r = -EOPNOTSUPP;
      }
    } catch (e) {
      r = this.failed(e);
    }
    if (typeof r === 'number') {
      this.finish(req, this.check(req, r));
    } else if (r === PENDING) {
      this.awaitElsewhere(req);
    } else if (r !== null && typeof r === 'object' && typeof (r as Promise<number>).then === 'function') {
      this.addAsync(1);
      req.promises++;
      req.awaitsPromise = true;
      const s = (req.settlers ??= this.settlersFor(req));
      r.then(s.fulfilled, s.rejected);
    } else {
      this.finish(req, this.check(req, r)); // not a result at all (a forgotten `return`): the target's bug
    }
  }

  /**
   * A CQE from a chain whose commit was linked (linkCommit): the chain failed,
   * the kernel cancelled the commit, and the request is the target's again,
   * to commit the error (or retry).
   */
  private linkFailed(req: UblkRequest): void {
    req.linkedResult = NaN;
    req.owned = true;
    req.ringOps++; // this CQE, discounted when the chain was linked
    this.stats[this.statBase[req.queue]! + C_INFLIGHT]!++;
    this.owned++;
    this.tally.owned++;
  }

  /**
   * A request the target still owns with none of its ring operations in
   * flight completes from elsewhere (a timer, a socket, a MessagePort): it
   * counts as async, so the serving loop runs the event loop instead of
   * blocking in io_uring_enter, where no timer could fire.
   */
  private awaitElsewhere(req: UblkRequest): void {
    if (req.owned && req.ringOps === 0 && !req.staged && this.ownOps === 0 && !req.external) {
      req.external = true;
      this.addAsync(1);
    }
  }

  private settlersFor(req: UblkRequest): PromiseSettlers {
    return {
      fulfilled: (value: unknown) => this.settle(req, value, false),
      rejected: (error: unknown) => this.settle(req, error, true),
    };
  }

  /**
   * A target's promise settled. The handlers are the tag's, not the
   * request's: a promise of an earlier request on the tag (which the target
   * completed some other way, its bug) is told apart by the request not
   * waiting for one; with two of the tag's promises pending, which is whose
   * cannot be told, and the current request fails rather than take a stale result.
   */
  private settle(req: UblkRequest, value: unknown, rejected: boolean): void {
    if (this.broken) return; // counted off by breakTarget
    this.addAsync(-1);
    req.promises--;
    if (!req.owned || !req.awaitsPromise) {
      this.failed(new Error(`queue ${req.queue} tag ${req.tag}: a promise settled after its request was completed (ignored)`));
      return;
    }
    req.awaitsPromise = false;
    const result = req.promises > 0
      ? this.failed(new Error(`queue ${req.queue} tag ${req.tag}: a promise settled while one of an earlier request on the tag is pending`))
      : rejected ? this.failed(value) : this.check(req, value);
    this.finish(req, result);
    this.waker.wake();
  }

  /**
   * The target's result: copy out or unregister first where needed, then
   * commit. Not while ring operations of the request are in flight (a target
   * that threw, returned, or completed after queuing them): the tag's next
   * request would take their CQEs for its own. It waits for the last one.
   */
  private finish(req: UblkRequest, result: number): void {
    if (!req.owned || (req.deferred === req.deferred && req.ringOps > 0)) {
      this.failed(new Error(`queue ${req.queue} tag ${req.tag} completed twice`));
      return;
    }
    if (req.ringOps > 0) {
      req.deferred = result;
      return;
    }
    req.deferred = NaN;
    req.result = result;
    if (this.userCopyFd >= 0 && dataOut(req.op) && result > 0) this.done(req, this.copyOut(req, result));
    else if (req.registered) this.step(req, STEP_UNREGISTER);
    else this.done(req, result);
  }

  /** User copy: a WRITE's (ZONE_APPEND's) data, then its metadata, from the kernel into the tag's buffers; 0 or -errno. */
  private copyIn(req: UblkRequest): number {
    const n = req.readPages(this.userCopyFd, req.tagBuffer!, 0, req.length);
    if (n !== req.length) return n < 0 ? n : -EIO;
    return req.integrity ? copyIntegrity(this.userCopyFd, req, true, req.integrity) : 0;
  }

  /** User copy: the first `result` bytes of a READ's (REPORT_ZONES') reply, then their metadata, to the kernel; `result` or -errno. */
  private copyOut(req: UblkRequest, result: number): number {
    const n = req.writePages(this.userCopyFd, req.tagBuffer!, 0, result);
    if (n !== result) return n < 0 ? n : -EIO;
    const r = req.integrity ? copyIntegrity(this.userCopyFd, req, false, this.integrity!.bytesFor(result)) : 0;
    return r < 0 ? r : result;
  }

  private done(req: UblkRequest, result: number): void {
    req.owned = false;
    // Committed, so no longer awaited from elsewhere: were it still counted,
    // the serving loop would wait on the event loop for good.
    if (req.external) {
      req.external = false;
      this.addAsync(-1);
    }
    this.count(req, result);
    this.sink.commit(req, result);
  }

  private count(req: UblkRequest, result: number): void {
    const b = this.statBase[req.queue]!;
    this.stats[b + C_INFLIGHT]!--;
    if (this.owned > 0) {
      this.owned--;
      this.tally.owned--;
    }
    if (result < 0) this.stats[b + C_ERRORS]!++;
  }

  private step(req: UblkRequest, step: number): void {
    const ring = this.ring, s = nextSqe(ring);
    switch (step) {
      case STEP_REGISTER:
        prepIoCmd(ring, s, req.charFixed, UBLK_U_IO_REGISTER_IO_BUF, req.queue, req.tag, 0, req.bufIndex);
        break;
      case STEP_UNREGISTER:
        prepIoCmd(ring, s, req.charFixed, UBLK_U_IO_UNREGISTER_IO_BUF, req.queue, req.tag, 0, req.bufIndex);
        break;
    }
    setUserData(ring, s, userDataLo(KIND_STAGE, req.ud, req.tag), step);
    req.staged = true;
  }

  /**
   * A result must be a negative errno, or: for READ/WRITE/ZONE_APPEND, a byte
   * count with 0 < n <= length and a multiple of the logical block (the kernel
   * requeues the rest of a short one: 0 would loop forever, a misaligned count
   * would split a block); for REPORT_ZONES, the reply's length; for other
   * requests, 0. Anything else is the target's bug.
   */
  private check(req: UblkRequest, v: unknown): number {
    if (typeof v === 'number' && Number.isInteger(v)) {
      if (v < 0 && v >= -4095) return v;
      const op = req.op;
      if (op === UBLK_IO_OP_REPORT_ZONES ? v === req.length
        : dataIn(op) || op === UBLK_IO_OP_READ ? v > 0 && v <= req.length && v % this.logicalBlockSize === 0 : v === 0) return v;
    }
    const shown = typeof v === 'string' ? `'${v}'` : String(v);
    return this.failed(new TypeError(`target returned ${shown} for a ${req.length}-byte ${OP_NAMES[req.op] ?? `op ${req.op}`} ` +
      `(a READ/WRITE/ZONE_APPEND completes 1 to ${req.length} bytes in whole ${this.logicalBlockSize}-byte blocks, REPORT_ZONES ${req.length}, ` +
      'other requests 0, a failure -errno)'));
  }

  /** A target's bug: logged once (the first of its kind), the request fails with EIO. */
  private failed(e: unknown): number {
    const kind = (e as Error)?.message?.replace(/\d+/g, 'N') ?? String(e);
    if (!this.warned.has(kind) && this.warned.size < 16) {
      this.warned.add(kind);
      console.error(`ublk-ts: target error, reported as EIO (further ones like it not shown): ${(e as Error)?.stack ?? e}`);
    }
    return -EIO;
  }
}
