// What a request costs the serving threads beyond its own work, under a
// steady fio load: io_uring_enter calls, serving-loop turns and CQEs per
// request (`ublk-ts stats`), and the JavaScript heap it allocates.
//
// The allocation bound: after a warm-up (JIT compilation, first use of each
// tag), a request must allocate nothing. The counters are sampled every 1024
// loop turns, so both readings are taken while one fio run goes on: the
// sampling lag then shifts the window within the steady load instead of
// carrying the warm-up into it. What the counters still see is their own
// sampling (GcCount.sample: about 1 byte per request, as the host measures
// the classic loop path) and whatever the thread does now and then; 16 bytes
// per request on average leaves room for that, while any object made per
// request (the smallest JavaScript object is 16 bytes or more, a boxed
// number 16, a closure 32, a promise 40, a typed-array view about 100) shows
// above it. Garbage collections follow: at most one in the window (one may be
// due to what the warm-up left), none of them major.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { addDevice, brdForFile, cli, delDevice, idOf, sleep, vmSuite } from './helpers.js';

vmSuite();
const [RAM] = brdForFile(1, 131072);

interface Totals { reads: number; writes: number; other: number; enters: number; turns: number; cqes: number; gcMinor: number; gcMajor: number; heapBytes: number }

function totals(dev: string): Totals {
  const r = cli('stats', String(idOf(dev)), '--json', '-i', '1');
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { totals: Totals }).totals;
}

/** fio randrw 4k at `iodepth` for `seconds`, running while the test reads the counters. */
function load(dev: string, seconds: number, iodepth: number): { done: Promise<number | null> } {
  const fio = spawn('fio', ['--name=steady', `--filename=${dev}`, '--ioengine=io_uring', '--direct=1', '--rw=randrw', '--bs=4k',
    `--iodepth=${iodepth}`, '--size=64m', '--time_based', `--runtime=${seconds}`, '--output-format=terse'], { stdio: 'ignore' });
  return { done: new Promise((resolve) => fio.once('exit', resolve)) };
}

const CASES: Array<{ name: string; args: string[]; classic: boolean }> = [
  { name: 'null, classic', args: ['null', '--size', '256M'], classic: true },
  { name: 'null, batch', args: ['null', '--size', '256M', '--batch'], classic: false },
  { name: 'loop, classic', args: ['loop', '--file', RAM!], classic: true },
  { name: 'loop, batch', args: ['loop', '--file', RAM!, '--batch'], classic: false },
];

for (const c of CASES) {
  test(`${c.name}: a steady load allocates nothing per request${c.classic ? ', and at QD 1 a request costs one enter, one turn and one CQE' : ''}`, async (t) => {
    const dev = addDevice(...c.args, '--queues', '1');
    try {
      for (const iodepth of [1, 16]) {
        const fio = load(dev, 12, iodepth);
        await sleep(3000); // warm-up
        const a = totals(dev); // returns a second later
        await sleep(3000);
        const b = totals(dev);
        assert.equal(await fio.done, 0, 'fio ran to its end');
        const requests = b.reads + b.writes + b.other - (a.reads + a.writes + a.other);
        const per = (k: keyof Totals) => (b[k] - a[k]) / requests;
        const seen = `QD ${iodepth}: ${requests} requests; per request ${per('enters').toFixed(2)} enters, ${per('turns').toFixed(2)} turns, ` +
          `${per('cqes').toFixed(2)} CQEs, ${per('heapBytes').toFixed(1)} heap bytes; GCs ${b.gcMinor - a.gcMinor} minor, ${b.gcMajor - a.gcMajor} major`;
        t.diagnostic(seen);
        assert.ok(requests > 1000, seen);
        assert.ok(per('heapBytes') < 16, `allocates per request: ${seen}`);
        assert.ok(b.gcMinor - a.gcMinor <= 1 && b.gcMajor === a.gcMajor, `garbage collections: ${seen}`);
        // Classic at QD 1: the commit of one request is the fetch of the next, so
        // one enter submits it and waits, and its CQE is the next request; the
        // loop target's backing IO, linked to the commit, posts no CQE of its own.
        if (c.classic && iodepth === 1) {
          for (const k of ['enters', 'turns', 'cqes'] as const) assert.ok(per(k) < 1.1, `${k}: ${seen}`);
        }
      }
    } finally {
      delDevice(dev);
    }
  });
}
