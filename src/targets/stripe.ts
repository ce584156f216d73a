// The stripe target (RAID 0): the device's data spread over several files or
// block devices in chunks, chunk n on file n mod N, at (n div N) chunks into
// it. A request is split at chunk boundaries and its pieces go to their files
// at once, each through the serving thread's io_uring as the loop target
// does it (kernel and user copy: straight into the tag buffer, which the
// dispatcher fills and empties in user copy; zero copy: READ_FIXED/WRITE_FIXED
// on the request's own pages at the piece's offset).
// The request completes once every piece has. FLUSH is fdatasync on every
// file; FUA writes use RWF_DSYNC. A short piece makes the request start over
// (3 times at most), then fail with EIO.
import fs from 'node:fs';
import { EIO } from '../sys.js';
import type { Ring } from '../uring/ring.js';
import { prepFsync } from '../uring/prep.js';
import { IORING_FSYNC_DATASYNC } from '../uring/constants.js';
import { defineTarget, PENDING, sizeOption, TargetOptionError, type IoResult, type Target, type TargetIo, type TargetOptions } from '../ublk/target.js';
import type { UblkRequest } from '../ublk/worker/request.js';
import { backingStore, type BackingStore } from './loop-backing.js';
import { queueFileRw } from './file-rw.js';

interface Shared { fds: number[]; chunkShift: number }
interface Options extends TargetOptions { files: string; chunkSize: number; buffered: boolean }

// An SQE's `sub`: a piece's length (a multiple of 512), or SUB_SYNC.
const SUB_SYNC = 1;
const MAX_RETRIES = 3;
const MAX_FILES = 16;

/** Progress of one request. */
class Io {
  cqes = 0;
  /** First failure of this attempt: -errno, SHORT, or 0. */
  error = 0;
  retries = 0;
}
const SHORT = 1;

class StripeQueue implements Target {
  private readonly ring: Ring;
  private readonly ios: Io[][] = [];
  private readonly chunk: number;

  constructor(private readonly io: TargetIo, private readonly fds: number[], chunkShift: number) {
    this.ring = io.ring;
    this.chunk = 2 ** chunkShift;
  }

  read(req: UblkRequest): IoResult { return this.rw(req); }
  write(req: UblkRequest): IoResult { return this.rw(req); }

  flush(req: UblkRequest): IoResult {
    const io = this.state(req);
    io.error = 0;
    io.cqes = this.fds.length;
    for (const fd of this.fds) prepFsync(this.ring, this.io.sqe(req, SUB_SYNC), fd, IORING_FSYNC_DATASYNC);
    return PENDING;
  }

  onCqe(req: UblkRequest, res: number, _flags: number, sub: number): void {
    const io = this.state(req);
    // Each piece's CQE carries its length in `sub` (SUB_SYNC: 0 expected).
    const want = sub === SUB_SYNC ? 0 : sub;
    if (res !== want && io.error === 0) io.error = res < 0 ? res : SHORT;
    if (--io.cqes > 0) return;
    if (sub === SUB_SYNC) this.io.complete(req, io.error);
    else if (io.error === 0) this.io.complete(req, req.length);
    else if (io.error === SHORT && ++io.retries <= MAX_RETRIES) this.start(req);
    else this.io.complete(req, io.error === SHORT ? -EIO : io.error);
  }

  private state(req: UblkRequest): Io {
    const q = (this.ios[req.queue] ??= []);
    return (q[req.tag] ??= new Io());
  }

  private rw(req: UblkRequest): IoResult {
    this.state(req).retries = 0;
    this.start(req);
    return PENDING;
  }

  private start(req: UblkRequest): void {
    const io = this.state(req);
    io.error = 0;
    io.cqes = 0;
    const n = this.fds.length, chunk = this.chunk;
    let done = 0;
    while (done < req.length) {
      const pos = req.offset + done;
      const chunkNo = Math.floor(pos / chunk), inChunk = pos - chunkNo * chunk;
      const len = Math.min(chunk - inChunk, req.length - done);
      const fd = this.fds[chunkNo % n]!;
      const fileOff = Math.floor(chunkNo / n) * chunk + inChunk;
      queueFileRw(this.io, req, len, fd, fileOff, done, len, 0); // `sub`: the piece's length, its CQEs' expected result
      io.cqes++;
      done += len;
    }
  }
}

function closeAll(stores: BackingStore[]): void {
  for (const s of stores) fs.closeSync(s.fd);
}

export default defineTarget<Options, Shared>({
  name: 'stripe',
  recoverable: true,
  options: [
    { key: 'files', short: 'f', type: 'string', arg: 'PATH,PATH...', required: true, help: 'the backing files or block devices, comma-separated (2 or more)' },
    { key: 'chunkSize', type: 'size', arg: 'SIZE', default: 65536, min: 4096, max: 512 * 1024, powerOf2: true, help: 'bytes per chunk: a power of 2' },
    { key: 'buffered', type: 'bool', default: false, help: 'use the page cache (default: O_DIRECT)' },
    sizeOption(false, 'device size (default: the smallest file\'s whole chunks, times the number of files)'),
  ],
  setup(options) {
    const paths = options.files.split(',').filter((p) => p !== '');
    if (paths.length < 1 || paths.length > MAX_FILES) throw new TargetOptionError(`--files takes 1 to ${MAX_FILES} paths, got ${paths.length}`);
    const chunk = options.chunkSize;
    const stores: BackingStore[] = [];
    try {
      for (const p of paths) stores.push(backingStore(p, options.buffered));
    } catch (e) {
      closeAll(stores);
      throw e;
    }
    const perFile = Math.min(...stores.map((s) => s.size - (s.size % chunk)));
    let size = perFile * stores.length;
    if (perFile === 0) {
      closeAll(stores);
      throw new TargetOptionError(`the smallest file holds less than one ${chunk}-byte chunk`);
    }
    if (options.size !== undefined) {
      if (options.size > size) {
        closeAll(stores);
        throw new TargetOptionError(`the files hold ${size} bytes in whole chunks, less than the device size ${options.size}`);
      }
      size = options.size;
    }
    const logicalBlockSize = Math.max(...stores.map((s) => s.logicalBlockSize));
    if (size % logicalBlockSize) {
      closeAll(stores);
      throw new TargetOptionError(`device size ${size} is not a multiple of the logical block size ${logicalBlockSize}`);
    }
    return {
      size,
      caps: { flush: true, fua: true },
      data: 'ring',
      logicalBlockSize,
      shared: { fds: stores.map((s) => s.fd), chunkShift: Math.log2(chunk) },
      cleanup: () => closeAll(stores),
    };
  },
  open(ctx) {
    return new StripeQueue(ctx.io, ctx.shared.fds, ctx.shared.chunkShift);
  },
});
