// The fault-inject target, as kublk's `fault_inject`: another target (null by
// default) with faults added in front of it, to test what sits above a block
// device, and ublk-ts itself, when storage misbehaves:
//
//   --delay-us N [--delay-random]  every request waits N µs (or 0..N) first;
//   --error-rate PCT [--errno E]   that share of requests fails with E (EIO);
//   --die-after N                  the server process dies (SIGKILL) when the
//                                  Nth request arrives, counted over all its
//                                  serving threads; with --recovery a new
//                                  server (the supervisor's, or `recover`)
//                                  takes over, and dies again N requests later;
//   --die-during-fetch             the server dies while its serving threads
//                                  start, before the device is live.
//
// The inner target is named by --inner (null, memory, loop or a module path)
// and takes its own options from the same command line.
import os from 'node:os';
import { loadTarget, resolveTarget } from '../ublk/target-loader.js';
import {
  PENDING, TargetOptionError, checkTargetOptions, defineTarget, sizeOption, targetOptionSpecs, type IoResult, type Target,
  type TargetIo, type TargetModule, type TargetOptions,
} from '../ublk/target.js';
import type { OptionSpec } from '../options/spec.js';
import type { UblkRequest } from '../ublk/worker/request.js';
import nullTarget from './null.js';
import loopTarget from './loop.js';

interface Options extends TargetOptions {
  inner: string;
  delayUs: number;
  delayRandom: boolean;
  errorRate: number;
  errno: string;
  dieAfter: number;
  dieDuringFetch: boolean;
}

interface Shared {
  innerUrl: string;
  innerOptions: TargetOptions;
  innerShared: unknown;
  /** Requests seen by all serving threads (Int32 [0]), for --die-after. */
  seen: SharedArrayBuffer;
  /** The errno as a positive number. */
  errnoValue: number;
}

const OWN_OPTIONS: readonly OptionSpec[] = [
  { key: 'inner', type: 'string', arg: 'TARGET', default: 'null', help: 'the target the faults are added to: null, memory, loop or a module path' },
  { key: 'delayUs', type: 'int', arg: 'N', min: 0, max: 60_000_000, default: 0, help: 'delay every request by N µs' },
  { key: 'delayRandom', type: 'bool', default: false, help: 'delay each request by a random 0..N µs instead' },
  { key: 'errorRate', type: 'int', arg: 'PCT', min: 0, max: 100, default: 0, help: 'fail this percentage of requests (at random)' },
  { key: 'errno', type: 'string', arg: 'E', default: 'EIO', help: 'the error of failed requests: a name (EIO, ENOSPC, ...) or a number' },
  { key: 'dieAfter', type: 'int', arg: 'N', min: 0, default: 0, help: 'kill the server (SIGKILL) at its Nth request (0: never)' },
  { key: 'dieDuringFetch', type: 'bool', default: false, help: 'kill the server while its serving threads start' },
];

// The built-in inner targets' own options, so that the command line takes
// them: checked (required ones, defaults) by the inner target itself.
const innerRows = (mods: ReadonlyArray<{ options?: readonly OptionSpec[] }>): OptionSpec[] => {
  const rows = new Map<string, OptionSpec>();
  for (const m of mods) {
    for (const { required: _r, default: _d, ...row } of targetOptionSpecs(m)) rows.set(row.key, { ...row, help: `${row.help} (inner target)` });
  }
  rows.set('size', sizeOption(false, 'device size (the inner target\'s: null and memory need one, loop has its file\'s)'));
  return [...rows.values()];
};

function errnoOf(text: string): number {
  const named = (os.constants.errno as Record<string, number>)[text.toUpperCase()];
  const n = /^\d+$/.test(text) ? Number(text) : named;
  if (n === undefined || n < 1 || n > 4095) {
    throw new TargetOptionError(`--errno ${text} is not an errno: give a name such as EIO or ENOSPC, or a number from 1 to 4095`);
  }
  return n;
}

const die = (): never => {
  process.kill(process.pid, 'SIGKILL');
  throw new Error('unreachable');
};

class FaultQueue implements Target {
  private readonly seen: Int32Array;
  flush?: Target['flush'];
  discard?: Target['discard'];
  writeZeroes?: Target['writeZeroes'];
  onCqe?: Target['onCqe'];
  onOwnCqe?: Target['onOwnCqe'];

