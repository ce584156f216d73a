// The `poll` suite: what spinning before sleeping buys the serving thread,
// classic and batch, at QD 1 and QD 64, beside the kernel's own references:
// on the null target, and on the loop target (zero copy, over brd) against
// the kernel loop driver. Each engine runs with the default (adaptive
// polling, PollGovernor), with polling off (`-nopoll`: --poll-us 0) and with a
// fixed window (`-poll`: --poll-us 1000). With BENCH_KUBLK the kernel's C
// server (kublk) is measured too, so our ratios and its ratios come from one
// VM run. A last table has every CPU busy (2 serving threads, 2 fio jobs):
// where spinning can only take a CPU from someone else.
import { kernelLoop, loadRamDisk, RAM, unloadRamDisk } from './ramdisk.js';
import { Results } from './report.js';
import {
  cleanUp, costTable, cpuTable, KUBLK, kublk, measure, MiB, release, ROUNDS, serverPerIoTable, sh, ublk, type Case, type Subject,
} from './suite.js';

/** 1 ms: long enough to span the gap between requests at QD 1 in the emulated VM, so the server never sleeps while IO flows. */
const POLL_USEC = Number(process.env.BENCH_POLL_US ?? 1000);
const SIZE = 128 * MiB;
const CASES: Case[] = (['randread', 'randwrite'] as const).flatMap((rw) => [1, 64].map((iodepth) => ({ name: `4k ${rw} QD${iodepth}`, rw, iodepth })));

/** Name suffix per polling choice: the default (adaptive), off, a fixed window. */
const POLLING: Array<[string, number | undefined]> = [['', undefined], ['-nopoll', 0], ['-poll', POLL_USEC]];

/** classic, classic-nopoll, classic-poll, and the same for batch. */
async function ublkSubjects(target: 'null' | 'loop', options: Record<string, unknown>): Promise<Subject[]> {
  const subjects: Subject[] = [];
  for (const batch of [false, true]) {
    for (const [suffix, pollUsec] of POLLING) {
      const copy = target === 'loop' ? 'zero' : 'kernel';
      subjects.push(await ublk(`${batch ? 'batch' : 'classic'}${suffix}`, { target, options, batch, pollUsec, copy }));
    }
  }
  return subjects;
}

const POLL_RATIOS: Array<[string, string]> = [
  ['classic', 'classic-nopoll'], ['classic-poll', 'classic-nopoll'], ['batch', 'batch-nopoll'], ['batch-poll', 'batch-nopoll'], ['batch', 'classic'],
];

async function nullTable(): Promise<string> {
  const subjects: Subject[] = [];
  try {
    subjects.push(...(await ublkSubjects('null', { size: SIZE })));
    const vs = [...POLL_RATIOS];
    if (KUBLK) {
      subjects.push(kublk('kublk', 'null', '-q', '1', '-d', '128'));
      vs.push(['classic', 'kublk'], ['classic-nopoll', 'kublk'], ['classic-poll', 'kublk'], ['batch', 'kublk']);
    }
    const results = new Results();
    const { cpu, costs, perIo } = measure(results, CASES, subjects, '128m');
    return [
      results.table(`null target: adaptive polling (default), --poll-us 0 (-nopoll), --poll-us ${POLL_USEC} (-poll) (median of ${ROUNDS})`,
        'IOPS', subjects.map((s) => s.name), vs),
      cpuTable(cpu, subjects), serverPerIoTable(perIo, subjects, 'kublk'), costTable(costs, subjects),
    ].join('\n\n');
  } finally {
    await release(subjects);
  }
}

async function loopTable(): Promise<string> {
  loadRamDisk(SIZE);
  const subjects: Subject[] = [];
  let kloop = '';
  try {
    kloop = kernelLoop();
    subjects.push({ name: 'kloop', path: kloop }, ...(await ublkSubjects('loop', { file: RAM })));
    if (KUBLK) {
      subjects.push(kublk('kublk', 'loop', '-q', '1', '-d', '128', RAM));
      subjects.push(kublk('kublk-zc', 'loop', '-q', '1', '-d', '128', '--auto_zc', RAM));
    }
    const results = new Results();
    const { cpu, costs, perIo } = measure(results, CASES, subjects, '128m');
    const names = subjects.map((s) => s.name);
    return results.table(`loop target (zero copy) over brd, kloop = kernel loop driver: adaptive polling (default), --poll-us 0 (-nopoll), ` +
      `--poll-us ${POLL_USEC} (-poll) (median of ${ROUNDS})`,
      'IOPS', names, [
        ...names.filter((n) => n !== 'kloop').map((n): [string, string] => [n, 'kloop']),
        ...(KUBLK ? (['classic', 'classic-nopoll', 'batch'] as const).map((n): [string, string] => [n, 'kublk-zc']) : []),
      ]) + '\n\n' + cpuTable(cpu, subjects) +
      '\n\n' + serverPerIoTable(perIo, subjects, 'kublk-zc') + '\n\n' + costTable(costs, subjects);
  } finally {
    await cleanUp(() => release(subjects), () => kloop && sh('losetup', '-d', kloop), unloadRamDisk);
  }
}

/**
 * Where every CPU is busy: 2 queues served by 2 threads and 2 fio jobs, on
 * the VM's 2 vCPUs. Spinning there takes a CPU someone else waits for; the
 * adaptive default must not cost IOPS against --poll-us 0.
 */
async function contendedTable(): Promise<string> {
  const subjects: Subject[] = [];
  try {
    for (const [suffix, pollUsec] of POLLING.slice(0, 2)) {
      subjects.push(await ublk(`classic${suffix}`, { target: 'null', options: { size: SIZE }, queues: 2, pollUsec }));
    }
    const cases: Case[] = [1, 16].map((iodepth) => ({ name: `4k randread QD${iodepth} x 2 jobs`, rw: 'randread', iodepth, jobs: 2 }));
    const results = new Results();
    const { cpu } = measure(results, cases, subjects, '128m');
    return results.table(`all CPUs busy: null target, 2 queues, 2 fio jobs (median of ${ROUNDS})`, 'IOPS', subjects.map((s) => s.name),
      [['classic', 'classic-nopoll']]) + '\n\n' + cpuTable(cpu, subjects);
  } finally {
    await release(subjects);
  }
}

/** BENCH_POLL_TARGETS=null (or loop, contended) measures only that table. */
const TARGETS = (process.env.BENCH_POLL_TARGETS ?? 'null,loop,contended').split(',');

export async function pollSuite(): Promise<string> {
  const tables: string[] = [];
  if (TARGETS.includes('null')) tables.push(await nullTable());
  if (TARGETS.includes('loop')) tables.push(await loopTable());
  if (TARGETS.includes('contended')) tables.push(await contendedTable());
  return tables.join('\n\n');
}
