// A faulty target must never wedge a device: a bad result fails that request
// with EIO and the device keeps serving; a target whose serving thread dies
// fails the device cleanly (IO gets EIO, del removes it, nothing hangs); a
// target that completes later, from a timer, is served. Classic and batch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { addDevice, assertClean, cli, delDevice, fioVerify, FULL, FULL_ONLY, HANG_TARGET, hangingAdd, hangingRecover, killServer, waitForState, writeHangTarget, idOf, listDevices, ROOT, run, serverPids, sleep, vmSuite } from './helpers.js';
import { processHolds } from '../../src/process-alive.js';
import { waitFor } from '../../src/cli/devices.js';

vmSuite();

const MODULE = '/tmp/faulty-target.mjs';
// Reads and writes from sector 64 on behave as --fault says; reads below it
// (the kernel's partition scan) are served, so that `add` never depends on the fault.
// BACKING: the file of the slow-disk fault.
const BACKING = '/tmp/faulty-backing';
const SOURCE = `
import fs from 'node:fs';
import { PENDING } from ${JSON.stringify(path.join(ROOT, 'dist/src/index.js'))};
let backing = -1, disk = Promise.resolve();
const FAULTS = {
  undefined: () => undefined,
  string: (req) => String(req.length),
  'zero-write': (req, write) => (write ? 0 : req.length),
  misaligned: (req) => req.length - 100,
  'too-long': (req) => req.length + 4096,
  // Keeps the data (in this thread: one queue) and completes each request from a timer.
  timer: (req, write, io, store) => {
    setTimeout(() => {
      if (write) store.set(req.buffer, req.offset);
      else req.buffer.set(store.subarray(req.offset, req.offset + req.length));
      io.complete(req, req.length);
    }, 1);
    return PENDING;
  },
  // A slow disk: the requests go to BACKING one after another, at 512 KiB/s.
  slow: (req, write, io) => {
    if (backing < 0) backing = fs.openSync(${JSON.stringify(BACKING)}, 'r+');
    disk = disk.then(() => new Promise((r) => setTimeout(r, req.length / 512))).then(() => {
      if (write) fs.writeSync(backing, req.buffer, 0, req.length, req.offset);
      else fs.readSync(backing, req.buffer, 0, req.length, req.offset);
      io.complete(req, req.length);
    });
    return PENDING;
  },
  // A wedged target: the request stays its own for good.
  never: () => PENDING,
  'throw-later': (req) => new Promise((resolve) => setTimeout(() => { resolve(req.length); throw new Error('a bug in a timer'); }, 1)),
};
export default {
  name: 'faulty',
  options: [
    { key: 'size', type: 'size', required: true, help: 'size' },
    { key: 'fault', type: 'enum', choices: Object.keys(FAULTS), required: true, help: 'what goes wrong' },
    { key: 'slowOpen', type: 'int', default: -1, min: -1, help: 'queue whose open() waits 3 s; every other queue\\'s open() throws' },
    { key: 'linger', type: 'bool', help: 'setup() starts an interval timer it never stops, as a careless target might' },
  ],
  setup: (o) => {
    if (o.linger) setInterval(() => {}, 60_000);
    return { size: o.size, shared: { fault: o.fault, slowOpen: o.slowOpen, size: o.size } };
  },
  async open(ctx) {
    const { fault, slowOpen } = ctx.shared;
    if (slowOpen >= 0) {
      if (ctx.queueId !== slowOpen) throw new Error('open failed on purpose');
      await new Promise((r) => setTimeout(r, 3000));
    }
    const f = FAULTS[fault];
    const store = new Uint8Array(ctx.shared.size);
    return {
      read: (req) => (req.sector < 64 ? req.length : f(req, false, ctx.io, store)),
      write: (req) => f(req, true, ctx.io, store),
    };
  },
};
`;

const MODES: Array<[string, string[]]> = [['classic', []], ['batch', ['--batch']]];

function dd(dev: string, write: boolean, timeoutMs = 60_000): { code: number | null; stderr: string } {
  const args = write
    ? ['if=/dev/zero', `of=${dev}`, 'bs=4k', 'seek=8', 'count=1', 'oflag=direct', 'status=none']
    : [`if=${dev}`, 'of=/dev/null', 'bs=4k', 'skip=8', 'count=1', 'iflag=direct', 'status=none'];
  return run('dd', args, { timeout: timeoutMs });
}

function withModule(): void {
  fs.writeFileSync(MODULE, SOURCE);
}

