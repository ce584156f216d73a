// The serving mode: what each choice of engine and copy mode implies, decided
// in one place, and the thread layouts it allows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  assignQueues, checkAssignment, checkKernelSupports, ModeError, type ModeChoice, RECOVERY_POLICIES, recoveryOf, servingMode, MAX_BUFFER_SLOTS,
} from '../../src/ublk/mode.js';
import {
  UBLK_BATCH_F_AUTO_BUF_REG_FALLBACK, UBLK_BATCH_F_HAS_BUF_ADDR, UBLK_F_AUTO_BUF_REG, UBLK_F_BATCH_IO, UBLK_F_SUPPORT_ZERO_COPY,
  UBLK_F_QUIESCE, UBLK_F_USER_COPY, UBLK_F_USER_RECOVERY, UBLK_F_USER_RECOVERY_FAIL_IO, UBLK_F_USER_RECOVERY_REISSUE,
  UBLK_F_NEED_GET_DATA, UBLK_F_NO_AUTO_PART_SCAN, UBLK_F_UNPRIVILEGED_DEV,
} from '../../src/ublk/abi/uapi.js';

const ring = { name: 'loop', data: 'ring' as const };

test('kernel copy: tag buffers whose addresses travel in the commands, 16-byte batch elements', () => {
  const m = servingMode({ batch: true, copy: 'kernel', autoBufReg: true }, ring);
  assert.equal(m.engine, 'batch');
  assert.equal(m.flags, UBLK_F_BATCH_IO);
  assert.ok(m.tagBuffers && m.bufferAddressInCommands);
  assert.ok(!m.autoBufReg && !m.mayRegister && !m.registerAll);
  assert.equal(m.elemBytes, 16);
  assert.equal(m.batchFlags, UBLK_BATCH_F_HAS_BUF_ADDR);
});

test('user copy: tag buffers (the data is copied through them) for every kind of target, addresses not in the commands', () => {
  for (const target of [{ name: 'memory' }, ring]) {
    const m = servingMode({ batch: false, copy: 'user', autoBufReg: true }, target);
    assert.equal(m.flags, UBLK_F_USER_COPY);
    assert.ok(m.tagBuffers && !m.bufferAddressInCommands && !m.mayRegister);
    assert.equal(m.elemBytes, 8);
  }
});

test('zero copy: AUTO_BUF_REG or explicit registration, no tag buffers, refused for buffer targets', () => {
  const auto = servingMode({ batch: true, copy: 'zero', autoBufReg: true }, ring);
  assert.equal(auto.flags, UBLK_F_BATCH_IO | UBLK_F_SUPPORT_ZERO_COPY | UBLK_F_AUTO_BUF_REG);
  assert.ok(auto.autoBufReg && auto.mayRegister && !auto.registerAll && !auto.tagBuffers);
  assert.equal(auto.batchFlags, UBLK_BATCH_F_AUTO_BUF_REG_FALLBACK);
  const explicit = servingMode({ batch: false, copy: 'zero', autoBufReg: false }, ring);
  assert.equal(explicit.flags, UBLK_F_SUPPORT_ZERO_COPY);
  assert.ok(explicit.registerAll && !explicit.autoBufReg);
  assert.equal(servingMode({ batch: false, copy: 'zero', autoBufReg: true }, { name: 'null', data: 'none' }).mayRegister, false);
  assert.throws(() => servingMode({ batch: false, copy: 'zero', autoBufReg: true }, { name: 'memory', data: 'buffer' }),
    (e: Error) => e instanceof ModeError && /the memory target moves data in JavaScript/.test(e.message));
});

test('zero copy for a target that also puts bytes of its own into requests (nbd): UBLK_F_USER_COPY beside zero copy, else the driver refuses its pwrite (EACCES); no tag buffers; other modes unchanged', () => {
  const nbd = { name: 'nbd', data: 'ring-and-user-copy' as const };
  const zc = servingMode({ batch: false, copy: 'zero', autoBufReg: true }, nbd);
  assert.equal(zc.flags, UBLK_F_SUPPORT_ZERO_COPY | UBLK_F_AUTO_BUF_REG | UBLK_F_USER_COPY);
  assert.ok(zc.mayRegister && !zc.tagBuffers && zc.copy === 'zero');
  assert.equal(servingMode({ batch: false, copy: 'zero', autoBufReg: false }, nbd).flags, UBLK_F_SUPPORT_ZERO_COPY | UBLK_F_USER_COPY);
  assert.equal(servingMode({ batch: false, copy: 'kernel', autoBufReg: true }, nbd).flags, 0);
  assert.equal(servingMode({ batch: false, copy: 'user', autoBufReg: true }, nbd).flags, UBLK_F_USER_COPY);
});

