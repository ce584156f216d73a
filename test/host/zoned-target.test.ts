// The zoned target without a ublk driver: its options checked as `ublk-ts
// add zoned` checks them, the mode a zoned target gets (user copy by default,
// kernel and zero copy refused, batch elements that carry the append sector),
// and ZONE_APPEND, REPORT_ZONES and zone management through the dispatcher's
// user-copy steps, with a plain file standing in for /dev/ublkcN.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native } from '../../src/native.js';
import { Ring } from '../../src/uring/index.js';
import { Dispatcher } from '../../src/ublk/worker/dispatch.js';
import { UblkRequest } from '../../src/ublk/worker/request.js';
import { DESC_NR_SECTORS, DESC_OP_FLAGS, DESC_START_SECTOR, DESC_WORDS } from '../../src/ublk/worker/queue-memory.js';
import { udKind, udTag } from '../../src/ublk/worker/worker-ring.js';
import { Waker } from '../../src/ublk/worker/waker.js';
import { checkKernelSupports, ModeError, servingMode } from '../../src/ublk/mode.js';
import { SLOT_WORDS } from '../../src/ublk/stats.js';
import { checkTargetOptions, TargetOptionError, type TargetSetup } from '../../src/ublk/target.js';
import { OptionError } from '../../src/options/spec.js';
import { parseAdd } from '../../src/cli/add.js';
import {
  BLK_ZONE_COND_EMPTY, BLK_ZONE_COND_EXP_OPEN, BLK_ZONE_COND_FULL, BLK_ZONE_COND_IMP_OPEN, UBLK_BATCH_F_HAS_ZONE_LBA, UBLK_F_USER_COPY,
  UBLK_F_ZONED, UBLK_IO_OP_READ, UBLK_IO_OP_REPORT_ZONES, UBLK_IO_OP_WRITE, UBLK_IO_OP_ZONE_APPEND, UBLK_IO_OP_ZONE_FINISH,
  UBLK_IO_OP_ZONE_OPEN, UBLK_IO_OP_ZONE_RESET, UBLK_IO_OP_ZONE_RESET_ALL,
} from '../../src/ublk/abi/uapi.js';
import { LAYOUTS } from '../../src/ublk/abi/layout.js';
import { EIO } from '../../src/errno.js';
import zoned from '../../src/targets/zoned.js';

const MiB = 1 << 20;
type ZonedOptions = Parameters<typeof zoned.setup>[0];
type ZonedShared = Parameters<typeof zoned.open>[0]['shared'];
const setupZoned = (given: Record<string, unknown>, naming: 'cli' | 'library' = 'cli') =>
  zoned.setup(checkTargetOptions(zoned, given, naming) as ZonedOptions) as TargetSetup<ZonedShared>;

test('zoned options: every one checked, with one line naming the option and the fix', () => {
  const bad: Array<[Record<string, unknown>, RegExp, new (message: string) => Error]> = [
    [{ size: '64M' }, /^--zone-size SIZE is required$/, OptionError],
    [{ size: '64M', zoneSize: '3M' }, /^--zone-size must be a power of 2, got 3145728$/, OptionError],
    [{ size: '64M', zoneSize: '2K' }, /^--zone-size must be from 4 KiB to 1 TiB, got '2K'$/, OptionError],
    [{ size: '10M', zoneSize: '4M' }, /^--size 10 MiB is not a whole number of 4 MiB zones \(--zone-size\): use a multiple of 4194304 bytes$/, TargetOptionError],
    [{ size: '64M', zoneSize: '4M', conventional: '16' }, /^--conventional 16 leaves no sequential zone \(the device has 16\): use at most 15$/, TargetOptionError],
    [{ size: '64M', zoneSize: '4M', conventional: '4', maxOpen: '13' }, /^--max-open 13 is more than the 12 sequential zones/, TargetOptionError],
    [{ size: '64M', zoneSize: '4M', maxActive: '17' }, /^--max-active 17 is more than the 16 sequential zones/, TargetOptionError],
    [{ size: '64M', zoneSize: '4M', maxOpen: '8', maxActive: '4' }, /^--max-open 8 is more than --max-active 4: an open zone is active/, TargetOptionError],
    [{ size: '16G', zoneSize: '4K' }, /gives 4194304 zones, more than 1048576: use larger zones/, TargetOptionError],
    [{ size: '64M', zoneSize: '4M', maxOpen: '-1' }, /^--max-open must be a whole number/, OptionError],
  ];
  for (const [given, message, kind] of bad) {
    assert.throws(() => setupZoned(given), (e: Error) => e instanceof kind && message.test(e.message), JSON.stringify(given));
  }
  const s = setupZoned({ size: '64M', zoneSize: '4M', conventional: '2', maxOpen: '4', maxActive: '6' });
  assert.deepEqual([s.size, s.zoned], [64 * MiB, { zoneSize: 4 * MiB, maxOpen: 4, maxActive: 6 }]);
  void s.cleanup?.();
});

