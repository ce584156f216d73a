// The pull-style target API (pullTarget): a target written as a loop over
// batches of requests (`for await (const batch of requests)`), completing
// each with req.complete(), in and out of order. fio verifies its data in
// classic and batch mode, on two queues; its log shows how many requests
// came per batch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { addDevice, assertClean, delDevice, fioVerify, idOf, ROOT, vmSuite } from './helpers.js';

vmSuite();

const MODULE = '/tmp/pull-memory.mjs';
// RAM shared by the serving threads (a SharedArrayBuffer made by setup);
// READs complete a turn later (setImmediate), so completions come out of order.
const SOURCE = `
import { pullTarget, uapi } from ${JSON.stringify(path.join(ROOT, 'dist/src/index.js'))};
export default {
  name: 'pull-memory',
  options: [{ key: 'size', short: 's', type: 'size', required: true, help: 'size' }],
  setup: (o) => ({ size: o.size, caps: { flush: true }, shared: { ram: new SharedArrayBuffer(o.size) } }),
  open: pullTarget(async (requests, ctx) => {
    const ram = new Uint8Array(ctx.shared.ram);
    let n = 0, batches = 0, most = 0;
    for await (const batch of requests) {
      batches++;
      n += batch.length;
      most = Math.max(most, batch.length);
      for (const req of batch) {
        if (req.op === uapi.UBLK_IO_OP_READ) {
          req.buffer.set(ram.subarray(req.offset, req.offset + req.length));
          setImmediate(() => req.complete(req.length));
        } else if (req.op === uapi.UBLK_IO_OP_WRITE) {
          ram.set(req.buffer, req.offset);
          req.complete(req.length);
        } else {
          req.complete(req.op === uapi.UBLK_IO_OP_FLUSH ? 0 : -95);
        }
      }
    }
    console.error('pull-memory queue ' + ctx.queueId + ': ' + n + ' requests in ' + batches + ' batches, at most ' + most + ' in one');
  }),
};
`;

for (const modeArgs of [[], ['--batch']]) {
  const mode = modeArgs.length ? 'batch' : 'classic';
  test(`a pull target (for await over request batches, req.complete) passes fio verify (${mode}, 2 queues)`, () => {
    fs.writeFileSync(MODULE, SOURCE);
    const dev = addDevice(MODULE, '--size', '64M', '--queues', '2', ...modeArgs);
    const id = idOf(dev);
    try {
      // Two jobs, each verifying a region of its own (in one region each would overwrite the other's blocks).
      fioVerify(dev, { iodepth: 32, size: '32m', extra: ['--numjobs=2', '--offset_increment=32m', '--fsync=64'] });
    } finally {
      delDevice(dev);
    }
    const log = fs.readFileSync(`/run/ublk-ts/${id}.log`, 'utf8');
    const lines = [...log.matchAll(/pull-memory queue \d+: (\d+) requests in (\d+) batches, at most (\d+) in one/g)];
    assert.ok(lines.length >= 1, `the target's stream ended when the device stopped:\n${log}`);
    const served = lines.reduce((a, m) => a + Number(m[1]), 0);
    assert.ok(served > 200, `requests went through the stream (${served})`);
    assert.ok(lines.some((m) => Number(m[3]) > 1), `at QD 32 some batch held more than one request:\n${log}`);
    assertClean();
  });
}
