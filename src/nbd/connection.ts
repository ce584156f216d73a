// One NBD connection in the transmission phase, driven entirely by the serving
// thread's io_uring: requests go out in batches, one SENDMSG at a time (two
// sends in flight on one stream could interleave their bytes), and a recv
// stands on the socket for replies. That recv takes whatever has arrived, up
// to STAGE_BYTES, into a staging buffer, and the replies in it are parsed and
// their data copied out in one turn: at a high queue depth one recv brings
// many replies, where receiving each piece where it belongs (header, chunk
// header, data) cost three or four recvs per READ. A large READ payload still
// goes straight into the request's buffer (DIRECT_BYTES). Every reply header
// is checked before anything is written to a buffer: a bad magic, an unknown
// or stale handle, or a closed socket ends the connection (`onDead`), and the
// requests still in flight are handed back to the owner, never completed twice.
import { native } from '../native.js';
import type { Ring } from '../uring/ring.js';
import { prepRecv, prepSendmsg, prepShutdown } from '../uring/prep.js';
import type { UblkRequest } from '../ublk/worker/request.js';
import { NBD_CMD_WRITE, REQUEST_BYTES } from './constants.js';
import { encodeRequest } from './wire.js';
import { InFlight } from './in-flight.js';
import { ReplyParser, SCRATCH_BYTES } from './reply-parser.js';

const MSG_NOSIGNAL = 0x4000;
const MSG_WAITALL = 0x100;

/** The staging buffer replies are received into. */
const STAGE_BYTES = 64 * 1024;
/** A READ payload with at least this much still to come is received into the request's buffer, not staged and copied. */
const DIRECT_BYTES = 16 * 1024;
/** Requests per SENDMSG: two iovecs each, below IOV_MAX (1024). */
const BATCH = 256;
const IOV_BYTES = 16;
const MSGHDR_BYTES = 56;
/** struct msghdr (x86-64, aarch64): msg_iov at 16, msg_iovlen at 24. */
const MSG_IOV = 16, MSG_IOVLEN = 24;

// What an own SQE of a connection is, in the low bits of its sub (the connection's index above).
export const OP_SEND = 0, OP_RECV = 1, OP_SHUTDOWN = 2;
export const subOf = (conn: number, op: number): number => (conn << 2) | op;
export const subConn = (sub: number): number => sub >>> 2;
export const subOp = (sub: number): number => sub & 3;

/** What the connection needs from the serving thread. */
export interface ConnectionHost {
  readonly ring: Ring;
  ownSqe(sub: number): number;
  /** A reply arrived: complete the request (bytes for READ/WRITE, 0, or -errno). */
  replied(req: UblkRequest, result: number): void;
}

/** What an NBD command is, per queued request: type and flags (set by the owner before `queue`). */
export interface Command { type: number; flags: number }

export class NbdConnection {
  private readonly inFlight = new InFlight();
  /**
   * Slots waiting for their request to be sent (FIFO): sendQ[sendHead..sendTail).
   * The array is reused, never emptied with `length = 0`, which gives its
   * storage back and made the next push allocate anew (per request at QD 1).
   */
  private readonly sendQ: number[] = [];
  private sendHead = 0;
  private sendTail = 0;
  private sending = false;
  private sendIov = 0;
  private sendIovs = 0;
  private recvArmed = false;
  private readonly mem: ArrayBuffer;
  private readonly view: DataView;
  private readonly u32: Uint32Array;
  private readonly base: number;
  private readonly hdrAt = 0;
  private readonly iovAt = BATCH * 32;
  private readonly msgAt = BATCH * 32 + 2 * BATCH * IOV_BYTES;
  private readonly replyAt = this.msgAt + MSGHDR_BYTES + 8;
  private readonly stageAt = this.replyAt + SCRATCH_BYTES;
  private readonly stage: Uint8Array;
  private readonly parser: ReplyParser;
  /** The armed recv goes to the staging buffer (else straight to where the parser wants it). */
  private staged = false;
  dead = false;
  private shutting = false;

