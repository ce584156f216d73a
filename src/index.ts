// ublk-ts: userspace block devices for Linux, served from TypeScript.
export { UblkDevice, type DeviceOptions } from './ublk/device.js';
export { UblkControl, UblkControlError, blockDevicePath, charDevicePath } from './ublk/control.js';
export { defineTarget, TargetOptionError, type Target, type TargetModule, type TargetOptions, type TargetSetup, type QueueContext, type IoResult } from './ublk/target.js';
export { UblkRequest } from './ublk/request.js';
export * as uapi from './ublk/uapi.js';
