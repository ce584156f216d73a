// Serving threads decoupled from queues: any number of threads for any number
// of queues, in batch mode and (per-IO daemons) in classic mode. Runs in a
// 4-vCPU VM so 4-queue layouts exist.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addDevice, assertClean, cli, delDevice, fioVerify, listDevices, vmSuite } from './helpers.js';

vmSuite({ cpus: 4 });

for (const [threads, queues] of [[1, 4], [4, 1], [2, 2]] as const) {
  test(`${threads} thread(s) serving ${queues} queue(s): fio verify from 4 jobs`, () => {
    const dev = addDevice('memory', '--size', '256M', '--batch', '--queues', String(queues), '--threads', String(threads), '--depth', '64');
    try {
      const d = listDevices()[0]!;
      assert.equal(d.queues, queues);
      assert.ok(d.flags.includes('BATCH_IO'));
      fioVerify(dev, { iodepth: 32, size: '24m', extra: ['--numjobs=4', '--offset_increment=64m'] });
    } finally {
      delDevice(dev);
    }
    assertClean();
  });
}

test('classic mode: 6 threads serving the tags of 4 queues (UBLK_F_PER_IO_DAEMON), fio verify from 4 jobs', () => {
  const dev = addDevice('memory', '--size', '256M', '--queues', '4', '--threads', '6', '--depth', '64');
  try {
    const d = listDevices()[0]!;
    assert.equal(d.queues, 4);
    assert.ok(!d.flags.includes('BATCH_IO'));
    fioVerify(dev, { iodepth: 32, size: '24m', extra: ['--numjobs=4', '--offset_increment=64m'] });
    const r = cli('stats', String(d.id), '--json');
    const queues = (JSON.parse(r.stdout) as { queues: Array<{ totals: { writes: number } }> }).queues;
    assert.equal(queues.length, 4);
    assert.ok(queues.every((q) => q.totals.writes > 0), 'every queue served');
  } finally {
    delDevice(dev);
  }
  assertClean();
});
