// The zone model (src/targets/zone-model.ts): the zone state machine, the
// open and active limits, ZONE_APPEND's sector, REPORT_ZONES' bytes, and one
// state shared by several threads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { BLK_ZONE_BYTES, EOVERFLOW, ETOOMANYREFS, ZoneModel, type ZoneGeometry } from '../../src/targets/zone-model.js';
import {
  BLK_ZONE_COND_CLOSED, BLK_ZONE_COND_EMPTY, BLK_ZONE_COND_EXP_OPEN, BLK_ZONE_COND_FULL, BLK_ZONE_COND_IMP_OPEN, BLK_ZONE_COND_NOT_WP,
  BLK_ZONE_TYPE_CONVENTIONAL, BLK_ZONE_TYPE_SEQWRITE_REQ,
} from '../../src/ublk/abi/uapi.js';
import { LAYOUTS } from '../../src/ublk/abi/layout.js';
import { EIO } from '../../src/errno.js';

const ZS = 8; // sectors per zone
const geo = (o: Partial<ZoneGeometry> = {}): ZoneGeometry => ({ zoneSectors: ZS, zones: 8, conventional: 1, maxOpen: 0, maxActive: 0, ...o });
const at = (zone: number, off = 0) => zone * ZS + off;

test('writes: only at the write pointer and inside the zone; conventional zones anywhere; a zone fills up', () => {
  const m = ZoneModel.create(geo());
  assert.equal(m.cond(0), BLK_ZONE_COND_NOT_WP);
  assert.equal(m.write(at(0, 5), 2), 0, 'conventional: anywhere');
  assert.equal(m.write(at(0, 7), 2), -EIO, 'not across a zone boundary');
  assert.equal(m.write(at(1, 1), 1), -EIO, 'not ahead of the write pointer');
  assert.equal(m.write(at(1), 3), 0);
  assert.deepEqual([m.cond(1), m.wp(1)], [BLK_ZONE_COND_IMP_OPEN, at(1, 3)]);
  assert.equal(m.write(at(1), 1), -EIO, 'not behind it either');
  assert.equal(m.write(at(1, 3), 5), 0);
  assert.deepEqual([m.cond(1), m.wp(1)], [BLK_ZONE_COND_FULL, at(2)]);
  assert.equal(m.write(at(1, 7), 1), -EIO, 'a full zone takes nothing');
  assert.deepEqual(m.counts, { impOpen: 0, expOpen: 0, closed: 0 }, 'a full zone is neither open nor active');
  assert.equal(m.write(at(8), 1), -EIO, 'past the end');
});

test('open, close, finish, reset and reset-all move zones through their conditions', () => {
  const m = ZoneModel.create(geo());
  assert.equal(m.open(at(2)), 0);
  assert.equal(m.cond(2), BLK_ZONE_COND_EXP_OPEN);
  assert.equal(m.open(at(2)), 0, 'opening an open zone is no error');
  assert.equal(m.close(at(2)), 0);
  assert.equal(m.cond(2), BLK_ZONE_COND_EMPTY, 'closed with nothing written: empty');
  assert.equal(m.write(at(3), 2), 0);
  assert.equal(m.open(at(3)), 0);
  assert.deepEqual(m.counts, { impOpen: 0, expOpen: 1, closed: 0 }, 'implicitly open → explicitly open');
  assert.equal(m.close(at(3)), 0);
  assert.equal(m.cond(3), BLK_ZONE_COND_CLOSED);
  assert.equal(m.close(at(3)), 0, 'closing a closed zone is no error');
  assert.equal(m.write(at(3, 2), 1), 0, 'a write reopens a closed zone');
  assert.equal(m.cond(3), BLK_ZONE_COND_IMP_OPEN);
  assert.equal(m.finish(at(3)), 0);
  assert.deepEqual([m.cond(3), m.wp(3)], [BLK_ZONE_COND_FULL, at(4)]);
  assert.equal(m.open(at(3)), -EIO, 'a full zone cannot be opened');
  assert.equal(m.finish(at(4)), 0, 'an empty zone can be finished');
  assert.equal(m.reset(at(3)), 0);
  assert.deepEqual([m.cond(3), m.wp(3)], [BLK_ZONE_COND_EMPTY, at(3)]);
  for (const op of [m.open, m.close, m.finish, m.reset]) assert.equal(op.call(m, at(0)), -EIO, 'no zone management of conventional zones');
  assert.equal(m.write(at(5), 1), 0);
  assert.equal(m.open(at(6)), 0);
  assert.equal(m.resetAll(), 0);
  for (let z = 1; z < 8; z++) assert.deepEqual([m.cond(z), m.wp(z)], [BLK_ZONE_COND_EMPTY, at(z)]);
  assert.deepEqual(m.counts, { impOpen: 0, expOpen: 0, closed: 0 });
});

