// Contiguous ranges of a fixed table (fixed files, buffer-table slots, buffer
// group ids, user_data queue indices) handed to the devices a serving thread
// hosts, and taken back when a device leaves: first fit over a sorted list of
// free ranges, neighbours merged on release. Devices come and go rarely; a
// table holds a few thousand entries at most.
export class SlotRanges {
  /** Free ranges as [start, length], sorted by start, never adjacent. */
  private readonly free: Array<[number, number]>;

  constructor(readonly size: number) {
    this.free = size > 0 ? [[0, size]] : [];
  }

  /** The first free range of `n` slots (n ≥ 1), taken; -1 when none is that long. */
  take(n: number): number {
    const fit = this.free.find((r) => r[1] >= n);
    if (!fit) return -1;
    const start = fit[0];
    this.takeAt(start, n);
    return start;
  }

  /** Takes the `n` slots from `start` (n ≥ 1) if all are free (true), as another's take() chose them. */
  takeAt(start: number, n: number): boolean {
    for (let i = 0; i < this.free.length; i++) {
      const r = this.free[i]!;
      if (r[0] > start) return false;
      if (r[0] + r[1] < start + n) continue;
      const after = r[0] + r[1] - (start + n);
      if (start === r[0]) {
        if (after === 0) this.free.splice(i, 1);
        else { r[0] = start + n; r[1] = after; }
      } else {
        r[1] = start - r[0];
        if (after > 0) this.free.splice(i + 1, 0, [start + n, after]);
      }
      return true;
    }
    return false;
  }

  /** Gives back `n` slots from `start`, taken before. */
  release(start: number, n: number): void {
    if (n <= 0) return;
    let i = 0;
    while (i < this.free.length && this.free[i]![0] < start) i++;
    const prev = this.free[i - 1], next = this.free[i];
    if ((prev && prev[0] + prev[1] > start) || (next && start + n > next[0]) || start < 0 || start + n > this.size) {
      throw new Error(`slots ${start}..${start + n - 1} were not taken`);
    }
    if (prev && prev[0] + prev[1] === start) {
      prev[1] += n;
      if (next && start + n === next[0]) {
        prev[1] += next[1];
        this.free.splice(i, 1);
      }
    } else if (next && start + n === next[0]) {
      next[0] = start;
      next[1] += n;
    } else {
      this.free.splice(i, 0, [start, n]);
    }
  }

  /** Slots free in all. */
  get available(): number {
    return this.free.reduce((a, r) => a + r[1], 0);
  }
}
