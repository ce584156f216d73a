// Starting a device's server for `add` and `recover`: in the foreground, or
// as a detached process that reports back once the device is live (or why it
// is not) and then runs on its own, from /, logging into its device's file.
// A device with recovery gets a supervisor process between the two, which
// restarts a server that dies (supervisor.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { UblkControl } from '../ublk/control/control.js';
import { packageFile } from '../package-files.js';
import { print } from './command.js';
import { exitCodeOf, oneLine, ReportedError } from './errors.js';
import { closeInheritedFds, dropOwnDeviceMounts, inOwnMountNamespace } from './hygiene.js';
import { deleteDevice, withControl } from './devices.js';
import { ServerLog } from './log.js';
import { serve, type ServeConfig } from './server.js';
import { logFile, STATE_DIR } from './state.js';
import { ensureRunDir } from '../run-dir.js';
import { settledWithin } from '../settled-within.js';

export type ServerMessage = { type: 'live'; id: number; path: string } | { type: 'error'; message: string; exitCode: number };
/** Sent right after ADD_DEV: should the server die before it reports, the device is deleted by whoever started it. */
type AddedMessage = { type: 'added'; id: number };

/** Runs the server for `cfg`; returns once the device is live (background) or gone (foreground), printing its path. */
export async function launch(cfg: ServeConfig, foreground: boolean): Promise<void> {
  // The driver and the permission to use it, checked before anything is made.
  UblkControl.open().close();
  if (foreground) {
    await serve(cfg, (dev) => print(dev.path));
    return;
  }
  ensureRunDir();
  const logPath = path.join(STATE_DIR, 'server.log');
  const log = fs.openSync(logPath, 'a');
  const supervised = (cfg.recovery ?? 'none') !== 'none' && cfg.supervise !== false;
  const child = spawnServer(supervised ? '__supervise' : '__serve', cfg, log, true);
  fs.closeSync(log);
  const msg = await firstMessage(child, logPath);
  child.removeAllListeners();
  if (child.connected) child.disconnect();
  child.unref();
  if (msg.type === 'error') throw new ReportedError(msg.message, msg.exitCode);
  print(msg.path);
}

/** A server (or supervisor) process for `cfg`, reporting on its IPC channel; stderr to `stderr`. */
export function spawnServer(role: '__serve' | '__supervise', cfg: ServeConfig, stderr: number | 'inherit', detached: boolean): ChildProcess {
  const main = packageFile('bin', 'ublk-ts.js');
  // A server started by a supervisor names it in its state file, so that `del` waits for both.
  const env = role === '__serve' && !detached ? { ...process.env, UBLK_TS_SUPERVISOR: String(process.pid) } : process.env;
  // A detached one gets a mount namespace of its own (hygiene.ts); a supervisor's server shares its supervisor's.
  const argv = [process.execPath, main, role, JSON.stringify(cfg)];
  const [cmd, ...args] = detached ? inOwnMountNamespace(argv) : argv;
  return spawn(cmd!, args, { detached, cwd: '/', env, stdio: ['ignore', 'ignore', stderr, 'ipc'] });
}

/**
 * What a server reports: live, or why not. A server that exits without a word
 * (killed, crashed) after it added a device leaves that device without a
 * server, never started: it is deleted here, so a failed start leaves nothing.
 */
export async function firstMessage(child: ChildProcess, logPath: string): Promise<ServerMessage> {
  let added: number | null = null;
  const msg = await new Promise<ServerMessage | null>((resolve) => {
    child.on('message', (m: ServerMessage | AddedMessage) => {
      if (m.type === 'added') added = m.id;
      else resolve(m);
    });
    child.once('close', () => resolve(null)); // after 'exit' and the last message
  });
  const removeAdded = async (): Promise<string> => {
    if (added === null) return '';
    const id: number = added;
    return withControl((ctrl) => deleteDevice(ctrl, id)).then(() => `; device ${id} removed`, () => '');
  };
  if (msg?.type === 'error') {
    // A server that failed to start has removed its device and is on its way
    // out: the caller returns only once it is gone, so that nothing is left
    // then. One that lingers (a target left a timer or a socket open in it)
    // is killed, and its device removed if it was not.
    if (child.connected) child.disconnect();
    if (!(await exitedWithin(child, EXIT_AFTER_FAILURE_MS))) {
      child.kill('SIGKILL');
      await exitedWithin(child, EXIT_AFTER_FAILURE_MS);
      await removeAdded();
    }
    return msg;
  }
  if (msg) return msg;
  const how = child.signalCode ?? `exit code ${child.exitCode}`;
  const removed = await removeAdded();
  return { type: 'error', exitCode: 1, message: `server exited before the device was live (${how})${removed}; see ${logPath}` };
}

/** How long a server that reported a failed start gets to exit before it is killed (it exits by itself 1 s after its command ended: main.ts). */
const EXIT_AFTER_FAILURE_MS = 10_000;

/** `child`'s exit code and signal, once it has exited (at once if it has already). */
export function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
}

/** Whether `child` has exited, or does within `ms`. */
const exitedWithin = (child: ChildProcess, ms: number): Promise<boolean> => settledWithin(exited(child), ms);

/** The detached server: runs the device and reports to the command that started it. */
export async function serveChild(json: string): Promise<void> {
  const send = (m: ServerMessage | AddedMessage): void => {
    if (process.connected) process.send!(m);
  };
  closeInheritedFds();
  const log = new ServerLog();
  const cfg = JSON.parse(json) as ServeConfig;
  if (cfg.recoverId !== undefined) dropOwnDeviceMounts(cfg.recoverId);
  // The command that started us gone before the device is live (Ctrl-C on `add`, or a supervisor that died): the start is given up.
  const asker = new AbortController();
  const askerGone = (): void => asker.abort(new Error('the add was cancelled: the command that asked for it went away'));
  process.once('disconnect', askerGone);
  try {
    await serve(cfg, (dev) => {
      process.off('disconnect', askerGone);
      log.moveTo(logFile(dev.id));
      console.error(`ublk-ts[${process.pid}]: ${dev.path} live (${dev.queues} queue(s), depth ${dev.depth})`);
      send({ type: 'live', id: dev.id, path: dev.path });
      if (process.connected) process.disconnect();
    }, { added: (id) => send({ type: 'added', id }), signal: asker.signal });
  } catch (e) {
    process.off('disconnect', askerGone);
    send({ type: 'error', message: oneLine(e), exitCode: exitCodeOf(e) });
    if (process.connected) process.disconnect();
    throw e;
  }
}
