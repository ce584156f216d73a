// What every SQE on a queue worker's ring agrees on, defined once: the
// user_data layout, the fixed-file slot of /dev/ublkcN, and the per-tag
// command (struct ublksrv_io_cmd) that FETCH/COMMIT_AND_FETCH and
// REGISTER/UNREGISTER_IO_BUF share.
//
// user_data is handled as two u32 halves (no BigInt on the hot path):
//   lo bits  0..15  tag (or a command slot, for KIND_BATCH)
//   lo bits 16..27  the queue's index on this ring (ServedQueue.ud): its
//                   queue id while a ring serves one device, a slot of the
//                   thread's when it serves many (thread-host.ts)
//   lo bits 28..31  kind (below)
//   hi              free for the kind's owner (targets: their own sub-id)
import type { Ring } from '../../uring/ring.js';
import { prepRead, prepUringCmd, setSqeFlags, setUserData } from '../../uring/prep.js';
import { native } from '../../native.js';
import { IOSQE_FIXED_FILE } from '../../uring/constants.js';
import { LAYOUTS as URING } from '../../uring/layout.js';
import { LAYOUTS } from '../abi/layout.js';

export const KIND_UBLK = 0; // FETCH / COMMIT_AND_FETCH (classic), FETCH_IO_CMDS (batch)
export const KIND_TARGET = 1; // a target's own IO on the worker ring
export const KIND_BATCH = 2; // PREP_IO_CMDS / COMMIT_IO_CMDS
export const KIND_QUIT = 3; // the READ on the worker's quit eventfd
export const KIND_STAGE = 4; // the engine's per-request steps: buffer (un)registration (zero copy)
export const KIND_OWN = 5; // a target's own IO tied to no request (TargetIo.ownSqe)
export const KIND_WAKE = 6; // the READ on a pool thread's wake eventfd: messages from the main thread (worker.ts)
export const KIND_TICK = 7; // a pool thread's periodic TIMEOUT: idle devices give their buffers' memory back (thread-host.ts)

export const userDataLo = (kind: number, queue: number, tag: number): number =>
  ((kind << 28) | (queue << 16) | tag) >>> 0;
/** Sets an SQE's user_data to {kind, queue, tag} with hi = `hi`. */
export function setUserDataLo(ring: Ring, s: number, kind: number, queue: number, tag: number, hi = 0): void {
  setUserData(ring, s, userDataLo(kind, queue, tag), hi);
}
export const udTag = (lo: number): number => lo & 0xffff;
export const udQueue = (lo: number): number => (lo >>> 16) & 0xfff;
export const udKind = (lo: number): number => lo >>> 28;

/** Fixed-file index of /dev/ublkcN in a ring that serves one device (a shared ring gives each device its own). */
export const CHAR_DEV_FIXED = 0;

// struct ublksrv_io_cmd inside the SQE's command area, as typed-array indices.
const CMD = URING.io_uring_sqe.fields.cmd[0];
const F = LAYOUTS.ublksrv_io_cmd.fields;
const Q_ID = (CMD + F.q_id[0]) >> 1;
const TAG = (CMD + F.tag[0]) >> 1;
const RESULT = (CMD + F.result[0]) >> 2;
const ADDR_LO = (CMD + F.addr[0]) >> 2;
const TWO_32 = 2 ** 32;

/**
 * A per-tag ublk command on /dev/ublkcN (fixed file `charFixed`). `addr` is the tag's buffer (kernel
 * copy), the AUTO_BUF_REG descriptor, or the buffer-table index (REGISTER/UNREGISTER_IO_BUF).
 */
export function prepIoCmd(ring: Ring, s: number, charFixed: number, op: number, q: number, tag: number, result: number, addr: number): void {
  prepUringCmd(ring, s, charFixed, op);
  setSqeFlags(ring, s, IOSQE_FIXED_FILE);
  const u16 = ring.sqeU16, u32 = ring.sqeU32;
  u16[(s >> 1) + Q_ID] = q;
  u16[(s >> 1) + TAG] = tag;
  ring.sqeI32[(s >> 2) + RESULT] = result;
  u32[(s >> 2) + ADDR_LO] = addr % TWO_32;
  u32[(s >> 2) + ADDR_LO + 1] = Math.floor(addr / TWO_32);
}

/** An SQE, submitting what is queued first if the SQ is full. */
export function nextSqe(ring: Ring): number {
  let s = ring.getSqe();
  if (s < 0) {
    ring.submit();
    s = ring.getSqe();
    if (s < 0) throw new Error('io_uring submission queue stays full');
  }
  return s;
}

/** Makes sure the next `n` getSqe() calls succeed (links must not straddle a submit). */
export function reserveSqes(ring: Ring, n: number): void {
  if (ring.sqSpace() >= n) return;
  ring.submit();
  // The kernel may take fewer than all (-EAGAIN/-EBUSY: short of resources, CQ full): a chain must not be split.
  if (ring.sqSpace() < n) throw new Error(`io_uring submission queue has room for ${ring.sqSpace()} SQEs, ${n} needed in one submission`);
}

/**
 * A READ kept on an eventfd another thread writes to, whose CQE comes back as
 * `kind`: how a thread blocked in io_uring_enter learns that it was told something.
 */
export class EventfdReader {
  private readonly buf = native.alloc(8); // the kernel writes here until the READ completes
  private readonly count = new BigUint64Array(this.buf);

  constructor(private readonly ring: Ring, private readonly fd: number, private readonly kind: number) {
    this.arm();
  }

  private arm(): void {
    const s = nextSqe(this.ring); // may come after SQEs that filled the SQ
    prepRead(this.ring, s, this.fd, native.addressOf(this.buf), 8, 0);
    setUserData(this.ring, s, userDataLo(this.kind, 0, 0), 0);
  }

  /** The READ completed with `res`: the writes it counted (the eventfd's value), and the READ is armed again. */
  reread(res: number): number {
    const n = res === 8 ? Number(this.count[0]) : 0;
    this.arm();
    return n;
  }
}
