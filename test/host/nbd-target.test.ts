// The nbd target against real servers (nbdkit memory, qemu-nbd on raw and
// qcow2 images) over Unix sockets and loopback TCP, and against a server of
// our own that breaks the protocol. No ublk driver: the target runs on the
// host's io_uring through a hand-driven dispatcher (nbd-servers.ts).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import nbd from '../../src/targets/nbd.js';
import { TargetOptionError } from '../../src/ublk/target.js';
import {
  UBLK_IO_F_NOUNMAP, UBLK_IO_OP_DISCARD, UBLK_IO_OP_FLUSH, UBLK_IO_OP_READ, UBLK_IO_OP_WRITE, UBLK_IO_OP_WRITE_ZEROES,
} from '../../src/ublk/abi/uapi.js';
import {
  IHAVEOPT, NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_HAS_FLAGS, NBD_OPT_GO, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NBD_REP_ERR_UNSUP, NBD_REP_INFO,
  NBD_SIMPLE_REPLY_MAGIC, NBD_STRUCTURED_REPLY_MAGIC, NBDMAGIC, OPT_REPLY_MAGIC,
} from '../../src/nbd/constants.js';
import { DEPTH, freePort, Harness, pattern, readWrite, startServer, withTarget, ZeroCopyHarness, type Server } from './nbd-servers.js';
import { NbdConnection, OP_RECV, OP_SEND, OP_SETSOCKOPT, subConn, subOf, subOp } from '../../src/nbd/connection.js';
import { native } from '../../src/native.js';
import { prepSetsockopt } from '../../src/uring/prep.js';

const SOL_SOCKET = 1, SO_SNDBUF = 7;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbd-target-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const MiB = 1 << 20;
const EIO = 5;

async function zeroed(h: Harness, tag: number, offset: number, len: number): Promise<void> {
  h.tagBuffer(tag).fill(0x55, 0, len);
  assert.equal(await h.serve(tag, UBLK_IO_OP_READ, offset, len), len);
  assert.ok(h.tagBuffer(tag).subarray(0, len).every((b) => b === 0), `${len} bytes at ${offset} read as zeros`);
}

test('nbd on nbdkit memory (Unix socket): caps from the export, every command', async () => {
  const sock = path.join(dir, 'nbdkit.sock');
  const srv = await startServer('nbdkit', ['-f', '-U', sock, 'memory', '16M'], { path: sock });
  try {
    const h = new Harness();
    try {
      const setup = await h.open(nbd, { socket: sock });
      assert.equal(setup.size, 16 * MiB);
      assert.equal(setup.readOnly, false);
      assert.deepEqual(setup.caps, { flush: true, fua: true, discard: true, writeZeroes: true });
      await readWrite(h, 16 * MiB);
      // TRIM and WRITE_ZEROES (with and without NOUNMAP): nbdkit memory reads zeros after each.
      assert.equal(await h.serve(0, UBLK_IO_OP_DISCARD, 0, 4096), 0);
      await zeroed(h, 1, 0, 4096);
      assert.equal(await h.serve(0, UBLK_IO_OP_WRITE_ZEROES, MiB + 512, 64 << 10), 0);
      await zeroed(h, 1, MiB + 512, 64 << 10);
      assert.equal(await h.serve(0, UBLK_IO_OP_WRITE_ZEROES, 3 * MiB, 4096, UBLK_IO_F_NOUNMAP), 0);
      await zeroed(h, 1, 3 * MiB, 4096);
      // The rest of the 1 MiB written there is intact.
      assert.equal(await h.serve(2, UBLK_IO_OP_READ, 3 * MiB + 4096, 4096), 4096);
      assert.deepEqual(h.tagBuffer(2).subarray(0, 4096), pattern(MiB, 4).subarray(4096, 8192));
    } finally {
      await h.close();
    }
  } finally {
    await srv.stop();
  }
});

test('nbd on qemu-nbd, raw file over TCP: data lands in the image; with --connections 2', async () => {
  const img = path.join(dir, 'raw.img');
  fs.writeFileSync(img, '');
  fs.truncateSync(img, 8 * MiB);
  const port = freePort();
  const srv = await startServer('qemu-nbd', ['-f', 'raw', '-x', 'disk', '-b', '127.0.0.1', '-p', String(port), '-t', '-e', '4', img], { port });
  try {
    await withTarget({ host: '127.0.0.1', port, export: 'disk', connections: 2 }, (h) => readWrite(h, 8 * MiB));
  } finally {
    await srv.stop();
  }
  const bytes = fs.readFileSync(img);
  assert.deepEqual(new Uint8Array(bytes.subarray(MiB + 512, MiB + 512 + (256 << 10))), pattern(256 << 10, 2));
  assert.deepEqual(new Uint8Array(bytes.subarray(3 * MiB, 4 * MiB)), pattern(MiB, 4));
});

