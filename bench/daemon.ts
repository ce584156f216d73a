// Many devices (issue 15): one `ublk-ts daemon` against a server process per
// device (`add --no-daemon`).
//
// 1. Memory and add/del time for 1, 10, 100 and 1000 null devices in the
//    daemon (2 serving threads), and for 1 and 10 with a process each (100
//    processes of about 50 MiB would not fit the VM): the servers' RSS in
//    all, and the median and 90th percentile of an add and a del request
//    (the daemon's over its socket, as `add` sends it, without the start of
//    a command; a process's as `ublk-ts add`/`del`, which start it).
// 2. Aggregate IOPS of 1, 10 and 100 null devices under fio (4k randread,
//    one job per device at QD 4) served by the daemon's 2 threads, and of 10
//    devices with a server each, in interleaved rounds; with the servers'
//    CPU time per IO.
//
//   BENCH_DAEMON_COUNTS=1,10,100,1000   the device counts of part 1
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { askDaemon, daemonStatus } from '../src/cli/daemon.js';
import { median, Results } from './report.js';
import { cpuSeconds, ROUNDS, RUNTIME } from './suite.js';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/ublk-ts.js');
const COUNTS = (process.env.BENCH_DAEMON_COUNTS ?? '1,10,100,1000').split(',').map(Number);
/** A process per device is measured up to this many devices (each costs tens of MiB). */
const PROCESS_MAX = 10;
const NULL_SIZE = 1 << 30;

interface Daemon { proc: ChildProcess; exited: Promise<void> }

