// The pull-style target API (pull.ts) against the dispatcher, without a ring
// or a driver: requests dispatched in one loop turn come out as one batch;
// req.complete() from the consumer commits them, in any order; the stream
// ends when the target closes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Dispatcher } from '../../src/ublk/worker/dispatch.js';
import { UblkRequest } from '../../src/ublk/worker/request.js';
import { DESC_NR_SECTORS, DESC_OP_FLAGS, DESC_WORDS } from '../../src/ublk/worker/queue-memory.js';
import { Waker } from '../../src/ublk/worker/waker.js';
import { servingMode } from '../../src/ublk/mode.js';
import { SLOT_WORDS } from '../../src/ublk/stats.js';
import type { Ring } from '../../src/uring/ring.js';
import { pullTarget } from '../../src/ublk/pull.js';
import type { QueueContext } from '../../src/ublk/target.js';
import { UBLK_IO_OP_FLUSH, UBLK_IO_OP_READ, UBLK_IO_OP_WRITE } from '../../src/ublk/abi/uapi.js';

function setup(depth: number) {
  const committed: Array<[number, number]> = [];
  const mode = servingMode({ batch: false, copy: 'kernel', autoBufReg: true }, { name: 'test' });
  const sink = { commit: (req: UblkRequest, res: number) => void committed.push([req.tag, res]), commitNext: null };
  const d = new Dispatcher(null as unknown as Ring, mode, sink, new Waker(), { stats: new Float64Array(SLOT_WORDS), queues: [{ q: 0, slot: 0 }] });
  const desc = new Uint32Array(depth * DESC_WORDS);
  const reqs = Array.from({ length: depth }, (_, t) => new UblkRequest(0, t, null, t, 0));
  const dispatch = (tag: number, op: number): void => {
    desc[tag * DESC_WORDS + DESC_OP_FLAGS] = op;
    desc[tag * DESC_WORDS + DESC_NR_SECTORS] = op === UBLK_IO_OP_FLUSH ? 0 : 8;
    reqs[tag]!.load(desc);
    d.dispatch(reqs[tag]!);
  };
  const ctx = { devId: 0, queueId: 0, depth, maxIoBytes: 1 << 20, options: {}, shared: undefined, io: d } as QueueContext;
  return { d, reqs, committed, dispatch, ctx };
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

test('one loop turn\'s requests come as one batch; each completes with req.complete, in any order', async () => {
  const { d, committed, dispatch, ctx } = setup(8);
  const batches: Array<Array<[number, number]>> = [];
  let ended = false;
  const held: UblkRequest[] = [];
  const target = pullTarget(async (requests) => {
    for await (const batch of requests) {
      batches.push(batch.map((r) => [r.tag, r.op]));
      held.push(...batch);
    }
    ended = true;
  })(ctx);
  d.attach(target);
  dispatch(0, UBLK_IO_OP_READ);
  dispatch(1, UBLK_IO_OP_WRITE);
  dispatch(2, UBLK_IO_OP_FLUSH);
  assert.equal(d.asyncInFlight, 3, 'held: the serving loop keeps the event loop running for them');
  await turn();
  assert.deepEqual(batches, [[[0, UBLK_IO_OP_READ], [1, UBLK_IO_OP_WRITE], [2, UBLK_IO_OP_FLUSH]]]);
  dispatch(3, UBLK_IO_OP_READ);
  await turn();
  assert.deepEqual(batches[1], [[3, UBLK_IO_OP_READ]], 'the next turn, the next batch');
  held[3]!.complete(4096);
  held[0]!.complete(-5);
  held[2]!.complete(0);
  held[1]!.complete(4096);
  assert.deepEqual(committed, [[3, 4096], [0, -5], [2, 0], [1, 4096]]);
  assert.equal(d.asyncInFlight, 0);
  target.close!();
  await turn();
  assert.ok(ended, 'the stream ended with the target');
});

test('batches made while the consumer is busy wait for it, in order; complete() elsewhere is refused', async () => {
  const { d, reqs, committed, dispatch, ctx } = setup(4);
  let release!: () => void;
  const busy = new Promise<void>((r) => { release = r; });
  const seen: number[][] = [];
  const target = pullTarget(async (requests) => {
    for await (const batch of requests) {
      seen.push(batch.map((r) => r.tag));
      if (seen.length === 1) await busy;
      for (const r of batch) r.complete(r.length);
    }
  })(ctx);
  d.attach(target);
  dispatch(0, UBLK_IO_OP_READ);
  await turn();
  dispatch(1, UBLK_IO_OP_READ);
  await turn();
  dispatch(2, UBLK_IO_OP_READ);
  await turn();
  assert.deepEqual(seen, [[0]], 'the consumer is still on its first batch');
  release();
  await turn();
  await turn();
  assert.deepEqual(seen, [[0], [1], [2]]);
  assert.deepEqual(committed.map(([t]) => t), [0, 1, 2]);
  assert.throws(() => new UblkRequest(0, 0, null, 0, 0).complete(0), /pullTarget/);
  void reqs;
});
