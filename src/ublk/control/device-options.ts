// The options of every device, whatever its target: one row each, read by the
// command line (`ublk-ts add`) and by UblkDevice.create() alike.
import { checkOptions, type Naming, type OptionSpec } from '../../options/spec.js';
import { COPY_MODES } from '../target.js';
import { checkIntegrityCopy, RECOVERY_POLICIES } from '../mode.js';
import type { DeviceOptions } from './device.js';
import { UBLK_MAX_NR_QUEUES, UBLK_MAX_QUEUE_DEPTH } from '../abi/uapi.js';
import { checkIntegrity, INTEGRITY_OPTIONS, type IntegrityChoice } from '../integrity.js';
import { checkSchedulerName } from './scheduler.js';

/** Device ids the driver hands out (UBLK_MAX_UBLKS in ublk_drv.c). */
export const MAX_DEV_ID = (1 << 20) - 1;

export const DEVICE_OPTIONS: readonly OptionSpec[] = [
  { key: 'queues', short: 'q', type: 'int', arg: 'N', default: 1, min: 1, max: UBLK_MAX_NR_QUEUES,
    help: 'hardware queues (the kernel clamps this to the CPU count)' },
  { key: 'depth', short: 'd', type: 'int', arg: 'N', default: 128, min: 1, max: UBLK_MAX_QUEUE_DEPTH, help: 'requests in flight per queue' },
  { key: 'id', short: 'n', type: 'int', arg: 'ID', min: 0, max: MAX_DEV_ID, help: 'device id, /dev/ublkbID (default: the kernel picks one)' },
  { key: 'maxIoBytes', flag: 'max-io', type: 'size', arg: 'SIZE', default: 1 << 20, min: 4096, max: 32 << 20, multipleOf: 4096,
    help: 'largest request' },
  { key: 'batch', short: 'b', type: 'bool', default: false, help: 'UBLK_F_BATCH_IO: batched fetch and commit, any thread serves any queue (Linux 7.0+)' },
  { key: 'threads', type: 'int', arg: 'N', min: 1, max: 1024,
    help: 'serving threads for all queues (default: one per queue); classic mode deals every queue\'s tags out to them ' +
      '(UBLK_F_PER_IO_DAEMON)' },
  // No default here: it depends on the target, the kernel and the other options (defaultCopy in mode.ts).
  { key: 'copy', type: 'enum', arg: 'MODE', choices: COPY_MODES,
    help: 'how data moves: the driver copies into server buffers (kernel), the server copies on /dev/ublkcN (user), ' +
      'or the request\'s pages are used in place (zero); default zero where the target (null, loop, stripe, nbd) and ' +
      'the kernel allow it (on a daemon: while its threads have room for the tags), else kernel (user for zoned targets)' },
  { key: 'autoBufReg', flag: 'no-auto-buf-reg', type: 'bool', negated: true, default: true, onlyWith: { key: 'copy', value: 'zero' },
    help: 'zero copy: register request pages with REGISTER_IO_BUF per request instead of UBLK_F_AUTO_BUF_REG' },
  { key: 'recovery', type: 'enum', arg: 'POLICY', choices: RECOVERY_POLICIES, default: 'none',
    help: 'UBLK_F_USER_RECOVERY: the device outlives its server, and `ublk-ts recover ID` attaches a new one. While no ' +
      'server runs, IO waits (requeue, reissue) or fails (fail-io); requests the dead server had taken fail (requeue, ' +
      'fail-io) or go to the new server (reissue)' },
  { key: 'needGetData', type: 'bool', default: false,
    help: 'UBLK_F_NEED_GET_DATA: a WRITE\'s data is copied in only once the server asks for it (classic, kernel copy)' },
  { key: 'shmem', type: 'string', arg: 'FILE',
    help: 'UBLK_F_SHMEM_ZC (Linux 7.1): register FILE (hugetlbfs, tmpfs, or /proc/PID/fd/N of a memfd), which the ' +
      'application maps MAP_SHARED too; its O_DIRECT requests whose buffers lie in it are served there, without a copy' },
  { key: 'shmemReadOnly', type: 'bool',
    help: 'with --shmem: register FILE read-only (UBLK_SHMEM_BUF_READ_ONLY): only WRITE requests use it' },
  { key: 'partScan', flag: 'no-part-scan', type: 'bool', negated: true, default: true,
    help: 'UBLK_F_NO_AUTO_PART_SCAN: the kernel does not read the partition table when the device starts (blockdev --rereadpt does)' },
  { key: 'scheduler', type: 'string', arg: 'NAME',
    help: 'the block I/O scheduler of /dev/ublkbN (none, mq-deadline, bfq, kyber; kernel: the kernel\'s choice, mq-deadline ' +
      'for one queue); default none, which skips a thread hop per request where the server orders IO itself' },
  { key: 'dmaAlign', type: 'size', arg: 'BYTES', min: 1, max: 4096, powerOf2: true,
    help: 'UBLK_PARAM_TYPE_DMA_ALIGN: request buffers must be aligned to this (a power of 2; default: 512)' },
  { key: 'maxSegments', type: 'int', arg: 'N', min: 1, max: 65535,
    help: 'UBLK_PARAM_TYPE_SEGMENT: at most N segments per request (default: no limit of ours)' },
  { key: 'maxSegmentSize', type: 'size', arg: 'SIZE', min: 4096, max: 2 ** 32 - 1,
    help: 'UBLK_PARAM_TYPE_SEGMENT: at most SIZE bytes per segment' },
  { key: 'segmentBoundary', type: 'size', arg: 'SIZE', min: 4096, max: 2 ** 32, powerOf2: true,
    help: 'UBLK_PARAM_TYPE_SEGMENT: no segment crosses a multiple of SIZE (a power of 2)' },
  { key: 'coalesceUsec', flag: 'coalesce-us', type: 'int', arg: 'N', default: 0, min: 0, max: 1_000_000,
    help: 'once requests come in bursts, wait up to N µs for more before serving them (0: off)' },
  { key: 'pollUsec', flag: 'poll-us', type: 'int', arg: 'N', min: 0, max: 1_000_000,
    help: 'after serving requests, spin up to N µs watching for more before sleeping (0: never; default: adaptive, ' +
      'spinning only while that serves more requests per second than sleeping)' },
  ...INTEGRITY_OPTIONS,
];

/** The rows with no default stay optional. */
type OptionalRows = 'id' | 'copy' | 'threads' | 'pollUsec' | 'scheduler' | 'shmem' | 'shmemReadOnly' | 'dmaAlign' | 'maxSegments' | 'maxSegmentSize' | 'segmentBoundary'
  | keyof IntegrityChoice;

/** Device options with every default filled in. */
export type CheckedDeviceOptions = Required<Omit<DeviceOptions, 'target' | 'options' | OptionalRows>> & Pick<DeviceOptions, OptionalRows>;

export function checkDeviceOptions(given: Record<string, unknown>, naming: Naming): CheckedDeviceOptions {
  const o = checkOptions(DEVICE_OPTIONS, given, naming) as unknown as CheckedDeviceOptions;
  checkSchedulerName(o.scheduler, naming);
  checkIntegrity(o, naming);
  checkIntegrityCopy(o);
  return o;
}