  constructor(private readonly inner: Target, private readonly io: TargetIo, private readonly o: Options, shared: Shared) {
    this.seen = new Int32Array(shared.seen);
    this.errno = shared.errnoValue;
    // Only the methods the inner target has, so that the rest still complete with -EOPNOTSUPP.
    if (inner.flush) this.flush = (req) => this.serve(req, inner.flush!);
    if (inner.discard) this.discard = (req) => this.serve(req, inner.discard!);
    if (inner.writeZeroes) this.writeZeroes = (req) => this.serve(req, inner.writeZeroes!);
    if (inner.onCqe) this.onCqe = inner.onCqe.bind(inner);
    if (inner.onOwnCqe) this.onOwnCqe = inner.onOwnCqe.bind(inner);
  }

  private readonly errno: number;

  read(req: UblkRequest): IoResult { return this.serve(req, this.inner.read); }
  write(req: UblkRequest): IoResult { return this.serve(req, this.inner.write); }
  close(): void | Promise<void> { return this.inner.close?.(); }

  private serve(req: UblkRequest, method: (req: UblkRequest) => IoResult): IoResult {
    const o = this.o;
    if (o.dieAfter > 0 && Atomics.add(this.seen, 0, 1) + 1 >= o.dieAfter) die();
    if (o.errorRate > 0 && Math.random() * 100 < o.errorRate) return -this.errno;
    if (o.delayUs === 0) return method.call(this.inner, req);
    const us = o.delayRandom ? Math.random() * o.delayUs : o.delayUs;
    setTimeout(() => this.later(req, method), us / 1000);
    return PENDING;
  }

  /** The inner target's turn after the delay; its result completes the request we returned PENDING for. */
  private later(req: UblkRequest, method: (req: UblkRequest) => IoResult): void {
    let r: IoResult;
    try {
      r = method.call(this.inner, req);
    } catch (e) {
      r = Promise.reject(e);
    }
    if (r === PENDING) return; // the inner target completes it (ctx.io.complete)
    Promise.resolve(r).then(
      (v) => this.io.complete(req, v),
      (e: unknown) => {
        console.error(`ublk-ts: fault-inject: inner target failed: ${(e as Error)?.stack ?? e}`);
        this.io.complete(req, -os.constants.errno.EIO);
      },
    );
  }
}

export default defineTarget<Options, Shared>({
  name: 'fault-inject',
  options: [...OWN_OPTIONS, ...innerRows([nullTarget, loopTarget])],
  async setup(options, device) {
    const { inner, delayUs: _1, delayRandom: _2, errorRate: _3, errno, dieAfter: _4, dieDuringFetch: _5, ...rest } = options;
    const innerUrl = resolveTarget(inner);
    const mod: TargetModule = await loadTarget(innerUrl);
    if (mod.name === 'fault-inject') throw new TargetOptionError('--inner fault-inject: faults cannot be stacked; give one target with all of them');
    const errnoValue = errnoOf(errno);
    const known = new Set(targetOptionSpecs(mod).map((s) => s.key));
    const stray = Object.keys(rest).filter((k) => rest[k] !== undefined && !known.has(k));
    if (stray.length) throw new TargetOptionError(`--${stray[0]!.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} is not an option of the ${mod.name} target`);
    const innerOptions = checkTargetOptions(mod, rest, 'cli');
    const setup = await mod.setup(innerOptions, device);
    return {
      ...setup,
      // A new server serves the same data if the inner target's does.
      recoverable: setup.recoverable ?? mod.recoverable ?? false,
      shared: { innerUrl, innerOptions, innerShared: setup.shared, seen: new SharedArrayBuffer(4), errnoValue },
    };
  },
  async open(ctx) {
    if (ctx.options.dieDuringFetch) die();
    const { innerUrl, innerOptions, innerShared } = ctx.shared;
    const mod = await loadTarget(innerUrl);
    const inner = await mod.open({ ...ctx, options: innerOptions, shared: innerShared });
    return new FaultQueue(inner, ctx.io, ctx.options, ctx.shared);
  },
});
