// Daemon hygiene: what a detached server holds and survives. Its own mount
// namespace (it never pins a file system on its own device), no inherited
// descriptors, the root directory, SIGHUP; several `add`s at once; an id in
// use refused without touching the live device; a server that dies while
// starting leaves nothing behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { addDevice, assertClean, cli, CLI, delDevice, FULL_ONLY, listDevices, run, serverPids, sh, vmSuite } from './helpers.js';

vmSuite();

const fdTargets = (pid: number): string[] =>
  fs.readdirSync(`/proc/${pid}/fd`).map((fd) => { try { return fs.readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { return ''; } });

test('the server runs from / in a mount namespace of its own, keeps no inherited fds, and survives SIGHUP', () => {
  // The shell leaves fd 9 open (no close-on-exec) on a file: the server must not keep it.
  const leaked = '/root/leaked-fd';
  const r = run('bash', ['-c', `exec 9>${leaked}; exec "${process.execPath}" "${CLI}" add memory --size 32M`]);
  assert.equal(r.code, 0, r.stderr);
  const dev = r.stdout.trim();
  try {
    const pid = listDevices()[0]!.pid!;
    assert.ok(!fdTargets(pid).includes(leaked), `the server keeps no inherited fd: ${fdTargets(pid).join(' ')}`);
    assert.equal(fs.readlinkSync(`/proc/${pid}/cwd`), '/');
    assert.notEqual(fs.readlinkSync(`/proc/${pid}/ns/mnt`), fs.readlinkSync('/proc/self/ns/mnt'), 'own mount namespace');
    // A file system mounted on the device here never shows up in the server's namespace.
    sh('mkfs.ext4', '-q', dev);
    fs.mkdirSync('/mnt/hyg', { recursive: true });
    sh('mount', dev, '/mnt/hyg');
    try {
      assert.ok(fs.readFileSync('/proc/self/mountinfo', 'utf8').includes('/mnt/hyg'));
      assert.ok(!fs.readFileSync(`/proc/${pid}/mountinfo`, 'utf8').includes('/mnt/hyg'), 'the mount does not reach the server');
      process.kill(pid, 'SIGHUP');
      fs.writeFileSync('/mnt/hyg/after-hup', 'still served');
      sh('sync');
      assert.ok(serverPids().includes(pid), 'SIGHUP does not end the server');
    } finally {
      sh('umount', '/mnt/hyg');
    }
    sh('fsck.ext4', '-n', '-f', dev);
  } finally {
    delDevice(dev);
  }
  assertClean();
});

// The kernel selftests in `npm test` (recover_01, stress_01) add three devices at once: this one in the full suite.
test('four adds at once get four distinct, working devices', { skip: FULL_ONLY }, async () => {
  const adds = Array.from({ length: 4 }, () => new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const p = spawn(process.execPath, [CLI, 'add', 'null', '--size', '64M'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    p.on('close', (code) => resolve({ code, out, err }));
  }));
  const results = await Promise.all(adds);
  const devs = results.map((r) => r.out.trim());
  try {
    for (const r of results) assert.equal(r.code, 0, r.err);
    assert.equal(new Set(devs).size, 4, `distinct devices: ${devs.join(' ')}`);
    for (const dev of devs) sh('dd', `if=${dev}`, 'of=/dev/null', 'bs=64k', 'count=16', 'iflag=direct', 'status=none');
    assert.equal(listDevices().length, 4);
  } finally {
    for (const dev of devs.filter((d) => /^\/dev\/ublkb\d+$/.test(d))) delDevice(dev);
  }
  assertClean();
});

// lifecycle.test.ts refuses an id in use in `npm test`; this one also checks the live device's data: full suite.
test('--id of a device in use is refused, and the live device keeps its server and its data', { skip: FULL_ONLY }, () => {
  const dev = addDevice('memory', '--size', '16M', '--id', '5');
  try {
    const pid = listDevices()[0]!.pid;
    sh('bash', '-c', `yes ublk-ts | head -c 1048576 | dd of=${dev} bs=64k oflag=direct status=none`);
    const before = sh('md5sum', dev);
    const r = cli('add', 'memory', '--size', '32M', '--id', '5');
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /EEXIST/);
    const listed = listDevices();
    assert.deepEqual(listed.map((d) => [d.id, d.pid, d.state, d.size]), [[5, pid, 'live', 16 * 2 ** 20]]);
    assert.equal(sh('md5sum', dev), before, 'the data is untouched');
  } finally {
    delDevice(dev);
  }
  assertClean();
});

test('a server that dies while starting (fault-inject --die-during-fetch) leaves no device behind', () => {
  const r = cli('add', 'fault-inject', '--size', '16M', '--die-during-fetch');
  assert.equal(r.code, 1);
  assert.match(r.stderr.trim(), /^ublk-ts: server exited before the device was live \(SIGKILL\); device \d+ removed; see /);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  assertClean();
  assert.deepEqual(fs.readdirSync('/sys/class/ublk-char'), [], 'no device left in sysfs');
});
