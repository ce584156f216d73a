// The options of every device, whatever its target: one row each, read by the
// command line (`ublk-ts add`) and by UblkDevice.create() alike.
import { checkOptions, type Naming, type OptionSpec } from '../../options/spec.js';
import { COPY_MODES } from '../target.js';
import { RECOVERY_POLICIES } from '../mode.js';
import type { DeviceOptions } from './device.js';
import { UBLK_MAX_NR_QUEUES, UBLK_MAX_QUEUE_DEPTH } from '../abi/uapi.js';

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
    onlyWith: { key: 'batch', value: true, why: 'classic mode serves each queue from its own thread' },
    help: 'serving threads for all queues (default: one per queue)' },
  { key: 'copy', type: 'enum', arg: 'MODE', choices: COPY_MODES, default: 'kernel',
    help: 'how data moves: the driver copies into server buffers (kernel), the server copies on /dev/ublkcN (user), ' +
      'or the request\'s pages are used in place (zero)' },
  { key: 'autoBufReg', flag: 'no-auto-buf-reg', type: 'bool', negated: true, default: true, onlyWith: { key: 'copy', value: 'zero' },
    help: 'zero copy: register request pages with REGISTER_IO_BUF per request instead of UBLK_F_AUTO_BUF_REG' },
  { key: 'recovery', type: 'enum', arg: 'POLICY', choices: RECOVERY_POLICIES, default: 'none',
    help: 'UBLK_F_USER_RECOVERY: the device outlives its server, and `ublk-ts recover ID` attaches a new one. While no ' +
      'server runs, IO waits (requeue, reissue) or fails (fail-io); requests the dead server had taken fail (requeue, ' +
      'fail-io) or go to the new server (reissue)' },
  { key: 'coalesceUsec', flag: 'coalesce-us', type: 'int', arg: 'N', default: 0, min: 0, max: 1_000_000,
    help: 'once requests come in bursts, wait up to N µs for more before serving them (0: off)' },
  { key: 'pollUsec', flag: 'poll-us', type: 'int', arg: 'N', default: 0, min: 0, max: 1_000_000,
    help: 'after serving requests, spin up to N µs watching for more before sleeping (0: off; costs CPU)' },
];

/** Device options with every default filled in (the rows with no default stay optional). */
export type CheckedDeviceOptions = Required<Omit<DeviceOptions, 'target' | 'options' | 'id' | 'threads'>> & Pick<DeviceOptions, 'id' | 'threads'>;

export function checkDeviceOptions(given: Record<string, unknown>, naming: Naming): CheckedDeviceOptions {
  return checkOptions(DEVICE_OPTIONS, given, naming) as unknown as CheckedDeviceOptions;
}
