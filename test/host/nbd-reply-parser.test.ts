// The NBD reply parser on its own, in zero copy (READ data goes to the
// request's pages by pwrite on what stands for /dev/ublkcN, here a memfd): a
// reply's bytes may arrive split anywhere between recvs, the data of one
// recv's replies is written in one batch, and a reply is handed on once, after
// its data is in place, or with EIO where the driver refused the data.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { native } from '../../src/native.js';
import { InFlight } from '../../src/nbd/in-flight.js';
import { ReplyParser, SCRATCH_BYTES } from '../../src/nbd/reply-parser.js';
import { NBD_CMD_READ, NBD_CMD_WRITE, NBD_SIMPLE_REPLY_MAGIC, NBD_STRUCTURED_REPLY_MAGIC } from '../../src/nbd/constants.js';
import { UBLK_IO_OP_READ, UBLK_IO_OP_WRITE } from '../../src/ublk/abi/uapi.js';
import { UblkRequest } from '../../src/ublk/worker/request.js';
import { DESC_WORDS } from '../../src/ublk/worker/queue-memory.js';
import { loadRequest } from './request-desc.js';

const LEN = 4096, EIO = 5;

interface Setup { inFlight: InFlight; parser: ReplyParser; reqs: UblkRequest[]; replies: Array<[number, number]> }

function setup(userCopyFd: number, structured: boolean, ops: number[]): Setup {
  const inFlight = new InFlight(), replies: Array<[number, number]> = [], desc = new Uint32Array(ops.length * DESC_WORDS);
  const reqs = ops.map((op, t) => {
    const r = new UblkRequest(0, t, null, t, 0);
    loadRequest(desc, r, op, t * 65536, LEN);
    return r;
  });
  const parser = new ReplyParser(inFlight, new DataView(new ArrayBuffer(SCRATCH_BYTES)), structured, (req, res) => replies.push([req.tag, res]), userCopyFd);
  return { inFlight, parser, reqs, replies };
}

const fill = (tag: number): Uint8Array => new Uint8Array(LEN).map((_, i) => (i * 13 + tag * 71) & 0xff);

/** The reply stream for `reqs` (READs carry their data, tag-dependent), in order: simple or structured (one OFFSET_DATA chunk, or NONE). */
function stream(s: Setup, structured: boolean): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const req of s.reqs) {
    const read = req.op === UBLK_IO_OP_READ, slot = s.inFlight.add(req, read ? NBD_CMD_READ : NBD_CMD_WRITE, 0);
    const hdr = new DataView(new ArrayBuffer(structured ? 28 : 16));
    hdr.setUint32(0, structured ? NBD_STRUCTURED_REPLY_MAGIC : NBD_SIMPLE_REPLY_MAGIC);
    hdr.setUint32(8, s.inFlight.seq(slot));
    hdr.setUint32(12, slot);
    if (structured) {
      hdr.setUint16(4, 1); // DONE
      hdr.setUint16(6, read ? 1 : 0); // OFFSET_DATA, or NONE
      hdr.setUint32(16, read ? 8 + LEN : 0);
      hdr.setUint32(24, req.offset);
      parts.push(new Uint8Array(hdr.buffer, 0, read ? 28 : 20));
    } else parts.push(new Uint8Array(hdr.buffer));
    if (read) parts.push(fill(req.tag));
  }
  return Buffer.concat(parts);
}

function pages(fd: number, req: UblkRequest): Uint8Array {
  const b = Buffer.alloc(LEN);
  fs.readSync(fd, b, 0, LEN, req.userCopyPos);
  return new Uint8Array(b);
}

for (const structured of [false, true]) {
  test(`zero copy, ${structured ? 'structured' : 'simple'} replies split between two recvs at every byte: data in place, each reply handed on once, after its data`, () => {
    const fd = native.memfdCreate('nbd-parser', 0);
    try {
      const ops = [UBLK_IO_OP_READ, UBLK_IO_OP_WRITE, UBLK_IO_OP_READ];
      const probe = setup(fd, structured, ops), whole = stream(probe, structured);
      for (let cut = 0; cut <= whole.length; cut += cut < 64 || whole.length - cut < 64 ? 1 : 509) {
        const s = setup(fd, structured, ops), bytes = stream(s, structured);
        for (const req of s.reqs) fs.writeSync(fd, Buffer.alloc(LEN, 0xee), 0, LEN, req.userCopyPos);
        // Each reply is handed on only once its data can be read in its pages.
        const seen: Array<[number, number]> = [];
        const p = new ReplyParser(s.inFlight, new DataView(new ArrayBuffer(SCRATCH_BYTES)), structured, (req, res) => {
          if (req.op === UBLK_IO_OP_READ) assert.deepEqual(pages(fd, req), fill(req.tag), `tag ${req.tag}'s data in place when handed on (cut ${cut})`);
          seen.push([req.tag, res]);
        }, fd);
        assert.equal(p.feed(bytes, 0, cut), null);
        assert.equal(p.feed(bytes, cut, bytes.length), null);
        assert.deepEqual(seen.sort((a, b) => a[0] - b[0]), [[0, LEN], [1, LEN], [2, LEN]], `cut at ${cut}`);
        assert.equal(s.inFlight.count, 0);
      }
    } finally {
      native.close(fd);
    }
  });
}

test('zero copy: READ data the driver refuses fails its request with EIO, whether its reply ends in the same recv or a later one; the others are unharmed', () => {
  const refusing = fs.openSync('/dev/null', 'r');
  try {
    const s = setup(refusing, true, [UBLK_IO_OP_WRITE, UBLK_IO_OP_READ, UBLK_IO_OP_READ]);
    const bytes = stream(s, true);
    const cut = bytes.length - 100; // the last READ's data goes on in the next recv
    assert.equal(s.parser.feed(bytes, 0, cut), null);
    assert.deepEqual(s.replies, [[0, LEN], [1, -EIO]], 'the WRITE, and the READ finished in this recv');
    assert.equal(s.parser.feed(bytes, cut, bytes.length), null);
    assert.deepEqual(s.replies, [[0, LEN], [1, -EIO], [2, -EIO]]);
  } finally {
    fs.closeSync(refusing);
  }
});

test('zero copy: a bad reply after good ones in one recv: the good ones are still handed on, the bad one is the complaint', () => {
  const fd = native.memfdCreate('nbd-parser-bad', 0);
  try {
    const s = setup(fd, false, [UBLK_IO_OP_READ, UBLK_IO_OP_READ]);
    const bytes = stream(s, false);
    bytes[16 + LEN] ^= 0xff; // the second reply's magic
    const bad = s.parser.feed(bytes, 0, bytes.length);
    assert.match(bad ?? '', /bad magic/);
    assert.deepEqual(s.replies, [[0, LEN]]);
    assert.deepEqual(pages(fd, s.reqs[0]!), fill(0));
    assert.equal(s.inFlight.count, 1, 'the other is still in flight, for the owner to send again');
  } finally {
    native.close(fd);
  }
});
