// The block I/O scheduler of a started device. The kernel gives a disk with
// one hardware queue mq-deadline, and a ublk device is one unless asked for
// more; its requests then wait in the scheduler and are often dispatched from
// a kblockd worker, a thread hop per request. The server does its own ordering
// (or its backing store does), so ublk-ts sets `none` unless told otherwise:
// in one 2-vCPU VM run (null target, 4k randread) that took QD 64 from about
// 30k to 80k IOPS, and QD 1 from 7.3k to 13.4k, kublk alike.
import fs from 'node:fs';
import { ModeError } from '../mode.js';
import { OptionError, type Naming } from '../../options/spec.js';

/** The default; `kernel` keeps the kernel's choice. */
export const DEFAULT_SCHEDULER = 'none';
export const KERNEL_SCHEDULER = 'kernel';

/** A scheduler name as the kernel spells them (none, mq-deadline, bfq, kyber), checked before anything is created. */
export function checkSchedulerName(name: string | undefined, naming: Naming): void {
  if (name === undefined || /^[a-z0-9][a-z0-9_-]{0,30}$/.test(name)) return;
  const flag = naming === 'cli' ? '--scheduler' : 'scheduler';
  throw new OptionError(`${flag} '${name}' is not an I/O scheduler's name (none, mq-deadline, bfq, kyber; ${KERNEL_SCHEDULER}: the kernel's choice)`);
}

/**
 * Sets the scheduler of /dev/ublkb`id` (the device has started). `asked`:
 * the user named it; otherwise (the default) a sysfs the process may not
 * write (an unprivileged user) leaves the kernel's choice.
 */
export function setScheduler(id: number, name: string, asked: boolean): void {
  if (name === KERNEL_SCHEDULER) return;
  const file = `/sys/block/ublkb${id}/queue/scheduler`;
  try {
    fs.writeFileSync(file, name);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (!asked && (code === 'EACCES' || code === 'EPERM' || code === 'EROFS' || code === 'ENOENT')) return;
    let offered = '';
    try {
      offered = fs.readFileSync(file, 'utf8').replace(/[[\]]/g, '').trim();
    } catch { /* as below */ }
    throw new ModeError(code === 'EINVAL'
      ? `the kernel has no I/O scheduler '${name}' (it offers: ${offered || 'none'}; --scheduler ${KERNEL_SCHEDULER} keeps its choice)`
      : `cannot set the I/O scheduler of /dev/ublkb${id} to '${name}' (${code ?? String(e)}; --scheduler ${KERNEL_SCHEDULER} leaves it as it is)`);
  }
}
