// Typed access to build/Release/ublk_native.node (native/ublk_native.c) and
// the errno conventions shared by everything that calls it: hot-path calls
// return -errno, the rest throw an Error with `.code` and `.errno`.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { packageFile } from './package-files.js';

/**
 * A uv_poll_t watching one fd for readability on the creating thread's event
 * loop (level-triggered). libuv sets O_NONBLOCK on the fd. Worker teardown
 * closes a poller left open, but close() it before closing its fd.
 */
export interface Poller {
  /** Begins watching (no-op if started); throws after close(). */
  start(): void;
  /** Stops watching; a stopped poller does not keep the event loop alive. */
  stop(): void;
  /** Releases the handle; idempotent. Close it before closing the fd. */
  close(): void;
  /** While started, keep the event loop alive (the default). */
  ref(): void;
  /** While started, let the event loop exit if nothing else is pending. */
  unref(): void;
}

/** Called on readability with 0, or with a negative libuv/errno status on a poll error. */
export type PollerCallback = (status: number) => void;

export interface Native {
  /** io_uring_setup(2); `params` is a 120-byte struct io_uring_params, updated in place. Throws. */
  setup(entries: number, params: Uint8Array): number;
  /** io_uring_enter(2) without a sigmask/ext arg; returns the result or -errno. */
  enter(fd: number, toSubmit: number, minComplete: number, flags: number): number;
  /** io_uring_enter(2) with IORING_ENTER_EXT_ARG's argument (its bytes and length); result or -errno. */
  enterArg(fd: number, toSubmit: number, minComplete: number, flags: number, arg: ArrayBufferView): number;
  /** io_uring_register(2); `arg` is passed by address; returns the result or -errno. */
  register(fd: number, opcode: number, arg: ArrayBufferView | ArrayBuffer | null, nrArgs: number): number;
  /** mmap(2) as an ArrayBuffer that unmaps when collected. Throws. */
  mmap(length: number, prot: number, flags: number, fd: number, offset: number): ArrayBuffer;
  /** Unmaps now and detaches the buffer (all views become empty); idempotent. */
  munmap(buffer: ArrayBuffer): void;
  /** Never unmaps this buffer's memory (not when collected; munmap() only detaches it): the kernel may still hold its address. */
  keepMapped(buffer: ArrayBuffer): void;
  /** Page-aligned zeroed anonymous memory, freed when collected or by munmap(). Throws. */
  alloc(length: number): ArrayBuffer;
  /**
   * Copies `n` bytes from byte `srcAt` of `src` to byte `dstAt` of `dst`
   * (buffers or views; overlap allowed), allocating nothing: what
   * `dst.set(src.subarray(...), at)` does with a view made for it. Throws
   * RangeError outside either.
   */
  copyBytes(dst: ArrayBufferView | ArrayBuffer, dstAt: number, src: ArrayBufferView | ArrayBuffer, srcAt: number, n: number): void;
  /**
   * pread(2) / pwrite(2) of bytes `at`..`at + length` of `buffer` (a buffer
   * or view; RangeError outside it) at the 64-bit file offset offsetHi * 2^32
   * + offsetLo, offsetLo taken modulo 2^32 (pass `lo | 0`: a small integer,
   * no heap number); bytes moved or -errno. For syscalls that never wait,
   * which io_uring would hand to a worker thread (no FMODE_NOWAIT).
   */
  pread(fd: number, buffer: ArrayBufferView | ArrayBuffer, at: number, length: number, offsetLo: number, offsetHi: number): number;
  pwrite(fd: number, buffer: ArrayBufferView | ArrayBuffer, at: number, length: number, offsetLo: number, offsetHi: number): number;
  /**
   * `n` pread(2)s (write false) or pwrite(2)s between `buffer` and `fd`, in
   * one call: `table` holds a triple per entry (byte in buffer, length, file
   * offset), whose first number each call replaces by its result (bytes, or
   * -errno). Throws if a range lies outside the buffer.
   */
  rwMany(fd: number, buffer: ArrayBufferView | ArrayBuffer, table: Float64Array, n: number, write: boolean): void;
  /** madvise(2) on `length` bytes of `buffer` from `offset` (page-aligned); 0 or -errno. */
  madvise(buffer: ArrayBuffer, offset: number, length: number, advice: number): number;
  /** Address of the first byte of a buffer or view (view: buffer + byteOffset). */
  addressOf(buffer: ArrayBufferView | ArrayBuffer): number;
  /**
   * Writes CLOCK_MONOTONIC in ms to out[i]: a clock read that allocates
   * nothing (performance.now() returns a heap number each call). Throws
   * RangeError if `i` is outside `out`.
   */
  clockMs(out: Float64Array, i: number): void;
  /** Involuntary context switches of the calling thread so far (getrusage RUSAGE_THREAD ru_nivcsw). */
  threadPreemptions(): number;
  /** eventfd(2). Throws. */
  eventfd(initval: number, flags: number): number;
  /** memfd_create(2). Throws. */
  memfdCreate(name: string, flags: number): number;
  /** close(2) for fds created by this addon; returns 0 or -errno. */
  close(fd: number): number;
  /** fallocate(2); returns 0 or -errno. */
  fallocate(fd: number, mode: number, offset: number, length: number): number;
  /** Watches `fd` on this thread's loop; with `drainEventfd` reads the eventfd counter before each call. */
  createPoller(fd: number, drainEventfd: boolean, callback: PollerCallback): Poller;
}

