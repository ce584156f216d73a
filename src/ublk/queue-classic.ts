// Classic (per-tag) data plane for one queue: FETCH_REQ once per tag, then one
// COMMIT_AND_FETCH_REQ per request, which completes it and re-arms the tag.
// All commands of a tag must come from the thread that fetched it (the tag's
// "daemon"), which is why one worker thread owns one queue here.
import type { Ring } from '../uring/ring.js';
import { prepUringCmd, setSqeFlags, setUserData } from '../uring/prep.js';
import { IOSQE_FIXED_FILE } from '../uring/constants.js';
import { LAYOUTS as URING } from '../uring/layout.js';
import { LAYOUTS } from './layout.js';
import { Dispatcher } from './dispatch.js';
import type { TagBuffers } from './queue-memory.js';
import { UblkRequest } from './request.js';
import type { Target } from './target.js';
import { KIND_UBLK, udKind, udTag, userDataLo } from './user-data.js';
import { UBLK_IO_RES_ABORT, UBLK_IO_RES_OK, UBLK_U_IO_COMMIT_AND_FETCH_REQ, UBLK_U_IO_FETCH_REQ } from './uapi.js';

/** Fixed-file index of /dev/ublkcN in every worker ring. */
export const CHAR_DEV_FIXED = 0;

// struct ublksrv_io_cmd inside the SQE's command area, as typed-array indices.
const CMD = URING.io_uring_sqe.fields.cmd[0];
const F = LAYOUTS.ublksrv_io_cmd.fields;
const Q_ID = (CMD + F.q_id[0]) >> 1;
const TAG = (CMD + F.tag[0]) >> 1;
const RESULT = (CMD + F.result[0]) >> 2;
const ADDR_LO = (CMD + F.addr[0]) >> 2;
const TWO_32 = 2 ** 32;

export class ClassicQueue {
  readonly dispatcher: Dispatcher;
  private readonly reqs: UblkRequest[] = [];
  private armed = 0; // tags the kernel may still hand us a request on
  private failure: string | null = null;

  constructor(
    private readonly ring: Ring,
    private readonly q: number,
    private readonly depth: number,
    private readonly desc: Uint32Array,
    private readonly bufs: TagBuffers,
    target: Target,
  ) {
    for (let t = 0; t < depth; t++) this.reqs.push(new UblkRequest(q, t, bufs.views[t]!));
    this.dispatcher = new Dispatcher(target, this.commit);
  }

  get active(): boolean { return this.armed > 0 || this.dispatcher.asyncInFlight > 0; }
  /** Why the queue stopped, if not by an orderly abort. */
  get error(): string | null { return this.failure; }

  /** Queues FETCH_REQ for every tag; the caller submits. */
  fetchAll(): void {
    for (let t = 0; t < this.depth; t++) this.queueCmd(UBLK_U_IO_FETCH_REQ, t, 0);
    this.armed = this.depth;
  }

  flush(): void {}

  private queueCmd(op: number, tag: number, result: number): void {
    const ring = this.ring;
    let s = ring.getSqe();
    // At most one command per tag is outstanding and the SQ holds `depth`, but a
    // target may have used SQEs of its own: flush then.
    if (s < 0) {
      ring.submit();
      s = ring.getSqe();
    }
    prepUringCmd(ring, s, CHAR_DEV_FIXED, op);
    setSqeFlags(ring, s, IOSQE_FIXED_FILE);
    setUserData(ring, s, userDataLo(KIND_UBLK, this.q, tag), 0);
    const u16 = ring.sqeU16, u32 = ring.sqeU32;
    u16[(s >> 1) + Q_ID] = this.q;
    u16[(s >> 1) + TAG] = tag;
    ring.sqeI32[(s >> 2) + RESULT] = result;
    // The buffer the kernel copies this tag's next request's data to/from.
    const addr = this.bufs.addrs[tag]!;
    u32[(s >> 2) + ADDR_LO] = addr % TWO_32;
    u32[(s >> 2) + ADDR_LO + 1] = Math.floor(addr / TWO_32);
  }

  private readonly commit = (req: UblkRequest, result: number): void => {
    this.queueCmd(UBLK_U_IO_COMMIT_AND_FETCH_REQ, req.tag, result);
  };

  readonly onCqe = (lo: number, _hi: number, res: number, _flags: number): void => {
    if (udKind(lo) !== KIND_UBLK) return;
    const tag = udTag(lo);
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
