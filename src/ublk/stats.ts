// Live counters of a device, in a memfd every serving thread maps: one slot
// per (thread, queue it serves), written only by that thread, so no counter
// is ever shared between writers. The main thread reads them (UblkDevice.stats),
// and so can another process, through /proc/<server pid>/fd/<fd> (`ublk-ts stats`).
import fs from 'node:fs';
import { native } from '../native.js';
import { MAP_SHARED, MFD_CLOEXEC, PROT_READ, PROT_WRITE } from '../sys.js';

/** Float64 words per slot, and each counter's index within a slot. */
export const SLOT_WORDS = 24;
export const C_QUEUE = 0; // the queue this slot counts (written once)
export const C_READS = 1, C_WRITES = 2, C_OTHER = 3, C_READ_BYTES = 4, C_WRITE_BYTES = 5;
export const C_ERRORS = 6; // requests completed with a negative result
export const C_INFLIGHT = 7; // requests dispatched and not yet handed to the commit path
export const C_FETCH_CQES = 8, C_TAGS = 9, C_COMMITS = 10, C_REARMS = 11; // batch mode
export const C_SHMEM = 12; // requests served in place from shared memory (UBLK_IO_F_SHMEM_ZC)
// The serving thread's costs, in the slot of the first queue it serves (0 in its others):
export const C_ENTERS = 13; // io_uring_enter calls
export const C_TURNS = 14; // serving-loop iterations: each a wake-up into JavaScript
export const C_CQES = 15; // CQEs reaped
export const C_GC_MINOR = 16, C_GC_MAJOR = 17; // garbage collections (scavenges; full mark-sweeps) of the thread's heap
export const C_HEAP_BYTES = 18; // bytes the thread allocated on its JavaScript heap (gc-count.ts: sampled, approximate)
export const C_SPIN_USEC = 19; // µs the thread spent spinning for requests instead of sleeping (polling)
export const C_SPIN_POLICY = 20; // 1 while the thread's polling policy is to spin, else 0 (a gauge)
export const C_SPIN_PREEMPTIONS = 21; // involuntary context switches while the policy was to spin (adaptive polling)

export interface QueueStats {
  queue: number;
  reads: number;
  writes: number;
  /** FLUSH, DISCARD, WRITE_ZEROES and anything else. */
  other: number;
  readBytes: number;
  writeBytes: number;
  errors: number;
  inFlight: number;
  /** Batch mode: FETCH_IO_CMDS completions and the tags they delivered. */
  fetchCqes: number;
  tags: number;
  commits: number;
  /** Multishot fetches that ended (-ENOBUFS, or no IORING_CQE_F_MORE) and were armed again. */
  rearms: number;
  /** UBLK_F_SHMEM_ZC: requests whose data the kernel left in the registered shared memory (no copy). */
  shmem: number;
  /**
   * The serving threads' io_uring_enter calls, serving-loop turns (a wake-up
   * and a run of JavaScript each) and CQEs reaped; per request, they are what
   * a request costs beyond its own work.
   */
  enters: number;
  turns: number;
  cqes: number;
  /** Garbage collections in the serving threads: minor (scavenges) and major; none while a steady load allocates nothing. */
  gcMinor: number;
  gcMajor: number;
  /** Bytes the serving threads allocated on their JavaScript heaps (sampled every 1024 loop turns). */
  heapBytes: number;
  /** µs the serving threads spent spinning for the next request (polling), and how many spin for now. */
  spinUsec: number;
  spinning: number;
  /** Adaptive polling: times the kernel preempted a thread whose policy was to spin (counted only; the policy does not use it). */
  spinPreemptions: number;
}

export type BatchStats = Pick<QueueStats, 'fetchCqes' | 'tags' | 'commits' | 'rearms'>;

const FIELDS: Array<[keyof QueueStats, number]> = [
  ['reads', C_READS], ['writes', C_WRITES], ['other', C_OTHER], ['readBytes', C_READ_BYTES], ['writeBytes', C_WRITE_BYTES],
  ['errors', C_ERRORS], ['inFlight', C_INFLIGHT], ['fetchCqes', C_FETCH_CQES], ['tags', C_TAGS], ['commits', C_COMMITS],
  ['rearms', C_REARMS], ['shmem', C_SHMEM], ['enters', C_ENTERS], ['turns', C_TURNS], ['cqes', C_CQES],
  ['gcMinor', C_GC_MINOR], ['gcMajor', C_GC_MAJOR], ['heapBytes', C_HEAP_BYTES], ['spinUsec', C_SPIN_USEC], ['spinning', C_SPIN_POLICY],
  ['spinPreemptions', C_SPIN_PREEMPTIONS],
];

export const statsBytes = (slots: number): number => Math.max(1, slots) * SLOT_WORDS * 8;

/** A new counter memfd for `slots` slots; the caller closes it. */
export function createStatsFd(slots: number): number {
  const fd = native.memfdCreate('ublk-ts-stats', MFD_CLOEXEC);
  fs.ftruncateSync(fd, statsBytes(slots));
  return fd;
}

/** Maps the counters of an fd made by createStatsFd (read-only for readers in other processes). */
export function mapStats(fd: number, writable: boolean): Float64Array {
  const size = fs.fstatSync(fd).size;
  return new Float64Array(native.mmap(size, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0));
}

const zeroStats = (queue: number): QueueStats => ({
  queue, reads: 0, writes: 0, other: 0, readBytes: 0, writeBytes: 0, errors: 0, inFlight: 0, fetchCqes: 0, tags: 0, commits: 0, rearms: 0,
  shmem: 0, enters: 0, turns: 0, cqes: 0, gcMinor: 0, gcMajor: 0, heapBytes: 0, spinUsec: 0, spinning: 0, spinPreemptions: 0,
});

/** The counters per queue (slots of threads sharing a queue added up), in queue order. */
export function readQueueStats(words: Float64Array, slots: number): QueueStats[] {
  const byQueue = new Map<number, QueueStats>();
  for (let s = 0; s < slots; s++) {
    const b = s * SLOT_WORDS, q = words[b + C_QUEUE]!;
    let qs = byQueue.get(q);
    if (!qs) byQueue.set(q, (qs = zeroStats(q)));
    for (const [k, i] of FIELDS) (qs[k] as number) += words[b + i]!;
  }
  return [...byQueue.values()].sort((a, b) => a.queue - b.queue);
}

/**
 * Requests dispatched so far by every serving thread of the device (all
 * slots). Read by a serving thread while it serves, so it sums the words in
 * place rather than build QueueStats objects as readQueueStats does.
 */
export function requestsDispatched(words: Float64Array): number {
  let n = 0;
  for (let b = 0; b + SLOT_WORDS <= words.length; b += SLOT_WORDS) n += words[b + C_READS]! + words[b + C_WRITES]! + words[b + C_OTHER]!;
  return n;
}

/**
 * A number that changes whenever a request is dispatched to the target or
 * handed back from it: the same value over a while means no request moved.
 */
export const progressMark = (t: QueueStats): number => 2 * (t.reads + t.writes + t.other) - t.inFlight;

/** Adds up per-queue counters into one for the device. */
export function totalStats(queues: readonly QueueStats[]): QueueStats {
  const t = zeroStats(-1);
  for (const q of queues) for (const [k] of FIELDS) (t[k] as number) += q[k] as number;
  return t;
}
