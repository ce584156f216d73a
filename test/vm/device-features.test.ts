// Device features of the driver beyond serving IO: resize (UPDATE_SIZE),
// del --safe (TRY_STOP_DEV), partitions with and without the kernel's scan
// (UBLK_F_NO_AUTO_PART_SCAN), and the DMA-alignment and segment limits a
// device announces.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { addDevice, assertClean, cli, delDevice, fioVerify, FULL, FULL_ONLY, idOf, listDevices, loadBrd, serverPids, sh, sleep, vmSuite } from './helpers.js';

vmSuite();

const MiB = 2 ** 20;
const sizeOf = (dev: string): number => Number(sh('blockdev', '--getsize64', dev).trim());
const sysfs = (dev: string, attr: string): string => fs.readFileSync(`/sys/block/${dev.slice(5)}/${attr}`, 'utf8').trim();

test('resize: memory grows and shrinks, its data kept; a loop file grows; a target that cannot is refused', () => {
  const mem = addDevice('memory', '--size', '16M');
  const file = '/root/resize.img';
  fs.writeFileSync(file, Buffer.alloc(0));
  fs.truncateSync(file, 16 * MiB);
  const loop = addDevice('loop', '--file', file, '--buffered');
  try {
    sh('bash', '-c', `yes data | head -c 1048576 | dd of=${mem} bs=64k oflag=direct status=none`);
    const head = sh('bash', '-c', `dd if=${mem} bs=1M count=1 iflag=direct status=none | md5sum`);
    const r = cli('resize', String(idOf(mem)), '32M');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sizeOf(mem), 32 * MiB);
    sh('dd', 'if=/dev/zero', `of=${mem}`, 'bs=1M', 'count=1', 'seek=30', 'oflag=direct', 'status=none');
    assert.equal(cli('resize', String(idOf(mem)), '8M').code, 0);
    assert.equal(sizeOf(mem), 8 * MiB);
    assert.equal(sh('bash', '-c', `dd if=${mem} bs=1M count=1 iflag=direct status=none | md5sum`), head, 'data below the new end is kept');
    assert.equal(listDevices().find((d) => d.id === idOf(mem))!.size, 8 * MiB);

    assert.equal(cli('resize', '-n', String(idOf(loop)), '-s', '48M').code, 0, 'kublk-style -n ID -s SIZE');
    assert.equal(sizeOf(loop), 48 * MiB);
    assert.equal(fs.statSync(file).size, 48 * MiB, 'the backing file grew');

    const odd = cli('resize', String(idOf(mem)), '1000');
    assert.equal(odd.code, 2);
    assert.match(odd.stderr, /multiple of 512/);
  } finally {
    delDevice(mem);
    delDevice(loop);
    fs.rmSync(file, { force: true });
  }
  loadBrd(2, 8192);
  const stripe = addDevice('stripe', '--files', '/dev/ram0,/dev/ram1');
  try {
    const r = cli('resize', String(idOf(stripe)), '8M');
    assert.equal(r.code, 1);
    assert.match(r.stderr.trim(), /^ublk-ts: the target of \/dev\/ublkb\d+ cannot change its size$/);
    assert.equal(sizeOf(stripe), 16 * MiB);
  } finally {
    delDevice(stripe);
    sh('rmmod', 'brd');
  }
  assertClean();
});

test('resize, then the server dies: the new server serves the new size (recover)', { skip: FULL_ONLY }, async () => {
  const dev = addDevice('null', '--size', '16M', '--recovery', 'reissue');
  const id = idOf(dev);
  try {
    assert.equal(cli('resize', String(id), '64M').code, 0);
    const before = listDevices().find((d) => d.id === id)!;
    process.kill(before.pid!, 'SIGKILL'); // the supervisor starts a new server
    for (let i = 0; i < 100; i++) {
      const d = listDevices().find((x) => x.id === id);
      if (d?.state === 'live' && d.pid !== before.pid) break;
      await sleep(200);
    }
    const after = listDevices().find((d) => d.id === id)!;
    assert.notEqual(after.pid, before.pid, 're-attached');
    assert.equal(after.size, 64 * MiB);
    sh('dd', `if=${dev}`, 'of=/dev/null', 'bs=1M', 'count=1', 'skip=60', 'iflag=direct', 'status=none');
  } finally {
    delDevice(dev);
  }
  assertClean();
});

test('del --safe refuses a device in use and leaves it serving; an unused one it deletes', () => {
  const dev = addDevice('memory', '--size', '32M');
  sh('mkfs.ext4', '-q', dev);
  fs.mkdirSync('/mnt/safe', { recursive: true });
  sh('mount', dev, '/mnt/safe');
  try {
    const r = cli('del', '--safe', String(idOf(dev)));
    assert.equal(r.code, 1);
    assert.match(r.stderr.trim(), /^ublk-ts: device \d+ in use \(open or mounted\): not deleted \(--safe\)$/);
    assert.equal(listDevices()[0]!.state, 'live');
    fs.writeFileSync('/mnt/safe/still', 'served');
  } finally {
    sh('umount', '/mnt/safe');
  }
  const ok = cli('del', '--safe', String(idOf(dev)));
  assert.equal(ok.code, 0, ok.stderr);
  assertClean();
});

