// The batch engine (src/ublk/worker/engine-batch.ts) on the host's io_uring,
// without a ublk driver: the kernel's side is played by hand-made CQEs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BatchEngine } from '../../src/ublk/worker/engine-batch.js';
import { ClassicEngine } from '../../src/ublk/worker/engine-classic.js';
import { servingMode } from '../../src/ublk/mode.js';
import { Ring } from '../../src/uring/ring.js';
import { Waker } from '../../src/ublk/worker/waker.js';
import { SLOT_WORDS } from '../../src/ublk/stats.js';
import { DESC_NR_SECTORS, DESC_OP_FLAGS, DESC_WORDS } from '../../src/ublk/worker/queue-memory.js';
import { KIND_TARGET, KIND_UBLK, userDataLo } from '../../src/ublk/worker/worker-ring.js';
import { IORING_CQE_F_BUFFER, IORING_CQE_F_MORE } from '../../src/uring/constants.js';
import { prepNop } from '../../src/uring/prep.js';
import { PENDING } from '../../src/ublk/target.js';
import { UBLK_IO_OP_WRITE, UBLK_IO_RES_ABORT, UBLK_IO_RES_OK } from '../../src/ublk/abi/uapi.js';
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

test('classic: a device whose other tags the kernel aborted stays active while a request is with its target, its commit linked to the backing IO or not', () => {
  const ring = Ring.create({ entries: 16 });
  try {
    const mode = servingMode({ batch: false, copy: 'zero', autoBufReg: true, metadataSize: 0 }, { name: 't', data: 'ring', integrity: false });
    const desc = new Uint32Array(4 * DESC_WORDS);
    const engine = new ClassicEngine({
      ring, place: { charFixed: 0, bufBase: 0, bgidBase: -1 }, charFd: 1, tally: { asyncInFlight: 0, dispatched: 0 }, mode, depth: 3,
      queues: [{ q: 0, ud: 0, desc, bufs: null, slot: 0 }],
      stats: new Float64Array(SLOT_WORDS), waker: new Waker(), shmem: null,
    } as unknown as ConstructorParameters<typeof ClassicEngine>[0]);
    const d = engine.dispatcher;
    d.attach({
      // tag 0: the loop target's way, the commit linked after the backing WRITE; tag 1: the stripe target's, two pieces.
      write(req: UblkRequest) {
        if (req.tag === 0) {
          const s = d.sqe(req, 0);
          prepNop(ring, s);
          assert.ok(d.linkCommit(req, s, req.length));
        } else {
          prepNop(ring, d.sqe(req, 0));
          prepNop(ring, d.sqe(req, 0));
        }
        return PENDING;
      },
      onCqe(req: UblkRequest) { if (req.ringOps === 0) d.complete(req, req.length); }, // the last piece in
    } as unknown as Parameters<typeof d.attach>[0]);
    (engine as unknown as { armed: number }).armed = 3; // FETCH_REQ of tags 0, 1 and 2 (arm() without a driver cannot)
    for (let t = 0; t < 3; t++) {
      desc[t * DESC_WORDS + DESC_OP_FLAGS] = UBLK_IO_OP_WRITE;
      desc[t * DESC_WORDS + DESC_NR_SECTORS] = 8;
    }
    engine.onCqe(userDataLo(KIND_UBLK, 0, 0), 0, UBLK_IO_RES_OK, 0);
    engine.onCqe(userDataLo(KIND_UBLK, 0, 1), 0, UBLK_IO_RES_OK, 0);
    engine.onCqe(userDataLo(KIND_UBLK, 0, 2), 0, UBLK_IO_RES_ABORT, 0); // STOP_DEV / QUIESCE_DEV cancel the idle fetch
    assert.equal(engine.active, true, 'both backing operations are still out');
    // Tag 1's pieces complete: it is committed (its COMMIT_AND_FETCH is what the kernel aborts next).
    engine.onCqe(userDataLo(KIND_TARGET, 0, 1), 0, 4096, 0);
    engine.onCqe(userDataLo(KIND_TARGET, 0, 1), 0, 4096, 0);
    engine.onCqe(userDataLo(KIND_UBLK, 0, 1), 0, UBLK_IO_RES_ABORT, 0);
    assert.equal(engine.active, true, 'tag 0\'s linked chain is out: its tag is the kernel\'s only once its commit has run');
    engine.onCqe(userDataLo(KIND_UBLK, 0, 0), 0, UBLK_IO_RES_ABORT, 0); // the linked commit ran, and its fetch was cancelled
    assert.equal(engine.active, false);
  } finally {
    ring.close();
  }
});
