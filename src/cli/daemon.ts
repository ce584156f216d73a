// `ublk-ts daemon`: one server process for any number of devices, served on a
// fixed pool of threads (control/serving-thread.ts, ThreadPool) instead of a
// process and threads per device. `ublk-ts add` hands a device to it when it
// runs (and to a server of its own otherwise, or with --no-daemon); `del`
// asks it to stop one. It runs in the foreground (a systemd service, or `&`),
// logging to stderr, until SIGTERM or SIGINT, which stop its devices.
import os from 'node:os';
import path from 'node:path';
import { checkOptions, type OptionSpec } from '../options/spec.js';
import { UblkControl } from '../ublk/control/control.js';
import { UblkDevice } from '../ublk/control/device.js';
import { ThreadPool } from '../ublk/control/serving-thread.js';
import { ModeError } from '../ublk/mode.js';
import { processAlive } from '../process-alive.js';
import { deleteDevice, deviceIds } from './devices.js';
import { readArgs, type Command } from './command.js';
import { askJson, listenJson, NoServerError, type CodedError } from './control-socket.js';
import { exitCodeOf, oneLine, ReportedError, UsageError } from './errors.js';
import type { ServeConfig } from './server.js';
import { daemonServes, readState, removeState, STATE_DIR, writeState } from './state.js';

export const daemonSocket = (): string => path.join(STATE_DIR, 'daemon.sock');

export type DaemonRequest =
  | { op: 'add'; cfg: ServeConfig }
  | { op: 'del'; id: number }
  | { op: 'resize'; id: number; size: number }
  | { op: 'status' };

export interface DaemonStatus {
  pid: number;
  threads: number;
  /** Devices per serving thread. */
  load: number[];
  devices: number[];
}

const DAEMON_OPTIONS: readonly OptionSpec[] = [
  { key: 'threads', type: 'int', arg: 'N', min: 1, max: 1024, help: 'serving threads shared by all devices (default: one per CPU)' },
  { key: 'pollUsec', flag: 'poll-us', type: 'int', arg: 'N', min: 0, max: 1_000_000,
    help: 'µs a serving thread spins for requests before it sleeps (0: never; default: adaptive)' },
];

export const daemonCommand: Command = {
  name: 'daemon',
  brief: 'serve any number of devices from one process (`add` uses it while it runs)',
  synopsis: '[--threads N] [--poll-us N]',
  summary: 'Run one server for many devices, on a fixed pool of serving threads, in the foreground until\n' +
    'SIGTERM or SIGINT (which stop its devices). While it runs, `ublk-ts add` creates devices in it\n' +
    '(--no-daemon: a server of their own) and `ublk-ts del` asks it to stop them.',
  options: DAEMON_OPTIONS,
  async run(argv) {
    const args = readArgs(daemonCommand, argv);
    if (!args) return;
    if (args.positionals.length) throw new UsageError(`unexpected argument '${args.positionals[0]}' (see ublk-ts daemon --help)`);
    const o = checkOptions(DAEMON_OPTIONS, args.values, 'cli') as { threads?: number; pollUsec?: number };
    await runDaemon(o.threads ?? os.availableParallelism(), o.pollUsec);
  },
};

/** Asks the running daemon (`timeoutMs` 0: without a bound); NoServerError when none runs; its errors come with the exit code they have there. */
export async function askDaemon<T extends object>(req: DaemonRequest, timeoutMs = 120_000): Promise<T> {
  try {
    return await askJson<DaemonRequest, T>(daemonSocket(), req, timeoutMs, 'the ublk-ts daemon');
  } catch (e) {
    const code = (e as CodedError).exitCode;
    throw code === undefined ? e : new ReportedError((e as Error).message, code);
  }
}

/** The running daemon's status, or null when none runs. */
export async function daemonStatus(): Promise<DaemonStatus | null> {
  try {
    return await askDaemon<DaemonStatus>({ op: 'status' }, 10_000);
  } catch (e) {
    if (e instanceof NoServerError) return null;
    throw e;
  }
}

