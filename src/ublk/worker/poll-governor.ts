// When a serving thread should spin before sleeping: the default polling
// policy (`--poll-us` unset).
//
// Spinning after a request saves the next request the wake-up of a sleeping
// thread, which is where JavaScript trails C most at low queue depth (QD 1:
// 1.7-2.1x the IOPS in the VM with a 1 ms window). But it only pays while a
// CPU is free to spin on: where the submitter (fio, a file system) needs the
// CPU the spinning thread holds, requests arrive later, and polling lowers
// throughput (a 2-vCPU VM on a slower host measured QD 1 at 0.19x the kernel
// loop driver with polling, 0.24x without). Whether a CPU is free cannot be
// read off anything cheaply, and wake-up costs differ from machine to
// machine; so the governor measures the one thing that matters, requests
// served per second, under both policies, and keeps the better:
//
// - time is cut into epochs of at least EPOCH_MS and EPOCH_MIN_REQUESTS
//   (this thread's);
// - the rate is the whole device's (all its serving threads' requests, from
//   the shared counters): where several threads spin on too few CPUs (two
//   queues, two fio jobs, two vCPUs), each one's spinning raised its own rate
//   while lowering the others' (0.87-0.93x the IOPS of not polling when each
//   thread judged by its own rate, 0.94x by the device's: the trials' cost);
// - the policy in force (the incumbent; sleeping at first) runs for a few
//   epochs, then one trial epoch runs the other one, then one more epoch the
//   incumbent again;
// - spinning wins only if its trial (or its two epochs around a sleeping
//   trial) served GAIN times the requests per second of sleeping: a tie
//   goes to sleeping, which costs no CPU;
// - a trial that does not change the policy doubles the epochs until the
//   next (up to MAX_TRIAL_GAP), so that checking costs at most one epoch in
//   MAX_TRIAL_GAP + 2 once the load is steady;
// - a pause in requests longer than IDLE_MS ends the epoch without a
//   verdict (the rate of a load that stopped says nothing of the policy);
//   one longer than NEW_LOAD_MS also makes the next trial come soon (after
//   FIRST_TRIAL_EPOCHS): the next load may be another one.
//
// How often the kernel preempted the thread in spinning epochs (involuntary
// context switches) is counted for `ublk-ts stats`, not used: judging by it
// (an epoch preempted once per ms or more lost) kept two threads on two
// busy vCPUs from spinning much, but did not bring their IOPS back to those
// of not polling (0.89x at QD 1), and it cut the gain of one thread spinning
// with a CPU to spare (1.5x instead of 1.8x), since the submitter woken on the
// spinning thread's CPU preempts it too.
//
// An idle device never spins: a spin starts only after a turn that served
// requests and ends after the window. The window itself follows how long
// spins wait for the next request: SPIN_FACTOR times its running average,
// between MIN_WINDOW_USEC and MAX_WINDOW_USEC, so that a spin that would end
// in a sleep anyway stops early.

import { native } from '../../native.js';

/**
 * Times in ms (CLOCK_MONOTONIC, native.clockMs) that the serving loop and its
 * policy share: kept in a Float64Array, since a double passed between
 * functions or returned by performance.now() is a heap allocation, and this
 * runs for every request.
 */
export const T_NOW = 0, T_SPIN_START = 1, T_TURN = 2, T_LAST_REQUEST = 3, T_EPOCH = 4;

/** The serving loop's view: the window to spin for now, and what it saw. */
export interface PollPolicy {
  /** µs to spin after serving requests before sleeping; 0: sleep at once. */
  readonly window: number;
  /** The request count turn() saw last: the loop calls turn() only when it moved. */
  readonly dispatched: number;
  /** Shared times (T_*): the loop writes T_NOW, T_SPIN_START (the last request served) and T_TURN. */
  readonly times: Float64Array;
  /** After a turn that dispatched requests: how many so far (a running count). */
  turn(dispatched: number): void;
  /** A spin that ended with a request (hit) at times[T_NOW]. */
  spun(hit: boolean): void;
  /** Involuntary context switches the thread took while its policy was to spin (adaptive only; else 0). */
  readonly spinPreemptions: number;
}

/** --poll-us N: always the same window (0: never spin). */
export class FixedPoll implements PollPolicy {
  dispatched = 0;
  readonly spinPreemptions = 0;
  readonly times = new Float64Array(5);
  constructor(readonly window: number) {}
  turn(dispatched: number): void {
    this.dispatched = dispatched;
  }
  spun(): void {}
}

const CLOCK_TURNS = 8;
/**
 * Epochs of a new load (the first, or one after a pause of NEW_LOAD_MS)
 * before its first trial: time for the load to settle.
 */
const FIRST_TRIAL_EPOCHS = 4;
export const EPOCH_MS = 50;
export const EPOCH_MIN_REQUESTS = 32;
export const IDLE_MS = 20;
export const NEW_LOAD_MS = 1000;
export const GAIN = 1.05;
export const MAX_TRIAL_GAP = 32;
export const MIN_WINDOW_USEC = 50;
export const MAX_WINDOW_USEC = 1000;
const SPIN_FACTOR = 4;

const SLEEP = 0, SPIN = 1;
/** Where an epoch stands in the incumbent/trial/incumbent sequence. */
const STEADY = 0, TRIAL = 1, AFTER = 2;

export class PollGovernor implements PollPolicy {
  window = 0;
  /** The policy in force between trials (SLEEP, SPIN). */
  private incumbent = SLEEP;
  private phase = STEADY;
  /** Steady epochs left before the next trial, and the gap that counts down from. */
  private untilTrial = FIRST_TRIAL_EPOCHS;
  private trialGap = 1;
  /** Requests per ms of the last steady epoch, and of the trial. */
  private rateBefore = 0;
  private rateTrial = 0;

