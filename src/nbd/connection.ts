// One NBD connection in the transmission phase, driven entirely by the serving
// thread's io_uring: requests go out in batches, one chain of sends at a time
// (two sends in flight on one stream could interleave their bytes), and a recv
// stands on the socket for replies. That recv takes whatever has arrived, up
// to STAGE_BYTES, into a staging buffer, and the replies in it are parsed and
// their data copied out in one turn: at a high queue depth one recv brings
// many replies, where receiving each piece where it belongs (header, chunk
// header, data) cost three or four recvs per READ. A large READ payload still
// goes straight into the request's buffer (DIRECT_BYTES), and while only large
// READs are in flight the staged recv stops where the next payload would
// start, so none of a payload is staged (stageBytes). Every reply header
// is checked before anything is written to a buffer: a bad magic, an unknown
// or stale handle, or a closed socket ends the connection (`onDead`), and the
// requests still in flight are handed back to the owner, never completed twice.
//
// In zero copy the server holds no copy of a request's data: the kernel
// registered the request's pages in the ring's buffer table (req.bufIndex).
// A large WRITE payload goes from there to the socket (WRITE_FIXED), linked
// behind the SENDMSG of the headers before it, so one chain carries a batch
// in stream order; a small one (below DIRECT_BYTES) is read out with user
// copy (preads on /dev/ublkcN, one call for the batch) into our memory and
// goes in the SENDMSG with the headers (a linked send of its own per 4 KiB
// write cut 4k randwrite at QD 64 to 0.4x). A large READ payload comes from
// the socket straight into the pages: each of its bytes crosses memory once,
// as in the kernel's own NBD client. Where the kernel takes a registered
// buffer for RECV (Linux 7.2), that is one RECV with MSG_WAITALL for the
// whole payload; elsewhere READ_FIXED, which takes what has arrived (a 512
// KiB payload over a Unix socket: about eight, each a trip through
// JavaScript), and the first RECV's -EINVAL says which. A staged one (a small
// READ's) is put there with user copy (the parser's pwrites, one call per
// recv), crossing memory twice, as every byte does in the other modes
// (socket and tag buffer, tag buffer and request).
import { native } from '../native.js';
import type { Ring } from '../uring/ring.js';
import { addSqeFlags, prepReadFixed, prepRecv, prepRecvFixed, prepSendmsg, prepSetsockopt, prepShutdown, prepWriteFixed } from '../uring/prep.js';
import { IOSQE_IO_LINK } from '../uring/constants.js';
import type { UblkRequest } from '../ublk/worker/request.js';
import { NBD_CMD_WRITE, REQUEST_BYTES } from './constants.js';
import { ECANCELED, EINVAL, EIO } from '../sys.js';
import { encodeRequest } from './wire.js';
import { InFlight } from './in-flight.js';
import { ReplyParser, SCRATCH_BYTES } from './reply-parser.js';

const MSG_NOSIGNAL = 0x4000;
const MSG_WAITALL = 0x100;
const SOL_SOCKET = 1, SO_SNDBUFFORCE = 32;
/**
 * Our socket's send buffer (the kernel doubles it). The default (about 208
 * KiB) cut a 512 KiB WRITE_FIXED into 3-5 sends of its own, each a trip
 * through JavaScript. Raising it past net.core.wmem_max takes SO_SNDBUFFORCE,
 * which needs CAP_NET_ADMIN: without it (an unprivileged server) the default stays.
 */
const SEND_BUFFER_BYTES = 4 * 1024 * 1024;

/** Whether this kernel takes a registered buffer for RECV (IORING_RECVSEND_FIXED_BUF); learnt from the first one's -EINVAL. */
let kernelRecvFixed = true;

/** The staging buffer replies are received into. */
const STAGE_BYTES = 64 * 1024;
/**
 * A READ payload with at least this much still to come is received into the
 * request's buffer, not staged and copied; in zero copy a WRITE payload this
 * large is sent from the request's pages, a smaller one copied out first.
 */
const DIRECT_BYTES = 16 * 1024;
/**
 * Zero copy: whether a request's data is read out of its pages into the send
 * stage (a small WRITE). copyOutAll and sendBatch must agree on it: the
 * results of the one are matched to the requests of the other in order.
 */