/** Device options that are the daemon's to set, for all its devices, rather than a device's. */
function refuseForDaemon(cfg: ServeConfig): void {
  const own = [
    cfg.threads !== undefined && '--threads',
    cfg.pollUsec !== undefined && '--poll-us',
    (cfg.coalesceUsec ?? 0) !== 0 && '--coalesce-us',
    cfg.supervise === false && '--no-supervisor',
  ].filter(Boolean);
  if (own.length) {
    throw new ModeError(`${own.join(', ')}: the daemon's threads serve every device alike (set them on \`ublk-ts daemon\`), ` +
      'or add the device with --no-daemon for a server of its own');
  }
  if (cfg.recoverId !== undefined) throw new ModeError('the daemon does not recover devices yet: `ublk-ts recover` starts a server of their own');
}

/** An add under way. */
interface Adding {
  /** Fired to give it up (UblkDevice.create's signal). */
  abort: AbortController;
  /** The device's id once ADD_DEV gave one. */
  id: number | null;
  /** Resolves once the add has succeeded or failed (and cleaned up). */
  settled: Promise<void>;
}

interface Hosted {
  dev: UblkDevice;
  resize(size: number): Promise<void>;
  /** Resolves once the device is gone and its state removed. */
  gone: Promise<void>;
}

async function runDaemon(threads: number, pollUsec: number | undefined): Promise<void> {
  const say = (m: string): void => void console.error(`ublk-ts daemon[${process.pid}]: ${m}`);
  // The driver and the permission to use it, checked first; one control device for every device
  // (a device of its own would open one, with its ring: three descriptors per device).
  const control = UblkControl.open();
  const running = await daemonStatus().catch(() => null);
  if (running && processAlive(running.pid)) {
    control.close();
    throw new UsageError(`a ublk-ts daemon runs already (pid ${running.pid})`);
  }
  const pool = new ThreadPool(threads, { coalesceUsec: 0, pollUsec });
  const devices = new Map<number, Hosted>();
  let stopping = false;

  /** Serves a new device (`adding`: cancelled by a `del` of it, or a shutdown), or (`recoverId`) re-attaches a device a previous daemon served. */
  const host = async (cfg: ServeConfig, recoverId?: number, adding?: Adding): Promise<{ id: number; path: string }> => {
    if (stopping) throw new Error('the daemon is stopping');
    refuseForDaemon(cfg);
    const { recoverId: _r, supervise: _s, ...device } = cfg;
    // Until it is live, `del` finds the device's server in its state (the kernel names none before START_DEV).
    const added = (id: number): void => void (adding!.id = id);
    const opened = (id: number): void => writeState({ id, pid: process.pid, daemon: true, starting: true, target: cfg.target, options: device.options ?? {} });
    let dev: UblkDevice;
    try {
      dev = await (recoverId === undefined
        ? UblkDevice.create(device, { pool, control, signal: adding?.abort.signal, added, opened })
        : UblkDevice.recover(recoverId, device, { pool, control }));
    } catch (e) {
      if (adding?.id != null) removeState(adding.id);
      throw e;
    }
    const config: ServeConfig = { ...device };
    const save = (): void => writeState({
      id: dev.id, pid: process.pid, daemon: true, target: cfg.target, options: config.options ?? {}, statsFd: dev.statsFd, config,
    });
    save();
    // Stopped by `del` (through us or STOP_DEV from anywhere) or by a failure: cleaned up just the same.
    const gone = dev.stopped.then(() => dev.stop()).catch((e: unknown) => say(`${dev.path}: ${oneLine(e)}`)).then(() => {
      removeState(dev.id);
      devices.delete(dev.id);
      say(`${dev.path} removed`);
    });
    devices.set(dev.id, {
      dev, gone,
      // `resize` comes through the daemon's socket (no socket per device: one descriptor fewer each).
      resize: async (size) => {
        await dev.resize(size);
        config.options = { ...config.options, size };
        // (a `del` that ended the device meanwhile removed its state: writing it again would name a device that is gone)
        if (devices.get(dev.id)?.dev === dev) save();
        say(`${dev.path} resized to ${size} bytes`);
      },
    });
    say(`${dev.path} live (${cfg.target}, ${dev.queues} queue(s), depth ${dev.depth}, ${dev.mode.copy} copy; ${devices.size} device(s))`);
    return { id: dev.id, path: dev.path };
  };

  const hosted = (id: number): Hosted => {
    const h = devices.get(id);
    if (!h) throw new UsageError(`device ${id} is not served by this daemon`);
    return h;
  };

  // Adds under way: a shutdown cancels them and waits, so that none ends up with a device no one serves.
  const adding = new Set<Adding>();
  const answer = async (req: DaemonRequest, asker: AbortSignal): Promise<object> => {
    switch (req.op) {
      case 'add': {
        const a: Adding = { abort: new AbortController(), id: null, settled: Promise.resolve() };
        // The `add` that asked went away (Ctrl-C): no one waits for the device any more.
        asker.addEventListener('abort', () => a.abort.abort(new Error('the add was cancelled: the command that asked for it went away')), { once: true });
        const p = host(req.cfg, undefined, a);
        a.settled = p.then(() => {}, () => {});
        adding.add(a);
        return p.finally(() => adding.delete(a));
      }
      case 'del': {
        const h = devices.get(req.id);
        const a = h ? undefined : [...adding].find((x) => x.id === req.id);
        if (a) {
          // Not live yet (its target may never finish opening): its add gives up, removing it.
          a.abort.abort(new Error(`device ${req.id} was deleted before it was live`));
          await a.settled;
          return {};
        }
        const { dev, gone } = hosted(req.id);
        await dev.stop();
        await gone;
        return {};
      }
      case 'resize':
        await hosted(req.id).resize(req.size);
        return {};
      case 'status':
        return { pid: process.pid, threads: pool.size, load: pool.load, devices: [...devices.keys()] } satisfies DaemonStatus;
      default:
        throw new Error(`unknown request ${JSON.stringify((req as { op: unknown }).op)}`);
    }
  };
  // Errors reach the asking command as one line, with the exit code they would have had there.
  const handle = (req: DaemonRequest, asker: AbortSignal): Promise<object> =>
    answer(req, asker).catch((e: unknown) => { throw Object.assign(new Error(oneLine(e)), { exitCode: exitCodeOf(e) }); });

  // A previous daemon's devices created with --recovery wait for a server (it was killed, or crashed): this one takes them over.
  for (const id of deviceIds()) {
    const st = readState(id);
    if (!st?.daemon || processAlive(st.pid)) continue;
    if (st.starting) {
      // Never reported live, so no one waits for it: removed, as `add` removes a device whose own server died starting it.
      await deleteDevice(control, id, true).then(
        () => say(`/dev/ublkb${id}, being added when daemon ${st.pid} ended, removed`),
        (e: unknown) => say(`/dev/ublkb${id}, being added when daemon ${st.pid} ended, not removed: ${oneLine(e)} (\`ublk-ts del ${id}\` tries again)`));
      continue;
    }
    if (!st.config) continue;
    if ((st.config.recovery ?? 'none') === 'none') continue;
    await host(st.config as ServeConfig, id).then(
      () => say(`/dev/ublkb${id} recovered from daemon ${st.pid}`),
      (e: unknown) => say(`/dev/ublkb${id} of daemon ${st.pid} not recovered: ${oneLine(e)} (\`ublk-ts recover ${id}\` tries again)`));
  }
  const socket = listenJson<DaemonRequest, object>(daemonSocket(), handle, true);
  say(`serving on ${threads} thread(s); requests on ${daemonSocket()}`);
  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      if (stopping) return;
      stopping = true;
      say(`${sig}: stopping ${devices.size} device(s)`);
      resolve();
    };
    process.on('SIGTERM', () => stop('SIGTERM')).on('SIGINT', () => stop('SIGINT')).on('SIGHUP', () => {});
  });
  socket.close();
  for (const a of adding) a.abort.abort(new Error('the daemon is stopping'));
  await Promise.all([...adding].map((a) => a.settled));
  await Promise.all([...devices.values()].map(async (h) => {
    await h.dev.stop().catch((e: unknown) => say(`${h.dev.path}: ${oneLine(e)}`));
    await h.gone;
  }));
  await pool.close();
  control.close();
  say('stopped');
}

/** Whether device `id`'s state says the daemon serves it, and that daemon still runs. */
export function servedByDaemon(id: number): boolean {
  const st = readState(id);
  return st !== null && daemonServes(st, st.pid);
}

/** `add` through the daemon, if one runs: the device's path, or null (no daemon: the caller starts a server). */
export async function addToDaemon(cfg: ServeConfig): Promise<string | null> {
  try {
    // Without a bound, as a server of its own is waited for: a target's open may take its time
    // (nbd: up to its --timeout); Ctrl-C here cancels the add in the daemon.
    const r = await askDaemon<{ id: number; path: string }>({ op: 'add', cfg }, 0);
    return r.path;
  } catch (e) {
    if (e instanceof NoServerError) return null;
    throw e;
  }
}
