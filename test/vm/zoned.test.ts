// The zoned target (UBLK_F_ZONED): the kernel sees a host-managed zoned disk
// with our layout, blkzone's zone commands move zones through their states,
// fio's zbd mode writes and verifies through it (classic and batch, two
// queues sharing one zone model), a write off the write pointer fails, and
// modes the kernel cannot serve are refused before anything is created.
//
// ZONE_APPEND: neither fio 3.33 nor blkzone issues one; btrfs in zoned mode
// writes its data with them (and keeps the sector each append reports as the
// data's address, so a wrong one shows as checksum errors): a btrfs file
// system on the device is the append test (btrfs-progs, scripts/install-deps.sh).
// test/host/zone-model.test.ts and test/host/zoned-target.test.ts test appends too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { addDevice, assertClean, cli, cliWith, delDevice, fioVerify, FULL_ONLY, idOf, listDevices, run, sh, vmSuite } from './helpers.js';

vmSuite();

const ZONE = 4 * 2 ** 20, ZONE_SECTORS = ZONE / 512;

interface Zone { start: number; len: number; wp: number; cond: string; type: string }

/**
 * `blkzone report`, parsed: `start: 0x000002000, len 0x002000, cap 0x002000, wptr 0x000000 ..., zcond: 1(em) [type: 2(SEQ_WRITE_REQUIRED)]`;
 * blkzone shows the write pointer relative to the zone's start, `wp` is absolute.
 */
function report(dev: string): Zone[] {
  return sh('blkzone', 'report', dev).trim().split('\n').map((line) => {
    const m = /start: (0x[0-9a-f]+), len (0x[0-9a-f]+),.*wptr (0x[0-9a-f]+).*zcond:\s*\d+\((\w+)\) \[type: \d+\((\w+)\)\]/.exec(line);
    assert.ok(m, `blkzone report line: ${line}`);
    return { start: Number(m[1]), len: Number(m[2]), wp: Number(m[1]) + Number(m[3]), cond: m[4]!, type: m[5]! };
  });
}

const zoneOp = (op: string, dev: string, zone: number) => sh('blkzone', op, '-o', String(zone * ZONE_SECTORS), '-c', '1', dev);

test('blkzone shows the layout; open, close, finish and reset move a zone through its states; writes only at the write pointer', () => {
  const dev = addDevice('zoned', '--size', '64M', '--zone-size', '4M', '--conventional', '2', '--max-open', '4', '--max-active', '6');
  try {
    const q = `/sys/block/${dev.slice(5)}/queue`;
    assert.equal(fs.readFileSync(`${q}/zoned`, 'utf8').trim(), 'host-managed');
    assert.equal(Number(fs.readFileSync(`${q}/chunk_sectors`, 'utf8')), ZONE_SECTORS);
    assert.equal(Number(fs.readFileSync(`${q}/nr_zones`, 'utf8')), 16);
    assert.equal(Number(fs.readFileSync(`${q}/max_open_zones`, 'utf8')), 4);
    assert.equal(Number(fs.readFileSync(`${q}/max_active_zones`, 'utf8')), 6);
    const [listed] = listDevices().filter((d) => d.id === idOf(dev));
    assert.ok(listed!.flags.includes('ZONED') && listed!.flags.includes('USER_COPY'), `flags ${listed!.flags}`);
    assert.deepEqual((listed as unknown as { zoned: unknown }).zoned, { zoneSize: ZONE, zones: 16, maxOpen: 4, maxActive: 6 });

    let zones = report(dev);
    assert.equal(zones.length, 16);
    zones.forEach((z, i) => {
      assert.equal(z.start, i * ZONE_SECTORS);
      assert.equal(z.len, ZONE_SECTORS);
      assert.deepEqual([z.type, z.cond], i < 2 ? ['CONVENTIONAL', 'nw'] : ['SEQ_WRITE_REQUIRED', 'em'], `zone ${i}`);
    });

    // Explicit open, and close of a zone never written: empty again.
    zoneOp('open', dev, 3);
    assert.equal(report(dev)[3]!.cond, 'oe');
    zoneOp('close', dev, 3);
    assert.equal(report(dev)[3]!.cond, 'em');
    // A write at the write pointer opens the zone implicitly; close, finish, reset.
    sh('dd', 'if=/dev/urandom', `of=${dev}`, 'bs=64k', 'count=16', `seek=${4 * 64}`, 'oflag=direct', 'status=none');
    assert.deepEqual([report(dev)[4]!.cond, report(dev)[4]!.wp], ['oi', 4 * ZONE_SECTORS + 2048]);
    zoneOp('close', dev, 4);
    assert.equal(report(dev)[4]!.cond, 'cl');
    zoneOp('finish', dev, 4);
    assert.deepEqual([report(dev)[4]!.cond, report(dev)[4]!.wp], ['fu', 5 * ZONE_SECTORS]);
    zoneOp('reset', dev, 4);
    assert.deepEqual([report(dev)[4]!.cond, report(dev)[4]!.wp], ['em', 4 * ZONE_SECTORS]);

    // Off the write pointer: refused (by the block layer's zone write plugging or by us), and nothing moves.
    const off = run('dd', ['if=/dev/zero', `of=${dev}`, 'bs=4k', 'count=1', `seek=${5 * 1024 + 1}`, 'oflag=direct', 'status=none']);
    assert.notEqual(off.code, 0, 'a write off the write pointer fails');
    assert.deepEqual([report(dev)[5]!.cond, report(dev)[5]!.wp], ['em', 5 * ZONE_SECTORS]);
    // A conventional zone takes writes anywhere, and data reads back.
    sh('dd', 'if=/dev/urandom', 'of=/tmp/zoned.blk', 'bs=4k', 'count=1', 'status=none');
    sh('dd', 'if=/tmp/zoned.blk', `of=${dev}`, 'bs=4k', 'count=1', 'seek=77', 'oflag=direct', 'status=none');
    sh('dd', `if=${dev}`, 'of=/tmp/zoned.back', 'bs=4k', 'count=1', 'skip=77', 'iflag=direct', 'status=none');
    assert.ok(fs.readFileSync('/tmp/zoned.blk').equals(fs.readFileSync('/tmp/zoned.back')));
    // Reset of every zone (ZONE_RESET_ALL): all sequential zones empty.
    sh('dd', 'if=/dev/zero', `of=${dev}`, 'bs=64k', 'count=1', `seek=${6 * 64}`, 'oflag=direct', 'status=none');
    sh('blkzone', 'reset', dev);
    assert.ok(report(dev).slice(2).every((z, i) => z.cond === 'em' && z.wp === (i + 2) * ZONE_SECTORS));
  } finally {
    delDevice(dev);
  }
  assertClean();
});