const ADDON = packageFile('build', 'Release', 'ublk_native.node');

/**
 * The addon's exports, loaded with this module: the hot path calls them
 * directly. When the addon is missing or does not load, a stand-in whose every
 * method throws one clear Error takes its place, so that importing ublk-ts (or
 * `ublk-ts --help`) still works and the first real use says what to do.
 */
function loadNative(): Native {
  try {
    return createRequire(import.meta.url)(ADDON) as Native;
  } catch (cause) {
    const why = existsSync(ADDON)
      ? `cannot be loaded (${String((cause as Error)?.message ?? cause).split('\n')[0]})`
      : 'is missing';
    const message =
      `the native addon ${ADDON} ${why}: build it with \`npm rebuild ublk-ts\` (\`npm rebuild -g ublk-ts\` ` +
      'for a global install) or, in a git checkout, `npm ci`; node-gyp needs python3, make and g++';
    return new Proxy({} as Native, {
      get: (_, key) =>
        typeof key === 'string' && key !== 'then'
          ? () => {
              throw new Error(message, { cause });
            }
          : undefined,
    });
  }
}

export const native: Native = loadNative();

// Several names share a number (EAGAIN/EWOULDBLOCK, EOPNOTSUPP/ENOTSUP): the
// first listed wins unless glibc's own spelling (strerrorname_np) says otherwise.
const NAMES = new Map<number, string>();
for (const [name, n] of Object.entries(constants.errno)) if (!NAMES.has(n)) NAMES.set(n, name);
for (const name of ['EAGAIN', 'EOPNOTSUPP', 'EDEADLK'] as const) {
  const n = (constants.errno as Record<string, number>)[name];
  if (n !== undefined) NAMES.set(n, name);
}

/** 'EINVAL' for -22 (or 22); 'E<n>' for numbers the platform does not name. */
export function errnoName(negErrno: number): string {
  const n = Math.abs(negErrno);
  return NAMES.get(n) ?? `E${n}`;
}

export class ErrnoError extends Error {
  /** Negative, as io_uring reports it. */
  readonly errno: number;
  readonly code: string;
  constructor(res: number, what: string) {
    const errno = -Math.abs(res);
    const code = errnoName(errno);
    super(`${what}: ${code} (${errno})`);
    this.name = 'ErrnoError';
    this.errno = errno;
    this.code = code;
  }
}

/** Returns `res` unless it is negative, in which case throws ErrnoError. */
export function check(res: number, what: string): number {
  if (res < 0) throw new ErrnoError(res, what);
  return res;
}