const copiedOut = (type: number, req: UblkRequest): boolean => type === NBD_CMD_WRITE && req.length < DIRECT_BYTES;
/** Zero copy: room for the small WRITE payloads of one batch. */
const SEND_STAGE_BYTES = 256 * 1024;
/** Requests per SENDMSG: two iovecs each, below IOV_MAX (1024). */
const BATCH = 256;
const IOV_BYTES = 16;
const MSGHDR_BYTES = 56;
/** Most SQEs in one chain of sends (zero copy: a SENDMSG and a WRITE_FIXED per WRITE); the rest go in the next. */
const MAX_SEGS = 32;
/** struct msghdr (x86-64, aarch64): msg_iov at 16, msg_iovlen at 24. */
const MSG_IOV = 16, MSG_IOVLEN = 24;

// What an own SQE of a connection is, in its sub: the operation in bits 0-1,
// the connection's index in bits 2-23, a send's place in its chain above.
export const OP_SEND = 0, OP_RECV = 1, OP_SHUTDOWN = 2, OP_SETSOCKOPT = 3;
export const subOf = (conn: number, op: number, seg = 0): number => ((seg << 24) | (conn << 2) | op) >>> 0;
export const subConn = (sub: number): number => (sub >>> 2) & 0x3fffff;
export const subOp = (sub: number): number => sub & 3;
const subSeg = (sub: number): number => sub >>> 24;

/** What the connection needs from the serving thread. */
export interface ConnectionHost {
  readonly ring: Ring;
  ownSqe(sub: number): number;
  /** The next `n` ownSqe calls hand out SQEs of one submission (a linked chain). */
  reserve(n: number): void;
  /** A reply arrived: complete the request (bytes for READ/WRITE, 0, or -errno). */
  replied(req: UblkRequest, result: number): void;
}

/** What an NBD command is, per queued request: type and flags (set by the owner before `queue`). */
export interface Command { type: number; flags: number }

export class NbdConnection {
  private readonly inFlight = new InFlight(DIRECT_BYTES);
  /**
   * Slots waiting for their request to be sent (FIFO): sendQ[sendHead..sendTail).
   * The array is reused, never emptied with `length = 0`, which gives its
   * storage back and made the next push allocate anew (per request at QD 1).
   */
  private readonly sendQ: number[] = [];
  private sendHead = 0;
  private sendTail = 0;
  /** A chain of sends is in flight: `chainCqes` of its `chainSegs` CQEs are in; `broken` once one fell short. */
  private sending = false;
  private chainSegs = 0;
  private chainCqes = 0;
  private broken = false;
  /** The batch's iovecs: [sendIov, sendIovs) are still to go. */
  private sendIov = 0;
  private sendIovs = 0;
  /** Per iovec: the fixed buffer it lies in (zero copy: a WRITE's payload), or -1 (our memory, or a tag buffer). */
  private readonly iovFixed = new Int32Array(2 * BATCH);
  /** Zero copy: per small WRITE of the batch, where its data goes in the send stage, its length, its user-copy position (then its result). */
  private readonly outTable = new Float64Array(3 * BATCH);
  /** Per send of the chain: its first iovec and the one after its last. */
  private readonly segStart = new Int32Array(MAX_SEGS);
  private readonly segEnd = new Int32Array(MAX_SEGS);
  private recvArmed = false;
  private readonly mem: ArrayBuffer;
  private readonly view: DataView;
  private readonly u32: Uint32Array;
  private readonly base: number;
  private readonly hdrAt = 0;
  private readonly iovAt = BATCH * 32;
  private readonly msgAt = BATCH * 32 + 2 * BATCH * IOV_BYTES;
  private readonly optAt = this.msgAt + MAX_SEGS * MSGHDR_BYTES;
  private readonly replyAt = this.optAt + 8;
  private readonly stageAt = this.replyAt + SCRATCH_BYTES;
  private readonly sendStageAt = this.stageAt + STAGE_BYTES;
  private readonly sendStage: Uint8Array;
  private readonly stage: Uint8Array;
  private readonly parser: ReplyParser;
  /** The armed recv goes to the staging buffer (else straight to where the parser wants it). */
  private staged = false;
  /** Whether the recv in flight is a RECV into a registered buffer (IORING_RECVSEND_FIXED_BUF). */
  private recvFixed = false;
  dead = false;
  private shutting = false;
  private configuring = false;

  /** Zero copy (the requests' pages are in the ring's buffer table): /dev/ublkcN, else -1. */
  private readonly userCopyFd: number;

