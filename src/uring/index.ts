// The io_uring layer: constants and struct layouts from the UAPI header, the
// ring itself, per-opcode prep helpers, provided-buffer rings, event-loop
// wakeup and a promise-based ring for cold paths.
export * from './constants.js';
export { LAYOUTS, IOVEC, type Layout } from './layout.js';
export { Ring, type RingOptions, type CqeHandler } from './ring.js';
export * from './prep.js';
export { PbufRing, type PbufRingOptions } from './pbuf-ring.js';
export { RingWakeup } from './wakeup.js';
export { AsyncRing, type CqeResult } from './async-ring.js';
