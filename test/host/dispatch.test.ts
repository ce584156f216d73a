// The dispatcher's handling of a target's promise, without a ring or a driver:
// the target returns thenables whose handlers the test holds and calls.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Dispatcher, STEP_REGISTER, STEP_UNREGISTER } from '../../src/ublk/worker/dispatch.js';
import { KIND_STAGE, KIND_TARGET } from '../../src/ublk/worker/worker-ring.js';
import { UblkRequest } from '../../src/ublk/worker/request.js';
import { DESC_NR_SECTORS, DESC_OP_FLAGS, DESC_WORDS } from '../../src/ublk/worker/queue-memory.js';
import { Waker } from '../../src/ublk/worker/waker.js';
import { servingMode } from '../../src/ublk/mode.js';
import { SLOT_WORDS } from '../../src/ublk/stats.js';
import { Ring } from '../../src/uring/ring.js';
import { prepNop, setSqeFlags, sqeFlags } from '../../src/uring/prep.js';
import { IOSQE_CQE_SKIP_SUCCESS, IOSQE_IO_LINK } from '../../src/uring/constants.js';
import { PENDING, type IoResult, type Target, type TargetModule } from '../../src/ublk/target.js';
import { DataPath } from './data-path.js';
import { EIO } from '../../src/sys.js';
import { udKind } from '../../src/ublk/worker/worker-ring.js';
import { UBLK_IO_OP_READ, UBLK_IO_OP_WRITE } from '../../src/ublk/abi/uapi.js';

type Handlers = [(v: unknown) => void, (e: unknown) => void];

function setup() {
  const results: [number, number][] = [];
  const handed: Handlers[] = [];
  const mode = servingMode({ batch: false, copy: 'kernel', autoBufReg: true }, { name: 'test' });
  const sink = { commit: (req: UblkRequest, res: number) => void results.push([req.tag, res]), commitNext: null };
  // No ring operation happens here: the dispatcher only keeps the reference.
  const d = new Dispatcher(null as unknown as Ring, mode, sink, new Waker(), { stats: new Float64Array(SLOT_WORDS), queues: [{ q: 0, slot: 0 }] });
  const target: Target = {
    read: () => ({ then: (f: Handlers[0], r: Handlers[1]) => void handed.push([f, r]) }) as unknown as Promise<number>,
    write: () => 0,
  };
  d.attach(target);
  const desc = new Uint32Array(2 * DESC_WORDS);
  const reqs = [0, 1].map((t) => {
    desc[t * DESC_WORDS + DESC_OP_FLAGS] = UBLK_IO_OP_READ;
    desc[t * DESC_WORDS + DESC_NR_SECTORS] = 8;
    return new UblkRequest(0, t, null, t, 0);
  });
  const dispatch = (tag: number) => {
    reqs[tag]!.load(desc);
    d.dispatch(reqs[tag]!);
  };
  return { d, reqs, results, handed, dispatch };
}

test('a target\'s promise: its tag\'s handlers, made once and not per request, settle the right request', () => {
  const { d, results, handed, dispatch } = setup();
  dispatch(0);
  dispatch(1);
  assert.equal(d.tally.owned, 2, 'both in flight: the serving loop keeps its waits short (a target\'s timers must run)');
  handed[1]![0](4096);
  handed[0]![1](new Error('backing store gone'));
  dispatch(0);
  handed[2]![0](4096);
  assert.deepEqual(results, [[1, 4096], [0, -5], [0, 4096]]);
  assert.equal(d.tally.owned, 0, 'none in flight: it may block for good');
  assert.equal(handed[2]![0], handed[0]![0], 'the same function for the tag\'s next request: no closure per IO');
  assert.equal(handed[2]![1], handed[0]![1]);
  assert.notEqual(handed[1]![0], handed[0]![0], 'each tag its own');
  assert.equal(d.asyncInFlight, 0);
});

test('a target\'s promise that settles after its request was completed otherwise never completes the tag\'s next request', () => {
  const { d, reqs, results, handed, dispatch } = setup();
  const errors: unknown[] = [];
  const logged = console.error;
  console.error = (...a: unknown[]) => void errors.push(a);
  try {
    dispatch(0);
    d.complete(reqs[0]!, 4096); // the target's bug: it returned a promise and completed the request too
    handed[0]![0](4096); // stale: ignored
    assert.deepEqual(results, [[0, 4096]]);
    dispatch(0);
    d.complete(reqs[0]!, 4096);
    dispatch(0); // two of the tag's promises pending now; the older one's result must not be taken
    handed[1]![0](4096);
    assert.deepEqual(results.at(-1), [0, -5], 'which promise is whose cannot be told: EIO rather than a stale result');
    handed[2]![0](4096);
    assert.equal(results.length, 3, 'the last one ignored');
    assert.equal(d.asyncInFlight, 0);
    assert.ok(errors.length > 0, 'the target\'s bug logged');
  } finally {
    console.error = logged;
  }
});

