// The serving mode: everything that follows from the options, the kernel's
// features and the target's setup, decided once in the main thread and read
// by the workers' engines. A new UBLK_F_* mode is one predicate here plus the
// engine code that reads it; no other file works out what a mode implies.
import { featureNames, UBLK_BATCH_F_AUTO_BUF_REG_FALLBACK, UBLK_BATCH_F_HAS_BUF_ADDR, UBLK_BATCH_F_HAS_ZONE_LBA, UBLK_F_AUTO_BUF_REG, UBLK_F_BATCH_IO,
  UBLK_F_INTEGRITY, UBLK_F_NEED_GET_DATA, UBLK_F_NO_AUTO_PART_SCAN, UBLK_F_QUIESCE, UBLK_F_SHMEM_ZC, UBLK_F_SUPPORT_ZERO_COPY, UBLK_F_USER_COPY,
  UBLK_F_USER_RECOVERY, UBLK_F_USER_RECOVERY_FAIL_IO, UBLK_F_USER_RECOVERY_REISSUE, UBLK_F_UNPRIVILEGED_DEV, UBLK_F_ZONED } from './abi/uapi.js';
import { LAYOUTS } from './abi/layout.js';
import type { CopyMode, TargetData } from './target.js';

/** What happens to IO while a device has no server (UBLK_F_USER_RECOVERY and its variants). */
export const RECOVERY_POLICIES = ['none', 'requeue', 'reissue', 'fail-io'] as const;
export type RecoveryPolicy = (typeof RECOVERY_POLICIES)[number];

const RECOVERY_FLAGS: Record<RecoveryPolicy, number> = {
  none: 0,
  requeue: UBLK_F_USER_RECOVERY,
  reissue: UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE,
  'fail-io': UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_FAIL_IO,
};

/** The policy a device was created with, from its flags. */
export function recoveryOf(flags: number): RecoveryPolicy {
  if (!(flags & UBLK_F_USER_RECOVERY)) return 'none';
  return flags & UBLK_F_USER_RECOVERY_REISSUE ? 'reissue' : flags & UBLK_F_USER_RECOVERY_FAIL_IO ? 'fail-io' : 'requeue';
}

/** The copy mode a device was created with, from its flags. */
export function copyOf(flags: number): CopyMode {
  return flags & UBLK_F_SUPPORT_ZERO_COPY ? 'zero' : flags & UBLK_F_USER_COPY ? 'user' : 'kernel';
}

/** Most fixed buffers one io_uring table holds (zero copy: one slot per tag a ring serves). */
export const MAX_BUFFER_SLOTS = 16384;

/** A plain object (it crosses to the workers by structured clone). */
export interface ServingMode {
  /** FETCH_REQ / COMMIT_AND_FETCH_REQ per tag, or UBLK_F_BATCH_IO's PREP / FETCH / COMMIT_IO_CMDS. */
  engine: 'classic' | 'batch';
  copy: CopyMode;
  /** How the target touches request data. */
  data: TargetData;
  /** The UBLK_F_* flags ADD_DEV asks for. */
  flags: number;
  /** Per-tag server buffers exist (kernel and user copy; zero copy moves no data through server memory). */
  tagBuffers: boolean;
  /** Kernel copy: each tag's buffer address travels in FETCH/COMMIT commands and batch elements. */
  bufferAddressInCommands: boolean;
  /**
   * UBLK_F_NEED_GET_DATA: FETCH carries no buffer, a WRITE arrives as
   * UBLK_IO_RES_NEED_GET_DATA and its data is copied in by a NEED_GET_DATA
   * command that names the buffer.
   */
  needGetData: boolean;
  /** Zero copy with UBLK_F_AUTO_BUF_REG: the driver registers each request's pages in the serving ring's table. */
  autoBufReg: boolean;
  /** Zero copy, `ring` target: a request whose pages are not registered (yet) gets REGISTER_IO_BUF. */
  mayRegister: boolean;
  /** Zero copy without AUTO_BUF_REG: every READ/WRITE is registered explicitly. */
  registerAll: boolean;
  /** Batch: bytes per PREP/COMMIT element (struct ublk_elem_header, plus the buffer address in kernel copy). */
  elemBytes: number;
  /** Batch: the PREP/COMMIT command's UBLK_BATCH_F_* flags. */
  batchFlags: number;
  /** The device's logical block size: a READ/WRITE result must be a multiple of it. */
  logicalBlockSize: number;
  /** The device outlives its server (UBLK_F_USER_RECOVERY): a failing server leaves it to `recover`. */
  recovery: RecoveryPolicy;
  /**
   * UBLK_F_INTEGRITY: bytes of metadata per logical block (0: none). A request
   * with UBLK_IO_F_INTEGRITY has that much per block, moved on /dev/ublkcN at
   * UBLKSRV_IO_INTEGRITY_FLAG (user copy only); `buffer` targets get it staged.
   */
  metadataSize: number;
  /** UBLK_F_SHMEM_ZC: a request may come with its data in a registered shared memory region (worker/shmem-views.ts). */
  shmem: boolean;
}

