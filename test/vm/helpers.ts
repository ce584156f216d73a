// Shared helpers for the VM tests: they drive ublk-ts the way a user does, with
// the CLI and real tools (fio, mkfs, mount, fsck, dd, blkdiscard).
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import assert from 'node:assert/strict';
import { after, afterEach, before } from 'node:test';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { deviceIds } from '../../src/cli/devices.js';
import { readState } from '../../src/cli/state.js';
import { processHolds } from '../../src/process-alive.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const CLI = path.join(ROOT, 'bin', 'ublk-ts.js');

export function inVm(): void {
  assert.equal(process.env.UBLK_TS_IN_VM, '1', 'VM tests run inside the test VM (scripts/vmrun)');
}

/**
 * Set-up shared by the VM test files: inside the VM (with `cpus` vCPUs if
 * given), starting from nothing left over, and every test followed by a
 * clean-up, so a failed test does not leave devices behind for the next one.
 */
export function vmSuite(o: { cpus?: number } = {}): void {
  before(() => {
    inVm();
    if (o.cpus) assert.equal(os.cpus().length, o.cpus, `this VM has ${o.cpus} vCPUs`);
    cleanup();
    assertClean();
  });
  afterEach(cleanup);
}

/**
 * `npm test` runs a representative subset of the VM tests, within CI's time
 * budget; `npm run test:full` (UBLK_TS_FULL=1) runs them all. A test that is
 * full-only shows as skipped, with this reason, in `npm test`.
 */
export const FULL_ONLY = process.env.UBLK_TS_FULL === '1' ? false : 'in the full suite only (npm run test:full)';
/** The full suite is running: a test's extra variants (more copy modes, more targets) run too. */
export const FULL = FULL_ONLY === false;

export interface Run { code: number | null; stdout: string; stderr: string }

export function run(cmd: string, args: string[], opts: { timeout?: number; input?: string; env?: Record<string, string> } = {}): Run {
  const env = opts.env && { ...process.env, ...opts.env };
  const r: SpawnSyncReturns<string> = spawnSync(cmd, args, { encoding: 'utf8', timeout: opts.timeout ?? 600_000, input: opts.input, env });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs a command that must succeed; returns stdout. */
export function sh(cmd: string, ...args: string[]): string {
  const r = run(cmd, args);
  assert.equal(r.code, 0, `${cmd} ${args.join(' ')} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** The CLI with extra environment variables (fault injection). */
export const cliWith = (env: Record<string, string>, ...args: string[]): Run => run(process.execPath, [CLI, ...args], { env });
export const cli = (...args: string[]): Run => cliWith({}, ...args);

/** `ublk-ts add ...` that must succeed; returns the device path it printed last. */
export const addDevice = (...args: string[]): string => addDeviceWith({}, ...args);

/** addDevice with more environment (e.g. UBLK_TS_FAULT_HIDE_FEATURES). */
export function addDeviceWith(env: Record<string, string>, ...args: string[]): string {
  const r = cliWith(env, 'add', ...args);
  assert.equal(r.code, 0, `ublk-ts add ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  const dev = lines[lines.length - 1]!;
  assert.match(dev, /^\/dev\/ublkb\d+$/);
  assert.ok(fs.existsSync(dev), `${dev} exists once add returned`);
  return dev;
}

export const idOf = (dev: string): number => Number(/(\d+)$/.exec(dev)![1]);

export function delDevice(dev: string): void {
  const r = cli('del', String(idOf(dev)));
  assert.equal(r.code, 0, `ublk-ts del failed: ${r.stderr}`);
}

export interface Listed {
  id: number; path: string; state: string; target: string; size: number; queues: number; depth: number;
  flags: string[]; pid: number | null; supervisor: number | null; recovery: string; copy: string;
}

export function listDevices(): Listed[] {
  const r = cli('list', '--json');
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Listed[];
}

export const ublkNodes = (): string[] => fs.readdirSync('/dev').filter((n) => /^ublk[bc]\d+$/.test(n));

/** Pids of ublk-ts server processes (the detached `__serve` children, daemons) and their supervisors (`__supervise`). */
export function serverPids(): number[] {
  const pids: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8');
      const args = cmd.split('\0');
      // The detached server runs `node .../bin/ublk-ts.js __serve ...`; a foreground one `ublk-ts.js add ... --foreground`;
      // the daemon `ublk-ts.js daemon`.
      const cliAt = args.findIndex((a) => a.endsWith('ublk-ts.js'));
      if (args.includes('__serve') || args.includes('__supervise') ||
        (cliAt >= 0 && (args.includes('--foreground') || args[cliAt + 1] === 'daemon'))) pids.push(Number(p));
    } catch { /* exited meanwhile */ }
  }
  return pids;
}

