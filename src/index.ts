// ublk-ts: userspace block devices for Linux, served from TypeScript.
// Entry points: this module (devices, targets, the control plane) and
// `ublk-ts/uring` (the io_uring layer, for targets that do their IO on the ring).
export { UblkDevice, type CreateHooks, type DeviceOptions } from './ublk/control/device.js';
export { ThreadPool } from './ublk/control/serving-thread.js';
export { DEVICE_OPTIONS } from './ublk/control/device-options.js';
export { UblkControl, UblkControlError, UblkSetupError, blockDevicePath, charDevicePath } from './ublk/control/control.js';
export {
  defineTarget, PENDING, sizeOption, TargetOptionError, type CopyMode, type DeviceContext, type IoResult, type QueueContext, type Target,
  type TargetData, type TargetIo, type TargetModule, type TargetOptions, type TargetSetup,
} from './ublk/target.js';
export { ModeError, type ServingMode } from './ublk/mode.js';
export type { BatchStats } from './ublk/stats.js';
export { OptionError, type OptionSpec, type OptionType } from './options/spec.js';
export { UblkRequest } from './ublk/worker/request.js';
export { pullTarget } from './ublk/pull.js';
export { CSUM_TYPES, type CsumType } from './ublk/integrity.js';
export * as uapi from './ublk/abi/uapi.js';
export * as errno from './errno.js';
