// The default polling policy, driven by a simulated load whose request rate
// depends on whether the serving thread spins: the governor must end up
// spinning where that serves more requests, sleeping where it does not (or
// where it lowers the rate, as when the spinning thread takes the CPU the
// submitter needs), keep checking at a bounded cost, and never spin for an
// idle device.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  EPOCH_MS, FixedPoll, GAIN, MAX_TRIAL_GAP, MAX_WINDOW_USEC, MIN_WINDOW_USEC, PollGovernor as RealGovernor, T_NOW, T_SPIN_START,
} from '../../src/ublk/worker/poll-governor.js';

/**
 * A governor on a simulated clock: `turn(n, t)` at ms t, `spun(hit, ms)`
 * after waiting ms. The device's requests are this thread's, or those of
 * `device` where several threads serve it.
 */
class PollGovernor extends RealGovernor {
  private at = 0;
  private own = 0;
  /** Involuntary context switches the simulated thread has taken. */
  preempted = 0;
  constructor(device?: { n: number }) {
    super(() => device?.n ?? this.own, (times) => { times[T_NOW] = this.at; }, () => Math.floor(this.preempted));
  }
  override turn(dispatched: number, now = this.at): void {
    this.at = now;
    this.own = dispatched;
    super.turn(dispatched);
  }
  override spun(hit: boolean, waitedMs = 0): void {
    this.times[T_SPIN_START] = 0;
    this.times[T_NOW] = waitedMs;
    super.spun(hit);
  }
}

/** Requests per ms the simulated load reaches while the thread sleeps, and while it spins; preemptions per ms while spinning. */
interface Load {
  sleeping: number;
  spinning: number;
  preemptedPerMs?: number;
}

/**
 * Runs `ms` of the load in steps of 0.1 ms from `start`, turning the governor
 * at every step with a request; returns the time the thread spent under the
 * spinning policy (ms) and the time at the end.
 */
function run(g: PollGovernor, load: Load, start: number, ms: number, count = { n: 0 }): { spinMs: number; end: number } {
  let spinMs = 0, owed = 0;
  const step = 0.1;
  for (let t = start; t < start + ms; t += step) {
    const spinning = g.window > 0;
    if (spinning) {
      spinMs += step;
      g.preempted += (load.preemptedPerMs ?? 0) * step;
    }
    owed += (spinning ? load.spinning : load.sleeping) * step;
    if (owed >= 1) {
      count.n += Math.floor(owed);
      owed -= Math.floor(owed);
      g.turn(count.n, t);
    }
  }
  return { spinMs, end: start + ms };
}

test('poll governor: spins where spinning serves more requests per second, and keeps checking at a bounded cost', () => {
  const g = new PollGovernor();
  assert.equal(g.window, 0, 'sleeps until a trial shows spinning pays');
  const count = { n: 0 };
  const first = run(g, { sleeping: 5, spinning: 9 }, 0, 2000, count);
  assert.equal(g.policy, 'spin', 'spinning at 1.8x the rate wins');
  assert.ok(first.spinMs > 1500, `spent ${first.spinMs} of 2000 ms spinning`);
  // Steady: trials get rarer, and the incumbent keeps winning.
  const switches = g.switches;
  // Preempted now and then while spinning (the submitter woken on its CPU): counted for stats, not held against it.
  const steady = run(g, { sleeping: 5, spinning: 9, preemptedPerMs: 0.3 }, first.end, 10_000, count);
  assert.equal(g.switches, switches, 'no switch while the load stays the same');
  assert.ok(Math.abs(g.spinPreemptions - 0.3 * steady.spinMs) < 0.1 * 0.3 * steady.spinMs, `${g.spinPreemptions} preemptions`);
  assert.ok(steady.spinMs > 10_000 * (1 - 1.5 / (MAX_TRIAL_GAP + 2)), `sleeping trials took ${10_000 - steady.spinMs} of 10000 ms`);
});

test('poll governor: sleeps where spinning does not pay, or lowers the rate (the spinner takes the submitter\'s CPU)', () => {
  for (const load of [{ sleeping: 5, spinning: 5 }, { sleeping: 5, spinning: 5 * GAIN * 0.98 }, { sleeping: 5, spinning: 3 }]) {
    const g = new PollGovernor();
    const count = { n: 0 };
    const first = run(g, load, 0, 2000, count);
    assert.equal(g.policy, 'sleep', `load ${JSON.stringify(load)}`);
    assert.equal(g.switches, 0);
    const steady = run(g, load, first.end, 10_000, count);
    // Trials of spinning: one epoch in at most MAX_TRIAL_GAP + 2 once steady.
    assert.ok(steady.spinMs <= 10_000 / (MAX_TRIAL_GAP / 2) + 2 * EPOCH_MS, `spun ${steady.spinMs} of 10000 ms`);
    assert.ok(g.trials >= 4, `${g.trials} trials`);
  }
});

