// The requests of one NBD connection that wait for their reply, by handle: the
// handle's low half is a slot, its high half a per-slot counter, so a reply to
// a request that is gone (or a stale one for an earlier user of the slot) matches nothing.
import type { UblkRequest } from '../ublk/worker/request.js';
import { NBD_CMD_READ } from './constants.js';

export class InFlight {
  /** Requests by slot; null: free. */
  private readonly reqs: (UblkRequest | null)[] = [];
  /** Per slot: the NBD command type | flags << 16. */
  private readonly cmds: number[] = [];
  private readonly seqs: number[] = [];
  private readonly free: number[] = [];
  /**
   * Structured replies, per slot: bytes of the request covered by chunks so
   * far, their spans (start, end, ...; the first spanWords[slot] entries
   * count), the first error. A slot's span array is kept and overwritten, not
   * emptied: `length = 0` gives its storage back, and the next push made new
   * storage for every READ (about 190 bytes a request).
   */
  private readonly coveredBytes: number[] = [];
  private readonly spans: number[][] = [];
  private readonly spanWords: number[] = [];
  private readonly errors: number[] = [];
  /** Per slot, for the watchdog: the seq of the request it last saw there, and the time it first saw it. */
  private readonly watchedSeq: number[] = [];
  private readonly watchedSince: number[] = [];
  count = 0;
  /** How many of them are READs of at least `bulkBytes` (see NbdConnection.armRecv). */
  bulkReads = 0;

  constructor(private readonly bulkBytes = Infinity) {}

  private isBulkRead(slot: number): boolean {
    return (this.cmds[slot]! & 0xffff) === NBD_CMD_READ && this.reqs[slot]!.length >= this.bulkBytes;
  }

  /** Takes a slot for `req`; its handle is (slot, seq(slot)). */
  add(req: UblkRequest, type: number, flags: number): number {
    let slot = this.free.pop();
    if (slot === undefined) {
      slot = this.reqs.length;
      this.reqs.push(null);
      this.cmds.push(0);
      this.seqs.push(0);
      this.coveredBytes.push(0);
      this.spans.push([]);
      this.spanWords.push(0);
      this.errors.push(0);
      this.watchedSeq.push(-1);
      this.watchedSince.push(0);
    }
    this.coveredBytes[slot] = 0;
    this.spanWords[slot] = 0;
    this.errors[slot] = 0;
    this.reqs[slot] = req;
    this.cmds[slot] = type | (flags << 16);
    this.seqs[slot] = (this.seqs[slot]! + 1) >>> 0;
    this.count++;
    if (this.isBulkRead(slot)) this.bulkReads++;
    return slot;
  }

  req(slot: number): UblkRequest { return this.reqs[slot]!; }
  type(slot: number): number { return this.cmds[slot]! & 0xffff; }
  flags(slot: number): number { return this.cmds[slot]! >>> 16; }
  seq(slot: number): number { return this.seqs[slot]!; }

  /** The slot a reply's handle names, or -1 if no request waits under it. */
  find(handleLo: number, handleHi: number): number {
    return handleLo < this.reqs.length && this.reqs[handleLo] !== null && this.seqs[handleLo] === handleHi ? handleLo : -1;
  }

  /** Marks [at, at + len) of the request as covered by a chunk; false if that overlaps an earlier chunk. */
  cover(slot: number, at: number, len: number): boolean {
    const sp = this.spans[slot]!, n = this.spanWords[slot]!;
    for (let i = 0; i < n; i += 2) if (at < sp[i + 1]! && sp[i]! < at + len) return false;
    sp[n] = at;
    sp[n + 1] = at + len;
    this.spanWords[slot] = n + 2;
    this.coveredBytes[slot]! += len;
    return true;
  }

  covered(slot: number): number { return this.coveredBytes[slot]!; }
  /** Records an error chunk's errno (the first one counts). */
  fail(slot: number, errno: number): void { if (this.errors[slot] === 0) this.errors[slot] = errno; }
  error(slot: number): number { return this.errors[slot]!; }

  /**
   * The watchdog's look (now: Date.now()): how long the request that has
   * waited longest has waited, counted from the first look that saw it (so at
   * most one look's interval short). Nothing on the request path pays for it.
   */
  longestWait(now: number): number {
    let longest = 0;
    for (let slot = 0; slot < this.reqs.length; slot++) {
      if (this.reqs[slot] === null) continue;
      if (this.watchedSeq[slot] !== this.seqs[slot]) {
        this.watchedSeq[slot] = this.seqs[slot]!;
        this.watchedSince[slot] = now;
      } else if (now - this.watchedSince[slot]! > longest) {
        longest = now - this.watchedSince[slot]!;
      }
    }
    return longest;
  }

  release(slot: number): void {
    if (this.isBulkRead(slot)) this.bulkReads--;
    this.reqs[slot] = null;
    this.free.push(slot);
    this.count--;
  }

  /** Forgets every request, returning them. */
  drain(): UblkRequest[] {
    const out: UblkRequest[] = [];
    for (let slot = 0; slot < this.reqs.length; slot++) {
      const req = this.reqs[slot];
      if (req) {
        out.push(req);
        this.release(slot);
      }
    }
    return out;
  }
}
