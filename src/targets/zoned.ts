// The zoned target: a zoned RAM disk (UBLK_F_ZONED). Its data lives in a
// memfd, as the memory target's does; its zones (zone-model.ts) live in a
// SharedArrayBuffer that every serving thread shares. A write must land at
// its zone's write pointer, ZONE_APPEND puts data there and reports where,
// REPORT_ZONES answers from the model, and a zone reset gives the zone's
// memory back (a hole reads as zeros).
//
//   ublk-ts add zoned --size 256M --zone-size 4M [--conventional N] [--max-open N] [--max-active N]
//
// The kernel serves zoned devices with user copy (the default here) or zero
// copy; this target moves data in JavaScript, so zero copy is refused.
import fs from 'node:fs';
import { native } from '../native.js';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, MFD_CLOEXEC } from '../sys.js';
import { formatSize, type OptionSpec } from '../options/spec.js';
import { defineTarget, sizeOption, TargetOptionError, type TargetOptions } from '../ublk/target.js';
import {
  UBLK_IO_OP_ZONE_CLOSE, UBLK_IO_OP_ZONE_FINISH, UBLK_IO_OP_ZONE_OPEN, UBLK_IO_OP_ZONE_RESET, UBLK_IO_OP_ZONE_RESET_ALL,
} from '../ublk/abi/uapi.js';
import { EIO, EOPNOTSUPP } from '../errno.js';
import type { UblkRequest } from '../ublk/worker/request.js';
import { ZoneModel, type ZoneGeometry } from './zone-model.js';
import { readData, writeData } from './sync-io.js';

interface Options extends TargetOptions { size: number; zoneSize: number; conventional: number; maxOpen: number; maxActive: number }
interface Shared { fd: number; sab: SharedArrayBuffer; geometry: ZoneGeometry }

/** Most zones a device may have: the model keeps 9 bytes per zone in memory every thread maps. */
export const MAX_ZONES = 1 << 20;

export const ZONED_OPTIONS: readonly OptionSpec[] = [
  sizeOption(true),
  // chunk_sectors is a u32 count of sectors: a power-of-2 zone is at most 2^31 sectors, 1 TiB.
  { key: 'zoneSize', short: 'z', type: 'size', arg: 'SIZE', required: true, min: 4096, max: 2 ** 40, powerOf2: true,
    help: 'bytes per zone: a power of 2 that divides --size' },
  { key: 'conventional', type: 'int', arg: 'N', default: 0, min: 0, max: MAX_ZONES,
    help: 'the first N zones are conventional (written anywhere); the others are sequential-write-required' },
  { key: 'maxOpen', type: 'int', arg: 'N', default: 0, min: 0, max: MAX_ZONES, help: 'most zones open at once (0: no limit)' },
  { key: 'maxActive', type: 'int', arg: 'N', default: 0, min: 0, max: MAX_ZONES,
    help: 'most zones open or closed at once (0: no limit); at least --max-open' },
];

/** The device's zones from checked options; TargetOptionError names what does not fit. */
export function zoneGeometry(o: Options): ZoneGeometry {
  const { size, zoneSize, conventional, maxOpen, maxActive } = o;
  if (size % zoneSize) {
    throw new TargetOptionError(`--size ${formatSize(size)} is not a whole number of ${formatSize(zoneSize)} zones (--zone-size): ` +
      `use a multiple of ${zoneSize} bytes`);
  }
  const zones = size / zoneSize;
  if (zones > MAX_ZONES) throw new TargetOptionError(`--size / --zone-size gives ${zones} zones, more than ${MAX_ZONES}: use larger zones`);
  if (conventional >= zones) {
    throw new TargetOptionError(`--conventional ${conventional} leaves no sequential zone (the device has ${zones}): use at most ${zones - 1}`);
  }
  const sequential = zones - conventional;
  for (const [flag, n] of [['--max-open', maxOpen], ['--max-active', maxActive]] as const) {
    if (n > sequential) throw new TargetOptionError(`${flag} ${n} is more than the ${sequential} sequential zones: use at most ${sequential} (or 0, no limit)`);
  }
  if (maxActive && maxOpen > maxActive) {
    throw new TargetOptionError(`--max-open ${maxOpen} is more than --max-active ${maxActive}: an open zone is active, so use at most ${maxActive}`);
  }
  return { zoneSectors: zoneSize / 512, zones, conventional, maxOpen, maxActive };
}

/**
 * A WRITE or ZONE_APPEND's result: the whole length, or -errno. The write
 * pointer has already moved past the whole request, so a short write (a full
 * memfd) cannot be finished later: the kernel would send the rest at a sector
 * the pointer has left, and an append's rest would land elsewhere while the
 * append reports one place. So anything short fails (the zone then reads
 * zeros up to the pointer, where nothing was acknowledged).
 */
function whole(n: number, req: UblkRequest): number {
  return n === req.length || n < 0 ? n : -EIO;
}

function punch(fd: number, offset: number, length: number): number {
  return length > 0 ? native.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) : 0;
}

export default defineTarget<Options, Shared>({
  name: 'zoned',
  options: ZONED_OPTIONS,
  setup(options) {
    const geometry = zoneGeometry(options);
    const model = ZoneModel.create(geometry);
    const fd = native.memfdCreate('ublk-ts-zoned', MFD_CLOEXEC);
    fs.ftruncateSync(fd, options.size);
    return {
      size: options.size,
      zoned: { zoneSize: options.zoneSize, maxOpen: options.maxOpen, maxActive: options.maxActive },
      shared: { fd, sab: model.sab, geometry },
      cleanup: () => void native.close(fd),
    };
  },
  open(ctx) {
    const { fd, sab, geometry } = ctx.shared;
    const zones = ZoneModel.attach(geometry, sab);
    const zoneBytes = geometry.zoneSectors * 512;
    return {
      read: (req) => readData(fd, req),
      write(req) {
        const r = zones.write(req.sector, req.sectors);
        return r < 0 ? r : whole(writeData(fd, req), req);
      },
      zoneAppend(req) {
        const at = zones.append(req.sector, req.sectors);
        if (at < 0) return at;
        req.zoneAppendLba = at;
        return whole(writeData(fd, req, at), req);
      },
      zoneManage(req) {
        switch (req.op) {
          case UBLK_IO_OP_ZONE_OPEN: return zones.open(req.sector);
          case UBLK_IO_OP_ZONE_CLOSE: return zones.close(req.sector);
          case UBLK_IO_OP_ZONE_FINISH: return zones.finish(req.sector);
          // The zone's data is dropped under the model's lock, before its write pointer goes back (zone-model.ts).
          case UBLK_IO_OP_ZONE_RESET: return zones.reset(req.sector, (z) => punch(fd, z * zoneBytes, zoneBytes));
          case UBLK_IO_OP_ZONE_RESET_ALL: return zones.resetAll((first, count) => punch(fd, first * zoneBytes, count * zoneBytes));
          default: return -EOPNOTSUPP;
        }
      },
      reportZones(req) {
        zones.report(req.sector, req.nrZones, req.buffer);
        return req.length;
      },
    };
  },
});
