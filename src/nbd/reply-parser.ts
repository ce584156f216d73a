// The reply stream of one NBD connection, parsed piece by piece: the parser
// says what to receive next (`want` bytes, into its scratch memory at
// `scratchAt`, or into request `into`'s buffer at `intoAt`; `got` of them are
// in). The bytes come either straight to that place (`filled`: a large READ
// payload received into the request's buffer) or in chunks of the stream
// (`feed`: a staging buffer's recv, a TLS stream's data), copied from there:
// into the request's tag buffer, or in zero copy, where the server has no
// buffer of the request's, straight into its pages with a pwrite on
// /dev/ublkcN at the request's user-copy position (`userCopyFd`). Those
// pwrites are made together at the end of each `feed` (one call into the
// addon for all the replies of a recv, not one each), and the replies that
// chunk finished are handed on only then, once their data is in place.
//
// Simple replies, and structured replies where negotiated: chunks of
// OFFSET_DATA and OFFSET_HOLE (a hole is zeroed in the buffer: sparse
// reads), in any order but never overlapping or outside the request, NONE,
// and the error chunks. Anything the specification does not allow is a
// complaint (a string): the connection must end, and nothing was completed.
import type { UblkRequest } from '../ublk/worker/request.js';
import { native } from '../native.js';
import { NBD_CMD_READ, NBD_CMD_WRITE, NBD_ERRNOS, NBD_ESHUTDOWN, NBD_SIMPLE_REPLY_MAGIC, NBD_STRUCTURED_REPLY_MAGIC } from './constants.js';
import type { InFlight } from './in-flight.js';

const NBD_REPLY_FLAG_DONE = 1;
const NBD_REPLY_TYPE_NONE = 0, NBD_REPLY_TYPE_OFFSET_DATA = 1, NBD_REPLY_TYPE_OFFSET_HOLE = 2;
const NBD_REPLY_TYPE_ERROR = 0x8001, NBD_REPLY_TYPE_ERROR_OFFSET = 0x8002;
/** Bit 15 of a chunk type: an error chunk (known or not). */
const ERROR_CHUNK = 0x8000;
const MAX_MESSAGE = 4096;
/** Scratch: a structured header (20 bytes), then a chunk's fixed payload or an error chunk. */
export const SCRATCH_BYTES = 64 + MAX_MESSAGE;
const PAYLOAD_AT = 20;
const EIO = 5;
const TWO_32 = 2 ** 32;
/**
 * NBD_ESHUTDOWN is no answer to the request: the server did not do it and is
 * going away, and the spec has the client disconnect. So it ends the
 * connection like a complaint, and the request is sent again on the next one
 * (a planned restart of the server, within --timeout, fails nothing).
 */
const SHUTTING_DOWN = 'the server is shutting down (NBD_ESHUTDOWN)';
/** A reply's error value as the request's errno (one the specification does not name is EIO). */
const errnoOf = (error: number): number => (NBD_ERRNOS.has(error) ? error : EIO);
/** Zeros for a hole in zero copy (written to the request's pages in pieces of this size). */
const ZEROS = new Uint8Array(64 * 1024);
/** Pieces of at most this many bytes are copied into the scratch by a loop here, not natively. */
const SMALL_COPY = 64;
/** Zero copy: at most this many pwrites wait for the end of a feed (more: they are made at once). */
const MAX_PUTS = 64;

const S_HEADER = 0, S_SIMPLE_DATA = 1, S_CHUNK_HEADER = 2, S_DATA_OFFSET = 3, S_DATA = 4, S_HOLE = 5, S_ERROR = 6;

export class ReplyParser {
  /** What to receive next: `want` bytes, into `into`'s buffer at `intoAt` or (into null) the scratch at `scratchAt`. */
  want = 16;
  /** Bytes of `want` received so far. */
  got = 0;
  into: UblkRequest | null = null;
  intoAt = 0;
  scratchAt = 0;
  private state = S_HEADER;
  /** The reply being read: its request's slot, and for a chunk its flags, type and length. */
  private slot = -1;
  private flags = 0;
  private type = 0;
  private length = 0;

