// User recovery: a device created with --recovery outlives its server. The
// server is killed (SIGKILL) while fio writes and verifies; `ublk-ts recover`
// attaches a new server with the same target, options and mode, and fio goes
// on: every acknowledged write is there. fail-io: IO fails while no server
// runs and works again after recover. A target whose data dies with its
// server (memory) is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import {
  addDevice, addDeviceWith, assertClean, brdForFile, cli, delDevice, fioBackground, FULL_ONLY, idOf, killAndRecoverUnderFio, killServer, listDevices, run, serverPids, sh, sleep, vmSuite,
  waitForState,
} from './helpers.js';

vmSuite();

const [RAM] = brdForFile(1, 65536) as [string];

const CASES: Array<[string, string[]]> = [
  ['classic, kernel copy', ['--copy', 'kernel']],
  ['batch, user copy', ['--batch', '--copy', 'user']],
  ['classic, zero copy', ['--copy', 'zero']],
];

for (const [name, args] of CASES) {
  // Both engines and every copy mode in the full suite; `npm test` has batch
  // with user copy, as its kernel selftest recover_01 kills and recovers
  // classic and batch devices in kernel copy (recover_02: zero copy).
  test(`${name}: kill -9 during fio writes, recover: fio goes on, every acknowledged write is there`,
    { skip: name !== 'batch, user copy' && FULL_ONLY }, async () => {
    const dev = addDevice('loop', '--file', RAM, '--recovery', 'reissue', ...args);
    try {
      await killAndRecoverUnderFio(dev, 'loop');
    } finally {
      delDevice(dev);
    }
    assertClean();
    assert.ok(!fs.existsSync(`/run/ublk-ts/${idOf(dev)}.json`), 'del removes the saved configuration');
  });
}

test('recover without --copy keeps the copy mode the device was created with: kernel copy, where the kernel lacked AUTO_BUF_REG at add, though it has it now', async () => {
  // The state file holds no copy mode when none was asked for: the device's flags decide.
  const dev = addDeviceWith({ UBLK_TS_FAULT_HIDE_FEATURES: 'AUTO_BUF_REG' }, 'null', '--size', '16M', '--recovery', 'requeue');
  const id = idOf(dev);
  try {
    assert.ok(!listDevices()[0]!.flags.includes('SUPPORT_ZERO_COPY'), 'kernel copy without AUTO_BUF_REG');
    killServer(id, true);
    await waitForState(id, 'quiesced');
    const rec = cli('recover', String(id));
    assert.equal(rec.code, 0, rec.stderr);
    await waitForState(id, 'live');
    assert.ok(!listDevices()[0]!.flags.includes('SUPPORT_ZERO_COPY'));
    sh('dd', `if=${dev}`, 'of=/dev/null', 'bs=1M', 'count=4', 'iflag=direct', 'status=none');
  } finally {
    delDevice(dev);
  }
  assertClean();
});

test('automatic restart: the server killed twice during a 20 s fio run, fio sees no error', async () => {
  const dev = addDevice('loop', '--file', RAM, '--recovery', 'reissue', '--queues', '2');
  const id = idOf(dev);
  // The device's log outlives it, and its id may have served earlier tests: only what is new counts.
  const logStart = fs.statSync(`/run/ublk-ts/${id}.log`).size;
  try {
    const fio = fioBackground([
      '--name=restart', `--filename=${dev}`, '--ioengine=io_uring', '--direct=1', '--iodepth=16', '--rw=randrw', '--bs=4k',
      '--numjobs=2', '--offset_increment=24m', '--time_based', '--runtime=20', '--size=24m', '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0',
      '--output-format=terse',
    ]);
    const killed: number[] = [];
    for (let k = 0; k < 2; k++) {
      await sleep(5000);
      // Wait for a live server (the previous restart may still be attaching), then kill it.
      for (let i = 0; i < 100; i++) {
        const d = listDevices()[0]; // one CLI call: seconds in the VM
        if (d?.state === 'live' && !killed.includes(d.pid!)) break;
        await sleep(200);
      }
      killed.push(killServer(id, false));
    }
    const { code, out } = await fio;
    assert.equal(code, 0, `fio saw no error:\n${out}`);
    await waitForState(id, 'live'); // the last restart may still be attaching
    const d = listDevices().find((x) => x.id === id)!;
    assert.ok(!killed.includes(d.pid!), 'a new server serves the device');
    const log = fs.readFileSync(`/run/ublk-ts/${id}.log`, 'utf8').slice(logStart);
    assert.equal((log.match(/re-attached to \/dev\/ublkb\d+/g) ?? []).length, 2, log);
  } finally {
    delDevice(dev);
  }
  assertClean();
});

