// Creating and mapping a ring (cf. liburing setup.c): io_uring_setup, the SQ
// and CQ ring mappings and the SQE array, with the kernel-reported offsets
// turned into Uint32Array word indices once.
import { native } from '../native.js';
import { LAYOUTS } from './layout.js';
import {
  IORING_FEAT_SINGLE_MMAP, IORING_OFF_CQ_RING, IORING_OFF_SQES, IORING_OFF_SQ_RING, IORING_SETUP_COOP_TASKRUN,
  IORING_SETUP_CQSIZE, IORING_SETUP_DEFER_TASKRUN, IORING_SETUP_SINGLE_ISSUER, IORING_SETUP_SQE128,
  IORING_SETUP_TASKRUN_FLAG,
} from './constants.js';

// <sys/mman.h>
const PROT_READ = 0x1, PROT_WRITE = 0x2, MAP_SHARED = 0x01, MAP_POPULATE = 0x8000;

const P = LAYOUTS.io_uring_params.fields;
const SQO = LAYOUTS.io_sqring_offsets.fields;
const CQO = LAYOUTS.io_cqring_offsets.fields;

export interface RingOptions {
  /** SQ size; the kernel rounds up to a power of two. */
  entries: number;
  /** CQ size (IORING_SETUP_CQSIZE); default 2 × entries. */
  cqEntries?: number;
  /** 128-byte SQEs (IORING_SETUP_SQE128), needed for 80-byte URING_CMD payloads. */
  sqe128?: boolean;
  /** IORING_SETUP_SINGLE_ISSUER: only the creating thread may submit. */
  singleIssuer?: boolean;
  /** IORING_SETUP_DEFER_TASKRUN (requires singleIssuer): completions run only in a GETEVENTS enter. */
  deferTaskrun?: boolean;
  /** IORING_SETUP_COOP_TASKRUN: no IPI to run completion task work. */
  coopTaskrun?: boolean;
  /** IORING_SETUP_TASKRUN_FLAG: the kernel sets IORING_SQ_TASKRUN when an enter is needed. */
  taskrunFlag?: boolean;
}

/** A set-up ring: its fd, what the kernel chose, its mappings and word indices into them. */
export interface RingSetup {
  fd: number;
  flags: number;
  features: number;
  sqEntries: number;
  cqEntries: number;
  sqeSize: number;
  /** Every mapping (SQ ring, CQ ring unless shared, SQEs), for unmapping. */
  maps: ArrayBuffer[];
  sq: Uint32Array;
  cq: Uint32Array;
  sqes: ArrayBuffer;
  /** Word indices into `sq`. */
  sqHead: number;
  sqTail: number;
  sqFlags: number;
  sqArray: number;
  /** Word indices into `cq`; `cqes` is where CQE 0 starts. */
  cqHead: number;
  cqTail: number;
  /** cq_off.flags (IORING_CQ_*), in u32 words. */
  cqFlags: number;
  cqes: number;
  sqMask: number;
  cqMask: number;
}

export function setupFlags(opts: RingOptions): number {
  let flags = 0;
  if (opts.cqEntries !== undefined) flags |= IORING_SETUP_CQSIZE;
  if (opts.sqe128) flags |= IORING_SETUP_SQE128;
  if (opts.singleIssuer) flags |= IORING_SETUP_SINGLE_ISSUER;
  if (opts.deferTaskrun) flags |= IORING_SETUP_DEFER_TASKRUN;
  if (opts.coopTaskrun) flags |= IORING_SETUP_COOP_TASKRUN;
  if (opts.taskrunFlag) flags |= IORING_SETUP_TASKRUN_FLAG;
  return flags;
}

function mapRegion(fd: number, length: number, offset: number): ArrayBuffer {
  return native.mmap(length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, offset);
}

/** io_uring_setup + mmap; on failure nothing stays open or mapped. */
export function setupRing(opts: RingOptions): RingSetup {
  const flags = setupFlags(opts);
  const pv = new DataView(new ArrayBuffer(LAYOUTS.io_uring_params.size));
  pv.setUint32(P.flags[0], flags, true);
  if (opts.cqEntries !== undefined) pv.setUint32(P.cq_entries[0], opts.cqEntries, true);
  const fd = native.setup(opts.entries, new Uint8Array(pv.buffer));
  const maps: ArrayBuffer[] = [];
  try {
    return mapRings(fd, flags, pv, maps);
  } catch (e) {
    for (const m of maps) native.munmap(m);
    native.close(fd);
    throw e;
  }
}

function mapRings(fd: number, flags: number, pv: DataView, maps: ArrayBuffer[]): RingSetup {
  const sqOff = (f: keyof typeof SQO): number => pv.getUint32(P.sq_off[0] + SQO[f][0], true);
  const cqOff = (f: keyof typeof CQO): number => pv.getUint32(P.cq_off[0] + CQO[f][0], true);
  const sqEntries = pv.getUint32(P.sq_entries[0], true);
  const cqEntries = pv.getUint32(P.cq_entries[0], true);
  const features = pv.getUint32(P.features[0], true);
  const sqeSize = flags & IORING_SETUP_SQE128 ? 2 * LAYOUTS.io_uring_sqe.size : LAYOUTS.io_uring_sqe.size;
  const sqSize = sqOff('array') + sqEntries * 4;
  const cqSize = cqOff('cqes') + cqEntries * LAYOUTS.io_uring_cqe.size;
  // IORING_FEAT_SINGLE_MMAP: SQ and CQ rings share one mapping.
  if (features & IORING_FEAT_SINGLE_MMAP) {
    maps.push(mapRegion(fd, Math.max(sqSize, cqSize), IORING_OFF_SQ_RING));
  } else {
    maps.push(mapRegion(fd, sqSize, IORING_OFF_SQ_RING), mapRegion(fd, cqSize, IORING_OFF_CQ_RING));
  }
  maps.push(mapRegion(fd, sqEntries * sqeSize, IORING_OFF_SQES));
  const sq = new Uint32Array(maps[0]!);
  const cq = new Uint32Array(maps[maps.length - 2]!);
  return {
    fd, flags, features, sqEntries, cqEntries, sqeSize, maps, sq, cq, sqes: maps[maps.length - 1]!,
    sqHead: sqOff('head') >> 2, sqTail: sqOff('tail') >> 2, sqFlags: sqOff('flags') >> 2, sqArray: sqOff('array') >> 2,
    cqHead: cqOff('head') >> 2, cqTail: cqOff('tail') >> 2, cqFlags: cqOff('flags') >> 2, cqes: cqOff('cqes') >> 2,
    sqMask: sq[sqOff('ring_mask') >> 2]!, cqMask: cq[cqOff('ring_mask') >> 2]!,
  };
}
