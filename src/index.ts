// ublk-ts: userspace block devices for Linux, served from TypeScript.
export { UblkDevice, type DeviceOptions } from './ublk/device.js';
export { UblkControl, UblkControlError, blockDevicePath, charDevicePath } from './ublk/control.js';
export {
  defineTarget, PENDING, TargetOptionError, type CopyMode, type IoResult, type QueueContext, type Target, type TargetData,
  type TargetIo, type TargetModule, type TargetOptions, type TargetSetup,
} from './ublk/target.js';
export { UblkRequest } from './ublk/request.js';
export * as uapi from './ublk/uapi.js';