for (const [mode, args] of MODES) {
  // A target's results are checked in the dispatcher, which both engines share: batch in the full suite.
  test(`${mode}: bad results fail the request with EIO, and the device keeps serving`, { skip: mode === 'batch' && FULL_ONLY }, () => {
    withModule();
    // READ-side faults (the write side of each is a valid count or the fault itself).
    // npm test: a result of the wrong type and a WRITE that moved nothing; the other three in the full suite.
    for (const fault of FULL ? ['undefined', 'string', 'misaligned', 'too-long', 'zero-write'] : ['string', 'zero-write']) {
      const dev = addDevice(MODULE, '--size', '16M', '--fault', fault, ...args);
      try {
        const read = dd(dev, false);
        const write = dd(dev, true);
        if (fault === 'zero-write') {
          assert.equal(read.code, 0, `${fault}: a good read works: ${read.stderr}`);
          assert.notEqual(write.code, 0, `${fault}: a WRITE that returned 0 fails`);
          assert.match(write.stderr, /Input\/output error/, fault);
        } else {
          assert.notEqual(read.code, 0, `${fault}: the read fails`);
          assert.match(read.stderr, /Input\/output error/, fault);
        }
        // Still serving: sector 0 reads are good.
        const again = run('dd', [`if=${dev}`, 'of=/dev/null', 'bs=512', 'count=1', 'iflag=direct', 'status=none']);
        assert.equal(again.code, 0, `${fault}: the device still serves: ${again.stderr}`);
      } finally {
        delDevice(dev);
      }
    }
    assertClean();
  });

  test(`${mode}: a target that completes from a timer (PENDING, then io.complete) is served`, { skip: mode === 'batch' && FULL_ONLY }, () => {
    withModule();
    const dev = addDevice(MODULE, '--size', '16M', '--fault', 'timer', ...args);
    try {
      const t0 = Date.now();
      assert.equal(dd(dev, true, 60_000).code, 0, 'the write completes');
      assert.equal(dd(dev, false, 60_000).code, 0, 'the read completes');
      assert.ok(Date.now() - t0 < 50_000);
      fioVerify(dev, { iodepth: 16, size: '4m', bs: '4k-4k', extra: ['--offset=32k'], timeoutMs: 300_000 });
    } finally {
      delDevice(dev);
    }
    assertClean();
  });

  test(`${mode}: a serving thread that dies fails the device: IO fails, the device is removed, nothing hangs`, async () => {
    withModule();
    const dev = addDevice(MODULE, '--size', '16M', '--fault', 'throw-later', ...args);
    const id = idOf(dev);
    // The first read's timer throws in the serving thread, which dies: that read fails too.
    assert.notEqual(dd(dev, false, 60_000).code, 0, 'the read whose thread died fails');
    const t0 = Date.now();
    const after = dd(dev, false, 30_000);
    assert.notEqual(after.code, 0, 'IO after the thread died fails');
    assert.ok(Date.now() - t0 < 20_000, `it fails within seconds, not by a timeout (${Date.now() - t0} ms)`);
    // The server stops and removes the device by itself.
    for (let i = 0; i < 100 && fs.existsSync(`/sys/class/ublk-char/ublkc${id}`); i++) await sleep(200);
    assert.ok(!fs.existsSync(`/sys/class/ublk-char/ublkc${id}`), 'the device is gone');
    for (let i = 0; i < 50 && serverPids().length; i++) await sleep(200);
    assert.match(fs.readFileSync(`/run/ublk-ts/${id}.log`, 'utf8'), /a serving thread failed \(a bug in a timer\); stopping the device/);
    assertClean();
  });

  test(`${mode}: open() failing in one queue while another is still starting: add fails, nothing left`, () => {
    withModule();
    const t0 = Date.now();
    const r = cli('add', MODULE, '--size', '16M', '--fault', 'timer', '--slow-open', '1', '--queues', '2', ...args);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /open failed on purpose/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.ok(Date.now() - t0 < 60_000, 'add returns');
    assertClean();
  });
}

test('a failed add whose target left a timer running in the server: add fails, and no server process is left when it returns', () => {
  withModule();
  // One queue, and --slow-open names another: its open() throws.
  const r = cli('add', MODULE, '--size', '16M', '--fault', 'timer', '--slow-open', '1', '--linger');
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /open failed on purpose/);
  assertClean();
});

test('a target that never completes a request: del still removes the device (its server fails the request once nothing moved for 10 s of the stop), nothing hangs', async () => {
  withModule();
  const dev = addDevice(MODULE, '--size', '16M', '--fault', 'never');
  const id = idOf(dev);
  const reader = spawn('dd', [`if=${dev}`, 'of=/dev/null', 'bs=4k', 'skip=8', 'count=1', 'iflag=direct', 'status=none'], { stdio: 'ignore' });
  const readerDone = new Promise<number | null>((resolve) => reader.on('exit', (code) => resolve(code)));
  try {
    const inflight = `/sys/block/ublkb${id}/inflight`;
    for (let i = 0; i < 100 && !/^\s*[1-9]/.test(fs.readFileSync(inflight, 'utf8')); i++) await sleep(100);
    assert.match(fs.readFileSync(inflight, 'utf8'), /^\s*1\s/, 'the read is with the target');
    // STOP_DEV waits for the read, which the server never completes: del must not wait with it.
    const r = cli('del', String(id));
    assert.equal(r.code, 0, r.stderr);
    assert.notEqual(await readerDone, 0, 'the read fails');
    assert.match(fs.readFileSync(`/run/ublk-ts/${id}.log`, 'utf8'), /no request moved for 10 s of STOP_DEV: failing the ones still held/);
  } finally {
    reader.kill('SIGKILL');
  }
  assertClean();
});

