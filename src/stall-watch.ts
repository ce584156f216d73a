// Telling a slow wait from a stuck one: a device's stop may legitimately take
// minutes (STOP_DEV first writes back every dirty page of the device's cache
// through the server), and must not be cut short while requests still move;
// a stop whose requests no longer move would wait for good.

/** `stalled()` is true once `mark()` has returned the same value for `quietMs`. */
export class StallWatch {
  private last: number;
  private since = Date.now();

  constructor(private readonly mark: () => number, private readonly quietMs: number) {
    this.last = mark();
  }

  stalled(): boolean {
    const m = this.mark();
    if (m !== this.last) {
      this.last = m;
      this.since = Date.now();
      return false;
    }
    return Date.now() - this.since >= this.quietMs;
  }
}
