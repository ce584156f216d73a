// Serving-loop and batch-engine edges that plain IO rarely reaches: polling
// before sleeping (adaptive, and --poll-us), partial COMMIT_IO_CMDS results (refusals
// injected with UBLK_TS_FAULT_COMMIT), and multishot fetches that run
// out of provided buffers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { UblkDevice } from '../../src/index.js';
import { addDevice, assertClean, cli, delDevice, fioVerify, FULL_ONLY, idOf, listDevices, sh, vmSuite } from './helpers.js';

vmSuite();

/** The serving process's CPU time so far, in clock ticks (utime + stime). */
function cpuTicks(pid: number): number {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]);
}

// The default (adaptive polling) in npm test; a fixed window in the full suite.
for (const [name, pollArgs, skip] of [['adaptive polling (the default)', [], false], ['polling (--poll-us 100)', ['--poll-us', '100'], FULL_ONLY]] as const) {
  test(`${name} in both modes: fio verify at QD 1 and 64, and an idle server sleeps`, { skip }, async () => {
    for (const modeArgs of [[], ['--batch']]) {
      const dev = addDevice('memory', '--size', '64M', ...pollArgs, ...modeArgs);
      try {
        fioVerify(dev, { iodepth: 1, size: '8m' });
        fioVerify(dev, { iodepth: 64, size: '16m' });
        // 3 s of steady QD 1: long enough for trials of spinning (the first
        // after 4 epochs of at least 50 ms and 32 requests), so some time is
        // spent spinning.
        sh('fio', '--name=qd1', `--filename=${dev}`, '--ioengine=io_uring', '--direct=1', '--rw=randread', '--bs=4k', '--iodepth=1',
          '--time_based', '--runtime=3', '--size=16m');
        const stats = cli('stats', String(idOf(dev)), '--json', '-i', '1');
        assert.equal(stats.code, 0, stats.stderr);
        const { spinUsec } = (JSON.parse(stats.stdout) as { totals: { spinUsec: number } }).totals;
        assert.ok(spinUsec > 0, `spent ${spinUsec} µs spinning`);
        // Idle: the serving threads must block, not spin (poll only after busy turns).
        const pid = listDevices().find((d) => d.path === dev)!.pid!;
        await new Promise((r) => setTimeout(r, 500));
        const before = cpuTicks(pid);
        await new Promise((r) => setTimeout(r, 2000));
        assert.ok(cpuTicks(pid) - before < 50, `an idle server used ${cpuTicks(pid) - before} ticks in 2 s`);
      } finally {
        delDevice(dev);
      }
    }
    assertClean();
  });
}

/** A batch memory device whose server runs with UBLK_TS_FAULT_COMMIT=`fault`. */
function faultyCommitDevice(fault: string): string {
  process.env.UBLK_TS_FAULT_COMMIT = fault;
  try {
    return addDevice('memory', '--size', '64M', '--batch');
  } finally {
    delete process.env.UBLK_TS_FAULT_COMMIT;
  }
}

// `npm test` injects a refusal of a whole COMMIT_IO_CMDS (below); partial refusals in the full suite.
test('batch: partial COMMIT_IO_CMDS results are retried, no IO lost (injected refusals)', { skip: FULL_ONLY }, () => {
  // Every commit of 2+ elements carries a duplicate the kernel refuses; the
  // elements after it must be committed again, or fio would hang or fail.
  const dev = faultyCommitDevice('duplicate');
  // The server's own log, per device, with a timestamp on every line.
  const log = `/run/ublk-ts/${idOf(dev)}.log`;
  const before = fs.statSync(log).size;
  try {
    fioVerify(dev, { iodepth: 64, size: '16m', bs: '4k-64k' });
    // At QD 2 both requests often share one commit, and with the refused
    // element's rest pending no other request comes to wake the server: the
    // retry must not wait for one (a hang here ends in fio's timeout).
    fioVerify(dev, { iodepth: 2, size: '4m', bs: '4k-64k', timeoutMs: 300_000 });
  } finally {
    delDevice(dev);
  }
  const text = fs.readFileSync(log, 'utf8').slice(before);
  assert.match(text, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ublk-ts: queue 0: COMMIT_IO_CMDS refused tag \d+ \(partial\); committing the \d+ after it/m);
  assertClean();
});

test('batch: a COMMIT_IO_CMDS refused as a whole (-E2BIG) loses none of its requests (injected)', () => {
  // Every 8th commit claims more elements than the queue depth: the kernel
  // commits none of them, and every one must be committed again (dropping
  // one leaves its request, and fio, waiting forever).
  const dev = faultyCommitDevice('e2big');
  try {
    fioVerify(dev, { iodepth: 32, size: '16m', bs: '4k-64k', timeoutMs: 180_000 });
    fioVerify(dev, { iodepth: 1, size: '2m', bs: '4k-4k', timeoutMs: 180_000 });
  } finally {
    delDevice(dev);
  }
  assertClean();
});

test('batch: a multishot fetch that runs out of buffers is armed again at once, no IO lost', async () => {
  // Two threads sharing one queue get one 256-byte fetch buffer each: a burst
  // of deliveries uses it up before the thread recycles it, so FETCH_IO_CMDS
  // ends (-ENOBUFS) and must be re-armed, or the tags behind it wait forever.
  const dev = await UblkDevice.create({ target: 'memory', options: { size: 64 * 2 ** 20 }, batch: true, queues: 1, threads: 2 });
  try {
    fioVerify(dev.path, { iodepth: 128, size: '16m', bs: '4k-64k' });
    const { rearms, fetchCqes } = dev.batchStats;
    assert.ok(rearms > 0, `no fetch ended and was re-armed (${fetchCqes} fetch completions)`);
  } finally {
    await dev.stop();
  }
  assertClean();
});