test('del of a device with much dirty data on a slow target waits for all of it to be written back, however long the stop takes', async () => {
  withModule();
  fs.writeFileSync(BACKING, '');
  fs.truncateSync(BACKING, 64 << 20);
  const data = '/tmp/faulty-data';
  run('dd', ['if=/dev/urandom', `of=${data}`, 'bs=1M', 'count=7', 'status=none']);
  const dev = addDevice(MODULE, '--size', '64M', '--fault', 'slow');
  // A second opener keeps the page cache from being written back at dd's close: the dirty data is
  // left for the stop, which writes it back through the target: 7 MiB at 512 KiB/s, 14 s.
  // It lets go once the stop has removed the disk (its sysfs entry goes after the writeback), as
  // DEL_DEV waits for every opener.
  const id = idOf(dev);
  const holder = spawn('sh', ['-c', `exec 3<${dev}; while [ -e /sys/block/ublkb${id} ]; do sleep 0.1; done`], { stdio: 'ignore' });
  for (let i = 0; i < 100 && !processHolds(holder.pid!, dev); i++) await sleep(50);
  assert.ok(processHolds(holder.pid!, dev), 'the second opener holds the device');
  try {
    const w = run('dd', [`if=${data}`, `of=${dev}`, 'bs=1M', 'seek=1', 'status=none']);
    assert.equal(w.code, 0, w.stderr);
    const t0 = Date.now();
    const r = cli('del', String(id));
    assert.equal(r.code, 0, r.stderr);
    assert.ok(Date.now() - t0 > 10_000, `the stop wrote the dirty data back (${Date.now() - t0} ms): the test needs a stop longer than the server's 10 s without progress`);
  } finally {
    holder.kill('SIGKILL');
  }
  const cmp = run('cmp', ['-n', String(7 << 20), '-i', `0:${1 << 20}`, data, BACKING]);
  assert.equal(cmp.code, 0, `every dirty byte reached the target: ${cmp.stdout}${cmp.stderr}`);
  assertClean();
  fs.rmSync(BACKING);
  fs.rmSync(data);
});

test("a target whose open() never settles: `list` shows its device starting, `del` removes it (with or without a supervisor) and the add fails saying so; Ctrl-C on an add removes its device too", async () => {
  const deleted = await hangingAdd();
  const listed = listDevices().find((d) => d.id === deleted.id);
  assert.equal(listed?.state, 'starting', JSON.stringify(listed));
  assert.equal(listed?.target, HANG_TARGET);
  const r = cli('del', String(deleted.id));
  assert.equal(r.code, 0, r.stderr);
  const added = await deleted.ended;
  assert.notEqual(added.code, 0);
  assert.match(added.stderr, /stopped by SIGTERM before the device was live/);
  assert.equal(added.stderr.trim().split('\n').length, 1, added.stderr);

  // With recovery a supervisor runs between add and the server: del stops it, and it the server.
  const supervised = await hangingAdd('--recovery', 'requeue');
  assert.equal(cli('del', String(supervised.id)).code, 0);
  assert.match((await supervised.ended).stderr, /stopped by SIGTERM before the device was live/);

  const interrupted = await hangingAdd();
  interrupted.proc.kill('SIGINT');
  await interrupted.ended;
  assert.ok(await waitFor(() => !fs.existsSync(`/sys/class/ublk-char/ublkc${interrupted.id}`) && serverPids().length === 0, 30_000),
    'the device of the interrupted add is removed, and its server gone');
  assertClean();
});

test('a target whose close() never settles: del still removes the device, within about 10 s', () => {
  writeHangTarget();
  const dev = addDevice(HANG_TARGET, '--size', '16M', '--hang', 'close');
  const t0 = Date.now();
  delDevice(dev);
  assert.ok(Date.now() - t0 < 30_000, `del took ${Date.now() - t0} ms`);
  assert.match(fs.readFileSync(`/run/ublk-ts/${idOf(dev)}.log`, 'utf8'), /close\(\) did not finish within 10 s/);
  assertClean();
});

test('a recovery whose target\'s open never settles: del removes the device, and the recover fails saying so', async () => {
  writeHangTarget();
  const dev = addDevice(HANG_TARGET, '--size', '16M', '--hang', 'close', '--recovery', 'requeue', '--no-supervisor');
  const id = idOf(dev);
  killServer(id, false);
  await waitForState(id, 'quiesced');
  const recovering = await hangingRecover(id);
  assert.equal(listDevices().find((d) => d.id === id)?.state, 'starting');
  const r = cli('del', String(id));
  assert.equal(r.code, 0, r.stderr);
  assert.match((await recovering.ended).stderr, /stopped by SIGTERM before the device was live/);
  assertClean();
});
