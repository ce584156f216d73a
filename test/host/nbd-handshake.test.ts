// The NBD handshake codec against scripted servers: what a well-behaved server
// says is decoded, and every malformed, short or unexpected answer ends the
// handshake with one line naming what the server did.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { negotiate, NbdError, type HandshakeIo } from '../../src/nbd/handshake.js';
import {
  CLISERV_MAGIC, IHAVEOPT, NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_HAS_FLAGS, NBD_FLAG_NO_ZEROES, NBD_FLAG_READ_ONLY, NBD_OPT_GO,
  NBD_OPT_LIST, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NBD_REP_ERR_POLICY, NBD_REP_ERR_TLS_REQD, NBD_REP_ERR_UNKNOWN, NBD_REP_ERR_UNSUP, NBD_REP_INFO,
  NBD_REP_SERVER, NBDMAGIC, OPT_REPLY_MAGIC,
} from '../../src/nbd/constants.js';

/** A server that has said `script` (all of it at once) and records what the client wrote. */
class Scripted implements HandshakeIo {
  private at = 0;
  readonly written: Buffer[] = [];
  constructor(private readonly script: Buffer) {}
  read(n: number): Promise<Uint8Array> {
    if (this.at + n > this.script.length) return Promise.reject(new NbdError('server closed the connection during the handshake'));
    const b = this.script.subarray(this.at, this.at + n);
    this.at += n;
    return Promise.resolve(b);
  }
  write(bytes: Uint8Array): Promise<void> { this.written.push(Buffer.from(bytes)); return Promise.resolve(); }
}

function greeting(flags = NBD_FLAG_FIXED_NEWSTYLE, second = IHAVEOPT): Buffer {
  const b = Buffer.alloc(18);
  b.writeBigUInt64BE(NBDMAGIC, 0);
  b.writeBigUInt64BE(second, 8);
  b.writeUInt16BE(flags, 16);
  return b;
}

function reply(option: number, type: number, data: Uint8Array = Buffer.alloc(0), magic = OPT_REPLY_MAGIC): Buffer {
  const r = Buffer.alloc(20);
  r.writeBigUInt64BE(magic, 0);
  r.writeUInt32BE(option, 8);
  r.writeUInt32BE(type >>> 0, 12);
  r.writeUInt32BE(data.length, 16);
  return Buffer.concat([r, data]);
}

function infoExport(size: bigint, flags: number, len = 12): Buffer {
  const d = Buffer.alloc(len);
  d.writeUInt16BE(0, 0);
  if (len >= 12) { d.writeBigUInt64BE(size, 2); d.writeUInt16BE(flags, 10); }
  return d;
}

function infoBlockSize(min: number, pref: number, max: number): Buffer {
  const d = Buffer.alloc(14);
  d.writeUInt16BE(3, 0);
  d.writeUInt32BE(min, 2);
  d.writeUInt32BE(pref, 6);
  d.writeUInt32BE(max, 10);
  return d;
}

/** A server that refuses structured replies, then answers NBD_OPT_GO with `parts`. */
const go = (...parts: Uint8Array[]): Scripted => new Scripted(Buffer.concat([greeting(), reply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_UNSUP), ...parts]));
const W = 'the server';

test('handshake: NBD_OPT_GO with NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE, unknown info ignored', async () => {
  const io = go(reply(NBD_OPT_GO, NBD_REP_INFO, infoBlockSize(512, 4096, 1 << 25)),
    reply(NBD_OPT_GO, NBD_REP_INFO, Buffer.from([0, 2, 0x41])), // NBD_INFO_DESCRIPTION
    reply(NBD_OPT_GO, NBD_REP_INFO, infoExport(1n << 40n, NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY)),
    reply(NBD_OPT_GO, NBD_REP_ACK));
  const info = await negotiate(io, 'disk', W);
  assert.deepEqual(info, { size: 2 ** 40, flags: NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY, minBlock: 512, preferredBlock: 4096, maxPayload: 1 << 25, structured: false });
  // Client flags, NBD_OPT_STRUCTURED_REPLY, then IHAVEOPT GO: name length, name, one info request (BLOCK_SIZE).
  assert.deepEqual(io.written[0], Buffer.from([0, 0, 0, 1]));
  assert.equal(io.written[1]!.readUInt32BE(8), NBD_OPT_STRUCTURED_REPLY);
  assert.equal(io.written[1]!.length, 16);
  const o = io.written[2]!;
  assert.equal(o.readBigUInt64BE(0), IHAVEOPT);
  assert.equal(o.readUInt32BE(8), NBD_OPT_GO);
  assert.equal(o.readUInt32BE(12), 4 + 4 + 4);
  assert.equal(o.readUInt32BE(16), 4);
  assert.equal(o.subarray(20, 24).toString(), 'disk');
  assert.deepEqual([o.readUInt16BE(24), o.readUInt16BE(26)], [1, 3]);
});

test('handshake: a server without NBD_OPT_GO gets NBD_OPT_EXPORT_NAME (with and without NO_ZEROES)', async () => {
  for (const noZeroes of [false, true]) {
    const tail = Buffer.alloc(noZeroes ? 10 : 134);
    tail.writeBigUInt64BE(4096n, 0);
    tail.writeUInt16BE(NBD_FLAG_HAS_FLAGS, 8);
    const io = new Scripted(Buffer.concat([greeting(NBD_FLAG_FIXED_NEWSTYLE | (noZeroes ? NBD_FLAG_NO_ZEROES : 0)),
      reply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK), reply(NBD_OPT_GO, NBD_REP_ERR_UNSUP), tail]));
    const info = await negotiate(io, '', W);
    assert.equal(info.size, 4096);
    assert.equal(info.structured, true);
    assert.equal(io.written[0]!.readUInt32BE(0), noZeroes ? 3 : 1);
  }
});