/** The user's choice of a mode that cannot be served: one line, for the CLI and the library alike. */
export class ModeError extends Error {
  override name = 'ModeError';
}

export interface ModeChoice {
  batch: boolean;
  /** Default: defaultCopy() — zero where the target and the kernel allow it, else kernel (user for a zoned target). */
  copy?: CopyMode;
  autoBufReg: boolean;
  recovery?: RecoveryPolicy;
  /** false: UBLK_F_NO_AUTO_PART_SCAN, the kernel does not read the partition table at start. */
  partScan?: boolean;
  /** UBLK_F_NEED_GET_DATA: a WRITE's data is copied in only when the server asks (classic, kernel copy). */
  needGetData?: boolean;
  /** UBLK_F_INTEGRITY: bytes of metadata per logical block (user copy). */
  metadataSize?: number;
  /** UBLK_F_SHMEM_ZC: the shared memory file to register (control/shmem.ts); kernel copy, no recovery. */
  shmem?: string;
  shmemReadOnly?: boolean;
  /**
   * UBLK_F_UNPRIVILEGED_DEV: a device of a user who is not root. The kernel
   * serves those with kernel copy only, without recovery, and never scans
   * their partitions. Default false.
   */
  unprivileged?: boolean;
  /** The layout asked for (defaults 1, one thread per queue, 128): whether zero copy fits it (defaultCopy). */
  queues?: number;
  threads?: number;
  depth?: number;
  /**
   * The device is served by a daemon's shared threads, none of which has room
   * left in its buffer table for the device's tags (ThreadPool.reserve).
   */
  noBufferRoom?: boolean;
  /** Recovery: the flags the device was created with, which decide the copy mode when none is given. */
  deviceFlags?: number;
}

/** UBLK_F_INTEGRITY's copy mode: the driver moves metadata only through user copy. */
export function checkIntegrityCopy(o: Pick<ModeChoice, 'copy' | 'metadataSize'>): void {
  if (o.metadataSize && o.copy !== 'user') {
    throw new ModeError(`--metadata-size needs --copy user: the driver moves a request's metadata only through /dev/ublkcN (UBLK_F_INTEGRITY)`);
  }
}

/**
 * The mode for these options and this target. `features`, where known, adds
 * what the kernel offers on top: UBLK_F_QUIESCE (planned handover) with recovery.
 */
