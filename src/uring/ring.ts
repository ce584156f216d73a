// One io_uring instance: submission and completion (cf. liburing queue.c)
// and resource registration (register.c); setup.ts creates and maps it. Hot
// paths — getSqe, submit, reap — allocate nothing and never throw for
// ordinary results.
import { constants } from 'node:os';
import { native, check, ErrnoError } from '../native.js';
import { IOVEC, LAYOUTS } from './layout.js';
import { setupRing, type RingOptions, type RingSetup } from './setup.js';
import {
  IORING_CQ_EVENTFD_DISABLED, IORING_ENTER_EXT_ARG, IORING_ENTER_GETEVENTS, IORING_FEAT_MIN_TIMEOUT, IORING_REGISTER_BUFFERS, IORING_REGISTER_BUFFERS2, IORING_REGISTER_EVENTFD,
  IORING_REGISTER_FILES, IORING_REGISTER_FILES_UPDATE, IORING_RSRC_REGISTER_SPARSE, IORING_SETUP_DEFER_TASKRUN, IORING_SQ_CQ_OVERFLOW,
  IORING_SETUP_TASKRUN_FLAG, IORING_SQ_TASKRUN, IORING_UNREGISTER_BUFFERS, IORING_UNREGISTER_EVENTFD, IORING_UNREGISTER_FILES,
} from './constants.js';

export type { RingOptions } from './setup.js';

const { EINTR, EAGAIN, EBUSY, ETIME } = constants.errno;

const CQE = LAYOUTS.io_uring_cqe.fields;
const CQE_WORDS = LAYOUTS.io_uring_cqe.size >> 2;
const CQE_UD = CQE.user_data[0] >> 2, CQE_RES = CQE.res[0] >> 2, CQE_FLAGS = CQE.flags[0] >> 2;
const RR = LAYOUTS.io_uring_rsrc_register;
const GETEVENTS_ARG = LAYOUTS.io_uring_getevents_arg;
const MIN_WAIT_USEC = GETEVENTS_ARG.fields.min_wait_usec[0] >> 2;
const TS_PTR = GETEVENTS_ARG.fields.ts[0] >> 3;
const IOV_WORDS = IOVEC.size >> 2, IOV_BASE = IOVEC.fields.iov_base[0] >> 2, IOV_LEN = IOVEC.fields.iov_len[0] >> 2;

/**
 * Reads and writes of the ring words the kernel shares with us (heads, tails,
 * flags) need acquire and release order. Atomics.load/store give it, but V8
 * compiles them to calls of a builtin that checks its arguments every time:
 * 6x a plain read natively, and in the test VM (null target, QD 1, no
 * polling) a serving thread spent 34.6 µs of user time per request with
 * them against 28.6 µs without (3 runs each). x86 gives every load acquire
 * and every store release order already (liburing's x86 load_acquire and
 * store_release are plain accesses behind a compiler barrier), and V8 keeps
 * typed-array accesses in program order on its effect chain, so there the
 * reap, submit and SQE paths use plain accesses; other architectures keep
 * Atomics. Not kept: Atomics.store's full fence (a store then a load in
 * order), which only SQPOLL's NEED_WAKEUP check needs, and no ring here uses
 * SQPOLL. Loops that spin on a word use Atomics (cqReadySpin, sqRingFlags):
 * a plain read in a loop that writes nothing and calls nothing may be read
 * once for all passes (V8 does not do that today; the language allows it).
 */
const TSO = process.arch === 'x64' || process.arch === 'ia32';
const plainLoad = (a: Uint32Array, i: number): number => a[i]!;
const plainStore = (a: Uint32Array, i: number, v: number): number => (a[i] = v);
const loadAcquire: (a: Uint32Array, i: number) => number = TSO ? plainLoad : Atomics.load;
const storeRelease: (a: Uint32Array, i: number, v: number) => number = TSO ? plainStore : Atomics.store;

/** One CQE: user_data as two u32 halves, the signed result, the IORING_CQE_F_* flags. */
export type CqeHandler = (userDataLo: number, userDataHi: number, res: number, flags: number) => void;

/**
 * Not thread-safe, and with SINGLE_ISSUER the kernel refuses submits (and,
 * with DEFER_TASKRUN, GETEVENTS enters) from any thread but the creator with
 * -EEXIST: create a ring in the worker that uses it.
 */