test('background: while a target\'s own work outside the ring is under way the serving loop keeps the event loop running; not after', async () => {
  const { d } = setup();
  let finish!: () => void;
  const work = new Promise<void>((r) => { finish = r; });
  d.background(work);
  assert.equal(d.tally.asyncInFlight, 1, 'the loop visits the event loop');
  finish();
  await new Promise((r) => setImmediate(r));
  assert.equal(d.tally.asyncInFlight, 0, 'and may block in io_uring_enter again');
});

test('linkCommit links only a chain that holds every operation of the request still to complete', () => {
  const ring = Ring.create({ entries: 16 });
  try {
    const mode = servingMode({ batch: false, copy: 'kernel', autoBufReg: true }, { name: 'test' });
    const sink = { commit: () => {}, commitNext: (_req: UblkRequest, _res: number) => void prepNop(ring, ring.getSqe()) };
    const d = new Dispatcher(ring, mode, sink, new Waker(), { stats: new Float64Array(SLOT_WORDS), queues: [{ q: 0, slot: 0 }] });
    const linked: boolean[] = [];
    let linkFirst = false;
    d.attach({
      read: (req) => {
        const a = d.sqe(req, 0);
        prepNop(ring, a);
        if (linkFirst) setSqeFlags(ring, a, IOSQE_IO_LINK);
        const b = d.sqe(req, 0);
        prepNop(ring, b);
        linked.push(d.linkCommit(req, b, 4096));
        return PENDING;
      },
      write: () => 0,
      onCqe: () => {},
    });
    const desc = new Uint32Array(DESC_WORDS);
    desc[DESC_OP_FLAGS] = UBLK_IO_OP_READ;
    desc[DESC_NR_SECTORS] = 8;
    const req = new UblkRequest(0, 0, null, 0, 0);
    req.load(desc);
    d.dispatch(req);
    assert.deepEqual(linked, [false], 'the first NOP is not in the chain: its CQE would be taken for a failure');
    assert.equal(d.tally.owned, 1, 'the request is the target\'s');
    ring.submit();
    ring.reap((lo, hi, res, fl) => d.onCqe(req, 1, hi, res, fl));
    d.complete(req, 4096);
    linkFirst = true;
    req.load(desc);
    assert.equal(d.tally.owned, 0);
    d.dispatch(req);
    assert.deepEqual(linked, [false, true]);
    assert.equal(d.tally.owned, 0, 'linked to its commit: nothing left to the target');
    assert.equal(sqeFlags(ring, 2 * ring.sqeSize) & (IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS), IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS, 'the chain\'s first SQE');
    assert.equal(sqeFlags(ring, 3 * ring.sqeSize) & (IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS), IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS, 'its last, before the commit');
  } finally {
    ring.close();
  }
});

test('a zero-copy request whose pages were registered explicitly counts as async at no point: the serving loop keeps blocking in io_uring_enter', () => {
  const ring = Ring.create({ entries: 16 });
  try {
    // Zero copy without AUTO_BUF_REG: REGISTER_IO_BUF before the target, UNREGISTER_IO_BUF after it.
    const mode = servingMode({ batch: false, copy: 'zero', autoBufReg: false }, { name: 'test', data: 'ring' });
    const results: number[] = [];
    const sink = { commit: (_req: UblkRequest, res: number) => void results.push(res), commitNext: null };
    const d = new Dispatcher(ring, mode, sink, new Waker(), { stats: new Float64Array(SLOT_WORDS), queues: [{ q: 0, slot: 0 }] });
    d.attach({
      read: (req) => {
        prepNop(ring, d.sqe(req, 0)); // the backing read
        return PENDING;
      },
      write: () => 0,
      onCqe: (req, res) => d.complete(req, res),
    });
    const desc = new Uint32Array(DESC_WORDS);
    desc[DESC_OP_FLAGS] = UBLK_IO_OP_READ;
    desc[DESC_NR_SECTORS] = 8;
    const req = new UblkRequest(0, 0, null, 0, 0);
    for (let round = 0; round < 2; round++) {
      req.load(desc);
      d.dispatch(req); // queues REGISTER_IO_BUF (not submitted: its CQEs are played here)
      d.onCqe(req, KIND_STAGE, STEP_REGISTER, 0, 0);
      d.onCqe(req, KIND_TARGET, 0, 4096, 0); // the backing read's CQE: the target completes, UNREGISTER_IO_BUF is queued
      assert.equal(d.asyncInFlight, 0, 'waiting for UNREGISTER_IO_BUF\'s CQE is waiting on the ring, not on the event loop');
      d.onCqe(req, KIND_STAGE, STEP_UNREGISTER, 0, 0);
      assert.equal(d.asyncInFlight, 0);
    }
    assert.deepEqual(results, [4096, 4096]);
  } finally {
    ring.close();
  }
});