export function servingMode(o: ModeChoice,
  target: { name: string; data?: TargetData; logicalBlockSize?: number; recoverable?: boolean; integrity?: boolean; zoned?: boolean },
  features = 0): ServingMode {
  const data = target.data ?? 'buffer';
  const recovery = o.recovery ?? 'none';
  const zoned = target.zoned === true;
  const copy = o.copy ?? defaultCopy(o, data, zoned, features);
  if (recovery !== 'none' && !target.recoverable) {
    throw new ModeError(`the ${target.name} target keeps its data in the server, which a new server cannot find: it cannot use --recovery`);
  }
  if (copy === 'zero' && data === 'buffer') {
    throw new ModeError(`the ${target.name} target moves data in JavaScript, which zero copy cannot reach (use --copy ${zoned ? 'user' : 'kernel or user'})`);
  }
  if (zoned && copy === 'kernel') {
    // ublk_ctrl_add_dev: a ZONE_APPEND's sector travels back in the commit's
    // addr field, which kernel copy uses for the buffer: ADD_DEV says EINVAL.
    throw new ModeError(`the ${target.name} target is zoned, and the kernel serves zoned devices with user or zero copy only (use --copy user)`);
  }
  if (o.needGetData && (o.batch || copy !== 'kernel')) {
    throw new ModeError('--need-get-data works in classic mode with kernel copy only (user and zero copy never copy ahead; batch mode lacks it)');
  }
  checkIntegrityCopy({ ...o, copy });
  const metadataSize = o.metadataSize ?? 0;
  if (metadataSize && !target.integrity) {
    throw new ModeError(`the ${target.name} target does not keep metadata, so it cannot use --metadata-size (null, memory and loop can)`);
  }
  if (o.shmem !== undefined) checkShmemMode({ ...o, copy });
  else if (o.shmemReadOnly) throw new ModeError('--shmem-read-only only applies with --shmem FILE');
  if (o.unprivileged) checkUnprivileged({ ...o, copy }, target.name);
  const zero = copy === 'zero';
  const autoBufReg = zero && o.autoBufReg;
  const kernel = copy === 'kernel';
  let flags = o.batch ? UBLK_F_BATCH_IO : 0;
  if (copy === 'user') flags |= UBLK_F_USER_COPY;
  if (zoned) flags |= UBLK_F_ZONED;
  if (zero) flags |= UBLK_F_SUPPORT_ZERO_COPY | (autoBufReg ? UBLK_F_AUTO_BUF_REG : 0);
  // (the driver refuses user copy on a zero-copy device without it: EACCES)
  if (zero && data === 'ring-and-user-copy') flags |= UBLK_F_USER_COPY;
  flags |= RECOVERY_FLAGS[recovery];
  if (recovery !== 'none') flags |= features & UBLK_F_QUIESCE;
  if (o.partScan === false) flags |= UBLK_F_NO_AUTO_PART_SCAN;
  if (o.needGetData) flags |= UBLK_F_NEED_GET_DATA;
  if (metadataSize) flags |= UBLK_F_INTEGRITY;
  if (o.shmem !== undefined) flags |= UBLK_F_SHMEM_ZC;
  if (o.unprivileged) flags |= UBLK_F_UNPRIVILEGED_DEV;
  return {
    engine: o.batch ? 'batch' : 'classic',
    copy,
    data,
    flags,
    tagBuffers: !zero,
    bufferAddressInCommands: kernel,
    needGetData: o.needGetData === true,
    autoBufReg,
    mayRegister: zero && (data === 'ring' || data === 'ring-and-user-copy'),
    registerAll: zero && !autoBufReg,
    elemBytes: LAYOUTS.ublk_elem_header.size + (kernel ? 8 : 0) + (zoned ? 8 : 0),
    batchFlags: (kernel ? UBLK_BATCH_F_HAS_BUF_ADDR : autoBufReg ? UBLK_BATCH_F_AUTO_BUF_REG_FALLBACK : 0) | (zoned ? UBLK_BATCH_F_HAS_ZONE_LBA : 0),
    logicalBlockSize: target.logicalBlockSize ?? 512,
    recovery,
    metadataSize,
    shmem: o.shmem !== undefined,
  };
}