  constructor(private readonly host: ConnectionHost, readonly fd: number, private readonly index: number, structured: boolean,
    /** The connection died: these requests had no reply (the owner resends or fails them); `why` says what happened. */
    private readonly onDead: (pending: UblkRequest[], why: string) => void,
    /** Zero copy: /dev/ublkcN, for the READ data the parser puts in place (-1: the requests have tag buffers). */
    userCopyFd = -1) {
    this.userCopyFd = userCopyFd;
    this.mem = native.alloc(this.sendStageAt + (userCopyFd >= 0 ? SEND_STAGE_BYTES : 0));
    this.stage = new Uint8Array(this.mem, this.stageAt, STAGE_BYTES);
    this.sendStage = new Uint8Array(this.mem, this.sendStageAt);
    this.view = new DataView(this.mem);
    this.u32 = new Uint32Array(this.mem);
    this.base = native.addressOf(this.mem);
    this.parser = new ReplyParser(this.inFlight, new DataView(this.mem, this.replyAt, SCRATCH_BYTES), structured, host.replied, userCopyFd);
    const msg = this.msgAt >> 2;
    this.u32.fill(0, msg, msg + MAX_SEGS * MSGHDR_BYTES / 4);
    this.growSendBuffer();
    this.armRecv();
  }

  /** Best effort (a failure leaves the default, and more trips through JavaScript for large WRITEs). */
  private growSendBuffer(): void {
    this.view.setInt32(this.optAt, SEND_BUFFER_BYTES, true);
    this.configuring = true;
    prepSetsockopt(this.host.ring, this.host.ownSqe(subOf(this.index, OP_SETSOCKOPT)), this.fd, SOL_SOCKET, SO_SNDBUFFORCE, this.base + this.optAt, 4);
  }

  get busy(): number { return this.inFlight.count; }
  /** The watchdog's look: how long (ms) the longest-waiting request has waited for its reply. */
  longestWait(now: number): number { return this.inFlight.longestWait(now); }

  /** Sends command `type` with `flags` for `req` (its offset and length; WRITE: its data). */
  queue(req: UblkRequest, type: number, flags: number): void {
    this.sendQ[this.sendTail++] = this.inFlight.add(req, type, flags);
    if (!this.sending) this.sendBatch();
  }

  /** The CQE of an own SQE (`sub` as made by subOf). */
  onCqe(sub: number, res: number): void {
    const op = subOp(sub);
    if (op === OP_SEND) this.onSent(subSeg(sub), res);
    else if (op === OP_RECV) this.onRecv(res);
    else if (op === OP_SHUTDOWN) this.shutting = false;
    else this.configuring = false;
  }

  /**
   * Sends the next batch of queued requests. One whose every request failed
   * its read-out (zero copy, the driver refusing) sends nothing, and then
   * nothing else would start the rest: the next batch is taken at once.
   */
  private sendBatch(): void {
    while (!this.batch() && this.sendTail > this.sendHead && !this.dead);
  }

  /** One batch: whether it went out (a chain on the ring). */
  private batch(): boolean {
    const q = this.sendQ, v = this.view, u32 = this.u32, f = this.inFlight, zeroCopy = this.userCopyFd >= 0;
    const take = zeroCopy ? this.copyOutAll() : Math.min(this.sendTail - this.sendHead, BATCH), out = this.outTable;
    let iov = this.iovAt >> 2, n = 0, iovs = 0, staged = 0, c = 0;
    let failed: UblkRequest[] | null = null;
    for (let k = 0; k < take; k++) {
      const slot = q[this.sendHead++]!, req = f.req(slot), type = f.type(slot);
      const isWrite = type === NBD_CMD_WRITE, copyOut = zeroCopy && copiedOut(type, req);
      let at = 0;
      if (copyOut) {
        // (read out by copyOutAll, at the same place of the stage)
        const ok = out[3 * c++] === req.length;
        at = staged;
        staged += req.length;
        if (!ok) {
          f.release(slot);
          (failed ??= []).push(req); // completed once the batch is out of the way
          continue;
        }
      }
      const hdr = this.hdrAt + n * 32;
      encodeRequest(v, hdr, type, f.flags(slot), slot, f.seq(slot), req.offset, req.length);
      this.iovFixed[iovs++] = -1;
      iov = this.putIov(u32, iov, this.base + hdr, REQUEST_BYTES);
      if (copyOut) {
        this.iovFixed[iovs++] = -1;
        iov = this.putIov(u32, iov, this.base + this.sendStageAt + at, req.length);
      } else if (isWrite) {
        this.iovFixed[iovs++] = zeroCopy ? req.bufIndex : -1;
        iov = this.putIov(u32, iov, req.bufferAddress, req.length);
      }
      n++;
    }
    if (this.sendHead === this.sendTail) {
      this.sendHead = this.sendTail = 0;
    }
    if (n > 0) {
      this.sendIov = 0;
      this.sendIovs = iovs;
      this.submitChain();
    }
    if (failed !== null) for (const req of failed) this.host.replied(req, -EIO);
    return n > 0;
  }

