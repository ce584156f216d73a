// Whether the running kernel has zoned block devices at all (CONFIG_BLK_DEV_ZONED).
// The ublk driver reports UBLK_F_ZONED in GET_FEATURES either way, and without
// the option refuses a zoned device only at ADD_DEV (EINVAL, no reason given):
// so we look first. The kernel's symbol table tells, without /proc/config.gz
// or /boot: blk_revalidate_disk_zones() exists only with that option.
import fs from 'node:fs';
import { UBLK_F_ZONED } from '../abi/uapi.js';

/** Fault injection for tests: UBLK_TS_FAULT_NO_ZONED=1 plays a kernel built without CONFIG_BLK_DEV_ZONED. */
const FAULT_NO_ZONED = process.env.UBLK_TS_FAULT_NO_ZONED === '1';

let cached: boolean | undefined | null = null;

/** true or false; undefined where it cannot be told (no /proc/kallsyms). */
export function kernelHasZonedDevices(): boolean | undefined {
  if (FAULT_NO_ZONED) return false;
  if (cached === null) {
    try {
      const syms = fs.readFileSync('/proc/kallsyms', 'latin1');
      cached = syms.length === 0 ? undefined : syms.includes(' blk_revalidate_disk_zones\n');
    } catch {
      cached = undefined;
    }
  }
  return cached;
}

/** GET_FEATURES as far as usable: UBLK_F_ZONED only where the kernel can have zoned devices. */
export function usableFeatures(features: number): number {
  return features & UBLK_F_ZONED && kernelHasZonedDevices() === false ? features & ~UBLK_F_ZONED : features;
}

export const NO_ZONED_DEVICES = 'this kernel was built without CONFIG_BLK_DEV_ZONED: it has no zoned block devices, so ublk refuses UBLK_F_ZONED';
