// The device lifecycle as a user drives it: add, list, del, signals, bad input.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import {
  addDevice, addDeviceWith, assertClean, cli, CLI, cliWith, delDevice, idOf, listDevices, run, serverPids, sh, sleep, ublkNodes, vmSuite,
} from './helpers.js';
import { assertOneLineError } from '../one-line-error.js';

vmSuite();

describe('lifecycle', () => {
  test('add, list and del a memory device', () => {
    const dev = addDevice('memory', '--size', '64M', '--queues', '2', '--depth', '64');
    const [d, ...others] = listDevices();
    assert.equal(others.length, 0);
    assert.equal(d!.path, dev);
    assert.equal(d!.id, idOf(dev));
    assert.equal(d!.state, 'live');
    assert.equal(d!.target, 'memory');
    assert.equal(d!.size, 64 * 2 ** 20);
    assert.equal(d!.queues, 2);
    assert.equal(d!.depth, 64);
    assert.ok(d!.flags.includes('CMD_IOCTL_ENCODE'), `flags: ${d!.flags}`);
    assert.ok(d!.pid && serverPids().includes(d!.pid), 'pid is the running server');
    // The block device really has that size.
    const sectors = Number(fs.readFileSync(`/sys/block/ublkb${d!.id}/size`, 'utf8'));
    assert.equal(sectors * 512, 64 * 2 ** 20);
    delDevice(dev);
    assert.deepEqual(listDevices(), []);
    assertClean();
  });

  test('--id picks the device id, and an id in use is refused', () => {
    const dev = addDevice('null', '--size', '1G', '--id', '7');
    assert.equal(dev, '/dev/ublkb7');
    const r = cli('add', 'null', '--size', '1G', '--id', '7');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr.trim(), /^ublk-ts: .*EEXIST/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.deepEqual(listDevices().map((d) => d.id), [7]);
    delDevice(dev);
    assertClean();
  });

  test('the kernel clamps queues to the CPU count and we serve exactly those', () => {
    const cpus = Number(fs.readFileSync('/sys/devices/system/cpu/online', 'utf8').trim().split('-').pop()) + 1;
    const dev = addDevice('null', '--size', '16M', '--queues', String(cpus + 2));
    assert.equal(listDevices()[0]!.queues, cpus);
    delDevice(dev); // hangs if a worker served a queue that does not exist
    assertClean();
  });

  test('kernel copy at the deepest queues: 2 x 4096 tags of 1 MiB buffers (8 GiB of addresses, more than the test VM\'s memory) serve fio', () => {
    // One 4 GiB mapping per queue was refused by the kernel's overcommit heuristic (ENOMEM) before MAP_NORESERVE.
    const dev = addDevice('null', '--size', '1G', '--queues', '2', '--depth', '4096', '--copy', 'kernel');
    const r = run('fio', ['--name=deep', `--filename=${dev}`, '--ioengine=io_uring', '--direct=1', '--rw=randrw', '--bs=4k-1m',
      '--iodepth=64', '--size=256m', '--output-format=terse']);
    assert.equal(r.code, 0, r.stderr);
    delDevice(dev);
    assertClean();
  });

  test('the copy mode by default: zero copy for targets that move data on the ring or none, kernel copy for the others and where the kernel lacks AUTO_BUF_REG', () => {
    const zc = ['SUPPORT_ZERO_COPY', 'AUTO_BUF_REG'];
    const listed = (dev: string) => listDevices().find((d) => d.path === dev)!;
    const flagsOf = (dev: string): string[] => listed(dev).flags;
    const nul = addDevice('null', '--size', '16M');
    const mem = addDevice('memory', '--size', '16M');
    const old = addDeviceWith({ UBLK_TS_FAULT_HIDE_FEATURES: 'AUTO_BUF_REG' }, 'null', '--size', '16M');
    try {
      for (const f of zc) assert.ok(flagsOf(nul).includes(f), `null: ${f} in ${flagsOf(nul)}`);
      assert.equal(listed(nul).copy, 'zero', '`list` names the mode');
      for (const dev of [mem, old]) {
        assert.ok(!flagsOf(dev).some((f) => zc.includes(f) || f === 'USER_COPY'), `${dev}: kernel copy, ${flagsOf(dev)}`);
        assert.equal(listed(dev).copy, 'kernel');
      }
      for (const dev of [nul, mem, old]) sh('dd', 'if=/dev/zero', `of=${dev}`, 'bs=64k', 'count=16', 'oflag=direct', 'status=none');
    } finally {
      for (const dev of [nul, mem, old]) delDevice(dev);
    }
    assertClean();
  });

  test('del --all removes every device', () => {
    addDevice('null', '--size', '16M');
    addDevice('memory', '--size', '16M');
    assert.equal(listDevices().length, 2);
    const r = cli('del', '--all');
    assert.equal(r.code, 0, r.stderr);
    assertClean();
  });

  test('SIGTERM to the server stops it and removes the device', async () => {
    const dev = addDevice('memory', '--size', '32M');
    const pid = listDevices()[0]!.pid!;
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 200 && (serverPids().length || ublkNodes().length); i++) await sleep(50);
    assert.ok(!fs.existsSync(dev));
    assertClean();
  });

  test('--foreground serves until SIGINT, then cleans up and exits 0', async () => {
    const child = spawn(process.execPath, [CLI, 'add', 'null', '--size', '8M', '--foreground'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b));
    for (let i = 0; i < 400 && !out.includes('\n'); i++) await sleep(50);
    const dev = out.trim();
    assert.match(dev, /^\/dev\/ublkb\d+$/);
    assert.ok(fs.existsSync(dev));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    child.kill('SIGINT');
    assert.equal(await exited, 0);
    assertClean();
  });

  test('features lists the running kernel\'s UBLK_F_* names', () => {
    const r = cli('features', '--json');
    assert.equal(r.code, 0, r.stderr);
    const names = JSON.parse(r.stdout) as string[];
    for (const f of ['CMD_IOCTL_ENCODE', 'USER_COPY', 'BATCH_IO', 'AUTO_BUF_REG']) assert.ok(names.includes(f), `${f} in ${names}`);
    const plain = cli('features');
    assert.deepEqual(plain.stdout.trim().split('\n'), names);
    // The fault injection the bad-input tests below rely on really hides a feature.
    const hidden = cliWith({ UBLK_TS_FAULT_HIDE_FEATURES: 'BATCH_IO' }, 'features');
    assert.deepEqual(hidden.stdout.trim().split('\n'), names.filter((n) => n !== 'BATCH_IO'));
  });
});

