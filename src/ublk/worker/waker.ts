// How a request completed outside a CQE (a target's promise, a timer, a
// socket) reaches a serving loop that is waiting on the event loop: the loop
// waits on wait(), the dispatcher calls wake().
export class Waker {
  private resolve: (() => void) | null = null;

  /** Resolves at the next wake(). One waiter at a time. */
  wait(): Promise<void> {
    return new Promise<void>((r) => {
      this.resolve = r;
    });
  }

  /** Ends the current wait, if any; a wake with no waiter is dropped (the loop looks at its state before waiting). */
  readonly wake = (): void => {
    const r = this.resolve;
    this.resolve = null;
    r?.();
  };
}
