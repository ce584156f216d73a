// The command line as a user meets it on the real driver: help and version,
// the short options of ublksrv/kublk, `list ID` in human units, live numbers
// from `stats` while fio runs, and the device's own timestamped log.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { addDevice, assertClean, CLI, cli, idOf, run, sh, vmSuite } from './helpers.js';

vmSuite();

interface StatsReport {
  id: number; target: string; cpuPercent: number;
  totals: { reads: number; writes: number; errors: number; inFlight: number };
  rates: { iops: number; readIops: number; writeIops: number; readBytesPerSec: number };
  queues: Array<{ queue: number; rates: { iops: number } }>;
}

test('short options, list ID, stats under fio, per-device log, del -n', async () => {
  for (const cmd of ['add', 'list', 'stats', 'del', 'features']) {
    const h = cli(cmd, '--help');
    assert.equal(h.code, 0, `${cmd} --help: ${h.stderr}`);
    assert.match(h.stdout, new RegExp(`^usage: ublk-ts ${cmd} `));
  }
  assert.match(cli('--version').stdout, /^ublk-ts \d+\.\d+\.\d+\n$/);

  const dev = addDevice('-t', 'memory', '-s', '64M', '-q', '2', '-d', '32', '-n', '5');
  assert.equal(dev, '/dev/ublkb5');
  const id = String(idOf(dev));
  try {
    const l = cli('list', id);
    assert.equal(l.code, 0, l.stderr);
    assert.match(l.stdout, /^\/dev\/ublkb5: id 5, live, target memory, 64 MiB, 2 queue\(s\) x 32, kernel copy, pid \d+$/m);
    const j = JSON.parse(cli('list', '-n', id, '--json').stdout) as { size: number; queues: number };
    assert.equal(j.size, 64 * 2 ** 20, '--json sizes are bytes');
    assert.equal(cli('list', '4242').code, 2, 'list of a device that does not exist');

    // Random reads on both queues for a few seconds, measured meanwhile.
    const fio = spawn('fio', ['--name=load', `--filename=${dev}`, '--ioengine=io_uring', '--direct=1', '--rw=randread', '--bs=4k',
      '--iodepth=4', '--numjobs=2', '--time_based', '--runtime=20', '--size=64m'], { stdio: 'ignore' });
    const exited = new Promise((r) => fio.once('exit', r));
    try {
      await new Promise((r) => setTimeout(r, 3000));
      const s = cli('stats', id, '--json', '-i', '2');
      assert.equal(s.code, 0, s.stderr);
      const r = JSON.parse(s.stdout) as StatsReport;
      assert.equal(r.id, 5);
      assert.equal(r.target, 'memory');
      assert.ok(r.rates.readIops > 0 && r.rates.writeIops === 0, `reads only: ${JSON.stringify(r.rates)}`);
      // 4k reads (the counters are read while the server updates them: not to the byte).
      assert.ok(Math.abs(r.rates.readBytesPerSec / r.rates.readIops - 4096) < 41, `4k reads: ${JSON.stringify(r.rates)}`);
      assert.ok(r.totals.reads > 0 && r.totals.errors === 0);
      assert.ok(r.totals.inFlight >= 0 && r.totals.inFlight <= 64);
      assert.ok(r.cpuPercent > 0, 'a serving server uses CPU');
      assert.deepEqual(r.queues.map((q) => q.queue), [0, 1]);
      const text = cli('stats', id);
      assert.match(text.stdout, /^\/dev\/ublkb5 \(memory, pid \d+, server CPU \d+%\): \d+ IOPS \(read \d+, write 0\)/);
      assert.match(text.stdout, /^ {2}queue 1: \d+ IOPS/m);
    } finally {
      fio.kill('SIGKILL');
      await exited;
    }
  } finally {
    const d = cli('del', '-n', id);
    assert.equal(d.code, 0, d.stderr);
  }
  const log = fs.readFileSync(`/run/ublk-ts/${id}.log`, 'utf8');
  assert.match(log, /^\d{4}-\d\d-\d\dT[\d:.]+Z ublk-ts\[\d+\]: \/dev\/ublkb5 live \(2 queue\(s\), depth 32\)$/m);
  assertClean();
});

test('no driver, or not root: one line with the fix, exit 1, nothing created', () => {
  // Not root: /dev/ublk-control is root's.
  const asNobody = run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, CLI, 'add', 'null', '-s', '1M']);
  assert.equal(asNobody.code, 1, asNobody.stderr);
  assert.match(asNobody.stderr, /^ublk-ts: no permission to open \/dev\/ublk-control: run as root/);
  assert.equal(asNobody.stderr.trim().split('\n').length, 1);
  // No driver: unloaded for the moment.
  sh('rmmod', 'ublk_drv');
  try {
    for (const args of [['add', 'null', '-s', '1M'], ['list']]) {
      const r = cli(...args);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stderr, 'ublk-ts: /dev/ublk-control not found: load the ublk driver with `modprobe ublk_drv`\n');
    }
  } finally {
    sh('modprobe', 'ublk_drv');
  }
  assertClean();
});
