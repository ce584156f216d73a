// The transmission-phase request header (28 bytes), written in place in
// preallocated memory (no allocation per request); the 64-bit offset
// travels as two u32 halves. Replies are parsed by reply-parser.ts.
import { NBD_CMD_DISC, NBD_CMD_FLUSH, NBD_REQUEST_MAGIC } from './constants.js';

const TWO_32 = 2 ** 32;

/**
 * Writes a request header at byte `at` of `v`. `offset` is below 2^53. FLUSH
 * and DISC carry no range: the spec wants their offset and length all zero
 * (nbdkit refuses others), whatever the block request says (the kernel gives
 * a flush the sector 2^64-1).
 */
export function encodeRequest(v: DataView, at: number, type: number, flags: number, handleLo: number, handleHi: number,
  offset: number, length: number): void {
  if (type === NBD_CMD_FLUSH || type === NBD_CMD_DISC) offset = length = 0;
  v.setUint32(at, NBD_REQUEST_MAGIC);
  v.setUint16(at + 4, flags);
  v.setUint16(at + 6, type);
  v.setUint32(at + 8, handleHi); // the handle is opaque to the server: any byte order will do, as long as we read it back the same
  v.setUint32(at + 12, handleLo);
  v.setUint32(at + 16, Math.floor(offset / TWO_32));
  v.setUint32(at + 20, offset >>> 0);
  v.setUint32(at + 24, length);
}
