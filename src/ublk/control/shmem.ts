// UBLK_F_SHMEM_ZC (Linux 7.1): shared-memory zero copy. The application doing
// IO and the server map the same file (a memfd, a hugetlbfs or tmpfs file);
// the server registers its mapping with REG_BUF, the driver pins its pages,
// and a request whose pages all lie in them reaches the server as
// UBLK_IO_F_SHMEM_ZC with (buffer index, offset) in its descriptor instead of
// a copy (worker/shmem-views.ts maps that back to a view). The region is
// registered after ADD_DEV and before START_DEV, and unregistered on stop.
import fs from 'node:fs';
import { native } from '../../native.js';
import { MAP_POPULATE, MAP_SHARED, PAGE_SIZE, PROT_READ, PROT_WRITE } from '../../sys.js';
import { EFAULT } from '../../errno.js';
import { build } from '../abi/codec.js';
import { UBLK_SHMEM_BUF_READ_ONLY } from '../abi/uapi.js';
import { ModeError } from '../mode.js';
import { UblkControlError, type UblkControl } from './control.js';

/** Largest region REG_BUF takes (UBLK_SHMEM_BUF_SIZE_MAX in ublk_drv.c). */
export const SHMEM_MAX_BYTES = 2 ** 32;

/** What a serving thread needs to map a registered region itself (structured-cloneable). */
export interface ShmemRegion {
  /** The server's fd of the file (open for the device's life). */
  fd: number;
  size: number;
  /** The kernel's buffer index (REG_BUF's result), as descriptors carry it. */
  index: number;
  /** Registered with UBLK_SHMEM_BUF_READ_ONLY: only WRITE requests (data the server reads) use it. */
  readOnly: boolean;
}

/** struct ublk_shmem_buf_reg, REG_BUF's argument. */
export function shmemBufReg(addr: number, len: number, readOnly: boolean): Uint8Array {
  return build('ublk_shmem_buf_reg', { addr, len, flags: readOnly ? UBLK_SHMEM_BUF_READ_ONLY : 0 });
}

/** The file's size if it can be a region (exists, non-empty, whole pages, at most 4 GiB); else one line saying why not. */
export function checkShmemFile(file: string): number {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ModeError(`--shmem ${file}: ${code === 'ENOENT' ? 'no such file' : code} (give the file the application maps, ` +
      'on hugetlbfs or tmpfs, or /proc/PID/fd/N of its memfd)');
  }
  const size = st.size;
  if (!st.isFile()) throw new ModeError(`--shmem ${file}: not a regular file (a hugetlbfs or tmpfs file, or a memfd)`);
  if (size === 0 || size % PAGE_SIZE || size > SHMEM_MAX_BYTES) {
    throw new ModeError(`--shmem ${file}: its size (${size} bytes) must be a non-zero multiple of ${PAGE_SIZE} bytes, ` +
      `at most 4 GiB (fallocate or truncate it first)`);
  }
  return size;
}

/** A file mapped by this process and registered with the driver for one device. */
export class SharedRegion {
  private constructor(readonly file: string, readonly region: ShmemRegion, private mapping: ArrayBuffer | null) {}

  /**
   * Maps `file` (MAP_SHARED, populated) and registers the mapping with REG_BUF
   * for device `devId`. The kernel pins the pages until UNREG_BUF or the
   * device's deletion; a write-pin needs write access, a read-only one does not.
   */
  static async register(ctrl: UblkControl, devId: number, file: string, readOnly: boolean): Promise<SharedRegion> {
    const size = checkShmemFile(file);
    let fd: number;
    try {
      fd = fs.openSync(file, readOnly ? 'r' : 'r+');
    } catch (e) {
      throw new ModeError(`--shmem ${file}: cannot open it ${readOnly ? 'for reading' : 'read-write'} ` +
        `(${(e as NodeJS.ErrnoException).code})${readOnly ? '' : '; --shmem-read-only only needs reading'}`);
    }
    let mapping: ArrayBuffer | null = null;
    try {
      try {
        mapping = native.mmap(size, PROT_READ | (readOnly ? 0 : PROT_WRITE), MAP_SHARED | MAP_POPULATE, fd, 0);
      } catch (e) {
        throw new ModeError(`--shmem ${file}: cannot map it shared (${(e as Error).message}); on hugetlbfs, are there enough huge pages?`);
      }
      let index: number;
      try {
        index = await ctrl.regBuf(devId, shmemBufReg(native.addressOf(mapping), size, readOnly));
      } catch (e) {
        if (e instanceof UblkControlError && e.errno === -EFAULT) {
          throw new ModeError(`--shmem ${file}: the kernel cannot pin its pages (EFAULT): files on disk filesystems cannot be ` +
            'pinned for long; use a hugetlbfs or tmpfs file, or a memfd');
        }
        throw e;
      }
      return new SharedRegion(file, { fd, size, index, readOnly }, mapping);
    } catch (e) {
      if (mapping) native.munmap(mapping);
      fs.closeSync(fd);
      throw e;
    }
  }

  /** UNREG_BUF (without `ctrl`, DEL_DEV drops it), then the mapping and the fd. Idempotent. */
  async unregister(ctrl: UblkControl | null, devId: number): Promise<void> {
    if (!this.mapping) return;
    const mapping = this.mapping;
    this.mapping = null;
    try {
      if (ctrl) await ctrl.unregBuf(devId, this.region.index);
    } finally {
      native.munmap(mapping);
      fs.closeSync(this.region.fd);
    }
  }
}