test('poll governor: judges by the whole device, where one thread\'s spinning slows the others (too few CPUs)', () => {
  // Two threads serve one device. Spinning raises a thread's own rate by 3
  // requests per ms and lowers the other's by 4: judged by its own rate each
  // would spin, and the device would serve fewer requests.
  const device = { n: 0 };
  const threads = [new PollGovernor(device), new PollGovernor(device)];
  const counts = [0, 0], owed = [0, 0];
  let spinMs = 0;
  const step = 0.1;
  for (let t = 0; t < 10_000; t += step) {
    const spinning = threads.map((g) => g.window > 0);
    threads.forEach((g, i) => {
      if (i === 1 && t < 1.5 * EPOCH_MS) return; // the second starts later: their trials do not coincide
      if (spinning[i]) spinMs += step;
      owed[i]! += Math.max(0, 5 + (spinning[i] ? 3 : 0) - (spinning[1 - i] ? 4 : 0)) * step;
      if (owed[i]! >= 1) {
        const k = Math.floor(owed[i]!);
        owed[i]! -= k;
        counts[i]! += k;
        device.n += k;
        g.turn(counts[i]!, t);
      }
    });
  }
  for (const g of threads) assert.equal(g.policy, 'sleep');
  assert.ok(spinMs < 2 * 10_000 * 0.1, `the threads spun ${spinMs} of 20000 thread-ms`);
});

test('poll governor: follows a load that changes, and a pause makes the next trial come soon', () => {
  const g = new PollGovernor();
  const count = { n: 0 };
  let t = run(g, { sleeping: 5, spinning: 9 }, 0, 3000, count).end;
  assert.equal(g.policy, 'spin');
  // The submitter now competes for the CPU: spinning costs it requests.
  t = run(g, { sleeping: 5, spinning: 3 }, t, 3000, count).end;
  assert.equal(g.policy, 'sleep', 'back to sleeping once spinning lowers the rate');
  // Idle for two seconds (no turn at all), then a load where spinning pays: found
  // within a few epochs, not after the long gap a steady load earned.
  t += 2000;
  const after = run(g, { sleeping: 5, spinning: 9 }, t, 10 * EPOCH_MS, count);
  assert.equal(g.policy, 'spin', 'spinning again within 10 epochs of the pause');
  assert.ok(after.spinMs > 0);
});

test('poll governor: a pause ends a trial without a verdict', () => {
  const g = new PollGovernor();
  const count = { n: 0 };
  // Epochs sleeping, then the spinning trial starts...
  let t = 0;
  while (g.window === 0) t = run(g, { sleeping: 5, spinning: 9 }, t, 1, count).end;
  assert.ok(t < 6 * EPOCH_MS, `the first trial spins at ${t} ms`);
  // ...and the load stops: its (zero) rate must not count against spinning.
  t += 500;
  count.n++;
  g.turn(count.n, t);
  assert.equal(g.window, 0, 'back to the incumbent');
  assert.equal(g.trials, 0, 'no verdict');
});

test('poll governor: the window follows how long spins wait, within its bounds', () => {
  const g = new PollGovernor();
  const count = { n: 0 };
  let t = run(g, { sleeping: 5, spinning: 9 }, 0, 2000, count).end;
  assert.equal(g.policy, 'spin');
  while (g.window === 0) t = run(g, { sleeping: 5, spinning: 9 }, t, 10, count).end; // out of a sleeping trial
  assert.equal(g.window, MAX_WINDOW_USEC, 'no spin seen yet: the widest window');
  for (let i = 0; i < 100; i++) g.spun(true, 0.030);
  assert.ok(Math.abs(g.window - 120) <= 2, `window ${g.window} µs for 30 µs waits`);
  for (let i = 0; i < 100; i++) g.spun(true, 0.001);
  assert.equal(g.window, MIN_WINDOW_USEC);
  for (let i = 0; i < 100; i++) g.spun(false, 5);
  assert.equal(g.window, MIN_WINDOW_USEC, 'misses do not move it');
  for (let i = 0; i < 100; i++) g.spun(true, 2);
  assert.equal(g.window, MAX_WINDOW_USEC);
});

test('poll governor: an idle device never gets a spin window; --poll-us N is fixed', () => {
  const g = new PollGovernor();
  for (let t = 0; t < 10_000; t += 100) g.turn(1 + t / 100, t); // a request every 100 ms: always idle in between
  assert.equal(g.window, 0);
  assert.equal(g.trials, 0);
  const f = new FixedPoll(300);
  f.turn(5);
  f.spun();
  assert.equal(f.window, 300);
  assert.equal(f.dispatched, 5);
});