  private readonly scratch: Uint8Array;

  // Zero copy, during a feed: the pwrites still to make from `batchSrc`
  // (puts: a triple per pwrite for native.rwMany, and whose request it is),
  // and the replies finished meanwhile (handed on after the pwrites).
  private batchSrc: Uint8Array | null = null;
  private readonly puts = new Float64Array(3 * MAX_PUTS);
  private readonly putReq: Array<UblkRequest | null> = [];
  private readonly putSlot = new Int32Array(MAX_PUTS);
  private nPuts = 0;
  private readonly doneReq: Array<UblkRequest | null> = [];
  private readonly doneRes: number[] = [];
  private nDone = 0;

  constructor(private readonly inFlight: InFlight, private readonly v: DataView, private readonly structured: boolean,
    private readonly replied: (req: UblkRequest, result: number) => void,
    /** Zero copy: /dev/ublkcN, where READ data goes (-1: into the tag buffer). */
    private readonly userCopyFd = -1) {
    this.scratch = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  }

  /**
   * Bytes from here to where a READ reply's data would start, if the reply
   * under way (or the next) is one: its header, and a structured reply's
   * chunk header and offset; 0 where the parser is in a chunk's payload.
   */
  toData(): number {
    const s = this.state, g = this.got;
    if (s === S_HEADER) return (this.structured ? 28 : 16) - g;
    if (s === S_CHUNK_HEADER) return 12 - g;
    if (s === S_DATA_OFFSET) return 8 - g;
    return 0;
  }

  /** `n` more of the wanted bytes landed in place: null, or what is wrong with the reply. */
  filled(n: number): string | null {
    this.got += n;
    if (this.got < this.want) return null;
    this.got = 0;
    return this.advance();
  }

  /**
   * Bytes `from`..`to` of `src`, the next ones of the stream: copied where
   * they belong, every reply they finish handled. Null, or what is wrong (the
   * rest is then not looked at: the connection must end).
   */
  feed(src: Uint8Array, from: number, to: number): string | null {
    if (this.userCopyFd < 0) return this.copyIn(src, from, to);
    this.batchSrc = src;
    try {
      return this.copyIn(src, from, to);
    } finally {
      // Also after a bad reply: the replies finished before it must still be handed on.
      this.flush();
      this.batchSrc = null;
    }
  }

  private copyIn(src: Uint8Array, from: number, to: number): string | null {
    while (from < to) {
      const n = Math.min(to - from, this.want - this.got);
      // (native.copyBytes: a subarray view per copy was most of what a READ reply allocated)
      if (this.into === null) {
        // A header piece (4-20 bytes, three per structured READ reply) is copied
        // here: a call into the native addon costs more than the copy.
        if (n <= SMALL_COPY) for (let i = 0, d = this.scratchAt + this.got; i < n; i++) this.scratch[d + i] = src[from + i]!;
        else native.copyBytes(this.scratch, this.scratchAt + this.got, src, from, n);
      }
      else if (this.userCopyFd < 0) native.copyBytes(this.into.buffer, this.intoAt + this.got, src, from, n);
      else this.put(this.into, this.intoAt + this.got, src, from, n);
      from += n;
      const bad = this.filled(n);
      if (bad !== null) return bad;
    }
    return null;
  }

  /**
   * Zero copy: `n` bytes of `src` from `from` into `req`'s pages at `at`.
   * Should the driver refuse (the device is going away), the request fails
   * with EIO once its reply is in; the stream goes on.
   */
  private put(req: UblkRequest, at: number, src: Uint8Array, from: number, n: number): void {
    if (src !== this.batchSrc) {
      const r = req.writePages(this.userCopyFd, src, from, n, at);
      if (r !== n) this.inFlight.fail(this.slot, EIO);
      return;
    }
    if (this.nPuts === MAX_PUTS) this.flush();
    const i = this.nPuts++, p = this.puts;
    p[3 * i] = from;
    p[3 * i + 1] = n;
    p[3 * i + 2] = req.userCopyPos + at;
    this.putReq[i] = req;
    this.putSlot[i] = this.slot;
  }

