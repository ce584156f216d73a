// UBLK_F_BATCH_IO data plane for the queues one thread serves.
//
//   PREP_IO_CMDS   once per queue (by one thread): every tag with its buffer;
//   FETCH_IO_CMDS  multishot, per served queue: each completion carries up to
//                  128 ready tags as a u16 array in a provided buffer;
//   COMMIT_IO_CMDS per queue and loop turn: every completion gathered in that
//                  turn, in one command.
//
// One CQE from the kernel thus brings many requests into JavaScript, and one
// SQE answers many: the crossings per IO shrink with the batch size.
//
// Elements are 16 bytes {tag, buf_index, result, buffer address} in kernel
// copy mode and 8 bytes (no address) under user copy and zero copy, where
// buf_index is the AUTO_BUF_REG slot for the tag's next request. Zoned
// devices add 8 bytes, a ZONE_APPEND's sector written (UBLK_BATCH_F_HAS_ZONE_LBA).
//
// Fetch buffers: a plain (whole-buffer) provided-buffer ring per fetch command,
// with a few 256-byte buffers (256 bytes = the 128 tags the kernel delivers at
// most per completion). Each completion uses one buffer, which goes back into
// the ring as soon as its tags are read, in the same loop turn; the multishot
// command therefore rarely runs dry, and there is no partial-consumption offset
// to track as with IOU_PBUF_RING_INC. When several threads share a queue only
// one fetch command is active at a time: those rings get a single buffer, so
// the active role moves between threads after every completion.
import type { CqeHandler, Ring } from '../../uring/ring.js';
import { PbufRing } from '../../uring/pbuf-ring.js';
import { prepUringCmd, setAddr, setBufGroup, setSqeFlags, setUringCmdFlags, setUserData } from '../../uring/prep.js';
import {
  IORING_CQE_BUFFER_SHIFT, IORING_CQE_F_BUFFER, IORING_CQE_F_MORE, IORING_URING_CMD_MULTISHOT, IOSQE_BUFFER_SELECT,
  IOSQE_FIXED_FILE,
} from '../../uring/constants.js';
import { LAYOUTS as URING } from '../../uring/layout.js';
import { native } from '../../native.js';
import { EBUSY, ENOBUFS } from '../../sys.js';
import { LAYOUTS } from '../abi/layout.js';
import {
  UBLK_BATCH_F_HAS_BUF_ADDR, UBLK_BATCH_F_HAS_ZONE_LBA, UBLK_IO_OP_ZONE_APPEND, UBLK_IO_RES_ABORT, UBLK_U_IO_COMMIT_IO_CMDS,
  UBLK_U_IO_FETCH_IO_CMDS, UBLK_U_IO_PREP_IO_CMDS,
} from '../abi/uapi.js';
import { C_COMMITS, C_FETCH_CQES, C_REARMS, C_TAGS, SLOT_WORDS } from '../stats.js';
import { Dispatcher } from './dispatch.js';
import type { CommitSink, Engine, EngineDeps, ServedQueue } from './engine.js';
import { UblkRequest } from './request.js';
import { KIND_BATCH, KIND_OWN, KIND_STAGE, KIND_TARGET, KIND_UBLK, nextSqe, udKind, udQueue, udTag, userDataLo } from './worker-ring.js';

// struct ublk_batch_io in the SQE's command area, as typed-array indices.
const CMD = URING.io_uring_sqe.fields.cmd[0];
const BIO = LAYOUTS.ublk_batch_io.fields;
const B_QID = (CMD + BIO.q_id[0]) >> 1;
const B_FLAGS = (CMD + BIO.flags[0]) >> 1;
const B_NR_ELEM = (CMD + BIO.nr_elem[0]) >> 1;
const B_ELEM_BYTES = CMD + BIO.elem_bytes[0];

// Elements: struct ublk_elem_header (tag, buf_index, result) [+ u64 buf_addr in kernel copy mode] [+ u64 zone_lba when zoned].
const HDR = LAYOUTS.ublk_elem_header;
const E_TAG_INDEX = HDR.fields.tag[0] / 4; // tag and buf_index share this word
const E_RESULT = HDR.fields.result[0] / 4;
const E_ADDR = HDR.size / 4;

/**
 * Fault injection for tests, UBLK_TS_FAULT_COMMIT=
 * - `duplicate`: every COMMIT of two or more elements gets a second copy of
 *   its first element in second place, which the kernel refuses (that tag is
 *   no longer the server's), so the partial-commit path runs all the time;
 * - `e2big`: every 8th COMMIT claims one element more than the queue depth,
 *   which the kernel refuses as a whole (-E2BIG), committing nothing.
 */
