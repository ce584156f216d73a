// Transmission-phase codecs: the 28-byte request header, and the check of a
// 16-byte simple reply header. Both work in place on preallocated memory
// (no allocation per request); 64-bit fields travel as two u32 halves.
import type { UblkRequest } from '../ublk/worker/request.js';
import {
  NBD_CMD_READ, NBD_CMD_WRITE, NBD_ERRNOS, NBD_REQUEST_MAGIC, NBD_SIMPLE_REPLY_MAGIC, NBD_STRUCTURED_REPLY_MAGIC, REQUEST_BYTES,
} from './constants.js';

const TWO_32 = 2 ** 32;

/** Writes a request header at byte `at` of `v`. `offset` is below 2^53. */
export function encodeRequest(v: DataView, at: number, type: number, flags: number, handleLo: number, handleHi: number,
  offset: number, length: number): void {
  v.setUint32(at, NBD_REQUEST_MAGIC);
  v.setUint16(at + 4, flags);
  v.setUint16(at + 6, type);
  v.setUint32(at + 8, handleHi); // the handle is opaque to the server: any byte order will do, as long as we read it back the same
  v.setUint32(at + 12, handleLo);
  v.setUint32(at + 16, Math.floor(offset / TWO_32));
  v.setUint32(at + 20, offset >>> 0);
  v.setUint32(at + 24, length);
}
export { REQUEST_BYTES };

/** The fields of a simple reply header, decoded by `decodeSimpleReply` into one reused object. */
export interface SimpleReply { error: number; handleLo: number; handleHi: number }

/**
 * Decodes the simple reply header at byte `at` of `v` into `out`; returns
 * null, or what is wrong with it (the connection is then unusable).
 */
export function decodeSimpleReply(v: DataView, at: number, out: SimpleReply): string | null {
  const magic = v.getUint32(at);
  if (magic !== NBD_SIMPLE_REPLY_MAGIC) {
    return magic === NBD_STRUCTURED_REPLY_MAGIC ? 'a structured reply, which was not negotiated'
      : `a reply with bad magic 0x${magic.toString(16)}`;
  }
  out.error = v.getUint32(at + 4);
  out.handleHi = v.getUint32(at + 8);
  out.handleLo = v.getUint32(at + 12);
  return null;
}

/** replyResult(): a successful READ's data follows the header. */
export const DATA_FOLLOWS = 1;
const EIO = 5;

/**
 * What a valid simple reply to a command of `type` for `req` completes it
 * with: the server's errno (one of the specification's, else EIO), the bytes
 * of a WRITE, 0 for other commands; or DATA_FOLLOWS for a READ.
 */
export function replyResult(r: SimpleReply, type: number, req: UblkRequest): number {
  if (r.error !== 0) return -(NBD_ERRNOS.has(r.error) ? r.error : EIO);
  if (type === NBD_CMD_READ) return DATA_FOLLOWS;
  return type === NBD_CMD_WRITE ? req.length : 0;
}