export class Ring {
  readonly fd: number;
  readonly sqEntries: number;
  readonly cqEntries: number;
  /** 64, or 128 with IORING_SETUP_SQE128. */
  readonly sqeSize: number;
  /** IORING_FEAT_* reported by the kernel. */
  readonly features: number;
  /** IORING_SETUP_* the ring was created with. */
  readonly flags: number;
  /** The SQE array; getSqe() returns byte offsets into it. */
  readonly sqeU8: Uint8Array;
  readonly sqeU16: Uint16Array;
  readonly sqeU32: Uint32Array;
  readonly sqeI32: Int32Array;

  private readonly maps: ArrayBuffer[];
  private readonly sq: Uint32Array;
  private readonly cq: Uint32Array;
  private readonly cqI32: Int32Array;
  private readonly sqHead: number;
  private readonly sqTail: number;
  private readonly sqFlags: number;
  private readonly sqMask: number;
  private readonly cqHead: number;
  private readonly cqTail: number;
  private readonly cqFlags: number;
  private readonly cqMask: number;
  private readonly cqes: number;
  private readonly sqeShift: number;
  /**
   * DEFER_TASKRUN without TASKRUN_FLAG: GETEVENTS on every enter, deferred
   * task work running nowhere else and nothing saying when there is some.
   */
  private readonly baseEnterFlags: number;
  /** io_uring_enter calls made so far (submits, waits, overflow flushes): a cost per request the benchmark shows. */
  enters = 0;
  /** Next SQE to hand out; published to the kernel's tail by submit(). */
  private sqeTail = 0;
  /** Last SQ head read from the kernel; only re-read when the SQ looks full. */
  private sqHeadSeen = 0;
  /** Registered buffers, kept reachable (and mapped) while the kernel may use them. */
  private buffers: ArrayBufferView[] = [];
  private isClosed = false;
  /** struct io_uring_getevents_arg for submitAndWaitMin and submitAndWaitTimeout (no sigmask). */
  private readonly extArg = new Uint8Array(GETEVENTS_ARG.size);
  private readonly extArgU32 = new Uint32Array(this.extArg.buffer);
  private readonly extArgU64 = new BigUint64Array(this.extArg.buffer);
  /** The struct __kernel_timespec extArg's ts points to (an ArrayBuffer's memory does not move). */
  private readonly timespec = new BigInt64Array(2);
  private readonly timespecAddr = BigInt(native.addressOf(this.timespec));

  static create(opts: RingOptions): Ring {
    const r = setupRing(opts);
    try {
      return new Ring(r);
    } catch (e) {
      for (const m of r.maps) native.munmap(m);
      native.close(r.fd);
      throw e;
    }
  }

