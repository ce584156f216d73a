// The ublk devices on this machine as the CLI sees them: ids from sysfs, the
// kernel's view of each, what our state files add, and deleting one.
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { UblkControl, UblkControlError, blockDevicePath, isRoot } from '../ublk/control/control.js';
import { featureNames, STATE_NAMES, UBLK_PARAM_TYPE_INTEGRITY, UBLK_PARAM_TYPE_ZONED } from '../ublk/abi/uapi.js';
import { describeIntegrity, type IntegrityListing } from '../ublk/integrity.js';
import { copyOf, recoveryOf } from '../ublk/mode.js';
import { EACCES, ENODEV, ENOENT } from '../sys.js';
import { EPERM } from '../errno.js';
import { processAlive } from '../process-alive.js';
import { settledWithin } from '../settled-within.js';
import { StallWatch } from '../stall-watch.js';
import { progressMark } from '../ublk/stats.js';
import { deviceTotals } from './stats.js';
import { UsageError } from './errors.js';
import { daemonServes, readState, removeState, serverOf } from './state.js';
import { askDaemon } from './daemon.js';

export interface DeviceListing {
  id: number;
  path: string;
  state: string;
  target: string;
  /** Bytes. */
  size: number;
  queues: number;
  depth: number;
  flags: string[];
  /** The same UBLK_F_* flags as a number. */
  flagBits: number;
  /** Logical block size in bytes. */
  blockSize: number;
  pid: number | null;
  /** The process that restarts the server should it die (devices with --recovery), if one runs. */
  supervisor: number | null;
  /** UBLK_F_USER_RECOVERY policy: none, requeue, reissue, fail-io. */
  recovery: string;
  /** How request data travels: kernel, user or zero (copy), from the flags. */
  copy: string;
  maxIoBytes: number;
  /** A zoned device's layout (UBLK_F_ZONED): zone size in bytes, zone count, open/active limits (0: none); else null. */
  zoned: { zoneSize: number; zones: number; maxOpen: number; maxActive: number } | null;
  /** UBLK_F_INTEGRITY's parameters (metadata per block, protection information), or null. */
  integrity: IntegrityListing | null;
  /** UBLK_F_SHMEM_ZC: the shared memory file registered for the device (--shmem), if any. */
  shmem: string | null;
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

/** The device's listing, or null if it does not exist (or was deleted meanwhile). */
export async function describe(ctrl: UblkControl, id: number): Promise<DeviceListing | null> {
  try {
    const info = await ctrl.getDevInfo(id);
    const params = await ctrl.getParams(id);
    const st = readState(id);
    const { pid, starting } = serverOf(st, id, info.ublksrv_pid);
    return {
      id,
      path: blockDevicePath(id),
      state: starting ? 'starting' : STATE_NAMES[info.state] ?? String(info.state),
      target: st && st.pid === pid ? st.target : 'unknown',
      size: params.basic.dev_sectors * 512,
      queues: info.nr_hw_queues,
      depth: info.queue_depth,
      flags: featureNames(info.flags),
      flagBits: info.flags,
      blockSize: 2 ** params.basic.logical_bs_shift,
      pid,
      supervisor: st?.supervisor !== undefined && processAlive(st.supervisor) ? st.supervisor : null,
      recovery: recoveryOf(info.flags),
      copy: copyOf(info.flags),
      maxIoBytes: info.max_io_buf_bytes,
      zoned: params.types & UBLK_PARAM_TYPE_ZONED && params.basic.chunk_sectors ? {
        zoneSize: params.basic.chunk_sectors * 512, zones: params.basic.dev_sectors / params.basic.chunk_sectors,
        maxOpen: params.zoned.max_open_zones, maxActive: params.zoned.max_active_zones,
      } : null,
      integrity: params.types & UBLK_PARAM_TYPE_INTEGRITY ? describeIntegrity(params.integrity) : null,
      shmem: st && st.pid === pid ? st.config?.shmem ?? null : null,
    };
  } catch (e) {
    if (e instanceof UblkControlError && (e.errno === -ENODEV || e.errno === -ENOENT)) return null;
    // Another user's device (UBLK_F_UNPRIVILEGED_DEV): not ours to see.
    if (isForeign(e)) return null;
    throw e;
  }
}

/** The kernel refused a command on another user's device (its char device node is not ours). */
export const isForeign = (e: unknown): boolean =>
  !isRoot() && e instanceof UblkControlError && (e.errno === -EACCES || e.errno === -EPERM);

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

/**
 * Waits for `pid` (sent SIGTERM) to exit, then kills it once device `id`'s
 * requests have not moved for a minute. A stop can take long (STOP_DEV writes
 * back the device's dirty pages through the server) and a server fails the
 * requests its target holds once none has moved for 10 s (device.ts,
 * STOP_GRACE_MS); killed in the middle of its STOP_DEV instead, it could not
 * exit (its exit would wait for the STOP_DEV, which would wait for those
 * requests): the kill is for a server that does not stop at all.
 */
async function endProcess(pid: number, id: number): Promise<void> {
  const watch = new StallWatch(() => {
    const t = deviceTotals(id);
    return t ? progressMark(t) : -1;
  }, 60_000);
  while (processAlive(pid)) {
    if (watch.stalled()) {
      process.kill(pid, 'SIGKILL');
      await waitFor(() => !processAlive(pid), 10_000);
      return;
    }
    await sleep(100);
  }
}

export async function waitFor(cond: () => Promise<boolean> | boolean, ms: number): Promise<boolean> {
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
 * react is stopped and deleted from here. `goneOk`: a device that no longer
 * exists is not an error (it was stopped already, and its server deleted it).
 */
export async function deleteDevice(ctrl: UblkControl, id: number, goneOk = false): Promise<void> {
  const info = await ctrl.getDevInfo(id).catch((e: unknown) => {
    // ENOENT: the char device node is gone already (GET_DEV_INFO2 checks it), the id not yet.
    if (goneOk && e instanceof UblkControlError && (e.errno === -ENODEV || e.errno === -ENOENT)) return null;
    if (e instanceof UblkControlError && e.errno === -ENODEV) throw new UsageError(`no ublk device with id ${id}`);
    if (isForeign(e)) throw new Error(`device ${id} is another user's (${(e as UblkControlError).code}): only they, or root, may delete it`);
    throw e;
  });
  if (info === null) {
    await waitFor(() => gone(ctrl, id), 30_000);
    removeState(id);
    return;
  }
  const st = readState(id);
  // (not live yet, or being recovered: the server starting it, which its state names)
  const { pid } = serverOf(st, id, info.ublksrv_pid);
  // Only the processes are watched until they are gone: a control command
  // would queue behind their STOP_DEV, which waits for the requests in
  // flight (see endProcess).
  // A supervisor would start a new server for the device: it goes first.
  const supervisor = st?.supervisor;
  if (supervisor !== undefined && processAlive(supervisor)) {
    process.kill(supervisor, 'SIGTERM'); // it passes SIGTERM on to the server and ends with it
    await endProcess(supervisor, id);
  }
  if (pid !== null && daemonServes(st, pid)) {
    // The daemon serves other devices too: it is asked to stop this one (it
    // finishes in-flight IO, stops and deletes it), never signalled. Should
    // it not know the device (it is going already), it is stopped from here.
    await askDaemon({ op: 'del', id }).catch(() => settledWithin(ctrl.stopDev(id), 30_000));
  } else if (pid !== null && st?.pid === pid && processAlive(pid)) {
    // Signalled only where our state names it: the kernel reports whatever pid
    // the server gave START_DEV (before Linux 6.17 unchecked, so a user's
    // device may name anyone's process), one from another pid namespace, or a
    // dead server's, whose number may be another process's by now.
    process.kill(pid, 'SIGTERM'); // the server stops and deletes the device, then exits
    await endProcess(pid, id);
  } else {
    await settledWithin(ctrl.stopDev(id), 30_000);
  }
  if (!(await gone(ctrl, id))) {
    await ctrl.delDev(id).catch((e: unknown) => {
      if (!(e instanceof UblkControlError && e.errno === -ENODEV)) throw e;
    });
  }
  removeState(id);
}

/** Runs `f` with the control device open; refuses early where only root may go. */
export async function withControl<T>(f: (ctrl: UblkControl) => Promise<T>): Promise<T> {
  const ctrl = UblkControl.open();
  try {
    return await f(ctrl);
  } finally {
    ctrl.close();
  }
}