/**
 * The copy mode when none is asked for. Zero copy where the target moves data
 * on the ring or moves none (loop, stripe, nbd, null) and the kernel has it:
 * no copy between the request's pages and a server buffer, which in the VM
 * made 128 KiB loop IO 5x faster, nbd's 512 KiB writes 1.5x and null's 4k
 * QD 64 1.1-1.4x (README: --copy, Performance), and no tag buffers to keep
 * (nbd's small random IO pays 1-13% for a pread per small WRITE). Kernel copy
 * otherwise (user copy for a zoned target, which the kernel serves with user
 * or zero copy only), and where zero copy cannot serve what else was asked:
 * a user who is not root, --shmem, --need-get-data, --metadata-size, a
 * daemon whose threads' buffer tables have no room left for the device's
 * tags (ThreadPool), batch mode with --threads, or more tags per thread than
 * a table holds.
 * A device being recovered keeps the mode its flags say it was created with.
 */
export function defaultCopy(o: ModeChoice, data: TargetData, zoned: boolean, features: number): CopyMode {
  const fallback = zoned ? 'user' : 'kernel';
  if (o.deviceFlags !== undefined) return copyOf(o.deviceFlags);
  if (zoned || data === 'buffer' || o.unprivileged || o.shmem !== undefined || o.needGetData || o.metadataSize || o.noBufferRoom) return fallback;
  // (--threads in batch mode: the kernel may clamp the queues below the threads, which AUTO_BUF_REG cannot serve)
  if (o.batch && o.threads !== undefined) return fallback;
  // checkAssignment's slot count, bounded from above before ADD_DEV clamps the queues: with
  // --threads, a thread may serve tags of every queue (per-IO daemons); without, one queue.
  if (o.threads !== undefined && (o.queues ?? 1) * (o.depth ?? 128) > MAX_BUFFER_SLOTS) return fallback;
  const needs = UBLK_F_SUPPORT_ZERO_COPY | UBLK_F_AUTO_BUF_REG | (data === 'ring-and-user-copy' ? UBLK_F_USER_COPY : 0);
  return (features & needs) === needs ? 'zero' : fallback;
}

/**
 * What a user who is not root cannot ask for: ADD_DEV refuses user and zero
 * copy for unprivileged devices (and so zoned and integrity), clears
 * recovery, and SHMEM_ZC's REG_BUF is a root-only command.
 */
function checkUnprivileged(o: ModeChoice, target: string): void {
  const why = (what: string): ModeError => new ModeError(`${what} needs root: the kernel serves the devices of other users ` +
    '(UBLK_F_UNPRIVILEGED_DEV) with kernel copy only, without recovery or shared memory');
  if (o.copy !== 'kernel') throw why(`--copy ${o.copy}${o.copy === 'user' && target === 'zoned' ? ' (a zoned device)' : ''}`);
  if ((o.recovery ?? 'none') !== 'none') throw why('--recovery');
  if (o.shmem !== undefined) throw why('--shmem');
}

/** What --shmem cannot go with. */
function checkShmemMode(o: ModeChoice): void {
  if ((o.recovery ?? 'none') !== 'none') {
    throw new ModeError('--shmem cannot be used with --recovery: a new server could not find the shared memory the old one registered');
  }
  if (o.copy !== 'kernel') {
    throw new ModeError(`--shmem works with kernel copy only (the default), not --copy ${o.copy}: drop --copy`);
  }
}

/** Refuses a mode the running kernel lacks, naming what is missing and what to do instead. */
export function checkKernelSupports(mode: ServingMode, features: number): void {
  if (mode.engine === 'batch' && !(features & UBLK_F_BATCH_IO)) {
    throw new ModeError('this kernel\'s ublk driver does not support UBLK_F_BATCH_IO (batch mode needs Linux 7.0 or later)');
  }
  const missing = mode.flags & ~features;
  if (!missing) return;
  const hint = missing === UBLK_F_AUTO_BUF_REG ? '; --no-auto-buf-reg registers each buffer explicitly instead' : '';
  const what = missing & RECOVERY_FLAGS[mode.recovery] ? `--recovery ${mode.recovery}`
    : missing & UBLK_F_NO_AUTO_PART_SCAN ? '--no-part-scan' : missing & UBLK_F_NEED_GET_DATA ? '--need-get-data'
      : missing & UBLK_F_ZONED ? 'a zoned device; Linux 6.6 or later'
        : missing & UBLK_F_INTEGRITY ? '--metadata-size, Linux 7.0 or later' : missing & UBLK_F_SHMEM_ZC ? '--shmem, Linux 7.1 or later'
          : `--copy ${mode.copy}`;
  throw new ModeError(`this kernel's ublk driver lacks ${featureNames(missing).join(', ')} (needed for ${what})${hint}`);
}

