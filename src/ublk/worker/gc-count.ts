// Counts this thread's garbage collections and the bytes it allocated on its
// JavaScript heap into its counters (C_GC_MINOR, C_GC_MAJOR, C_HEAP_BYTES),
// so that a steady load shows whether the hot path allocates. v8.GCProfiler
// records each collection natively as it happens (a PerformanceObserver would
// only deliver it through the event loop, where a serving thread blocked in
// io_uring_enter does not go), with the heap's used size before and after it:
// what was allocated is every rise of the used size, between collections and
// up to now.
import v8 from 'node:v8';
import { C_GC_MAJOR, C_GC_MINOR, C_HEAP_BYTES } from '../stats.js';

interface GcRecord {
  gcType: string;
  beforeGC: { heapStatistics: { usedHeapSize: number } };
  afterGC: { heapStatistics: { usedHeapSize: number } };
}

export class GcCount {
  private readonly profiler = new v8.GCProfiler();
  /** The heap's used size when last looked at (a sample, or the end of a collection). */
  private used = v8.getHeapStatistics().used_heap_size;

  constructor(private readonly words: Float64Array, private readonly base: number) {
    this.profiler.start();
  }

  /**
   * Adds what happened since the last call. It allocates a few hundred bytes
   * itself (the profiler's report, the heap statistics), counted next time:
   * call it now and then, not per request.
   */
  sample(): void {
    const { statistics } = this.profiler.stop() as { statistics: GcRecord[] };
    this.profiler.start();
    const w = this.words, b = this.base;
    let used = this.used;
    for (const gc of statistics) {
      w[b + C_HEAP_BYTES]! += Math.max(0, gc.beforeGC.heapStatistics.usedHeapSize - used);
      used = gc.afterGC.heapStatistics.usedHeapSize;
      if (gc.gcType === 'Scavenge' || gc.gcType.startsWith('Minor')) w[b + C_GC_MINOR]!++;
      else if (gc.gcType === 'MarkSweepCompact') w[b + C_GC_MAJOR]!++;
    }
    const now = v8.getHeapStatistics().used_heap_size;
    w[b + C_HEAP_BYTES]! += Math.max(0, now - used);
    this.used = now;
  }

  stop(): void {
    this.sample();
    this.profiler.stop();
  }
}