  /**
   * Zero copy: the data of the small WRITEs among the next requests, read
   * out of their pages (user copy) into the send stage, one after the other,
   * with one call into the addon for all; each one's result in `outTable`.
   * Returns how many requests the batch takes (it ends where the stage is full).
   */
  private copyOutAll(): number {
    const q = this.sendQ, f = this.inFlight, out = this.outTable, max = Math.min(this.sendTail - this.sendHead, BATCH);
    let k = 0, c = 0, staged = 0;
    for (; k < max; k++) {
      const slot = q[this.sendHead + k]!, req = f.req(slot);
      if (!copiedOut(f.type(slot), req)) continue;
      if (staged + req.length > SEND_STAGE_BYTES) break; // the next batch takes it
      out[3 * c] = staged;
      out[3 * c + 1] = req.length;
      out[3 * c++ + 2] = req.userCopyPos;
      staged += req.length;
    }
    if (c > 0) native.rwMany(this.userCopyFd, this.sendStage, out, c, false);
    return k;
  }

  private putIov(u32: Uint32Array, at: number, addr: number, len: number): number {
    u32[at] = addr >>> 0;
    u32[at + 1] = Math.floor(addr / 2 ** 32);
    u32[at + 2] = len;
    u32[at + 3] = 0;
    return at + 4;
  }

  /**
   * Sends iovecs [sendIov, sendIovs) as one IOSQE_IO_LINK chain (the first
   * MAX_SEGS sends of it): a SENDMSG per run of iovecs in our memory or tag
   * buffers, a WRITE_FIXED per payload in a fixed buffer.
   */
  private submitChain(): void {
    const u32 = this.u32, fixed = this.iovFixed, ring = this.host.ring, end = this.sendIovs;
    let i = this.sendIov, n = 0;
    while (i < end && n < MAX_SEGS) {
      let j = i + 1;
      if (fixed[i]! < 0) while (j < end && fixed[j]! < 0) j++;
      this.segStart[n] = i;
      this.segEnd[n++] = j;
      i = j;
    }
    this.host.reserve(n);
    for (let k = 0; k < n; k++) {
      const a = this.segStart[k]!, at = (this.iovAt >> 2) + a * 4;
      const s = this.host.ownSqe(subOf(this.index, OP_SEND, k));
      if (fixed[a]! >= 0) {
        // (a socket ignores the file offset; the address is the payload's place in the fixed buffer)
        prepWriteFixed(ring, s, this.fd, u32[at]! + u32[at + 1]! * 2 ** 32, u32[at + 2]!, 0, fixed[a]!);
      } else {
        const m = (this.msgAt + k * MSGHDR_BYTES) >> 2, iovAddr = this.base + this.iovAt + a * IOV_BYTES;
        u32[m + MSG_IOV / 4] = iovAddr >>> 0;
        u32[m + MSG_IOV / 4 + 1] = Math.floor(iovAddr / 2 ** 32);
        u32[m + MSG_IOVLEN / 4] = this.segEnd[k]! - a;
        u32[m + MSG_IOVLEN / 4 + 1] = 0;
        prepSendmsg(ring, s, this.fd, this.base + this.msgAt + k * MSGHDR_BYTES, MSG_NOSIGNAL | MSG_WAITALL);
      }
      if (k < n - 1) addSqeFlags(ring, s, IOSQE_IO_LINK);
    }
    this.sending = true;
    this.chainSegs = n;
    this.chainCqes = 0;
    this.broken = false;
  }

  /** Bytes iovecs [from, to) still hold. */
  private iovBytes(from: number, to: number): number {
    let n = 0;
    for (let i = from; i < to; i++) n += this.u32[(this.iovAt >> 2) + i * 4 + 2]!;
    return n;
  }

