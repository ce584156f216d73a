// A kublk-compatible front end over ublk-ts, so that the kernel's own ublk
// selftests (tools/testing/selftests/ublk/test_*.sh, which call
// `$(dirname $0)/kublk`) drive ublk-ts. It only translates: kublk's command
// line into `ublk-ts` commands, and ublk-ts's answers into kublk's output.
// Everything a test needs is a ublk-ts feature; where ublk-ts lacks one,
// ublk-ts's own refusal is what the test sees. scripts/test-kernel.sh
// installs it as `kublk` next to the tests.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { describe, deviceIds, withControl, type DeviceListing } from '../../src/cli/devices.js';
import { readState } from '../../src/cli/state.js';
import { deviceTotals } from '../../src/cli/stats.js';
import { FEATURE_NAMES } from '../../src/ublk/abi/uapi.js';

// Loaded when a command runs ublk-ts: node:child_process brings node:net and
// the stream modules, about 0.05 s of a start in the emulated VM (0.1 s under
// the profiler), and `list` needs none of it (test_generic_06 allows 5 s for
// three `list` calls and a second).
const childProcess = (): typeof import('node:child_process') => createRequire(import.meta.url)('node:child_process');
const CLI = fileURLToPath(new URL('../../../bin/ublk-ts.js', import.meta.url));

// kublk's short options that take a value, and its long options without one (--htlb FILE takes one).
const SHORT_WITH_VALUE = new Set('tndqreis'.split(''));
const LONG_FLAGS = new Set([
  'all', 'quiet', 'zero_copy', 'foreground', 'get_data', 'auto_zc', 'auto_zc_fallback', 'user_copy', 'per_io_tasks',
  'no_ublk_fixed_fd', 'integrity_capable', 'integrity_reftag', 'safe', 'batch', 'no_auto_part_scan', 'shmem_zc',
  'rdonly_shmem_buf',
]);
const SHORT_NAMES: Record<string, string> = {
  t: 'type', n: 'number', d: 'depth', q: 'queues', r: 'recovery', e: 'recovery_fail_io', i: 'recovery_reissue', s: 'size',
  g: 'get_data', a: 'all', z: 'zero_copy', u: 'user_copy', b: 'batch',
};

interface Parsed { opts: Map<string, string>; files: string[] }

function parse(argv: string[]): Parsed {
  const opts = new Map<string, string>(), files: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith('--')) {
      const [name, inline] = a.slice(2).split('=', 2) as [string, string | undefined];
      if (inline !== undefined) opts.set(name, inline);
      else if (LONG_FLAGS.has(name)) opts.set(name, '1');
      else opts.set(name, argv[++i] ?? '');
    } else if (a.startsWith('-') && a.length > 1) {
      for (let j = 1; j < a.length; j++) {
        const c = a[j]!, name = SHORT_NAMES[c] ?? c;
        if (SHORT_WITH_VALUE.has(c)) {
          opts.set(name, j + 1 < a.length ? a.slice(j + 1) : argv[++i] ?? '');
          break;
        }
        opts.set(name, '1');
      }
    } else {
      files.push(a);
    }
  }
  return { opts, files };
}

/** kublk's device dump (ublk_ctrl_dump): what test_common.sh greps and awks. */
function dump(d: DeviceListing): void {
  const state = d.state === 'fail_io' ? 'FAIL_IO' : d.state.toUpperCase();
  process.stdout.write(`dev id ${d.id}: nr_hw_queues ${d.queues} queue_depth ${d.depth} block size ${d.blockSize} ` +
    `dev_capacity ${d.size / 512}\n\tmax rq size ${d.maxIoBytes} daemon pid ${d.pid ?? -1} flags 0x${d.flagBits.toString(16)} state ${state}\n`);
  for (let q = 0; q < d.queues; q++) process.stdout.write(`\tqueue ${q}: affinity(${q} )\n`);
}

async function listOne(id: number): Promise<DeviceListing | null> {
  return withControl((ctrl) => describe(ctrl, id));
}

