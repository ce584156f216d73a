// The target API: what a block device's logic looks like, built-in or the user's own.
//
// A target is an ES module whose default export is a TargetModule. The module is
// imported twice: in the main thread, where `setup` validates options and sizes the
// device before it exists, and inside every queue worker, where `open` returns the
// per-worker object that serves requests. Anything `setup` puts into `shared` must be
// structured-cloneable (numbers, strings, SharedArrayBuffers, file descriptors).
import type { Ring } from '../uring/ring.js';
import { checkOptions, type Naming, type OptionSpec } from '../options/spec.js';
import type { UblkRequest } from './worker/request.js';

/**
 * Returned by a target that completes the request later with
 * `ctx.io.complete(req, result)`, typically from `onCqe` once its own io_uring
 * operations have finished. Cheaper than a promise: nothing is allocated.
 * A registered symbol: a serving thread run from the worker bundle has its own
 * copy of this module, and a target that imports the library's must return
 * the same symbol.
 */
export const PENDING: unique symbol = Symbol.for('ublk-ts pending');

/** Bytes moved (READ/WRITE), 0 (other ops), a negative errno, a promise of one, or PENDING. */
export type IoResult = number | Promise<number> | typeof PENDING;

/**
 * How request data travels between the kernel and the server:
 * - `kernel`: the driver copies it into a per-tag buffer of the server;
 * - `user` (UBLK_F_USER_COPY): the server reads/writes it on /dev/ublkcN;
 * - `zero` (UBLK_F_AUTO_BUF_REG / SUPPORT_ZERO_COPY): the request's own pages
 *   sit in the worker ring's buffer table; only fixed-buffer io_uring
 *   operations can reach them.
 */
export type CopyMode = 'kernel' | 'user' | 'zero';
export const COPY_MODES: readonly CopyMode[] = ['kernel', 'user', 'zero'];

/**
 * How a target touches request data, which decides the copy modes it can serve:
 * - `buffer`: in JavaScript, through `req.buffer` (kernel and user copy; in
 *   user mode the dispatcher moves the data between /dev/ublkcN and the buffer);
 * - `ring`: with io_uring operations of its own, using `req.bufferAddress`
 *   (kernel and user copy, as for `buffer`) or `req.bufIndex` (zero): every mode;
 * - `ring-and-user-copy`: as `ring`, and in zero copy also with pread/pwrite
 *   on /dev/ublkcN (`TargetIo.charFd`: `req.readPages`, `req.writePages`) for bytes it
 *   holds in its own memory (a network reply received with others): the
 *   device then has UBLK_F_USER_COPY beside zero copy;
 * - `none`: never (the null target): every mode.
 * `ring`, `ring-and-user-copy` and `none` targets get zero copy by default
 * where the kernel has it (defaultCopy in mode.ts): they must serve every mode.
 */
export type TargetData = 'buffer' | 'ring' | 'ring-and-user-copy' | 'none';

/**
 * What serves requests in one serving thread. The device announces a volatile
 * cache, DISCARD or WRITE_ZEROES only where `TargetSetup.caps` says so; a
 * request the target has no method for completes with -EOPNOTSUPP.
 */
export interface Target {
  read(req: UblkRequest): IoResult;
  write(req: UblkRequest): IoResult;
  /** FLUSH: make completed writes durable (announced with `caps.flush`). */
  flush?(req: UblkRequest): IoResult;
  /** DISCARD (announced with `caps.discard`). */
  discard?(req: UblkRequest): IoResult;
  /** WRITE_ZEROES (announced with `caps.writeZeroes`). */
  writeZeroes?(req: UblkRequest): IoResult;
  /**
   * Zoned devices (`TargetSetup.zoned`): ZONE_APPEND of `req.buffer` to the
   * zone starting at `req.sector`. Before completing with the bytes written
   * (or linking the commit, `io.linkCommit`), set `req.zoneAppendLba` to the
   * sector where the data went: the commit carries it to the kernel.
   */
  zoneAppend?(req: UblkRequest): IoResult;
  /** Zoned devices: ZONE_OPEN, ZONE_CLOSE, ZONE_FINISH, ZONE_RESET (of the zone at `req.sector`) or ZONE_RESET_ALL, by `req.op`; 0 or -errno. */
  zoneManage?(req: UblkRequest): IoResult;
  /**
   * Zoned devices: REPORT_ZONES, `req.nrZones` struct blk_zone entries from
   * the zone at `req.sector` into `req.buffer` (a zero-length entry ends a
   * shorter report); completes with `req.length`.
   */
  reportZones?(req: UblkRequest): IoResult;
  /**
   * Completion of an io_uring operation the target submitted with
   * `ctx.io.sqe(req, sub)`: the request it belongs to, the CQE's res and
   * flags, and the target's own `sub` value.
   */
  onCqe?(req: UblkRequest, res: number, flags: number, sub: number): void;
  /**
   * Completion of an io_uring operation the target submitted with
   * `ctx.io.ownSqe(sub)`, one tied to no request (e.g. a standing recv on a socket).
   */
  onOwnCqe?(res: number, flags: number, sub: number): void;
  /**
   * Called in the worker after the queue stopped (the kernel has flushed
   * what it had to). The device leaves the thread once it settles, or
   * after 10 s whatever it does: a close that never ends must not hold the device's removal.
   */
  close?(): void | Promise<void>;
}

