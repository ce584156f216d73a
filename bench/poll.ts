// The `poll` suite: what spinning before sleeping (--poll-us) buys the
// serving thread, classic and batch, on the null target and the loop target
// (over brd), at QD 1 and QD 64.
import { Results } from './report.js';
import { cleanUp, measure, MiB, release, ROUNDS, sh, ublk, type Case, type Subject } from './suite.js';

const POLL_USEC = Number(process.env.BENCH_POLL_US ?? 50);

export async function pollSuite(): Promise<string> {
  const tables: string[] = [];
  sh('modprobe', 'brd', 'rd_nr=1', `rd_size=${(128 * MiB) / 1024}`);
  try {
    sh('dd', 'if=/dev/zero', 'of=/dev/ram0', 'bs=1M', 'count=128', 'oflag=direct', 'status=none');
    for (const [target, options] of [['null', { size: 128 * MiB }], ['loop', { file: '/dev/ram0' }]] as const) {
      const subjects: Subject[] = [];
      try {
        for (const batch of [false, true]) {
          for (const pollUsec of [0, POLL_USEC]) {
            const copy = target === 'loop' ? 'zero' : 'kernel';
            subjects.push(await ublk(`${batch ? 'batch' : 'classic'}${pollUsec ? '-poll' : ''}`, { target, options, batch, pollUsec, copy }));
          }
        }
        const cases: Case[] = (['randread', 'randwrite'] as const).flatMap((rw) => [1, 64].map((iodepth) => ({ name: `4k ${rw} QD${iodepth}`, rw, iodepth })));
        const results = new Results();
        measure(results, cases, subjects, '128m');
        tables.push(results.table(`${target} target${target === 'loop' ? ' (zero copy, brd)' : ''}: --poll-us ${POLL_USEC} vs 0 (median of ${ROUNDS})`,
          'IOPS', subjects.map((s) => s.name), [['classic-poll', 'classic'], ['batch-poll', 'batch'], ['batch', 'classic'], ['batch-poll', 'classic']]));
      } finally {
        await release(subjects);
      }
    }
  } finally {
    await cleanUp(() => sh('rmmod', 'brd'));
  }
  return tables.join('\n\n');
}