test('copy mode by default: zero where the target moves data on the ring (or none) and the kernel has zero copy, else what was the default', () => {
  const zcKernel = UBLK_F_SUPPORT_ZERO_COPY | UBLK_F_AUTO_BUF_REG | UBLK_F_USER_COPY;
  const nbd = { name: 'nbd', data: 'ring-and-user-copy' as const };
  const chosen = (o: Partial<ModeChoice>, target: Parameters<typeof servingMode>[1] = ring, features = zcKernel): string =>
    servingMode({ batch: false, autoBufReg: true, ...o }, target, features).copy;
  assert.equal(chosen({}), 'zero');
  assert.equal(chosen({}, nbd), 'zero');
  assert.equal(chosen({}, { name: 'null', data: 'none' }), 'zero');
  assert.equal(servingMode({ batch: false, autoBufReg: true }, ring, zcKernel).flags, UBLK_F_SUPPORT_ZERO_COPY | UBLK_F_AUTO_BUF_REG);
  assert.equal(chosen({ batch: true }), 'zero');
  // what the kernel lacks
  assert.equal(chosen({}, ring, UBLK_F_SUPPORT_ZERO_COPY), 'kernel', 'no AUTO_BUF_REG (before Linux 6.16)');
  assert.equal(chosen({}, nbd, UBLK_F_SUPPORT_ZERO_COPY | UBLK_F_AUTO_BUF_REG), 'kernel', 'nbd also needs USER_COPY beside it');
  assert.equal(chosen({}, ring, 0), 'kernel');
  // targets that move data in JavaScript, and zoned ones
  assert.equal(chosen({}, { name: 'memory' }), 'kernel');
  assert.equal(chosen({}, { name: 'zoned', zoned: true }), 'user');
  // what else was asked for
  assert.equal(chosen({ unprivileged: true }), 'kernel', 'not root');
  assert.equal(chosen({ shmem: '/dev/shm/x' }), 'kernel');
  assert.equal(chosen({ needGetData: true }), 'kernel');
  assert.throws(() => chosen({ metadataSize: 8 }, { ...ring, integrity: true }), /needs --copy user/, 'metadata: user copy, asked for as before');
  assert.equal(chosen({ noBufferRoom: true }), 'kernel', "a daemon's threads without room in their buffer tables");
  assert.equal(chosen({ batch: true, threads: 2, queues: 2 }), 'kernel', 'batch with --threads');
  assert.equal(chosen({ threads: 2, queues: 2 }), 'zero', 'classic with --threads');
  assert.equal(chosen({ queues: 8, threads: 1, depth: 4096 }), 'kernel', 'more tags per thread than a buffer table holds');
  assert.equal(chosen({ queues: 4, threads: 1, depth: 4096 }), 'zero');
  // per-IO daemons: each of the 2 threads serves tags of all 8 queues (8 x 4096 slots), as checkAssignment counts them
  assert.equal(chosen({ queues: 8, threads: 2, depth: 4096 }), 'kernel', 'as many tags per thread as checkAssignment would refuse');
  // a device being recovered: what it was created with, whatever the kernel offers
  assert.equal(chosen({ deviceFlags: UBLK_F_USER_RECOVERY }), 'kernel', 'created before zero copy was the default');
  assert.equal(chosen({ deviceFlags: UBLK_F_USER_RECOVERY | UBLK_F_SUPPORT_ZERO_COPY | UBLK_F_USER_COPY }, nbd), 'zero');
  assert.equal(chosen({ deviceFlags: UBLK_F_USER_COPY }, ring, 0), 'user');
  // an explicit choice stands
  assert.equal(chosen({ copy: 'kernel' }), 'kernel');
  assert.equal(chosen({ copy: 'user' }), 'user');
});