test('nbd on qemu-nbd, qcow2 over a Unix socket: qemu-img compare matches what was written', async () => {
  const img = path.join(dir, 'disk.qcow2'), ref = path.join(dir, 'ref.raw');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', img, '8M']);
  const sock = path.join(dir, 'qemu.sock');
  const srv = await startServer('qemu-nbd', ['-f', 'qcow2', '-k', sock, '-t', img], { path: sock });
  try {
    await withTarget({ socket: sock }, async (h) => {
      await readWrite(h, 8 * MiB);
      await zeroed(h, 0, 5 * MiB, MiB); // never written: qemu-nbd answers with a hole chunk
    });
  } finally {
    await srv.stop();
  }
  const raw = Buffer.alloc(8 * MiB);
  raw.set(pattern(4096, 1), 0);
  raw.set(pattern(256 << 10, 2), MiB + 512);
  raw.set(pattern(4096, 3), 8 * MiB - 4096);
  raw.set(pattern(MiB, 4), 3 * MiB);
  fs.writeFileSync(ref, raw);
  execFileSync('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'raw', img, ref]); // throws on a difference
});

test('nbd: a read-only export gives a read-only device, a missing export is one clear line', async () => {
  const img = path.join(dir, 'ro.img');
  fs.writeFileSync(img, Buffer.alloc(MiB, 7));
  const sock = path.join(dir, 'ro.sock');
  const srv = await startServer('qemu-nbd', ['-f', 'raw', '-r', '-x', 'disk', '-k', sock, '-t', img], { path: sock });
  try {
    const h = new Harness();
    try {
      const setup = await h.open(nbd, { socket: sock, export: 'disk' });
      assert.equal(setup.readOnly, true);
      assert.equal(await h.serve(0, UBLK_IO_OP_READ, 4096, 4096), 4096);
      assert.ok(h.tagBuffer(0).subarray(0, 4096).every((b) => b === 7));
    } finally {
      await h.close();
    }
    await assert.rejects(async () => nbd.setup({ socket: sock, export: 'nope', port: 10809, connections: 1, timeout: 5 }),
      (e: Error) => e instanceof TargetOptionError && e.message === `NBD server at ${sock} has no export 'nope' (it has: disk)`);
  } finally {
    await srv.stop();
  }
});

test('nbd: an export\'s maximum payload becomes the device\'s largest request (the kernel splits bigger IO)', async () => {
  const sock = path.join(dir, 'max.sock');
  const srv = await startServer('nbdkit', ['-f', '-U', sock, '--filter=blocksize-policy', 'memory', '4M', 'blocksize-maximum=64K'], { path: sock });
  try {
    const setup = await nbd.setup({ socket: sock, port: 10809, export: '', connections: 1, timeout: 5 });
    assert.equal(setup.maxIoBytes, 64 << 10);
  } finally {
    await srv.stop();
  }
});

test('nbd: options are checked (one line each)', async () => {
  const o = { port: 10809, export: '', connections: 1, timeout: 1 };
  await assert.rejects(async () => nbd.setup({ ...o }), /nbd needs --host HOST or --socket PATH/);
  await assert.rejects(async () => nbd.setup({ ...o, host: 'h', socket: '/s' }), /--host and --socket exclude each other/);
  await assert.rejects(async () => nbd.setup({ ...o, socket: '/s', port: 99 }), /--port only applies with --host/);
  await assert.rejects(async () => nbd.setup({ ...o, socket: path.join(dir, 'nobody.sock') }), /cannot connect to NBD server at .*nobody\.sock: ENOENT/);
});

// ---- a server of our own that breaks the protocol ----

/** NBD_CMD_DISCs the rogue servers got (setup's connection says goodbye). */
let disconnects = 0;

/** Does the server side of the handshake for a 1 MiB export, then hands each request header (28 bytes) but NBD_CMD_DISC to `onRequest`. */
function rogueServer(sock: string, onRequest: (s: net.Socket, hdr: Buffer) => void, structured = false): Promise<net.Server> {
  const server = net.createServer((s) => {
    let buf = Buffer.alloc(0), stage = 0;
    const hello = Buffer.alloc(18);
    hello.writeBigUInt64BE(NBDMAGIC, 0);
    hello.writeBigUInt64BE(IHAVEOPT, 8);
    hello.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE, 16);
    s.write(hello);
    s.on('data', (b: Buffer) => {
      buf = Buffer.concat([buf, b]);
      for (;;) {
        if (stage === 0 && buf.length >= 4) { buf = buf.subarray(4); stage = 1; continue; }
        if (stage === 1 && buf.length >= 16 && buf.length >= 16 + buf.readUInt32BE(12)) {
          const opt = buf.readUInt32BE(8), len = buf.readUInt32BE(12);
          buf = buf.subarray(16 + len);
          const rep = (type: number, data: Buffer) => {
            const r = Buffer.alloc(20);
            r.writeBigUInt64BE(OPT_REPLY_MAGIC, 0);
            r.writeUInt32BE(opt, 8);
            r.writeUInt32BE(type >>> 0, 12);
            r.writeUInt32BE(data.length, 16);
            s.write(Buffer.concat([r, data]));
          };
          if (opt === NBD_OPT_STRUCTURED_REPLY) {
            rep(structured ? NBD_REP_ACK : NBD_REP_ERR_UNSUP, Buffer.alloc(0));
            continue;
          }
          assert.equal(opt, NBD_OPT_GO);
          const info = Buffer.alloc(12);
          info.writeUInt16BE(0, 0);
          info.writeBigUInt64BE(BigInt(MiB), 2);
          info.writeUInt16BE(NBD_FLAG_HAS_FLAGS, 10);
          rep(NBD_REP_INFO, info);
          rep(NBD_REP_ACK, Buffer.alloc(0));
          stage = 2;
          continue;
        }
        if (stage === 2 && buf.length >= 28) {
          const hdr = buf.subarray(0, 28);
          const type = hdr.readUInt16BE(6), len = hdr.readUInt32BE(24);
          if (type === 1 && buf.length < 28 + len) break;
          buf = buf.subarray(28 + (type === 1 ? len : 0));
          if (type === 2) { // NBD_CMD_DISC: no reply, the client is going
            disconnects++;
            s.end();
            break;
          }
          onRequest(s, Buffer.from(hdr));
          continue;
        }
        break;
      }
    });
    s.on('error', () => {});
  });
  return new Promise((resolve) => server.listen(sock, () => resolve(server)));
}