/** The ublk-ts command line for kublk's `add`/`recover` options. */
function ublkTsAdd(p: Parsed): string[] {
  const o = p.opts, args: string[] = [];
  const type = o.get('type') ?? 'null';
  switch (type) {
    case 'null':
      // kublk's null target announces these limits (generic_03 checks them in sysfs).
      args.push('null', '--size', o.get('size') ?? '250G', '--dma-align', '4096', '--max-segments', '32', '--max-segment-size', '32K',
        '--segment-boundary', '4K');
      break;
    case 'fault_inject':
      args.push('fault-inject', '--size', o.get('size') ?? '250G', ...faultArgs(p));
      break;
    case 'loop':
      args.push('loop', '--file', p.files[0] ?? '');
      // With metadata, kublk's loop keeps it in its second file, filled with 0xff at every start.
      if (o.has('metadata_size') && p.files.length > 1) args.push('--metadata-file', p.files[1]!, '--init-metadata');
      break;
    case 'stripe':
      args.push('stripe', '--files', p.files.join(','));
      if (o.has('chunk_size')) args.push('--chunk-size', o.get('chunk_size')!);
      break;
    default: args.push(type);
  }
  args.push('--queues', o.get('queues') ?? '2', '--depth', o.get('depth') ?? '128');
  if (o.has('number') && o.get('number') !== '-1') args.push('--id', o.get('number')!);
  // kublk copies (kernel copy) unless told otherwise; ublk-ts would pick zero copy where it can.
  const copy = o.has('zero_copy') || o.has('auto_zc') ? 'zero' : o.has('user_copy') ? 'user' : 'kernel';
  args.push('--copy', copy);
  if (o.has('zero_copy') && !o.has('auto_zc')) args.push('--no-auto-buf-reg');
  if (o.has('get_data')) args.push('--need-get-data');
  if (o.has('batch')) args.push('--batch');
  if (o.has('nthreads')) args.push('--threads', o.get('nthreads')!);
  // --per_io_tasks: ublk-ts deals tags out to threads whenever classic mode has --threads (UBLK_F_PER_IO_DAEMON).
  if (o.has('no_auto_part_scan')) args.push('--no-part-scan');
  const rec = (k: string) => o.has(k) && o.get(k) !== '0';
  if (rec('recovery') || rec('recovery_fail_io') || rec('recovery_reissue')) {
    // kublk restarts nothing by itself: the tests kill the server and call `recover`.
    args.push('--recovery', rec('recovery_fail_io') ? 'fail-io' : rec('recovery_reissue') ? 'reissue' : 'requeue', '--no-supervisor');
  }
  args.push(...integrityArgs(p));
  // --shmem_zc --htlb FILE: kublk and the test's fio map the same file; kublk without --htlb takes memfds
  // over a unix socket, which ublk-ts does not (its application passes the file).
  if (o.has('htlb')) args.push('--shmem', o.get('htlb')!);
  else if (o.has('shmem_zc')) throw new Error('ublk-ts registers shared memory from a file: --shmem_zc needs --htlb FILE');
  if (o.has('rdonly_shmem_buf')) args.push('--shmem-read-only');
  if (o.has('foreground')) args.push('--foreground');
  return args;
}

/** kublk's UBLK_F_INTEGRITY options, as ublk-ts's device options. */
function integrityArgs(p: Parsed): string[] {
  const o = p.opts, args: string[] = [];
  for (const [kublk, ours] of [['metadata_size', '--metadata-size'], ['pi_offset', '--pi-offset'], ['csum_type', '--csum-type'],
    ['tag_size', '--tag-size']] as const) {
    if (o.has(kublk)) args.push(ours, o.get(kublk)!);
  }
  if (o.has('integrity_capable')) args.push('--integrity-capable');
  if (o.has('integrity_reftag')) args.push('--integrity-reftag');
  return args;
}

/**
 * For a device with shared memory (--htlb): how many of its requests were
 * served from it, so that a test's log shows whether zero copy happened.
 */
function reportShmem(id: number): void {
  const file = readState(id)?.config?.shmem, totals = file === undefined ? null : deviceTotals(id);
  if (totals) {
    process.stderr.write(`kublk front end: /dev/ublkb${id} served ${totals.shmem} of ${totals.reads + totals.writes} ` +
      `reads and writes from shared memory ${file}\n`);
  }
}

