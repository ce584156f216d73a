// UBLK_F_INTEGRITY: the options and what the driver would refuse of them,
// the UBLK_PARAM_TYPE_INTEGRITY parameters they become, the serving mode's
// refusals, and the copy that moves a request's metadata.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OptionError } from '../../src/options/spec.js';
import { checkDeviceOptions } from '../../src/ublk/control/device-options.js';
import { decodeParams, encodeParams } from '../../src/ublk/abi/params.js';
import { describeIntegrity, integrityParams, type IntegrityChoice } from '../../src/ublk/integrity.js';
import { checkKernelSupports, ModeError, servingMode } from '../../src/ublk/mode.js';
import * as fs from 'node:fs';
import { UblkRequest } from '../../src/ublk/worker/request.js';
import { copyIntegrity, RequestIntegrity } from '../../src/ublk/worker/integrity.js';
import {
  LBMD_PI_CAP_INTEGRITY, LBMD_PI_CAP_REFTAG, LBMD_PI_CSUM_CRC16_T10DIF, LBMD_PI_CSUM_CRC64_NVME, LBMD_PI_CSUM_IP,
  UBLK_F_INTEGRITY, UBLK_F_USER_COPY, UBLK_PARAM_TYPE_BASIC, UBLK_PARAM_TYPE_INTEGRITY, UBLKSRV_IO_INTEGRITY_FLAG,
} from '../../src/ublk/abi/uapi.js';

const check = (given: Record<string, unknown>) => checkDeviceOptions({ copy: 'user', ...given }, 'cli');

test('options: the kernel selftests\' combinations pass and become UBLK_PARAM_TYPE_INTEGRITY as kublk sends it', () => {
  const cases: Array<[Record<string, unknown>, object]> = [
    [{ metadataSize: '8' }, { flags: 0, metadata_size: 8, pi_offset: 0, csum_type: 0, tag_size: 0 }],
    [{ integrityCapable: true, metadataSize: '64', piOffset: '56', csumType: 'ip' },
      { flags: LBMD_PI_CAP_INTEGRITY, metadata_size: 64, pi_offset: 56, csum_type: LBMD_PI_CSUM_IP, tag_size: 0 }],
    [{ integrityReftag: true, metadataSize: '8', csumType: 't10dif' },
      { flags: LBMD_PI_CAP_REFTAG, metadata_size: 8, pi_offset: 0, csum_type: LBMD_PI_CSUM_CRC16_T10DIF, tag_size: 0 }],
    [{ metadataSize: '16', csumType: 'nvme', tagSize: '8' },
      { flags: 0, metadata_size: 16, pi_offset: 0, csum_type: LBMD_PI_CSUM_CRC64_NVME, tag_size: 8 }],
    [{ integrityCapable: true, integrityReftag: true, metadataSize: '64', piOffset: '48', csumType: 'nvme' },
      { flags: LBMD_PI_CAP_INTEGRITY | LBMD_PI_CAP_REFTAG, metadata_size: 64, pi_offset: 48, csum_type: LBMD_PI_CSUM_CRC64_NVME, tag_size: 0 }],
  ];
  for (const [given, want] of cases) {
    const o = check(given);
    assert.deepEqual(integrityParams(o as IntegrityChoice, 9), { ...want, interval_exp: 9 }, JSON.stringify(given));
  }
  assert.equal(integrityParams(check({}) as IntegrityChoice, 9), undefined, 'no metadata, no parameters');
});

test('options: what the driver would refuse with a bare EINVAL is one line naming the fix', () => {
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ piOffset: '8' }, /^--pi-offset only applies with --metadata-size/],
    [{ csumType: 'ip' }, /^--csum-type only applies with --metadata-size/],
    [{ integrityCapable: true }, /^--integrity-capable only applies with --metadata-size/],
    [{ tagSize: '2' }, /^--tag-size only applies with --metadata-size/],
    [{ metadataSize: '8', piOffset: '1', csumType: 't10dif' }, /--pi-offset 1 plus the 8-byte t10dif tuple does not fit in --metadata-size 8 \(at most 0/],
    [{ metadataSize: '8', csumType: 'nvme' }, /16-byte nvme tuple does not fit/],
    [{ metadataSize: '8', integrityReftag: true }, /^--integrity-reftag needs protection information: add --csum-type/],
    [{ metadataSize: '8', tagSize: '9' }, /^--tag-size 9 is larger than --metadata-size 8$/],
    [{ metadataSize: '0' }, /^--metadata-size must be from 1 to 255/],
    [{ metadataSize: '256' }, /^--metadata-size must be from 1 to 255/],
    [{ metadataSize: '8', csumType: 'crc32' }, /^--csum-type must be one of none, ip, t10dif, nvme/],
  ];
  for (const [given, re] of bad) assert.throws(() => check(given), (e: Error) => e instanceof OptionError && re.test(e.message), JSON.stringify(given));
  assert.throws(() => checkDeviceOptions({ piOffset: 4 }, 'library'), /^OptionError: piOffset only applies with metadataSize/);
  for (const copy of ['kernel', 'zero']) {
    assert.throws(() => checkDeviceOptions({ metadataSize: 8, copy }, 'library'),
      (e: Error) => e instanceof ModeError && /^--metadata-size needs --copy user/.test(e.message));
  }
});