/** One thread's share of the work: a queue it serves. */
export interface QueueAssignment {
  q: number;
  /**
   * Classic with more or fewer threads than queues (UBLK_F_PER_IO_DAEMON):
   * the tags of this queue this thread fetches and serves. Absent: all.
   */
  tags?: number[];
  /** Batch: this thread PREPs the queue (exactly one thread per queue does). */
  prep: boolean;
  /** Batch: provided buffers for this thread's fetch command on the queue. */
  fetchBuffers: number;
  /** This (thread, queue)'s slot in the device's counters (stats.ts). */
  slot: number;
}

/**
 * Which thread serves which queue. Classic: one thread per queue (the kernel
 * binds each tag to the thread that fetched it). Batch, with at most as many
 * threads as queues: queues dealt round-robin; with more, several threads
 * share a queue (each with its own fetch command) and its first thread PREPs
 * it. Only one fetch command per queue is active at a time: when threads share
 * a queue, a single fetch buffer each lets the active role move on after every batch.
 */
export function assignQueues(mode: ServingMode, queues: number, threads = queues, depth = 0): QueueAssignment[][] {
  let slot = 0;
  if (mode.engine === 'classic' && threads === queues) {
    return Array.from({ length: queues }, (_, q) => [{ q, prep: true, fetchBuffers: 0, slot: slot++ }]);
  }
  if (mode.engine === 'classic') {
    // Per-IO daemons: the (queue, tag) pairs in order, dealt round-robin, so
    // that every queue is served by as many threads as there are (as kublk's --per_io_tasks).
    const out = Array.from({ length: threads }, () => [] as QueueAssignment[]);
    for (let i = 0; i < queues * depth; i++) {
      const q = Math.floor(i / depth), mine = out[i % threads]!;
      let a = mine.find((x) => x.q === q);
      if (!a) mine.push((a = { q, tags: [], prep: true, fetchBuffers: 0, slot: 0 }));
      a.tags!.push(i % depth);
    }
    for (const a of out.flat()) a.slot = slot++;
    return out.filter((t) => t.length > 0);
  }
  const fetchBuffers = threads > queues ? 1 : 4;
  const out = Array.from({ length: threads }, () => [] as QueueAssignment[]);
  if (threads <= queues) for (let q = 0; q < queues; q++) out[q % threads]!.push({ q, prep: true, fetchBuffers, slot: slot++ });
  else for (let t = 0; t < threads; t++) out[t]!.push({ q: t % queues, prep: t < queues, fetchBuffers, slot: slot++ });
  return out;
}

/** Refuses thread layouts the mode cannot serve. */
export function checkAssignment(mode: ServingMode, plan: QueueAssignment[][], queues: number, depth: number): void {
  if (mode.engine === 'batch' && mode.autoBufReg && plan.length > queues) {
    // AUTO_BUF_REG registers into the ring of whichever fetch delivered the request: rings sharing a queue would collide.
    throw new ModeError(`zero copy with automatic buffer registration needs at most one thread per queue ` +
      `(${plan.length} threads for ${queues} queue(s))`);
  }
  if (mode.copy === 'zero' && Math.max(...plan.map((qs) => qs.length)) * depth > MAX_BUFFER_SLOTS) {
    throw new ModeError(`zero copy: a thread can serve at most ${MAX_BUFFER_SLOTS} tags (queues per thread × depth)`);
  }
}
