// The fault-inject target's logic, without a device: a stand-in for the
// worker's `ctx.io` and requests, the real inner targets (null, loop on a file).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import faultInject from '../../src/targets/fault-inject.js';
import { PENDING, TargetOptionError, checkTargetOptions, type IoResult, type Target, type TargetIo } from '../../src/ublk/target.js';
import type { UblkRequest } from '../../src/ublk/worker/request.js';
import { UBLK_IO_OP_READ } from '../../src/ublk/abi/uapi.js';

const { ENOSPC, EIO } = os.constants.errno;

function fakeIo(): TargetIo & { completed: Array<[number, number]> } {
  const completed: Array<[number, number]> = [];
  return {
    completed,
    complete: (req: UblkRequest, result: number) => void completed.push([req.tag, result]),
  } as unknown as TargetIo & { completed: Array<[number, number]> };
}

const req = (tag: number, length = 4096) => ({ tag, queue: 0, op: UBLK_IO_OP_READ, length, offset: 0 }) as unknown as UblkRequest;

async function open(given: Record<string, unknown>): Promise<{ t: Target; io: ReturnType<typeof fakeIo> }> {
  const options = checkTargetOptions(faultInject, given, 'cli');
  const setup = await faultInject.setup(options as never);
  const io = fakeIo();
  const t = await faultInject.open({ devId: 0, queueId: 0, depth: 4, maxIoBytes: 1 << 20, options: options as never, shared: setup.shared!, io });
  return { t, io };
}

test('fault-inject: no faults passes the inner target\'s results through, with its capabilities', async () => {
  const { t } = await open({ size: 1 << 20 });
  assert.equal(t.read(req(0, 8192)), 8192);
  assert.equal(t.flush!(req(1)), 0);
  const setup = await faultInject.setup(checkTargetOptions(faultInject, { size: 1 << 20 }, 'cli') as never);
  assert.deepEqual(setup.caps, { flush: true, discard: true, writeZeroes: true });
  assert.equal(setup.recoverable, true, 'null is recoverable, so null with faults is');
});

test('fault-inject: --error-rate 100 fails every request with the chosen errno; 50 about half', async () => {
  const { t } = await open({ size: 1 << 20, errorRate: 100, errno: 'ENOSPC' });
  for (let i = 0; i < 20; i++) assert.equal(t.write(req(i)), -ENOSPC);
  const byNumber = await open({ size: 1 << 20, errorRate: 100, errno: String(EIO) });
  assert.equal(byNumber.t.read(req(0)), -EIO);
  const half = await open({ size: 1 << 20, errorRate: 50 });
  const failed = Array.from({ length: 400 }, (_, i) => half.t.read(req(i))).filter((r) => r === -EIO).length;
  assert.ok(failed > 100 && failed < 300, `about half of 400 requests should fail, ${failed} did`);
});

test('fault-inject: --delay-us completes later with the inner result, through ctx.io.complete', async () => {
  const { t, io } = await open({ size: 1 << 20, delayUs: 20_000 });
  const started = performance.now();
  assert.equal(t.read(req(3, 4096)), PENDING);
  assert.deepEqual(io.completed, []);
  while (io.completed.length === 0) await new Promise((r) => setTimeout(r, 2));
  assert.ok(performance.now() - started >= 19, 'completed before the delay');
  assert.deepEqual(io.completed, [[3, 4096]]);
});

test('fault-inject: an inner target that throws after a delay fails the request with EIO', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fi-'));
  const mod = path.join(dir, 'throws.mjs');
  fs.writeFileSync(mod, `export default { name: 'throws', setup: () => ({ size: 4096 }),
    open: () => ({ read() { throw new Error('boom'); }, write: () => 4096 }) };`);
  try {
    const { t, io } = await open({ inner: mod, delayUs: 1000 });
    const err = console.error;
    console.error = () => {};
    try {
      assert.equal(t.read(req(1)) as IoResult, PENDING);
      while (io.completed.length === 0) await new Promise((r) => setTimeout(r, 2));
    } finally {
      console.error = err;
    }
    assert.deepEqual(io.completed, [[1, -EIO]]);
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
});

test('fault-inject: bad options are refused with one line naming them', async () => {
  await assert.rejects(open({ size: 1 << 20, errno: 'EFOO' }), (e: Error) => e instanceof TargetOptionError && /--errno EFOO is not an errno/.test(e.message));
  await assert.rejects(open({ size: 1 << 20, file: '/x' }), /--file is not an option of the null target/);
  await assert.rejects(open({ inner: 'loop' }), /--file/);
  await assert.rejects(open({ inner: 'fault-inject', size: 4096 }), /cannot be stacked/);
  await assert.rejects(open({ inner: 'nosuch' }), /unknown target 'nosuch'/);
});

test('fault-inject: --die-after N kills the server process at its Nth request', () => {
  const url = new URL('../../src/targets/fault-inject.js', import.meta.url).href;
  const script = `
    const { default: fi } = await import(${JSON.stringify(url)});
    const options = { inner: 'null', size: 4096, delayUs: 0, delayRandom: false, errorRate: 0, errno: 'EIO', dieAfter: 3, dieDuringFetch: false };
    const setup = await fi.setup(options);
    const t = await fi.open({ devId: 0, queueId: 0, depth: 1, maxIoBytes: 4096, options, shared: setup.shared, io: {} });
    for (let i = 1; i <= 5; i++) { console.log('request ' + i); t.read({ length: 4096 }); }`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.signal, 'SIGKILL');
  assert.deepEqual(r.stdout.trim().split('\n'), ['request 1', 'request 2', 'request 3']);
});
