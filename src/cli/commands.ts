// The `ublk-ts` subcommands.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { UblkControl, UblkControlError, blockDevicePath } from '../ublk/control.js';
import { resolveTarget } from '../ublk/target-loader.js';
import { COPY_MODES, type CopyMode, type TargetOptions } from '../ublk/target.js';
import { featureNames, STATE_NAMES, UBLK_MAX_NR_QUEUES, UBLK_MAX_QUEUE_DEPTH } from '../ublk/uapi.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { ENODEV, ENOENT } from '../sys.js';
import { parseDeviceSize, parseIntOption, UsageError } from './args.js';
import { serve, type ServeConfig } from './server.js';
import { readState, removeState, STATE_DIR } from './state.js';

const MAX_DEV_ID = (1 << 20) - 1;

type Out = (line: string) => void;
const print: Out = (line) => process.stdout.write(line + '\n');

// ---- add -------------------------------------------------------------------

export function parseAdd(argv: string[]): { cfg: ServeConfig; foreground: boolean } {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      size: { type: 'string' },
      queues: { type: 'string' },
      depth: { type: 'string' },
      id: { type: 'string' },
      foreground: { type: 'boolean' },
      batch: { type: 'boolean' },
      threads: { type: 'string' },
      'coalesce-us': { type: 'string' },
      'poll-us': { type: 'string' },
      copy: { type: 'string' },
      'no-auto-buf-reg': { type: 'boolean' },
      file: { type: 'string' },
      buffered: { type: 'boolean' },
    },
  });
  if (positionals.length !== 1) throw new UsageError('add needs exactly one target: ublk-ts add null|memory|loop ...');
  const target = positionals[0]!;
  try {
    resolveTarget(target);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const options: TargetOptions = {};
  if (values.size !== undefined) options.size = parseDeviceSize(values.size);
  else if (target === 'null' || target === 'memory') throw new UsageError('--size is required');
  // The loop target's own options; a target module gets whatever was given.
  if (target === 'null' || target === 'memory') {
    if (values.file !== undefined || values.buffered) throw new UsageError('--file and --buffered are options of the loop target');
  } else {
    if (values.file !== undefined) options.file = values.file;
    if (values.buffered) options.buffered = true;
  }
  const copy = values.copy ?? 'kernel';
  if (!(COPY_MODES as readonly string[]).includes(copy)) throw new UsageError(`--copy must be one of ${COPY_MODES.join(', ')}, got '${copy}'`);
  if (values['no-auto-buf-reg'] && copy !== 'zero') throw new UsageError('--no-auto-buf-reg only applies to --copy zero');
  const cfg: ServeConfig = {
    target,
    options,
    copy: copy as CopyMode,
    autoBufReg: values['no-auto-buf-reg'] ? false : undefined,
    queues: values.queues === undefined ? 1 : parseIntOption('queues', values.queues, 1, UBLK_MAX_NR_QUEUES),
    depth: values.depth === undefined ? 128 : parseIntOption('depth', values.depth, 1, UBLK_MAX_QUEUE_DEPTH),
    id: values.id === undefined ? undefined : parseIntOption('id', values.id, 0, MAX_DEV_ID),
    batch: values.batch ?? false,
    threads: values.threads === undefined ? undefined : parseIntOption('threads', values.threads, 1, 1024),
    coalesceUsec: values['coalesce-us'] === undefined ? 0 : parseIntOption('coalesce-us', values['coalesce-us'], 0, 1_000_000),
    pollUsec: values['poll-us'] === undefined ? 0 : parseIntOption('poll-us', values['poll-us'], 0, 1_000_000),
  };
  if (cfg.threads !== undefined && !cfg.batch) throw new UsageError('--threads needs --batch (classic mode serves each queue from its own thread)');
  return { cfg, foreground: values.foreground ?? false };
}

type ServerMessage = { type: 'live'; id: number; path: string } | { type: 'error'; message: string };

export async function add(argv: string[]): Promise<void> {
  const { cfg, foreground } = parseAdd(argv);
  if (foreground) {
    await serve(cfg, (dev) => print(dev.path));
    return;
  }
  // Background: a detached server process; we return once it reports the device live.
  fs.mkdirSync(STATE_DIR, { recursive: true });
  const log = fs.openSync(path.join(STATE_DIR, 'server.log'), 'a');
  const main = fileURLToPath(new URL('./main.js', import.meta.url));
  const child = spawn(process.execPath, [main, '__serve', JSON.stringify(cfg)], {
    detached: true,
    stdio: ['ignore', 'ignore', log, 'ipc'],
  });
  fs.closeSync(log);
  const msg = await new Promise<ServerMessage>((resolve) => {
    child.once('message', (m) => resolve(m as ServerMessage));
    child.once('exit', (code, sig) =>
      resolve({ type: 'error', message: `server exited before the device was live (${sig ?? `exit code ${code}`}); see ${STATE_DIR}/server.log` }));
  });
  child.removeAllListeners();
  if (child.connected) child.disconnect();
  child.unref();
  if (msg.type === 'error') throw new Error(msg.message);
  print(msg.path);
}

/** The detached server: runs the device and reports to the `add` that started it. */
export async function serveChild(json: string): Promise<void> {
  const send = (m: ServerMessage): void => {
    if (process.connected) process.send!(m);
  };
  try {
    await serve(JSON.parse(json) as ServeConfig, (dev) => {
      console.error(`ublk-ts[${process.pid}]: ${dev.path} live (${dev.queues} queue(s), depth ${dev.depth})`);
      send({ type: 'live', id: dev.id, path: dev.path });
      if (process.connected) process.disconnect();
    });
  } catch (e) {
    send({ type: 'error', message: (e as Error).message });
    throw e;
  }
}

