// Moving a request's data to or from a file (or block device) on the serving
// thread's io_uring, in whichever way the copy mode allows (loop moves whole
// requests this way, stripe each piece of one):
//
//   kernel, user  READ / WRITE on the tag buffer (in user copy the dispatcher
//                 has copied a WRITE's data in, and copies a READ's out)
//   zero          READ_FIXED / WRITE_FIXED on the request's own pages
//
// A FUA write carries RWF_DSYNC.
import { RWF_DSYNC } from '../sys.js';
import { prepRead, prepReadFixed, prepWrite, prepWriteFixed, setRwFlags } from '../uring/prep.js';
import type { TargetIo } from '../ublk/target.js';
import type { UblkRequest } from '../ublk/worker/request.js';
import { UBLK_IO_OP_READ } from '../ublk/abi/uapi.js';

/**
 * Queues the operation that moves `len` bytes at `reqOff` into the request
 * to or from `fd` at `fileOff`, its CQE tagged `sub`, in one submission with
 * `extra` SQEs more (a commit to link after it). Returns the SQE.
 */
export function queueFileRw(io: TargetIo, req: UblkRequest, sub: number, fd: number, fileOff: number, reqOff: number, len: number,
  extra: number): number {
  const ring = io.ring, read = req.op === UBLK_IO_OP_READ;
  const addr = req.bufferAddress + reqOff;
  io.reserve(1 + extra);
  const s = io.sqe(req, sub);
  if (io.copy !== 'zero') {
    if (read) prepRead(ring, s, fd, addr, len, fileOff);
    else prepWrite(ring, s, fd, addr, len, fileOff);
  } else if (read) {
    prepReadFixed(ring, s, fd, addr, len, fileOff, req.bufIndex);
  } else {
    prepWriteFixed(ring, s, fd, addr, len, fileOff, req.bufIndex);
  }
  setRwFlags(ring, s, !read && req.fua ? RWF_DSYNC : 0);
  return s;
}

/**
 * UBLK_F_INTEGRITY (user copy only): queues the READ or WRITE that moves the
 * request's metadata (`req.integrity` bytes, in the tag's metadata buffer,
 * which the dispatcher fills and empties) to or from `fd` at `fileOff`, its
 * CQE tagged `sub`. Returns the SQE.
 */
export function queueIntegrityRw(io: TargetIo, req: UblkRequest, sub: number, fd: number, fileOff: number): number {
  const ring = io.ring, read = req.op === UBLK_IO_OP_READ, addr = req.integrityAddress, len = req.integrity;
  io.reserve(1);
  const s = io.sqe(req, sub);
  if (read) {
    prepRead(ring, s, fd, addr, len, fileOff);
  } else {
    prepWrite(ring, s, fd, addr, len, fileOff);
    setRwFlags(ring, s, req.fua ? RWF_DSYNC : 0);
  }
  return s;
}
