// The loop target and the dispatcher's copy-mode steps on the host's real
// io_uring, without a ublk driver: requests are built by hand, and a plain
// file stands in for /dev/ublkcN (user copy reads and writes it at the
// request's position, as the driver would be).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native } from '../../src/native.js';
import { UblkRequest } from '../../src/ublk/worker/request.js';
import { DataPath } from './data-path.js';
import { KIND_UBLK, udKind, udTag, userDataLo } from '../../src/ublk/worker/worker-ring.js';
import { prepNop, setUserData } from '../../src/uring/prep.js';
import { servingMode } from '../../src/ublk/mode.js';
import { C_ERRORS, C_INFLIGHT, C_READ_BYTES, C_READS, C_WRITES } from '../../src/ublk/stats.js';
import { checkTargetOptions, type CopyMode, type TargetData, type TargetModule } from '../../src/ublk/target.js';
import {
  UBLK_IO_F_FUA, UBLK_IO_F_NOUNMAP, UBLK_IO_OP_DISCARD, UBLK_IO_OP_FLUSH, UBLK_IO_OP_READ, UBLK_IO_OP_WRITE,
  UBLK_IO_OP_WRITE_ZEROES, UBLK_IO_F_INTEGRITY, UBLKSRV_IO_INTEGRITY_FLAG, UBLK_INTEGRITY_FLAG_OFF,
} from '../../src/ublk/abi/uapi.js';
import loop from '../../src/targets/loop.js';
import memory from '../../src/targets/memory.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loop-target-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const DEPTH = 4;
const BUF = 256 << 10;
const MiB = 1 << 20;

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 131 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

/** The loop target's setup as UblkDevice.create() runs it: options checked against its rows first. */
const setupLoop = (given: Record<string, unknown>) => loop.setup(checkTargetOptions(loop, given, 'library') as Parameters<typeof loop.setup>[0]);

/** A file to stand in for /dev/ublkcN; with metadata on tmpfs, which takes positions past 2^62. */
function charStandIn(metadataSize: number): { file: string; fd: number } {
  const file = path.join(metadataSize ? '/dev/shm' : dir, `char-${process.pid}-${Math.random().toString(36).slice(2)}`);
  return { file, fd: fs.openSync(file, 'w+') };
}

/** A worker's data path for one queue (data-path.ts), served synchronously, with a file standing in for /dev/ublkcN. */
class Harness extends DataPath {
  readonly charFile: string;
  readonly charFd: number;
  /** CQEs the last serve() reaped, and how many of them were the target's. */
  cqes = 0;
  targetCqes = 0;
  /** Per tag: the result of a commit linked to the target's IO, committed when its NOP's CQE comes. */
  private readonly linkedResults: number[] = [];

  /**
   * `linked`: the engine links commits as the classic one does (TargetIo.linkCommit),
   * a NOP standing in for COMMIT_AND_FETCH_REQ.
   */
  constructor(readonly copy: CopyMode, data: TargetData, metadataSize = 0, linked = false, char = charStandIn(metadataSize)) {
    super(DEPTH, BUF, { entries: 32, cqEntries: 64 },
      servingMode({ batch: false, copy, autoBufReg: true, metadataSize }, { name: 'test', data, integrity: true }), linked, char.fd);
    this.charFile = char.file;
    this.charFd = char.fd;
    // Zero copy: the tag's slot holds "the request's pages" — here the tag buffer itself.
    if (copy === 'zero') this.ring.registerBuffers(this.reqs.map((_, t) => this.tagBuffer(t)));
  }

  protected override linkedCommit(req: UblkRequest, res: number): void {
    const s = this.ring.getSqe();
    prepNop(this.ring, s);
    setUserData(this.ring, s, userDataLo(KIND_UBLK, 0, req.tag), 0);
    this.linkedResults[req.tag] = res;
  }

  async open(mod: TargetModule, shared: unknown): Promise<void> {
    await this.openTarget(mod, {}, shared);
  }

  /** Dispatches a request on `tag` and serves the ring until it is committed; returns its result. */
  serve(tag: number, op: number, offset: number, length: number, flags = 0): number {
    this.start(tag, op, offset, length, flags);
    this.cqes = this.targetCqes = 0;
    for (let turns = 0; !this.results.has(tag); turns++) {
      assert.ok(turns < 100, 'request completes');
      this.ring.submitAndWait(1);
      this.cqes += this.ring.reap((lo, hi, res, fl) => {
        if (udKind(lo) === KIND_UBLK) {
          assert.equal(res, 0, 'the linked commit ran');
          this.results.set(udTag(lo), this.linkedResults[udTag(lo)]!);
        } else {
          this.targetCqes++;
          this.dispatcher.onCqe(this.reqs[udTag(lo)]!, udKind(lo), hi, res, fl);
        }
      });
    }
    return this.results.get(tag)!;
  }


