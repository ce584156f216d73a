// The request header codec (src/nbd/wire.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NBD_CMD_FLAG_FUA, NBD_CMD_FLUSH, NBD_CMD_WRITE, NBD_REQUEST_MAGIC } from '../../src/nbd/constants.js';
import { encodeRequest } from '../../src/nbd/wire.js';

const header = (type: number, offset: number, length: number): DataView => {
  const v = new DataView(new ArrayBuffer(28));
  encodeRequest(v, 0, type, NBD_CMD_FLAG_FUA, 7, 9, offset, length);
  return v;
};

test('a request header: magic, flags, type, handle and the 64-bit offset in network order', () => {
  const v = header(NBD_CMD_WRITE, 5 * 2 ** 32 + 4096, 512);
  assert.equal(v.getUint32(0), NBD_REQUEST_MAGIC);
  assert.equal(v.getUint16(4), NBD_CMD_FLAG_FUA);
  assert.equal(v.getUint16(6), NBD_CMD_WRITE);
  assert.deepEqual([v.getUint32(8), v.getUint32(12)], [9, 7]);
  assert.deepEqual([v.getUint32(16), v.getUint32(20), v.getUint32(24)], [5, 4096, 512]);
});

test('a FLUSH goes out with offset and length zero, whatever the block request carried (the spec says so, and nbdkit refuses others)', () => {
  const v = header(NBD_CMD_FLUSH, 4096, 512);
  assert.equal(v.getUint16(6), NBD_CMD_FLUSH);
  assert.deepEqual([v.getUint32(16), v.getUint32(20), v.getUint32(24)], [0, 0, 0]);
});