/** Nothing ublk-ts made is left: no device nodes, no server process. */
export function assertClean(): void {
  assert.deepEqual(ublkNodes(), [], 'no /dev/ublkb* or /dev/ublkc* left');
  assert.deepEqual(serverPids(), [], 'no ublk-ts server process left');
}

/**
 * Removes every ublk device (`del --all`). With none left, as after most
 * tests, it skips that command: a Node start costs seconds under emulation.
 */
export function cleanup(): void {
  if (deviceIds().length > 0) cli('del', '--all');
}

export function fioVerify(dev: string, o: { iodepth: number; size?: string; bs?: string; rw?: string; extra?: string[]; timeoutMs?: number }): void {
  const args = [
    '--name=verify', `--filename=${dev}`, '--ioengine=io_uring', '--direct=1', `--iodepth=${o.iodepth}`,
    `--rw=${o.rw ?? 'randwrite'}`, `--bsrange=${o.bs ?? '512-1m'}`, `--size=${o.size ?? '48m'}`,
    '--verify=crc32c', '--verify_fatal=1', '--do_verify=1', '--verify_state_save=0', '--randrepeat=0', '--norandommap=0',
    '--output-format=terse', ...(o.extra ?? []),
  ];
  const r = run('fio', args, { timeout: o.timeoutMs ?? 900_000 });
  assert.equal(r.code, 0, `fio verify failed on ${dev}:\n${r.stdout}\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /verify.*(bad|fail)/i);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Loads brd afresh (any earlier brd goes first) with `disks` RAM disks of `kib` KiB; returns their paths, /dev/ram0... */
export function loadBrd(disks: number, kib: number): string[] {
  if (fs.existsSync('/sys/module/brd')) sh('rmmod', 'brd');
  sh('modprobe', 'brd', `rd_nr=${disks}`, `rd_size=${kib}`);
  return Array.from({ length: disks }, (_, i) => `/dev/ram${i}`);
}

/** brd's RAM disks for a whole test file: loaded before its tests, unloaded after them. */
export function brdForFile(disks: number, kib: number): string[] {
  before(() => loadBrd(disks, kib));
  after(() => run('rmmod', ['brd']));
  return Array.from({ length: disks }, (_, i) => `/dev/ram${i}`);
}

/** fio with `args` in the background; resolves with its exit code and its output (stdout and stderr). */
export function fioBackground(args: string[]): Promise<{ code: number | null; out: string }> {
  const fio = spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  fio.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  fio.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
  return new Promise((r) => fio.on('exit', (code) => r({ code, out })));
}

/** fio writing and verifying (crc32c) `size` of `dev`, in the background; resolves with its exit code and output. */
export function fioWriteVerify(dev: string, size: string): Promise<{ code: number | null; out: string }> {
  return fioBackground([
    '--name=recover', `--filename=${dev}`, '--ioengine=io_uring', '--direct=1', '--iodepth=16', '--rw=randwrite',
    '--bsrange=4k-64k', `--size=${size}`, '--verify=crc32c', '--verify_fatal=1', '--do_verify=1', '--randrepeat=0', '--verify_state_save=0',
    '--output-format=terse',
  ]);
}

export async function waitForState(id: number, state: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (listDevices().find((d) => d.id === id)?.state === state) return;
    await sleep(200);
  }
  assert.fail(`device ${id} did not become ${state}: ${JSON.stringify(listDevices())}`);
}

/** Kills the device's server (SIGKILL); with `andSupervisor`, its supervisor first, so that no new server is started. */
export function killServer(id: number, andSupervisor: boolean): number {
  const d = listDevices().find((x) => x.id === id)!;
  if (andSupervisor) {
    assert.ok(d.supervisor, 'a device with recovery has a supervisor');
    process.kill(d.supervisor, 'SIGKILL');
  }
  process.kill(d.pid!, 'SIGKILL');
  return d.pid!;
}

/**
 * Kills the server of `dev` (a device with --recovery) and its supervisor
 * while fio writes and verifies 24 MiB, waits for the device to be
 * quiesced, and recovers it: fio must finish with every write verified, and
 * the device be live again, served by `target`.
 */
export async function killAndRecoverUnderFio(dev: string, target: string): Promise<void> {
  const id = idOf(dev);
  const fio = fioWriteVerify(dev, '24m');
  await sleep(2500);
  killServer(id, true);
  // No server: the device waits (requests requeued), fio stays blocked, nothing fails.
  await waitForState(id, 'quiesced');
  const r = cli('recover', String(id));
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), dev);
  const done = await fio;
  assert.equal(done.code, 0, `fio after recovery:\n${done.out}`);
  assert.doesNotMatch(done.out, /verify.*(bad|fail)|error=/i);
  const listed = listDevices().find((d) => d.id === id)!;
  assert.equal(listed.state, 'live');
  assert.equal(listed.target, target);
}

/**
 * A target module whose open() (`--hang open`), close() (`--hang close`) or
 * setup's cleanup() (`--hang cleanup`) never settles, waiting on a timer as a hung target waits on a socket (a
 * thread with nothing left to wait on would end); its setup is fine.
 */
export const HANG_TARGET = '/tmp/hang-target.mjs';

export function writeHangTarget(): void {
  fs.writeFileSync(HANG_TARGET, `const never = () => new Promise(() => void setInterval(() => {}, 60_000));
  export default {
    name: 'hang', recoverable: true,
    options: [{ key: 'size', type: 'size', required: true, help: 'size' }, { key: 'hang', type: 'enum', choices: ['open', 'close', 'cleanup'], required: true, help: 'what never ends' }],
    setup: (o) => ({ size: o.size, shared: o.hang, cleanup: o.hang === 'cleanup' ? never : undefined }),
    open: (ctx) => (ctx.shared === 'open' ? never() : { read: (r) => r.length, write: (r) => r.length, close: never }),
  };`);
}

/** A CLI command left running: its process, and how it ended. */
function spawnCli(args: string[]): { proc: ChildProcess; ended: Promise<Run> } {
  const proc = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '', stderr = '';
  proc.stdout!.on('data', (d: Buffer) => (stdout += d));
  proc.stderr!.on('data', (d: Buffer) => (stderr += d));
  return { proc, ended: new Promise<Run>((r) => proc.once('close', (code) => r({ code, stdout, stderr }))) };
}

/** Whether a server, named in device `id`'s state as starting it, holds its /dev/ublkcN (on its way to the target's open). */
function startingHeld(id: number): boolean {
  const st = readState(id);
  return st?.starting === true && processHolds(st.pid, `/dev/ublkc${id}`);
}

/** Runs `args` until `device()` names a device a server is starting; the command is left running. */
async function hangingCli(args: string[], device: () => number | undefined): Promise<{ id: number; proc: ChildProcess; ended: Promise<Run> }> {
  writeHangTarget();
  const { proc, ended } = spawnCli(args);
  for (let i = 0; i < 600; i++) {
    const id = device();
    if (id !== undefined && startingHeld(id)) return { id, proc, ended };
    if (proc.exitCode !== null) break;
    await sleep(100);
  }
  proc.kill('SIGKILL');
  throw new Error(`${args.slice(0, 2).join(' ')}: no server reached the target's open: ${JSON.stringify(await ended)}`);
}

/** `ublk-ts add` of HANG_TARGET whose open never ends, left running: the device it made and how the add ended. */
export function hangingAdd(...args: string[]): Promise<{ id: number; proc: ChildProcess; ended: Promise<Run> }> {
  const before = new Set(deviceIds());
  return hangingCli(['add', HANG_TARGET, '--size', '16M', '--hang', 'open', ...args], () => deviceIds().find((n) => !before.has(n)));
}

/** `ublk-ts recover ID` of a HANG_TARGET device, with an open that never ends, left running. */
export function hangingRecover(id: number): Promise<{ id: number; proc: ChildProcess; ended: Promise<Run> }> {
  return hangingCli(['recover', String(id), '--hang', 'open'], () => id);
}
