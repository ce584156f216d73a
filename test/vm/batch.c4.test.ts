// Batch mode decouples serving threads from queues: any number of threads
// for any number of queues. Runs in a 4-vCPU VM so 4-queue layouts exist.
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

test('--threads without --batch is refused', () => {
  const r = cli('add', 'null', '--size', '1M', '--threads', '2');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--threads only applies with --batch/);
  assertClean();
});