// ---- list ------------------------------------------------------------------

export interface DeviceListing {
  id: number;
  path: string;
  state: string;
  target: string;
  size: number;
  queues: number;
  depth: number;
  flags: string[];
  pid: number | null;
  maxIoBytes: number;
}

/** Device ids known to the driver, from sysfs (the char devices are created at ADD_DEV). */
export function deviceIds(): number[] {
  let names: string[];
  try {
    names = fs.readdirSync('/sys/class/ublk-char');
  } catch {
    return [];
  }
  return names.map((n) => /^ublkc(\d+)$/.exec(n)).filter((m) => m !== null).map((m) => Number(m![1])).sort((a, b) => a - b);
}

async function describe(ctrl: UblkControl, id: number): Promise<DeviceListing | null> {
  try {
    const info = await ctrl.getDevInfo(id);
    const params = await ctrl.getParams(id);
    const pid = info.ublksrv_pid > 0 ? info.ublksrv_pid : null;
    const st = readState(id);
    return {
      id,
      path: blockDevicePath(id),
      state: STATE_NAMES[info.state] ?? String(info.state),
      target: st && st.pid === pid ? st.target : 'unknown',
      size: params.basic.dev_sectors * 512,
      queues: info.nr_hw_queues,
      depth: info.queue_depth,
      flags: featureNames(info.flags),
      pid,
      maxIoBytes: info.max_io_buf_bytes,
    };
  } catch (e) {
    if (e instanceof UblkControlError && e.errno === -ENODEV) return null; // deleted meanwhile
    throw e;
  }
}

export async function list(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { json: { type: 'boolean' } } });
  const ctrl = openControl();
  try {
    const devs: DeviceListing[] = [];
    for (const id of deviceIds()) {
      const d = await describe(ctrl, id);
      if (d) devs.push(d);
    }
    if (values.json) {
      print(JSON.stringify(devs, null, 2));
      return;
    }
    for (const d of devs) {
      print(`${d.path}: id ${d.id}, ${d.state}, target ${d.target}, ${d.size} bytes, ${d.queues} queue(s) x ${d.depth}, pid ${d.pid ?? '-'}`);
      print(`  flags: ${d.flags.join(' ')}`);
    }
  } finally {
    ctrl.close();
  }
}

// ---- del -------------------------------------------------------------------

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH'; // EPERM: alive, not ours
  }
}

async function gone(ctrl: UblkControl, id: number): Promise<boolean> {
  try {
    await ctrl.getDevInfo(id);
    return false;
  } catch (e) {
    if (!(e instanceof UblkControlError)) throw e;
    if (e.errno === -ENODEV) return true;
    // The char device node can vanish before the id is released (GET_DEV_INFO2 checks it).
    if (e.errno === -ENOENT) return !deviceIds().includes(id);
    throw e;
  }
}

async function waitFor(cond: () => Promise<boolean> | boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await sleep(50);
  }
  return cond();
}

/**
 * Deletes device `id`: asks its server to stop (SIGTERM: it finishes in-flight
 * IO, stops and deletes the device); a device whose server is gone or does not
 * react is stopped and deleted from here.
 */
export async function deleteDevice(ctrl: UblkControl, id: number): Promise<void> {
  const info = await ctrl.getDevInfo(id).catch((e: unknown) => {
    if (e instanceof UblkControlError && e.errno === -ENODEV) throw new UsageError(`no ublk device with id ${id}`);
    throw e;
  });
  const pid = info.ublksrv_pid > 0 ? info.ublksrv_pid : null;
  if (pid !== null && alive(pid)) {
    process.kill(pid, 'SIGTERM');
    if ((await waitFor(() => gone(ctrl, id), 30_000)) && (await waitFor(() => !alive(pid), 10_000))) return;
    // The server did not finish: stop the device ourselves, then make sure it is dead.
    await ctrl.stopDev(id).catch(() => {});
    if (!(await waitFor(() => !alive(pid), 5_000))) process.kill(pid, 'SIGKILL');
    await waitFor(() => !alive(pid), 5_000);
  } else {
    await ctrl.stopDev(id).catch(() => {});
  }
  if (!(await gone(ctrl, id))) {
    await ctrl.delDev(id).catch((e: unknown) => {
      if (!(e instanceof UblkControlError && e.errno === -ENODEV)) throw e;
    });
  }
  removeState(id);
}

export async function del(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { all: { type: 'boolean' } } });
  if (values.all ? positionals.length !== 0 : positionals.length !== 1) throw new UsageError('usage: ublk-ts del ID | --all');
  const ctrl = openControl();
  try {
    const ids = values.all ? deviceIds() : [parseIntOption('id', positionals[0]!, 0, MAX_DEV_ID)];
    for (const id of ids) await deleteDevice(ctrl, id);
  } finally {
    ctrl.close();
  }
}

// ---- features --------------------------------------------------------------

export async function features(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { json: { type: 'boolean' } } });
  const ctrl = openControl();
  try {
    const names = featureNames(await ctrl.getFeatures());
    print(values.json ? JSON.stringify(names) : names.join('\n'));
  } finally {
    ctrl.close();
  }
}

function openControl(): UblkControl {
  try {
    return UblkControl.open();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new Error('/dev/ublk-control not found: load the driver with `modprobe ublk_drv`');
    throw e;
  }
}