async function startDaemon(): Promise<Daemon> {
  const proc = spawn(process.execPath, [CLI, 'daemon', '--threads', '2'], { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  for (let i = 0; i < 300; i++) {
    if ((await daemonStatus().catch(() => null))?.pid === proc.pid) return { proc, exited };
    await sleep(100);
  }
  throw new Error('the daemon did not start');
}

async function stopDaemon(d: Daemon): Promise<void> {
  d.proc.kill('SIGTERM');
  await d.exited;
}

function cli(...args: string[]): string {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`ublk-ts ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const rssKiB = (pid: number): number => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);

/** The pid serving each listed device. */
function servers(): Map<string, number> {
  const list = JSON.parse(cli('list', '--json')) as Array<{ path: string; pid: number }>;
  return new Map(list.map((l) => [l.path, l.pid]));
}

const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;
const p90 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.9))]!;

interface Scale { mode: string; n: number; rssMiB: number; addMs: number[]; delMs: number[] }

async function daemonScale(n: number): Promise<Scale> {
  const d = await startDaemon();
  try {
    const addMs: number[] = [], delMs: number[] = [], ids: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = process.hrtime.bigint();
      ids.push((await askDaemon<{ id: number }>({ op: 'add', cfg: { target: 'null', options: { size: NULL_SIZE } } })).id);
      addMs.push(ms(t0));
    }
    await sleep(1000); // partition scans settle
    const rssMiB = rssKiB(d.proc.pid!) / 1024;
    for (const id of ids) {
      const t0 = process.hrtime.bigint();
      await askDaemon({ op: 'del', id });
      delMs.push(ms(t0));
    }
    return { mode: 'daemon', n, rssMiB, addMs, delMs };
  } finally {
    await stopDaemon(d);
  }
}

function processScale(n: number): Scale {
  const addMs: number[] = [], delMs: number[] = [], paths: string[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const t0 = process.hrtime.bigint();
      paths.push(cli('add', 'null', '-s', String(NULL_SIZE), '--no-daemon').trim().split('\n').pop()!);
      addMs.push(ms(t0));
    }
    const pids = servers();
    const rssMiB = paths.reduce((a, p) => a + rssKiB(pids.get(p)!), 0) / 1024;
    for (const p of paths.splice(0)) {
      const t0 = process.hrtime.bigint();
      cli('del', p.replace('/dev/ublkb', ''));
      delMs.push(ms(t0));
    }
    return { mode: 'process each', n, rssMiB, addMs, delMs };
  } finally {
    if (paths.length) cli('del', '--all');
  }
}

function scaleTable(rows: Scale[]): string {
  const head = ['devices', 'servers', 'RSS in all (MiB)', 'RSS per device (MiB)', 'add median (ms)', 'add p90 (ms)', 'del median (ms)', 'del p90 (ms)'];
  const body = rows.map((r) => [String(r.n), r.mode, r.rssMiB.toFixed(0), (r.rssMiB / r.n).toFixed(2),
    median(r.addMs).toFixed(0), p90(r.addMs).toFixed(0), median(r.delMs).toFixed(0), p90(r.delMs).toFixed(0)]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (r: string[]) => r.map((x, i) => (i < 2 ? x.padEnd(w[i]!) : x.padStart(w[i]!))).join('  ');
  return ['## Many devices: servers\' memory and add/del time (null target; daemon requests over its socket, ' +
    'a process\'s through `ublk-ts add`/`del`)', line(head), ...body.map(line)].join('\n');
}

/** fio over every device at once (a job each); returns IOPS in all and the IOs done. */
function fioOver(devs: string[]): { iops: number; ios: number } {
  const jobs = devs.flatMap((d, i) => [`--name=d${i}`, `--filename=${d}`]);
  const r = spawnSync('fio', ['--ioengine=io_uring', '--direct=1', '--rw=randread', '--bs=4k', '--iodepth=4', '--time_based',
    `--runtime=${RUNTIME}`, '--ramp_time=1', '--size=256m', '--randrepeat=0', '--norandommap', '--group_reporting',
    '--output-format=json', ...jobs], { encoding: 'utf8', timeout: (RUNTIME + 120) * 1000, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`fio over ${devs.length} devices: ${r.stderr}`);
  const out = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { jobs: Array<{ read: { iops: number; total_ios: number } }> };
  return { iops: out.jobs[0]!.read.iops, ios: out.jobs[0]!.read.total_ios };
}

interface Fleet { name: string; devs: string[]; pids: number[]; close(): Promise<void> }

async function daemonFleet(n: number): Promise<Fleet> {
  const d = await startDaemon();
  const devs: string[] = [];
  for (let i = 0; i < n; i++) devs.push((await askDaemon<{ path: string }>({ op: 'add', cfg: { target: 'null', options: { size: NULL_SIZE } } })).path);
  return { name: `daemon, ${n}`, devs, pids: [d.proc.pid!], close: () => stopDaemon(d) };
}

function processFleet(n: number): Fleet {
  const devs: string[] = [];
  for (let i = 0; i < n; i++) devs.push(cli('add', 'null', '-s', String(NULL_SIZE), '--no-daemon').trim().split('\n').pop()!);
  const pids = servers();
  return { name: `process each, ${n}`, devs, pids: devs.map((p) => pids.get(p)!), close: async () => void cli('del', '--all') };
}

export async function daemonSuite(): Promise<string> {
  const rows: Scale[] = [];
  for (const n of COUNTS) {
    rows.push(await daemonScale(n));
    if (n <= PROCESS_MAX) rows.push(processScale(n));
    console.log(`daemon suite: ${n} device(s) measured`);
  }
  // Aggregate IOPS: every fleet lives through all rounds, each round runs fio on each in turn.
  const fleets: Fleet[] = [];
  const iops = new Results(), cpu = new Results();
  try {
    // The daemon fleets one at a time (one daemon runs at once), each against 10 servers of their own.
    const own = processFleet(10);
    fleets.push(own);
    for (const n of [1, 10, 100]) {
      const fleet = await daemonFleet(n);
      fleets.push(fleet);
      for (let round = 0; round < ROUNDS; round++) {
        for (const f of n === 10 ? [fleet, own] : [fleet]) {
          const before = f.pids.reduce((a, p) => a + cpuSeconds(p), 0);
          const r = fioOver(f.devs);
          const used = f.pids.reduce((a, p) => a + cpuSeconds(p), 0) - before;
          iops.add('4k randread QD 4 per device', f.name, r.iops);
          cpu.add('4k randread QD 4 per device', f.name, (used * 1e6) / Math.max(1, r.ios));
        }
      }
      await fleet.close();
      fleets.pop();
    }
  } finally {
    for (const f of fleets) await f.close().catch(() => {});
  }
  const names = ['daemon, 1', 'daemon, 10', 'daemon, 100', 'process each, 10'];
  return scaleTable(rows) + '\n\n' +
    iops.table(`Aggregate IOPS over many null devices, the daemon on 2 threads (median of ${ROUNDS})`, 'IOPS', names,
      [['daemon, 10', 'process each, 10']]) + '\n\n' +
    cpu.table('servers\' CPU µs per IO', 'µs', names, [['daemon, 10', 'process each, 10']], undefined, 1);
}