test('partitions: sfdisk through the device, partitions appear; with --no-part-scan only after blockdev --rereadpt', () => {
  const file = '/root/parts.img';
  fs.writeFileSync(file, Buffer.alloc(0));
  fs.truncateSync(file, 64 * MiB);
  let dev = addDevice('loop', '--file', file, '--buffered');
  try {
    sh('bash', '-c', `printf 'size=16MiB\\nsize=16MiB\\n' | sfdisk -q ${dev}`);
  } finally {
    delDevice(dev);
  }
  dev = addDevice('loop', '--file', file, '--buffered');
  try {
    assert.ok(fs.existsSync(`${dev}p1`) && fs.existsSync(`${dev}p2`), 'the kernel scanned the partition table');
    assert.equal(sizeOf(`${dev}p2`), 16 * MiB);
    sh('mkfs.ext4', '-q', `${dev}p2`);
  } finally {
    delDevice(dev);
  }
  dev = addDevice('loop', '--file', file, '--buffered', '--no-part-scan');
  try {
    assert.ok(listDevices()[0]!.flags.includes('NO_AUTO_PART_SCAN'));
    assert.ok(!fs.existsSync(`${dev}p1`), 'no scan at start');
    sh('blockdev', '--rereadpt', dev);
    assert.ok(fs.existsSync(`${dev}p1`), 'rereadpt finds them');
    sh('fsck.ext4', '-n', `${dev}p2`);
  } finally {
    delDevice(dev);
    fs.rmSync(file, { force: true });
  }
  assert.deepEqual(fs.readdirSync('/dev').filter((n) => n.startsWith('ublkb')), [], 'no partition node left');
  assertClean();
});

test('I/O scheduler: none by default, --scheduler NAME or kernel as asked; one the kernel lacks is refused and nothing is left', () => {
  const current = (dev: string) => /\[([^\]]+)\]/.exec(sysfs(dev, 'queue/scheduler'))?.[1];
  for (const [args, want] of [[[], 'none'], [['--scheduler', 'mq-deadline'], 'mq-deadline'], [['--scheduler', 'kernel'], 'mq-deadline']] as const) {
    const dev = addDevice('null', '--size', '64M', ...args);
    try {
      assert.equal(current(dev), want, args.join(' ') || 'the default');
      sh('dd', `if=${dev}`, 'of=/dev/null', 'bs=4k', 'count=64', 'iflag=direct', 'status=none');
    } finally {
      delDevice(dev);
    }
  }
  const r = cli('add', 'null', '--size', '64M', '--scheduler', 'cfq');
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /the kernel has no I\/O scheduler 'cfq' \(it offers: .*mq-deadline/);
  assertClean();
});

test('DMA alignment and segment limits are announced as given; bad ones are refused', () => {
  const dev = addDevice('null', '--size', '1G', '--dma-align', '4K', '--max-segments', '32', '--max-segment-size', '32K',
    '--segment-boundary', '4K');
  try {
    assert.equal(sysfs(dev, 'queue/dma_alignment'), '4095');
    assert.equal(sysfs(dev, 'queue/max_segments'), '32');
    assert.equal(sysfs(dev, 'queue/max_segment_size'), '32768');
    sh('dd', `if=${dev}`, 'of=/dev/null', 'bs=1M', 'count=4', 'iflag=direct', 'status=none');
  } finally {
    delDevice(dev);
  }
  for (const [args, msg] of [
    [['--dma-align', '3000'], /--dma-align must be a power of 2, got 3000/],
    [['--dma-align', '8K'], /--dma-align/],
    [['--max-segment-size', '1K'], /--max-segment-size/],
    [['--segment-boundary', '12K'], /--segment-boundary must be a power of 2/],
  ] as Array<[string[], RegExp]>) {
    const r = cli('add', 'null', '--size', '1G', ...args);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.stderr, msg);
  }
  assert.deepEqual(serverPids(), []);
  assertClean();
});

test('--need-get-data: WRITE data is fetched on demand; fio verify and mkfs on memory (and loop: full suite)', () => {
  loadBrd(1, 65536);
  try {
    const targets = [['memory', '--size', '64M'], ...(FULL ? [['loop', '--file', '/dev/ram0']] : [])];
    for (const args of targets) {
      const dev = addDevice(...args, '--need-get-data', '--queues', '2');
      try {
        assert.ok(listDevices()[0]!.flags.includes('NEED_GET_DATA'));
        fioVerify(dev, { iodepth: 32, size: '32m', bs: '4k-256k' });
        sh('mkfs.ext4', '-q', '-F', dev);
        sh('fsck.ext4', '-n', '-f', dev);
      } finally {
        delDevice(dev);
      }
    }
  } finally {
    sh('rmmod', 'brd');
  }
  const r = cli('add', 'null', '--size', '1G', '--need-get-data', '--copy', 'user');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--need-get-data works in classic mode with kernel copy only/);
  assertClean();
});

test('classic with --threads 3 on 2 queues (UBLK_F_PER_IO_DAEMON): zero copy (every copy mode: full suite) verifies, both queues served', () => {
  loadBrd(1, 65536);
  try {
    // Zero copy is the one whose buffers belong to a thread's ring; the kernel selftests' stress cases add kernel copy.
    for (const copy of FULL ? ['kernel', 'user', 'zero'] : ['zero']) {
      const dev = addDevice('loop', '--file', '/dev/ram0', '--queues', '2', '--threads', '3', '--copy', copy);
      try {
        fioVerify(dev, { iodepth: 64, size: '16m', bs: '4k-128k', extra: ['--numjobs=2', '--offset_increment=32m'] });
        const r = cli('stats', String(idOf(dev)), '--json', '--interval', '1');
        assert.equal(r.code, 0, r.stderr);
        const st = JSON.parse(r.stdout) as { queues: Array<{ totals: { writes: number } }> };
        assert.equal(st.queues.length, 2);
        assert.ok(st.queues.every((q) => q.totals.writes > 0), 'both queues served');
      } finally {
        delDevice(dev);
      }
    }
  } finally {
    sh('rmmod', 'brd');
  }
  assertClean();
});