  /** Zero copy: makes the pwrites waiting, then hands on the replies finished meanwhile. */
  private flush(): void {
    const n = this.nPuts, p = this.puts;
    if (n > 0) {
      this.nPuts = 0;
      native.rwMany(this.userCopyFd, this.batchSrc!, p, n, true);
      for (let i = 0; i < n; i++) {
        if (p[3 * i] !== p[3 * i + 1]) this.putFailed(this.putReq[i]!, this.putSlot[i]!);
        this.putReq[i] = null;
      }
    }
    const d = this.nDone;
    this.nDone = 0;
    for (let i = 0; i < d; i++) {
      const req = this.doneReq[i]!;
      this.doneReq[i] = null;
      this.replied(req, this.doneRes[i]!);
    }
  }

  /**
   * A pwrite the driver refused (the device is going away): the request fails
   * with EIO, whether its reply finished in this feed or is still to come.
   */
  private putFailed(req: UblkRequest, slot: number): void {
    for (let k = 0; k < this.nDone; k++) {
      if (this.doneReq[k] === req) {
        this.doneRes[k] = -EIO;
        return;
      }
    }
    this.inFlight.fail(slot, EIO);
  }

  /** The `want` bytes are in: null, or what is wrong with the reply. */
  private advance(): string | null {
    switch (this.state) {
      case S_HEADER: return this.header();
      case S_SIMPLE_DATA: {
        const error = this.inFlight.error(this.slot);
        return this.complete(error ? -error : this.inFlight.req(this.slot).length);
      }
      case S_CHUNK_HEADER: return this.chunkHeader();
      case S_DATA_OFFSET: return this.dataOffset();
      case S_DATA: return this.chunkDone();
      case S_HOLE: return this.hole();
      default: return this.errorChunk();
    }
  }

  private next(state: number, want: number, scratchAt: number, into: UblkRequest | null = null, intoAt = 0): null {
    this.state = state;
    this.want = want;
    this.scratchAt = scratchAt;
    this.into = into;
    this.intoAt = intoAt;
    return null;
  }

  private find(lo: number, hi: number): string | null {
    this.slot = this.inFlight.find(lo, hi);
    return this.slot < 0 ? `the server replied to handle ${hi}:${lo}, which is not in flight` : null;
  }

  private header(): string | null {
    const v = this.v, magic = v.getUint32(0);
    if (magic === NBD_STRUCTURED_REPLY_MAGIC) {
      if (!this.structured) return 'the server sent a structured reply, which was not negotiated';
      return this.next(S_CHUNK_HEADER, 4, 16);
    }
    if (magic !== NBD_SIMPLE_REPLY_MAGIC) return `the server sent a reply with bad magic 0x${magic.toString(16)}`;
    const bad = this.find(v.getUint32(12), v.getUint32(8));
    if (bad !== null) return bad;
    const error = v.getUint32(4), type = this.inFlight.type(this.slot), req = this.inFlight.req(this.slot);
    if (error === NBD_ESHUTDOWN) return SHUTTING_DOWN;
    if (error !== 0) return this.complete(-errnoOf(error));
    if (type !== NBD_CMD_READ) return this.complete(type === NBD_CMD_WRITE ? req.length : 0);
    if (this.structured) return 'the server sent a simple reply with data to a READ, where structured replies were negotiated';
    return this.next(S_SIMPLE_DATA, req.length, 0, req, 0);
  }

  private chunkHeader(): string | null {
    const v = this.v;
    const bad = this.find(v.getUint32(12), v.getUint32(8));
    if (bad !== null) return bad;
    this.flags = v.getUint16(4);
    this.type = v.getUint16(6);
    this.length = v.getUint32(16);
    const read = this.inFlight.type(this.slot) === NBD_CMD_READ, t = this.type, len = this.length;
    if (t === NBD_REPLY_TYPE_NONE) {
      if (len !== 0 || !(this.flags & NBD_REPLY_FLAG_DONE)) return 'the server sent a NONE chunk with data or without DONE';
      return this.chunkDone();
    }
    if (t === NBD_REPLY_TYPE_OFFSET_DATA && read && len > 8) return this.next(S_DATA_OFFSET, 8, PAYLOAD_AT);
    if (t === NBD_REPLY_TYPE_OFFSET_HOLE && read && len === 12) return this.next(S_HOLE, 12, PAYLOAD_AT);
    if (t & ERROR_CHUNK && len >= 6 && len <= 14 + MAX_MESSAGE) return this.next(S_ERROR, len, PAYLOAD_AT);
    return `the server sent a chunk of type ${t} and ${len} bytes, not allowed there`;
  }

