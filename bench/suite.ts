// What the suites share: the run's settings, subjects (devices under test) and
// the interleaved measuring loop.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { UblkDevice, uapi, type DeviceOptions } from '../src/index.js';
import { totalStats } from '../src/ublk/stats.js';
import { parseSizeText } from '../src/options/spec.js';
import { fio, type FioJob } from './fio.js';
import { Results } from './report.js';

const { UBLK_F_BATCH_IO } = uapi;

export const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
export const RUNTIME = Number(process.env.BENCH_RUNTIME ?? 4);
/**
 * Seconds of mixed IO, per block size (4 KiB, then 512 KiB, reads and
 * writes), each subject serves before the first round: a ublk-ts server's JIT compiles its hot
 * path in its first seconds (under emulation a function takes hundreds of
 * ms), which otherwise fell on round 1's first cases (a cold nbd server
 * served 4k reads at 0.6x of a warm one). Servers in production are warm.
 */
export const WARMUP = Number(process.env.BENCH_WARMUP ?? 2);
export const MiB = 2 ** 20;

export interface Subject {
  name: string;
  path: string;
  /** The ublk-ts device, if this subject is one. */
  dev?: UblkDevice;
  /** The device id, if this subject is served by kublk. */
  kublkId?: number;
  /** The serving process, whose CPU time is measured (not for kernel drivers). */
  pid?: number;
  /** Other processes on this subject's IO path whose CPU time is measured too (an NBD server). */
  peers?: Array<{ name: string; pid: number }>;
}

/**
 * The kernel's C reference server (tools/testing/selftests/ublk/kublk), if
 * BENCH_KUBLK names a binary of it: then the suites measure it side by side.
 * It is not part of ublk-ts; build it from the kernel's source to compare.
 */
export const KUBLK = process.env.BENCH_KUBLK ?? '';

/**
 * BENCH_CASES / BENCH_SUBJECTS: regular expressions that narrow a run to the
 * cases and subjects whose names match (a quick look at one change; the
 * suites' tables then show what ran).
 */
const only = (v: string | undefined) => (v ? new RegExp(v) : null);
const CASES_RE = only(process.env.BENCH_CASES), SUBJECTS_RE = only(process.env.BENCH_SUBJECTS);

/** One fio workload, run against every subject. */
export interface Case {
  name: string;
  rw: FioJob['rw'];
  /** Block size; default 4k. */
  bs?: string;
  iodepth: number;
  /** fio jobs, each in its own region; default 1. */
  jobs?: number;
  /** Seconds of warm-up before each measurement; default 1. */
  ramp?: number;
  /** IOs fio submits and reaps per system call; default 1. */
  batch?: number;
  /** What is recorded: IOPS (the default) or MB/s. */
  unit?: 'IOPS' | 'MB/s';
}

