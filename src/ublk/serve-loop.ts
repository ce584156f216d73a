// The loop a queue worker runs. Requests arrive as CQEs; the worker thread is
// the ring's only submitter (SINGLE_ISSUER) and ublk delivers requests as
// deferred task work that only runs inside a GETEVENTS io_uring_enter
// (DEFER_TASKRUN), so the loop is built around one enter per turn:
//
// - while no target promise is pending, nothing in JavaScript can produce work,
//   so the thread blocks inside io_uring_enter(min_complete=1), like kublk does:
//   submit and wait in one syscall, no event-loop round trip;
// - while promises are pending, the thread returns to the event loop and waits
//   for either a settled promise or the ring's eventfd (signalled when task work
//   is queued), then enters without blocking to run that task work.
//
// A worker blocked in io_uring_enter cannot be interrupted from JavaScript, so
// the loop keeps a READ armed on a "quit" eventfd: the main thread writes to it
// to end a worker whose queue the kernel will not abort (e.g. a device that
// never started). Closing the ring afterwards cancels whatever is still armed.
import type { CqeHandler, Ring } from '../uring/ring.js';
import { prepRead, setUserData } from '../uring/prep.js';
import type { RingWakeup } from '../uring/wakeup.js';
import { ErrnoError, native } from '../native.js';
import { EAGAIN, EBUSY, EINTR } from '../sys.js';
import { KIND_QUIT, udKind, userDataLo } from './user-data.js';

export interface LoopClient {
  /** False once every tag has been aborted and nothing is in flight. */
  readonly active: boolean;
  readonly dispatcher: { asyncInFlight: number; onAsyncSettled: () => void };
  readonly onCqe: CqeHandler;
  /** Turns completions gathered during reaping into SQEs (batch COMMITs). */
  flush(): void;
}

export class QuitReader {
  fired = false;
  private readonly buf = native.alloc(8); // the kernel writes here until the READ completes

  constructor(ring: Ring, fd: number) {
    const s = ring.getSqe();
    prepRead(ring, s, fd, native.addressOf(this.buf), 8, 0);
    setUserData(ring, s, userDataLo(KIND_QUIT, 0, 0), 0);
  }
}

function entered(res: number): void {
  // EINTR: a signal for the process landed on this thread; EAGAIN/EBUSY: the
  // kernel is short of resources or the CQ is full — reaping makes room.
  if (res < 0 && res !== -EINTR && res !== -EAGAIN && res !== -EBUSY) throw new ErrnoError(res, 'io_uring_enter');
}

export async function serveLoop(ring: Ring, wakeup: RingWakeup, client: LoopClient, quit: QuitReader): Promise<void> {
  const onCqe: CqeHandler = (lo, hi, res, flags) => {
    if (udKind(lo) === KIND_QUIT) quit.fired = true;
    else client.onCqe(lo, hi, res, flags);
  };
  let wake: (() => void) | null = null;
  const onWake = (): void => {
    const w = wake;
    wake = null;
    if (w) w();
  };
  const waitWake = (resolve: () => void): void => {
    wake = resolve;
  };
  wakeup.onReadable(onWake);
  client.dispatcher.onAsyncSettled = onWake;

  while (client.active && !quit.fired) {
    client.flush();
    if (client.dispatcher.asyncInFlight === 0) {
      entered(ring.submitAndWait(1));
    } else {
      entered(ring.submit());
      if (ring.cqReady() === 0) {
        wakeup.start();
        await new Promise<void>(waitWake);
        wakeup.stop();
        entered(ring.submit()); // runs the deferred task work that woke us
      }
    }
    ring.reap(onCqe);
  }
}
