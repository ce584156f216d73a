// A worker's data path for one queue on the host's real io_uring, without a
// ublk driver: tag buffers, requests built by hand, the dispatcher, and a sink
// that records each tag's committed result. The loop and nbd host tests drive
// it, each serving the ring its own way.
import { native } from '../../src/native.js';
import { Ring, type RingOptions } from '../../src/uring/index.js';
import { Dispatcher } from '../../src/ublk/worker/dispatch.js';
import { UblkRequest } from '../../src/ublk/worker/request.js';
import { DESC_WORDS } from '../../src/ublk/worker/queue-memory.js';
import { Waker } from '../../src/ublk/worker/waker.js';
import type { ServingMode } from '../../src/ublk/mode.js';
import { SLOT_WORDS } from '../../src/ublk/stats.js';
import type { Target, TargetModule, TargetOptions } from '../../src/ublk/target.js';
import { loadRequest } from './request-desc.js';

export class DataPath {
  readonly ring: Ring;
  readonly desc: Uint32Array;
  readonly mem: ArrayBuffer;
  readonly reqs: UblkRequest[] = [];
  /** Per tag: the result its last request was committed with. */
  readonly results = new Map<number, number>();
  readonly dispatcher: Dispatcher;
  /** The device's counters, one slot: queue 0. */
  readonly stats = new Float64Array(SLOT_WORDS);
  target!: Target;

  /**
   * `linked`: the engine links commits as the classic one does
   * (TargetIo.linkCommit), through linkedCommit(). `charFd`: what stands in
   * for /dev/ublkcN (user copy).
   */
  constructor(readonly depth: number, readonly bufBytes: number, ring: RingOptions, mode: ServingMode, linked = false, charFd = -1) {
    this.ring = Ring.create(ring);
    this.desc = new Uint32Array(depth * DESC_WORDS);
    this.mem = native.alloc(depth * bufBytes);
    const base = native.addressOf(this.mem);
    for (let t = 0; t < depth; t++) this.reqs.push(new UblkRequest(0, t, this.tagBuffer(t), t, base + t * bufBytes));
    const sink = {
      commit: (req: UblkRequest, res: number) => void this.results.set(req.tag, res),
      commitNext: linked ? (req: UblkRequest, res: number) => this.linkedCommit(req, res) : null,
    };
    this.dispatcher = new Dispatcher(this.ring, mode, sink, new Waker(), { stats: this.stats, queues: [{ q: 0, slot: 0 }], charFd });
  }

  /** Opens queue 0 of target `mod` on this data path. */
  async openTarget(mod: TargetModule, options: TargetOptions, shared: unknown): Promise<void> {
    this.target = await mod.open({ devId: 0, queueId: 0, depth: this.depth, maxIoBytes: this.bufBytes, options, shared, io: this.dispatcher });
    this.dispatcher.attach(this.target);
  }

  /** Dispatches a request on `tag` (not waiting for it). */
  start(tag: number, op: number, offset: number, length: number, flags = 0): void {
    const req = this.reqs[tag]!;
    loadRequest(this.desc, req, op, offset, length, flags);
    this.results.delete(tag);
    this.dispatcher.dispatch(req);
  }

  tagBuffer(tag: number): Uint8Array { return new Uint8Array(this.mem, tag * this.bufBytes, this.bufBytes); }

  /** A commit linked to the target's IO: prepare what stands in for it (constructed with `linked`). */
  protected linkedCommit(_req: UblkRequest, _res: number): void {
    throw new Error('this data path links no commits');
  }

  close(): void {
    this.ring.close();
    native.munmap(this.mem);
  }
}
