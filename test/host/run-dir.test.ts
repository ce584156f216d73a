// The run directory's trust (src/run-dir.ts) and what relies on it: state
// files, the control sockets, and `del`'s choice of whom to signal.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

const dist = path.resolve(import.meta.dirname, '../../src');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'ublk-ts-run-dir-'));
process.env.UBLK_TS_RUN_DIR = path.join(scratch, 'ours');
const { ensureRunDir } = await import('../../src/run-dir.js');
const { listenJson, askJson } = await import('../../src/cli/control-socket.js');
const { writeState } = await import('../../src/cli/state.js');
const { deleteDevice } = await import('../../src/cli/devices.js');
const { UblkControlError } = await import('../../src/ublk/control/control.js');

test('a run directory others may enter (XDG_RUNTIME_DIR in a shared place) is refused, and nothing in it is trusted: no state read, no socket asked', () => {
  const shared = path.join(scratch, 'shared');
  fs.mkdirSync(shared, { mode: 0o777 });
  fs.chmodSync(shared, 0o777); // what another user made, say
  fs.writeFileSync(path.join(shared, '5.json'), JSON.stringify({ id: 5, pid: 1, target: '/tmp/evil.mjs', options: {} }));
  const script = `
    const { ensureRunDir } = await import(${JSON.stringify(`${dist}/run-dir.js`)});
    const { readState } = await import(${JSON.stringify(`${dist}/cli/state.js`)});
    const { askJson } = await import(${JSON.stringify(`${dist}/cli/control-socket.js`)});
    console.log(JSON.stringify(readState(5)));
    try { ensureRunDir(); console.log('made'); } catch (e) { console.log(e.message); }
    await askJson(${JSON.stringify(path.join(shared, 'daemon.sock'))}, {}, 1000, 'x').then(() => console.log('asked'), (e) => console.log(e.message));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, UBLK_TS_RUN_DIR: shared } });
  const [state, made, asked] = r.stdout.trim().split('\n');
  assert.equal(state, 'null', r.stderr);
  const refusal = `${shared} is mode 777, not a directory only its user may enter: refusing to trust what is in it: set XDG_RUNTIME_DIR to a directory of yours (systemd-logind makes /run/user/UID), or UBLK_TS_RUN_DIR`;
  assert.equal(made, refusal);
  assert.equal(asked, refusal);
});

test('a run directory of ours that others could only read (an older ublk-ts made /run/ublk-ts 0755) is closed (0700) and used', () => {
  const readable = path.join(scratch, 'readable');
  fs.mkdirSync(readable, { mode: 0o755 });
  fs.chmodSync(readable, 0o755);
  const script = `
    const { ensureRunDir } = await import(${JSON.stringify(`${dist}/run-dir.js`)});
    ensureRunDir();
    console.log('ok');`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, UBLK_TS_RUN_DIR: readable } });
  assert.equal(r.stdout.trim(), 'ok', r.stderr);
  assert.equal(fs.statSync(readable).mode & 0o777, 0o700);
});

test('a control socket runs one request per connection (bytes after its line do not run it again), and drops one that never ends', async () => {
  ensureRunDir();
  const file = path.join(process.env.UBLK_TS_RUN_DIR!, 'one.sock');
  let calls = 0;
  const srv = listenJson<{ n: number }, { n: number }>(file, async (req) => {
    calls++;
    await new Promise((r) => setTimeout(r, 100));
    return { n: req.n };
  });
  try {
    const reply = await new Promise<string>((resolve) => {
      const c = net.connect(file);
      let text = '';
      c.setEncoding('utf8').on('data', (d: string) => (text += d)).on('end', () => resolve(text));
      c.write('{"n":7}\n');
      setTimeout(() => c.write('\n\n'), 20);
    });
    assert.deepEqual(JSON.parse(reply), { ok: true, n: 7 });
    assert.equal(calls, 1);
    const closed = await new Promise<boolean>((resolve) => {
      const c = net.connect(file);
      c.on('close', () => resolve(true)).on('error', () => {});
      c.write('x'.repeat(2 << 20));
      setTimeout(() => resolve(false), 5000);
    });
    assert.ok(closed, 'a request of 2 MiB without a newline ends its connection');
    assert.deepEqual(await askJson(file, { n: 8 }, 5000, 'test'), { ok: true, n: 8 });
  } finally {
    srv.close();
  }
});

test('del signals a server only where our state names its pid: a pid the kernel reports for a device of no state of ours (any pid a server gave START_DEV before Linux 6.17, a reused one) is left alone, and the device is stopped through the kernel', async () => {
  const victim = spawn('sleep', ['30'], { stdio: 'ignore' });
  await new Promise((r) => victim.once('spawn', r));
  const ended = new Promise<string>((r) => victim.once('exit', (code, sig) => r(String(sig ?? code))));
  let stops = 0, infos = 0;
  const ctrl = {
    async getDevInfo(id: number) {
      if (infos++ === 0) return { dev_id: id, ublksrv_pid: victim.pid, flags: 0, state: 1, owner_uid: 0, owner_gid: 0 };
      throw new UblkControlError('GET_DEV_INFO2', id, -19);
    },
    async stopDev() { stops++; },
    async delDev() {},
  };
  try {
    await deleteDevice(ctrl as unknown as Parameters<typeof deleteDevice>[0], 5);
    assert.equal(stops, 1, 'stopped through the kernel');
    assert.equal(await Promise.race([ended, new Promise((r) => setTimeout(() => r('alive'), 500))]), 'alive');
    // With our state naming it, it is our server: asked to stop with SIGTERM.
    writeState({ id: 6, pid: victim.pid!, target: 'null', options: {} });
    infos = 0;
    await deleteDevice(ctrl as unknown as Parameters<typeof deleteDevice>[0], 6);
    assert.equal(await ended, 'SIGTERM');
  } finally {
    victim.kill('SIGKILL');
  }
});
