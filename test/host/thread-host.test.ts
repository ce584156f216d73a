// ThreadHost (src/ublk/worker/thread-host.ts) without a ublk driver: a
// device's place on the thread is played by a hand-made stand-in.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { native } from '../../src/native.js';
import { Ring } from '../../src/uring/ring.js';
import { Waker } from '../../src/ublk/worker/waker.js';
import { ThreadHost, type HostReport } from '../../src/ublk/worker/thread-host.js';

test('quitAll: a device whose target still has its own ring operations out leaves at once (after the loop nothing reaps their CQEs, so waiting for them is waiting for nothing)', async () => {
  const ring = Ring.create({ entries: 8 });
  try {
    const reports: HostReport[] = [];
    const host = new ThreadHost(ring, new Waker(), { files: 1, uds: 1, buffers: 0, bgids: 1 }, true, (m) => void reports.push(m));
    const keys = [1, 2];
    const devices = (host as unknown as { devices: Map<number, unknown> }).devices;
    for (const key of keys) {
      // A target with a standing operation (an nbd connection's recv): its CQE would only come through a reap.
      devices.set(key, {
        cfg: { key, devId: key, queues: [], depth: 1 }, target: null, served: [], shmem: null, stats: null,
        place: { charFixed: -1, bufBase: -1, bgidBase: -1 }, udBase: -1, leaving: false, broken: false, departing: null,
        engine: { active: false, error: null, dispatcher: { ownOps: 1, breakTarget() {}, forget() {} } },
      });
    }
    const t0 = Date.now();
    await host.quitAll();
    const ms = Date.now() - t0;
    assert.deepEqual(reports, keys.map((key) => ({ type: 'done', key })));
    assert.ok(ms < 1000, `quitAll took ${ms} ms for ${keys.length} devices: it waited for CQEs no one reaps`);
  } finally {
    ring.close();
  }
});

test('a device leaving after an error keeps tag buffers its queue\'s other threads share mapped (the kernel may still hand them a tag whose last address was ours); its own it frees, and shared ones too on a normal leave', async () => {
  const ring = Ring.create({ entries: 8 });
  try {
    const host = new ThreadHost(ring, new Waker(), { files: 1, uds: 1, buffers: 0, bgids: 1 }, true, () => {});
    const devices = (host as unknown as { devices: Map<number, unknown> }).devices;
    const seen: string[] = [];
    const device = (key: number, shared: boolean) => {
      const bufs = { shared, keep: () => void seen.push(`${key}: keep`), free: () => void seen.push(`${key}: free`) };
      const d = {
        cfg: { key, devId: key, queues: [0], depth: 1 }, target: null, shmem: null, stats: null,
        served: [{ desc: new Uint32Array(native.alloc(4096)), bufs }],
        place: { charFixed: -1, bufBase: -1, bgidBase: -1 }, udBase: -1, leaving: false, broken: false, departing: null,
        engine: { active: false, error: null, dispatcher: { ownOps: 0, breakTarget() {}, forget() {} } },
      };
      devices.set(key, d);
      return d;
    };
    const depart = (d: unknown, error?: string) => (host as unknown as { departOnce(d: unknown, e?: string): Promise<void> }).departOnce(d, error);
    await depart(device(1, true), 'fetch failed (errno 22)');
    await depart(device(2, false), 'fetch failed (errno 22)');
    await depart(device(3, true));
    assert.deepEqual(seen, ['1: keep', '2: free', '3: free']);
  } finally {
    ring.close();
  }
});
