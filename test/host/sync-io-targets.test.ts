// The targets that serve READ and WRITE synchronously with pread/pwrite on a
// memfd (memory, zoned; src/targets/sync-io.ts), on the host without a ublk
// driver: the data round-trips, below and above 4 GiB, a request allocates
// nothing on the JavaScript heap, and a short transfer fails where a count
// short of the whole would say more than what happened.
import { test } from 'node:test';
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import memory from '../../src/targets/memory.js';
import zoned from '../../src/targets/zoned.js';
import { native } from '../../src/native.js';
import { UblkRequest } from '../../src/ublk/worker/request.js';
import { DESC_NR_SECTORS, DESC_OP_FLAGS, DESC_START_SECTOR, DESC_WORDS } from '../../src/ublk/worker/queue-memory.js';
import { EIO } from '../../src/errno.js';
import { GcCount } from '../../src/ublk/worker/gc-count.js';
import { C_HEAP_BYTES, SLOT_WORDS } from '../../src/ublk/stats.js';
import { UBLK_IO_OP_READ, UBLK_IO_OP_WRITE, UBLK_IO_OP_ZONE_APPEND } from '../../src/ublk/abi/uapi.js';
import { checkTargetOptions, type Target, type TargetIo, type TargetModule, type TargetOptions } from '../../src/ublk/target.js';

const GiB = 2 ** 30;
const BS = 4096;
const SECTORS = BS / 512;
/** Sectors of the two places written: at 0, and past 4 GiB (a position whose halves must not box a number per call). */
const FAR = (5 * GiB) / 512;

/** Allocation per request of `n` rounds of `round` (after a warm-up that gets it optimised). */
function heapBytesPerRound(round: (i: number) => number, n: number): number {
  for (let i = 0; i < n / 2; i++) round(i);
  const words = new Float64Array(SLOT_WORDS);
  const gc = new GcCount(words, 0);
  gc.sample();
  const before = words[C_HEAP_BYTES]!;
  let bytes = 0;
  for (let i = 0; i < n; i++) bytes += round(i);
  gc.sample();
  gc.stop();
  assert.equal(bytes, n * BS);
  return (words[C_HEAP_BYTES]! - before) / n;
}

const CASES: Array<[TargetModule, Record<string, unknown>]> = [
  [memory, { size: 8 * GiB }],
  // Zones 0-6 conventional (written anywhere), zone 7 sequential (ZONE_APPEND).
  [zoned, { size: 8 * GiB, zoneSize: GiB, conventional: 7 }],
];

for (const [mod, given] of CASES) {
  test(`${mod.name} target: data written reads back, past 4 GiB too, and a READ, WRITE or ZONE_APPEND allocates nothing (fs.readSync and fs.writeSync allocated 8 and 64 bytes a call)`, async () => {
    const options = checkTargetOptions(mod, given, 'library') as TargetOptions;
    const setup = await mod.setup(options);
    const mem = native.alloc(2 * BS);
    try {
      const target: Target = await mod.open({ devId: 0, queueId: 0, depth: 2, maxIoBytes: BS, options, shared: setup.shared, io: {} as TargetIo });
      const desc = new Uint32Array(2 * DESC_WORDS);
      const [w, r] = [0, 1].map((t) => new UblkRequest(0, t, new Uint8Array(mem, t * BS, BS), t, native.addressOf(mem) + t * BS));
      const wbuf = new Uint8Array(mem, 0, BS), rbuf = new Uint8Array(mem, BS, BS);
      // The descriptor is written by sector (a small integer): a byte position above 2^31 handed to a helper would box one itself.
      const load = (req: UblkRequest, op: number, sector: number): void => {
        const d = req.tag * DESC_WORDS;
        desc[d + DESC_OP_FLAGS] = op;
        desc[d + DESC_NR_SECTORS] = SECTORS;
        desc[d + DESC_START_SECTOR] = sector;
        req.load(desc);
      };
      for (const [sector, seed] of [[0, 1], [FAR + 24, 2]] as const) {
        for (let i = 0; i < BS; i++) wbuf[i] = (i * 7 + seed) & 0xff;
        load(w!, UBLK_IO_OP_WRITE, sector);
        assert.equal(target.write!(w!), BS);
        rbuf.fill(0);
        load(r!, UBLK_IO_OP_READ, sector);
        assert.equal(target.read!(r!), BS);
        assert.deepEqual(rbuf, wbuf, `at sector ${sector}`);
      }
      const at = (i: number): number => (i & 1 ? FAR : 0) + (i & 255) * SECTORS;
      const write = heapBytesPerRound((i) => { load(w!, UBLK_IO_OP_WRITE, at(i)); return target.write!(w!) as number; }, 100_000);
      const read = heapBytesPerRound((i) => { load(r!, UBLK_IO_OP_READ, at(i)); return target.read!(r!) as number; }, 100_000);
      const seen = [`WRITE ${write.toFixed(1)}`, `READ ${read.toFixed(1)}`];
      if (mod === zoned) {
        // Appends fill sequential zone 7 from its start (sector 7 GiB / 512), 4 KiB at a time.
        const zone7 = (7 * GiB) / 512;
        const append = heapBytesPerRound(() => { load(w!, UBLK_IO_OP_ZONE_APPEND, zone7); return target.zoneAppend!(w!) as number; }, 100_000);
        assert.equal(w!.zoneAppendLba, zone7 + (150_000 - 1) * SECTORS, 'each append lands after the one before');
        seen.push(`ZONE_APPEND ${append.toFixed(1)}`);
        assert.ok(append < 4, seen.join(', '));
      }
      assert.ok(write < 4 && read < 4, `bytes per request: ${seen.join(', ')}`);
    } finally {
      native.munmap(mem);
      await setup.cleanup?.();
    }
  });
}