/** Runs a command; returns its stdout, throws on failure. */
export function sh(cmd: string, ...args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.error}`);
  return r.stdout;
}

/** rmmod, retried for 5 s while the module is still in use (a device let go late). */
export async function unloadModule(name: string): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      sh('rmmod', name);
      return;
    } catch (e) {
      if (i >= 20) throw e;
      await sleep(250);
    }
  }
}

export async function ublk(name: string, o: DeviceOptions): Promise<Subject> {
  const dev = await UblkDevice.create({ depth: 128, ...o });
  return { name, path: dev.path, dev, pid: process.pid };
}

/**
 * Runs every clean-up step, in order, whatever the others do: a failure is
 * reported and makes the run's exit code 1, but does not hide the error (if
 * any) that brought us here.
 */
export async function cleanUp(...steps: Array<() => unknown>): Promise<void> {
  for (const step of steps) {
    try {
      await step();
    } catch (e) {
      console.error(`bench: clean-up failed: ${(e as Error).message}`);
      process.exitCode = 1;
    }
  }
}

/** A kublk device: `kublk add -t TARGET ARGS...` (it daemonizes once the device is live). */
export function kublk(name: string, target: string, ...args: string[]): Subject {
  const out = sh(KUBLK, 'add', '-t', target, ...args);
  const id = /dev id (\d+):/.exec(out)?.[1];
  if (id === undefined) throw new Error(`kublk add printed no device id:\n${out}`);
  const pid = /daemon pid (\d+)/.exec(out)?.[1];
  return { name, path: `/dev/ublkb${id}`, kublkId: Number(id), pid: pid === undefined ? undefined : Number(pid) };
}

export async function release(subjects: Subject[]): Promise<void> {
  await cleanUp(...subjects.map((s) => () => (s.kublkId === undefined ? s.dev?.stop() : sh(KUBLK, 'del', '-n', String(s.kublkId)))));
}

/** A process's CPU time (all threads, user + system) in seconds, from /proc (clock ticks of 10 ms). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from 3 (state) on
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime: fields 14 and 15
}

/** What measure() records besides the results. */
export interface Extras {
  /** Batch devices' mean tags per FETCH completion, keyed `case|subject`. */
  tags: Map<string, number[]>;
  /** CPU use in % of one CPU: `subject` is the serving process, `subject fio` is fio. */
  cpu: Results;
  /** ublk-ts subjects' costs per request: `subject enters`, `subject turns`, `subject CQEs`, `subject bytes` (heap allocated). */
  costs: Results;
  /**
   * CPU µs per fio IO (IOs counted from the device's sectors moved, ramp
   * included): `subject` the serving process, `subject PEER` each peer, over
   * the whole fio run (they idle while fio starts); `subject fio` fio's own,
   * over its measured runtime.
   */
  perIo: Results;
}

/** Sectors read and written so far on a block device (/sys/block/NAME/stat, fields 3 and 7). */
function sectorsMoved(dev: string): number {
  const f = readFileSync(`/sys/block/${dev.slice(dev.lastIndexOf('/') + 1)}/stat`, 'utf8').trim().split(/\s+/);
  return Number(f[2]) + Number(f[6]);
}

/** A fio block size ('4k', '512k', '1m') in bytes. */
function bytesOf(size: string): number {
  const n = parseSizeText(size);
  if (n === undefined) throw new Error(`block size ${size}: expected digits with an optional k or m`);
  return n;
}

/**
 * Runs every case against every subject, ROUNDS times, alternating the order
 * of subjects between rounds so drift in the VM hits all alike. Records the
 * CPU use of fio and of the serving process, and for batch devices the mean
 * tags per fetch completion, per case.
 */
export function measure(results: Results, cases: Case[], subjects: Subject[], size: string): Extras {
  const tagsPerFetch = new Map<string, number[]>();
  const cpu = new Results();
  const costs = new Results();
  const perIo = new Results();
  cases = cases.filter((c) => !CASES_RE || CASES_RE.test(c.name));
  subjects = subjects.filter((s) => !SUBJECTS_RE || SUBJECTS_RE.test(s.name));
  sameScheduler(subjects);
  warmUp(subjects, size);
  for (let round = 1; round <= ROUNDS; round++) {
    for (const c of cases) {
      const order = round % 2 ? subjects : [...subjects].reverse();
      for (const s of order) {
        const batch = s.dev && s.dev.flags & UBLK_F_BATCH_IO ? s.dev : undefined;
        const before = batch?.batchStats;
        const costs0 = s.dev && totalStats(s.dev.stats());
        const procs = [...(s.pid === undefined ? [] : [{ name: '', pid: s.pid }]), ...(s.peers ?? []).map((p) => ({ ...p, name: ` ${p.name}` }))];
        const cpu0 = procs.map((p) => cpuSeconds(p.pid));
        const sectors0 = sectorsMoved(s.path);
        const t0 = performance.now();
        const bs = c.bs ?? '4k';
        const r = fio({
          filename: s.path, rw: c.rw, bs, iodepth: c.iodepth, numjobs: c.jobs, runtime: RUNTIME, ramp: c.ramp, batch: c.batch, size,
        });
        const ms = performance.now() - t0;
        const ios = Math.max(1, ((sectorsMoved(s.path) - sectors0) * 512) / bytesOf(bs));
        procs.forEach((p, i) => {
          const used = cpuSeconds(p.pid) - cpu0[i]!;
          cpu.add(c.name, s.name + p.name, (used * 1e5) / ms);
          perIo.add(c.name, s.name + p.name, (used * 1e6) / ios);
        });
        cpu.add(c.name, `${s.name} fio`, r.cpu);
        perIo.add(c.name, `${s.name} fio`, (r.cpu * (c.jobs ?? 1) * 1e4) / Math.max(1, r.iops)); // r.cpu is about one job's share
        const unit = c.unit ?? 'IOPS';
        const value = unit === 'IOPS' ? r.iops : r.mbps;
        results.add(c.name, s.name, value);
        let note = '';
        if (costs0 && s.dev) {
          const c1 = totalStats(s.dev.stats());
          const requests = Math.max(1, c1.reads + c1.writes + c1.other - (costs0.reads + costs0.writes + costs0.other));
          for (const [col, k] of COSTS) costs.add(c.name, `${s.name} ${col}`, (c1[k] - costs0[k]) / requests);
          note = `, per request ${COSTS.map(([col, k]) => `${((c1[k] - costs0[k]) / requests).toFixed(2)} ${col}`).join(' ')}`;
        }
        if (before && batch) {
          const after = batch.batchStats;
          const mean = (after.tags - before.tags) / Math.max(1, after.fetchCqes - before.fetchCqes);
          const key = `${c.name}|${s.name}`;
          tagsPerFetch.set(key, [...(tagsPerFetch.get(key) ?? []), mean]);
          note += `, ${mean.toFixed(1)} tags/fetch`;
        }
        console.log(`round ${round}: ${c.name}: ${s.name}: ${Math.round(value)} ${unit}${note}`);
      }
    }
  }
  return { tags: tagsPerFetch, cpu, costs, perIo };
}

/** WARMUP seconds of mixed IO per block size on each subject, not measured. */
function warmUp(subjects: Subject[], size: string): void {
  if (!(WARMUP > 0)) return;
  for (const s of subjects) {
    for (const [bs, iodepth] of [['4k', 32], ['512k', 8]] as const) {
      fio({ filename: s.path, rw: 'randrw', bs, iodepth, runtime: Math.ceil(WARMUP), ramp: 0, size });
    }
  }
}

/**
 * Every subject with a block I/O scheduler gets `none`, as ublk-ts sets on
 * its own devices by default (control/scheduler.ts): the kernel gives
 * single-queue disks (kublk's, null_blk's, loop's) mq-deadline, whose
 * kblockd hop would otherwise decide the comparison.
 */
function sameScheduler(subjects: Subject[]): void {
  for (const s of subjects) {
    const file = `/sys/block/${s.path.replace(/^\/dev\//, '')}/queue/scheduler`;
    if (existsSync(file)) writeFileSync(file, 'none');
  }
}

