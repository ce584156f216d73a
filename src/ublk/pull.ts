// The pull-style target API: instead of a method called per request, the
// target's code asks for requests, a batch at a time, and completes each
// when it likes —
//
//   open: pullTarget(async (requests, ctx) => {
//     for await (const batch of requests) for (const req of batch) req.complete(serve(req));
//   }),
//
// (the `tcmulib_get_next_command()` TCMU users asked ublk for). A batch is
// what one turn of the serving loop brought, the requests of one reap: in
// batch mode (UBLK_F_BATCH_IO) one FETCH completion's worth or more.
// Every request kind goes to the same stream; `req.op` tells them apart. A
// request is completed with `req.complete(result)` (bytes for READ and
// WRITE, 0 for the others, or a negative errno) from anywhere on its serving
// thread, in any order. The stream ends when the device stops.
import { PENDING, type QueueContext, type Target, type TargetIo, type TargetOptions } from './target.js';
import type { UblkRequest } from './worker/request.js';

type Waiter = (r: IteratorResult<UblkRequest[]>) => void;

class RequestStream implements Target, AsyncIterable<UblkRequest[]> {
  private batch: UblkRequest[] = [];
  /** Batches made and not yet taken by the consumer. */
  private readonly ready: UblkRequest[][] = [];
  private waiter: Waiter | null = null;
  private scheduled = false;
  private ended = false;

  constructor(private readonly io: TargetIo) {}

  /**
   * Every request joins the batch of this loop turn, which is handed over
   * once the turn's synchronous work is done (a microtask): the serving
   * loop, holding requests returned PENDING with nothing on the ring to wait
   * for, then visits the event loop, where the consumer runs.
   */
  private readonly take = (req: UblkRequest): typeof PENDING => {
    req.completer = this.io;
    this.batch.push(req);
    if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(this.handOver);
    }
    return PENDING;
  };

  readonly read = this.take;
  readonly write = this.take;
  readonly flush = this.take;
  readonly discard = this.take;
  readonly writeZeroes = this.take;

  private readonly handOver = (): void => {
    this.scheduled = false;
    const b = this.batch;
    this.batch = [];
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w({ value: b, done: false });
    } else {
      this.ready.push(b);
    }
  };

  close(): void {
    this.ended = true;
    const w = this.waiter;
    this.waiter = null;
    w?.({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterator<UblkRequest[]> {
    return {
      next: () => {
        const b = this.ready.shift();
        if (b) return Promise.resolve({ value: b, done: false });
        if (this.ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise<IteratorResult<UblkRequest[]>>((r) => { this.waiter = r; });
      },
      return: () => Promise.resolve({ value: undefined, done: true }),
    };
  }
}

/**
 * A target module's `open` for pull-style code: `serve` gets the stream of
 * request batches and the queue's context, and runs as long as it likes (a
 * `for await` over the stream ends when the device stops). Its target
 * announces flush, discard and write-zeroes the usual way (the setup's `caps`).
 * An error `serve` throws is logged; requests it still holds are failed by
 * the device's stop once none has moved for 10 s (as for any target; on a
 * daemon's thread, Dispatcher.breakTarget fails them).
 */
export function pullTarget<Options extends TargetOptions = TargetOptions, Shared = unknown>(
  serve: (requests: AsyncIterable<UblkRequest[]>, ctx: QueueContext<Options, Shared>) => void | Promise<void>,
): (ctx: QueueContext<Options, Shared>) => Target {
  return (ctx) => {
    const stream = new RequestStream(ctx.io);
    void (async () => serve(stream, ctx))().catch((e: unknown) => {
      console.error(`ublk-ts: device ${ctx.devId} queue ${ctx.queueId}: the pull target's serve() failed: ${(e as Error)?.message ?? e}`);
    });
    return stream;
  };
}