const FAULT_COMMIT = process.env.UBLK_TS_FAULT_COMMIT ?? '';

/** Whole-command refusals of COMMIT_IO_CMDS in a row before the thread gives up (see partialCommit). */
const MAX_WHOLE_REFUSALS = 8;

const FETCH_BUF_BYTES = 256;
const FETCH_BUF_TAGS = FETCH_BUF_BYTES / 2;
const OP_PREP = 0, OP_COMMIT = 1;
const TWO_32 = 2 ** 32;

/** An element array for PREP/COMMIT; the kernel reads it while the command is in flight. */
class Elements {
  readonly u32: Uint32Array;
  readonly i32: Int32Array;
  readonly addr: number;
  count = 0;
  constructor(capacity: number, elemBytes: number) {
    const mem = native.alloc(capacity * elemBytes);
    this.u32 = new Uint32Array(mem);
    this.i32 = new Int32Array(mem);
    this.addr = native.addressOf(mem);
  }

  free(): void { native.munmap(this.u32.buffer as ArrayBuffer); }
}

/** A multishot FETCH_IO_CMDS and its provided-buffer ring. */
class Fetcher {
  readonly tags: Uint16Array;
  readonly addr: number;
  constructor(readonly pbuf: PbufRing, nbufs: number) {
    const mem = native.alloc(nbufs * FETCH_BUF_BYTES);
    this.tags = new Uint16Array(mem);
    this.addr = native.addressOf(mem);
    for (let b = 0; b < nbufs; b++) pbuf.add(this.addr + b * FETCH_BUF_BYTES, FETCH_BUF_BYTES, b, b);
    pbuf.advance(nbufs);
  }

  free(): void {
    this.pbuf.unregister();
    native.munmap(this.tags.buffer as ArrayBuffer);
  }
}

/** What this thread keeps per served queue. */
class QueueState {
  readonly reqs: UblkRequest[] = [];
  readonly addrLo: number[] = [];
  readonly addrHi: number[] = [];
  /** Per tag: the buf_index its elements carry (the AUTO_BUF_REG slot, else 0). */
  readonly bufIndex: number[] = [];
  readonly fetchers: Fetcher[] = [];
  commit: Elements;
  readonly q: number;
  /** Its index in user_data (ServedQueue.ud). */
  readonly ud: number;
  readonly desc: Uint32Array;
  /** Where this queue's counters start in the device's stats. */
  readonly statBase: number;
  constructor(readonly served: ServedQueue, depth: number, slotBase: number, autoReg: boolean, elemBytes: number, charFixed: number) {
    const { q, ud, desc, bufs } = served;
    this.q = q;
    this.ud = ud;
    this.desc = desc;
    this.statBase = served.slot * SLOT_WORDS;
    for (let t = 0; t < depth; t++) {
      const addr = bufs?.addrs[t] ?? 0;
      this.reqs.push(new UblkRequest(q, t, bufs?.views[t] ?? null, slotBase + t, addr, ud, charFixed));
      this.addrLo.push(addr % TWO_32);
      this.addrHi.push(Math.floor(addr / TWO_32));
      this.bufIndex.push(autoReg ? slotBase + t : 0);
    }
    this.commit = new Elements(depth + 1, elemBytes);
  }
}

export class BatchEngine implements Engine, CommitSink {
  readonly dispatcher: Dispatcher;
  /** Batch commits are elements of a later command: nothing to link. */
  readonly commitNext = null;
  private readonly ring: Ring;
  private readonly depth: number;
  private readonly elemBytes: number;
  private readonly elemWords: number;
  private readonly cmdFlags: number;
  /** Element word of the buffer address (kernel copy), of the zone-append sector (zoned); -1: none. */
  private readonly addrWord: number;
  private readonly lbaWord: number;
  private readonly stats: Float64Array;
  private readonly queues: QueueState[] = [];
  /** By ServedQueue.ud, the queue field of user_data. */
  private readonly byUd: QueueState[] = [];
  /** Spare element arrays, per served queue (by ud). */
  private readonly pool: Elements[][] = [];
  private readonly charFixed: number;
  private readonly bgidBase: number;
  /** Commands in flight, by slot (the tag field of their user_data). */
  private readonly inflight: Array<Elements | null> = [];
  private readonly freeSlots: number[] = [];
  private liveFetchers = 0;
  private pendingPreps = 0;
  private refusals = 0;
  /** COMMIT_IO_CMDS refused as a whole in a row. */
  private wholeRefusals = 0;
  private failure: string | null = null;