  /** The request-relative start of a chunk at absolute `offset` of `len` bytes, or a complaint. */
  private place(offset: number, len: number): number | string {
    const req = this.inFlight.req(this.slot), at = offset - req.offset;
    if (len === 0 || at < 0 || at + len > req.length) return `the server sent a chunk of ${len} bytes at ${offset}, outside the request`;
    if (!this.inFlight.cover(this.slot, at, len)) return `the server sent a chunk of ${len} bytes at ${offset} that overlaps an earlier one`;
    return at;
  }

  private dataOffset(): string | null {
    const v = this.v, offset = v.getUint32(PAYLOAD_AT) * TWO_32 + v.getUint32(PAYLOAD_AT + 4);
    const at = this.place(offset, this.length - 8);
    if (typeof at === 'string') return at;
    return this.next(S_DATA, this.length - 8, 0, this.inFlight.req(this.slot), at);
  }

  private hole(): string | null {
    const v = this.v, offset = v.getUint32(PAYLOAD_AT) * TWO_32 + v.getUint32(PAYLOAD_AT + 4), size = v.getUint32(PAYLOAD_AT + 8);
    const at = this.place(offset, size);
    if (typeof at === 'string') return at;
    // A hole reads as zeros.
    const req = this.inFlight.req(this.slot);
    if (this.userCopyFd < 0) req.buffer.fill(0, at, at + size);
    else for (let done = 0; done < size; done += ZEROS.length) this.put(req, at + done, ZEROS, 0, Math.min(ZEROS.length, size - done));
    return this.chunkDone();
  }

  private errorChunk(): string | null {
    const v = this.v, error = v.getUint32(PAYLOAD_AT), msgLen = v.getUint16(PAYLOAD_AT + 4);
    const fixed = this.type === NBD_REPLY_TYPE_ERROR_OFFSET ? 14 : 6;
    if (error === 0 || msgLen > this.length - fixed) return `the server sent an error chunk with error ${error} and a message of ${msgLen} bytes in ${this.length}`;
    if (error === NBD_ESHUTDOWN) return SHUTTING_DOWN;
    if (this.type !== NBD_REPLY_TYPE_ERROR && this.type !== NBD_REPLY_TYPE_ERROR_OFFSET) {
      this.inFlight.fail(this.slot, EIO); // an error type we do not know: still an error
    } else {
      this.inFlight.fail(this.slot, errnoOf(error));
    }
    return this.chunkDone();
  }

  private chunkDone(): string | null {
    if (!(this.flags & NBD_REPLY_FLAG_DONE)) return this.next(S_HEADER, 16, 0);
    const f = this.inFlight, slot = this.slot, req = f.req(slot), error = f.error(slot), type = f.type(slot);
    if (error) return this.complete(-error);
    if (type === NBD_CMD_READ) {
      if (f.covered(slot) !== req.length) return `the server ended a READ reply with ${f.covered(slot)} of ${req.length} bytes`;
      return this.complete(req.length);
    }
    return this.complete(type === NBD_CMD_WRITE ? req.length : 0);
  }

  private complete(result: number): null {
    const req = this.inFlight.req(this.slot);
    this.inFlight.release(this.slot);
    if (this.batchSrc === null) this.replied(req, result);
    else {
      // (handed on by flush, after the pwrites of its data)
      this.doneReq[this.nDone] = req;
      this.doneRes[this.nDone++] = result;
    }
    return this.next(S_HEADER, 16, 0);
  }
}