test('breakTarget: what the target holds fails with EIO at once, its promises are forgotten, and it is called no more', () => {
  const results: [number, number][] = [];
  const mode = servingMode({ batch: false, copy: 'kernel', autoBufReg: true }, { name: 'test' });
  const sink = { commit: (req: UblkRequest, res: number) => void results.push([req.tag, res]), commitNext: null };
  const d = new Dispatcher(null as unknown as Ring, mode, sink, new Waker(), { stats: new Float64Array(SLOT_WORDS), queues: [{ q: 0, slot: 0 }] });
  let calls = 0;
  let settle: ((v: number) => void) | null = null;
  d.attach({
    read: () => { calls++; return new Promise<number>((r) => { settle = r; }); },
    write: () => { calls++; return PENDING; },
  });
  const desc = new Uint32Array(3 * DESC_WORDS);
  const reqs = [0, 1, 2].map((t) => new UblkRequest(0, t, null, t, 0));
  const dispatch = (tag: number, op: number) => {
    desc[tag * DESC_WORDS + DESC_OP_FLAGS] = op;
    desc[tag * DESC_WORDS + DESC_NR_SECTORS] = 8;
    reqs[tag]!.load(desc);
    d.dispatch(reqs[tag]!);
  };
  dispatch(0, UBLK_IO_OP_READ); // awaits a promise that never settles
  dispatch(1, UBLK_IO_OP_WRITE); // held (PENDING, nothing on the ring)
  assert.equal(d.asyncInFlight, 2);
  d.breakTarget(reqs);
  assert.deepEqual(results, [[0, -5], [1, -5]]);
  assert.equal(d.asyncInFlight, 0, 'nothing left for the serving loop or the device\'s end to wait for');
  settle!(4096);
  dispatch(2, UBLK_IO_OP_READ);
  assert.deepEqual(results.at(-1), [2, -5], 'a new request fails at once');
  assert.equal(calls, 2, 'the target is called no more');
  assert.equal(results.length, 3, 'the late promise completed nothing');
});

// A target that queued a ring operation and then threw (or returned a result,
// or called complete, with it still in flight): were the request committed at
// once, the tag's next request would take that operation's CQE for its own
// (a READ completed before its data is in place, a WRITE acknowledged early).
for (const how of ['throws', 'returns -EIO', 'completes']) test(`a target that ${how} with a ring operation of the request in flight: the request is committed once that operation's CQE is in, and the tag's next request gets only its own`, async () => {
  const mode = servingMode({ batch: false, copy: 'kernel', autoBufReg: true, metadataSize: 0 }, { name: 't', data: 'ring', integrity: false });
  const dp = new DataPath(2, 65536, { entries: 16 }, mode);
  const seen: number[] = [];
  let calls = 0;
  const target = {
    read(req: UblkRequest): IoResult {
      prepNop(dp.ring, dp.dispatcher.sqe(req, ++calls)); // a backing READ, say
      if (calls > 1) return PENDING;
      if (how === 'throws') throw new Error('io_uring submission queue has no room'); // e.g. reserving its second SQE
      if (how === 'completes') {
        dp.dispatcher.complete(req, -EIO);
        return PENDING;
      }
      return -EIO;
    },
    write: () => 0,
    onCqe(req: UblkRequest, _res: number, _flags: number, sub: number) {
      seen.push(sub);
      dp.dispatcher.complete(req, req.length);
    },
  };
  const quiet = console.error;
  console.error = () => {};
  try {
    await dp.openTarget({ name: 't', setup: () => ({}), open: () => target } as unknown as TargetModule, {}, null);
    dp.start(0, UBLK_IO_OP_READ, 0, 4096);
    assert.equal(dp.results.has(0), false, 'not committed while its operation is in flight');
    const reap = () => {
      dp.ring.submitAndWait(1);
      dp.ring.reap((lo, hi, res, flags) => dp.dispatcher.onCqe(dp.reqs[0]!, udKind(lo), hi, res, flags));
    };
    reap();
    assert.equal(dp.results.get(0), -EIO, 'committed with its failure once the operation is done');
    assert.deepEqual(seen, [], 'the target is not asked about a request it has completed');
    dp.start(0, UBLK_IO_OP_READ, 8192, 4096);
    reap();
    assert.equal(dp.results.get(0), 4096);
    assert.deepEqual(seen, [2], 'the next request completed on its own operation\'s CQE');
  } finally {
    console.error = quiet;
    dp.close();
  }
});