/** The worker's io_uring, for targets that do their IO through it (`data: 'ring'`). */
export interface TargetIo {
  readonly ring: Ring;
  readonly copy: CopyMode;
  /**
   * Fixed-file index of /dev/ublkcN on the ring (for uring_cmds of the
   * target's own; request data is already in the tag buffer in user copy).
   */
  readonly charDevFixed: number;
  /**
   * /dev/ublkcN. In zero copy a target that has bytes of its own for a READ
   * (a network reply already received) can pwrite them into the request's
   * pages with `req.writePages` (the driver allows user copy on zero-copy
   * devices), and read a WRITE's data with `req.readPages`.
   */
  readonly charFd: number;
  /**
   * A zeroed SQE whose CQE goes to `target.onCqe(req, res, flags, sub)`, `sub`
   * being any u32. The serving loop submits it. After `reserve(n)`, the next
   * n calls hand out SQEs of one submission (needed for IOSQE_IO_LINK chains).
   */
  sqe(req: UblkRequest, sub: number): number;
  reserve(n: number): void;
  /**
   * A zeroed SQE tied to no request, whose CQE goes to `target.onOwnCqe(res,
   * flags, sub)`. While any such operation is in flight, a request the target
   * holds (returned PENDING) with no operation of its own counts as waiting
   * for one of them, so the serving loop keeps blocking in io_uring_enter: a
   * target that holds requests must keep an own operation armed (a recv, a
   * timeout) until it completes them, or complete them from elsewhere with
   * none in flight.
   */
  ownSqe(sub: number): number;
  /**
   * The target keeps a request it returned PENDING for that now waits for
   * something outside the ring (a timer, a connection being made again): the
   * serving loop keeps the event loop running until it is completed.
   */
  hold(req: UblkRequest): void;
  /**
   * Work of the target's own outside the ring, for no request yet (a
   * connection being made again while the device is idle): the serving loop
   * keeps the event loop running until `work` settles. Without it, a thread
   * with nothing in flight blocks in io_uring_enter, and the work would go on
   * only when the next request comes, with its timers long expired.
   */
  background(work: Promise<unknown>): void;
  /** Completes a request for which the target returned PENDING. */
  complete(req: UblkRequest, result: number): void;
  /**
   * Optional shortcut: links the request's commit, with `result`, to SQE `s`
   * (the last of the target's IOSQE_IO_LINK chain), so the kernel completes
   * the request as soon as the chain succeeds, with no further trip through
   * JavaScript: the chain's SQEs get IOSQE_CQE_SKIP_SUCCESS, and a chain that
   * succeeds posts no CQE to the target at all. Reserve one SQE more than the
   * chain needs. If the chain fails, exactly one CQE comes (the failed SQE's,
   * or -ECANCELED for its first SQE when a later one was refused at
   * submission), the commit is cancelled, and the target completes the
   * request (or retries) as usual. Returns false where the engine cannot link
   * (batch mode, steps after the target, or operations of the request
   * outside the chain still to complete): then every SQE posts its CQE.
   */
  linkCommit(req: UblkRequest, s: number, result: number): boolean;
}

/** Options given to a target, checked against its `options` rows. */
export interface TargetOptions {
  /** Device size in bytes, if the user gave one. */
  size?: number;
  [name: string]: unknown;
}

/**
 * The device size as a target option row (`--size`, `-s`): a positive multiple
 * of the 512-byte sector. Required for targets that have no size of their own.
 */
export const sizeOption = (required: boolean, help = 'device size (K, M, G, T: powers of 1024)'): OptionSpec =>
  ({ key: 'size', short: 's', type: 'size', arg: 'SIZE', min: 512, multipleOf: 512, required, help });

/** The rows of a target module that declares none: an optional size, as the library always accepted. */
export const DEFAULT_TARGET_OPTIONS: readonly OptionSpec[] = [sizeOption(false)];

/** A zoned device's layout (UBLK_F_ZONED, Linux 6.6+): what the kernel is told in UBLK_PARAM_TYPE_ZONED. */
export interface ZonedSetup {
  /** Bytes per zone: a power of 2 that divides the device size (basic.chunk_sectors). */
  zoneSize: number;
  /** Most zones open at once; 0: no limit. */
  maxOpen: number;
  /** Most zones open or closed at once; 0: no limit. */
  maxActive: number;
}

