// The target API: what a block device's logic looks like, built-in or the user's own.
//
// A target is an ES module whose default export is a TargetModule. The module is
// imported twice: in the main thread, where `setup` validates options and sizes the
// device before it exists, and inside every queue worker, where `open` returns the
// per-worker object that serves requests. Anything `setup` puts into `shared` must be
// structured-cloneable (numbers, strings, SharedArrayBuffers, file descriptors).
import type { UblkRequest } from './request.js';

/** Bytes moved (READ/WRITE), 0 (other ops), or a negative errno. */
export type IoResult = number | Promise<number>;

export interface Target {
  read(req: UblkRequest): IoResult;
  write(req: UblkRequest): IoResult;
  /** Present iff the target has a volatile cache (the device then announces one). */
  flush?(req: UblkRequest): IoResult;
  /** Present iff the target supports DISCARD (the device then announces it). */
  discard?(req: UblkRequest): IoResult;
  /** Present iff the target supports WRITE_ZEROES. */
  writeZeroes?(req: UblkRequest): IoResult;
  /** Called in the worker after the queue stopped. */
  close?(): void | Promise<void>;
}

/** Options given to a target, as parsed by the CLI or passed by a library user. */
export interface TargetOptions {
  /** Device size in bytes, if the user gave one. */
  size?: number;
  [name: string]: unknown;
}

export interface TargetSetup {
  /** Device size in bytes: a positive multiple of 512. */
  size: number;
  /** Whether workers' targets implement flush/discard/writeZeroes (announced to the kernel). */
  caps?: { flush?: boolean; discard?: boolean; writeZeroes?: boolean };
  /** Handed to every worker's `open` (structured-cloneable). */
  shared?: unknown;
  /** Main thread, after the device is gone: release what setup acquired. */
  cleanup?(): void | Promise<void>;
}

export interface QueueContext {
  devId: number;
  queueId: number;
  depth: number;
  /** Largest request in bytes (max_io_buf_bytes). */
  maxIoBytes: number;
  options: TargetOptions;
  shared: unknown;
}

export interface TargetModule {
  name: string;
  setup(options: TargetOptions): TargetSetup | Promise<TargetSetup>;
  open(ctx: QueueContext): Target | Promise<Target>;
}

/** Identity helper that gives a target module its type. */
export const defineTarget = (t: TargetModule): TargetModule => t;

/** Thrown by `setup` for bad user input: the CLI prints the message and exits non-zero. */
export class TargetOptionError extends Error {
  override name = 'TargetOptionError';
}