  private constructor(r: RingSetup) {
    this.fd = r.fd;
    this.flags = r.flags;
    this.features = r.features;
    this.sqEntries = r.sqEntries;
    this.cqEntries = r.cqEntries;
    this.sqeSize = r.sqeSize;
    this.sqeShift = Math.log2(r.sqeSize);
    this.baseEnterFlags = r.flags & IORING_SETUP_DEFER_TASKRUN && !(r.flags & IORING_SETUP_TASKRUN_FLAG) ? IORING_ENTER_GETEVENTS : 0;
    this.maps = r.maps;
    this.sq = r.sq;
    this.cq = r.cq;
    this.cqI32 = new Int32Array(r.cq.buffer);
    this.sqHead = r.sqHead;
    this.sqTail = r.sqTail;
    this.sqFlags = r.sqFlags;
    this.sqMask = r.sqMask;
    this.cqHead = r.cqHead;
    this.cqTail = r.cqTail;
    this.cqFlags = r.cqFlags;
    this.cqMask = r.cqMask;
    this.cqes = r.cqes;
    this.sqeU8 = new Uint8Array(r.sqes);
    this.sqeU16 = new Uint16Array(r.sqes);
    this.sqeU32 = new Uint32Array(r.sqes);
    this.sqeI32 = new Int32Array(r.sqes);
    // SQE slot i is always described by SQ array entry i: the indirection is
    // set up once and never touched again.
    for (let i = 0; i < this.sqEntries; i++) this.sq[r.sqArray + i] = i;
    this.sqeTail = this.sqHeadSeen = loadAcquire(this.sq, this.sqTail);
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Byte offset of the next free SQE, zeroed; -1 when the SQ is full (submit() and retry). */
  getSqe(): number {
    if (((this.sqeTail - this.sqHeadSeen) >>> 0) >= this.sqEntries) {
      this.sqHeadSeen = loadAcquire(this.sq, this.sqHead);
      if (((this.sqeTail - this.sqHeadSeen) >>> 0) >= this.sqEntries) return -1;
    }
    const s = (this.sqeTail & this.sqMask) << this.sqeShift;
    this.sqeTail = (this.sqeTail + 1) >>> 0;
    // Zeroed word by word: TypedArray.fill is a runtime call, costlier than the loop.
    const u32 = this.sqeU32;
    for (let w = s >> 2, end = (s + this.sqeSize) >> 2; w < end; w++) u32[w] = 0;
    return s;
  }

  /**
   * The SQE handed out just before `s`, if both are still unsubmitted (so
   * still ours to change); -1 otherwise. Lets a caller walk back along an
   * IOSQE_IO_LINK chain that ends at `s`.
   */
  sqeBefore(s: number): number {
    const unsubmitted = (this.sqeTail - loadAcquire(this.sq, this.sqTail)) >>> 0;
    const slot = s >> this.sqeShift;
    const back = ((this.sqeTail - 1 - slot) & this.sqMask) + 1; // s is the back-th newest
    return back < unsubmitted ? ((slot - 1) & this.sqMask) << this.sqeShift : -1;
  }

  /** SQEs that getSqe() can still hand out before a submit is needed. */
  sqSpace(): number {
    return this.sqEntries - this.pending();
  }

  /** SQEs prepared but not yet consumed by the kernel. */
  pending(): number {
    return (this.sqeTail - loadAcquire(this.sq, this.sqHead)) >>> 0;
  }

  /**
   * Whether the kernel signals the registered eventfd (IORING_CQ_EVENTFD_DISABLED
   * in the CQ ring's flags: shared memory, no system call). Off while no one
   * watches the eventfd, it saves the kernel an eventfd signal per completion
   * or task-work batch; turned on again before looking whether to sleep on it.
   */
  eventfdSignals(on: boolean): void {
    const f = Atomics.load(this.cq, this.cqFlags);
    const want = on ? f & ~IORING_CQ_EVENTFD_DISABLED : f | IORING_CQ_EVENTFD_DISABLED;
    if (want !== f) Atomics.store(this.cq, this.cqFlags, want);
  }

  /** The kernel's IORING_SQ_* flags (NEED_WAKEUP, CQ_OVERFLOW, TASKRUN); an Atomics read, for spin loops. */
  sqRingFlags(): number {
    return Atomics.load(this.sq, this.sqFlags);
  }

  /**
   * Whether the kernel says a GETEVENTS enter has work waiting: task work
   * (IORING_SQ_TASKRUN, with TASKRUN_FLAG) or overflowed CQEs. A hint only:
   * the flag can also be left set with nothing pending (a producer that
   * raced a run sets it after the run took its work), and then no enter
   * clears it (see runTaskWork).
   */
  enterPending(): boolean {
    return (loadAcquire(this.sq, this.sqFlags) & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN)) !== 0;
  }

  /**
   * A GETEVENTS enter (submitting what is pending) that runs the deferred
   * task work there is, after clearing IORING_SQ_TASKRUN: set again after
   * it, the flag is news (work left over, or newly queued), not a stale one.
   * This matters to a thread about to sleep on the ring's eventfd: the
   * kernel signals that only when task work lands on an empty list, and
   * leaves work behind with just the flag set when a run stops short.
   * (The flag word is shared memory the kernel changes with atomic
   * or/and-not too; clearing our bit with an atomic and loses none of its.)
   */
  runTaskWork(): number {
    Atomics.and(this.sq, this.sqFlags, ~IORING_SQ_TASKRUN);
    return this.enter(0, 0, false, true);
  }

  /** Submits all pending SQEs; returns how many the kernel took, or -EINTR/-EAGAIN/-EBUSY. */
  submit(): number {
    return this.enter(0);
  }

  /** Submits all pending SQEs and waits until at least `waitNr` CQEs are ready. */
  submitAndWait(waitNr: number): number {
    return this.enter(waitNr);
  }

  /**
   * Submits and waits for `waitNr` CQEs for at most `minWaitUsec`
   * (IORING_ENTER_EXT_ARG min_wait_usec, Linux 6.12+; plain submitAndWait(1)
   * where the kernel lacks IORING_FEAT_MIN_TIMEOUT). Without a general timeout
   * the kernel ends the wait when min_wait_usec elapses, whatever the CQ holds,
   * so the call returns then even with no CQE (its -ETIME is reported as 0).
   * Lets completions that arrive close together be reaped in one turn.
   */
  submitAndWaitMin(waitNr: number, minWaitUsec: number): number {
    if (!(this.features & IORING_FEAT_MIN_TIMEOUT) || minWaitUsec <= 0) return this.enter(1);
    this.extArgU32[MIN_WAIT_USEC] = minWaitUsec;
    const res = this.enter(waitNr, IORING_ENTER_EXT_ARG, true);
    return res === -ETIME ? 0 : res;
  }