// The command-line checks that need no kernel are host tests (test/host/cli-bad-input.test.ts).
describe('bad input the kernel decides: one-line error, non-zero exit, nothing created', () => {
  type Case = [name: string, args: string[], message: RegExp, env?: Record<string, string>];
  // A kernel without a mode, played by hiding the feature from GET_FEATURES.
  const hide = (features: string) => ({ UBLK_TS_FAULT_HIDE_FEATURES: features });
  const cases: Case[] = [
    ['del of a device that does not exist', ['del', '4242'], /no ublk device with id 4242/],
    // Refused by the target's own setup, in a module the (bundled) CLI loads from dist/src/.
    ['loop over a file that does not exist', ['add', 'loop', '--file', '/nonexistent.img'], /\/nonexistent.img: no such file/],
    ['--batch on a kernel without BATCH_IO', ['add', 'null', '--size', '1M', '--batch'], /does not support UBLK_F_BATCH_IO/, hide('BATCH_IO')],
    ['--copy user on a kernel without USER_COPY', ['add', 'null', '--size', '1M', '--copy', 'user'], /lacks USER_COPY/, hide('USER_COPY')],
    ['--copy zero on a kernel without AUTO_BUF_REG', ['add', 'null', '--size', '1M', '--copy', 'zero'], /lacks AUTO_BUF_REG .*--no-auto-buf-reg/, hide('AUTO_BUF_REG')],
    ['--copy zero on a kernel without zero copy', ['add', 'null', '--size', '1M', '--copy', 'zero', '--no-auto-buf-reg'], /lacks SUPPORT_ZERO_COPY/, hide('SUPPORT_ZERO_COPY')],
  ];
  for (const [name, args, message, env = {}] of cases) {
    test(name, () => {
      const r = cliWith(env, ...args);
      // Every one of them is the user's to fix: usage's exit code, 2.
      assert.equal(r.code, 2, `exit code for ${args.join(' ')}: ${r.stderr}`);
      assertOneLineError(r, message);
      assertClean();
    });
  }
});
