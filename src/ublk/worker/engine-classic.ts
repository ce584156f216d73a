// Classic (per-tag) engine for one queue: FETCH_REQ once per tag, then one
// COMMIT_AND_FETCH_REQ per request, which completes it and re-arms the tag.
// All commands of a tag must come from the thread that fetched it (the tag's
// "daemon"), which is why one worker thread owns one queue here.
import type { Ring } from '../../uring/ring.js';
import { ECANCELED } from '../../sys.js';
import { setAddr } from '../../uring/prep.js';
import {
  UBLK_AUTO_BUF_REG_FALLBACK, UBLK_IO_RES_ABORT, UBLK_IO_RES_OK, UBLK_U_IO_COMMIT_AND_FETCH_REQ, UBLK_U_IO_FETCH_REQ,
} from '../abi/uapi.js';
import { Dispatcher } from './dispatch.js';
import type { CommitSink, Engine, EngineDeps } from './engine.js';
import { UblkRequest } from './request.js';
import { KIND_STAGE, KIND_TARGET, KIND_UBLK, nextSqe, prepIoCmd, setUserDataLo, udKind, udTag } from './worker-ring.js';

export class ClassicEngine implements Engine, CommitSink {
  readonly dispatcher: Dispatcher;
  private readonly ring: Ring;
  private readonly q: number;
  private readonly depth: number;
  private readonly desc: Uint32Array;
  private readonly reqs: UblkRequest[] = [];
  /** Per tag, for FETCH/COMMIT_AND_FETCH: the buffer (kernel copy) in the command's addr, else 0. */
  private readonly addrs: number[] = [];
  /**
   * Zero copy with AUTO_BUF_REG: the descriptor that goes in the SQE's own addr
   * field, {index = the tag's buffer-table slot, flags = FALLBACK}.
   */
  private readonly autoBufReg: number[] | null;
  /** Per tag: COMMIT_AND_FETCHes linked to a target's IO (TargetIo.linkCommit) whose CQE is still to come. */
  private readonly linked: Uint8Array;
  private armed = 0; // tags the kernel may still hand us a request on
  private failure: string | null = null;

  constructor(deps: EngineDeps) {
    const { ring, mode, depth } = deps;
    if (deps.queues.length !== 1) throw new Error(`a classic engine serves one queue, not ${deps.queues.length}`);
    const { q, desc, bufs } = deps.queues[0]!;
    this.ring = ring;
    this.q = q;
    this.depth = depth;
    this.desc = desc;
    this.linked = new Uint8Array(depth);
    this.autoBufReg = mode.autoBufReg ? [] : null;
    for (let t = 0; t < depth; t++) {
      // A ring serves one queue: buffer-table slot = tag.
      this.reqs.push(new UblkRequest(q, t, bufs?.views[t] ?? null, t, bufs?.addrs[t] ?? 0));
      this.addrs.push(mode.bufferAddressInCommands ? bufs!.addrs[t]! : 0);
      this.autoBufReg?.push(t | (UBLK_AUTO_BUF_REG_FALLBACK << 16));
    }
    this.dispatcher = new Dispatcher(ring, mode, this, deps.waker, deps);
  }

  get active(): boolean { return this.armed > 0 || this.dispatcher.asyncInFlight > 0; }
  get error(): string | null { return this.failure; }

  arm(): void {
    for (let t = 0; t < this.depth; t++) this.queueCmd(UBLK_U_IO_FETCH_REQ, t, 0);
    this.armed = this.depth;
    this.ring.submit();
    // FETCH_REQ only completes when a request arrives, and none can before
    // START_DEV: a CQE now means the kernel refused a fetch.
    this.ring.reap(this.onCqe);
  }

  flush(): number { return 0; }

  private queueCmd(op: number, tag: number, result: number): void {
    const ring = this.ring, s = nextSqe(ring);
    prepIoCmd(ring, s, op, this.q, tag, result, this.addrs[tag]!);
    if (this.autoBufReg) setAddr(ring, s, this.autoBufReg[tag]!);
    setUserDataLo(ring, s, KIND_UBLK, this.q, tag);
  }

  readonly commit = (req: UblkRequest, result: number): void => {
    this.queueCmd(UBLK_U_IO_COMMIT_AND_FETCH_REQ, req.tag, result);
  };

  readonly commitNext = (req: UblkRequest, result: number): void => {
    this.linked[req.tag]!++;
    this.queueCmd(UBLK_U_IO_COMMIT_AND_FETCH_REQ, req.tag, result);
  };

  readonly onCqe = (lo: number, hi: number, res: number, flags: number): void => {
    const kind = udKind(lo), tag = udTag(lo);
    if (kind === KIND_TARGET || kind === KIND_STAGE) {
      this.dispatcher.onCqe(this.reqs[tag]!, kind, hi, res, flags);
      return;
    }
    if (kind !== KIND_UBLK) return;
    // A commit linked to a target's IO that failed was cancelled: the tag is
    // still armed, the target commits again.
    if (this.linked[tag]! > 0) {
      this.linked[tag]!--; // each linked commit posts one CQE: cancelled, or its next fetch
      if (res === -ECANCELED) return;
    }
    if (res === UBLK_IO_RES_OK) {
      const req = this.reqs[tag]!;
      req.load(this.desc);
      this.dispatcher.dispatch(req);
      return;
    }
    // The tag is no longer armed: ABORT on stop or ring teardown, anything else is an error.
    this.armed--;
    if (res !== UBLK_IO_RES_ABORT && !this.failure) this.failure = `tag ${tag}: fetch/commit failed with ${res}`;
  };
}