  /** T_* times; T_LAST_REQUEST and T_EPOCH start far in the past, so the first request starts an epoch. */
  readonly times = new Float64Array(5).fill(-1e9);
  /** The request count at the epoch's start. */
  private epochFirst = 0;
  dispatched = 0;
  /** Reads the clock into times[T_NOW] (tests give their own). */
  private readonly readClock: (times: Float64Array) => void;
  /** Average ms a spin waited for its request (hits only). */
  private hitWait = MAX_WINDOW_USEC / SPIN_FACTOR / 1000;
  /** Reads this thread's involuntary context switches (tests give their own). */
  private readonly readPreemptions: () => number;
  /** That count when the epoch started. */
  private epochPreemptions = 0;
  /** Involuntary context switches in spinning epochs so far (for stats). */
  spinPreemptions = 0;
  /** Requests the whole device has dispatched so far (every serving thread's; tests give their own). */
  private readonly readDeviceRequests: () => number;
  /** That count when the epoch started. */
  private epochDeviceRequests = 0;
  /** Turns since the clock was last read (see turn()). */
  private unclocked = 0;
  /** Trials run so far, and how many changed the policy (for tests). */
  trials = 0;
  switches = 0;

  /** The policy in force between trials. */
  get policy(): 'sleep' | 'spin' {
    return this.incumbent === SPIN ? 'spin' : 'sleep';
  }

  constructor(readDeviceRequests: () => number, readClock = (times: Float64Array): void => native.clockMs(times, T_NOW),
    readPreemptions = native.threadPreemptions) {
    this.readDeviceRequests = readDeviceRequests;
    this.readClock = readClock;
    this.readPreemptions = readPreemptions;
  }

  turn(dispatched: number): void {
    if (dispatched === this.dispatched) return;
    this.dispatched = dispatched;
    // Sleeping between trials, the clock is read every CLOCK_TURNS turns
    // only: a clock read is a native call, and a cost per request. The epoch
    // before a trial is measured turn by turn.
    if (this.window === 0 && this.phase === STEADY && this.untilTrial > 1 && ++this.unclocked < CLOCK_TURNS) return;
    this.unclocked = 0;
    const t = this.times;
    this.readClock(t);
    const pause = t[T_NOW]! - t[T_LAST_REQUEST]!;
    t[T_LAST_REQUEST] = t[T_NOW]!;
    if (pause > IDLE_MS) {
      this.phase = STEADY;
      if (pause > NEW_LOAD_MS) {
        this.untilTrial = FIRST_TRIAL_EPOCHS;
        this.trialGap = 1;
      }
      this.use(this.incumbent);
      this.restartEpoch(dispatched);
      return;
    }
    const ms = t[T_NOW]! - t[T_EPOCH]!;
    if (ms < EPOCH_MS || dispatched - this.epochFirst < EPOCH_MIN_REQUESTS) return;
    if (this.window > 0) this.spinPreemptions += this.readPreemptions() - this.epochPreemptions;
    this.endEpoch((this.readDeviceRequests() - this.epochDeviceRequests) / ms);
    this.restartEpoch(dispatched);
  }

  spun(hit: boolean): void {
    if (!hit) return;
    const t = this.times;
    this.hitWait += (t[T_NOW]! - t[T_SPIN_START]! - this.hitWait) / 8;
    if (this.window > 0) this.window = this.spinWindow();
  }

  private spinWindow(): number {
    return Math.min(MAX_WINDOW_USEC, Math.max(MIN_WINDOW_USEC, Math.round(SPIN_FACTOR * this.hitWait * 1000)));
  }

  private restartEpoch(dispatched: number): void {
    this.times[T_EPOCH] = this.times[T_NOW]!;
    this.epochFirst = dispatched;
    this.epochDeviceRequests = this.readDeviceRequests();
    if (this.window > 0) this.epochPreemptions = this.readPreemptions();
  }

  /** An epoch ended with the device serving `rate` requests per ms. */
  private endEpoch(rate: number): void {
    switch (this.phase) {
      case STEADY:
        this.rateBefore = rate;
        if (--this.untilTrial <= 0) {
          this.phase = TRIAL;
          this.use(1 - this.incumbent);
        }
        break;
      case TRIAL:
        this.rateTrial = rate;
        this.phase = AFTER;
        this.use(this.incumbent);
        break;
      case AFTER: {
        const incumbentRate = (this.rateBefore + rate) / 2;
        const spinRate = this.incumbent === SPIN ? incumbentRate : this.rateTrial;
        const sleepRate = this.incumbent === SPIN ? this.rateTrial : incumbentRate;
        this.rateBefore = rate;
        this.endTrial(spinRate > GAIN * sleepRate ? SPIN !== this.incumbent : SLEEP !== this.incumbent);
        break;
      }
    }
  }

  /** Back to steady epochs; `switchPolicy`: the trial's policy won. */
  private endTrial(switchPolicy: boolean): void {
    this.trials++;
    this.phase = STEADY;
    if (switchPolicy) {
      this.switches++;
      this.incumbent = 1 - this.incumbent;
      this.trialGap = 1;
    } else {
      this.trialGap = Math.min(MAX_TRIAL_GAP, this.trialGap * 2);
    }
    this.untilTrial = this.trialGap;
    this.use(this.incumbent);
  }

  private use(policy: number): void {
    this.window = policy === SPIN ? this.spinWindow() : 0;
  }
}