/** A request's costs in a ublk-ts server, beyond its own work: what the per-request table shows. */
const COSTS: Array<[string, 'enters' | 'turns' | 'cqes' | 'heapBytes' | 'spinUsec']> = [
  ['enters', 'enters'], ['turns', 'turns'], ['CQEs', 'cqes'], ['bytes', 'heapBytes'], ['spin µs', 'spinUsec'],
];

/**
 * Per request, in each ublk-ts subject's serving threads: io_uring_enter
 * calls, serving-loop turns (a wake-up into JavaScript each), CQEs reaped,
 * bytes allocated on the JavaScript heap and µs spent spinning for the next
 * request (next to tags per fetch completion, these say where a request's
 * time goes).
 */
export function costTable(costs: Results, subjects: Subject[]): string {
  const cols = subjects.filter((s) => s.dev).flatMap((s) => COSTS.map(([col]) => `${s.name} ${col}`));
  return costs.table('per request in the server: io_uring_enter calls, loop turns, CQEs, heap bytes allocated, µs spent spinning (polling)',
    'per IO', cols, [], undefined, 2);
}

/**
 * CPU µs per IO of each serving process (ublk-ts: the bench process, which
 * serves one device at a time; kublk: its daemon), with each one's ratio to
 * `reference` (e.g. kublk) where that was measured.
 */
export function serverPerIoTable(perIo: Results, subjects: Subject[], reference?: string): string {
  const cols = subjects.filter((s) => s.pid !== undefined).map((s) => s.name);
  const vs = reference && cols.includes(reference) ? cols.filter((n) => n !== reference).map((n): [string, string] => [n, reference]) : [];
  return perIo.table('server CPU µs per IO', 'µs', cols, vs, undefined, 1);
}

/**
 * CPU use per case, in % of one CPU: each serving process's (the ublk-ts
 * bench process or kublk's daemon, all its threads) and fio's as its group
 * report gives it (with several jobs, about one job's share). Which side is
 * busy tells where a subject's limit lies: a server well below 100% while fio
 * is near it is waiting on the submitter and the kernel, not the other way
 * round.
 */
export function cpuTable(cpu: Results, subjects: Subject[]): string {
  const cols = subjects.flatMap((s) => [...(s.pid === undefined ? [] : [s.name]), ...(s.peers ?? []).map((p) => `${s.name} ${p.name}`), `${s.name} fio`]);
  return cpu.table('CPU use, % of one CPU (server: the whole process; fio: about per job)', '%', cols, []);
}
