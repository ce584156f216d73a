// `npm run bench`: inside the VM, fio against ublk-ts devices and the kernel's
// own drivers, in interleaved rounds; prints medians and ratios. Only ratios
// measured in one VM run mean anything: the VM is emulated.
//
//   node dist/bench/run.js [suite...]      suites: nullblk batch (default: all)
//   BENCH_ROUNDS=3 BENCH_RUNTIME=4         rounds per case, seconds per fio run
//
// Devices are created with the library in this process; fio runs as a child
// while the queue workers serve (the main thread is not on the IO path).
import { spawnSync } from 'node:child_process';
import { UblkDevice, uapi, type DeviceOptions } from '../src/index.js';

const { UBLK_F_BATCH_IO } = uapi;
import { fio } from './fio.js';
import { median, Results } from './report.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const RUNTIME = Number(process.env.BENCH_RUNTIME ?? 4);
const MiB = 2 ** 20;

interface Subject {
  name: string;
  path: string;
  /** The ublk-ts device, if this subject is one. */
  dev?: UblkDevice;
}

function sh(cmd: string, ...args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.error}`);
}

async function ublk(name: string, o: DeviceOptions): Promise<Subject> {
  const dev = await UblkDevice.create({ depth: 128, ...o });
  return { name, path: dev.path, dev };
}

async function release(subjects: Subject[]): Promise<void> {
  for (const s of subjects) await s.dev?.stop();
}

/**
 * Runs every case against every subject, ROUNDS times, alternating the order
 * of subjects between rounds so drift in the VM hits all alike. Batch devices
 * also get their mean tags per fetch completion recorded, per case.
 */
function measure(results: Results, cases: Array<{ name: string; rw: 'randread' | 'randwrite'; iodepth: number; jobs: number }>,
  subjects: Subject[], size: string): Map<string, number[]> {
  const tagsPerFetch = new Map<string, number[]>();
  for (let round = 1; round <= ROUNDS; round++) {
    for (const c of cases) {
      const order = round % 2 ? subjects : [...subjects].reverse();
      for (const s of order) {
        const batch = s.dev && s.dev.flags & UBLK_F_BATCH_IO ? s.dev : undefined;
        const before = batch?.batchStats;
        const r = fio({ filename: s.path, rw: c.rw, bs: '4k', iodepth: c.iodepth, numjobs: c.jobs, runtime: RUNTIME, size });
        results.add(c.name, s.name, r.iops);
        let note = '';
        if (before && batch) {
          const after = batch.batchStats;
          const mean = (after.tags - before.tags) / Math.max(1, after.fetchCqes - before.fetchCqes);
          const key = `${c.name}|${s.name}`;
          tagsPerFetch.set(key, [...(tagsPerFetch.get(key) ?? []), mean]);
          note = `, ${mean.toFixed(1)} tags/fetch`;
        }
        console.log(`round ${round}: ${c.name}: ${s.name}: ${Math.round(r.iops)} IOPS${note}`);
      }
    }
  }
  return tagsPerFetch;
}

/** ublk-ts null target (classic and batch) against the kernel's null_blk. */
async function nullblkSuite(): Promise<string> {
  sh('modprobe', 'null_blk', 'nr_devices=1', 'queue_mode=2', 'irqmode=0', 'submit_queues=1', 'gb=4');
  const subjects: Subject[] = [{ name: 'null_blk', path: '/dev/nullb0' }];
  try {
    subjects.push(await ublk('classic', { target: 'null', options: { size: 4 * 2 ** 30 } }));
    subjects.push(await ublk('batch', { target: 'null', options: { size: 4 * 2 ** 30 }, batch: true }));
    const cases = (['randread', 'randwrite'] as const).flatMap((rw) => [1, 64].map((iodepth) => ({ name: `4k ${rw} QD${iodepth}`, rw, iodepth, jobs: 1 })));
    const results = new Results();
    measure(results, cases, subjects, '1g');
    return results.table(`null target vs null_blk (1 queue, median of ${ROUNDS})`, 'IOPS', ['null_blk', 'classic', 'batch'],
      [['classic', 'null_blk'], ['batch', 'null_blk']]);
  } finally {
    await release(subjects);
    sh('rmmod', 'null_blk');
  }
}

/** Batch vs classic on the null and memory targets, 1 and 2 queues. */
async function batchSuite(): Promise<string> {
  const tables: string[] = [];
  for (const target of ['null', 'memory']) {
    for (const queues of [1, 2]) {
      const options = { size: 256 * MiB };
      const subjects = [
        await ublk('classic', { target, options, queues }),
        await ublk('batch', { target, options, queues, batch: true }),
      ];
      try {
        const cases = (['randread', 'randwrite'] as const).flatMap((rw) => [1, 64, 128].map((qd) => ({
          name: `4k ${rw} QD${qd}`, rw, iodepth: Math.max(1, qd / queues), jobs: queues,
        })));
        const results = new Results();
        const tags = measure(results, cases, subjects, `${128 / queues}m`);
        let t = results.table(`${target} target, ${queues} queue(s): batch vs classic (median of ${ROUNDS})`, 'IOPS',
          ['classic', 'batch'], [['batch', 'classic']]);
        t += '\nmean tags per FETCH completion (batch): ' +
          cases.map((c) => `${c.name} ${median(tags.get(`${c.name}|batch`) ?? []).toFixed(1)}`).join(', ');
        tables.push(t);
      } finally {
        await release(subjects);
      }
    }
  }
  return tables.join('\n\n');
}

const SUITES: Record<string, () => Promise<string>> = { nullblk: nullblkSuite, batch: batchSuite };

async function main(): Promise<void> {
  if (process.env.UBLK_TS_IN_VM !== '1') {
    console.error('bench: run it with `npm run bench` (it needs the VM)');
    process.exit(2);
  }
  const names = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(SUITES);
  for (const n of names) if (!SUITES[n]) throw new Error(`unknown suite ${n} (have: ${Object.keys(SUITES).join(' ')})`);
  const out: string[] = [];
  for (const n of names) out.push(await SUITES[n]!());
  console.log('\n' + out.join('\n\n'));
}

await main();
