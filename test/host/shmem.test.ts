// UBLK_F_SHMEM_ZC without a kernel: REG_BUF's argument, the file checks, the
// modes --shmem goes with, and how a request the driver found in the shared
// memory becomes a view of it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { native } from '../../src/native.js';
import { MFD_CLOEXEC } from '../../src/sys.js';
import { checkShmemFile, shmemBufReg } from '../../src/ublk/control/shmem.js';
import { checkKernelSupports, servingMode } from '../../src/ublk/mode.js';
import { UBLK_F_SHMEM_ZC, UBLK_IO_F_SHMEM_ZC, UBLK_IO_OP_READ, UBLK_IO_OP_WRITE } from '../../src/ublk/abi/uapi.js';
import { DESC_ADDR, DESC_NR_SECTORS, DESC_OP_FLAGS, DESC_WORDS } from '../../src/ublk/worker/queue-memory.js';
import { UblkRequest } from '../../src/ublk/worker/request.js';
import { ShmemViews } from '../../src/ublk/worker/shmem-views.js';

test('REG_BUF\'s struct ublk_shmem_buf_reg: addr, len, READ_ONLY flag, zero reserved', () => {
  const b = shmemBufReg(0x7f12_3456_7000, 4 << 20, true);
  assert.equal(b.length, 24);
  const dv = new DataView(b.buffer);
  assert.equal(dv.getBigUint64(0, true), 0x7f12_3456_7000n);
  assert.equal(dv.getBigUint64(8, true), 4n << 20n);
  assert.equal(dv.getUint32(16, true), 1);
  assert.equal(dv.getUint32(20, true), 0);
  assert.equal(new DataView(shmemBufReg(4096, 4096, false).buffer).getUint32(16, true), 0);
});

