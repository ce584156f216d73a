// One tiny function per opcode, liburing style: each writes only the SQE
// fields its opcode reads, into the SQE at byte offset `s` from ring.getSqe()
// (which zeroes it). 64-bit fields (addr, off, user_data) are written as two
// u32 halves; numbers passed for them must be below 2^53 (-1 works for "the
// current file position": it becomes all ones).
import type { Ring } from './ring.js';
import { LAYOUTS } from './layout.js';
import {
  IORING_OP_FALLOCATE, IORING_OP_FSYNC, IORING_OP_NOP, IORING_OP_READ, IORING_OP_READ_FIXED, IORING_OP_RECV,
  IORING_OP_SENDMSG, IORING_OP_SHUTDOWN, IORING_OP_TIMEOUT, IORING_OP_URING_CMD, IORING_OP_WRITE, IORING_OP_WRITE_FIXED,
  SOCKET_URING_OP_SETSOCKOPT, IORING_RECVSEND_FIXED_BUF,
} from './constants.js';

const F = LAYOUTS.io_uring_sqe.fields;
// Indices into the ring's SQE views, relative to the SQE's own index there.
const OPCODE = F.opcode[0], FLAGS = F.flags[0]; // u8
const IOPRIO = F.ioprio[0] >> 1, BUF_INDEX = F.buf_index[0] >> 1, BUF_GROUP = F.buf_group[0] >> 1; // u16
const FD = F.fd[0] >> 2, OFF = F.off[0] >> 2, CMD_OP = F.cmd_op[0] >> 2, ADDR = F.addr[0] >> 2; // u32
const LEN = F.len[0] >> 2, RW_FLAGS = F.rw_flags[0] >> 2, FSYNC_FLAGS = F.fsync_flags[0] >> 2;
const TIMEOUT_FLAGS = F.timeout_flags[0] >> 2, URING_CMD_FLAGS = F.uring_cmd_flags[0] >> 2;
const USER_DATA = F.user_data[0] >> 2;
const LEVEL = F.level[0] >> 2, OPTNAME = F.optname[0] >> 2, OPTLEN = F.optlen[0] >> 2, OPTVAL = F.optval[0] >> 2;

/** Byte offset of the URING_CMD payload in an SQE: 16 bytes (64-byte SQE) or 80 (SQE128). */
export const SQE_CMD_OFFSET = F.cmd[0];

const TWO_32 = 0x100000000;

function set64(u32: Uint32Array, i: number, x: number): void {
  u32[i] = x >>> 0;
  u32[i + 1] = Math.floor(x / TWO_32);
}

function prepRw(ring: Ring, s: number, op: number, fd: number, addr: number, len: number, offset: number): void {
  const u32 = ring.sqeU32, w = s >> 2;
  ring.sqeU8[s + OPCODE] = op;
  ring.sqeI32[w + FD] = fd;
  set64(u32, w + OFF, offset);
  set64(u32, w + ADDR, addr);
  u32[w + LEN] = len;
}

export function prepNop(ring: Ring, s: number): void {
  ring.sqeU8[s + OPCODE] = IORING_OP_NOP;
}

/** read(2) of `len` bytes at file `offset` into memory at `addr`. */
export function prepRead(ring: Ring, s: number, fd: number, addr: number, len: number, offset: number): void {
  prepRw(ring, s, IORING_OP_READ, fd, addr, len, offset);
}

export function prepWrite(ring: Ring, s: number, fd: number, addr: number, len: number, offset: number): void {
  prepRw(ring, s, IORING_OP_WRITE, fd, addr, len, offset);
}

/** Like prepRead, into registered buffer `bufIndex`; [addr, addr+len) must lie inside it. */
export function prepReadFixed(
  ring: Ring, s: number, fd: number, addr: number, len: number, offset: number, bufIndex: number,
): void {
  prepRw(ring, s, IORING_OP_READ_FIXED, fd, addr, len, offset);
  ring.sqeU16[(s >> 1) + BUF_INDEX] = bufIndex;
}

export function prepWriteFixed(
  ring: Ring, s: number, fd: number, addr: number, len: number, offset: number, bufIndex: number,
): void {
  prepRw(ring, s, IORING_OP_WRITE_FIXED, fd, addr, len, offset);
  ring.sqeU16[(s >> 1) + BUF_INDEX] = bufIndex;
}

/** fsync(2), or fdatasync(2) with IORING_FSYNC_DATASYNC. */
export function prepFsync(ring: Ring, s: number, fd: number, fsyncFlags: number): void {
  prepRw(ring, s, IORING_OP_FSYNC, fd, 0, 0, 0);
  ring.sqeU32[(s >> 2) + FSYNC_FLAGS] = fsyncFlags;
}

/** fallocate(2): the kernel reads the mode from `len` and the length from `addr`. */
export function prepFallocate(ring: Ring, s: number, fd: number, mode: number, offset: number, len: number): void {
  prepRw(ring, s, IORING_OP_FALLOCATE, fd, len, mode, offset);
}

/**
 * IORING_OP_URING_CMD with `cmdOp` for the file's ->uring_cmd handler. The
 * caller writes the payload at byte s + SQE_CMD_OFFSET (48): 16 bytes in a
 * 64-byte SQE, 80 bytes with IORING_SETUP_SQE128.
 */