test('params: UBLK_PARAM_TYPE_INTEGRITY travels in SET_PARAMS and reads back', () => {
  const integrity = integrityParams(check({ metadataSize: 64, piOffset: 56, csumType: 't10dif', integrityReftag: true }) as IntegrityChoice, 12)!;
  const buf = encodeParams({ basic: { logical_bs_shift: 12, dev_sectors: 8 }, integrity });
  const p = decodeParams(buf);
  assert.equal(p.types, UBLK_PARAM_TYPE_BASIC | UBLK_PARAM_TYPE_INTEGRITY);
  assert.deepEqual(describeIntegrity(p.integrity), {
    metadataSize: 64, piOffset: 56, csumType: 't10dif', tagSize: 0, integrityCapable: false, integrityReftag: true, intervalBytes: 4096,
  });
  assert.equal(decodeParams(encodeParams({ basic: {} })).types & UBLK_PARAM_TYPE_INTEGRITY, 0);
});

test('mode: UBLK_F_INTEGRITY with user copy, for targets that handle metadata; refused where the kernel lacks it', () => {
  const choice = { batch: false, copy: 'user' as const, autoBufReg: true, metadataSize: 8 };
  const m = servingMode(choice, { name: 'memory', integrity: true });
  assert.equal(m.flags, UBLK_F_USER_COPY | UBLK_F_INTEGRITY);
  assert.equal(m.metadataSize, 8);
  assert.equal(servingMode({ ...choice, metadataSize: undefined }, { name: 'memory', integrity: true }).metadataSize, 0);
  assert.throws(() => servingMode(choice, { name: 'stripe', data: 'ring' }), /^ModeError: the stripe target does not keep metadata/);
  assert.throws(() => servingMode({ ...choice, copy: 'kernel' }, { name: 'memory', integrity: true }), /needs --copy user/);
  assert.throws(() => checkKernelSupports(m, UBLK_F_USER_COPY), /lacks INTEGRITY \(needed for --metadata-size, Linux 7\.0 or later\)/);
  checkKernelSupports(m, UBLK_F_USER_COPY | UBLK_F_INTEGRITY);
});

test('data path: a request\'s metadata size and place, and its copy at UBLKSRV_IO_INTEGRITY_FLAG of its user-copy position', () => {
  const req = new UblkRequest(3, 5, null, 0, 0);
  req.sector = 16;
  req.sectors = 24; // 12 KiB at 8 KiB
  const ri = new RequestIntegrity(64, 4096);
  ri.load(req);
  assert.equal(req.integrity, 3 * 64);
  assert.equal(req.integrityOffset, 2 * 64);
  assert.ok(req.integrityBuffer.byteLength >= 192 && req.integrityAddress > 0);
  // tmpfs takes positions past 2^62; the file stands in for /dev/ublkcN.
  const file = `/dev/shm/integrity-test-${process.pid}`;
  const fd = fs.openSync(file, 'w+');
  try {
    req.integrityBuffer.set(Array.from({ length: 192 }, (_, i) => i));
    assert.equal(copyIntegrity(fd, req, false, 192), 0);
    const got = Buffer.alloc(192);
    assert.equal(fs.readSync(fd, got, 0, 192, BigInt(req.userCopyPos) | UBLKSRV_IO_INTEGRITY_FLAG), 192, 'at the flagged position');
    assert.deepEqual([...got], [...req.integrityBuffer.subarray(0, 192)]);
    req.integrityBuffer.fill(0);
    assert.equal(copyIntegrity(fd, req, true, 192), 0);
    assert.equal(req.integrityBuffer[191], 191, 'read back into the tag\'s metadata buffer');
    const later = new UblkRequest(3, 6, null, 0, 0);
    later.sectors = 24;
    ri.load(later);
    assert.equal(copyIntegrity(fd, later, true, 192), -5, 'a short copy (past the end of the file) is EIO');
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
});
