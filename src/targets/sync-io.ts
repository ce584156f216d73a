// pread/pwrite of a request's data and metadata, for targets that serve it
// synchronously on the serving thread (memory, zoned: their data is in a
// memfd, so a call never waits). The native calls return bytes or -errno and
// allocate nothing, where fs.readSync and fs.writeSync cost 8 and 64 heap
// bytes a call and throw on error.
//
// Each function works out the position from the request itself and passes it
// to the native call as two u32 halves, the low one as `| 0`: a position above
// 2^31 handed as a number to a native function, or to a function V8 does not
// inline (one of these, called through a variable), is a boxed double of 16
// heap bytes.
import { native } from '../native.js';
import type { UblkRequest } from '../ublk/worker/request.js';

const TWO_32 = 2 ** 32;

/** pread(2) of the request's data at its offset: bytes read, or -errno. */
export function readData(fd: number, req: UblkRequest): number {
  const at = req.sector * 512;
  return native.pread(fd, req.buffer, 0, req.length, (at % TWO_32) | 0, Math.floor(at / TWO_32));
}

/** pwrite(2) of the request's data at sector `sector` (default: its own): bytes written, or -errno. */
export function writeData(fd: number, req: UblkRequest, sector = req.sector): number {
  const at = sector * 512;
  return native.pwrite(fd, req.buffer, 0, req.length, (at % TWO_32) | 0, Math.floor(at / TWO_32));
}

/** pread(2) of the request's metadata (UBLK_F_INTEGRITY) at its place in `fd`. */
export function readMetadata(fd: number, req: UblkRequest): number {
  const at = req.integrityOffset;
  return native.pread(fd, req.integrityBuffer, 0, req.integrity, (at % TWO_32) | 0, Math.floor(at / TWO_32));
}

/** pwrite(2) of the request's metadata (UBLK_F_INTEGRITY) at its place in `fd`. */
export function writeMetadata(fd: number, req: UblkRequest): number {
  const at = req.integrityOffset;
  return native.pwrite(fd, req.integrityBuffer, 0, req.integrity, (at % TWO_32) | 0, Math.floor(at / TWO_32));
}
