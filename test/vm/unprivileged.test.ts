// Unprivileged devices (UBLK_F_UNPRIVILEGED_DEV): two users who are not
// root each create and serve their own devices, with the set-up the README
// documents (/dev/ublk-control open to them, a run directory of their own,
// and the udev rule that gives a device's nodes to its owner, which a small
// process plays here: the VM has no udev). Neither can use, delete or
// recover the other's device, nor reach the other's daemon.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, ROOT, assertClean, fioVerify, idOf, listDevices, run, sleep, vmSuite, type Run } from './helpers.js';

vmSuite();

const USERS = { a: 1001, b: 1002 } as const;
type User = keyof typeof USERS;
const runDir = (u: User): string => `/tmp/run-${USERS[u]}`;

/** A command as user `u` (no groups, their own run directory). */
function as(u: User, cmd: string, args: string[], timeout = 120_000): Run {
  const uid = String(USERS[u]);
  return run('setpriv', ['--reuid', uid, '--regid', uid, '--clear-groups', '--', 'env', 'HOME=/tmp', `XDG_RUNTIME_DIR=${runDir(u)}`,
    cmd, ...args], { timeout });
}
const ublkAs = (u: User, ...args: string[]): Run => as(u, process.execPath, [CLI, ...args]);

/** What udev would do with udev/99-ublk-ts.rules: each new node goes to its device's owner (`ublk-ts __chown`). */
const UDEV = `
import fs from 'node:fs';
import { chownDeviceNode } from ${JSON.stringify(path.join(ROOT, 'dist/src/cli/udev.js'))};
const done = new Set();
for (;;) {
  for (const n of fs.readdirSync('/dev')) {
    if (!/^ublk[bc]\\d+$/.test(n)) continue;
    let st;
    try { st = fs.statSync('/dev/' + n); } catch { continue; }
    const key = n + ':' + st.ino;
    if (done.has(key)) continue;
    try { await chownDeviceNode(n); done.add(key); } catch { /* not ready, or gone */ }
  }
  await new Promise((r) => setTimeout(r, 100));
}
`;

let udev: ChildProcess | null = null;
let controlMode = 0;

function setUp(): void {
  controlMode ||= fs.statSync('/dev/ublk-control').mode & 0o777;
  fs.chmodSync('/dev/ublk-control', 0o666);
  for (const u of Object.keys(USERS) as User[]) {
    fs.rmSync(runDir(u), { recursive: true, force: true });
    fs.mkdirSync(runDir(u), { mode: 0o700 });
    fs.chownSync(runDir(u), USERS[u], USERS[u]);
  }
  if (udev) return;
  fs.writeFileSync('/tmp/udev-emulator.mjs', UDEV);
  udev = spawn(process.execPath, ['/tmp/udev-emulator.mjs'], { stdio: 'ignore' });
}

after(() => {
  udev?.kill('SIGKILL');
  if (controlMode) fs.chmodSync('/dev/ublk-control', controlMode);
});

function addAs(u: User, ...args: string[]): string {
  const r = ublkAs(u, 'add', ...args);
  assert.equal(r.code, 0, `add as ${u}: ${r.stderr}`);
  return r.stdout.trim().split('\n').pop()!;
}

async function ownedBy(dev: string, uid: number): Promise<void> {
  for (let i = 0; i < 100 && (!fs.existsSync(dev) || fs.statSync(dev).uid !== uid); i++) await sleep(100);
  assert.equal(fs.statSync(dev).uid, uid, `${dev} belongs to ${uid}`);
  // Not to their group (here a group of their own, elsewhere often one shared by many users).
  assert.notEqual(fs.statSync(dev).gid, uid, `${dev} stays in the group udev gave it`);
}

