// AsyncRing: one promise per SQE, resolved from the event loop.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native } from '../../src/native.js';
import {
  AsyncRing, prepNop, prepRead, prepUringCmd, setRwFlags, LAYOUTS, IORING_NOP_INJECT_RESULT,
} from '../../src/uring/index.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'uring-async-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const uringUrl = new URL('../../src/uring/index.js', import.meta.url).href;
const nativeUrl = new URL('../../src/native.js', import.meta.url).href;
const LEN = LAYOUTS.io_uring_sqe.fields.len[0];

function pipeFd(name: string): { fd: number; path: string } {
  const p = path.join(dir, name);
  execFileSync('mkfifo', [p]);
  return { fd: fs.openSync(p, 'r+'), path: p };
}

for (const deferTaskrun of [false, true]) {
  test(`many concurrent NOPs resolve, negative results included${deferTaskrun ? ' (DEFER_TASKRUN)' : ''}`, { timeout: 10_000 }, async () => {
    const ar = AsyncRing.create({ entries: 8, singleIssuer: deferTaskrun, deferTaskrun });
    try {
      const results = await Promise.all(Array.from({ length: 100 }, (_, i) => ar.submit((ring, s) => {
        prepNop(ring, s);
        setRwFlags(ring, s, IORING_NOP_INJECT_RESULT);
        ring.sqeU32[(s + LEN) >> 2] = -i >>> 0;
      })));
      assert.deepEqual(results.map((r) => r.res), Array.from({ length: 100 }, (_, i) => (i === 0 ? 0 : -i)));
      assert.equal(ar.inFlight, 0);
    } finally {
      ar.close();
    }
  });
}

test('a READ resolves when data arrives later; a throwing prep rejects without harm', { timeout: 10_000 }, async () => {
  const ar = AsyncRing.create({ entries: 4, sqe128: true });
  const { fd } = pipeFd('late');
  const buf = new Uint8Array(native.alloc(4096));
  try {
    await assert.rejects(ar.submit(() => {
      throw new Error('bad prep');
    }), /bad prep/);
    const pending = ar.submit((ring, s) => prepRead(ring, s, fd, native.addressOf(buf), 100, -1));
    assert.equal(ar.inFlight, 1);
    setTimeout(() => fs.writeSync(fd, 'eventually'), 20);
    const { res } = await pending;
    assert.equal(res, 10);
    assert.equal(Buffer.from(buf.subarray(0, 10)).toString(), 'eventually');
    const cmd = await ar.submit((ring, s) => prepUringCmd(ring, s, fd, 0));
    assert.equal(cmd.res, -95, 'URING_CMD on a pipe: -EOPNOTSUPP');
  } finally {
    ar.close();
    fs.closeSync(fd);
  }
});

test('close() rejects what is in flight', { timeout: 10_000 }, async () => {
  const ar = AsyncRing.create({ entries: 4 });
  const { fd } = pipeFd('never');
  const buf = new Uint8Array(16);
  const pending = ar.submit((ring, s) => prepRead(ring, s, fd, native.addressOf(buf), 16, -1));
  ar.close();
  ar.close();
  await assert.rejects(pending, /closed/);
  await assert.rejects(ar.submit((ring, s) => prepNop(ring, s)), { code: 'EBADF' });
  fs.closeSync(fd);
});

function runChild(code: string): ReturnType<typeof spawnSync> {
  return spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 20_000 });
}

test('an idle AsyncRing does not keep the process alive; one with a request in flight does', () => {
  const { path: fifo } = pipeFd('child');
  const r = runChild(`
    import { AsyncRing, prepNop, prepRead } from ${JSON.stringify(uringUrl)};
    import { native } from ${JSON.stringify(nativeUrl)};
    import * as fs from 'node:fs';
    const ar = AsyncRing.create({ entries: 4 });
    console.log('nop', (await ar.submit((r, s) => prepNop(r, s))).res);
    const fd = fs.openSync(${JSON.stringify(fifo)}, 'r+');
    const buf = new Uint8Array(native.alloc(64));
    // Only the in-flight READ can keep the loop alive for this unref'd timer.
    setTimeout(() => fs.writeSync(fd, 'hi'), 100).unref();
    ar.submit((r, s) => prepRead(r, s, fd, native.addressOf(buf), 64, -1)).then(({ res }) => console.log('read', res));
  `);
  assert.equal(r.error, undefined, 'the child exited by itself');
  assert.equal(r.status, 0, String(r.stderr));
  assert.deepEqual(String(r.stdout).trim().split('\n'), ['nop 0', 'read 2']);
});