  /** Where the driver would hold the data of the request on `tag` (user copy: its position on the char device). */
  charBytes(tag: number, len: number): Buffer {
    const b = Buffer.alloc(len);
    fs.readSync(this.charFd, b, 0, len, this.reqs[tag]!.userCopyPos);
    return b;
  }

  /** Where the driver would hold the metadata of the request on `tag` (UBLKSRV_IO_INTEGRITY_FLAG). */
  metaPos(tag: number): bigint { return BigInt(this.reqs[tag]!.userCopyPos) | UBLKSRV_IO_INTEGRITY_FLAG; }

  /** Puts metadata where the driver would hold it (Node writes no position past 2^53: pwrite with the position's two halves). */
  putMeta(tag: number, bytes: Uint8Array): void {
    const pos = this.reqs[tag]!.userCopyPos;
    const n = native.pwrite(this.charFd, bytes, 0, bytes.length, pos % 2 ** 32, Math.floor(pos / 2 ** 32) + 2 ** (UBLK_INTEGRITY_FLAG_OFF - 32));
    assert.equal(n, bytes.length);
  }

  override close(): void {
    super.close();
    fs.closeSync(this.charFd);
    fs.rmSync(this.charFile, { force: true });
  }
}

async function loopOn(file: string, copy: CopyMode, options: Record<string, unknown> = {}, linked = false): Promise<{ h: Harness; cleanup: () => void }> {
  const setup = await setupLoop({ file, ...options });
  const h = new Harness(copy, setup.data!, 0, linked);
  await h.open(loop, setup.shared);
  return { h, cleanup: () => { h.close(); void setup.cleanup?.(); } };
}

function backingFile(name: string, size: number, where = dir): string {
  const file = path.join(where, name);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, size);
  return file;
}

for (const copy of ['kernel', 'user', 'zero'] as const) {
  test(`loop, ${copy} copy: WRITE reaches the file and READ returns it, at 4K and 256K, FUA and FLUSH`, async () => {
    const file = backingFile(`rw-${copy}`, 4 * MiB);
    const { h, cleanup } = await loopOn(file, copy, { buffered: true });
    try {
      for (const [tag, offset, len] of [[0, 0, 4096], [1, 1 * MiB + 512, BUF], [3, 4 * MiB - 4096, 4096]] as const) {
        const data = pattern(len, tag + 1);
        // WRITE: the data comes from the tag buffer (kernel, zero) or the char device (user).
        if (copy === 'user') fs.writeSync(h.charFd, data, 0, len, h.reqs[tag]!.userCopyPos);
        else h.tagBuffer(tag).set(data);
        assert.equal(h.serve(tag, UBLK_IO_OP_WRITE, offset, len, tag === 1 ? UBLK_IO_F_FUA : 0), len);
        const onDisk = Buffer.alloc(len);
        fs.readSync(fs.openSync(file, 'r'), onDisk, 0, len, offset);
        assert.deepEqual(new Uint8Array(onDisk), data, 'the file holds what was written');
        // READ into a scrubbed buffer / char-device position.
        h.tagBuffer(tag).fill(0);
        if (copy === 'user') fs.writeSync(h.charFd, new Uint8Array(len), 0, len, h.reqs[tag]!.userCopyPos);
        assert.equal(h.serve(tag, UBLK_IO_OP_READ, offset, len), len);
        const got = copy === 'user' ? new Uint8Array(h.charBytes(tag, len)) : h.tagBuffer(tag).slice(0, len);
        assert.deepEqual(got, data, 'READ returns the file data');
      }
      assert.equal(h.serve(2, UBLK_IO_OP_FLUSH, 0, 0), 0);
      // The counters `ublk-ts stats` reads: every request counted once, whatever path committed it.
      const st = h.stats;
      assert.deepEqual([st[C_READS], st[C_WRITES], st[C_READ_BYTES], st[C_INFLIGHT], st[C_ERRORS]], [3, 3, 8192 + BUF, 0, 0]);
    } finally {
      cleanup();
    }
  });
}

test('loop: a READ beyond the end of a file that shrank fails with EIO after retrying, and later requests still work', async () => {
  const file = backingFile('shrunk', 1 * MiB);
  const { h, cleanup } = await loopOn(file, 'kernel', { buffered: true });
  try {
    fs.truncateSync(file, 512 * 1024);
    assert.equal(h.serve(0, UBLK_IO_OP_READ, 768 * 1024, 4096), -5);
    assert.equal(h.serve(0, UBLK_IO_OP_READ, 0, 4096), 4096);
    assert.deepEqual([h.stats[C_READS], h.stats[C_ERRORS], h.stats[C_INFLIGHT]], [2, 1, 0], 'the failed READ counted as an error');
  } finally {
    cleanup();
  }
});