  constructor(deps: EngineDeps) {
    const { ring, mode, depth } = deps;
    this.ring = ring;
    this.depth = depth;
    this.stats = deps.stats;
    this.elemBytes = mode.elemBytes;
    this.elemWords = this.elemBytes / 4;
    this.cmdFlags = mode.batchFlags;
    this.addrWord = mode.batchFlags & UBLK_BATCH_F_HAS_BUF_ADDR ? E_ADDR : -1;
    this.lbaWord = mode.batchFlags & UBLK_BATCH_F_HAS_ZONE_LBA ? E_ADDR + (this.addrWord < 0 ? 0 : 2) : -1;
    this.charFixed = deps.place.charFixed;
    this.bgidBase = deps.place.bgidBase;
    deps.queues.forEach((served: ServedQueue, i) => {
      // Buffer-table slots: the i-th served queue owns bufBase + [i*depth, (i+1)*depth).
      const qs = new QueueState(served, depth, deps.place.bufBase + i * depth, mode.autoBufReg, this.elemBytes, this.charFixed);
      this.queues.push(qs);
      this.byUd[qs.ud] = qs;
      this.pool[qs.ud] = [];
    });
    this.dispatcher = new Dispatcher(ring, mode, this, deps.waker, deps);
  }

  get active(): boolean {
    // Every slot not on the free list holds a PREP/COMMIT still in flight. A
    // request still in our hands counts too (its target's ring operations, an
    // engine step): QUIESCE_DEV ends a batch queue's fetches at once, without
    // waiting for them, and a device that left then would free their buffers
    // under their IO and never commit them. (Only a leaving device is asked.)
    return this.liveFetchers > 0 || this.dispatcher.asyncInFlight > 0 || this.inflight.length > this.freeSlots.length ||
      this.queues.some((qs) => qs.commit.count > 0 || qs.reqs.some((r) => r.owned || r.staged));
  }
  get error(): string | null { return this.failure; }
  arm(reap: CqeHandler): void {
    // PREP completes at once; START_DEV waits until every tag of every queue is prepared.
    this.prepAll();
    while (this.pendingPreps > 0 && !this.failure) {
      this.ring.submitAndWait(1);
      this.ring.reap(reap);
    }
    if (this.failure) return;
    this.fetchAll();
    this.ring.submit();
    this.ring.reap(reap);
  }

  requests(): UblkRequest[] { return this.queues.flatMap((qs) => qs.reqs); }

  release(): void {
    for (const qs of this.queues) {
      for (const f of qs.fetchers) f.free();
      qs.commit.free();
      for (const e of this.pool[qs.ud]!) e.free();
    }
  }

  /** Queues PREP_IO_CMDS for the queues this thread prepares. */
  private prepAll(): void {
    for (const qs of this.queues) {
      if (!qs.served.prep) continue;
      const e = new Elements(this.depth + 1, this.elemBytes);
      for (let t = 0; t < this.depth; t++) this.putElement(qs, e, t, 0);
      this.submitElements(qs, e, UBLK_U_IO_PREP_IO_CMDS, OP_PREP);
      this.pendingPreps++;
    }
  }

  /** Registers the provided-buffer rings and arms one multishot fetch per served queue. */
  private fetchAll(): void {
    let bgid = this.bgidBase;
    for (const qs of this.queues) {
      const pbuf = PbufRing.register(this.ring, bgid++, qs.served.fetchBuffers);
      let fetcher: Fetcher;
      try {
        fetcher = new Fetcher(pbuf, qs.served.fetchBuffers);
      } catch (e) {
        pbuf.unregister(); // else its bgid, given back when the device leaves, would stay registered for the next device
        throw e;
      }
      qs.fetchers.push(fetcher);
      this.armFetch(qs, qs.fetchers.length - 1);
      this.liveFetchers++;
    }
  }

  /** Called before every enter: one COMMIT_IO_CMDS per queue with completions; returns how many. */
  flush(): number {
    let commits = 0;
    for (const qs of this.queues) {
      if (qs.commit.count === 0) continue;
      this.flushQueue(qs);
      commits++;
    }
    return commits;
  }

