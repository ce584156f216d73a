// Serving-loop and batch-engine edges that plain IO rarely reaches: polling
// before sleeping (--poll-us), and partial COMMIT_IO_CMDS results (refusals
// injected with UBLK_TS_FAULT_PARTIAL_COMMIT).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { addDevice, assertClean, delDevice, fioVerify, listDevices, vmSuite } from './helpers.js';

vmSuite();

test('polling (--poll-us 100) in both modes: fio verify at QD 1 and 64, and an idle server sleeps', async () => {
  for (const modeArgs of [[], ['--batch']]) {
    const dev = addDevice('memory', '--size', '64M', '--poll-us', '100', ...modeArgs);
    try {
      fioVerify(dev, { iodepth: 1, size: '8m' });
      fioVerify(dev, { iodepth: 64, size: '16m' });
      // Idle: the serving threads must block, not spin (poll only after busy turns).
      const pid = listDevices().find((d) => d.path === dev)!.pid!;
      const cpu = (): number => {
        const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
        return Number(f[11]) + Number(f[12]); // utime + stime, in clock ticks
      };
      await new Promise((r) => setTimeout(r, 500));
      const before = cpu();
      await new Promise((r) => setTimeout(r, 2000));
      assert.ok(cpu() - before < 50, `an idle server used ${cpu() - before} ticks in 2 s`);
    } finally {
      delDevice(dev);
    }
  }
  assertClean();
});

test('batch: partial COMMIT_IO_CMDS results are retried, no IO lost (injected refusals)', () => {
  // Every commit of 2+ elements carries a duplicate the kernel refuses; the
  // elements after it must be committed again, or fio would hang or fail.
  const log = '/run/ublk-ts/server.log';
  const before = fs.existsSync(log) ? fs.statSync(log).size : 0;
  process.env.UBLK_TS_FAULT_PARTIAL_COMMIT = '1';
  let dev: string;
  try {
    dev = addDevice('memory', '--size', '64M', '--batch');
  } finally {
    delete process.env.UBLK_TS_FAULT_PARTIAL_COMMIT;
  }
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
  assert.match(text, /COMMIT_IO_CMDS refused tag \d+ \(partial\); retrying the \d+ after it/);
  assertClean();
});