const simpleReply = (hdr: Buffer, error = 0, magic = NBD_SIMPLE_REPLY_MAGIC): Buffer => {
  const r = Buffer.alloc(16);
  r.writeUInt32BE(magic, 0);
  r.writeUInt32BE(error, 4);
  hdr.copy(r, 8, 8, 16);
  return r;
};

const rogues: [string, (s: net.Socket, hdr: Buffer) => void, number?][] = [
  ['a bad reply magic', (s, hdr) => s.write(simpleReply(hdr, 0, 0x12345678))],
  ['a wrong handle', (s, hdr) => { const r = simpleReply(hdr); r[15] ^= 1; s.write(Buffer.concat([r, Buffer.alloc(4096, 0xaa)])); }],
  ['a short reply, then the connection closed', (s, hdr) => s.end(simpleReply(hdr).subarray(0, 10))],
  ['short READ data, then the connection closed', (s, hdr) => s.end(Buffer.concat([simpleReply(hdr), Buffer.alloc(100, 0xaa)]))],
  // The header first, then part of the payload (received in place, MSG_WAITALL: the recv returns short), then the end.
  ['short READ data of a 64 KiB READ, in pieces, then the connection closed', (s, hdr) => {
    s.write(simpleReply(hdr));
    setTimeout(() => s.write(Buffer.alloc(20000, 0xaa)), 30);
    setTimeout(() => s.end(), 60);
  }, 64 << 10],
  ['a structured reply, not negotiated', (s, hdr) => s.write(simpleReply(hdr, 0, 0x668e33ef))],
];

for (const [what, misbehave, len = 4096] of rogues) {
  test(`nbd: a server that sends ${what} loses the connection; the request, sent 4 times, fails with EIO, its buffer untouched`, async () => {
    const sock = path.join(dir, `rogue-${rogues.findIndex((r) => r[0] === what)}.sock`);
    let requests = 0;
    const server = await rogueServer(sock, (s, hdr) => { requests++; misbehave(s, hdr); });
    const errors: unknown[] = [];
    const discs = disconnects;
    const origError = console.error;
    console.error = (...a: unknown[]) => void errors.push(a);
    try {
      await withTarget({ socket: sock }, async (h) => {
        h.tagBuffer(0).fill(0x11, 0, len);
        assert.equal(await h.serve(0, UBLK_IO_OP_READ, 0, len), -EIO);
        if (!what.startsWith('short READ')) assert.ok(h.tagBuffer(0).subarray(0, len).every((b) => b === 0x11), 'buffer untouched');
      });
      // Sent on a new connection each time the server broke one, then given up.
      assert.equal(requests, 4, JSON.stringify(errors));
      assert.equal(disconnects - discs, 1, 'setup\'s connection ended with NBD_CMD_DISC');
      assert.match(String(errors[0]), /connection to NBD server at .* lost \(.+\); 1 requests to send again/);
    } finally {
      console.error = origError;
      server.close();
    }
  });
}

test('nbd: several connections (--connections, --queues) are refused where the export does not allow them (no NBD_FLAG_CAN_MULTI_CONN)', async () => {
  const sock = path.join(dir, 'single.sock');
  const server = await rogueServer(sock, () => {});
  try {
    const o = { socket: sock, port: 10809, connections: 1, timeout: 5 };
    const refusal = (why: string) => ({ message: `${why}: NBD server at ${sock} does not allow several connections to the export (no NBD_FLAG_CAN_MULTI_CONN); use one queue and one connection` });
    await assert.rejects(async () => nbd.setup({ ...o, connections: 2 }), refusal('--connections 2'));
    await assert.rejects(async () => nbd.setup(o, { metadataSize: 0, threads: 4 }), refusal('4 serving threads (--queues/--threads) × --connections 1'));
    await nbd.setup(o, { metadataSize: 0, threads: 1 }); // one connection: fine
  } finally {
    server.close();
  }
});

/** A structured reply chunk to request `hdr`. */
function chunk(hdr: Buffer, type: number, payload: Buffer, done: boolean): Buffer {
  const c = Buffer.alloc(20);
  c.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  c.writeUInt16BE(done ? 1 : 0, 4);
  c.writeUInt16BE(type, 6);
  hdr.copy(c, 8, 8, 16);
  c.writeUInt32BE(payload.length, 16);
  return Buffer.concat([c, payload]);
}
const dataChunk = (hdr: Buffer, at: number, data: Buffer, done = false) => {
  const p = Buffer.alloc(8 + data.length);
  p.writeBigUInt64BE(BigInt(Number(hdr.readBigUInt64BE(16)) + at), 0);
  data.copy(p, 8);
  return chunk(hdr, 1, p, done);
};
const holeChunk = (hdr: Buffer, at: number, size: number, done = false) => {
  const p = Buffer.alloc(12);
  p.writeBigUInt64BE(BigInt(Number(hdr.readBigUInt64BE(16)) + at), 0);
  p.writeUInt32BE(size, 8);
  return chunk(hdr, 2, p, done);
};

