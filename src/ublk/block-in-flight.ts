// How many requests the block layer has handed to /dev/ublkbN and not yet
// seen completed: the kernel's own count, which sees what a serving thread's
// counters do not (a loop request whose commit is linked behind its backing
// IO: the thread is done with it, the kernel has it back only once both ran).
import fs from 'node:fs';

/** sysfs `inflight` of /dev/ublkb`id` (reads + writes), or null if it cannot be read. */
export function blockInFlight(id: number): number | null {
  try {
    const [reads, writes] = fs.readFileSync(`/sys/block/ublkb${id}/inflight`, 'utf8').trim().split(/\s+/).map(Number);
    const n = reads! + writes!;
    return Number.isInteger(n) ? n : null;
  } catch {
    return null;
  }
}
