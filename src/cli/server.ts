// The server side of `ublk-ts add` and `ublk-ts recover`: creates the device
// (or attaches to it), serves it until SIGINT/SIGTERM or until it is stopped
// from outside, then removes it. A device with recovery whose serving thread
// failed is let go of instead, its state kept for `recover`.
import { UblkDevice, type DeviceOptions } from '../ublk/control/device.js';
import { removeState, writeState } from './state.js';

export interface ServeConfig extends DeviceOptions {
  target: string;
  /** Attach to this existing device (`recover`) instead of creating one. */
  recoverId?: number;
}

/**
 * Runs a device to the end. `onLive` is told the device once it serves IO.
 * Returns when the device is gone.
 */
export async function serve(cfg: ServeConfig, onLive: (dev: UblkDevice) => void): Promise<void> {
  // A signal during creation must not kill us half-way (that would leave a
  // device without a server): remember it and stop once creation is over.
  let stopRequested = false;
  let dev: UblkDevice | null = null;
  const onSignal = (): void => {
    stopRequested = true;
    void dev?.stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', () => {}); // outlive the terminal that started us
  try {
    const { recoverId, ...config } = cfg;
    dev = await (recoverId === undefined ? UblkDevice.create(config) : UblkDevice.recover(recoverId, config));
    const supervisor = Number(process.env.UBLK_TS_SUPERVISOR) || undefined;
    writeState({ id: dev.id, pid: process.pid, supervisor, target: cfg.target, options: cfg.options ?? {}, statsFd: dev.statsFd, config });
    // Stopped from outside (STOP_DEV by another process): clean up just the same.
    void dev.stopped.then(() => dev!.stop());
    if (stopRequested) void dev.stop();
    else onLive(dev);
    await dev.stopped;
    await dev.stop();
    const st = dev.batchStats;
    if (st.fetchCqes) {
      console.error(`ublk-ts[${process.pid}]: ${dev.path} batch stats: ${st.fetchCqes} fetch completions, ${st.tags} tags ` +
        `(${(st.tags / Math.max(1, st.fetchCqes)).toFixed(2)} per completion), ${st.commits} commits`);
    }
    if (dev.released) {
      process.exitCode = 1; // the device waits for `ublk-ts recover`; its state stays
      dev = null;
    }
  } finally {
    if (dev) removeState(dev.id);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