  private flushQueue(qs: QueueState): void {
    const e = qs.commit;
    qs.commit = this.pool[qs.ud]!.pop() ?? new Elements(this.depth + 1, this.elemBytes);
    if (FAULT_COMMIT === 'duplicate' && e.count >= 2 && e.count < this.depth) this.injectDuplicate(e);
    const tooMany = FAULT_COMMIT === 'e2big' && this.stats[qs.statBase + C_COMMITS]! % 8 === 7;
    this.submitElements(qs, e, UBLK_U_IO_COMMIT_IO_CMDS, OP_COMMIT, tooMany ? this.depth + 1 : e.count);
    this.stats[qs.statBase + C_COMMITS]!++;
  }

  private batchCmd(s: number, op: number, q: number, flags: number, nrElem: number, elemBytes: number): void {
    const ring = this.ring;
    prepUringCmd(ring, s, this.charFixed, op);
    const u16 = ring.sqeU16, h = s >> 1;
    u16[h + B_QID] = q;
    u16[h + B_FLAGS] = flags;
    u16[h + B_NR_ELEM] = nrElem;
    ring.sqeU8[s + B_ELEM_BYTES] = elemBytes;
  }

  private armFetch(qs: QueueState, index: number): void {
    const ring = this.ring, s = nextSqe(ring), f = qs.fetchers[index]!;
    this.batchCmd(s, UBLK_U_IO_FETCH_IO_CMDS, qs.q, 0, FETCH_BUF_TAGS, 2);
    setSqeFlags(ring, s, IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT);
    setUringCmdFlags(ring, s, IORING_URING_CMD_MULTISHOT);
    setBufGroup(ring, s, f.pbuf.bgid);
    setUserData(ring, s, userDataLo(KIND_UBLK, qs.ud, index), 0);
  }

  private submitElements(qs: QueueState, e: Elements, op: number, kind: number, nrElem = e.count): void {
    const slot = this.freeSlots.pop() ?? this.inflight.length;
    this.inflight[slot] = e;
    const ring = this.ring, s = nextSqe(ring);
    this.batchCmd(s, op, qs.q, this.cmdFlags, nrElem, this.elemBytes);
    setSqeFlags(ring, s, IOSQE_FIXED_FILE);
    setAddr(ring, s, e.addr);
    setUserData(ring, s, userDataLo(KIND_BATCH, qs.ud, slot), kind);
  }

  /**
   * Appends {tag, result, where the tag's next request's data goes (buffer
   * address or AUTO_BUF_REG slot), and the sector a ZONE_APPEND wrote}.
   */
  private putElement(qs: QueueState, e: Elements, tag: number, result: number, lba = 0): void {
    const w = e.count++ * this.elemWords;
    e.u32[w + E_TAG_INDEX] = (tag | (qs.bufIndex[tag]! << 16)) >>> 0;
    e.i32[w + E_RESULT] = result;
    if (this.addrWord >= 0) {
      e.u32[w + this.addrWord] = qs.addrLo[tag]!;
      e.u32[w + this.addrWord + 1] = qs.addrHi[tag]!;
    }
    if (this.lbaWord >= 0) {
      e.u32[w + this.lbaWord] = lba % TWO_32;
      e.u32[w + this.lbaWord + 1] = Math.floor(lba / TWO_32);
    }
  }

  readonly commit = (req: UblkRequest, result: number): void => {
    const qs = this.byUd[req.ud]!;
    // The kernel takes at most queue-depth elements per command (-E2BIG). A tag
    // is committed once before it comes back, so this holds anyway; the check
    // makes it hold by construction.
    if (qs.commit.count >= this.depth) this.flushQueue(qs);
    this.putElement(qs, qs.commit, req.tag, result, req.op === UBLK_IO_OP_ZONE_APPEND ? req.zoneAppendLba : 0);
  };

  readonly onCqe = (lo: number, hi: number, res: number, flags: number): void => {
    const kind = udKind(lo);
    if (kind === KIND_UBLK) this.onFetch(this.byUd[udQueue(lo)]!, udTag(lo), res, flags);
    else if (kind === KIND_TARGET || kind === KIND_STAGE) this.dispatcher.onCqe(this.byUd[udQueue(lo)]!.reqs[udTag(lo)]!, kind, hi, res, flags);
    else if (kind === KIND_OWN) this.dispatcher.onOwnCqe(hi, res, flags);
    else if (kind === KIND_BATCH) this.onElements(this.byUd[udQueue(lo)]!, udTag(lo), hi, res);
  };