test('nbd: structured READ replies: chunks in any order and holes assemble the data; an error chunk fails the request', async () => {
  const sock = path.join(dir, 'structured.sock');
  const server = await rogueServer(sock, (s, hdr) => {
    const offset = Number(hdr.readBigUInt64BE(16));
    if (hdr.readUInt16BE(6) !== 0) return void s.write(chunk(hdr, 0, Buffer.alloc(0), true)); // NONE, DONE
    if (offset === 0) {
      s.write(Buffer.concat([dataChunk(hdr, 3072, Buffer.alloc(1024, 3)), holeChunk(hdr, 1024, 2048), dataChunk(hdr, 0, Buffer.alloc(1024, 1), true)]));
    } else {
      const err = Buffer.alloc(6 + 4);
      err.writeUInt32BE(28, 0);
      err.writeUInt16BE(4, 4);
      err.write('full', 6);
      s.write(Buffer.concat([dataChunk(hdr, 0, Buffer.alloc(512, 9)), chunk(hdr, 0x8001, err, true)]));
    }
  }, true);
  try {
    await withTarget({ socket: sock }, async (h) => {
      h.tagBuffer(0).fill(0xee, 0, 4096);
      assert.equal(await h.serve(0, UBLK_IO_OP_READ, 0, 4096), 4096);
      const want = Buffer.concat([Buffer.alloc(1024, 1), Buffer.alloc(2048, 0), Buffer.alloc(1024, 3)]);
      assert.deepEqual(Buffer.from(h.tagBuffer(0).subarray(0, 4096)), want);
      assert.equal(await h.serve(1, UBLK_IO_OP_READ, 8192, 4096), -28);
      assert.equal(await h.serve(2, UBLK_IO_OP_WRITE, 0, 4096), 4096);
    });
  } finally {
    server.close();
  }
});

const badChunks: [string, (hdr: Buffer) => Buffer][] = [
  ['overlapping chunks', (hdr) => Buffer.concat([dataChunk(hdr, 0, Buffer.alloc(2048)), holeChunk(hdr, 1024, 3072, true)])],
  ['a chunk outside the request', (hdr) => dataChunk(hdr, 2048, Buffer.alloc(4096), true)],
  ['DONE before the data covers the request', (hdr) => dataChunk(hdr, 0, Buffer.alloc(2048), true)],
  ['a NONE chunk with data', (hdr) => chunk(hdr, 0, Buffer.alloc(4), true)],
  ['a hole chunk of 13 bytes', (hdr) => chunk(hdr, 2, Buffer.alloc(13), true)],
  ['a chunk of an unknown type', (hdr) => chunk(hdr, 7, Buffer.alloc(0), true)],
  ['a simple reply with data to a READ', (hdr) => Buffer.concat([simpleReply(hdr), Buffer.alloc(4096)])],
];

