// UBLK_F_INTEGRITY's data path in a serving thread. A request flagged
// UBLK_IO_F_INTEGRITY carries `metadata_size` bytes per protection interval
// (one logical block), which only user copy reaches: READ/WRITE on
// /dev/ublkcN at the request's user-copy position with
// UBLKSRV_IO_INTEGRITY_FLAG (bit 62) set. Bit 62 is past what a JS number
// holds exactly, so the position goes to pread/pwrite as two u32 halves.
import { native } from '../../native.js';
import { EIO } from '../../sys.js';
import { UBLK_INTEGRITY_FLAG_OFF } from '../abi/uapi.js';
import type { UblkRequest } from './request.js';

const TWO_32 = 2 ** 32;
const FLAG_HI = 2 ** (UBLK_INTEGRITY_FLAG_OFF - 32);
const MIN_BUFFER = 4096;

/** Sizes each flagged request's metadata and gives its tag a buffer for it. */
export class RequestIntegrity {
  constructor(private readonly metadataSize: number, private readonly intervalBytes: number) {}

  /** Metadata bytes for `bytes` of data. */
  bytesFor(bytes: number): number {
    return Math.floor(bytes / this.intervalBytes) * this.metadataSize;
  }

  /** Sets req.integrity and req.integrityOffset; the tag's buffer grows to hold them (kept for its later requests). */
  load(req: UblkRequest): void {
    const n = this.bytesFor(req.length);
    req.integrity = n;
    req.integrityOffset = this.bytesFor(req.offset);
    if (req.integrityBuffer.byteLength >= n) return;
    // The tag's previous request is committed: nothing uses the old buffer any more.
    if (req.integrityBuffer.byteLength) native.munmap(req.integrityBuffer.buffer as ArrayBuffer);
    let size = MIN_BUFFER;
    while (size < n) size *= 2;
    const mem = native.alloc(size);
    req.integrityBuffer = new Uint8Array(mem);
    req.integrityAddress = native.addressOf(mem);
  }
}

/**
 * Moves `len` bytes of the request's metadata between /dev/ublkcN (`charFd`)
 * and the tag's metadata buffer: pread (`fromKernel`, a WRITE request's) or
 * pwrite (a READ request's), at the request's user-copy position with
 * UBLKSRV_IO_INTEGRITY_FLAG. Returns 0, or -errno (-EIO for a short copy).
 */
export function copyIntegrity(charFd: number, req: UblkRequest, fromKernel: boolean, len: number): number {
  // (not req.readPages/writePages: the flag lies above the 2^53 a position number holds)
  const pos = req.userCopyPos, lo = (pos % TWO_32) | 0, hi = Math.floor(pos / TWO_32) + FLAG_HI;
  const buf = req.integrityBuffer;
  const n = fromKernel ? native.pread(charFd, buf, 0, len, lo, hi) : native.pwrite(charFd, buf, 0, len, lo, hi);
  return n === len ? 0 : n < 0 ? n : -EIO;
}