test('the open limit closes an implicitly open zone to make room, else ETOOMANYREFS; the active limit is EOVERFLOW', () => {
  const m = ZoneModel.create(geo({ maxOpen: 2, maxActive: 3 }));
  assert.equal(m.open(at(1)), 0);
  assert.equal(m.write(at(2), 1), 0);
  assert.deepEqual(m.counts, { impOpen: 1, expOpen: 1, closed: 0 });
  assert.equal(m.write(at(3), 1), 0, 'zone 2 is closed to let zone 3 open');
  assert.equal(m.cond(2), BLK_ZONE_COND_CLOSED);
  assert.deepEqual(m.counts, { impOpen: 1, expOpen: 1, closed: 1 });
  assert.equal(m.write(at(4), 1), -EOVERFLOW, 'three zones are active already');
  assert.equal(m.open(at(4)), -EOVERFLOW);
  assert.equal(m.cond(4), BLK_ZONE_COND_EMPTY, 'a refused request changes nothing');
  assert.equal(m.finish(at(2)), 0, 'finishing a closed zone frees its active slot');
  assert.equal(m.open(at(4)), 0, 'zone 3 (implicitly open) closes for it');
  assert.deepEqual([m.cond(3), m.cond(4)], [BLK_ZONE_COND_CLOSED, BLK_ZONE_COND_EXP_OPEN]);
  assert.equal(m.write(at(3, 1), 1), -ETOOMANYREFS, 'two zones explicitly open: nothing to close for a third');
  assert.equal(m.close(at(1)), 0);
  assert.equal(m.write(at(3, 1), 1), 0);
  assert.deepEqual(m.counts, { impOpen: 1, expOpen: 1, closed: 0 }, 'zone 1, closed empty, is empty, not closed');
});

test('ZONE_APPEND lands at the write pointer and returns that sector', () => {
  const m = ZoneModel.create(geo({ maxOpen: 1 }));
  assert.equal(m.append(at(2), 3), at(2));
  assert.equal(m.append(at(2), 2), at(2, 3));
  assert.deepEqual([m.cond(2), m.wp(2)], [BLK_ZONE_COND_IMP_OPEN, at(2, 5)]);
  assert.equal(m.append(at(2), 4), -EIO, 'more than the zone has left');
  assert.equal(m.append(at(2, 1), 1), -EIO, 'the request names the zone by its start');
  assert.equal(m.append(at(0), 1), -EIO, 'no appends to conventional zones');
  assert.equal(m.append(at(3), 1), at(3), 'zone 2 closes to let zone 3 open (max-open 1)');
  assert.equal(m.cond(2), BLK_ZONE_COND_CLOSED);
  assert.equal(m.append(at(2), 3), at(2, 5));
  assert.deepEqual([m.cond(2), m.wp(2)], [BLK_ZONE_COND_FULL, at(3)]);
});