test('ublk-ts add zoned: the target\'s rows on the command line, no copy mode unless asked', async () => {
  const r = await parseAdd(['zoned', '-s', '1G', '-z', '64M', '--conventional', '1', '--max-open', '3', '--batch']);
  assert.deepEqual(r!.cfg.options, { size: 2 ** 30, zoneSize: 64 * MiB, conventional: 1, maxOpen: 3, maxActive: 0 });
  assert.equal(r!.cfg.copy, undefined);
  assert.equal((await parseAdd(['zoned', '-s', '1G', '-z', '64M', '--copy', 'user']))!.cfg.copy, 'user');
});

test('the mode of a zoned target: user copy by default, kernel and zero copy refused, batch elements carry the append sector', () => {
  const t = { name: 'zoned', zoned: true };
  const classic = servingMode({ batch: false, autoBufReg: true }, t);
  assert.equal(classic.copy, 'user');
  assert.equal(classic.flags, UBLK_F_USER_COPY | UBLK_F_ZONED);
  assert.equal(servingMode({ batch: false, autoBufReg: true }, { name: 'memory' }).copy, 'kernel', 'other targets keep kernel copy');
  const batch = servingMode({ batch: true, copy: 'user', autoBufReg: true }, t);
  assert.deepEqual([batch.elemBytes, batch.batchFlags], [16, UBLK_BATCH_F_HAS_ZONE_LBA], 'header + zone_lba (no buffer address under user copy)');
  assert.throws(() => servingMode({ batch: false, copy: 'kernel', autoBufReg: true }, t),
    (e: Error) => e instanceof ModeError && /zoned devices with user or zero copy only \(use --copy user\)/.test(e.message));
  assert.throws(() => servingMode({ batch: false, copy: 'zero', autoBufReg: true }, t), /zero copy cannot reach \(use --copy user\)/);
  assert.throws(() => checkKernelSupports(classic, UBLK_F_USER_COPY), /lacks ZONED \(needed for a zoned device; Linux 6\.6 or later\)/);
  assert.doesNotThrow(() => checkKernelSupports(classic, UBLK_F_USER_COPY | UBLK_F_ZONED));
});

