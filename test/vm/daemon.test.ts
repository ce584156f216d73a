// One server for many devices (`ublk-ts daemon`): devices added through it
// share its serving threads; `add`, `list`, `del` work as with a server per
// device; adding and deleting devices never disturbs IO on the others; a
// target that fails on one device leaves the others serving; stopping the
// daemon removes its devices and leaves nothing behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { addDevice, assertClean, CLI, cli, delDevice, fioVerify, HANG_TARGET, hangingAdd, writeHangTarget, idOf, listDevices, loadBrd, run, sleep, vmSuite } from './helpers.js';
import { askDaemon, daemonStatus, type DaemonStatus } from '../../src/cli/daemon.js';
import { waitFor } from '../../src/cli/devices.js';
import type { ServeConfig } from '../../src/cli/server.js';

vmSuite();

const LOG = '/tmp/ublk-ts-daemon.log';

interface Daemon {
  proc: ChildProcess;
  exited: Promise<number | null>;
}

const startDaemon = (...args: string[]): Promise<Daemon> => startDaemonWith({}, ...args);

/** startDaemon with more environment (e.g. UBLK_TS_FAULT_TAG_BUFFERS). */
async function startDaemonWith(env: Record<string, string>, ...args: string[]): Promise<Daemon> {
  const log = fs.openSync(LOG, 'w');
  const proc = spawn(process.execPath, [CLI, 'daemon', ...args], { stdio: ['ignore', 'ignore', log], env: { ...process.env, ...env } });
  fs.closeSync(log);
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  for (let i = 0; i < 300; i++) {
    const st = await daemonStatus().catch(() => null);
    if (st?.pid === proc.pid) return { proc, exited };
    if (proc.exitCode !== null) break;
    await sleep(100);
  }
  throw new Error(`the daemon did not start:\n${fs.readFileSync(LOG, 'utf8')}`);
}

/** SIGTERM, which stops its devices; returns its exit code (SIGKILL, and null, after a minute). */
async function stopDaemon(d: Daemon): Promise<number | null> {
  if (d.proc.exitCode === null && d.proc.signalCode === null) d.proc.kill('SIGTERM');
  const t = setTimeout(() => d.proc.kill('SIGKILL'), 60_000);
  try {
    return await d.exited;
  } finally {
    clearTimeout(t);
  }
}

/** Runs `f` with a daemon (`env`: more environment); a failure carries the daemon's log; the daemon is stopped in the end. */
async function withDaemon(args: string[], f: (d: Daemon) => Promise<void>, env: Record<string, string> = {}): Promise<void> {
  const d = await startDaemonWith(env, ...args);
  try {
    await f(d);
  } catch (e) {
    throw withLog(e);
  } finally {
    await stopDaemon(d);
  }
}

/** The error, with the daemon's log appended. */
function withLog(e: unknown): unknown {
  if (e instanceof Error) e.message += `\n--- daemon log:\n${fs.readFileSync(LOG, 'utf8').slice(-4000)}`;
  return e;
}

/** A /proc/PID/status line in KiB: VmRSS, RssAnon (the server's own memory, not the memory target's memfds: RssShmem). */
const statusKiB = (pid: number, field: string): number =>
  Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
const threadsOf = (pid: number): number => fs.readdirSync(`/proc/${pid}/task`).length;

