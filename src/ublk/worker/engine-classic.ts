// Classic (per-tag) engine: FETCH_REQ once per tag, then one
// COMMIT_AND_FETCH_REQ per request, which completes it and re-arms the tag.
// All commands of a tag must come from the thread that fetched it (the tag's
// "daemon"): usually one thread serves a whole queue; with
// UBLK_F_PER_IO_DAEMON a thread serves the tags of several queues it was
// dealt (mode.ts, assignQueues), each its own daemon.
import type { CqeHandler, Ring } from '../../uring/ring.js';
import { setAddr } from '../../uring/prep.js';
import {
  UBLK_AUTO_BUF_REG_FALLBACK, UBLK_IO_OP_ZONE_APPEND, UBLK_IO_RES_ABORT, UBLK_IO_RES_NEED_GET_DATA, UBLK_IO_RES_OK,
  UBLK_U_IO_COMMIT_AND_FETCH_REQ, UBLK_U_IO_FETCH_REQ, UBLK_U_IO_NEED_GET_DATA,
} from '../abi/uapi.js';
import { Dispatcher } from './dispatch.js';
import type { CommitSink, Engine, EngineDeps, ServedQueue } from './engine.js';
import type { ServingMode } from '../mode.js';
import { UblkRequest } from './request.js';
import { KIND_OWN, KIND_STAGE, KIND_TARGET, KIND_UBLK, nextSqe, prepIoCmd, setUserDataLo, udKind, udQueue, udTag } from './worker-ring.js';

/** What this thread keeps per queue it serves. */
class ClassicQueue {
  readonly reqs: UblkRequest[] = [];
  /** Per tag, for COMMIT_AND_FETCH (and FETCH): the buffer (kernel copy) in the command's addr, else 0. */
  readonly addrs: number[] = [];
  /** FETCH_REQ's addr per tag: the buffer, or 0 under NEED_GET_DATA (an idle tag needs none). */
  readonly fetchAddrs: number[];
  /**
   * Zero copy with AUTO_BUF_REG: the descriptor that goes in the SQE's own addr
   * field, {index = the tag's buffer-table slot, flags = FALLBACK}.
   */
  readonly autoBufReg: number[] = [];
  readonly tags: number[];

  readonly q: number;
  readonly ud: number;
  readonly desc: Uint32Array;

  constructor(served: ServedQueue, mode: ServingMode, depth: number, slotBase: number, charFixed: number) {
    const { q, ud, desc, bufs, tags } = served;
    this.q = q;
    this.ud = ud;
    this.desc = desc;
    this.tags = tags ?? Array.from({ length: depth }, (_, t) => t);
    for (let t = 0; t < depth; t++) {
      this.reqs.push(new UblkRequest(q, t, bufs?.views[t] ?? null, slotBase + t, bufs?.addrs[t] ?? 0, ud, charFixed));
      this.addrs.push(mode.bufferAddressInCommands ? bufs!.addrs[t]! : 0);
      this.autoBufReg.push((slotBase + t) | (UBLK_AUTO_BUF_REG_FALLBACK << 16));
    }
    this.fetchAddrs = mode.needGetData ? this.addrs.map(() => 0) : this.addrs;
  }
}

export class ClassicEngine implements Engine, CommitSink {
  readonly dispatcher: Dispatcher;
  private readonly ring: Ring;
  /** By ServedQueue.ud, the queue field of user_data. */
  private readonly byUd: ClassicQueue[] = [];
  private readonly queues: ClassicQueue[] = [];
  private readonly autoBufReg: boolean;
  private readonly charFixed: number;
  private armed = 0; // tags the kernel may still hand us a request on
  private failure: string | null = null;