export function prepUringCmd(ring: Ring, s: number, fd: number, cmdOp: number): void {
  ring.sqeU8[s + OPCODE] = IORING_OP_URING_CMD;
  ring.sqeI32[(s >> 2) + FD] = fd;
  ring.sqeU32[(s >> 2) + CMD_OP] = cmdOp;
}

/** setsockopt(2) of socket `fd` (Linux 6.7+): option `optname` at `level`, its value the `optlen` bytes at `optval`. */
export function prepSetsockopt(ring: Ring, s: number, fd: number, level: number, optname: number, optval: number, optlen: number): void {
  prepUringCmd(ring, s, fd, SOCKET_URING_OP_SETSOCKOPT);
  const u32 = ring.sqeU32, w = s >> 2;
  u32[w + LEVEL] = level;
  u32[w + OPTNAME] = optname;
  u32[w + OPTLEN] = optlen;
  set64(u32, w + OPTVAL, optval);
}

/** Completes after `count` CQEs or when the __kernel_timespec at `tsAddr` elapses (-ETIME). */
export function prepTimeout(ring: Ring, s: number, tsAddr: number, count: number, timeoutFlags: number): void {
  prepRw(ring, s, IORING_OP_TIMEOUT, -1, tsAddr, 1, count);
  ring.sqeU32[(s >> 2) + TIMEOUT_FLAGS] = timeoutFlags;
}

/** sendmsg(2) of the struct msghdr at `msgAddr`, with MSG_* `msgFlags`. */
export function prepSendmsg(ring: Ring, s: number, fd: number, msgAddr: number, msgFlags: number): void {
  prepRw(ring, s, IORING_OP_SENDMSG, fd, msgAddr, 1, 0);
  ring.sqeU32[(s >> 2) + RW_FLAGS] = msgFlags;
}

/** recv(2) of up to `len` bytes into memory at `addr`, with MSG_* `msgFlags`. */
export function prepRecv(ring: Ring, s: number, fd: number, addr: number, len: number, msgFlags: number): void {
  prepRw(ring, s, IORING_OP_RECV, fd, addr, len, 0);
  ring.sqeU32[(s >> 2) + RW_FLAGS] = msgFlags;
}

/**
 * Like prepRecv, into registered buffer `bufIndex` (IORING_RECVSEND_FIXED_BUF):
 * unlike READ_FIXED on a socket, it takes MSG_WAITALL. Kernels without it
 * (before 7.2) complete it with -EINVAL.
 */
export function prepRecvFixed(ring: Ring, s: number, fd: number, addr: number, len: number, msgFlags: number, bufIndex: number): void {
  prepRecv(ring, s, fd, addr, len, msgFlags);
  ring.sqeU16[(s >> 1) + IOPRIO] = IORING_RECVSEND_FIXED_BUF;
  ring.sqeU16[(s >> 1) + BUF_INDEX] = bufIndex;
}

/** shutdown(2) of a socket (`how`: SHUT_RD 0, SHUT_WR 1, SHUT_RDWR 2): a recv waiting on it returns 0. */
export function prepShutdown(ring: Ring, s: number, fd: number, how: number): void {
  prepRw(ring, s, IORING_OP_SHUTDOWN, fd, 0, how, 0);
}

export function setUserData(ring: Ring, s: number, lo: number, hi: number): void {
  const w = (s >> 2) + USER_DATA;
  ring.sqeU32[w] = lo;
  ring.sqeU32[w + 1] = hi;
}

/** Sets (not ORs) the IOSQE_* flags. */
export function setSqeFlags(ring: Ring, s: number, iosqeFlags: number): void {
  ring.sqeU8[s + FLAGS] = iosqeFlags;
}

/** The IOSQE_* flags set. */
export function sqeFlags(ring: Ring, s: number): number {
  return ring.sqeU8[s + FLAGS]!;
}

/** Adds IOSQE_* flags to those already set. */
export function addSqeFlags(ring: Ring, s: number, iosqeFlags: number): void {
  ring.sqeU8[s + FLAGS] |= iosqeFlags;
}

/** Provided-buffer group for IOSQE_BUFFER_SELECT (shares the slot of buf_index). */
export function setBufGroup(ring: Ring, s: number, bgid: number): void {
  ring.sqeU16[(s >> 1) + BUF_GROUP] = bgid;
}

export function setBufIndex(ring: Ring, s: number, bufIndex: number): void {
  ring.sqeU16[(s >> 1) + BUF_INDEX] = bufIndex;
}

/** The 64-bit `off` from halves, for values ≥ 2^53 (e.g. ublk user-copy positions). */
export function setOffset64(ring: Ring, s: number, lo: number, hi: number): void {
  const w = (s >> 2) + OFF;
  ring.sqeU32[w] = lo;
  ring.sqeU32[w + 1] = hi;
}

export function setAddr(ring: Ring, s: number, addr: number): void {
  set64(ring.sqeU32, (s >> 2) + ADDR, addr);
}

/** The op-specific flags word (rw_flags, uring_cmd_flags, timeout_flags, … share it). */
export function setRwFlags(ring: Ring, s: number, flags: number): void {
  ring.sqeU32[(s >> 2) + RW_FLAGS] = flags;
}

/** IORING_URING_CMD_* flags, e.g. IORING_URING_CMD_FIXED together with setBufIndex(). */
export function setUringCmdFlags(ring: Ring, s: number, flags: number): void {
  ring.sqeU32[(s >> 2) + URING_CMD_FLAGS] = flags;
}