/** One fio run over many devices, a job each (global options first). */
function fioOver(devs: string[], global: string[]): void {
  const jobs = devs.flatMap((d, i) => [`--name=d${i}`, `--filename=${d}`]);
  const r = run('fio', ['--ioengine=io_uring', '--direct=1', '--output-format=terse', '--verify_state_save=0', ...global, ...jobs], { timeout: 900_000 });
  assert.equal(r.code, 0, `fio over ${devs.length} devices failed:\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
  assert.doesNotMatch(r.stderr, /verify.*(bad|fail)|error/i);
}

const add = (cfg: Partial<ServeConfig> & { target: string }): Promise<{ id: number; path: string }> =>
  askDaemon<{ id: number; path: string }>({ op: 'add', cfg: cfg as ServeConfig });

test('the CLI through a daemon: add, list, stats, del; --no-daemon gets a server of its own; SIGTERM removes its devices', async () => {
  await withDaemon(['--threads', '2'], async (d) => {
    const a = addDevice('memory', '-s', '32M');
    const b = addDevice('null', '-s', '1G', '-q', '2');
    const own = addDevice('memory', '-s', '16M', '--no-daemon');
    const listed = listDevices();
    const pidOf = (dev: string) => listed.find((l) => l.path === dev)!.pid;
    assert.equal(pidOf(a), d.proc.pid, 'the daemon serves the first device');
    assert.equal(pidOf(b), d.proc.pid, 'and the second');
    assert.notEqual(pidOf(own), d.proc.pid, '--no-daemon: a server of its own');
    assert.equal(listed.find((l) => l.path === a)!.target, 'memory');
    const st = (await daemonStatus())!;
    assert.deepEqual(st.devices.sort(), [idOf(a), idOf(b)].sort());
    assert.deepEqual([...st.load].sort(), [1, 1], 'one device on each of the two threads');

    fioVerify(a, { iodepth: 16, size: '16m' });
    // resize through the daemon's socket (it has no socket per device)
    const grown = cli('resize', String(idOf(a)), '48M');
    assert.equal(grown.code, 0, grown.stderr);
    assert.equal(listDevices().find((l) => l.path === a)!.size, 48 << 20);
    assert.equal(cli('resize', String(idOf(b)), '2G').code, 0);
    assert.equal(listDevices().find((l) => l.path === b)!.size, 2 * 2 ** 30);
    fioOver([b], ['--rw=randread', '--bs=4k', '--iodepth=8', '--size=16m']);

    // Options that are the daemon's to set are refused with the fix named, and nothing is created.
    const refused = cli('add', 'null', '-s', '1G', '--poll-us', '10');
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /^ublk-ts: --poll-us: the daemon's threads serve every device alike.*--no-daemon/);
    assert.equal(listDevices().length, 3);

    assert.equal(cli('del', String(idOf(a))).code, 0);
    assert.ok(!fs.existsSync(a), `${a} is gone after del`);
    assert.ok(d.proc.exitCode === null, 'the daemon serves on after a del');
    assert.deepEqual((await daemonStatus())!.devices, [idOf(b)]);
    assert.equal(cli('del', String(idOf(own))).code, 0);

    assert.equal(await stopDaemon(d), 0, fs.readFileSync(LOG, 'utf8'));
    assert.ok(!fs.existsSync(b), 'SIGTERM stopped the daemon\'s devices');
    assertClean();
    assert.deepEqual(fs.readdirSync('/run/ublk-ts').filter((f) => /\.(json|sock)$/.test(f)), [], 'no state file or socket left');
  });
});

test("zero copy on the daemon's threads while their buffer tables have room for a device's tags, kernel copy past that, and the room reused after a del", async () => {
  await withDaemon(['--threads', '1'], async (daemon) => {
    const copyOf = (dev: string): string | undefined => listDevices().find((l) => l.path === dev)?.copy;
    // 2 queues x 4096 tags: half of the thread's 16384 buffer-table slots each
    const big = ['-s', '1G', '-q', '2', '-d', '4096'];
    const a = addDevice('null', ...big);
    const b = addDevice('null', ...big);
    assert.equal(copyOf(a), 'zero', 'by default, with room');
    assert.equal(copyOf(b), 'zero', 'the table is now full');
    const c = addDevice('null', '-s', '1G');
    assert.equal(copyOf(c), 'kernel', 'no room left: kernel copy, which needs none');
    const refused = cli('add', 'null', '-s', '1G', '--copy', 'zero');
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /^ublk-ts: zero copy: no serving thread of the daemon has room left for 128 more tags .*--copy kernel/);
    assert.equal(listDevices().length, 3, 'the refused add created nothing');
    assert.equal(cli('del', String(idOf(a))).code, 0);
    // an add that fails after its slots were reserved (ADD_DEV: the id is taken) gives them back
    assert.notEqual(cli('add', 'null', ...big, '--id', String(idOf(b))).code, 0);
    const d = addDevice('null', ...big);
    assert.equal(copyOf(d), 'zero', "the deleted device's slots were given back, and the failed add's");
    fioOver([b, c, d], ['--rw=randread', '--bs=4k', '--iodepth=16', '--size=16m']);
    assert.equal(cli('del', '--all').code, 0);
    assert.equal(await stopDaemon(daemon), 0, fs.readFileSync(LOG, 'utf8'));
    assertClean();
  });
});

test('a device whose tag buffers cannot be mapped fails to add at once, leaving nothing behind, and the daemon serves on', async () => {
  // (UBLK_TS_FAULT_TAG_BUFFERS: every tag buffer mapping fails with ENOMEM, in the daemon's serving thread)
  await withDaemon(['--threads', '1'], async (d) => {
    const t0 = Date.now();
    const r = run(process.execPath, [CLI, 'add', 'memory', '-s', '16M', '-q', '2'], { timeout: 90_000 });
    // A descriptor mapping of /dev/ublkcN left behind kept the failed device's DEL_DEV, and the add, waiting for good.
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /^ublk-ts: .*ENOMEM/);
    assert.ok(Date.now() - t0 < 60_000, `the failed add took ${Date.now() - t0} ms`);
    assert.deepEqual(listDevices(), [], 'nothing was created');
    const z = addDevice('null', '-s', '1G', '--copy', 'zero'); // no tag buffers
    fioOver([z], ['--rw=randread', '--bs=4k', '--iodepth=8', '--size=16m']);
    assert.equal(cli('del', '--all').code, 0);
    assert.equal(await stopDaemon(d), 0, fs.readFileSync(LOG, 'utf8'));
    assertClean();
  }, { UBLK_TS_FAULT_TAG_BUFFERS: '1' });
});

test('100 null and memory devices in one daemon on 2 threads, each verified by fio', async (t) => {
  await withDaemon(['--threads', '2'], async (d) => {
    const pid = d.proc.pid!;
    const base = statusKiB(pid, 'RssAnon');
    // Eight requests at a time, as many users' `add`s would come.
    for (let i = 0; i < 100; i += 8) {
      await Promise.all(Array.from({ length: Math.min(8, 100 - i) }, (_, k) =>
        (i + k) % 2 ? add({ target: 'null', options: { size: 256 << 20 } }) : add({ target: 'memory', options: { size: 4 << 20 } })));
    }
    const st = (await daemonStatus()) as DaemonStatus;
    assert.equal(st.devices.length, 100);
    assert.deepEqual(st.load, [50, 50], 'the devices are spread over both threads');
    const listed = listDevices();
    assert.equal(listed.length, 100);
    assert.ok(listed.every((l) => l.pid === pid && l.state === 'live'), 'every device live, served by the daemon');
    const memory = listed.filter((l) => l.target === 'memory').map((l) => l.path);
    const nul = listed.filter((l) => l.target === 'null').map((l) => l.path);
    assert.equal(memory.length, 50);
    fioOver(memory, ['--rw=randwrite', '--bsrange=4k-64k', '--iodepth=4', '--size=2m', '--verify=crc32c', '--verify_fatal=1', '--do_verify=1']);
    fioOver(nul, ['--rw=randread', '--bs=4k', '--iodepth=4', '--size=2m']);
    const anon = statusKiB(pid, 'RssAnon'), shmem = statusKiB(pid, 'RssShmem');
    t.diagnostic(`daemon RSS: ${Math.round(base / 1024)} MiB of its own with no device; with 100 after fio ${Math.round(anon / 1024)} MiB ` +
      `of its own (RssAnon) and ${Math.round(shmem / 1024)} MiB RssShmem; ${threadsOf(pid)} threads`);
    // The aim is 100 devices in under 300 MiB: a server whose buffers grew per device would be far past it
    // (transparent huge pages once made each touched 1 MiB tag buffer cost 2 MiB, and the VM ran out of memory).
    assert.ok(anon < 300 * 1024, `the daemon holds ${Math.round(anon / 1024)} MiB of its own for 100 devices`);
    assert.equal(cli('del', '--all').code, 0);
    assert.deepEqual((await daemonStatus())!.devices, []);
    assert.equal(await stopDaemon(d), 0, fs.readFileSync(LOG, 'utf8'));
    assertClean();
  });
});

test('an idle device gives back the memory its requests touched, and reads back what was written before', async (t) => {
  await withDaemon(['--threads', '1'], async (d) => {
    const pid = d.proc.pid!;
    const dev = (await add({ target: 'memory', options: { size: 256 << 20 } })).path;
    await sleep(500);
    const before = statusKiB(pid, 'RssAnon');
    // 1 MiB writes at QD 64: the kernel copies into 64 tag buffers of 1 MiB.
    const job = ['--name=big', `--filename=${dev}`, '--ioengine=io_uring', '--direct=1', '--rw=write', '--bs=1m', '--iodepth=64',
      '--size=192m', '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', '--output-format=terse'];
    const w = run('fio', [...job, '--do_verify=0']);
    assert.equal(w.code, 0, w.stderr);
    const busy = statusKiB(pid, 'RssAnon');
    let idle = busy;
    for (let i = 0; i < 40 && idle > before + 16 * 1024; i++) {
      await sleep(1000);
      idle = statusKiB(pid, 'RssAnon');
    }
    t.diagnostic(`RssAnon: ${Math.round(before / 1024)} MiB idle, ${Math.round(busy / 1024)} MiB after 1 MiB writes at QD 64, ` +
      `${Math.round(idle / 1024)} MiB once idle`);
    // A tag buffer per request in flight at some point: 39 to 128 MiB have been seen (fio under
    // emulation does not always keep 64 in flight), against a trim to less than 16 MiB above idle.
    assert.ok(busy > before + 32 * 1024, `the writes touched the tag buffers (${before} -> ${busy} KiB)`);
    assert.ok(idle < before + 16 * 1024, `an idle device gave the pages back (${busy} -> ${idle} KiB)`);
    const r = run('fio', [...job, '--verify_only']);
    assert.equal(r.code, 0, `reading back through the emptied buffers: ${r.stdout}\n${r.stderr}`);
  });
  assertClean();
});

test('devices added and deleted while fio verifies others: no error on those', async () => {
  await withDaemon(['--threads', '2'], async (d) => {
    const busy = [(await add({ target: 'memory', options: { size: 64 << 20 } })).path, (await add({ target: 'memory', options: { size: 64 << 20 } })).path];
    const fio = spawn('fio', ['--ioengine=io_uring', '--direct=1', '--rw=randrw', '--bsrange=4k-128k', '--iodepth=8', '--size=48m',
      '--verify=crc32c', '--verify_fatal=1', '--do_verify=1', '--loops=2', '--verify_state_save=0', ...busy.flatMap((p, i) => [`--name=b${i}`, `--filename=${p}`])],
    { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    fio.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    fio.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    const fioDone = new Promise<number | null>((r) => fio.once('exit', (code) => r(code)));
    let cycles = 0;
    while (fio.exitCode === null && cycles < 40) {
      const added = await Promise.all([add({ target: 'null', options: { size: 64 << 20 } }), add({ target: 'memory', options: { size: 8 << 20 } })]);
      for (const a of added) await askDaemon({ op: 'del', id: a.id });
      cycles++;
    }
    assert.equal(await fioDone, 0, `fio on the busy devices failed:\n${out.slice(-3000)}`);
    assert.ok(cycles >= 2, `devices came and went while fio ran (${cycles} cycles)`);
    assert.deepEqual((await daemonStatus())!.devices.sort(), busy.map(idOf).sort());
  });
  assertClean();
});

const THROWING = '/tmp/throwing-target.mjs';

test('a target that throws on one device: the others on its thread serve on, whether it throws in a request or from a timer', async () => {
  // One thread, so the devices share it. --later: from a timer, after the request completed (an exception
  // no call of ours returns): the device fails and is stopped, and the thread lives on.
  fs.writeFileSync(THROWING, `
export default {
  name: 'throwing',
  options: [{ key: 'size', type: 'size', required: true, help: 'size' }, { key: 'later', type: 'bool', help: 'throw from a timer' }],
  setup: (o) => ({ size: o.size, shared: { later: o.later === true } }),
  open: (ctx) => ({
    read(req) {
      if (req.offset < 65536) { req.buffer.fill(0); return req.length; }
      if (!ctx.shared.later) throw new Error('a bug in read');
      setTimeout(() => { throw new Error('a bug in a timer'); }, 1);
      return new Promise(() => {}); // never settles: the request fails when the device is
    },
    write() { throw new Error('a bug in write'); },
  }),
};
`);
  await withDaemon(['--threads', '1'], async () => {
    const good = (await add({ target: 'memory', options: { size: 32 << 20 } })).path;
    const bad = (await add({ target: THROWING, options: { size: 32 << 20 } })).path;
    const later = await add({ target: THROWING, options: { size: 32 << 20, later: true } });
    const r = run('dd', [`if=${bad}`, 'of=/dev/null', 'bs=4k', 'skip=100', 'count=1', 'iflag=direct']);
    assert.notEqual(r.code, 0, 'a read the target throws on fails');
    assert.match(r.stderr, /Input\/output error/);
    const fio = spawn('fio', ['--name=good', `--filename=${good}`, '--ioengine=io_uring', '--direct=1', '--rw=randwrite', '--bsrange=4k-64k',
      '--iodepth=8', '--size=16m', '--verify=crc32c', '--verify_fatal=1', '--do_verify=1', '--loops=3', '--verify_state_save=0'], { stdio: 'ignore' });
    const fioDone = new Promise<number | null>((res) => fio.once('exit', (code) => res(code)));
    await sleep(500);
    const t0 = Date.now();
    const l = run('dd', [`if=${later.path}`, 'of=/dev/null', 'bs=4k', 'skip=100', 'count=1', 'iflag=direct'], { timeout: 60_000 });
    assert.notEqual(l.code, 0, 'the read whose target threw from a timer fails');
    assert.ok(Date.now() - t0 < 20_000, `it fails within seconds (${Date.now() - t0} ms)`);
    for (let i = 0; i < 100 && (await daemonStatus())!.devices.includes(later.id); i++) await sleep(200);
    assert.ok(!(await daemonStatus())!.devices.includes(later.id), 'the device whose target broke is stopped and removed');
    assert.equal(await fioDone, 0, 'fio verified the good device on the same thread all along');
    assert.deepEqual((await daemonStatus())!.devices.sort(), [idOf(good), idOf(bad)].sort(), 'the others still served');
    assert.match(fs.readFileSync(LOG, 'utf8'), /its target failed: a bug in a timer/);
  });
  fs.rmSync(THROWING, { force: true });
  assertClean();
});

test('the daemon killed (-9) under fio and started again: it recovers every device created with --recovery, fio goes on without an error', async () => {
  const rams = loadBrd(3, 32768);
  let d = await startDaemon('--threads', '2');
  try {
    const devs = rams.map((ram, i) => addDevice('loop', '--file', ram, '--recovery', 'reissue', ...(i === 2 ? ['--batch'] : [])));
    assert.ok(listDevices().every((l) => l.pid === d.proc.pid), 'the daemon serves them');
    const fio = spawn('fio', ['--ioengine=io_uring', '--direct=1', '--rw=randwrite', '--bsrange=4k-64k', '--iodepth=16', '--size=24m',
      '--verify=crc32c', '--verify_fatal=1', '--do_verify=1', '--randrepeat=0', '--verify_state_save=0',
      ...devs.flatMap((p, i) => [`--name=r${i}`, `--filename=${p}`])], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    fio.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    fio.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    const fioDone = new Promise<number | null>((r) => fio.once('exit', (code) => r(code)));
    // Once fio has written a little to every device.
    const written = (p: string): number => Number(fs.readFileSync(`/sys/block/${path.basename(p)}/stat`, 'utf8').trim().split(/\s+/)[6]);
    for (let i = 0; i < 300 && !devs.every((p) => written(p) >= 8192); i++) await sleep(50);
    const old = d.proc.pid!;
    d.proc.kill('SIGKILL');
    await d.exited;
    for (let i = 0; i < 100 && !listDevices().every((l) => l.state === 'quiesced'); i++) await sleep(100);
    assert.ok(listDevices().every((l) => l.state === 'quiesced'), `every device waits for a server: ${JSON.stringify(listDevices())}`);
    d = await startDaemon('--threads', '2');
    assert.equal(await fioDone, 0, `fio across the daemon's restart:\n${out.slice(-3000)}`);
    const listed = listDevices();
    assert.equal(listed.length, 3);
    assert.ok(listed.every((l) => l.pid === d.proc.pid && l.state === 'live'), `the new daemon serves them all: ${JSON.stringify(listed)}`);
    assert.match(fs.readFileSync(LOG, 'utf8'), new RegExp(`recovered from daemon ${old}`));
  } catch (e) {
    throw withLog(e);
  } finally {
    await stopDaemon(d);
    run('rmmod', ['brd']);
  }
  assertClean();
});