test('the shared memory file must exist and be whole pages, at most 4 GiB', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ublk-shmem-'));
  try {
    const file = (name: string, size: number): string => {
      const f = path.join(dir, name);
      fs.writeFileSync(f, '');
      fs.truncateSync(f, size);
      return f;
    };
    assert.equal(checkShmemFile(file('ok', 8192)), 8192);
    assert.throws(() => checkShmemFile(path.join(dir, 'missing')), /^ModeError: --shmem .*missing: no such file/);
    assert.throws(() => checkShmemFile(dir), /not a regular file/);
    assert.throws(() => checkShmemFile(file('empty', 0)), /\(0 bytes\) must be a non-zero multiple of 4096 bytes/);
    assert.throws(() => checkShmemFile(file('odd', 1000)), /\(1000 bytes\) must be a non-zero multiple of 4096 bytes/);
    assert.throws(() => checkShmemFile(file('huge', 2 ** 32 + 4096)), /at most 4 GiB/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('--shmem: UBLK_F_SHMEM_ZC in kernel copy, classic or batch; refused with recovery, other copy modes, old kernels', () => {
  const loop = { name: 'loop', data: 'ring' as const, recoverable: true };
  for (const batch of [false, true]) {
    const m = servingMode({ batch, copy: 'kernel', autoBufReg: true, shmem: '/dev/hugepages/buf' }, loop);
    assert.ok(m.shmem && m.flags & UBLK_F_SHMEM_ZC);
    assert.ok(m.tagBuffers, 'requests outside the shared memory are still copied into tag buffers');
  }
  assert.equal(servingMode({ batch: false, copy: 'kernel', autoBufReg: true }, loop).shmem, false);
  assert.throws(() => servingMode({ batch: false, copy: 'kernel', autoBufReg: true, shmem: 'f', recovery: 'requeue' }, loop),
    /^ModeError: --shmem cannot be used with --recovery: a new server could not find/);
  assert.throws(() => servingMode({ batch: false, copy: 'user', autoBufReg: true, shmem: 'f' }, loop),
    /^ModeError: --shmem works with kernel copy only \(the default\), not --copy user/);
  assert.throws(() => servingMode({ batch: false, copy: 'kernel', autoBufReg: true, shmemReadOnly: true }, loop),
    /^ModeError: --shmem-read-only only applies with --shmem FILE$/);
  const m = servingMode({ batch: false, copy: 'kernel', autoBufReg: true, shmem: 'f' }, loop);
  assert.throws(() => checkKernelSupports(m, 0xffffffff - UBLK_F_SHMEM_ZC),
    /^ModeError: this kernel's ublk driver lacks SHMEM_ZC \(needed for --shmem, Linux 7.1 or later\)$/);
  assert.doesNotThrow(() => checkKernelSupports(m, 0xffffffff));
});

/** A descriptor array with tag 0 set to `op` | `flags`, 4 KiB long, addr = (index << 32) | offset. */
function desc(op: number, flags: number, index: number, offset: number): Uint32Array {
  const d = new Uint32Array(DESC_WORDS);
  d[DESC_OP_FLAGS] = op | flags;
  d[DESC_NR_SECTORS] = 8;
  d[DESC_ADDR] = offset;
  d[DESC_ADDR + 1] = index;
  return d;
}

test('a request the driver found in shared memory is a view of the thread\'s own mapping of it; anything else fails', () => {
  const fd = native.memfdCreate('ublk-ts-test-shmem', MFD_CLOEXEC);
  const ro = native.memfdCreate('ublk-ts-test-shmem-ro', MFD_CLOEXEC);
  fs.ftruncateSync(fd, 16384);
  fs.ftruncateSync(ro, 16384);
  fs.writeSync(fd, Buffer.alloc(4096, 0xa5), 0, 4096, 8192);
  const views = new ShmemViews([{ fd, size: 16384, index: 3, readOnly: false }, { fd: ro, size: 16384, index: 0, readOnly: true }]);
  const tagBuffer = new Uint8Array(native.alloc(65536));
  const tagAddress = native.addressOf(tagBuffer);
  const req = new UblkRequest(0, 0, tagBuffer, 0, tagAddress);
  try {
    req.load(desc(UBLK_IO_OP_WRITE, UBLK_IO_F_SHMEM_ZC, 3, 8192));
    assert.equal(req.shmemIndex, 3);
    assert.equal(req.shmemOffset, 8192);
    assert.ok(views.place(req));
    assert.equal(req.buffer.length, 4096);
    assert.ok(req.buffer.every((b) => b === 0xa5), 'WRITE data is read where the application put it');
    assert.equal(req.bufferAddress, native.addressOf(req.buffer), 'the address for the target\'s own io_uring IO');
    req.load(desc(UBLK_IO_OP_READ, UBLK_IO_F_SHMEM_ZC, 3, 4096));
    assert.ok(views.place(req));
    req.buffer.fill(0x3c);
    const back = Buffer.alloc(4096);
    fs.readSync(fd, back, 0, 4096, 4096);
    assert.ok(back.every((b) => b === 0x3c), 'READ data lands in the shared file');

    for (const [d, why] of [
      [desc(UBLK_IO_OP_READ, UBLK_IO_F_SHMEM_ZC, 7, 0), 'an index never registered'],
      [desc(UBLK_IO_OP_READ, UBLK_IO_F_SHMEM_ZC, 3, 16384 - 2048), 'past the end of the region'],
      [desc(UBLK_IO_OP_READ, UBLK_IO_F_SHMEM_ZC, 0, 0), 'a READ into a read-only region'],
    ] as Array<[Uint32Array, string]>) {
      req.load(d);
      assert.equal(views.place(req), false, why);
    }
    req.load(desc(UBLK_IO_OP_WRITE, UBLK_IO_F_SHMEM_ZC, 0, 0));
    assert.ok(views.place(req), 'a WRITE from a read-only region');

    req.load(desc(UBLK_IO_OP_WRITE, 0, 3, 8192));
    assert.equal(req.shmemIndex, -1, 'without UBLK_IO_F_SHMEM_ZC, addr means nothing');
    assert.equal(req.bufferAddress, tagAddress, 'a copied request uses its tag buffer again');
    assert.equal(native.addressOf(req.buffer), tagAddress);
  } finally {
    views.free();
    native.close(fd);
    native.close(ro);
  }
});

test('regions already mapped are unmapped when a later one cannot be', () => {
  const name = `ublk-ts-test-shmem-partial-${process.pid}`;
  const fd = native.memfdCreate(name, MFD_CLOEXEC);
  fs.ftruncateSync(fd, 16384);
  const mapped = (): boolean => fs.readFileSync('/proc/self/maps', 'utf8').includes(`/memfd:${name}`);
  try {
    assert.throws(() => new ShmemViews([{ fd, size: 16384, index: 0, readOnly: false }, { fd: -1, size: 16384, index: 1, readOnly: false }]), /EBADF|Bad file/);
    assert.equal(mapped(), false, 'the first region is no longer mapped');
  } finally {
    native.close(fd);
  }
});