for (const [name, args] of [['classic', []], ['batch', ['--batch']]] as const) {
  test(`fio --zonemode=zbd writes and verifies (${name}, two queues, open-zone limit)`, () => {
    const dev = addDevice('zoned', '--size', '64M', '--zone-size', '1M', '--conventional', '4', '--max-open', '8', '--queues', '2', ...args);
    try {
      fioVerify(dev, { iodepth: 8, size: '8m', bs: '4k-64k', extra: ['--zonemode=zbd', '--offset=3m'] });
      assert.ok(report(dev).some((z) => z.cond === 'fu' || z.cond === 'oi'), 'fio wrote sequential zones');
    } finally {
      delDevice(dev);
    }
    assertClean();
  });
}

const NO_BTRFS = run('which', ['mkfs.btrfs']).code !== 0 && 'mkfs.btrfs is not installed (btrfs-progs)';
for (const [name, args, inTest] of [['batch', ['--batch'], true], ['classic', [], false]] as const) {
  test(`ZONE_APPEND: btrfs in zoned mode writes files through appends and reads them back intact (${name})`,
    { skip: NO_BTRFS || (!inTest && FULL_ONLY) }, () => {
      const dev = addDevice('zoned', '--size', '512M', '--zone-size', '4M', '--queues', '2', ...args);
      const mnt = '/mnt/zoned';
      fs.mkdirSync(mnt, { recursive: true });
      try {
        sh('mkfs.btrfs', '-q', '-f', '-O', 'zoned', '-d', 'single', '-m', 'single', dev);
        sh('mount', dev, mnt);
        try {
          sh('dd', 'if=/dev/urandom', `of=${mnt}/a`, 'bs=1M', 'count=12', 'status=none');
          sh('cp', `${mnt}/a`, `${mnt}/b`, '--reflink=never');
          sh('sync');
        } finally {
          sh('umount', mnt);
        }
        sh('mount', dev, mnt); // read back from the device, not the page cache
        try {
          assert.equal(sh('cmp', `${mnt}/a`, `${mnt}/b`), '');
          const scrub = run('btrfs', ['scrub', 'start', '-B', mnt]);
          assert.equal(scrub.code, 0, `scrub: ${scrub.stdout}${scrub.stderr}`);
          assert.match(scrub.stdout, /Error summary:\s+no errors found/, scrub.stdout);
        } finally {
          sh('umount', mnt);
        }
        const written = report(dev).filter((z) => z.type === 'SEQ_WRITE_REQUIRED').reduce((n, z) => n + (z.wp - z.start) * 512, 0);
        assert.ok(written >= 24 * 2 ** 20, `the 24 MiB of file data went into zones (${written} bytes written)`);
        // The data came as ZONE_APPENDs (counted as `other` requests), not as WRITEs, which carried only metadata.
        const totals = (JSON.parse(cli('stats', String(idOf(dev)), '--json', '-i', '1').stdout) as { totals: Record<string, number> }).totals;
        assert.ok(totals.other! >= 24 && totals.writeBytes! < 24 * 2 ** 20, `appends: ${JSON.stringify(totals)}`);
      } finally {
        delDevice(dev);
      }
      assertClean();
    });
}

test('modes and kernels that cannot serve a zoned device are refused in one line, nothing created', () => {
  const zoned = ['add', 'zoned', '--size', '16M', '--zone-size', '1M'];
  // (A kernel without UBLK_F_ZONED: test/host/zoned-target.test.ts, checkKernelSupports.)
  for (const [env, args, message] of [
    [{}, ['--copy', 'kernel'], /zoned devices with user or zero copy only \(use --copy user\)/],
    [{ UBLK_TS_FAULT_NO_ZONED: '1' }, [], /without CONFIG_BLK_DEV_ZONED/],
  ] as const) {
    const r = cliWith(env, ...zoned, ...args);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr.trim(), message);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
  const features = JSON.parse(cli('features', '--json').stdout) as string[];
  assert.ok(features.includes('ZONED'), 'this kernel has zoned block devices');
  const without = JSON.parse(cliWith({ UBLK_TS_FAULT_NO_ZONED: '1' }, 'features', '--json').stdout) as string[];
  assert.deepEqual(without, features.filter((f) => f !== 'ZONED'), 'no ZONED where the kernel cannot have zoned devices');
  assertClean();
});
