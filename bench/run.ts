// `npm run bench`: inside the VM, fio against ublk-ts devices and the kernel's
// own drivers, in interleaved rounds; prints medians and ratios. Only ratios
// measured in one VM run mean anything: the VM is emulated.
//
//   node dist/bench/run.js [suite...]      suites: nullblk batch loop poll nbd daemon wake (default: all)
//   BENCH_ROUNDS=3 BENCH_RUNTIME=4         rounds per case, seconds per fio run
//   BENCH_WARMUP=2                         seconds of unmeasured 4k, then 512k, IO per subject first
//   BENCH_KUBLK=/path/to/kublk             also measure the kernel's C server
//   BENCH_POLL_TARGETS=null,loop,contended the poll suite's tables (default: all three)
//   BENCH_DAEMON_COUNTS=1,10,100,1000      the daemon suite's device counts (daemon.ts)
//   BENCH_CASES=RE BENCH_SUBJECTS=RE       only the cases / subjects whose names match (tables show NaN for the rest)
//
// Devices are created with the library in this process; fio runs as a child
// while the queue workers serve (the main thread is not on the IO path).
import { daemonSuite } from './daemon.js';
import { loopSuite } from './loop.js';
import { nbdSuite } from './nbd.js';
import { pollSuite } from './poll.js';
import { wakeSuite } from './wake.js';
import { median, Results } from './report.js';
import { costTable, cpuTable, KUBLK, kublk, measure, MiB, release, ROUNDS, serverPerIoTable, sh, ublk, type Case, type Subject } from './suite.js';

/** The batch subject's mean tags per FETCH completion, per case. */
function tagsLine(cases: Case[], tags: Map<string, number[]>): string {
  return 'mean tags per FETCH completion (batch): ' +
    cases.map((c) => `${c.name} ${median(tags.get(`${c.name}|batch`) ?? []).toFixed(1)}`).join(', ');
}

/** ublk-ts null target (classic and batch) against the kernel's null_blk. */
async function nullblkSuite(): Promise<string> {
  sh('modprobe', 'null_blk', 'nr_devices=1', 'queue_mode=2', 'irqmode=0', 'submit_queues=1', 'gb=4');
  const subjects: Subject[] = [{ name: 'null_blk', path: '/dev/nullb0' }];
  try {
    // Default options: zero copy, no data copied between the request's pages
    // and a server buffer (kublk: --auto_zc). The copy costs either server
    // 2-4 µs per IO at QD 64 under emulation (a 4 KiB `rep movs`); `-kc`:
    // kernel copy, as kublk's default.
    subjects.push(await ublk('classic', { target: 'null', options: { size: 4 * 2 ** 30 } }));
    subjects.push(await ublk('batch', { target: 'null', options: { size: 4 * 2 ** 30 }, batch: true }));
    subjects.push(await ublk('classic-kc', { target: 'null', options: { size: 4 * 2 ** 30 }, copy: 'kernel' }));
    if (KUBLK) {
      subjects.push(kublk('kublk', 'null', '-q', '1', '-d', '128'));
      subjects.push(kublk('kublk-b', 'null', '-q', '1', '-d', '128', '--batch'));
      subjects.push(kublk('kublk-zc', 'null', '-q', '1', '-d', '128', '--auto_zc'));
    }
    const names = subjects.map((s) => s.name);
    // fio submits each IO with its own system call unless told to batch; the
    // QD 64 cases with `fio batch 16` show what batching does when requests
    // reach ublk in bursts, as they do from a submitter that batches.
    const cases: Case[] = (['randread', 'randwrite'] as const).flatMap((rw) => [
      ...[1, 64].map((iodepth) => ({ name: `4k ${rw} QD${iodepth}`, rw, iodepth })),
      { name: `4k ${rw} QD64 fio batch 16`, rw, iodepth: 64, batch: 16 },
    ]);
    const results = new Results();
    const { tags, cpu, costs, perIo } = measure(results, cases, subjects, '1g');
    const vs: Array<[string, string]> = names.filter((n) => n !== 'null_blk').map((n) => [n, 'null_blk']);
    vs.push(['batch', 'classic']);
    vs.push(['classic', 'classic-kc']);
    if (KUBLK) vs.push(['kublk-b', 'kublk'], ['kublk-zc', 'kublk'], ['classic', 'kublk-zc'], ['classic-kc', 'kublk'], ['classic', 'kublk']);
    return results.table(`null target vs null_blk (1 queue, default options: zero copy; -kc: --copy kernel; ` +
      `kublk-zc: --auto_zc; median of ${ROUNDS})`, 'IOPS', names, vs) +
      '\n' + tagsLine(cases, tags) + '\n\n' + cpuTable(cpu, subjects) + '\n\n' + serverPerIoTable(perIo, subjects, KUBLK ? 'kublk' : undefined) +
      '\n\n' + costTable(costs, subjects);
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
        const { tags, cpu, costs } = measure(results, cases, subjects, `${128 / queues}m`);
        tables.push(results.table(`${target} target, ${queues} queue(s): batch vs classic (median of ${ROUNDS})`, 'IOPS',
          ['classic', 'batch'], [['batch', 'classic']]) + '\n' + tagsLine(cases, tags) + '\n\n' + cpuTable(cpu, subjects) + '\n\n' + costTable(costs, subjects));
      } finally {
        await release(subjects);
      }
    }
  }
  return tables.join('\n\n');
}

const SUITES: Record<string, () => Promise<string>> = {
  nullblk: nullblkSuite, batch: batchSuite, loop: loopSuite, poll: pollSuite, nbd: nbdSuite, daemon: daemonSuite, wake: wakeSuite,
};

async function main(): Promise<void> {
  if (process.env.UBLK_TS_IN_VM !== '1') {
    console.error('bench: run it with `npm run bench` (it needs the VM)');
    process.exit(2);
  }
  const names = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(SUITES);
  for (const n of names) if (!SUITES[n]) throw new Error(`unknown suite ${n} (have: ${Object.keys(SUITES).join(' ')})`);
  const out: string[] = [];
  for (const n of names) {
    const t0 = Date.now();
    out.push(await SUITES[n]!());
    console.log(`suite ${n}: ${Math.round((Date.now() - t0) / 1000)} s`);
  }
  console.log('\n' + out.join('\n\n'));
}

await main();
