// Whether the running kernel has zoned block devices at all (CONFIG_BLK_DEV_ZONED).
// The ublk driver reports UBLK_F_ZONED in GET_FEATURES either way, and without
// the option refuses a zoned device only at ADD_DEV (EINVAL, no reason given):
// so we look first. The kernel's symbol table tells, without /proc/config.gz
// or /boot: blk_revalidate_disk_zones() exists only with that option. Reading
// it takes seconds on a slow machine (2.4 s of each `ublk-ts features` in the
// test VM), so the answer is kept in the run directory for the rest of the boot.
import fs from 'node:fs';
import path from 'node:path';
import { UBLK_F_ZONED } from '../abi/uapi.js';
import { ensureRunDir, RUN_DIR } from '../../run-dir.js';

/** Fault injection for tests: UBLK_TS_FAULT_NO_ZONED=1 plays a kernel built without CONFIG_BLK_DEV_ZONED. */
const FAULT_NO_ZONED = process.env.UBLK_TS_FAULT_NO_ZONED === '1';

let cached: boolean | undefined | null = null;
/** `<boot id> 0|1`: the answer for this boot. */
const CACHE_FILE = path.join(RUN_DIR, 'kernel-zoned');

/** true or false; undefined where it cannot be told (no /proc/kallsyms). */
export function kernelHasZonedDevices(): boolean | undefined {
  if (FAULT_NO_ZONED) return false;
  if (cached === null) cached = fromBootCache() ?? fromKallsyms();
  return cached;
}

function fromKallsyms(): boolean | undefined {
  let found: boolean | undefined;
  try {
    const syms = fs.readFileSync('/proc/kallsyms', 'latin1');
    found = syms.length === 0 ? undefined : syms.includes(' blk_revalidate_disk_zones\n');
  } catch {
    return undefined;
  }
  // Kept for this boot where we may write the run directory (root); the rename makes it whole or absent.
  const boot = bootId();
  if (found !== undefined && boot) {
    try {
      ensureRunDir();
      const tmp = `${CACHE_FILE}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, `${boot} ${found ? 1 : 0}\n`);
      fs.renameSync(tmp, CACHE_FILE);
    } catch { /* not ours to write: ask the kernel again next time */ }
  }
  return found;
}


function bootId(): string | undefined {
  try {
    return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The answer kept by an earlier call in this boot: `<boot id> 0|1`; undefined if none. */
function fromBootCache(): boolean | undefined {
  let text: string;
  try {
    text = fs.readFileSync(CACHE_FILE, 'utf8');
  } catch {
    return undefined;
  }
  const m = /^(\S+) ([01])\n$/.exec(text);
  return m && m[1] === bootId() ? m[2] === '1' : undefined;
}

/** GET_FEATURES as far as usable: UBLK_F_ZONED only where the kernel can have zoned devices. */
export function usableFeatures(features: number): number {
  return features & UBLK_F_ZONED && kernelHasZonedDevices() === false ? features & ~UBLK_F_ZONED : features;
}

export const NO_ZONED_DEVICES = 'this kernel was built without CONFIG_BLK_DEV_ZONED: it has no zoned block devices, so ublk refuses UBLK_F_ZONED';
