// The loop target end to end, as a user drives it: devices backed by a file
// (tmpfs in the VM) or by a block device (brd), in every copy mode (kernel,
// user, zero with and without automatic buffer registration) and both protocol
// modes; fio verification, a file system made on the device and checked in the
// backing file afterwards, WRITE_ZEROES / DISCARD reaching the file, --buffered
// and --size, and bad input. The backing file is the truth: what a test wrote
// through the device is read back from the file once the device is gone.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import {
  addDevice, assertClean, CLI, delDevice, fioVerify, FULL_ONLY, idOf, listDevices, loadBrd, run, serverPids, sh, type Run, vmSuite,
} from './helpers.js';
import { assertOneLineError } from '../one-line-error.js';

vmSuite();

const KiB = 1024;
const MiB = 1024 * KiB;

// ---- local helpers -----------------------------------------------------------

/** A sparse backing file of `size` bytes (reads as zeros), in `dir` (a tmpfs in the VM). */
function backingFile(dir: string, size: number): string {
  const file = `${fs.mkdtempSync(`${dir}/ublk-loop-`)}/backing.img`;
  fs.writeFileSync(file, '');
  fs.truncateSync(file, size);
  return file;
}

function removeBacking(file: string): void {
  fs.rmSync(file.replace(/\/backing\.img$/, ''), { recursive: true, force: true });
}

