// The `loop` suite: the kernel's loop driver against ublk-ts's loop target in
// every copy mode, classic and batch, all on the same brd RAM disk.
import type { CopyMode } from '../src/index.js';
import { kernelLoop, loadRamDisk, RAM, unloadRamDisk } from './ramdisk.js';
import { Results } from './report.js';
import { cleanUp, costTable, cpuTable, measure, MiB, release, ROUNDS, sh, ublk, type Case, type Subject } from './suite.js';

/** The backing store of every subject: brd's one RAM disk, whole. */
const BACKING = 256 * MiB;
/** The kernel loop driver's subject; the baseline of every ratio. */
const KLOOP = 'kloop';
const COPIES: CopyMode[] = ['kernel', 'user', 'zero'];

// 8 cases × 7 subjects × BENCH_ROUNDS fio runs: with 3 rounds of 4 s that is
// 168 runs of 4.5 s plus fio's start (2.5-3.5 s in the emulated VM), about
// 20-23 minutes; hence the short warm-up (brd and these devices need little).
const RAMP = 0.5;
const CASES: Case[] = [
  ...(['randread', 'randwrite'] as const).flatMap((rw) => [1, 32, 128].map((iodepth) => ({
    name: `4k ${rw} QD${iodepth}`, rw, iodepth, ramp: RAMP,
  }))),
  ...(['read', 'write'] as const).map((rw) => ({
    name: `128k ${rw} QD32`, rw, bs: '128k', iodepth: 32, ramp: RAMP, unit: 'MB/s' as const,
  })),
];

/** Kernel loop vs ublk-ts loop × {kernel, user, zero copy} × {classic, batch}, 1 queue, depth 128. */
export async function loopSuite(): Promise<string> {
  loadRamDisk(BACKING);
  const subjects: Subject[] = [];
  let kloop = '';
  try {
    kloop = kernelLoop();
    subjects.push({ name: KLOOP, path: kloop });
    for (const batch of [false, true]) {
      for (const copy of COPIES) {
        subjects.push(await ublk(`${batch ? 'b' : 'c'}-${copy}`, { target: 'loop', options: { file: RAM }, copy, batch, queues: 1 }));
      }
    }
    const results = new Results();
    const { cpu, costs } = measure(results, CASES, subjects, `${BACKING / MiB}m`);
    const names = subjects.map((s) => s.name);
    const casesIn = (unit: string) => CASES.filter((c) => (c.unit ?? 'IOPS') === unit).map((c) => c.name);
    const title = `loop: ${KLOOP} = kernel loop driver (losetup --direct-io=on); c-/b- = ublk-ts loop target, classic/batch, ` +
      `kernel/user/zero copy; all on a ${BACKING / MiB} MiB brd, 1 queue, depth 128 (median of ${ROUNDS})`;
    return [
      results.table(title, 'IOPS', names, [], casesIn('IOPS')),
      results.table('loop: sequential', 'MB/s', names, [], casesIn('MB/s')),
      results.table(`loop: ublk-ts / ${KLOOP}`, '', [], names.filter((n) => n !== KLOOP).map((n) => [n, KLOOP])),
      cpuTable(cpu, subjects) + '\n\n' + costTable(costs, subjects),
    ].join('\n\n');
  } finally {
    await cleanUp(() => release(subjects), () => kloop && sh('losetup', '-d', kloop), unloadRamDisk);
  }
}