test("a target whose open() never settles, on the daemon's threads: `del` removes its device and the add fails saying so, Ctrl-C on an add removes its device, and SIGTERM stops the daemon with one starting; one whose close() or cleanup() never settles is removed too; the daemon serves on meanwhile, and the next daemon removes a device one killed while adding it", async () => {
  await withDaemon(['--threads', '1'], async (d) => {
    const deleted = await hangingAdd();
    assert.equal(listDevices().find((x) => x.id === deleted.id)?.state, 'starting');
    const r = cli('del', String(deleted.id));
    assert.equal(r.code, 0, r.stderr);
    const added = await deleted.ended;
    assert.notEqual(added.code, 0);
    assert.match(added.stderr, new RegExp(`device ${deleted.id} was deleted before it was live`));
    assert.equal(added.stderr.trim().split('\n').length, 1, added.stderr);

    const interrupted = await hangingAdd();
    interrupted.proc.kill('SIGINT');
    assert.ok(await waitFor(() => !fs.existsSync(`/sys/class/ublk-char/ublkc${interrupted.id}`), 30_000), 'the interrupted add\'s device is removed');

    // A target whose close() or cleanup() never ends does not hold its device's removal either.
    writeHangTarget();
    for (const hang of ['close', 'cleanup']) {
      const dev = addDevice(HANG_TARGET, '--size', '16M', '--hang', hang);
      const t0 = Date.now();
      delDevice(dev);
      assert.ok(Date.now() - t0 < 30_000, `${hang}: del took ${Date.now() - t0} ms`);
    }

    // The same thread serves a device meanwhile.
    const dev = addDevice('null', '--size', '16M');
    run('dd', [`if=${dev}`, 'of=/dev/null', 'bs=4k', 'count=16', 'iflag=direct', 'status=none']);
    delDevice(dev);

    // A daemon killed while it adds a device: the next one removes that device, which never went live.
    const orphan = await hangingAdd();
    d.proc.kill('SIGKILL');
    await d.exited;
    await orphan.ended;
    const next = await startDaemon('--threads', '1');
    try {
      assert.ok(await waitFor(() => !fs.existsSync(`/sys/class/ublk-char/ublkc${orphan.id}`), 30_000), 'the next daemon removed the orphan');
      assert.match(fs.readFileSync(LOG, 'utf8'), new RegExp(`ublkb${orphan.id}, being added when daemon \\d+ ended, removed`));

      const stopping = await hangingAdd();
      assert.equal(await stopDaemon(next), 0, 'the daemon stops with an add under way');
      const out = await stopping.ended;
      assert.notEqual(out.code, 0);
      assert.match(out.stderr, /the daemon is stopping/);
    } finally {
      await stopDaemon(next);
    }
  });
  assertClean();
});