test('handshake: no such export names the exports (NBD_OPT_LIST), TLS required says what to give', async () => {
  const server = (n: string) => { const d = Buffer.alloc(4 + n.length); d.writeUInt32BE(n.length); d.write(n, 4); return d; };
  await assert.rejects(negotiate(go(reply(NBD_OPT_GO, NBD_REP_ERR_UNKNOWN), reply(NBD_OPT_LIST, NBD_REP_SERVER, server('a')),
    reply(NBD_OPT_LIST, NBD_REP_SERVER, server('b')), reply(NBD_OPT_LIST, NBD_REP_ACK)), 'x', W),
  { message: "the server has no export 'x' (it has: a, b)" });
  await assert.rejects(negotiate(go(reply(NBD_OPT_GO, NBD_REP_ERR_UNKNOWN), reply(NBD_OPT_LIST, NBD_REP_ERR_POLICY)), 'x', W),
    { message: "the server has no export 'x'" });
  await assert.rejects(negotiate(go(reply(NBD_OPT_GO, NBD_REP_ERR_TLS_REQD)), '', W), /requires TLS for the default export: give --tls-ca/);
  await assert.rejects(negotiate(go(reply(NBD_OPT_GO, NBD_REP_ERR_POLICY, Buffer.from('go away\n'))), 'x', W),
    { message: "the server refused export 'x': refused by policy: go away" });
});

const bad: [string, () => Scripted, RegExp][] = [
  ['not NBD', () => new Scripted(Buffer.alloc(18, 0x41)), /not an NBD server/],
  ['oldstyle', () => new Scripted(greeting(0, CLISERV_MAGIC)), /oldstyle/],
  ['not fixed newstyle', () => new Scripted(greeting(0)), /does not offer fixed newstyle/],
  ['short greeting', () => new Scripted(greeting().subarray(0, 10)), /closed the connection/],
  ['bad reply magic', () => go(reply(NBD_OPT_GO, NBD_REP_ACK, Buffer.alloc(0), 0x1234n)), /bad option reply magic/],
  ['reply to another option', () => go(reply(NBD_OPT_LIST, NBD_REP_ACK)), /replied to option 3, but option 7 was sent/],
  ['huge reply', () => go(reply(NBD_OPT_GO, NBD_REP_INFO, Buffer.alloc(0)).fill(0xff, 16, 20)), /option reply of 4294967295 bytes/],
  ['short reply data', () => go(reply(NBD_OPT_GO, NBD_REP_INFO, infoExport(1n, 1)).subarray(0, 25)), /closed the connection/],
  ['INFO_EXPORT of 11 bytes', () => go(reply(NBD_OPT_GO, NBD_REP_INFO, infoExport(1n, 1, 11))), /NBD_INFO_EXPORT of 11 bytes/],
  ['INFO of 1 byte', () => go(reply(NBD_OPT_GO, NBD_REP_INFO, Buffer.from([0]))), /NBD_REP_INFO of 1 bytes/],
  ['size past 2^53', () => go(reply(NBD_OPT_GO, NBD_REP_INFO, infoExport(1n << 60n, 1))), /too big/],
  ['min block 3', () => go(reply(NBD_OPT_GO, NBD_REP_INFO, infoBlockSize(3, 4096, 1 << 20))), /minimum block size of 3/],
  ['preferred 256', () => go(reply(NBD_OPT_GO, NBD_REP_INFO, infoBlockSize(1, 256, 1 << 20))), /preferred block size of 256/],
  ['max 1000 for min 512', () => go(reply(NBD_OPT_GO, NBD_REP_INFO, infoBlockSize(512, 4096, 1000))), /maximum payload of 1000/],
  ['ACK without INFO_EXPORT', () => go(reply(NBD_OPT_GO, NBD_REP_ACK)), /without NBD_INFO_EXPORT/],
  ['ACK with data', () => go(reply(NBD_OPT_GO, NBD_REP_INFO, infoExport(1n, 1)), reply(NBD_OPT_GO, NBD_REP_ACK, Buffer.alloc(2))), /ACK with 2 bytes/],
  ['no HAS_FLAGS', () => go(reply(NBD_OPT_GO, NBD_REP_INFO, infoExport(1n, 0)), reply(NBD_OPT_GO, NBD_REP_ACK)), /without NBD_FLAG_HAS_FLAGS/],
  ['unknown reply type', () => go(reply(NBD_OPT_GO, 77)), /reply type 77 to NBD_OPT_GO/],
  ['a bad reply to NBD_OPT_STRUCTURED_REPLY', () => new Scripted(Buffer.concat([greeting(), reply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, Buffer.alloc(1))])),
    /reply type 1 of 1 bytes to NBD_OPT_STRUCTURED_REPLY/],
];

for (const [what, io, message] of bad) {
  test(`handshake: ${what} is refused`, async () => {
    await assert.rejects(negotiate(io(), 'x', W), (e: Error) => e instanceof NbdError && message.test(e.message) && !e.message.includes('\n'));
  });
}