/** Bytes [offset, offset + length) of a regular file or block device, read with plain (cached) IO. */
function fileBytes(file: string, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  const fd = fs.openSync(file, 'r');
  try {
    let done = 0;
    while (done < length) {
      const n = fs.readSync(fd, buf, done, length - done, offset + done);
      assert.ok(n > 0, `${file}: short read at ${offset + done}`);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return buf;
}

/** Bytes [offset, offset + length) of a block device, read with O_DIRECT (past any page cache). */
function devBytes(dev: string, offset: number, length: number): Buffer {
  const r = spawnSync('dd', [
    `if=${dev}`, 'bs=1M', `skip=${offset}`, `count=${length}`, 'iflag=direct,skip_bytes,count_bytes', 'status=none',
  ], { maxBuffer: 256 * MiB, timeout: 120_000 });
  if (r.error) throw r.error;
  assert.equal(r.status, 0, `dd from ${dev} failed: ${r.stderr.toString()}`);
  assert.equal(r.stdout.length, length, `dd read ${r.stdout.length} of ${length} bytes from ${dev}`);
  return r.stdout;
}

/** Writes `data` at byte `offset` of block device `dev` with dd: O_DIRECT | O_DSYNC (FUA writes) of 64 KiB, then fsync (FLUSH). */
function ddWrite(dev: string, offset: number, data: Buffer): void {
  const src = `${fs.mkdtempSync('/tmp/ublk-pat-')}/pattern`;
  try {
    fs.writeFileSync(src, data);
    sh('dd', `if=${src}`, `of=${dev}`, 'bs=64K', `seek=${offset}`, 'oflag=direct,dsync,seek_bytes', 'conv=fsync', 'status=none');
  } finally {
    fs.rmSync(src.replace(/\/pattern$/, ''), { recursive: true, force: true });
  }
}

/** Where two equal-length buffers first differ, for a readable assertion message; -1 if equal. */
function firstDiff(a: Buffer, b: Buffer): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

function assertBytes(actual: Buffer, expected: Buffer, what: string): void {
  const at = firstDiff(actual, expected);
  assert.equal(at, -1, `${what}: differs at byte ${at} (got ${actual[at]}, want ${expected[at]})`);
}

const isZeros = (b: Buffer): boolean => b.every((x) => x === 0);

/** Bytes allocated to a file (what du counts). */
const allocated = (file: string): number => fs.statSync(file).blocks * 512;

const sysfsSize = (dev: string): number => Number(fs.readFileSync(`/sys/block/ublkb${idOf(dev)}/size`, 'utf8')) * 512;

/** The open-file flags (octal, from /proc/PID/fdinfo) the only server process holds `file` open with. */
function serverOpenFlags(file: string): number {
  const pids = serverPids();
  assert.equal(pids.length, 1, `one server process: ${pids}`);
  const pid = pids[0]!;
  const real = fs.realpathSync(file);
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    let link: string;
    try {
      link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    if (link !== real) continue;
    const m = /^flags:\s*([0-7]+)$/m.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
    assert.ok(m, `flags in /proc/${pid}/fdinfo/${fd}`);
    return parseInt(m[1]!, 8);
  }
  throw new Error(`the server (pid ${pid}) does not hold ${real} open`);
}
const O_DIRECT = 0o40000; // x86-64
const O_ACCMODE = 3, O_RDWR = 2;

/** `ublk-ts ARGS` run without blocking the event loop (several at a time). */
function cliAsync(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function quiet(cmd: string, ...args: string[]): void {
  run(cmd, args);
}

function assertFlags(flags: string[], want: string[], notWant: string[], what: string): void {
  for (const f of want) assert.ok(flags.includes(f), `${what}: ${f} in flags ${flags.join(' ')}`);
  for (const f of notWant) assert.ok(!flags.includes(f), `${what}: no ${f} in flags ${flags.join(' ')}`);
}

// ---- the copy modes × protocol modes -----------------------------------------

interface Copy { name: string; args: string[]; flags: string[]; notFlags: string[] }
const COPIES: Copy[] = [
  { name: 'kernel copy', args: ['--copy', 'kernel'], flags: [], notFlags: ['USER_COPY', 'SUPPORT_ZERO_COPY', 'AUTO_BUF_REG'] },
  { name: 'user copy', args: ['--copy', 'user'], flags: ['USER_COPY'], notFlags: ['SUPPORT_ZERO_COPY', 'AUTO_BUF_REG'] },
  { name: 'zero copy (AUTO_BUF_REG)', args: ['--copy', 'zero'], flags: ['SUPPORT_ZERO_COPY', 'AUTO_BUF_REG'], notFlags: ['USER_COPY'] },
  {
    name: 'zero copy, --no-auto-buf-reg', args: ['--copy', 'zero', '--no-auto-buf-reg'],
    flags: ['SUPPORT_ZERO_COPY'], notFlags: ['USER_COPY', 'AUTO_BUF_REG'],
  },
];
interface Mode { name: string; args: string[]; flags: string[]; notFlags: string[] }
const MODES: Mode[] = [
  { name: 'classic', args: [], flags: [], notFlags: ['BATCH_IO'] },
  { name: 'batch', args: ['--batch'], flags: ['BATCH_IO'], notFlags: [] },
];

describe('loop over a file: fio verify, a file system, and the file holds what was written', () => {
  const FILE_SIZE = 64 * MiB;
  const FS_SIZE = 48 * MiB; // mkfs uses the first 48 MiB; the rest stays outside the file system
  // A pattern of mixed-size O_DIRECT writes at an offset that is 512- but not 4096-aligned, past the file system.
  const PAT_OFFSET = 56 * MiB + 3584;
  const PAT_LENGTH = MiB + 1536;
  const GUARD = 4 * KiB; // never written around the pattern: must still read as zeros
  // Ranges inside the pattern (relative to it) cleared by WRITE_ZEROES with NOUNMAP, and without.
  const ZEROED: [number, number] = [64 * KiB, 128 * KiB];
  const PUNCHED: [number, number] = [256 * KiB + 512, 384 * KiB];

  MODES.forEach((mode, m) => {
    COPIES.forEach((copy, c) => {
      // `npm test`: every copy mode once, the engines taking turns; the full suite: every pair.
      test(`${copy.name}, ${mode.name}`, { skip: (m + c) % 2 === 1 && FULL_ONLY }, () => {
        const file = backingFile('/tmp', FILE_SIZE);
        const mnt = fs.mkdtempSync('/tmp/ublk-mnt-');
        const big = crypto.randomBytes(3 * MiB + 777);
        const pattern = crypto.randomBytes(PAT_LENGTH);
        const expected = Buffer.from(pattern).fill(0, ...ZEROED).fill(0, ...PUNCHED);
        let mounted = false;
        try {
          const dev = addDevice('loop', '--file', file, ...copy.args, ...mode.args);
          try {
            const listed = listDevices();
            assert.equal(listed.length, 1);
            const d = listed[0]!;
            assert.equal(d.path, dev);
            assert.equal(d.target, 'loop');
            assert.equal(d.size, FILE_SIZE, 'the size defaults to the file\'s');
            assertFlags(d.flags, [...copy.flags, ...mode.flags], [...copy.notFlags, ...mode.notFlags], `${copy.name}, ${mode.name}`);
            const flags = serverOpenFlags(file);
            assert.equal(flags & O_ACCMODE, O_RDWR, 'the file is open read-write');
            assert.ok(flags & O_DIRECT, 'the file is open with O_DIRECT (no --buffered)');

            // (a) fio: random writes of 512 B to 256 KiB, then crc32c verification of every block.
            fioVerify(dev, { iodepth: 32, size: '16m', bs: '512-256k' });

            // A file system in the first 48 MiB (mkfs discards that range first), used and checked.
            sh('mkfs.ext4', '-q', '-F', dev, `${FS_SIZE / MiB}M`);
            sh('mount', dev, mnt);
            mounted = true;
            fs.writeFileSync(`${mnt}/big.bin`, big);
            fs.mkdirSync(`${mnt}/dir`);
            for (let i = 0; i < 20; i++) fs.writeFileSync(`${mnt}/dir/f${i}`, `file ${i}\n`.repeat(i * 50));
            sh('umount', mnt);
            mounted = false;
            sh('fsck.ext4', '-f', '-n', dev);

            // (b) a random pattern past the file system, through the device ...
            ddWrite(dev, PAT_OFFSET, pattern);
            assertBytes(devBytes(dev, PAT_OFFSET, PAT_LENGTH), pattern, 'the pattern read back through the device');
            // ... with two holes made by WRITE_ZEROES in this copy mode: with NOUNMAP (zeros are written, tmpfs
            // has no ZERO_RANGE) and without (a hole punched in the file).
            sh('blkdiscard', '-z', '-o', String(PAT_OFFSET + ZEROED[0]), '-l', String(ZEROED[1] - ZEROED[0]), dev);
            sh('fallocate', '--punch-hole', '-o', String(PAT_OFFSET + PUNCHED[0]), '-l', String(PUNCHED[1] - PUNCHED[0]), dev);
            assertBytes(devBytes(dev, PAT_OFFSET, PAT_LENGTH), expected, 'the pattern with its zeroed ranges, through the device');
          } finally {
            if (mounted) quiet('umount', mnt);
            delDevice(dev);
          }
          assertClean();

          // The backing file holds the pattern, at that offset, and nothing around it.
          assertBytes(fileBytes(file, PAT_OFFSET, PAT_LENGTH), expected, 'the pattern (and its zeroed ranges) in the backing file');
          assert.ok(isZeros(fileBytes(file, PAT_OFFSET - GUARD, GUARD)), 'the file before the pattern is untouched');
          assert.ok(isZeros(fileBytes(file, PAT_OFFSET + PAT_LENGTH, GUARD)), 'the file after the pattern is untouched');
          assert.equal(fs.statSync(file).size, FILE_SIZE, 'the file keeps its size');
          // ... and the file system, intact, with the file written through the device.
          sh('fsck.ext4', '-f', '-n', file);
          const dumped = `${mnt}/big.dumped`;
          sh('debugfs', '-R', `dump /big.bin ${dumped}`, file);
          assertBytes(fs.readFileSync(dumped), big, 'big.bin, read by debugfs from the backing file');
          assert.match(sh('debugfs', '-R', 'cat /dir/f19', file), /^(file 19\n){950}$/);
        } finally {
          fs.rmSync(mnt, { recursive: true, force: true });
          removeBacking(file);
        }
      });
    });
  });
});

// ---- a block device as the backing store ---------------------------------------

test('loop over a block device (brd /dev/ram0): its size by default, fio verify, data and WRITE_ZEROES reach it', () => {
  loadBrd(1, 65536);
  try {
    const ram = '/dev/ram0';
    const size = Number(sh('blockdev', '--getsize64', ram).trim());
    assert.equal(size, 64 * MiB);
    const pattern = crypto.randomBytes(2 * MiB + 512);
    const at = 40 * MiB + 512;
    // Non-zero data in the range WRITE_ZEROES will clear, so that the zeroing is visible.
    const ones = Buffer.alloc(MiB, 0xa5);
    const dev = addDevice('loop', '--file', ram);
    try {
      assert.equal(Number(sh('blockdev', '--getsize64', dev).trim()), size, 'the device has /dev/ram0\'s size');
      assert.ok(serverOpenFlags(ram) & O_DIRECT, '/dev/ram0 is open with O_DIRECT');
      fioVerify(dev, { iodepth: 16, size: '16m', bs: '512-256k' });
      ddWrite(dev, at, pattern);
      // WRITE_ZEROES on a block device is fallocate(ZERO_RANGE), whatever the NOUNMAP flag.
      ddWrite(dev, 60 * MiB, ones);
      sh('blkdiscard', '-z', '-o', String(60 * MiB), '-l', String(MiB / 2), dev);
      assert.ok(isZeros(devBytes(dev, 60 * MiB, MiB / 2)), 'zeroed range reads zeros through the device');
      sh('fallocate', '--punch-hole', '-o', String(60 * MiB + MiB / 2), '-l', String(MiB / 4), dev);
      assert.ok(isZeros(devBytes(dev, 60 * MiB + MiB / 2, MiB / 4)), 'punched range reads zeros through the device');
    } finally {
      delDevice(dev);
    }
    assertClean();
    assertBytes(fileBytes(ram, at, pattern.length), pattern, 'the pattern on /dev/ram0');
    assert.ok(isZeros(fileBytes(ram, 60 * MiB, MiB / 2 + MiB / 4)), 'the zeroed ranges are zeros on /dev/ram0');
    assertBytes(fileBytes(ram, 60 * MiB + MiB / 2 + MiB / 4, MiB / 4), ones.subarray(0, MiB / 4), 'the rest of the 0xa5 MiB is untouched');
  } finally {
    quiet('rmmod', 'brd');
  }
  assert.ok(!fs.existsSync('/dev/ram0'), 'brd unloaded');
});

// ---- WRITE_ZEROES and DISCARD on tmpfs -------------------------------------------

test('tmpfs file: WRITE_ZEROES (NOUNMAP writes zeros, unmap punches) and DISCARD (punches) reach the file', () => {
  // tmpfs can punch holes but has no FALLOC_FL_ZERO_RANGE.
  const file = backingFile('/dev/shm', 64 * MiB);
  try {
    const data = crypto.randomBytes(16 * MiB);
    const expected = Buffer.from(data);
    const dev = addDevice('loop', '--file', file);
    try {
      const q = `/sys/block/ublkb${idOf(dev)}/queue`;
      assert.ok(Number(fs.readFileSync(`${q}/discard_max_bytes`, 'utf8')) > 0, 'the device announces DISCARD');
      assert.ok(Number(fs.readFileSync(`${q}/write_zeroes_max_bytes`, 'utf8')) > 0, 'the device announces WRITE_ZEROES');
      ddWrite(dev, 0, data);
      const full = allocated(file);
      assert.ok(full >= 16 * MiB, `16 MiB written: ${full} bytes allocated`);

      // BLKZEROOUT (blkdiscard -z): WRITE_ZEROES with NOUNMAP. No ZERO_RANGE on tmpfs: zeros are written, the space stays.
      sh('blkdiscard', '-z', '-o', String(MiB), '-l', String(2 * MiB), dev);
      expected.fill(0, MiB, 3 * MiB);
      assert.ok(isZeros(devBytes(dev, MiB, 2 * MiB)), 'blkdiscard -z: zeros through the device');
      assert.ok(isZeros(fileBytes(file, MiB, 2 * MiB)), 'blkdiscard -z: zeros in the file');
      assert.equal(allocated(file), full, 'NOUNMAP keeps the space allocated');

      // fallocate --punch-hole on the block device: WRITE_ZEROES without NOUNMAP, a hole in the file.
      sh('fallocate', '--punch-hole', '-o', String(4 * MiB), '-l', String(2 * MiB), dev);
      expected.fill(0, 4 * MiB, 6 * MiB);
      assert.ok(isZeros(devBytes(dev, 4 * MiB, 2 * MiB)), 'punch-hole: zeros through the device');
      assert.ok(isZeros(fileBytes(file, 4 * MiB, 2 * MiB)), 'punch-hole: zeros in the file');
      assert.equal(allocated(file), full - 2 * MiB, 'the punched 2 MiB are freed');

      // DISCARD (blkdiscard): a hole punched in the file, which reads back as zeros.
      sh('blkdiscard', '-o', String(8 * MiB), '-l', String(4 * MiB), dev);
      expected.fill(0, 8 * MiB, 12 * MiB);
      assert.ok(isZeros(fileBytes(file, 8 * MiB, 4 * MiB)), 'discard: zeros in the file');
      assert.ok(isZeros(devBytes(dev, 8 * MiB, 4 * MiB)), 'discard: the device reads what the file holds');
      assert.equal(allocated(file), full - 6 * MiB, 'the discarded 4 MiB are freed');

      // Everything else is intact, through the device.
      assertBytes(devBytes(dev, 0, 16 * MiB), expected, 'the first 16 MiB through the device');
    } finally {
      delDevice(dev);
    }
    assertClean();
    assertBytes(fileBytes(file, 0, 16 * MiB), expected, 'the first 16 MiB of the file');
    assert.equal(fs.statSync(file).size, 64 * MiB, 'holes keep the file\'s size');
  } finally {
    removeBacking(file);
  }
});

// ---- --buffered and --size ------------------------------------------------------

test('--buffered --size 40M over a 64 MiB file: the device has 40 MiB, fio verify with fsync, nothing written past it', () => {
  const file = backingFile('/tmp', 64 * MiB);
  try {
    // A marker just past the device's end, which no write through the device may reach.
    const marker = Buffer.alloc(64 * KiB, 0x5a);
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, marker, 0, marker.length, 40 * MiB);
    fs.closeSync(fd);
    const tail = crypto.randomBytes(MiB);
    const dev = addDevice('loop', '--file', file, '--buffered', '--size', '40M');
    try {
      assert.equal(sysfsSize(dev), 40 * MiB, 'the block device has --size');
      assert.equal(Number(sh('blockdev', '--getsize64', dev).trim()), 40 * MiB);
      const flags = serverOpenFlags(file);
      assert.equal(flags & O_DIRECT, 0, '--buffered: the file is not open with O_DIRECT');
      // FLUSH (fsync every 16 writes) is fdatasync on the file.
      const queue = `/sys/block/ublkb${idOf(dev)}/queue`;
      assert.equal(fs.readFileSync(`${queue}/write_cache`, 'utf8').trim(), 'write back', 'a volatile cache: FLUSH is sent');
      assert.equal(fs.readFileSync(`${queue}/fua`, 'utf8').trim(), '1', 'FUA writes are sent');
      fioVerify(dev, { iodepth: 16, size: '16m', bs: '512-256k', extra: ['--fsync=16'] });
      // The last MiB of the device, then one write past its end, which fails.
      ddWrite(dev, 39 * MiB, tail);
      const past = run('dd', ['if=/dev/zero', `of=${dev}`, 'bs=4k', 'count=1', `seek=${40 * MiB}`, 'oflag=direct,seek_bytes', 'status=none']);
      assert.notEqual(past.code, 0, 'a write past the end of the device fails');
    } finally {
      delDevice(dev);
    }
    assertClean();
    assertBytes(fileBytes(file, 39 * MiB, MiB), tail, 'the device\'s last MiB in the file');
    assertBytes(fileBytes(file, 40 * MiB, marker.length), marker, 'the file past --size is untouched');
    assert.equal(fs.statSync(file).size, 64 * MiB);
  } finally {
    removeBacking(file);
  }
});

// ---- bad input -------------------------------------------------------------------

describe('bad input: one-line error, non-zero exit, nothing created', () => {
  let dir = '';
  const cases: Array<[string, () => string[], RegExp]> = [
    ['loop without --file', () => ['add', 'loop'], /--file PATH is required/],
    ['a file that does not exist', () => ['add', 'loop', '--file', `${dir}/nothing.img`], /nothing\.img: no such file/],
    ['a directory', () => ['add', 'loop', '--file', `${dir}/adir`], /adir is neither a regular file nor a block device/],
    ['a zero-length file', () => ['add', 'loop', '--file', `${dir}/empty.img`], /empty\.img is too small/],
    ['--size larger than the file', () => ['add', 'loop', '--file', `${dir}/small.img`, '--size', '16M'], /small\.img holds 8388608 bytes, less than the device size 16777216/],
    ['the memory target in zero copy', () => ['add', 'memory', '--size', '16M', '--copy', 'zero'], /zero copy/],
    ['an unknown copy mode', () => ['add', 'loop', '--file', `${dir}/small.img`, '--copy', 'sideways'], /--copy must be one of kernel, user, zero, got 'sideways'/],
    ['--no-auto-buf-reg without --copy', () => ['add', 'loop', '--file', `${dir}/small.img`, '--no-auto-buf-reg'], /--no-auto-buf-reg only applies with --copy zero/],
    ['--no-auto-buf-reg with --copy user', () => ['add', 'loop', '--file', `${dir}/small.img`, '--copy', 'user', '--no-auto-buf-reg'], /--no-auto-buf-reg only applies with --copy zero/],
    ['--file for the null target', () => ['add', 'null', '--size', '1M', '--file', 'x'], /unknown option --file/],
  ];
  const results = new Map<string, { argv: string[]; r: Run }>();

  // Each command starts one or two Node processes, slow under emulation: they run three at a time, up front.
  before(async () => {
    dir = fs.mkdtempSync('/tmp/ublk-bad-');
    fs.writeFileSync(`${dir}/empty.img`, '');
    fs.writeFileSync(`${dir}/small.img`, '');
    fs.truncateSync(`${dir}/small.img`, 8 * MiB);
    fs.mkdirSync(`${dir}/adir`);
    const queue = [...cases];
    const worker = async (): Promise<void> => {
      for (let c = queue.shift(); c; c = queue.shift()) {
        const argv = c[1]();
        results.set(c[0], { argv, r: await cliAsync(argv) });
      }
    };
    await Promise.all([worker(), worker(), worker()]);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  for (const [name, , message] of cases) {
    test(name, () => {
      const { argv, r } = results.get(name)!;
      assert.notEqual(r.code, 0, `exit code for ${argv.join(' ')}`);
      assertOneLineError(r, message);
      assertClean();
    });
  }
});

// ---- null and memory in the other copy modes ---------------------------------------

describe('null and memory targets in user and zero copy', () => {
  for (const mode of MODES) {
    test(`memory, user copy, ${mode.name}: fio verify`, () => {
      const dev = addDevice('memory', '--size', '64M', '--copy', 'user', ...mode.args);
      try {
        assertFlags(listDevices()[0]!.flags, ['USER_COPY', ...mode.flags], ['SUPPORT_ZERO_COPY', 'AUTO_BUF_REG', ...mode.notFlags], `memory, ${mode.name}`);
        fioVerify(dev, { iodepth: 32, size: '16m', bs: '512-256k' });
      } finally {
        delDevice(dev);
      }
      assertClean();
    });
  }

  test('null, zero copy: fio random reads succeed', () => {
    const dev = addDevice('null', '--size', '256M', '--copy', 'zero');
    try {
      assertFlags(listDevices()[0]!.flags, ['SUPPORT_ZERO_COPY', 'AUTO_BUF_REG'], ['USER_COPY'], 'null, zero copy');
      const r = run('fio', [
        '--name=read', `--filename=${dev}`, '--ioengine=io_uring', '--direct=1', '--iodepth=32', '--rw=randread',
        '--bsrange=4k-128k', '--size=256m', '--io_size=32m', '--output-format=json',
      ]);
      assert.equal(r.code, 0, `fio failed:\n${r.stdout}\n${r.stderr}`);
      const job = (JSON.parse(r.stdout) as { jobs: Array<{ error: number; read: { io_bytes: number } }> }).jobs[0]!;
      assert.equal(job.error, 0);
      assert.ok(job.read.io_bytes >= 32 * MiB, `fio read ${job.read.io_bytes} bytes`);
    } finally {
      delDevice(dev);
    }
    assertClean();
  });
});