test('REPORT_ZONES: struct blk_zone entries from the zone asked for, then zeros', () => {
  const m = ZoneModel.create(geo());
  m.write(at(2), 3);
  m.finish(at(3));
  const out = new Uint8Array(5 * BLK_ZONE_BYTES).fill(0xee);
  assert.equal(m.report(at(1), 4, out), 4);
  const dv = new DataView(out.buffer);
  const F = LAYOUTS.blk_zone.fields;
  const entry = (i: number) => {
    const b = i * BLK_ZONE_BYTES, u64 = (f: readonly [number, number]) => Number(dv.getBigUint64(b + f[0], true));
    return { start: u64(F.start), len: u64(F.len), wp: u64(F.wp), type: dv.getUint8(b + F.type[0]), cond: dv.getUint8(b + F.cond[0]), cap: u64(F.capacity) };
  };
  const S = BLK_ZONE_TYPE_SEQWRITE_REQ;
  assert.deepEqual([0, 1, 2, 3].map(entry), [
    { start: at(1), len: ZS, wp: at(1), type: S, cond: BLK_ZONE_COND_EMPTY, cap: ZS },
    { start: at(2), len: ZS, wp: at(2, 3), type: S, cond: BLK_ZONE_COND_IMP_OPEN, cap: ZS },
    { start: at(3), len: ZS, wp: at(4), type: S, cond: BLK_ZONE_COND_FULL, cap: ZS },
    { start: at(4), len: ZS, wp: at(4), type: S, cond: BLK_ZONE_COND_EMPTY, cap: ZS },
  ]);
  assert.ok(out.subarray(4 * BLK_ZONE_BYTES).every((b) => b === 0), 'a zero-length entry ends the report');
  const conv = new Uint8Array(BLK_ZONE_BYTES);
  assert.equal(m.report(0, 1, conv), 1);
  assert.deepEqual([conv[F.type[0]], conv[F.cond[0]]], [BLK_ZONE_TYPE_CONVENTIONAL, BLK_ZONE_COND_NOT_WP]);
  assert.equal(m.report(at(6), 10, new Uint8Array(10 * BLK_ZONE_BYTES)), 2, 'no zones past the last');
});

test('threads share one model: concurrent appends get distinct sectors, and the write pointer counts them all', async () => {
  const PER_THREAD = 5000, THREADS = 3;
  const g = geo({ zoneSectors: 1 << 16, zones: 2 });
  const m = ZoneModel.create(g);
  const url = new URL('../../src/targets/zone-model.js', import.meta.url).href;
  const code = `const { workerData, parentPort } = require('node:worker_threads');
    import(${JSON.stringify(url)}).then(({ ZoneModel }) => {
      const m = ZoneModel.attach(workerData.g, workerData.sab);
      const got = [];
      for (let i = 0; i < ${PER_THREAD}; i++) got.push(m.append(workerData.g.zoneSectors, 1 + (i % 3)));
      parentPort.postMessage(got);
    });`;
  const runs = Array.from({ length: THREADS }, () => new Promise<number[]>((resolve, reject) => {
    const w = new Worker(code, { eval: true, workerData: { g, sab: m.sab } });
    w.once('message', resolve);
    w.once('error', reject);
  }));
  const all = (await Promise.all(runs)).flat();
  assert.ok(all.every((s) => s >= g.zoneSectors), 'no append failed');
  assert.equal(new Set(all).size, all.length, 'no sector handed out twice');
  const sectors = THREADS * Array.from({ length: PER_THREAD }, (_, i) => 1 + (i % 3)).reduce((a, b) => a + b, 0);
  assert.equal(m.wp(1), g.zoneSectors + sectors);
});

test('reset and reset-all drop the data (`clear`) under the lock before the write pointer goes back, and change nothing if that fails: no other thread can write at the new write pointer and lose its data to a clear that came after', () => {
  const m = ZoneModel.create(geo()), other = ZoneModel.attach(geo(), m.sab);
  assert.equal(m.write(at(1), 3), 0);
  let seen = -1;
  assert.equal(m.reset(at(1), (z) => { seen = other.wp(z); return 0; }), 0);
  assert.equal(seen, at(1, 3), 'the data is dropped while the zone still holds it');
  assert.deepEqual([m.cond(1), m.wp(1)], [BLK_ZONE_COND_EMPTY, at(1)]);
  assert.equal(m.write(at(2), 2), 0);
  assert.equal(m.reset(at(2), () => -EIO), -EIO);
  assert.deepEqual([m.cond(2), m.wp(2)], [BLK_ZONE_COND_IMP_OPEN, at(2, 2)], 'a failed clear resets nothing');
  assert.equal(m.resetAll(() => -EIO), -EIO);
  assert.equal(m.wp(2), at(2, 2));
  let range: number[] = [];
  assert.equal(m.resetAll((first, count) => { range = [first, count, other.wp(2)]; return 0; }), 0);
  assert.deepEqual(range, [1, 7, at(2, 2)], 'every sequential zone, dropped before the reset');
  assert.equal(m.wp(2), at(2));
});