test('fail-io: IO fails at once while no server runs, and works again after recover', async () => {
  const dev = addDevice('loop', '--file', RAM, '--recovery', 'fail-io', '--batch');
  const id = idOf(dev);
  try {
    killServer(id, true);
    await waitForState(id, 'fail_io');
    const t0 = Date.now();
    const r = run('dd', [`if=${dev}`, 'of=/dev/null', 'bs=4k', 'count=1', 'skip=10', 'iflag=direct', 'status=none'], { timeout: 30_000 });
    assert.notEqual(r.code, 0, 'a read without a server fails');
    assert.match(r.stderr, /Remote I\/O error/, 'FAIL_IO fails new requests with a target error (BLK_STS_TARGET)');
    assert.ok(Date.now() - t0 < 10_000);
    const rec = cli('recover', '-n', String(id));
    assert.equal(rec.code, 0, rec.stderr);
    const ok = run('dd', [`if=${dev}`, 'of=/dev/null', 'bs=4k', 'count=1', 'skip=10', 'iflag=direct', 'status=none']);
    assert.equal(ok.code, 0, ok.stderr);
  } finally {
    delDevice(dev);
  }
  assertClean();
});

test('recover refuses what it cannot do: a live device, a device without recovery, a target without its data', async () => {
  const dev = addDevice('loop', '--file', RAM, '--recovery', 'requeue');
  const plain = addDevice('null', '--size', '16M');
  try {
    const live = cli('recover', String(idOf(dev)));
    assert.equal(live.code, 2, live.stderr);
    assert.match(live.stderr, /^ublk-ts: device \d+ is served by process \d+: nothing to recover/);
    const none = cli('recover', String(idOf(plain)));
    assert.equal(none.code, 2);
    assert.match(none.stderr, /^ublk-ts: device \d+ was not created with --recovery/);
    const memory = cli('add', 'memory', '--size', '16M', '--recovery', 'requeue');
    assert.equal(memory.code, 2);
    assert.match(memory.stderr, /the memory target keeps its data in the server.*cannot use --recovery/);
    // The servers started for the refused attempts end (their supervisors too); the live ones are untouched.
    for (let i = 0; i < 50 && serverPids().length > 3; i++) await sleep(100);
    assert.equal(serverPids().length, 3, 'the live servers (and the supervisor) are untouched');
  } finally {
    delDevice(dev);
    delDevice(plain);
  }
  assertClean();
});

test('quiesce refuses a batch-mode device (the kernel fails its requests from QUIESCE_DEV until recover): one line, the device stays live', () => {
  const dev = addDevice('null', '--size', '64M', '--recovery', 'reissue', '--batch');
  const q = cli('quiesce', String(idOf(dev)));
  assert.equal(q.code, 2, q.stderr);
  assert.match(q.stderr, /device \d+: a batch-mode device cannot be quiesced without failing IO \(the kernel fails its requests from QUIESCE_DEV until `recover`\)/);
  assert.equal(listDevices().find((d) => d.id === idOf(dev))!.state, 'live');
  delDevice(dev);
  assertClean();
});

