// Event-loop integration for a ring: an eventfd registered with the ring
// (IORING_REGISTER_EVENTFD) and watched by a native Poller on this thread's
// libuv loop. The kernel signals the eventfd when it posts CQEs — and, for
// IORING_SETUP_DEFER_TASKRUN rings, already when it queues the deferred task
// work that will post them: then only a GETEVENTS enter (ring.submit()) makes
// the CQEs appear. So a woken user always calls ring.submit() before reaping.
import { constants } from 'node:os';
import { native, ErrnoError, type Poller } from '../native.js';
import type { Ring } from './ring.js';

// <sys/eventfd.h>
const EFD_NONBLOCK = 0o4000, EFD_CLOEXEC = 0o2000000;

export class RingWakeup {
  /** The eventfd (non-blocking; drained by the poller before each callback). */
  readonly fd: number;
  private readonly ring: Ring;
  private readonly poller: Poller;
  private callback: (() => void) | null = null;
  private waiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private started = false;
  private polling = false;
  private closed = false;

  constructor(ring: Ring) {
    this.ring = ring;
    this.fd = native.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    try {
      ring.registerEventfd(this.fd);
      this.poller = native.createPoller(this.fd, true, (status) => this.onPoll(status));
    } catch (e) {
      native.close(this.fd);
      throw e;
    }
  }

  /** Sets the function called on every wake while started (replaces any previous one). */
  onReadable(cb: () => void): void {
    this.callback = cb;
  }

  /** Watches the eventfd; keeps the event loop alive until stop(). */
  start(): void {
    this.started = true;
    this.sync();
  }

  stop(): void {
    this.started = false;
    this.sync();
  }

  /** Resolves on the next wake, watching just for that if not started. */
  wait(): Promise<void> {
    if (this.closed) return Promise.reject(new ErrnoError(-constants.errno.EBADF, 'RingWakeup.wait after close'));
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.sync();
    });
  }

  /** Closes the poller and the eventfd, unregistering it from the ring if the ring is still open. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.poller.close();
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(new Error('RingWakeup closed'));
    try {
      if (!this.ring.closed) this.ring.unregisterEventfd();
    } finally {
      native.close(this.fd);
    }
  }

  private sync(): void {
    const want = !this.closed && (this.started || this.waiters.length > 0);
    if (want === this.polling) return;
    this.polling = want;
    if (want) this.poller.start();
    else this.poller.stop();
  }

  private onPoll(status: number): void {
    if (status < 0) {
      // A poll error on an eventfd means it is unusable: stop rather than spin.
      this.started = false;
      const waiters = this.waiters;
      this.waiters = [];
      this.sync();
      for (const w of waiters) w.reject(new ErrnoError(status, 'RingWakeup poll'));
      return;
    }
    if (this.waiters.length > 0) {
      const waiters = this.waiters;
      this.waiters = [];
      this.sync();
      for (const w of waiters) w.resolve();
    }
    if (this.started && this.callback) this.callback();
  }
}