for (const copy of ['kernel', 'user', 'zero'] as const) {
  test(`loop, ${copy} copy, commit linked (classic): a request that succeeds posts one CQE, the commit's; a failed one only its failure`, async () => {
    // User copy: a READ's data is copied out after its backing READ, so its commit cannot be linked, and the READ posts its CQE.
    const readCqes = copy === 'user' ? [1, 1] : [1, 0];
    const file = backingFile(`linked-${copy}`, 1 * MiB);
    const { h, cleanup } = await loopOn(file, copy, { buffered: true }, true);
    try {
      const data = pattern(8192, 5);
      if (copy === 'user') fs.writeSync(h.charFd, data, 0, data.length, h.reqs[1]!.userCopyPos);
      else h.tagBuffer(1).set(data);
      assert.equal(h.serve(1, UBLK_IO_OP_WRITE, 65536, 8192), 8192);
      assert.deepEqual([h.cqes, h.targetCqes], [1, 0], 'IOSQE_CQE_SKIP_SUCCESS: the backing IO posts no CQE, the commit one');
      h.tagBuffer(1).fill(0);
      if (copy === 'user') fs.writeSync(h.charFd, new Uint8Array(8192), 0, 8192, h.reqs[1]!.userCopyPos);
      assert.equal(h.serve(1, UBLK_IO_OP_READ, 65536, 8192), 8192);
      assert.deepEqual([h.cqes, h.targetCqes], readCqes);
      const got = copy === 'user' ? new Uint8Array(h.charBytes(1, 8192)) : h.tagBuffer(1).slice(0, 8192);
      assert.deepEqual(got, data, 'READ returns the file data');
      // A READ past the end of a file that shrank: each attempt's short READ
      // posts its CQE (the commit linked to it cancelled without one), and
      // after the retries the target commits EIO itself.
      fs.truncateSync(file, 512 * 1024);
      assert.equal(h.serve(0, UBLK_IO_OP_READ, 768 * 1024, 4096), -5);
      assert.deepEqual([h.cqes, h.targetCqes], [4, 4], 'one CQE per attempt (3 retries), none for the cancelled commits');
      assert.equal(h.serve(0, UBLK_IO_OP_READ, 0, 4096), 4096, 'the tag serves again');
      assert.deepEqual([h.stats[C_READS], h.stats[C_ERRORS], h.stats[C_INFLIGHT]], [3, 1, 0], 'each request counted once');
    } finally {
      cleanup();
    }
  });
}

test('loop: WRITE_ZEROES and DISCARD zero the range in the file, also where ZERO_RANGE is missing (tmpfs)', async (t) => {
  const shm = '/dev/shm';
  if (!fs.existsSync(shm)) return t.skip('no /dev/shm');
  const file = backingFile(`zeroes-${process.pid}`, 4 * MiB, shm);
  const { h, cleanup } = await loopOn(file, 'kernel', { buffered: true });
  try {
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, pattern(4 * MiB, 9), 0, 4 * MiB, 0);
    const zeroAt = (off: number, len: number): boolean => {
      const b = Buffer.alloc(len);
      fs.readSync(fd, b, 0, len, off);
      return b.every((x) => x === 0);
    };
    // NOUNMAP needs ZERO_RANGE, which tmpfs lacks: zeros get written (more than one 1 MiB chunk).
    assert.equal(h.serve(0, UBLK_IO_OP_WRITE_ZEROES, 512 * 1024, 1536 * 1024, UBLK_IO_F_NOUNMAP), 0);
    assert.ok(zeroAt(512 * 1024, 1536 * 1024));
    assert.ok(!zeroAt(2 * MiB, 4096), 'only the range is zeroed');
    // Without NOUNMAP: a hole.
    assert.equal(h.serve(1, UBLK_IO_OP_WRITE_ZEROES, 3 * MiB, 4096), 0);
    assert.ok(zeroAt(3 * MiB, 4096));
    assert.equal(h.serve(2, UBLK_IO_OP_DISCARD, 3 * MiB + 8192, 8192), 0);
    assert.ok(zeroAt(3 * MiB + 8192, 8192), 'tmpfs punches holes, which read as zeros');
    // The fallback is remembered: a second NOUNMAP request goes straight to writing.
    assert.equal(h.serve(3, UBLK_IO_OP_WRITE_ZEROES, 0, 4096, UBLK_IO_F_NOUNMAP), 0);
    assert.ok(zeroAt(0, 4096));
    fs.closeSync(fd);
  } finally {
    cleanup();
    fs.rmSync(file, { force: true });
  }
});

