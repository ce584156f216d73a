// Moving a request's data to or from a file (or block device) on the serving
// thread's io_uring, in whichever way the copy mode allows (loop moves whole
// requests this way, stripe each piece of one):
//
//   kernel  READ / WRITE on the tag buffer
//   zero    READ_FIXED / WRITE_FIXED on the request's own pages
//   user    the tag buffer as a bounce buffer: READ file → buffer linked to
//           WRITE buffer → /dev/ublkcN (READ), or READ /dev/ublkcN → buffer
//           linked to WRITE buffer → file (WRITE)
//
// A FUA write carries RWF_DSYNC.
import { RWF_DSYNC } from '../sys.js';
import { prepRead, prepReadFixed, prepWrite, prepWriteFixed, setRwFlags, setSqeFlags } from '../uring/prep.js';
import { IOSQE_FIXED_FILE, IOSQE_IO_LINK } from '../uring/constants.js';
import type { TargetIo } from '../ublk/target.js';
import type { UblkRequest } from '../ublk/worker/request.js';
import { UBLK_IO_OP_READ } from '../ublk/abi/uapi.js';
import { prepIntegrityCopy } from '../ublk/worker/integrity.js';

/** CQEs that one queueFileRw() posts in copy mode `io.copy`. */
export const fileRwCqes = (io: TargetIo): number => (io.copy === 'user' ? 2 : 1);

/**
 * Queues the operations that move `len` bytes at `reqOff` into the request
 * to or from `fd` at `fileOff`, their CQEs tagged `sub`, in one submission
 * with `extra` SQEs more (a commit to link after them). Returns the last SQE.
 */
export function queueFileRw(io: TargetIo, req: UblkRequest, sub: number, fd: number, fileOff: number, reqOff: number, len: number,
  extra: number): number {
  const ring = io.ring, read = req.op === UBLK_IO_OP_READ;
  const dsync = !read && req.fua ? RWF_DSYNC : 0;
  const addr = req.bufferAddress + reqOff;
  if (io.copy !== 'user') {
    io.reserve(1 + extra);
    const s = io.sqe(req, sub);
    if (io.copy === 'kernel') {
      if (read) prepRead(ring, s, fd, addr, len, fileOff);
      else prepWrite(ring, s, fd, addr, len, fileOff);
    } else if (read) {
      prepReadFixed(ring, s, fd, addr, len, fileOff, req.bufIndex);
    } else {
      prepWriteFixed(ring, s, fd, addr, len, fileOff, req.bufIndex);
    }
    setRwFlags(ring, s, dsync);
    return s;
  }
  const ucPos = req.userCopyPos + reqOff;
  io.reserve(2 + extra);
  const a = io.sqe(req, sub);
  if (read) prepRead(ring, a, fd, addr, len, fileOff);
  else prepRead(ring, a, io.charDevFixed, addr, len, ucPos);
  setSqeFlags(ring, a, IOSQE_IO_LINK | (read ? 0 : IOSQE_FIXED_FILE));
  const b = io.sqe(req, sub);
  if (read) {
    prepWrite(ring, b, io.charDevFixed, addr, len, ucPos);
    setSqeFlags(ring, b, IOSQE_FIXED_FILE);
  } else {
    prepWrite(ring, b, fd, addr, len, fileOff);
    setRwFlags(ring, b, dsync);
  }
  return b;
}

/**
 * UBLK_F_INTEGRITY (user copy only): queues the linked pair that moves the
 * request's metadata (`req.integrity` bytes) to or from `fd` at `fileOff`
 * through the tag's metadata buffer, two CQEs tagged `sub`, in one
 * submission with `extra` SQEs more. Returns the last SQE.
 */
export function queueIntegrityRw(io: TargetIo, req: UblkRequest, sub: number, fd: number, fileOff: number, extra: number): number {
  const ring = io.ring, read = req.op === UBLK_IO_OP_READ, addr = req.integrityAddress, len = req.integrity;
  io.reserve(2 + extra);
  const a = io.sqe(req, sub);
  if (read) {
    prepRead(ring, a, fd, addr, len, fileOff);
    setSqeFlags(ring, a, IOSQE_IO_LINK);
  } else {
    prepIntegrityCopy(ring, a, req, true);
    setSqeFlags(ring, a, IOSQE_IO_LINK | IOSQE_FIXED_FILE);
  }
  const b = io.sqe(req, sub);
  if (read) {
    prepIntegrityCopy(ring, b, req, false);
  } else {
    prepWrite(ring, b, fd, addr, len, fileOff);
    setRwFlags(ring, b, req.fua ? RWF_DSYNC : 0);
  }
  return b;
}
