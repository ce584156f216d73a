// The supervisor of a device created with --recovery: a small process of its
// own (not the serving one) that starts the server, and when the server dies
// (killed, crashed, or let go of the device after a serving thread failed)
// starts a new one that re-attaches (`recover`), with bounded retries and
// backoff. A crash costs an IO pause, not the device. It ends when the server
// ends cleanly (the device was deleted) or the device is gone.
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { exited, firstMessage, spawnServer, type ServerMessage } from './launch.js';
import { closeInheritedFds, dropOwnDeviceMounts } from './hygiene.js';
import { ServerLog } from './log.js';
import type { ServeConfig } from './server.js';
import { logFile, readState, STATE_DIR } from './state.js';

/** Restarts allowed within RESTART_WINDOW_MS; the n-th waits BACKOFF_MS[n] first. */
const BACKOFF_MS = [200, 1000, 2000, 5000, 10_000];
const RESTART_WINDOW_MS = 10 * 60_000;

export async function superviseChild(json: string): Promise<void> {
  closeInheritedFds();
  const cfg = JSON.parse(json) as ServeConfig;
  if (cfg.recoverId !== undefined) dropOwnDeviceMounts(cfg.recoverId);
  const log = new ServerLog();
  const say = (m: string): void => void console.error(`ublk-ts supervisor[${process.pid}]: ${m}`);
  const report = (m: ServerMessage): void => {
    if (process.connected) process.send!(m);
  };
  let child = spawnServer('__serve', cfg, 'inherit', false);
  let ended = exited(child);
  let stopping = false;
  // `del` signals the server; a signal to us is passed on, and we end with it.
  const passOn = (sig: NodeJS.Signals): void => {
    stopping = true;
    child.kill(sig);
  };
  process.on('SIGTERM', passOn).on('SIGINT', passOn).on('SIGHUP', () => {});
  // The `add` that started us gone before the device is live (Ctrl-C): the server gives up its start.
  let reported = false;
  process.once('disconnect', () => {
    if (!reported) passOn('SIGTERM');
  });
  const first = await firstMessage(child, `${STATE_DIR}/server.log`);
  reported = true;
  report(first);
  if (process.connected) process.disconnect();
  if (first.type === 'error') {
    process.exitCode = first.exitCode;
    return;
  }
  const id = first.id;
  log.moveTo(logFile(id));
  const restarts: number[] = [];
  for (;;) {
    const { code, signal } = await ended;
    if (stopping || code === 0) return; // deleted, or asked to stop
    if (!fs.existsSync(`/sys/class/ublk-char/ublkc${id}`)) return;
    const now = Date.now();
    while (restarts.length && now - restarts[0]! > RESTART_WINDOW_MS) restarts.shift();
    if (restarts.length >= BACKOFF_MS.length) {
      say(`server of /dev/ublkb${id} ended (${signal ?? `exit code ${code}`}); ${restarts.length} restarts in ${RESTART_WINDOW_MS / 60_000} minutes, ` +
        `giving up: the device waits for \`ublk-ts recover ${id}\``);
      process.exitCode = 1;
      return;
    }
    const wait = BACKOFF_MS[restarts.length]!;
    restarts.push(now);
    say(`server of /dev/ublkb${id} ended (${signal ?? `exit code ${code}`}); restart ${restarts.length} in ${wait} ms`);
    await sleep(wait);
    if (stopping) return;
    // The server keeps the device's configuration up to date in its state file (a resize changes it): start from that.
    child = spawnServer('__serve', { ...(readState(id)?.config ?? cfg), recoverId: id }, 'inherit', false);
    ended = exited(child);
    const msg = await firstMessage(child, logFile(id));
    say(msg.type === 'live' ? `server ${child.pid} re-attached to /dev/ublkb${id}` : `restart failed: ${msg.message}`);
  }
}