  private onFetch(qs: QueueState, index: number, res: number, flags: number): void {
    const f = qs.fetchers[index]!;
    if (flags & IORING_CQE_F_BUFFER) {
      const bid = flags >>> IORING_CQE_BUFFER_SHIFT;
      if (res > 0) {
        this.stats[qs.statBase + C_FETCH_CQES]!++;
        this.stats[qs.statBase + C_TAGS]! += res >> 1;
        const tags = f.tags, base = bid * FETCH_BUF_TAGS, end = base + (res >> 1);
        for (let i = base; i < end; i++) this.deliver(qs, tags[i]!);
      }
      // Back into the ring at once, so the multishot fetch keeps going.
      f.pbuf.recycle(f.addr + bid * FETCH_BUF_BYTES, FETCH_BUF_BYTES, bid);
    }
    if (flags & IORING_CQE_F_MORE) return;
    // The multishot command ended. Out of buffers (or nothing to report): the
    // ring is stocked again by now, so re-arm — ready tags wait until we do.
    if (res >= 0 || res === -ENOBUFS) {
      this.stats[qs.statBase + C_REARMS]!++;
      this.armFetch(qs, index);
      return;
    }
    this.liveFetchers--;
    if (res !== UBLK_IO_RES_ABORT && !this.failure) this.failure = `queue ${qs.q}: FETCH_IO_CMDS failed with ${res}`;
  }

  private deliver(qs: QueueState, tag: number): void {
    const req = qs.reqs[tag]!;
    req.load(qs.desc);
    this.dispatcher.dispatch(req);
  }

  private onElements(qs: QueueState, slot: number, op: number, res: number): void {
    const e = this.inflight[slot]!;
    this.inflight[slot] = null;
    this.freeSlots.push(slot);
    if (op === OP_PREP) {
      this.pendingPreps--;
      if (res !== 0 && !this.failure) this.failure = `queue ${qs.q}: PREP_IO_CMDS failed with ${res}`;
      return;
    }
    const total = e.count * this.elemBytes;
    if (res !== total) this.partialCommit(qs, e, res);
    if (res >= 0) this.wholeRefusals = 0;
    e.count = 0;
    this.pool[qs.ud]!.push(e);
  }

  // COMMIT_IO_CMDS (ublk_handle_batch_commit_cmd) walks the elements in order
  // and stops at the first one it cannot commit: `res` is then the bytes of
  // the elements before it, or that element's error when it was the first.
  // The only refusal a correct server meets is -EBUSY, an element whose tag
  // is not the server's (a duplicate; the others, -EINVAL for a bad tag or
  // address and -EFAULT for unreadable elements, are bugs of ours): it is
  // dropped and reported. But a command refused as a whole, for its header
  // (-EINVAL, or -E2BIG: more elements than the queue depth), also returns an
  // error, with nothing committed: then every element is kept. Whatever is
  // kept goes into the next turn's commit, never lost.
  private partialCommit(qs: QueueState, e: Elements, res: number): void {
    let from: number;
    if (res > 0 || res === -EBUSY) {
      const done = res > 0 ? Math.floor(res / this.elemBytes) : 0;
      if (this.refusals++ === 0) {
        console.error(`ublk-ts: queue ${qs.q}: COMMIT_IO_CMDS refused tag ${e.u32[done * this.elemWords + E_TAG_INDEX]! & 0xffff} ` +
          `(${res < 0 ? res : 'partial'}); committing the ${e.count - done - 1} after it (further refusals not shown)`);
      }
      from = done + 1;
    } else if (++this.wholeRefusals > MAX_WHOLE_REFUSALS) {
      // Refused again and again: our command is malformed, and retrying would spin. The thread fails,
      // and with it the device (its requests end with EIO): nothing hangs.
      if (!this.failure) this.failure = `queue ${qs.q}: COMMIT_IO_CMDS of ${e.count} elements failed with ${res}`;
      return;
    } else {
      from = 0;
    }
    for (let i = from; i < e.count; i++) {
      const w = i * this.elemWords;
      const lba = this.lbaWord < 0 ? 0 : e.u32[w + this.lbaWord]! + e.u32[w + this.lbaWord + 1]! * TWO_32;
      this.putElement(qs, qs.commit, e.u32[w + E_TAG_INDEX]! & 0xffff, e.i32[w + E_RESULT]!, lba);
    }
  }

  private injectDuplicate(e: Elements): void {
    const w = this.elemWords, u32 = e.u32;
    u32.copyWithin(e.count * w, w, 2 * w); // element 1 to the end
    u32.copyWithin(w, 0, w); // element 0 again in its place
    e.count++;
  }
}