/** fault_inject's own options, as ublk-ts's fault-inject target takes them. */
function faultArgs(p: Parsed): string[] {
  const o = p.opts, args: string[] = [];
  if (o.has('delay_us')) args.push('--delay-us', o.get('delay_us')!);
  if (o.get('die_during_fetch') === '1') args.push('--die-during-fetch');
  return args;
}

/** Runs ublk-ts; for `add`/`recover`, prints kublk's dump of the device it made live. */
async function runUblkTs(args: string[], foreground: boolean): Promise<number> {
  if (!foreground) {
    const r = childProcess().spawnSync(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
    const path = r.stdout.trim().split('\n').pop() ?? '';
    const m = /^\/dev\/ublkb(\d+)$/.exec(path);
    if (r.status !== 0 || !m) {
      process.stderr.write(`cmd_dev_${args[0]}: command failed\n`);
      return 1;
    }
    const d = await listOne(Number(m[1]));
    if (d) dump(d);
    return 0;
  }
  // --foreground: the server serves in the child; its death by a signal is ours (as kublk's own exit would be).
  const child = childProcess().spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  child.stdout.setEncoding('utf8').on('data', (text: string) => {
    const m = /\/dev\/ublkb(\d+)/.exec(text);
    if (m) void listOne(Number(m[1])).then((d) => d && dump(d));
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => child.kill(sig));
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((r) => child.on('exit', (c, s) => r([c, s])));
  if (signal) process.kill(process.pid, signal);
  return code ?? 1;
}

/**
 * Runs `ublk-ts ARGS`. `stdout` 'ignore': for a command kublk answers silently
 * (test_common.sh captures its stdout together with the state it echoes).
 */
function cli(args: string[], stdout: 'inherit' | 'ignore' = 'inherit'): number {
  return childProcess().spawnSync(process.execPath, [CLI, ...args], { stdio: ['inherit', stdout, 'inherit'] }).status ?? 1;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const p = parse(rest);
  const id = p.opts.get('number');
  switch (cmd) {
    case 'add':
      return runUblkTs(['add', ...ublkTsAdd(p)], p.opts.has('foreground'));
    case 'recover':
      if (id === undefined) {
        process.stderr.write('device id isn\'t provided for recovering\n');
        return 1;
      }
      // The saved configuration holds the rest; target options given again replace the saved ones.
      return runUblkTs(['recover', id, ...(p.opts.has('foreground') ? ['--foreground'] : []),
        ...(p.opts.get('type') === 'fault_inject' ? faultArgs(p) : [])], p.opts.has('foreground'));
    case 'list': {
      const ids = id !== undefined ? [Number(id)] : deviceIds();
      for (const i of ids) {
        const d = await listOne(i).catch(() => null);
        if (d) dump(d);
      }
      return 0;
    }
    case 'del':
      if (id !== undefined) reportShmem(Number(id));
      return cli(p.opts.has('all') ? ['del', '--all'] : ['del', id ?? '']);
    case 'stop':
      if (id !== undefined) reportShmem(Number(id));
      return cli(['del', id ?? '', ...(p.opts.has('safe') ? ['--safe'] : [])]);
    case 'quiesce':
      return cli(['quiesce', id ?? ''], 'ignore');
    case 'update_size':
      return cli(['resize', id ?? '', p.opts.get('size') ?? '']);
    case 'features': {
      const r = childProcess().spawnSync(process.execPath, [CLI, 'features', '--json'], { encoding: 'utf8' });
      if (r.status !== 0) return r.status ?? 1;
      const names = JSON.parse(r.stdout) as string[];
      let bits = 0;
      for (const [bit, name] of FEATURE_NAMES) if (names.includes(name)) bits += bit;
      process.stdout.write(`ublk_drv features: 0x${bits.toString(16)}\n`);
      for (const [bit, name] of FEATURE_NAMES) {
        if (names.includes(name)) process.stdout.write(`0x${bit.toString(16).padEnd(16)}: UBLK_F_${name}\n`);
      }
      for (const n of names.filter((x) => x.startsWith('0x'))) process.stdout.write(`${n.padEnd(18)}: unknown\n`);
      return 0;
    }
    default:
      process.stderr.write(`kublk front end for ublk-ts: unknown command '${cmd}'\n`);
      return 1;
  }
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (e: unknown) => {
  process.stderr.write(`${(e as Error)?.message ?? e}\n`);
  process.exitCode = 1;
});
