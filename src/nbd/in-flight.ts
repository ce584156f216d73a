// The requests of one NBD connection that wait for their reply, by handle: the
// handle's low half is a slot, its high half a per-slot counter, so a reply to
// a request that is gone (or a stale one for an earlier user of the slot) matches nothing.
import type { UblkRequest } from '../ublk/worker/request.js';
import { DATA_FOLLOWS, decodeSimpleReply, replyResult, type SimpleReply } from './wire.js';

/** settle(): the reply completed its request. */
export const SETTLED = -1;

export class InFlight {
  /** Requests by slot; null: free. */
  private readonly reqs: (UblkRequest | null)[] = [];
  /** Per slot: the NBD command type | flags << 16. */
  private readonly cmds: number[] = [];
  private readonly seqs: number[] = [];
  private readonly free: number[] = [];
  count = 0;

  /** Takes a slot for `req`; its handle is (slot, seq(slot)). */
  add(req: UblkRequest, type: number, flags: number): number {
    let slot = this.free.pop();
    if (slot === undefined) {
      slot = this.reqs.length;
      this.reqs.push(null);
      this.cmds.push(0);
      this.seqs.push(0);
    }
    this.reqs[slot] = req;
    this.cmds[slot] = type | (flags << 16);
    this.seqs[slot] = (this.seqs[slot]! + 1) >>> 0;
    this.count++;
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

  release(slot: number): void {
    this.reqs[slot] = null;
    this.free.push(slot);
    this.count--;
  }

  /**
   * Takes the simple reply header at byte `at` of `v` (decoded into `r`): the
   * request it answers is completed through `replied`, or its slot returned
   * when READ data follows (SETTLED otherwise); a string says what is wrong
   * with the reply (the connection is then unusable, nothing was completed).
   */
  settle(v: DataView, at: number, r: SimpleReply, replied: (req: UblkRequest, result: number) => void): number | string {
    const bad = decodeSimpleReply(v, at, r);
    if (bad !== null) return `the server sent ${bad}`;
    const slot = this.find(r.handleLo, r.handleHi);
    if (slot < 0) return `the server replied to handle ${r.handleHi}:${r.handleLo}, which is not in flight`;
    const req = this.reqs[slot]!, result = replyResult(r, this.type(slot), req);
    if (result === DATA_FOLLOWS) return slot;
    this.release(slot);
    replied(req, result);
    return SETTLED;
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
