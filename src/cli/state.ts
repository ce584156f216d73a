// What `list` cannot learn from the kernel (the target's name, its options) is
// kept in a small JSON file per device under /run, written by the server.
import fs from 'node:fs';
import path from 'node:path';
import type { DeviceOptions } from '../ublk/control/device.js';
import { ensureRunDir, RUN_DIR, runDirProblem } from '../run-dir.js';
import { processAlive, processHolds } from '../process-alive.js';
import { charDevicePath } from '../ublk/control/control.js';

export const STATE_DIR = RUN_DIR;

export interface DeviceState {
  id: number;
  pid: number;
  /** Served by `ublk-ts daemon` (pid is the daemon's, shared with its other devices). */
  daemon?: boolean;
  /** The supervisor that restarts this server (devices with --recovery). */
  supervisor?: number;
  target: string;
  options: Record<string, unknown>;
  /**
   * Written right after ADD_DEV (or before a recovery), while the server
   * (`pid`) starts the device: the kernel names no server before START_DEV
   * (a dead one while recovering), and `del` finds it here.
   */
  starting?: boolean;
  /** The server's fd of the device's counters (UblkDevice.statsFd). */
  statsFd?: number;
  /** What the device was created with: a new server gets the same (`recover`). */
  config?: DeviceOptions & { target: string; supervise?: boolean };
}

const file = (id: number): string => path.join(STATE_DIR, `${id}.json`);

export function writeState(s: DeviceState): void {
  ensureRunDir();
  const tmp = `${file(s.id)}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(s) + '\n', { mode: 0o600 });
  fs.renameSync(tmp, file(s.id));
}

/**
 * The device's state, or null where there is none, it is unreadable (a
 * corrupt file never breaks a command), or the run directory is not ours alone.
 */
export function readState(id: number): DeviceState | null {
  if (runDirProblem() !== null) return null;
  try {
    const s = JSON.parse(fs.readFileSync(file(id), 'utf8')) as DeviceState;
    return s && typeof s === 'object' && typeof s.pid === 'number' && typeof s.target === 'string' ? s : null;
  } catch {
    return null;
  }
}

/**
 * Whether `st` says the ublk-ts daemon serves its device as process `pid`
 * (the kernel's server pid), still running: it is asked, never signalled.
 */
export function daemonServes(st: DeviceState | null, pid: number): boolean {
  return st?.daemon === true && st.pid === pid && processAlive(pid);
}

/**
 * The server starting device `id` (not live yet, so the kernel names none, or a dead one):
 * the process its state names while `starting`, if that process holds the
 * device's /dev/ublkcN (a stale state's pid may be anyone's by now); else null.
 */
function startingServer(st: DeviceState | null, id: number): number | null {
  if (!st?.starting || !processAlive(st.pid)) return null;
  return processHolds(st.pid, charDevicePath(id)) ? st.pid : null;
}

/**
 * The process serving device `id`: the one starting it (startingServer), else
 * the one the kernel names (`kernelPid`, ublksrv_pid; 0 or less: none).
 */
export function serverOf(st: DeviceState | null, id: number, kernelPid: number): { pid: number | null; starting: boolean } {
  const starting = startingServer(st, id);
  return starting !== null ? { pid: starting, starting: true } : { pid: kernelPid > 0 ? kernelPid : null, starting: false };
}

/** The per-device server log (timestamped lines). */
export const logFile = (id: number): string => path.join(STATE_DIR, `${id}.log`);

export function removeState(id: number): void {
  fs.rmSync(file(id), { force: true });
}
