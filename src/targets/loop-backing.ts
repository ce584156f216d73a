// Opening the loop target's backing file or block device, with the errors a
// user can act on, and finding its size and logical block size.
import fs from 'node:fs';
import { TargetOptionError } from '../ublk/target.js';

export interface BackingStore {
  fd: number;
  /** Bytes. */
  size: number;
  /** 512 or 4096: O_DIRECT needs requests aligned to it. */
  logicalBlockSize: number;
  blockDevice: boolean;
}

const O_DIRECT = fs.constants.O_DIRECT ?? 0x4000;

/** /sys/dev/block/MAJ:MIN for a device number (partitions have their disk's queue one level up). */
function sysBlock(dev: number): string {
  return `/sys/dev/block/${Math.floor(dev / 256) & 0xfff}:${(dev & 0xff) | ((dev >>> 12) & 0xfff00)}`;
}

function readSysNumber(dir: string, names: string[]): number | null {
  for (const n of names) {
    try {
      return Number(fs.readFileSync(`${dir}/${n}`, 'utf8').trim());
    } catch {
      // try the next place
    }
  }
  return null;
}

function logicalBlockSize(dev: number): number {
  const lbs = readSysNumber(sysBlock(dev), ['queue/logical_block_size', '../queue/logical_block_size']);
  return lbs === 4096 ? 4096 : 512;
}

export function backingStore(file: string, buffered: boolean): BackingStore {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    throw new TargetOptionError(`${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  const blockDevice = st.isBlockDevice();
  if (!blockDevice && !st.isFile()) throw new TargetOptionError(`${file} is neither a regular file nor a block device`);
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDWR | (buffered ? 0 : O_DIRECT));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EINVAL' && !buffered) throw new TargetOptionError(`${file}: its file system does not support O_DIRECT (use --buffered)`);
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') throw new TargetOptionError(`${file}: cannot open it for reading and writing (${code})`);
    throw new TargetOptionError(`${file}: ${(e as Error).message}`);
  }
  if (!blockDevice) return { fd, size: st.size, logicalBlockSize: buffered ? 512 : logicalBlockSize(st.dev), blockDevice };
  const sectors = readSysNumber(sysBlock(st.rdev), ['size']);
  if (sectors === null) {
    fs.closeSync(fd);
    throw new TargetOptionError(`${file}: cannot find its size in /sys/dev/block`);
  }
  return { fd, size: sectors * 512, logicalBlockSize: logicalBlockSize(st.rdev), blockDevice };
}