test('memory with metadata: a READ cut short by a shrink fails whole, as no part of its metadata moved', async () => {
  const options = { size: 1 << 20 };
  const setup = await memory.setup(options, { metadataSize: 8 } as Parameters<typeof memory.setup>[1]);
  try {
    const target: Target = await memory.open({ devId: 0, queueId: 0, depth: 1, maxIoBytes: 2 * BS, options, shared: setup.shared!, io: {} as TargetIo });
    const req = { sector: ((1 << 20) - 2 * BS) / 512, length: 2 * BS, buffer: new Uint8Array(2 * BS),
      integrity: 16, integrityOffset: 0, integrityBuffer: new Uint8Array(16) } as unknown as UblkRequest;
    assert.equal(target.read!(req), 2 * BS, 'whole before the shrink');
    setup.resize!((1 << 20) - BS);
    assert.equal(target.read!(req), -EIO, 'half of it lies past the new end');
  } finally {
    await setup.cleanup?.();
  }
});

test('zoned: a short WRITE or ZONE_APPEND fails whole (the write pointer has moved past it: the rest could not follow)', () => {
  // A short pwrite on the memfd comes from running out of memory; here from
  // RLIMIT_FSIZE, set on a child process once its device exists (SIGXFSZ is
  // only sent to a write that starts at the limit, which none does).
  const url = new URL('../../src/targets/zoned.js', import.meta.url).href;
  const script = `
    import { spawnSync } from 'node:child_process';
    const { default: zoned } = await import(${JSON.stringify(url)});
    const MiB = 1 << 20;
    const options = { size: 8 * MiB, zoneSize: MiB, conventional: 0, maxOpen: 0, maxActive: 0 };
    const setup = await zoned.setup(options);
    const t = await zoned.open({ devId: 0, queueId: 0, depth: 1, maxIoBytes: 8192, options, shared: setup.shared, io: {} });
    const limit = (bytes) => { if (spawnSync('prlimit', ['--pid', String(process.pid), '--fsize=' + bytes + ':']).status !== 0) throw new Error('prlimit'); };
    const req = (zone) => ({ sector: zone * MiB / 512, sectors: 16, length: 8192, buffer: new Uint8Array(8192).fill(7) });
    limit(2 * MiB + 4096);
    const w = req(2);
    console.log('write', t.write(w));
    limit(3 * MiB + 4096);
    const a = req(3);
    console.log('append', t.zoneAppend(a), a.zoneAppendLba);
    limit('unlimited');
    console.log('whole', t.write(req(4)));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split('\n'), [`write ${-EIO}`, `append ${-EIO} ${3 * 2048}`, 'whole 8192']);
});

test('memory: growing reads zeros past the old end, even where a WRITE in flight during a shrink landed after it', async () => {
  const options = { size: 1 << 20 };
  const setup = await memory.setup(options);
  try {
    const target: Target = await memory.open({ devId: 0, queueId: 0, depth: 1, maxIoBytes: BS, options, shared: setup.shared!, io: {} as TargetIo });
    const at = (3 << 20) / 4;
    const req = (fill: number) => ({ sector: at / 512, length: BS, buffer: new Uint8Array(BS).fill(fill) }) as unknown as UblkRequest;
    setup.resize!(1 << 19);
    // The late WRITE, issued while the device was 1 MiB, lands after the truncate.
    assert.equal(target.write!(req(0xab)), BS);
    setup.resize!(1 << 20);
    const back = req(0x55);
    assert.equal(target.read!(back), BS);
    assert.ok(back.buffer.every((b) => b === 0), 'the grown range reads zeros');
  } finally {
    await setup.cleanup?.();
  }
});