  /**
   * Submits and waits for `waitNr` CQEs for at most `timeoutUsec`
   * (IORING_ENTER_EXT_ARG ts, Linux 5.11+); returns how many SQEs the kernel
   * took, which is 0 where it reported the timeout (-ETIME): whether CQEs
   * came, cqReady() says.
   */
  submitAndWaitTimeout(waitNr: number, timeoutUsec: number): number {
    const ts = this.timespec, us = Math.max(0, Math.floor(timeoutUsec));
    ts[0] = BigInt(Math.floor(us / 1e6));
    ts[1] = BigInt((us % 1e6) * 1000);
    this.extArgU32[MIN_WAIT_USEC] = 0;
    this.extArgU64[TS_PTR] = this.timespecAddr;
    try {
      const res = this.enter(waitNr, IORING_ENTER_EXT_ARG, true);
      return res === -ETIME ? 0 : res;
    } finally {
      this.extArgU64[TS_PTR] = 0n;
    }
  }

  private enter(waitNr: number, extraFlags = 0, timed = false, getEvents = false): number {
    // The tail store publishes the SQE contents written before it.
    storeRelease(this.sq, this.sqTail, this.sqeTail);
    const toSubmit = (this.sqeTail - loadAcquire(this.sq, this.sqHead)) >>> 0;
    let flags = this.baseEnterFlags;
    // Overflowed CQEs and (TASKRUN_FLAG) pending task work are only flushed
    // into the CQ by a GETEVENTS enter; with TASKRUN_FLAG the kernel sets
    // IORING_SQ_TASKRUN whenever it queues task work, DEFER_TASKRUN's too, so
    // a submit with nothing to submit and no flag set needs no system call
    // (liburing's submit decides the same way).
    if (getEvents || waitNr > 0 || this.enterPending()) {
      flags |= IORING_ENTER_GETEVENTS;
    }
    if (toSubmit === 0 && flags === 0) return 0;
    this.enters++;
    const res = extraFlags
      ? native.enterArg(this.fd, toSubmit, waitNr, flags | extraFlags, this.extArg)
      : native.enter(this.fd, toSubmit, waitNr, flags);
    if (res < 0 && res !== -EINTR && res !== -EAGAIN && res !== -EBUSY && !(timed && res === -ETIME)) throw new ErrnoError(res, 'io_uring_enter');
    return res;
  }

  /** CQEs ready to reap (not counting overflowed ones not yet flushed). */
  cqReady(): number {
    return (loadAcquire(this.cq, this.cqTail) - loadAcquire(this.cq, this.cqHead)) >>> 0;
  }

  /** cqReady() for a loop that spins on it: the tail read with Atomics (see loadAcquire). */
  cqReadySpin(): number {
    return (Atomics.load(this.cq, this.cqTail) - loadAcquire(this.cq, this.cqHead)) >>> 0;
  }

  /**
   * Calls `handler` for every ready CQE and returns how many. The handler may
   * prepare SQEs; it must not call reap() itself. If it throws, CQEs up to
   * and including that one are consumed. On DEFER_TASKRUN rings completions
   * only become CQEs in a GETEVENTS enter: submit() first.
   */
  reap(handler: CqeHandler): number {
    const cq = this.cq, cqI32 = this.cqI32, mask = this.cqMask, cqes = this.cqes;
    let head = loadAcquire(cq, this.cqHead);
    let count = 0;
    for (;;) {
      const tail = loadAcquire(cq, this.cqTail);
      if (head === tail) {
        // With IORING_FEAT_NODROP the kernel parks CQEs that did not fit on an
        // overflow list and says so in the SQ flags; only an enter moves them
        // into the CQ, now that it has room.
        if (!(loadAcquire(this.sq, this.sqFlags) & IORING_SQ_CQ_OVERFLOW)) break;
        this.enters++;
        const res = native.enter(this.fd, 0, 0, IORING_ENTER_GETEVENTS);
        if (res < 0 && res !== -EINTR && res !== -EAGAIN && res !== -EBUSY) throw new ErrnoError(res, 'io_uring_enter');
        if (loadAcquire(cq, this.cqTail) === head) break;
        continue;
      }
      try {
        while (head !== tail) {
          const c = cqes + (head & mask) * CQE_WORDS;
          head = (head + 1) >>> 0;
          count++;
          handler(cq[c + CQE_UD]!, cq[c + CQE_UD + 1]!, cqI32[c + CQE_RES]!, cq[c + CQE_FLAGS]!);
        }
      } finally {
        // Frees the slots only after they were read: the kernel may refill them at once.
        storeRelease(cq, this.cqHead, head);
      }
    }
    return count;
  }