  constructor(private readonly host: ConnectionHost, readonly fd: number, private readonly index: number, structured: boolean,
    /** The connection died: these requests had no reply (the owner resends or fails them); `why` says what happened. */
    private readonly onDead: (pending: UblkRequest[], why: string) => void) {
    this.mem = native.alloc(this.stageAt + STAGE_BYTES);
    this.stage = new Uint8Array(this.mem, this.stageAt, STAGE_BYTES);
    this.view = new DataView(this.mem);
    this.u32 = new Uint32Array(this.mem);
    this.base = native.addressOf(this.mem);
    this.parser = new ReplyParser(this.inFlight, new DataView(this.mem, this.replyAt, SCRATCH_BYTES), structured, host.replied);
    const msg = this.msgAt >> 2;
    this.u32.fill(0, msg, msg + MSGHDR_BYTES / 4);
    this.armRecv();
  }

  get busy(): number { return this.inFlight.count; }

  /** Sends command `type` with `flags` for `req` (its offset and length; WRITE: its data). */
  queue(req: UblkRequest, type: number, flags: number): void {
    this.sendQ[this.sendTail++] = this.inFlight.add(req, type, flags);
    if (!this.sending) this.sendBatch();
  }

  onCqe(op: number, res: number): void {
    if (op === OP_SEND) this.onSent(res);
    else if (op === OP_RECV) this.onRecv(res);
    else this.shutting = false;
  }

  private sendBatch(): void {
    const q = this.sendQ, v = this.view, u32 = this.u32;
    let iov = this.iovAt >> 2, n = 0, iovs = 0;
    while (this.sendHead < this.sendTail && n < BATCH) {
      const slot = q[this.sendHead++]!, f = this.inFlight, req = f.req(slot), type = f.type(slot);
      const isWrite = type === NBD_CMD_WRITE;
      const hdr = this.hdrAt + n * 32;
      encodeRequest(v, hdr, type, f.flags(slot), slot, f.seq(slot), req.offset, req.length);
      iov = this.putIov(u32, iov, this.base + hdr, REQUEST_BYTES);
      iovs++;
      if (isWrite) {
        iov = this.putIov(u32, iov, req.bufferAddress, req.length);
        iovs++;
      }
      n++;
    }
    if (this.sendHead === this.sendTail) {
      this.sendHead = this.sendTail = 0;
    }
    if (n === 0) return;
    this.sendIov = 0;
    this.sendIovs = iovs;
    this.submitSend();
  }

  private putIov(u32: Uint32Array, at: number, addr: number, len: number): number {
    u32[at] = addr >>> 0;
    u32[at + 1] = Math.floor(addr / 2 ** 32);
    u32[at + 2] = len;
    u32[at + 3] = 0;
    return at + 4;
  }

  private submitSend(): void {
    const u32 = this.u32, m = this.msgAt >> 2;
    const iovAddr = this.base + this.iovAt + this.sendIov * IOV_BYTES;
    u32[m + MSG_IOV / 4] = iovAddr >>> 0;
    u32[m + MSG_IOV / 4 + 1] = Math.floor(iovAddr / 2 ** 32);
    u32[m + MSG_IOVLEN / 4] = this.sendIovs - this.sendIov;
    u32[m + MSG_IOVLEN / 4 + 1] = 0;
    this.sending = true;
    prepSendmsg(this.host.ring, this.host.ownSqe(subOf(this.index, OP_SEND)), this.fd, this.base + this.msgAt, MSG_NOSIGNAL | MSG_WAITALL);
  }

  private onSent(res: number): void {
    this.sending = false;
    if (this.dead) return;
    if (res <= 0) return this.die(res < 0 ? `send failed (errno ${-res})` : 'send made no progress');
    // A short send (a signal, a full buffer): move past what went out and send the rest.
    const u32 = this.u32;
    let i = this.sendIov;
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
    if (i < this.sendIovs) this.submitSend();
    else if (this.sendTail > this.sendHead) this.sendBatch();
  }

  private armRecv(): void {
    const p = this.parser, left = p.want - p.got;
    this.staged = p.into === null || left < DIRECT_BYTES;
    this.recvArmed = true;
    const s = this.host.ownSqe(subOf(this.index, OP_RECV));
    if (this.staged) prepRecv(this.host.ring, s, this.fd, this.base + this.stageAt, STAGE_BYTES, 0);
    else prepRecv(this.host.ring, s, this.fd, p.into!.bufferAddress + p.intoAt + p.got, left, MSG_WAITALL);
  }

  private onRecv(res: number): void {
    this.recvArmed = false;
    if (this.dead) return;
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
  get armed(): boolean { return this.sending || this.recvArmed || this.shutting; }
}