test('recovery: its flags, QUIESCE where the kernel has it, and only for targets whose data outlives the server', () => {
  const loop = { ...ring, recoverable: true };
  assert.equal(servingMode({ batch: false, copy: 'kernel', autoBufReg: true, recovery: 'requeue' }, loop).flags, UBLK_F_USER_RECOVERY);
  assert.equal(servingMode({ batch: false, copy: 'kernel', autoBufReg: true, recovery: 'reissue' }, loop, UBLK_F_QUIESCE).flags,
    UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE | UBLK_F_QUIESCE);
  const failIo = servingMode({ batch: true, copy: 'kernel', autoBufReg: true, recovery: 'fail-io' }, loop);
  assert.equal(failIo.flags, UBLK_F_BATCH_IO | UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_FAIL_IO);
  for (const p of RECOVERY_POLICIES) {
    assert.equal(recoveryOf(servingMode({ batch: false, copy: 'kernel', autoBufReg: true, recovery: p }, loop).flags), p);
  }
  assert.equal(servingMode({ batch: false, copy: 'kernel', autoBufReg: true }, loop, UBLK_F_QUIESCE).flags, 0, 'no QUIESCE without recovery');
  assert.throws(() => servingMode({ batch: false, copy: 'kernel', autoBufReg: true, recovery: 'requeue' }, { name: 'memory' }),
    /the memory target keeps its data in the server.*cannot use --recovery/);
  assert.throws(() => checkKernelSupports(failIo, UBLK_F_BATCH_IO | UBLK_F_USER_RECOVERY),
    /lacks USER_RECOVERY_FAIL_IO \(needed for --recovery fail-io\)/);
});

