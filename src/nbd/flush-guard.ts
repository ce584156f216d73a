// What a FLUSH may claim after connections were lost. A FLUSH that succeeds
// tells the filesystem that every write completed before it is durable; an
// NBD server holds acknowledged writes in its cache until a flush, and a
// server that restarted (or, without NBD_FLAG_CAN_MULTI_CONN, any new
// connection) owes nothing for what was acknowledged on a connection now
// gone. NBD has no way to tell a restarted server from a dropped connection
// (NFS has its write verifier; NBD nothing), and we keep no copy of written
// data to send again. So when the device's last connection drops while some
// acknowledged write is covered by no completed FLUSH, the next FLUSH fails
// with EIO (once): the filesystem hears that data may be lost, instead of
// trusting a journal commit that may not be there. While another connection
// of the device lives, the server is alive, and with several connections the
// export has CAN_MULTI_CONN (setup refuses them otherwise): its cache, shared
// by the connections, still holds those writes, so one connection dropping
// costs nothing. A server that recovers a device (`ublk-ts recover`) starts
// with nothing to hold against the server: what its predecessor had
// acknowledged and not flushed, it cannot know.
//
// The counters are the device's, shared by its serving threads (a FLUSH on
// one queue covers writes completed on every queue): Int32 words of a
// SharedArrayBuffer, compared modulo 2^32.
import { UBLK_IO_OP_DISCARD, UBLK_IO_OP_FLUSH, UBLK_IO_OP_WRITE, UBLK_IO_OP_WRITE_ZEROES } from '../ublk/abi/uapi.js';
import type { UblkRequest } from '../ublk/worker/request.js';
import { EIO } from '../sys.js';

/** Writes acknowledged so far (not FUA ones: those were durable when acknowledged). */
const ACKED = 0;
/** The ACKED count the last successful FLUSH covered. */
const DURABLE = 1;
/** Set when the last connection dropped with ACKED past DURABLE; taken by the next FLUSH. */
const LOST = 2;
/** Live connections of the device. */
const LIVE = 3;

export const FLUSH_GUARD_BYTES = 4 * 4;

export class FlushGuard {
  private readonly w: Int32Array;
  /** Per FLUSH in flight, the ACKED count when it was first sent: what it covers. */
  private readonly covers = new Map<UblkRequest, number>();

  constructor(shared: SharedArrayBuffer) {
    this.w = new Int32Array(shared, 0, 4);
  }

  connected(): void {
    Atomics.add(this.w, LIVE, 1);
  }

  /** A connection dropped; true if that puts acknowledged writes at risk (the next FLUSH will fail). */
  dropped(): boolean {
    const w = this.w;
    if (Atomics.sub(w, LIVE, 1) !== 1) return false;
    if (((Atomics.load(w, ACKED) - Atomics.load(w, DURABLE)) | 0) === 0) return false;
    Atomics.store(w, LOST, 1);
    return true;
  }

  /** `req` is about to be sent (again): a FLUSH covers what was acknowledged before its first send. */
  sending(req: UblkRequest): void {
    if (req.op === UBLK_IO_OP_FLUSH && !this.covers.has(req)) this.covers.set(req, Atomics.load(this.w, ACKED));
  }

  /** `req` completes with `result`: what the block layer is told. */
  completed(req: UblkRequest, result: number): number {
    const w = this.w, op = req.op;
    if (op === UBLK_IO_OP_FLUSH) {
      const cover = this.covers.get(req);
      this.covers.delete(req);
      if (result < 0 || cover === undefined) return result;
      for (let d = Atomics.load(w, DURABLE); ((cover - d) | 0) > 0;) {
        const was = Atomics.compareExchange(w, DURABLE, d, cover);
        if (was === d) break;
        d = was;
      }
      return Atomics.exchange(w, LOST, 0) === 1 ? -EIO : result;
    }
    if (result >= 0 && !req.fua && (op === UBLK_IO_OP_WRITE || op === UBLK_IO_OP_WRITE_ZEROES || op === UBLK_IO_OP_DISCARD)) {
      Atomics.add(w, ACKED, 1);
    }
    return result;
  }
}
