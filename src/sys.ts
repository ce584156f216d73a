// Linux constants that Node does not export (x86_64 values).

export const PAGE_SIZE = 4096;
export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MAP_POPULATE = 0x8000;
export const MADV_DONTNEED = 4;
export const MADV_NOHUGEPAGE = 15;

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

/** preadv2/pwritev2 (and io_uring rw_flags): this write is durable when it completes. */
export const RWF_DSYNC = 0x2;

export const MFD_CLOEXEC = 0x0001;
export const EFD_CLOEXEC = 0x80000;
export const EFD_NONBLOCK = 0x800;

// errno values live in one place, errno.ts (the package exports them for targets).
export { EACCES, EAGAIN, EBUSY, ECANCELED, EINTR, EINVAL, EIO, ENOBUFS, ENODEV, ENOENT, ENOMEM, ENOTTY, EOPNOTSUPP } from './errno.js';

export const roundUp = (n: number, to: number): number => Math.ceil(n / to) * to;