test('quiesce, then recover: a new server takes over a mounted file system while it is written, no IO fails', async () => {
  const dev = addDevice('loop', '--file', RAM, '--recovery', 'requeue');
  const id = idOf(dev);
  sh('mkfs.ext4', '-q', dev);
  fs.mkdirSync('/mnt/q', { recursive: true });
  sh('mount', dev, '/mnt/q');
  try {
    const old = listDevices().find((d) => d.id === id)!;
    const fio = fioBackground([
      '--name=quiesce', '--directory=/mnt/q', '--ioengine=io_uring', '--direct=1', '--iodepth=8', '--rw=randwrite', '--bs=4k',
      '--size=8m', '--time_based', '--runtime=20', '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', '--output-format=terse',
    ]);
    await sleep(4000);
    const q = cli('quiesce', String(id));
    assert.equal(q.code, 0, q.stderr);
    assert.match(q.stdout, new RegExp(`^${dev} quiesced: \`ublk-ts recover ${id}\``));
    const held = listDevices().find((d) => d.id === id)!;
    assert.equal(held.state, 'quiesced');
    assert.ok(!serverPids().includes(old.pid!) && !serverPids().includes(old.supervisor!), 'the old server and its supervisor are gone');
    await sleep(1000); // IO waits meanwhile
    const r = cli('recover', String(id));
    assert.equal(r.code, 0, r.stderr);
    const { code, out } = await fio;
    assert.equal(code, 0, `fio saw no error:\n${out}`);
    assert.doesNotMatch(out, /verify.*(bad|fail)|error=/i);
    const now = listDevices().find((d) => d.id === id)!;
    assert.equal(now.state, 'live');
    // The new server started while the file system was mounted; its namespace must not hold that mount.
    assert.ok(!fs.readFileSync(`/proc/${now.pid}/mountinfo`, 'utf8').includes('/mnt/q'), 'the new server does not pin the mount');
  } finally {
    run('umount', ['/mnt/q']);
  }
  sh('fsck.ext4', '-n', '-f', dev);
  delDevice(dev);
  assertClean();
});

test('quiesce waits for backing IO slower than its quiet window: a loop WRITE still on its way to the backing disk is not failed', async () => {
  // dm-delay holds every backing IO for 600 ms: longer than quiesce waits
  // with nothing in flight by the server's own count, which does not see a
  // loop request whose commit is linked behind its backing IO.
  const sectors = sh('blockdev', '--getsz', RAM).trim();
  sh('dmsetup', 'create', 'ublkts-slow', '--table', `0 ${sectors} delay ${RAM} 0 600`);
  try {
    // No udev here: the kernel's own node (devtmpfs), not /dev/mapper.
    const slow = `/dev/dm-${sh('dmsetup', 'info', '-c', '--noheadings', '-o', 'minor', 'ublkts-slow').trim()}`;
    const dev = addDevice('loop', '--file', slow, '--recovery', 'requeue');
    const id = idOf(dev);
    try {
      const fio = fioBackground([
        '--name=slow', `--filename=${dev}`, '--ioengine=io_uring', '--direct=1', '--iodepth=8', '--rw=randwrite', '--bs=4k',
        '--size=4m', '--time_based', '--runtime=8', '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', '--output-format=terse',
      ]);
      await sleep(3000);
      const q = cli('quiesce', String(id));
      assert.equal(q.code, 0, q.stderr);
      const r = cli('recover', String(id));
      assert.equal(r.code, 0, r.stderr);
      const { code, out } = await fio;
      assert.equal(code, 0, `fio saw no error:\n${out}`);
      assert.doesNotMatch(out, /verify.*(bad|fail)|error=/i);
    } finally {
      delDevice(dev);
    }
  } finally {
    run('dmsetup', ['remove', 'ublkts-slow']);
  }
  assertClean();
});

test('requeue: IO issued while no server runs waits, and completes once a new server is attached', async () => {
  const dev = addDevice('loop', '--file', RAM, '--recovery', 'requeue');
  const id = idOf(dev);
  try {
    sh('dd', 'if=/dev/urandom', `of=${dev}`, 'bs=64k', 'count=16', 'oflag=direct', 'status=none');
    const want = sh('md5sum', RAM).split(' ')[0];
    killServer(id, true);
    await waitForState(id, 'quiesced');
    const reader = spawn('dd', [`if=${dev}`, 'of=/dev/null', 'bs=64k', 'count=16', 'iflag=direct', 'status=none'], { stdio: 'ignore' });
    const read = new Promise<number | null>((r) => reader.on('exit', r));
    const early = await Promise.race([read, sleep(3000).then(() => 'waiting')]);
    assert.equal(early, 'waiting', 'the read waits for a server instead of failing');
    const r = cli('recover', String(id));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await read, 0, 'the read completed after recover');
    assert.equal(sh('md5sum', RAM).split(' ')[0], want);
  } finally {
    delDevice(dev);
  }
  assertClean();
});
