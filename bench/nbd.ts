// The `nbd` suite: the kernel's NBD client (nbd.ko, attached with Debian's
// nbd-client) against ublk-ts's nbd target, both in front of the same
// `nbdkit memory` export, over a Unix socket and over loopback TCP.
//
// ublk-ts serves with its default options (`ublk`: zero copy, each byte
// crossing memory once, as in the kernel client) and in kernel copy
// (`ublk-kc`: twice, socket and tag buffer, tag buffer and request).
//
// Both clients use one connection and one queue, and the same block size
// (512); nbdkit's CPU is measured for each, so its column doubles as a check
// that the server did the same work for both. The kernel client has no
// process of its own: its sending runs in fio's context (fio's CPU), its
// receiving in a kernel worker (not measured).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Results } from './report.js';
import { cleanUp, costTable, cpuTable, measure, MiB, release, ROUNDS, sh, ublk, unloadModule, type Case, type Subject } from './suite.js';

/** The export: every byte written once before measuring, so reads carry data. */
const SIZE = 256 * MiB;
const EXPORT = 'bench';
const PORT = 10809;
/** Sequential IO's queue depth (512 KiB requests). */
const SEQ_QD = 16;
const RAMP = 0.5;

const CASES: Case[] = [
  ...(['randread', 'randwrite'] as const).flatMap((rw) => [1, 64].map((iodepth) => ({ name: `4k ${rw} QD${iodepth}`, rw, iodepth, ramp: RAMP }))),
  ...(['read', 'write'] as const).map((rw) => ({
    name: `512k ${rw} QD${SEQ_QD}`, rw, bs: '512k', iodepth: SEQ_QD, ramp: RAMP, unit: 'MB/s' as const,
  })),
];

type Address = { path: string } | { port: number };

interface Transport {
  /** Suffix of the subjects' names. */
  name: string;
  address: Address;
  /** nbdkit's listening options. */
  listen: string[];
  /** nbd-client's arguments naming the server. */
  client: string[];
  /** The ublk-ts nbd target's options naming the server. */
  target: Record<string, unknown>;
}

function transports(dir: string): Transport[] {
  const sock = path.join(dir, 'nbdkit.sock');
  return [
    { name: 'unix', address: { path: sock }, listen: ['-U', sock], client: ['-u', sock], target: { socket: sock } },
    { name: 'tcp', address: { port: PORT }, listen: ['-i', '127.0.0.1', '-p', String(PORT)], client: ['127.0.0.1', String(PORT)], target: { host: '127.0.0.1', port: PORT } },
  ];
}

async function listening(a: Address): Promise<boolean> {
  return new Promise((resolve) => {
    const s = 'path' in a ? net.connect(a.path) : net.connect(a.port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

/** `nbdkit memory SIZE` in the foreground, once it accepts connections. */
async function nbdkit(t: Transport): Promise<ChildProcess> {
  const p = spawn('nbdkit', ['-f', ...t.listen, 'memory', String(SIZE)], { stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; i < 200; i++) {
    if (p.exitCode !== null) throw new Error(`nbdkit ${t.listen.join(' ')} exited with ${p.exitCode}`);
    if (await listening(t.address)) return p;
    await sleep(50);
  }
  p.kill('SIGKILL');
  throw new Error(`nbdkit ${t.listen.join(' ')}: not listening after 10 s`);
}

/** nbdkit waits for its clients on SIGTERM; they are gone by now, and nothing it holds needs keeping. */
async function stopNbdkit(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise((r) => p.once('exit', r));
  p.kill('SIGKILL');
  await gone;
}

/** Attaches /dev/nbdN to the export with nbd-client (netlink; it exits once the device is live). */
function kernelClient(t: Transport, nbd: string): Subject {
  sh('nbd-client', '-N', EXPORT, '-b', '512', ...t.client, nbd);
  const bytes = Number(fs.readFileSync(`/sys/block/${path.basename(nbd)}/size`, 'utf8')) * 512;
  if (bytes !== SIZE) throw new Error(`${nbd}: ${bytes} bytes after nbd-client, expected the export's ${SIZE}`);
  return { name: `knbd-${t.name}`, path: nbd };
}

/** Writes the whole export once (fio's buffers: not zeros, which a sparse store might not keep). */
function fill(dev: string): void {
  sh('fio', '--name=fill', `--filename=${dev}`, '--ioengine=io_uring', '--direct=1', '--rw=write', '--bs=1m', '--iodepth=8', `--size=${SIZE}`, '--output-format=terse');
}

/** Kernel NBD client vs ublk-ts nbd, per transport, on one nbdkit memory export each. */
export async function nbdSuite(): Promise<string> {
  sh('modprobe', 'nbd', 'nbds_max=2');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-nbd-'));
  const servers: ChildProcess[] = [];
  const attached: string[] = [];
  const subjects: Subject[] = [];
  try {
    for (const [i, t] of transports(dir).entries()) {
      const srv = await nbdkit(t);
      servers.push(srv);
      const peers = [{ name: 'nbdkit', pid: srv.pid! }];
      const k = kernelClient(t, `/dev/nbd${i}`);
      attached.push(k.path);
      subjects.push({ ...k, peers });
      fill(k.path);
      for (const copy of [undefined, 'kernel'] as const) {
        const u = await ublk(`ublk${copy ? '-kc' : ''}-${t.name}`, { target: 'nbd', copy, options: { ...t.target, export: EXPORT } });
        subjects.push({ ...u, peers });
      }
    }
    const results = new Results();
    const { cpu, costs, perIo } = measure(results, CASES, subjects, `${SIZE / MiB}m`);
    const names = subjects.map((s) => s.name);
    const vs = names.filter((n) => n.startsWith('ublk-')).map((n): [string, string] => [n, `knbd-${n.split('-').pop()}`]);
    const casesIn = (unit: string) => CASES.filter((c) => (c.unit ?? 'IOPS') === unit).map((c) => c.name);
    const title = `nbd: knbd = kernel NBD client (nbd-client, 1 connection), ublk = ublk-ts nbd target (1 queue, depth 128, 1 connection; ` +
      `default options: zero copy; ublk-kc: --copy kernel); ` +
      `one nbdkit memory ${SIZE / MiB} MiB export per transport (median of ${ROUNDS})`;
    const perIoCols = subjects.flatMap((s) => [...(s.pid === undefined ? [] : [s.name]), `${s.name} nbdkit`, `${s.name} fio`]);
    return [
      results.table(title, 'IOPS', names, vs, casesIn('IOPS')),
      results.table('nbd: sequential', 'MB/s', names, vs, casesIn('MB/s')),
      cpuTable(cpu, subjects),
      perIo.table('CPU µs per IO (ublk: the ublk-ts process; nbdkit; fio, whose system time holds the kernel client\'s sending)', 'µs', perIoCols, [], undefined, 1),
      costTable(costs, subjects),
    ].join('\n\n');
  } finally {
    await cleanUp(
      () => release(subjects),
      ...attached.map((nbd) => () => sh('nbd-client', '-d', nbd)),
      ...servers.map((p) => () => stopNbdkit(p)),
      () => fs.rmSync(dir, { recursive: true, force: true }),
      () => unloadModule('nbd'),
    );
  }
}