test('two users, their own devices: each serves and uses theirs, neither can touch the other\'s', async () => {
  setUp();
  const a = addAs('a', 'memory', '-s', '32M');
  const b = addAs('b', 'memory', '-s', '16M');
  await ownedBy(a, USERS.a);
  await ownedBy(b, USERS.b);
  const listed = listDevices();
  assert.ok(listed.find((l) => l.path === a)!.flags.includes('UNPRIVILEGED_DEV'), 'root sees an unprivileged device');

  // Each user's IO on their own device, verified.
  const fio = (u: User, dev: string): Run => as(u, 'fio', ['--name=v', `--filename=${dev}`, '--ioengine=io_uring', '--direct=1',
    '--rw=randwrite', '--bsrange=4k-128k', '--iodepth=16', '--size=8m', '--verify=crc32c', '--verify_fatal=1', '--do_verify=1', '--verify_state_save=0',
    '--output-format=terse'], 300_000);
  assert.equal(fio('a', a).code, 0, 'a verifies its device');
  assert.equal(fio('b', b).code, 0, 'b verifies its device');

  // b cannot read a's device, delete it, recover it, nor see it.
  const read = as('b', 'dd', [`if=${a}`, 'of=/dev/null', 'bs=4k', 'count=1', 'iflag=direct']);
  assert.notEqual(read.code, 0);
  assert.match(read.stderr, /Permission denied/);
  const del = ublkAs('b', 'del', String(idOf(a)));
  assert.equal(del.code, 1, del.stderr);
  assert.match(del.stderr, /^ublk-ts: device \d+ is another user's/);
  assert.ok(fs.existsSync(a), 'a\'s device is still there');
  const rec = ublkAs('b', 'recover', String(idOf(a)));
  assert.notEqual(rec.code, 0, 'b cannot recover a\'s device');
  const seen = JSON.parse(ublkAs('b', 'list', '--json').stdout) as Array<{ path: string }>;
  assert.deepEqual(seen.map((d) => d.path), [b], 'b lists only its own device');

  // What a user who is not root cannot ask for is refused, with the reason, before anything is made.
  const zero = ublkAs('a', 'add', 'null', '-s', '1G', '--copy', 'user');
  assert.equal(zero.code, 2, zero.stderr);
  assert.match(zero.stderr, /^ublk-ts: --copy user needs root/);
  assert.equal(listDevices().length, 2);

  // Each deletes their own: --all is theirs only.
  assert.equal(ublkAs('b', 'del', '--all').code, 0);
  assert.ok(fs.existsSync(a) && !fs.existsSync(b), 'b\'s del --all deleted b\'s device only');
  assert.equal(ublkAs('a', 'del', String(idOf(a))).code, 0);
  assertClean();
});

test('a user\'s daemon serves that user\'s devices; the other user cannot reach it', async () => {
  setUp();
  const log = fs.openSync('/tmp/daemon-a.log', 'w');
  const uid = String(USERS.a);
  const daemon = spawn('setpriv', ['--reuid', uid, '--regid', uid, '--clear-groups', '--', 'env', 'HOME=/tmp', `XDG_RUNTIME_DIR=${runDir('a')}`,
    process.execPath, CLI, 'daemon', '--threads', '1'], { stdio: ['ignore', 'ignore', log] });
  fs.closeSync(log);
  const exited = new Promise<void>((r) => daemon.once('exit', () => r()));
  try {
    const sock = path.join(runDir('a'), 'ublk-ts', 'daemon.sock');
    for (let i = 0; i < 300 && !fs.existsSync(sock); i++) await sleep(100);
    const dev = addAs('a', 'memory', '-s', '32M');
    await ownedBy(dev, USERS.a);
    assert.equal(listDevices().find((l) => l.path === dev)!.pid, daemon.pid, 'a\'s add went to a\'s daemon');
    fioVerify(dev, { iodepth: 8, size: '8m' });
    // b pointed at a's run directory: no way in.
    const r = run('setpriv', ['--reuid', String(USERS.b), '--regid', String(USERS.b), '--clear-groups', '--', 'env', 'HOME=/tmp',
      `XDG_RUNTIME_DIR=${runDir('a')}`, process.execPath, CLI, 'add', 'memory', '-s', '8M']);
    assert.notEqual(r.code, 0, 'b cannot use a\'s daemon');
    assert.match(r.stderr, /EACCES|permission/i);
    assert.equal(listDevices().length, 1, 'nothing was created for b');
    assert.equal(ublkAs('a', 'del', String(idOf(dev))).code, 0);
  } finally {
    daemon.kill('SIGTERM');
    await exited;
  }
  assertClean();
});
