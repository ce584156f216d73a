// The server side of `ublk-ts add` and `ublk-ts recover`: creates the device
// (or attaches to it), serves it until SIGINT/SIGTERM or until it is stopped
// from outside, then removes it. A device with recovery whose serving thread
// failed is let go of instead, its state kept for `recover`; so is one that
// `ublk-ts quiesce` asked (SIGUSR2) to hand over to a new server.
import { UblkDevice, type CreateHooks, type DeviceOptions } from '../ublk/control/device.js';
import { listenControl } from './control-socket.js';
import { readState, removeState, writeState, type DeviceState } from './state.js';
import { totalStats } from '../ublk/stats.js';

/** What `ublk-ts quiesce` sends a server (SIGUSR1 is Node's debugger). */
export const QUIESCE_SIGNAL = 'SIGUSR2';

export interface ServeConfig extends DeviceOptions {
  target: string;
  /** Attach to this existing device (`recover`) instead of creating one. */
  recoverId?: number;
  /** With recovery: false runs no supervisor (whoever started us restarts us, or `recover` by hand). Default true. */
  supervise?: boolean;
}

/**
 * Runs a device to the end. `onLive` is told the device once it serves IO.
 * Returns when the device is gone.
 */
export async function serve(cfg: ServeConfig, onLive: (dev: UblkDevice) => void, hooks: CreateHooks = {}): Promise<void> {
  // A signal during creation must not kill us half-way (that would leave a
  // device without a server): creation gives up (a target's open may never
  // settle), removes what it made, and we end.
  let stopRequested = false;
  let dev: UblkDevice | null = null;
  let control: { close(): void } | null = null;
  const creating = new AbortController();
  hooks.signal?.addEventListener('abort', () => creating.abort(hooks.signal!.reason), { once: true });
  const onSignal = (sig: string): void => {
    stopRequested = true;
    if (dev) void dev.stop();
    else creating.abort(new Error(`stopped by ${sig} before the device was live`));
  };
  let quiesced: Promise<void> | null = null;
  const onQuiesce = (): void => {
    if (!dev || stopRequested) return;
    console.error(`ublk-ts[${process.pid}]: ${dev.path}: quiescing for a new server`);
    quiesced ??= dev.quiesce().catch((e: unknown) => console.error(`ublk-ts[${process.pid}]: ${dev!.path}: quiesce: ${(e as Error).message}`));
  };
  let startingId: number | null = null;
  let found: DeviceState | null = null;
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on(QUIESCE_SIGNAL, onQuiesce);
  process.on('SIGHUP', () => {}); // outlive the terminal that started us
  try {
    const { recoverId, supervise, ...device } = cfg;
    const supervisor = Number(process.env.UBLK_TS_SUPERVISOR) || undefined;
    // Until it is live, `del` finds us in its state (the kernel names no
    // server before START_DEV, and a dead one while recovering); a failed
    // recovery puts back the state it found, whose configuration the next `recover` uses.
    const opened = (id: number): void => {
      startingId = id;
      if (recoverId !== undefined) found = readState(id);
      writeState({ id, pid: process.pid, supervisor, starting: true, target: cfg.target, options: device.options ?? {}, config: { ...device, supervise } });
    };
    dev = await (recoverId === undefined
      ? UblkDevice.create(device, { ...hooks, opened, signal: creating.signal })
      : UblkDevice.recover(recoverId, device, { opened, signal: creating.signal }));
    startingId = null;
    const config: ServeConfig = { ...device, supervise };
    const save = (): void => writeState({
      id: dev!.id, pid: process.pid, supervisor, target: cfg.target, options: config.options ?? {}, statsFd: dev!.statsFd, config,
    });
    save();
    control = listenControl(dev.id, async (req) => {
      if (req.op !== 'resize') throw new Error(`unknown request ${JSON.stringify(req.op)}`);
      await dev!.resize(req.size);
      // A new server (recover) must find the device's new size in its options.
      config.options = { ...config.options, size: req.size };
      save();
      console.error(`ublk-ts[${process.pid}]: ${dev!.path} resized to ${req.size} bytes`);
    });
    // Stopped from outside (STOP_DEV by another process): clean up just the same.
    void dev.stopped.then(() => dev!.stop());
    if (stopRequested) void dev.stop();
    else onLive(dev);
    await dev.stopped;
    await dev.stop();
    const served = totalStats(dev.stats());
    if (served.shmem) {
      console.error(`ublk-ts[${process.pid}]: ${dev.path}: ${served.shmem} of ${served.reads + served.writes} reads and writes ` +
        `served from shared memory (${cfg.shmem})`);
    }
    const st = dev.batchStats;
    if (st.fetchCqes) {
      console.error(`ublk-ts[${process.pid}]: ${dev.path} batch stats: ${st.fetchCqes} fetch completions, ${st.tags} tags ` +
        `(${(st.tags / Math.max(1, st.fetchCqes)).toFixed(2)} per completion), ${st.commits} commits`);
    }
    if (dev.released) {
      // The device waits for `ublk-ts recover`, and its state stays. A quiesce
      // was asked for: exit 0, so that a supervisor does not restart us.
      if (quiesced) await quiesced;
      else process.exitCode = 1;
      dev = null;
    }
  } finally {
    control?.close();
    if (dev) removeState(dev.id);
    if (startingId !== null) {
      if (found) writeState(found);
      else removeState(startingId);
    }
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off(QUIESCE_SIGNAL, onQuiesce);
  }
}