for (const [what, reply] of badChunks) {
  test(`nbd: structured replies: ${what} loses the connection, the request fails with EIO`, async () => {
    const sock = path.join(dir, `bad-chunk-${badChunks.findIndex((b) => b[0] === what)}.sock`);
    const server = await rogueServer(sock, (s, hdr) => s.write(reply(hdr)), true);
    try {
      await capturingErrors(async (lines) => {
        await withTarget({ socket: sock }, async (h) => assert.equal(await h.serve(0, UBLK_IO_OP_READ, 0, 4096), -EIO));
        assert.match(lines[0] ?? '', /lost \(the server /);
      });
    } finally {
      server.close();
    }
  });
}

test('nbd: an error reply fails that request only, with the server\'s errno', async () => {
  const sock = path.join(dir, 'errno.sock');
  const server = await rogueServer(sock, (s, hdr) => {
    const type = hdr.readUInt16BE(6);
    s.write(type === 0 ? simpleReply(hdr, 28) : simpleReply(hdr, 0));
  });
  try {
    await withTarget({ socket: sock }, async (h) => {
      assert.equal(await h.serve(0, UBLK_IO_OP_READ, 0, 4096), -28);
      assert.equal(await h.serve(1, UBLK_IO_OP_WRITE, 0, 4096), 4096);
    });
  } finally {
    server.close();
  }
});

// ---- resilience ----

/** console.error's lines while `fn` runs. */
async function capturingErrors<T>(fn: (lines: string[]) => Promise<T>): Promise<T> {
  const lines: string[] = [];
  const orig = console.error;
  console.error = (...a: unknown[]) => void lines.push(a.map(String).join(' '));
  try {
    return await fn(lines);
  } finally {
    console.error = orig;
  }
}

for (const copy of ['kernel', 'zero'] as const) test(`nbd (${copy} copy): the server killed and restarted mid-stream: requests wait, are sent again, complete once, data intact`, async () => {
  const img = path.join(dir, `restart-${copy}.img`);
  fs.writeFileSync(img, '');
  fs.truncateSync(img, 16 * MiB);
  const sock = path.join(dir, `restart-${copy}.sock`);
  const qemuNbd = ['-f', 'raw', '-k', sock, '-t', img];
  let srv: Server = await startServer('qemu-nbd', qemuNbd, { path: sock });
  try {
    await capturingErrors(async (lines) => {
      await withTarget({ socket: sock, timeout: 20 }, async (h) => {
        for (let round = 0; round < 3; round++) {
          const tags = [0, 1, 2, 3, 4, 5, 6, 7];
          for (const t of tags) {
            h.tagBuffer(t).set(pattern(MiB, round * 8 + t));
            h.start(t, UBLK_IO_OP_WRITE, t * 2 * MiB, MiB);
          }
          // Kill it once the first is done and the rest are on the wire; it comes back after 300 ms.
          assert.deepEqual(await h.wait([0]), [MiB]);
          srv.proc.kill('SIGKILL');
          await srv.stop();
          const restarted = new Promise<Server>((resolve, reject) => setTimeout(() => startServer('qemu-nbd', qemuNbd, { path: sock }).then(resolve, reject), 300));
          assert.deepEqual(await h.wait(tags, 20000), tags.map(() => MiB));
          srv = await restarted;
          for (const t of tags) h.start(t, UBLK_IO_OP_READ, t * 2 * MiB, MiB);
          assert.deepEqual(await h.wait(tags), tags.map(() => MiB));
          for (const t of tags) assert.deepEqual(h.tagBuffer(t).subarray(0, MiB), pattern(MiB, round * 8 + t), `round ${round} tag ${t}`);
        }
      }, copy);
      assert.ok(lines.some((l) => /lost \(.+\); [1-9]\d* requests to send again/.test(l)), lines.join('\n'));
      assert.ok(lines.some((l) => /connected to NBD server at .* again/.test(l)), lines.join('\n'));
      assert.ok(!lines.some((l) => /completed twice/.test(l)), lines.join('\n'));
    });
  } finally {
    await srv.stop();
  }
});

test('nbd: a server gone for good fails the waiting requests with EIO after --timeout, and later ones at once', async () => {
  const sock = path.join(dir, 'gone.sock');
  const srv = await startServer('nbdkit', ['-f', '-U', sock, 'memory', '4M'], { path: sock });
  await capturingErrors(async (lines) => {
    await withTarget({ socket: sock, timeout: 1 }, async (h) => {
      assert.equal(await h.serve(0, UBLK_IO_OP_WRITE, 0, 4096), 4096);
      srv.proc.kill('SIGKILL'); // nbdkit waits for its clients on SIGTERM
      await srv.stop();
      const t0 = Date.now();
      assert.equal(await h.serve(1, UBLK_IO_OP_READ, 0, 4096), -EIO);
      const waited = Date.now() - t0;
      assert.ok(waited >= 900 && waited < 5000, `failed after ${waited} ms (--timeout 1)`);
      const t1 = Date.now();
      assert.equal(await h.serve(2, UBLK_IO_OP_READ, 0, 4096), -EIO);
      assert.ok(Date.now() - t1 < 1000, 'a later request fails after one attempt');
    });
    assert.ok(lines.some((l) => /unreachable .*; 1 requests fail with EIO/.test(l)), lines.join('\n'));
  });
});

test('nbd: a server that answers every request but one (its reply lost) does not hang that one: the connection is ended after --timeout, the request sent again, and after 4 sends it fails with EIO; the others are served', async () => {
  const sock = path.join(dir, 'lost-reply.sock');
  // Answers every READ with zeros except those at offset 64 KiB, which it ignores.
  const server = await rogueServer(sock, (s, hdr) => {
    if (Number(hdr.readBigUInt64BE(16)) === 64 << 10) return;
    s.write(Buffer.concat([simpleReply(hdr), Buffer.alloc(hdr.readUInt32BE(24))]));
  });
  try {
    await capturingErrors(async (lines) => {
      await withTarget({ socket: sock, timeout: 1 }, async (h) => {
        const t0 = Date.now();
        h.start(0, UBLK_IO_OP_READ, 64 << 10, 4096);
        for (let i = 0; i < 10; i++) assert.equal(await h.serve(1, UBLK_IO_OP_READ, 0, 4096), 4096, 'the server answers the others');
        assert.deepEqual(await h.wait([0], 20000), [-EIO]);
        const waited = Date.now() - t0;
        assert.ok(waited >= 3500 && waited < 15000, `failed after ${waited} ms (--timeout 1, 4 sends)`);
      });
      assert.equal(lines.filter((l) => /no reply for 1 s, with 1 requests waiting/.test(l)).length, 4, lines.join('\n'));
    });
  } finally {
    server.close();
  }
});

test('nbd: a server that loses acknowledged, unflushed writes when it restarts (nbdkit memory, killed) fails the next FLUSH with EIO, once; writes a FLUSH covered are not held against it', async () => {
  const sock = path.join(dir, 'lost.sock');
  const args = ['-f', '-U', sock, 'memory', '4M'];
  let srv = await startServer('nbdkit', args, { path: sock });
  const restart = async (): Promise<void> => {
    srv.proc.kill('SIGKILL');
    await srv.stop();
    fs.rmSync(sock, { force: true });
    srv = await startServer('nbdkit', args, { path: sock });
  };
  try {
    await capturingErrors(async (lines) => {
      await withTarget({ socket: sock, timeout: 20 }, async (h) => {
        h.tagBuffer(0).set(pattern(4096, 9).subarray(0, 4096));
        assert.equal(await h.serve(0, UBLK_IO_OP_WRITE, 0, 4096), 4096);
        assert.equal(await h.serve(1, UBLK_IO_OP_FLUSH, 0, 0), 0);
        await restart(); // the flushed write is gone too (a memory export): nothing a client can know of
        assert.equal(await h.serve(0, UBLK_IO_OP_WRITE, 0, 4096), 4096, 'a new connection');
        assert.equal(await h.serve(1, UBLK_IO_OP_FLUSH, 0, 0), 0, 'nothing unflushed was lost with the last connection');
        assert.equal(await h.serve(0, UBLK_IO_OP_WRITE, 4096, 4096), 4096);
        await restart(); // acknowledged, never flushed: lost
        assert.equal(await h.serve(1, UBLK_IO_OP_FLUSH, 0, 0), -EIO, 'the FLUSH after the loss');
        assert.equal(await h.serve(1, UBLK_IO_OP_FLUSH, 0, 0), 0, 'once');
      });
      assert.ok(lines.some((l) => /may be lost with it: the next FLUSH fails with EIO/.test(l)), lines.join('\n'));
      assert.equal(lines.filter((l) => /a FLUSH fails with EIO/.test(l)).length, 1, lines.join('\n'));
    });
  } finally {
    await srv.stop();
  }
});

test('nbd: a server restarted on purpose (SIGTERM) answers the WRITE it was doing with NBD_ESHUTDOWN: the connection ends and the WRITE goes to the new server, it does not fail', async () => {
  const sock = path.join(dir, 'eshutdown.sock');
  const delayed = ['-f', '-U', sock, '--filter=delay', 'memory', '4M', 'delay-write=3'];
  const old = await startServer('nbdkit', delayed, { path: sock });
  let srv = old;
  try {
    await capturingErrors(async (lines) => {
      await withTarget({ socket: sock, timeout: 20 }, async (h) => {
        h.tagBuffer(0).set(pattern(4096, 5).subarray(0, 4096));
        h.start(0, UBLK_IO_OP_WRITE, 0, 4096);
        const written = h.wait([0], 15000);
        await new Promise((r) => setTimeout(r, 500));
        // nbdkit ends the delayed WRITE undone, with ESHUTDOWN, and waits for its clients to go.
        old.proc.kill('SIGTERM');
        fs.rmSync(sock, { force: true });
        srv = await startServer('nbdkit', ['-f', '-U', sock, 'memory', '4M'], { path: sock });
        assert.deepEqual(await written, [4096]);
        h.tagBuffer(1).fill(0xee);
        assert.equal(await h.serve(1, UBLK_IO_OP_READ, 0, 4096), 4096);
        assert.deepEqual(h.tagBuffer(1).subarray(0, 4096), pattern(4096, 5).subarray(0, 4096), 'the new server has the data');
      });
      assert.ok(lines.some((l) => /NBD_ESHUTDOWN.*1 requests to send again/.test(l)), lines.join('\n'));
    });
  } finally {
    old.proc.kill('SIGKILL');
    await old.stop();
    await srv.stop();
  }
});

test('nbd: a server that stops answering with the connection still open (SIGSTOP) does not hang requests: the connection is ended once a request has waited --timeout for its reply, and they fail with EIO', async () => {
  const sock = path.join(dir, 'silent.sock');
  const srv = await startServer('nbdkit', ['-f', '-U', sock, 'memory', '4M'], { path: sock });
  try {
    await capturingErrors(async (lines) => {
      await withTarget({ socket: sock, timeout: 1 }, async (h) => {
        assert.equal(await h.serve(0, UBLK_IO_OP_WRITE, 0, 4096), 4096);
        srv.proc.kill('SIGSTOP');
        const t0 = Date.now();
        // Silence for --timeout ends the connection; a new one gets no handshake within --timeout either.
        assert.equal(await h.serve(1, UBLK_IO_OP_READ, 0, 4096), -EIO);
        const waited = Date.now() - t0;
        // About 2.4 s here; the upper bound is loose for a loaded CI machine (the point is: not forever).
        assert.ok(waited >= 900 && waited < 15_000, `failed after ${waited} ms (--timeout 1)`);
        srv.proc.kill('SIGCONT');
        assert.equal(await h.serve(2, UBLK_IO_OP_READ, 0, 4096), 4096, 'the server answers again: a new connection');
      });
      assert.ok(lines.some((l) => /no reply for 1 s/.test(l)), lines.join('\n'));
    });
  } finally {
    srv.proc.kill('SIGCONT');
    await srv.stop();
  }
});

test('nbd: replies that arrive together are taken by one recv and copied out; a large READ payload is received in place', async () => {
  const sock = path.join(dir, 'together.sock');
  const lens = [4096, 4096, 4096, 4096, 4096, 4096, 4096, 256 << 10];
  const held: Buffer[] = [];
  // Answers only once all eight READs are in, in one write: what a server under load sends.
  const server = await rogueServer(sock, (s, hdr) => {
    held.push(hdr);
    if (held.length < lens.length) return;
    s.write(Buffer.concat(held.flatMap((h) => {
      const offset = Number(h.readBigUInt64BE(16)), len = h.readUInt32BE(24);
      return [simpleReply(h), Buffer.from(pattern(len, offset / 4096))];
    })));
  });
  try {
    await withTarget({ socket: sock }, async (h) => {
      let recvs = 0;
      h.watchOwnCqes((sub) => {
        if (subOp(sub) === OP_RECV) recvs++;
      });
      lens.forEach((len, tag) => h.start(tag, UBLK_IO_OP_READ, tag * MiB, len));
      assert.deepEqual(await h.wait(lens.map((_, t) => t)), lens);
      lens.forEach((len, tag) => assert.deepEqual(h.tagBuffer(tag).subarray(0, len), pattern(len, tag * MiB / 4096), `tag ${tag}'s data`));
      // Received piece by piece (each header, then each payload), that was 16 recvs.
      assert.ok(recvs <= 4, `${recvs} recvs for ${lens.length} replies`);
    });
  } finally {
    server.close();
  }
});

for (const structured of [false, true]) {
  test(`nbd (${structured ? 'structured' : 'simple'} replies): while only large READs are in flight, a reply's header is received alone and all its data straight into the request's buffer`, async () => {
    const sock = path.join(dir, `bulk-${structured}.sock`);
    const len = 256 << 10, n = 4, tags = [0, 1, 2, 3];
    const held: Buffer[] = [];
    const server = await rogueServer(sock, (s, hdr) => {
      held.push(hdr);
      if (held.length < n) return;
      s.write(Buffer.concat(held.flatMap((h) => {
        const offset = Number(h.readBigUInt64BE(16)), data = Buffer.from(pattern(len, offset / 4096));
        if (!structured) return [simpleReply(h), data];
        // Two chunks each: a chunk header also follows data.
        return [dataChunk(h, 0, data.subarray(0, len / 2)), dataChunk(h, len / 2, data.subarray(len / 2), true)];
      })));
    }, structured);
    try {
      await withTarget({ socket: sock }, async (h) => {
        const recvs: number[] = [];
        h.watchOwnCqes((sub, res) => {
          if (subOp(sub) === OP_RECV) recvs.push(res);
        });
        for (const t of tags) h.start(t, UBLK_IO_OP_READ, t * len, len);
        assert.deepEqual(await h.wait(tags), tags.map(() => len));
        for (const t of tags) assert.deepEqual(h.tagBuffer(t).subarray(0, len), pattern(len, t * len / 4096), `tag ${t}'s data`);
        // A recv takes a header (16 bytes, or a chunk's 20 and its offset's 8) or a whole
        // payload. Only the first reply may differ: the recv standing while nothing
        // was in flight takes what comes, up to 64 KiB (the header and the data's
        // start, copied), and the next its rest. Staging 64 KiB of each, that was 2 per piece.
        const head = structured ? 28 : 16, piece = structured ? len / 2 : len;
        const odd = recvs.filter((r) => r > head && r !== piece);
        assert.ok(odd.length <= 2, `recvs ${recvs.join(' ')}`);
        assert.equal(recvs.reduce((a, b) => a + b, 0), n * len + (structured ? 2 * n : n) * head);
      });
    } finally {
      server.close();
    }
  });
}

// Zero copy (--copy zero): the harness registers each tag's pages as a fixed
// buffer and maps the same memory at the tag's user-copy position on a memfd
// standing in for /dev/ublkcN (nbd-servers.ts ZeroCopyHarness).
test('nbd in zero copy on nbdkit memory (Unix socket): large WRITE payloads sent from the fixed buffers, small ones read out with user copy and batched, READ data put in place (received there, or staged and written with user copy), holes zeroed', async () => {
  const sock = path.join(dir, 'zc.sock');
  const srv = await startServer('nbdkit', ['-f', '-U', sock, 'memory', '16M'], { path: sock });
  const h = new ZeroCopyHarness();
  try {
    await h.open(nbd, { socket: sock });
    await readWrite(h, 16 * MiB);
    // Never written, and trimmed: holes (structured replies) read as zeros.
    await zeroed(h, 1, 8 * MiB, 256 << 10);
    assert.equal(await h.serve(0, UBLK_IO_OP_DISCARD, 0, 4096), 0);
    await zeroed(h, 1, 0, 4096);
    assert.equal(await h.serve(0, UBLK_IO_OP_WRITE_ZEROES, MiB + 512, 64 << 10), 0);
    await zeroed(h, 1, MiB + 512, 64 << 10);
    // Small WRITEs are read out of their pages and go with their headers in one SENDMSG per batch:
    // one send for the first (sent at once), one for the seven queued behind it.
    let sends = 0;
    h.watchOwnCqes((sub) => {
      if (subOp(sub) === OP_SEND) sends++;
    });
    const tags = Array.from({ length: DEPTH }, (_, t) => t);
    for (const t of tags) {
      h.tagBuffer(t).set(pattern(4096, 20 + t).subarray(0, 4096));
      h.start(t, UBLK_IO_OP_WRITE, 9 * MiB + t * 4096, 4096);
    }
    assert.deepEqual(await h.wait(tags), tags.map(() => 4096));
    assert.ok(sends <= 3, `${sends} sends for ${DEPTH} 4 KiB WRITEs (a linked send per payload: ${2 * DEPTH})`);
    for (const t of tags) {
      h.tagBuffer(t).fill(0xee);
      h.start(t, UBLK_IO_OP_READ, 9 * MiB + t * 4096, 4096);
    }
    assert.deepEqual(await h.wait(tags), tags.map(() => 4096));
    for (const t of tags) assert.deepEqual(h.tagBuffer(t).subarray(0, 4096), pattern(4096, 20 + t), `tag ${t}'s 4 KiB`);
  } finally {
    await h.close();
    await srv.stop();
  }
});

test('nbd in zero copy: READ data the driver refuses to take, and small WRITE data it refuses to give (user copy fails), fail each of those requests with EIO, and the connection goes on', async () => {
  const sock = path.join(dir, 'zc-refused.sock');
  const srv = await startServer('nbdkit', ['-f', '-U', sock, 'memory', '16M'], { path: sock });
  const refusing = fs.openSync('/dev/null', 'r'); // pwrite: EBADF, as /dev/ublkcN refuses a request that is going away
  const h = new ZeroCopyHarness(refusing);
  try {
    await h.open(nbd, { socket: sock });
    // A large WRITE goes from the fixed buffer (no user copy).
    h.tagBuffer(0).set(pattern(64 << 10, 3).subarray(0, 64 << 10));
    assert.equal(await h.serve(0, UBLK_IO_OP_WRITE, 0, 64 << 10), 64 << 10);
    // Small READ replies arrive together, staged: their data cannot be put in place.
    const tags = Array.from({ length: DEPTH }, (_, t) => t);
    let replies = 0;
    h.watchOwnCqes((sub, res) => {
      if (subOp(sub) === OP_RECV && res > 0) replies++;
    });
    for (const t of tags) h.start(t, UBLK_IO_OP_READ, t * 4096, 4096);
    assert.deepEqual(await h.wait(tags), tags.map(() => -EIO));
    assert.ok(replies >= 1);
    // Small WRITEs whose data cannot be read out of their pages fail without being sent.
    for (const t of tags) h.start(t, UBLK_IO_OP_WRITE, t * 4096, 4096);
    assert.deepEqual(await h.wait(tags), tags.map(() => -EIO));
    assert.equal(await h.serve(1, UBLK_IO_OP_WRITE, MiB, 64 << 10), 64 << 10, 'the connection is still up');
  } finally {
    await h.close();
    fs.closeSync(refusing);
    await srv.stop();
  }
});

test('nbd in zero copy: small WRITEs queued behind a send, more than one batch of them, whose data the driver refuses to give, all fail with EIO (none left waiting)', async () => {
  const sock = path.join(dir, 'zc-stranded.sock');
  const srv = await startServer('nbdkit', ['-f', '-U', sock, 'memory', '64M'], { path: sock });
  const refusing = fs.openSync('/dev/null', 'r');
  const h = new ZeroCopyHarness(refusing, 40);
  try {
    await h.open(nbd, { socket: sock });
    // A large WRITE (from the fixed buffer) is on the wire while 39 WRITEs of 15 KiB queue behind it:
    // about 600 KiB to read out, over two send stages (256 KiB each), every read-out refused.
    h.start(0, UBLK_IO_OP_WRITE, 0, 64 << 10);
    const tags = Array.from({ length: 39 }, (_, i) => i + 1);
    for (const t of tags) h.start(t, UBLK_IO_OP_WRITE, t * MiB, 15 << 10);
    assert.deepEqual(await h.wait([0, ...tags], 5000), [64 << 10, ...tags.map(() => -EIO)]);
  } finally {
    await h.close();
    fs.closeSync(refusing);
    await srv.stop();
  }
});

test('nbd in zero copy: eight 1 MiB WRITEs at once overflow the socket (a WRITE_FIXED falls short, ending its linked chain, which starts again where it stopped); the image holds every byte in place', async () => {
  const img = path.join(dir, 'zc.img'), sock = path.join(dir, 'zc-qemu.sock');
  fs.writeFileSync(img, '');
  fs.truncateSync(img, 16 * MiB);
  const srv = await startServer('qemu-nbd', ['-f', 'raw', '-k', sock, '-t', img], { path: sock });
  const h = new ZeroCopyHarness();
  let sends = 0;
  try {
    await capturingErrors((lines) => eightWrites(h, sock).then((n) => {
      sends = n;
      // A chain that went on wrongly after a short send breaks the stream: the connection drops, and resends hide it.
      assert.deepEqual(lines, [], 'no connection was lost');
    }));
  } finally {
    await h.close();
    await srv.stop();
  }
  const bytes = fs.readFileSync(img);
  for (let t = 0; t < DEPTH; t++) assert.ok(bytes.subarray(2 * t * MiB, (2 * t + 1) * MiB).equals(pattern(MiB, 10 + t)), `the image holds tag ${t}'s MiB`);
  // Eight headers and eight payloads, each sent whole, would be 16 sends (a Unix socket holds about 200 KiB).
  assert.ok(sends > 2 * DEPTH, `${sends} sends: one fell short (else this test tests no resumption)`);
});

/** Eight 1 MiB WRITEs at once, a FLUSH, and the eight READ back; returns how many sends moved the WRITEs' bytes. */
async function eightWrites(h: ZeroCopyHarness, sock: string): Promise<number> {
  let sends = 0, shrunk = 1;
  await h.open(nbd, { socket: sock });
  // The connection made its send buffer 8 MiB, which takes the eight whole;
  // back to 2 x 64 KiB (after its own setsockopt, submitted first), each
  // 1 MiB payload must fall short.
  const conn = (h.target as unknown as { conns: NbdConnection[] }).conns[0]!;
  h.ring.submit();
  const opt = new Int32Array(native.alloc(8));
  opt[0] = 64 << 10;
  prepSetsockopt(h.ring, h.dispatcher.ownSqe(subOf(1 << 20, OP_SETSOCKOPT)), conn.fd, SOL_SOCKET, SO_SNDBUF, native.addressOf(opt), 4);
  h.watchOwnCqes((sub, res) => {
    if (subConn(sub) === 1 << 20) {
      shrunk = res;
      return true;
    }
    if (subOp(sub) === OP_SEND && res > 0) sends++;
  });
  const tags = Array.from({ length: DEPTH }, (_, t) => t);
  for (const t of tags) {
    h.tagBuffer(t).set(pattern(MiB, 10 + t));
    h.start(t, UBLK_IO_OP_WRITE, 2 * t * MiB, MiB);
  }
  assert.deepEqual(await h.wait(tags), tags.map(() => MiB));
  assert.equal(shrunk, 0, 'setsockopt(SO_SNDBUF)');
  const writeSends = sends;
  assert.equal(await h.serve(0, UBLK_IO_OP_FLUSH, 0, 0), 0);
  for (const t of tags) {
    h.tagBuffer(t).fill(0xee);
    h.start(t, UBLK_IO_OP_READ, 2 * t * MiB, MiB);
  }
  assert.deepEqual(await h.wait(tags), tags.map(() => MiB));
  for (const t of tags) assert.deepEqual(h.tagBuffer(t).subarray(0, MiB), pattern(MiB, 10 + t), `tag ${t} reads back`);
  return writeSends;
}
