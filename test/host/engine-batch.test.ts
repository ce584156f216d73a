// The batch engine (src/ublk/worker/engine-batch.ts) on the host's io_uring,
// without a ublk driver: the kernel's side is played by hand-made CQEs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BatchEngine } from '../../src/ublk/worker/engine-batch.js';
import { servingMode } from '../../src/ublk/mode.js';
import { Ring } from '../../src/uring/ring.js';
import { Waker } from '../../src/ublk/worker/waker.js';
import { SLOT_WORDS } from '../../src/ublk/stats.js';
import { DESC_NR_SECTORS, DESC_OP_FLAGS, DESC_WORDS } from '../../src/ublk/worker/queue-memory.js';
import { KIND_UBLK, userDataLo } from '../../src/ublk/worker/worker-ring.js';
import { IORING_CQE_F_BUFFER, IORING_CQE_F_MORE } from '../../src/uring/constants.js';
import { prepNop } from '../../src/uring/prep.js';
import { PENDING } from '../../src/ublk/target.js';
import { UBLK_IO_OP_WRITE, UBLK_IO_RES_ABORT } from '../../src/ublk/abi/uapi.js';
import type { UblkRequest } from '../../src/ublk/worker/request.js';

/** What the test reaches inside the engine: its queues' fetchers and requests, and the fetches it queues. */
interface Inside {
  fetchAll(): void;
  queues: { fetchers: { tags: Uint16Array }[]; reqs: UblkRequest[] }[];
}

test('batch: a device whose fetches the kernel ended (QUIESCE_DEV ends them at once in batch mode) stays active while a request is still in its target\'s hands', () => {
  const ring = Ring.create({ entries: 16 });
  try {
    const mode = servingMode({ batch: true, copy: 'zero', autoBufReg: true, metadataSize: 0 }, { name: 't', data: 'ring', integrity: false });
    const desc = new Uint32Array(4 * DESC_WORDS);
    const engine = new BatchEngine({
      ring, place: { charFixed: 0, bufBase: 0, bgidBase: 0 }, charFd: 1, tally: { asyncInFlight: 0, dispatched: 0 }, mode, depth: 4,
      queues: [{ q: 0, ud: 0, desc, bufs: null, prep: true, fetchBuffers: 2, slot: 0 }],
      stats: new Float64Array(SLOT_WORDS), waker: new Waker(), shmem: null,
    } as unknown as ConstructorParameters<typeof BatchEngine>[0]);
    const d = engine.dispatcher;
    d.attach({
      read: () => PENDING,
      write(req: UblkRequest) { prepNop(ring, d.sqe(req, 0)); return PENDING; }, // the backing WRITE, in flight
      onCqe(req: UblkRequest) { d.complete(req, req.length); },
    } as unknown as Parameters<typeof d.attach>[0]);
    const inside = engine as unknown as Inside;
    inside.fetchAll(); // FETCH_IO_CMDS queued (no driver takes them here)
    desc[DESC_OP_FLAGS] = UBLK_IO_OP_WRITE;
    desc[DESC_NR_SECTORS] = 8;
    inside.queues[0]!.fetchers[0]!.tags[0] = 0; // the fetch's buffer 0 carries tag 0
    engine.onCqe(userDataLo(KIND_UBLK, 0, 0), 0, 2, IORING_CQE_F_BUFFER | IORING_CQE_F_MORE);
    const req = inside.queues[0]!.reqs[0]!;
    assert.ok(req.owned && req.ringOps === 1, 'the WRITE is with its target');
    engine.onCqe(userDataLo(KIND_UBLK, 0, 0), 0, UBLK_IO_RES_ABORT, 0); // the fetch ends
    assert.equal(engine.active, true, 'a device that leaves now frees the tag buffers under the backing WRITE and never commits it');
  } finally {
    ring.close();
  }
});