test('user copy for a target that works on req.buffer (memory): ublk-ts copies the data in and out of the tag buffer', async () => {
  const setup = await memory.setup({ size: 4 * MiB });
  const h = new Harness('user', setup.data ?? 'buffer');
  await h.open(memory, setup.shared);
  try {
    const data = pattern(BUF, 3);
    fs.writeSync(h.charFd, data, 0, BUF, h.reqs[1]!.userCopyPos);
    assert.equal(h.serve(1, UBLK_IO_OP_WRITE, MiB, BUF), BUF);
    fs.writeSync(h.charFd, new Uint8Array(BUF), 0, BUF, h.reqs[2]!.userCopyPos);
    assert.equal(h.serve(2, UBLK_IO_OP_READ, MiB, BUF), BUF);
    assert.deepEqual(new Uint8Array(h.charBytes(2, BUF)), data);
  } finally {
    h.close();
    await setup.cleanup?.();
  }
});

test('metadata (UBLK_F_INTEGRITY): loop keeps it in --metadata-file, memory in its memfd, both through user copy', async () => {
  const META = 16, len = 8192, offset = 64 * 1024, metaLen = len / 512 * META, metaOff = offset / 512 * META;
  const data = pattern(len, 5), meta = pattern(metaLen, 6);
  const metaFile = backingFile('meta', 2 * MiB / 512 * META);
  const loopSetup = await loop.setup(checkTargetOptions(loop, { file: backingFile('meta-data', 4 * MiB), buffered: true,
    metadataFile: metaFile, initMetadata: true }, 'library') as Parameters<typeof loop.setup>[0], { metadataSize: META });
  assert.equal(loopSetup.size, 2 * MiB, 'the metadata file limits the device');
  assert.ok(fs.readFileSync(metaFile).every((b) => b === 0xff), '--init-metadata fills it with 0xff');
  const memSetup = await memory.setup({ size: 4 * MiB }, { metadataSize: META });
  for (const [mod, setup] of [[loop, loopSetup], [memory, memSetup]] as const) {
    const h = new Harness('user', setup.data ?? 'buffer', META);
    await h.open(mod, setup.shared);
    try {
      fs.writeSync(h.charFd, data, 0, len, h.reqs[1]!.userCopyPos);
      h.putMeta(1, meta);
      assert.equal(h.serve(1, UBLK_IO_OP_WRITE, offset, len, UBLK_IO_F_INTEGRITY), len, mod.name);
      if (mod === loop) assert.deepEqual(new Uint8Array(fs.readFileSync(metaFile).subarray(metaOff, metaOff + metaLen)), meta);
      h.putMeta(2, new Uint8Array(metaLen));
      assert.equal(h.serve(2, UBLK_IO_OP_READ, offset, len, UBLK_IO_F_INTEGRITY), len);
      assert.deepEqual(new Uint8Array(h.charBytes(2, len)), data, `${mod.name}: data`);
      const got = Buffer.alloc(metaLen);
      fs.readSync(h.charFd, got, 0, metaLen, h.metaPos(2));
      assert.deepEqual(new Uint8Array(got), meta, `${mod.name}: metadata`);
      // A request without UBLK_IO_F_INTEGRITY moves data only.
      assert.equal(h.serve(3, UBLK_IO_OP_READ, 0, 4096), 4096);
      assert.equal(h.reqs[3]!.integrity, 0);
    } finally {
      h.close();
      await setup.cleanup?.();
    }
  }
  await assert.rejects(async () => loop.setup(checkTargetOptions(loop, { file: metaFile }, 'library') as Parameters<typeof loop.setup>[0],
    { metadataSize: 8 }), /^TargetOptionError: --metadata-size needs --metadata-file PATH/);
  await assert.rejects(async () => setupLoop({ file: metaFile, metadataFile: metaFile }), /^TargetOptionError: --metadata-file only applies with --metadata-size/);
});

test('loop setup: clear errors for a missing file, a directory, an empty file and a size beyond the file', async () => {
  await assert.rejects(async () => setupLoop({}), /^OptionError: file is required$/);
  await assert.rejects(async () => setupLoop({ file: path.join(dir, 'nope') }), /no such file/);
  await assert.rejects(async () => setupLoop({ file: dir, buffered: true }), /neither a regular file nor a block device/);
  await assert.rejects(async () => setupLoop({ file: backingFile('empty', 0), buffered: true }), /too small/);
  await assert.rejects(async () => setupLoop({ file: backingFile('small', MiB), size: 2 * MiB, buffered: true }), /less than the device size/);
  const s = await setupLoop({ file: backingFile('odd', MiB + 100), buffered: true });
  assert.equal(s.size, MiB, 'a partial last sector is left out');
  await s.cleanup?.();
});