export interface TargetSetup<Shared = unknown> {
  /** Device size in bytes: a positive multiple of 512. */
  size: number;
  /** Whether workers' targets implement flush/discard/writeZeroes (announced to the kernel). */
  caps?: { flush?: boolean; fua?: boolean; discard?: boolean; writeZeroes?: boolean };
  /** A read-only device (UBLK_ATTR_READ_ONLY): the kernel refuses writes before they reach the target. */
  readOnly?: boolean;
  /** How the target touches request data (default `buffer`). */
  data?: TargetData;
  /** Logical block size in bytes: 512 (default) or 4096 (e.g. O_DIRECT on a 4K-sector disk). */
  logicalBlockSize?: number;
  /**
   * The largest request the target takes, in bytes (e.g. an NBD export's
   * maximum payload): the device's largest request (--max-io) is lowered to
   * it, rounded down to 4 KiB, and the kernel splits bigger IO. Default: no limit.
   */
  maxIoBytes?: number;
  /**
   * A zoned device: the target implements zoneAppend, zoneManage and
   * reportZones. The kernel requires user copy (or zero copy) for it.
   */
  zoned?: ZonedSetup;
  /** Handed to every worker's `open` (structured-cloneable). */
  shared?: Shared;
  /**
   * The target handles requests' metadata (UBLK_F_INTEGRITY, `--metadata-size`):
   * keeps it from `req.integrityBuffer` (`buffer` targets) or moves it itself
   * (`ring` targets), or knowingly drops it. Without it the device refuses metadata.
   */
  integrity?: boolean;
  /** Overrides the module's `recoverable` for these options (e.g. a wrapper, which is as recoverable as what it wraps). */
  recoverable?: boolean;
  /**
   * Main thread, when the device's size changes (`ublk-ts resize`,
   * UblkDevice.resize()): make `size` bytes servable, or throw
   * (TargetOptionError) to refuse. Growing, it runs before the kernel's
   * UPDATE_SIZE (a refusal leaves the size as it was); shrinking, after it
   * (requests in the old range are served until the kernel has the new size).
   * Without it the size cannot change.
   */
  resize?(size: number): void | Promise<void>;
  /** Main thread, after the device is gone: release what setup acquired (waited for at most 10 s). */
  cleanup?(): void | Promise<void>;
}

/** What `setup` learns of the device's own options (absent: the defaults). */
export interface DeviceContext {
  /** UBLK_F_INTEGRITY: bytes of metadata per logical block (0: none). */
  metadataSize: number;
  /**
   * Serving threads asked for (each opens the target once): --threads, else
   * --queues. An upper bound: the kernel may give fewer queues (one per CPU at most).
   */
  threads?: number;
}

export interface QueueContext<Options extends TargetOptions = TargetOptions, Shared = unknown> {
  devId: number;
  /** The first queue this thread serves. */
  queueId: number;
  depth: number;
  /** Largest request in bytes (max_io_buf_bytes). */
  maxIoBytes: number;
  options: Options;
  shared: Shared;
  io: TargetIo;
}

export interface TargetModule<Options extends TargetOptions = TargetOptions, Shared = unknown> {
  name: string;
  /**
   * The target's own options, in the same form as the device's: the CLI
   * parses `ublk-ts add NAME --option ...` and prints `--help` from them, and
   * `setup` gets them checked, with defaults filled in. Default: an optional `size`.
   */
  options?: readonly OptionSpec[];
  /**
   * Whether a new server process, given the same options, serves the same
   * data (a file, a remote store: yes; memory that lived in the old server: no).
   * Only such targets may use --recovery. Default false.
   */
  recoverable?: boolean;
  setup(options: Options, device?: DeviceContext): TargetSetup<Shared> | Promise<TargetSetup<Shared>>;
  open(ctx: QueueContext<Options, Shared>): Target | Promise<Target>;
}

/** Identity helper that types a target module: `defineTarget<{ file: string }, { fd: number }>({ ... })`. */
export function defineTarget<Options extends TargetOptions = TargetOptions, Shared = unknown>(
  t: TargetModule<Options, Shared>,
): TargetModule<Options, Shared> {
  return t;
}

/** The option rows a target module's options are checked against. */
export const targetOptionSpecs = (m: { options?: readonly OptionSpec[] }): readonly OptionSpec[] => m.options ?? DEFAULT_TARGET_OPTIONS;

/** A target's options checked against its rows, defaults filled in: what its `setup` gets. */
export function checkTargetOptions(m: { options?: readonly OptionSpec[] }, given: Record<string, unknown>, naming: Naming): TargetOptions {
  return checkOptions(targetOptionSpecs(m), given, naming) as TargetOptions;
}

/** Thrown by `setup` for bad user input: the CLI prints the message and exits non-zero. */
export class TargetOptionError extends Error {
  override name = 'TargetOptionError';
}