const DEPTH = 2, BUF = 256 << 10;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zoned-target-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('ZONE_APPEND, REPORT_ZONES and zone management through the dispatcher under user copy', async () => {
  const setup = setupZoned({ size: 16 * MiB, zoneSize: MiB, conventional: 1, maxOpen: 2 }, 'library');
  const ring = Ring.create({ entries: 32, cqEntries: 64 });
  const mem = native.alloc(DEPTH * BUF);
  const charFd = fs.openSync(path.join(dir, 'char'), 'w+'); // stands in for /dev/ublkcN
  const desc = new Uint32Array(DEPTH * DESC_WORDS);
  const base = native.addressOf(mem);
  const reqs = [0, 1].map((t) => new UblkRequest(0, t, new Uint8Array(mem, t * BUF, BUF), t, base + t * BUF));
  const results = new Map<number, number>();
  try {
    ring.registerFiles([charFd]);
    const mode = servingMode({ batch: false, autoBufReg: true }, { name: 'zoned', zoned: true });
    const sink = { commit: (req: UblkRequest, res: number) => void results.set(req.tag, res), commitNext: null };
    const d = new Dispatcher(ring, mode, sink, new Waker(), { stats: new Float64Array(SLOT_WORDS), queues: [{ q: 0, slot: 0 }], charFd });
    d.attach(await zoned.open({ devId: 0, queueId: 0, depth: DEPTH, maxIoBytes: BUF, options: {} as ZonedOptions, shared: setup.shared!, io: d }));
    /** A request on tag 0: op, first sector, sectors (REPORT_ZONES: zones); `data` is what the kernel holds for it. */
    const serve = (op: number, sector: number, n: number, data?: Uint8Array): { res: number; req: UblkRequest } => {
      const req = reqs[0]!;
      desc[DESC_OP_FLAGS] = op;
      desc[DESC_NR_SECTORS] = n;
      desc[DESC_START_SECTOR] = sector;
      if (data) fs.writeSync(charFd, data, 0, data.length, req.userCopyPos);
      req.load(desc);
      results.delete(0);
      d.dispatch(req);
      for (let turns = 0; !results.has(0); turns++) {
        assert.ok(turns < 100, 'request completes');
        ring.submitAndWait(1);
        ring.reap((lo, hi, res, fl) => d.onCqe(reqs[udTag(lo)]!, udKind(lo), hi, res, fl));
      }
      return { res: results.get(0)!, req };
    };
    const fromChar = (len: number) => {
      const b = Buffer.alloc(len);
      fs.readSync(charFd, b, 0, len, reqs[0]!.userCopyPos);
      return b;
    };
    const zs = MiB / 512;
    const a = Buffer.alloc(8192, 0xa1), b = Buffer.alloc(4096, 0xb2);
    let r = serve(UBLK_IO_OP_ZONE_APPEND, 3 * zs, 16, a);
    assert.deepEqual([r.res, r.req.zoneAppendLba], [8192, 3 * zs], 'the first append goes to the zone start');
    r = serve(UBLK_IO_OP_ZONE_APPEND, 3 * zs, 8, b);
    assert.deepEqual([r.res, r.req.zoneAppendLba], [4096, 3 * zs + 16], 'the next one right after it');
    assert.equal(serve(UBLK_IO_OP_READ, 3 * zs, 24).res, 12288);
    assert.ok(fromChar(12288).equals(Buffer.concat([a, b])), 'the appended data reads back in order');
    assert.equal(serve(UBLK_IO_OP_WRITE, 3 * zs, 8, b).res, -EIO, 'a write behind the write pointer');
    assert.equal(serve(UBLK_IO_OP_WRITE, 3 * zs + 24, 8, b).res, 4096, 'a write at it');
    assert.equal(serve(UBLK_IO_OP_ZONE_APPEND, 0, 8, b).res, -EIO, 'no appends to a conventional zone');
    assert.equal(serve(UBLK_IO_OP_ZONE_OPEN, 5 * zs, 0).res, 0);
    assert.equal(serve(UBLK_IO_OP_ZONE_FINISH, 6 * zs, 0).res, 0);

    const report = serve(UBLK_IO_OP_REPORT_ZONES, 3 * zs, 5);
    assert.equal(report.res, 5 * LAYOUTS.blk_zone.size, 'the reply is nr_zones struct blk_zone');
    const rep = fromChar(report.res), F = LAYOUTS.blk_zone.fields;
    const zone = (i: number) => [Number(rep.readBigUInt64LE(i * 64 + F.start[0])), Number(rep.readBigUInt64LE(i * 64 + F.wp[0])), rep[i * 64 + F.cond[0]]];
    assert.deepEqual([0, 1, 2, 3, 4].map(zone), [
      [3 * zs, 3 * zs + 32, BLK_ZONE_COND_IMP_OPEN], [4 * zs, 4 * zs, BLK_ZONE_COND_EMPTY], [5 * zs, 5 * zs, BLK_ZONE_COND_EXP_OPEN],
      [6 * zs, 7 * zs, BLK_ZONE_COND_FULL], [7 * zs, 7 * zs, BLK_ZONE_COND_EMPTY],
    ]);

    assert.equal(serve(UBLK_IO_OP_ZONE_RESET, 3 * zs, 0).res, 0);
    assert.equal(serve(UBLK_IO_OP_READ, 3 * zs, 8).res, 4096);
    assert.ok(fromChar(4096).every((x) => x === 0), 'a reset zone reads as zeros (its memory given back)');
    assert.equal(serve(UBLK_IO_OP_ZONE_RESET_ALL, 0, 0).res, 0);
    const after = fromChar(serve(UBLK_IO_OP_REPORT_ZONES, zs, 15).res);
    for (let i = 0; i < 15; i++) assert.equal(after[i * 64 + F.cond[0]], BLK_ZONE_COND_EMPTY, `zone ${i + 1} empty after reset-all`);
  } finally {
    ring.close();
    native.munmap(mem);
    fs.closeSync(charFd);
    await setup.cleanup?.();
  }
});
