// Routes a request to its target's method and its result back to the engine,
// whether the target answers synchronously or with a promise.
import { EIO, EOPNOTSUPP } from '../sys.js';
import type { IoResult, Target } from './target.js';
import type { UblkRequest } from './request.js';
import { UBLK_IO_OP_DISCARD, UBLK_IO_OP_FLUSH, UBLK_IO_OP_READ, UBLK_IO_OP_WRITE, UBLK_IO_OP_WRITE_ZEROES } from './uapi.js';

export type Completer = (req: UblkRequest, result: number) => void;

export class Dispatcher {
  /** Requests whose promise has not settled yet. */
  asyncInFlight = 0;
  /** Requests dispatched so far. */
  dispatched = 0;
  /** Called after an async completion, so an idle serving loop wakes up. */
  onAsyncSettled: () => void = () => {};
  private warned = false;

  constructor(private readonly target: Target, private readonly complete: Completer) {}

  dispatch(req: UblkRequest): void {
    const t = this.target;
    this.dispatched++;
    let r: IoResult;
    try {
      switch (req.op) {
        case UBLK_IO_OP_READ: r = t.read(req); break;
        case UBLK_IO_OP_WRITE: r = t.write(req); break;
        case UBLK_IO_OP_FLUSH: r = t.flush ? t.flush(req) : -EOPNOTSUPP; break;
        case UBLK_IO_OP_DISCARD: r = t.discard ? t.discard(req) : -EOPNOTSUPP; break;
        case UBLK_IO_OP_WRITE_ZEROES: r = t.writeZeroes ? t.writeZeroes(req) : -EOPNOTSUPP; break;
        default: r = -EOPNOTSUPP;
      }
    } catch (e) {
      r = this.failed(e);
    }
    if (typeof r === 'number') {
      this.complete(req, this.check(r));
      return;
    }
    this.asyncInFlight++;
    r.then(
      (v) => this.settle(req, this.check(v)),
      (e) => this.settle(req, this.failed(e)),
    );
  }

  private settle(req: UblkRequest, result: number): void {
    this.asyncInFlight--;
    this.complete(req, result);
    this.onAsyncSettled();
  }

  // A result must be an integer that fits the kernel's s32; anything else is the target's bug.
  private check(v: unknown): number {
    if (typeof v === 'number' && Number.isInteger(v) && v >= -4095 && v <= 0x7fffffff) return v;
    return this.failed(new TypeError(`target returned ${String(v)}, not a byte count or negative errno`));
  }

  private failed(e: unknown): number {
    if (!this.warned) {
      this.warned = true;
      console.error(`ublk-ts: target error (reported as EIO; further ones not shown): ${(e as Error)?.stack ?? e}`);
    }
    return -EIO;
  }
}