  /** IORING_REGISTER_FILES: fixed-file index i refers to fds[i] (-1 leaves a slot empty). */
  registerFiles(fds: readonly number[]): void {
    this.register(IORING_REGISTER_FILES, Int32Array.from(fds), fds.length, 'IORING_REGISTER_FILES');
  }

  /**
   * IORING_REGISTER_FILES_UPDATE: fixed-file index `index` now refers to `fd`
   * (-1 empties it; operations already in flight keep the old file).
   */
  updateFile(index: number, fd: number): void {
    const fds = native.alloc(4);
    new Int32Array(fds)[0] = fd;
    const up = new DataView(new ArrayBuffer(16)); // struct io_uring_files_update {u32 offset, resv; u64 fds}
    up.setUint32(0, index, true);
    up.setBigUint64(8, BigInt(native.addressOf(fds)), true);
    try {
      const n = native.register(this.fd, IORING_REGISTER_FILES_UPDATE, up, 1);
      check(n, 'IORING_REGISTER_FILES_UPDATE');
      if (n !== 1) throw new ErrnoError(-constants.errno.EIO, `IORING_REGISTER_FILES_UPDATE updated ${n} slots, not 1`);
    } finally {
      native.munmap(fds);
    }
  }

  unregisterFiles(): void {
    this.register(IORING_UNREGISTER_FILES, null, 0, 'IORING_UNREGISTER_FILES');
  }

  /** IORING_REGISTER_BUFFERS: buffer index i is bufs[i]; the views are kept until unregistered. */
  registerBuffers(bufs: readonly ArrayBufferView[]): void {
    const iov = new Uint32Array(bufs.length * IOV_WORDS);
    bufs.forEach((b, i) => {
      const addr = native.addressOf(b), o = i * IOV_WORDS;
      iov[o + IOV_BASE] = addr >>> 0;
      iov[o + IOV_BASE + 1] = Math.floor(addr / 0x100000000);
      iov[o + IOV_LEN] = b.byteLength;
    });
    this.register(IORING_REGISTER_BUFFERS, iov, bufs.length, 'IORING_REGISTER_BUFFERS');
    this.buffers = bufs.slice();
  }

  /** An empty fixed-buffer table of `nr` slots (IORING_REGISTER_BUFFERS2 + IORING_RSRC_REGISTER_SPARSE). */
  registerBuffersSparse(nr: number): void {
    const rr = new DataView(new ArrayBuffer(RR.size));
    rr.setUint32(RR.fields.nr[0], nr, true);
    rr.setUint32(RR.fields.flags[0], IORING_RSRC_REGISTER_SPARSE, true);
    // For the *2 opcodes nr_args is the size of the struct, not a count.
    this.register(IORING_REGISTER_BUFFERS2, rr, RR.size, 'IORING_REGISTER_BUFFERS2');
    this.buffers = [];
  }

  unregisterBuffers(): void {
    this.register(IORING_UNREGISTER_BUFFERS, null, 0, 'IORING_UNREGISTER_BUFFERS');
    this.buffers = [];
  }

  /** IORING_REGISTER_EVENTFD: the kernel signals `fd` when it posts CQEs (or queues deferred task work). */
  registerEventfd(fd: number): void {
    this.register(IORING_REGISTER_EVENTFD, Int32Array.of(fd), 1, 'IORING_REGISTER_EVENTFD');
  }

  unregisterEventfd(): void {
    this.register(IORING_UNREGISTER_EVENTFD, null, 0, 'IORING_UNREGISTER_EVENTFD');
  }

  private register(op: number, arg: ArrayBufferView | null, nr: number, what: string): void {
    if (this.isClosed) throw new ErrnoError(-constants.errno.EBADF, what);
    check(native.register(this.fd, op, arg, nr), what);
  }

  /** Unmaps the rings and closes the fd; the kernel cancels whatever is in flight. Idempotent. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    for (const m of this.maps) native.munmap(m);
    this.buffers = [];
    native.close(this.fd);
  }
}
