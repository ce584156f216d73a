// Stopping a device under heavy IO: `del` during IO, and the server killed
// outright. Nothing may hang and nothing may be left behind.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { addDevice, assertClean, cli, FULL_ONLY, idOf, listDevices, serverPids, sleep, vmSuite } from './helpers.js';

vmSuite();

/** fio hammering `dev` until it fails or `seconds` pass; resolves with its exit code. */
function heavyIo(dev: string, seconds: number): { exited: Promise<number | null> } {
  const fio = spawn('fio', [
    '--name=stress', `--filename=${dev}`, '--ioengine=io_uring', '--direct=1', '--iodepth=128', '--rw=randrw',
    '--bsrange=4k-256k', '--numjobs=2', '--time_based', `--runtime=${seconds}`, '--output-format=terse',
  ], { stdio: 'ignore' });
  return { exited: new Promise((r) => fio.on('exit', (code) => r(code))) };
}

async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what} did not finish in ${ms} ms`)), ms)));
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

for (const [mode, modeArgs] of [['classic', []], ['batch', ['--batch']]] as Array<[string, string[]]>) {
  describe(`${mode}: stopping under heavy IO`, () => {
    // In classic mode, `npm test`'s kernel selftest stress_01 deletes under IO too: batch here, classic in the full suite.
    test('del while fio runs at QD 128 on 2 queues', { skip: mode === 'classic' && FULL_ONLY }, async () => {
      const dev = addDevice('memory', '--size', '256M', '--queues', '2', ...modeArgs);
      const io = heavyIo(dev, 120);
      await sleep(3000);
      const del = cli('del', String(idOf(dev)));
      assert.equal(del.code, 0, del.stderr);
      // fio sees IO errors once the disk is gone, and must not hang.
      const code = await within(io.exited, 60_000, 'fio after del');
      assert.notEqual(code, null);
      assertClean();
    });

    test('server killed (SIGKILL) while fio runs: IO fails, del cleans up', async () => {
      const dev = addDevice('memory', '--size', '256M', '--queues', '2', ...modeArgs);
      const pid = listDevices()[0]!.pid!;
      const io = heavyIo(dev, 120);
      await sleep(3000);
      process.kill(pid, 'SIGKILL');
      const t0 = Date.now();
      // In-flight and new IO fail at once: the driver aborts the requests of a server that is gone.
      await within(io.exited, 5_000, 'fio after the server was killed');
      console.log(`# fio ended ${Date.now() - t0} ms after the kill`);
      for (let i = 0; i < 100 && serverPids().includes(pid); i++) await sleep(50);
      assert.ok(!serverPids().includes(pid), 'the server is gone');
      // Without user recovery the kernel stops the device when its server dies;
      // the dead device stays listed (server pid gone) until it is deleted.
      const listed = listDevices();
      assert.equal(listed.length, 1);
      assert.equal(listed[0]!.state, 'dead');
      // A state file the dead server left, even a corrupt one, breaks neither list nor del.
      fs.writeFileSync(`/run/ublk-ts/${idOf(dev)}.json`, '{"id": 0, "pid": ');
      assert.equal(listDevices()[0]!.target, 'unknown');
      const del = cli('del', String(idOf(dev)));
      assert.equal(del.code, 0, del.stderr);
      assertClean();
    });
  });
}
