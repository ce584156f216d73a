// `ublk-ts __chown NAME`: what the udev rule (udev/99-ublk-ts.rules) runs as
// root when /dev/ublkcN or /dev/ublkbN appears. An unprivileged device
// (UBLK_F_UNPRIVILEGED_DEV) belongs to the user who created it: the kernel
// records them (owner_uid, owner_gid), and only its nodes' permissions let
// them serve and use it (the driver checks them on every control command).
// Root's devices stay root's.
import fs from 'node:fs';
import { UBLK_F_UNPRIVILEGED_DEV } from '../ublk/abi/uapi.js';
import { withControl } from './devices.js';
import { UsageError } from './errors.js';

/** Gives /dev/NAME to its device's owner if the device is unprivileged; returns the owner given it, or null. */
export async function chownDeviceNode(name: string): Promise<{ uid: number; gid: number } | null> {
  const m = /^ublk[bc](\d+)$/.exec(name);
  if (!m) throw new UsageError(`not a ublk device node: ${name} (ublkbN or ublkcN)`);
  const info = await withControl((ctrl) => ctrl.getDevInfo(Number(m[1])));
  if (!(Number(info.flags) & UBLK_F_UNPRIVILEGED_DEV)) return null;
  // The user only: their primary group may be shared with others (`users`), and the node's group stays what udev gave it.
  fs.chownSync(`/dev/${name}`, info.owner_uid, -1);
  return { uid: info.owner_uid, gid: info.owner_gid };
}