  constructor(deps: EngineDeps) {
    const { ring, mode, depth } = deps;
    this.ring = ring;
    this.autoBufReg = mode.autoBufReg;
    this.charFixed = deps.place.charFixed;
    deps.queues.forEach((served, i) => {
      // The i-th served queue owns buffer-table slots bufBase + [i*depth, (i+1)*depth).
      const cq = new ClassicQueue(served, mode, depth, deps.place.bufBase + i * depth, this.charFixed);
      this.queues.push(cq);
      this.byUd[served.ud] = cq;
    });
    this.dispatcher = new Dispatcher(ring, mode, this, deps.waker, deps);
  }

  get active(): boolean { return this.armed > 0 || this.dispatcher.asyncInFlight > 0; }
  get error(): string | null { return this.failure; }

  arm(reap: CqeHandler): void {
    for (const cq of this.queues) {
      // Counted one by one: should a submit inside nextSqe throw, the fetches queued before are the kernel's all the same.
      for (const t of cq.tags) {
        this.queueCmd(cq, UBLK_U_IO_FETCH_REQ, t, 0, cq.fetchAddrs[t]);
        this.armed++;
      }
    }
    this.ring.submit();
    // FETCH_REQ only completes when a request arrives, and none can before
    // START_DEV: a CQE for us now means the kernel refused a fetch.
    this.ring.reap(reap);
  }

  flush(): number { return 0; }

  requests(): UblkRequest[] { return this.queues.flatMap((cq) => cq.reqs); }

  private queueCmd(cq: ClassicQueue, op: number, tag: number, result: number, addr = cq.addrs[tag]!): void {
    const ring = this.ring, s = nextSqe(ring);
    prepIoCmd(ring, s, this.charFixed, op, cq.q, tag, result, addr);
    if (this.autoBufReg) setAddr(ring, s, cq.autoBufReg[tag]!);
    setUserDataLo(ring, s, KIND_UBLK, cq.ud, tag);
  }

  readonly commit = (req: UblkRequest, result: number): void => {
    this.queueCommit(this.byUd[req.ud]!, req, result);
  };

  // A commit linked to the target's chain (TargetIo.linkCommit) is an
  // ordinary one; if the chain fails, the kernel cancels it without a CQE.
  readonly commitNext = this.commit;

  /** COMMIT_AND_FETCH_REQ; a ZONE_APPEND's carries the sector written in its addr (zone_append_lba; zoned needs user or zero copy, where addr is free). */
  private queueCommit(cq: ClassicQueue, req: UblkRequest, result: number): void {
    const addr = req.op === UBLK_IO_OP_ZONE_APPEND ? req.zoneAppendLba : cq.addrs[req.tag]!;
    this.queueCmd(cq, UBLK_U_IO_COMMIT_AND_FETCH_REQ, req.tag, result, addr);
  }

  readonly onCqe = (lo: number, hi: number, res: number, flags: number): void => {
    const kind = udKind(lo), tag = udTag(lo), cq = this.byUd[udQueue(lo)]!;
    if (kind === KIND_TARGET || kind === KIND_STAGE) {
      this.dispatcher.onCqe(cq.reqs[tag]!, kind, hi, res, flags);
      return;
    }
    if (kind === KIND_OWN) {
      this.dispatcher.onOwnCqe(hi, res, flags);
      return;
    }
    if (kind !== KIND_UBLK) return;
    if (res === UBLK_IO_RES_OK) {
      const req = cq.reqs[tag]!;
      req.load(cq.desc);
      this.dispatcher.dispatch(req);
      return;
    }
    // NEED_GET_DATA: a WRITE whose data waits for a buffer; the command's CQE brings it as a request.
    if (res === UBLK_IO_RES_NEED_GET_DATA) {
      this.queueCmd(cq, UBLK_U_IO_NEED_GET_DATA, tag, 0);
      return;
    }
    // The tag is no longer armed: ABORT on stop or ring teardown, anything else is an error.
    this.armed--;
    if (res !== UBLK_IO_RES_ABORT && !this.failure) this.failure = `queue ${cq.q} tag ${tag}: fetch/commit failed with ${res}`;
  };
}
