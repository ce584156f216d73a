// errno values, as Linux defines them: for target results (a target returns
// -EIO, -ENOSPC, ...; exported as `errno` from the package) and for ublk-ts itself.
import os from 'node:os';

const E = os.constants.errno;
export const EPERM = E.EPERM;
export const ENOENT = E.ENOENT;
export const EINTR = E.EINTR;
export const EIO = E.EIO;
export const ENXIO = E.ENXIO;
export const EAGAIN = E.EAGAIN;
export const ENOMEM = E.ENOMEM;
export const EACCES = E.EACCES;
export const EFAULT = E.EFAULT;
export const EBUSY = E.EBUSY;
export const ENODEV = E.ENODEV;
export const EINVAL = E.EINVAL;
export const ENOTTY = E.ENOTTY;
export const EFBIG = E.EFBIG;
export const ENOSPC = E.ENOSPC;
export const EROFS = E.EROFS;
export const ENODATA = E.ENODATA;
export const ENOBUFS = E.ENOBUFS;
export const ETIMEDOUT = E.ETIMEDOUT;
export const EOPNOTSUPP = E.EOPNOTSUPP;
export const ECONNRESET = E.ECONNRESET;
export const ENOTCONN = E.ENOTCONN;
export const ECANCELED = E.ECANCELED;
