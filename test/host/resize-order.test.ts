// UblkDevice.resize() without a ublk driver: the kernel's side (UPDATE_SIZE)
// is played by a stand-in control device, the target is the real memory target.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import memory from '../../src/targets/memory.js';
import { UblkDevice } from '../../src/ublk/control/device.js';

const MiB = 1 << 20;

/** A device of `size` bytes on the memory target, whose UPDATE_SIZE is `updateSize`. */
async function device(size: number, updateSize: (id: number, sectors: number) => Promise<void>) {
  const setup = await memory.setup({ size }, { metadataSize: 0 } as Parameters<typeof memory.setup>[1]);
  const { fd } = setup.shared as { fd: number };
  const dev = Object.create(UblkDevice.prototype) as UblkDevice;
  Object.assign(dev, {
    ctrl: { updateSize }, info: { dev_id: 7 }, size, setup, mode: { logicalBlockSize: 512 }, resizeWaitMs: 30_000,
  });
  return { dev, fd, setup };
}

test('resize: a shrink the kernel refuses loses no data (the target shrinks only once the kernel has)', async () => {
  const { dev, fd, setup } = await device(2 * MiB, async () => { throw new Error('UPDATE_SIZE failed with -95'); });
  try {
    // Acknowledged data in the second MiB.
    fs.writeSync(fd, Buffer.alloc(4096, 0xab), 0, 4096, MiB + 8192);
    await assert.rejects(dev.resize(MiB), /UPDATE_SIZE/);
    assert.equal(dev.size, 2 * MiB, 'the device keeps its size');
    assert.equal(fs.fstatSync(fd).size, 2 * MiB, 'so does the memfd');
    const back = Buffer.alloc(4096);
    assert.equal(fs.readSync(fd, back, 0, 4096, MiB + 8192), 4096);
    assert.ok(back.every((b) => b === 0xab), 'the data past the size asked for is still there');
  } finally {
    await setup.cleanup?.();
  }
});

test('resize: while the kernel still announces the larger size, the target serves all of it (shrink: kernel first; grow: target first)', async () => {
  let fd = -1;
  const seen: string[] = [];
  const { dev, fd: f, setup } = await device(2 * MiB, async (_id, sectors) => {
    // What the target can serve when the kernel's size changes: at least the larger of the two.
    seen.push(`kernel ${sectors * 512}, target ${fs.fstatSync(fd).size}`);
  });
  fd = f;
  try {
    await dev.resize(MiB);
    await dev.resize(3 * MiB);
    assert.deepEqual(seen, [`kernel ${MiB}, target ${2 * MiB}`, `kernel ${3 * MiB}, target ${3 * MiB}`]);
    assert.equal(fs.fstatSync(fd).size, 3 * MiB);
  } finally {
    await setup.cleanup?.();
  }
});

test('resize: two resizes at once end with the kernel and the target agreeing on the size', async () => {
  let kernel = 2 * MiB, calls = 0;
  const { dev, fd, setup } = await device(2 * MiB, async (_id, sectors) => {
    // The first UPDATE_SIZE completes last (control commands complete in any order).
    await sleep(++calls === 1 ? 50 : 5);
    kernel = sectors * 512;
  });
  try {
    await Promise.all([dev.resize(4 * MiB), dev.resize(MiB)]);
    assert.equal(kernel, fs.fstatSync(fd).size, `kernel ${kernel}, target ${fs.fstatSync(fd).size}`);
    assert.equal(dev.size, kernel);
  } finally {
    await setup.cleanup?.();
  }
});

test('resize: a target resize that never returns holds a later resize for resizeWaitMs, then that one fails unstarted', { timeout: 10_000 }, async () => {
  const sizes: number[] = [];
  const { dev, fd, setup } = await device(2 * MiB, async (_id, sectors) => { sizes.push(sectors * 512); });
  dev.resizeWaitMs = 200;
  const targetResize = setup.resize!.bind(setup);
  let release!: () => void;
  const stuck = new Promise<void>((r) => { release = r; });
  let calls = 0;
  // The target's first resize (a grow) does not return until released.
  setup.resize = async (size: number) => {
    if (++calls === 1) await stuck;
    return targetResize(size);
  };
  try {
    const first = dev.resize(3 * MiB);
    await assert.rejects(dev.resize(4 * MiB), /an earlier resize of \/dev\/ublkb7 has not ended within 0.2 s/);
    await assert.rejects(dev.resize(MiB), /has not ended/, 'a later one waits for the stuck one too');
    assert.deepEqual(sizes, [], 'no UPDATE_SIZE went out meanwhile');
    assert.equal(calls, 1, 'nor did the target resize again');
    release();
    await first;
    await dev.resize(MiB);
    assert.deepEqual(sizes, [3 * MiB, MiB]);
    assert.equal(fs.fstatSync(fd).size, MiB);
  } finally {
    release();
    await setup.cleanup?.();
  }
});