  private onSent(seg: number, res: number): void {
    this.chainCqes++;
    if (!this.dead && !this.broken) {
      const from = this.segStart[seg]!, to = this.segEnd[seg]!;
      if (res > 0 && res === this.iovBytes(from, to)) {
        if (to > this.sendIov) this.sendIov = to;
      } else {
        // Short (a full socket buffer, a signal): the rest of the chain is
        // cancelled; once its CQEs are in, the chain starts again where this one stopped.
        this.broken = true;
        if (res <= 0) this.die(res === 0 ? 'send made no progress' : `send failed (errno ${-res})`);
        else this.consumed(from, res);
      }
    } else if (!this.dead && res < 0 && res !== -ECANCELED) {
      this.die(`send failed (errno ${-res})`);
    }
    if (this.chainCqes < this.chainSegs) return;
    this.sending = false;
    if (this.dead) return;
    if (this.sendIov < this.sendIovs) this.submitChain();
    else if (this.sendTail > this.sendHead) this.sendBatch();
  }

  /** `res` bytes from iovec `from` on went out: sendIov moves past them, a partly sent iovec keeps its rest. */
  private consumed(from: number, res: number): void {
    const u32 = this.u32;
    let i = from;
    while (i < this.sendIovs) {
      const at = (this.iovAt >> 2) + i * 4, len = u32[at + 2]!;
      if (res < len) {
        const addr = u32[at]! + u32[at + 1]! * 2 ** 32 + res;
        this.putIov(u32, at, addr, len - res);
        break;
      }
      res -= len;
      i++;
    }
    this.sendIov = i;
  }

  private armRecv(): void {
    const p = this.parser, left = p.want - p.got;
    this.staged = p.into === null || left < DIRECT_BYTES;
    this.recvArmed = true;
    this.recvFixed = false;
    const s = this.host.ownSqe(subOf(this.index, OP_RECV));
    if (this.staged) prepRecv(this.host.ring, s, this.fd, this.base + this.stageAt, this.stageBytes(), 0);
    else {
      const req = p.into!, addr = req.bufferAddress + p.intoAt + p.got;
      if (this.userCopyFd < 0) prepRecv(this.host.ring, s, this.fd, addr, left, MSG_WAITALL);
      else if ((this.recvFixed = kernelRecvFixed)) prepRecvFixed(this.host.ring, s, this.fd, addr, left, MSG_WAITALL, req.bufIndex);
      // (READ_FIXED has no MSG_WAITALL: it returns what has arrived, and the next one takes the rest)
      else prepReadFixed(this.host.ring, s, this.fd, addr, left, 0, req.bufIndex);
    }
  }

  /**
   * How much the next staged recv takes. Where every request in flight is a
   * large READ, only up to where its data starts: the data then comes
   * straight into the request's buffer, none of it staged and copied again
   * (a full stage's recv took the first 64 KiB of each 512 KiB READ that
   * way, which cost more than the other 448 KiB).
   */
  private stageBytes(): number {
    const f = this.inFlight, lead = this.parser.toData();
    return lead > 0 && f.count > 0 && f.bulkReads === f.count ? lead : STAGE_BYTES;
  }

  private onRecv(res: number): void {
    this.recvArmed = false;
    if (this.dead) return;
    if (res === -EINVAL && this.recvFixed) {
      kernelRecvFixed = false; // a kernel before 7.2: READ_FIXED from now on
      return this.armRecv();
    }
    if (res <= 0) return this.die(res === 0 ? 'the server closed the connection' : `recv failed (errno ${-res})`);
    const bad = this.staged ? this.parser.feed(this.stage, 0, res) : this.parser.filled(res);
    if (bad !== null) return this.die(bad);
    this.armRecv();
  }

  /** Ends the connection: the socket is shut, the requests without a reply go back to the owner. */
  die(why: string): void {
    if (this.dead) return;
    this.dead = true;
    const pending = this.inFlight.drain();
    this.sendHead = this.sendTail = 0;
    // Our recv (and a send) may still wait on the socket: shutting it down ends them.
    this.shutting = true;
    prepShutdown(this.host.ring, this.host.ownSqe(subOf(this.index, OP_SHUTDOWN)), this.fd, 2);
    this.onDead(pending, why);
  }

  /** Whether an operation of ours is still in flight on the ring (the kernel may still use our memory). */
  get armed(): boolean { return this.sending || this.recvArmed || this.shutting || this.configuring; }
}
