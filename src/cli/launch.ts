// Starting a device's server for `add` and `recover`: in the foreground, or
// as a detached process that reports back once the device is live (or why it
// is not) and then runs on its own, from /, logging into its device's file.
// A device with recovery gets a supervisor process between the two, which
// restarts a server that dies (supervisor.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UblkControl } from '../ublk/control/control.js';
import { print } from './command.js';
import { exitCodeOf, oneLine, ReportedError } from './errors.js';
import { ServerLog } from './log.js';
import { serve, type ServeConfig } from './server.js';
import { logFile, STATE_DIR } from './state.js';

export type ServerMessage = { type: 'live'; id: number; path: string } | { type: 'error'; message: string; exitCode: number };

/** Runs the server for `cfg`; returns once the device is live (background) or gone (foreground), printing its path. */
export async function launch(cfg: ServeConfig, foreground: boolean): Promise<void> {
  // The driver and the permission to use it, checked before anything is made.
  UblkControl.open().close();
  if (foreground) {
    await serve(cfg, (dev) => print(dev.path));
    return;
  }
  fs.mkdirSync(STATE_DIR, { recursive: true });
  const logPath = path.join(STATE_DIR, 'server.log');
  const log = fs.openSync(logPath, 'a');
  const supervised = (cfg.recovery ?? 'none') !== 'none';
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
  const main = fileURLToPath(new URL('./main.js', import.meta.url));
  // A server started by a supervisor names it in its state file, so that `del` waits for both.
  const env = role === '__serve' && !detached ? { ...process.env, UBLK_TS_SUPERVISOR: String(process.pid) } : process.env;
  return spawn(process.execPath, [main, role, JSON.stringify(cfg)], { detached, cwd: '/', env, stdio: ['ignore', 'ignore', stderr, 'ipc'] });
}

/** What a server reports first: live, or why not (also when it exits without a word). */
export function firstMessage(child: ChildProcess, logPath: string): Promise<ServerMessage> {
  return new Promise<ServerMessage>((resolve) => {
    child.once('message', (m) => resolve(m as ServerMessage));
    child.once('exit', (code, sig) => resolve({
      type: 'error', exitCode: 1, message: `server exited before the device was live (${sig ?? `exit code ${code}`}); see ${logPath}`,
    }));
  });
}

/** The detached server: runs the device and reports to the command that started it. */
export async function serveChild(json: string): Promise<void> {
  const send = (m: ServerMessage): void => {
    if (process.connected) process.send!(m);
  };
  const log = new ServerLog();
  try {
    await serve(JSON.parse(json) as ServeConfig, (dev) => {
      log.moveTo(logFile(dev.id));
      console.error(`ublk-ts[${process.pid}]: ${dev.path} live (${dev.queues} queue(s), depth ${dev.depth})`);
      send({ type: 'live', id: dev.id, path: dev.path });
      if (process.connected) process.disconnect();
    });
  } catch (e) {
    send({ type: 'error', message: oneLine(e), exitCode: exitCodeOf(e) });
    throw e;
  }
}