test('a kernel without a mode: named, with the way out', () => {
  const zero = servingMode({ batch: false, copy: 'zero', autoBufReg: true }, ring);
  assert.throws(() => checkKernelSupports(zero, UBLK_F_SUPPORT_ZERO_COPY), /lacks AUTO_BUF_REG \(needed for --copy zero\); --no-auto-buf-reg/);
  assert.doesNotThrow(() => checkKernelSupports(zero, UBLK_F_SUPPORT_ZERO_COPY | UBLK_F_AUTO_BUF_REG));
  const batch = servingMode({ batch: true, copy: 'kernel', autoBufReg: true }, ring);
  assert.throws(() => checkKernelSupports(batch, 0), /does not support UBLK_F_BATCH_IO \(batch mode needs Linux 7.0/);
});

test('thread layouts: one thread per queue (classic); batch deals queues round-robin or shares them', () => {
  const classic = servingMode({ batch: false, copy: 'kernel', autoBufReg: true }, ring);
  assert.deepEqual(assignQueues(classic, 2), [[{ q: 0, prep: true, fetchBuffers: 0, slot: 0 }], [{ q: 1, prep: true, fetchBuffers: 0, slot: 1 }]]);
  const batch = servingMode({ batch: true, copy: 'kernel', autoBufReg: true }, ring);
  assert.deepEqual(assignQueues(batch, 4, 2).map((t) => t.map((a) => a.q)), [[0, 2], [1, 3]]);
  assert.ok(assignQueues(batch, 4, 2).flat().every((a) => a.prep && a.fetchBuffers === 4));
  // More threads than queues: each queue PREPed by its first thread, one fetch buffer each so the active fetch moves on.
  assert.deepEqual(assignQueues(batch, 1, 4).flat(), [
    { q: 0, prep: true, fetchBuffers: 1, slot: 0 }, { q: 0, prep: false, fetchBuffers: 1, slot: 1 },
    { q: 0, prep: false, fetchBuffers: 1, slot: 2 }, { q: 0, prep: false, fetchBuffers: 1, slot: 3 },
  ]);
  // Every (thread, queue) pair has a counter slot of its own: no two writers share one.
  assert.deepEqual(assignQueues(batch, 4, 2).flat().map((a) => a.slot).sort(), [0, 1, 2, 3]);
  const auto = servingMode({ batch: true, copy: 'zero', autoBufReg: true }, ring);
  assert.throws(() => checkAssignment(auto, assignQueues(auto, 1, 2), 1, 128), /at most one thread per queue \(2 threads for 1 queue/);
  assert.throws(() => checkAssignment(auto, assignQueues(auto, 8, 1), 8, 4096), new RegExp(`at most ${MAX_BUFFER_SLOTS} tags`));
  assert.doesNotThrow(() => checkAssignment(auto, assignQueues(auto, 2, 2), 2, 128));
});

test('NEED_GET_DATA (classic, kernel copy only) and NO_AUTO_PART_SCAN: their flags, refusals and messages', () => {
  const get = servingMode({ batch: false, copy: 'kernel', autoBufReg: true, needGetData: true }, ring);
  assert.equal(get.flags, UBLK_F_NEED_GET_DATA);
  assert.ok(get.needGetData && get.bufferAddressInCommands);
  for (const o of [{ batch: true, copy: 'kernel' }, { batch: false, copy: 'user' }, { batch: false, copy: 'zero' }] as const) {
    assert.throws(() => servingMode({ ...o, autoBufReg: true, needGetData: true }, ring), /--need-get-data works in classic mode with kernel copy only/);
  }
  assert.throws(() => checkKernelSupports(get, 0), /lacks NEED_GET_DATA \(needed for --need-get-data\)/);
  const noScan = servingMode({ batch: false, copy: 'kernel', autoBufReg: true, partScan: false }, ring);
  assert.equal(noScan.flags, UBLK_F_NO_AUTO_PART_SCAN);
  assert.equal(servingMode({ batch: false, copy: 'kernel', autoBufReg: true, partScan: true }, ring).flags, 0);
  assert.throws(() => checkKernelSupports(noScan, 0), /lacks NO_AUTO_PART_SCAN \(needed for --no-part-scan\)/);
});

test('classic with --threads other than --queues: the (queue, tag) pairs dealt round-robin (per-IO daemons)', () => {
  const classic = servingMode({ batch: false, copy: 'kernel', autoBufReg: true }, ring);
  const plan = assignQueues(classic, 2, 3, 4);
  assert.deepEqual(plan.map((t) => t.map((a) => [a.q, a.tags])), [
    [[0, [0, 3]], [1, [2]]],
    [[0, [1]], [1, [0, 3]]],
    [[0, [2]], [1, [1]]],
  ]);
  assert.deepEqual(plan.flat().map((a) => a.slot), [0, 1, 2, 3, 4, 5]);
  // Every tag of every queue exactly once.
  const all = plan.flat().flatMap((a) => a.tags!.map((t) => `${a.q}:${t}`)).sort();
  assert.deepEqual(all, ['0:0', '0:1', '0:2', '0:3', '1:0', '1:1', '1:2', '1:3']);
  // Fewer threads than queues: one thread serves whole queues.
  assert.deepEqual(assignQueues(classic, 2, 1, 2).map((t) => t.map((a) => [a.q, a.tags])), [[[0, [0, 1]], [1, [0, 1]]]]);
  // Auto zero copy is fine: each tag still has one ring.
  const auto = servingMode({ batch: false, copy: 'zero', autoBufReg: true }, ring);
  assert.doesNotThrow(() => checkAssignment(auto, assignQueues(auto, 1, 4, 128), 1, 128));
});

test('unprivileged devices (a user who is not root): the flag, and what the kernel refuses them refused first, with the reason', () => {
  const m = servingMode({ batch: false, copy: 'kernel', autoBufReg: true, unprivileged: true }, ring);
  assert.equal(m.flags, UBLK_F_UNPRIVILEGED_DEV);
  assert.equal(servingMode({ batch: true, copy: 'kernel', autoBufReg: true, unprivileged: true }, ring).flags, UBLK_F_BATCH_IO | UBLK_F_UNPRIVILEGED_DEV);
  const refused: Array<[Parameters<typeof servingMode>[0], object, RegExp]> = [
    [{ batch: false, copy: 'user', autoBufReg: true, unprivileged: true }, ring, /^--copy user needs root: the kernel serves the devices of other users/],
    [{ batch: false, copy: 'zero', autoBufReg: true, unprivileged: true }, ring, /^--copy zero needs root/],
    [{ batch: false, copy: 'kernel', autoBufReg: true, recovery: 'reissue', unprivileged: true }, { ...ring, recoverable: true }, /^--recovery needs root/],
    [{ batch: false, copy: 'kernel', autoBufReg: true, shmem: '/dev/shm/x', unprivileged: true }, ring, /^--shmem needs root/],
    [{ batch: false, autoBufReg: true, unprivileged: true }, { name: 'zoned', data: 'buffer', zoned: true }, /^--copy user \(a zoned device\) needs root/],
  ];
  for (const [choice, target, msg] of refused) {
    assert.throws(() => servingMode(choice, target as Parameters<typeof servingMode>[1]), (e: Error) => e instanceof ModeError && msg.test(e.message),
      JSON.stringify(choice));
  }
});
