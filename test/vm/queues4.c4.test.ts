// Four queues on four vCPUs (this file runs in a VM started with -c 4).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addDevice, assertClean, delDevice, fioVerify, listDevices, vmSuite } from './helpers.js';

vmSuite({ cpus: 4 });

test('4 queues: every queue serves (fio verify from 4 jobs at QD 32)', () => {
  const dev = addDevice('memory', '--size', '256M', '--queues', '4', '--depth', '32');
  try {
    assert.equal(listDevices()[0]!.queues, 4);
    fioVerify(dev, { iodepth: 32, size: '32m', extra: ['--numjobs=4', '--offset_increment=64m'] });
  } finally {
    delDevice(dev);
  }
  assertClean();
});
