// The loop target: a block device backed by a file or another block device.
//
// All backing IO goes through the worker's own io_uring, next to the ublk
// commands, so a request costs no extra thread and no JavaScript copy:
//
//   copy mode     READ                                 WRITE
//   kernel, user  READ file → tag buffer               WRITE tag buffer → file
//   zero          READ_FIXED file → request pages      WRITE_FIXED request pages → file
//
// (in user copy the dispatcher copies the tag buffer to or from /dev/ublkcN).
// In classic mode the request's commit is linked to it where nothing comes
// after (not a user-copy READ), so the kernel completes the request as soon
// as the data has moved (no extra trip through JavaScript and
// io_uring_enter); only a failure comes back to us.
//
// With metadata (UBLK_F_INTEGRITY, user copy) a request's metadata moves the
// same way, to or from --metadata-file (one block's metadata after the
// other), in a second operation; the commit is then not linked.
//
// FLUSH is fdatasync (of both files), FUA writes use RWF_DSYNC. DISCARD punches a hole (where
// the backing store cannot, it is dropped: discard is only a hint). WRITE_ZEROES
// zeroes the range with fallocate (a hole, or ZERO_RANGE with NOUNMAP and on
// block devices), and writes zeros where the backing store lacks that.
import fs from 'node:fs';
import { native } from '../native.js';
import {
  ECANCELED, EIO, EOPNOTSUPP, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE,
} from '../sys.js';
import type { Ring } from '../uring/ring.js';
import {
  prepFallocate, prepFsync, prepWrite,
} from '../uring/prep.js';
import { IORING_FSYNC_DATASYNC } from '../uring/constants.js';
import { defineTarget, PENDING, sizeOption, TargetOptionError, type IoResult, type Target, type TargetIo, type TargetOptions } from '../ublk/target.js';
import type { UblkRequest } from '../ublk/worker/request.js';
import { UBLK_IO_OP_WRITE_ZEROES } from '../ublk/abi/uapi.js';
import { backingStore, type BackingStore } from './loop-backing.js';
import { queueFileRw, queueIntegrityRw } from './file-rw.js';
import { fillMetadata, openMetadataFile } from './loop-metadata.js';

interface Shared { fd: number; blockDevice: boolean; metaFd: number }

// What an SQE of ours was, in its user_data's upper half.
const SUB_RW = 0, SUB_SYNC = 1, SUB_PUNCH = 2, SUB_ZERO_RANGE = 3, SUB_ZEROS = 4, SUB_META = 5;
/** Io.error for a short transfer. */
const SHORT = 1;
/** A short transfer (e.g. a racing truncate) is retried this often before it fails the request. */
const MAX_RETRIES = 3;
/** Bytes of zeros written per operation where the backing store cannot fallocate them. */
const ZERO_CHUNK = 1 << 20;

/** Progress of one request, kept per tag. */
class Io {
  /** CQEs still expected for the current attempt. */
  cqes = 0;
  /** First failure of the current attempt: a negative errno, SHORT, or 0. */
  error = 0;
  retries = 0;
  /** WRITE_ZEROES by writing: bytes done. */
  done = 0;
}

class LoopQueue implements Target {
  private readonly ring: Ring;
  private readonly ios: Io[][] = [];
  /** Cleared once the backing store refused ZERO_RANGE / PUNCH_HOLE. */
  private zeroRange = true;
  private punchHole = true;
  private zeros: ArrayBuffer | null = null;

  constructor(private readonly io: TargetIo, private readonly fd: number, private readonly blockDevice: boolean,
    /** --metadata-file, or -1. */
    private readonly metaFd: number) {
    this.ring = io.ring;
  }

  read(req: UblkRequest): IoResult { return this.rw(req); }
  write(req: UblkRequest): IoResult { return this.rw(req); }

  flush(req: UblkRequest): IoResult {
    const io = this.state(req);
    io.error = 0;
    io.cqes = this.metaFd < 0 ? 1 : 2;
    prepFsync(this.ring, this.io.sqe(req, SUB_SYNC), this.fd, IORING_FSYNC_DATASYNC);
    if (this.metaFd >= 0) prepFsync(this.ring, this.io.sqe(req, SUB_SYNC), this.metaFd, IORING_FSYNC_DATASYNC);
    return PENDING;
  }

  discard(req: UblkRequest): IoResult {
    if (!this.punchHole) return 0;
    this.fallocate(req, SUB_PUNCH);
    return PENDING;
  }

  writeZeroes(req: UblkRequest): IoResult {
    // A hole reads as zeros and frees space; NOUNMAP and block devices (where a
    // punch is only a discard) need ZERO_RANGE; failing both, write zeros.
    if (!req.noUnmap && !this.blockDevice && this.punchHole) this.fallocate(req, SUB_PUNCH);
    else if (this.zeroRange) this.fallocate(req, SUB_ZERO_RANGE);
    else this.startZeros(req);
    return PENDING;
  }

  onCqe(req: UblkRequest, res: number, _flags: number, sub: number): void {
    const io = this.state(req);
    switch (sub) {
      case SUB_RW:
      case SUB_META:
        // Data and metadata each post a CQE. A chain with a linked commit posts
        // only its failure (TargetIo.linkCommit), -ECANCELED included, which
        // gives way to a real error.
        if (res !== (sub === SUB_RW ? req.length : req.integrity) && (io.error === 0 || io.error === -ECANCELED)) {
          io.error = res < 0 ? res : SHORT;
        }
        if (--io.cqes > 0) return;
        if (io.error === 0) this.io.complete(req, req.length);
        else if (io.error === SHORT && ++io.retries <= MAX_RETRIES) this.startRw(req); // the whole transfer again
        else this.io.complete(req, io.error === SHORT ? -EIO : io.error);
        return;
      case SUB_SYNC:
        if (res < 0 && io.error === 0) io.error = res;
        if (--io.cqes === 0) this.io.complete(req, io.error);
        return;
      case SUB_PUNCH:
      case SUB_ZERO_RANGE:
        if (res === -EOPNOTSUPP) this.fallocateUnsupported(req, sub);
        else this.io.complete(req, res);
        return;
      case SUB_ZEROS:
        if (res <= 0) {
          this.io.complete(req, res < 0 ? res : -EIO);
          return;
        }
        io.done += res;
        if (io.done < req.length) this.writeZeros(req, io);
        else this.io.complete(req, 0);
        return;
    }
  }

  private state(req: UblkRequest): Io {
    const q = (this.ios[req.queue] ??= []);
    return (q[req.tag] ??= new Io());
  }

  private rw(req: UblkRequest): IoResult {
    this.state(req).retries = 0;
    return this.startRw(req);
  }

  private startRw(req: UblkRequest): IoResult {
    const io = this.state(req);
    io.error = 0;
    if (req.integrity) {
      io.cqes = 2;
      queueFileRw(this.io, req, SUB_RW, this.fd, req.offset, 0, req.length, 0);
      queueIntegrityRw(this.io, req, SUB_META, this.metaFd, req.integrityOffset);
      return PENDING;
    }
    // One SQE more in the submission: the commit linked after the data's last move.
    const last = queueFileRw(this.io, req, SUB_RW, this.fd, req.offset, 0, req.length, 1);
    // Linked or not, one CQE comes (linked: only if the chain failed).
    this.io.linkCommit(req, last, req.length);
    io.cqes = 1;
    return PENDING;
  }

  private fallocate(req: UblkRequest, sub: number): void {
    const s = this.io.sqe(req, sub);
    const mode = sub === SUB_PUNCH ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE;
    prepFallocate(this.ring, s, this.fd, mode | FALLOC_FL_KEEP_SIZE, req.offset, req.length);
  }

  // The backing store lacks that fallocate mode (e.g. ZERO_RANGE on tmpfs):
  // remember it and do the job another way. A DISCARD is only a hint.
  private fallocateUnsupported(req: UblkRequest, sub: number): void {
    if (sub === SUB_PUNCH) this.punchHole = false;
    else this.zeroRange = false;
    if (req.op === UBLK_IO_OP_WRITE_ZEROES) this.writeZeroes(req);
    else this.io.complete(req, 0);
  }

  private startZeros(req: UblkRequest): void {
    const io = this.state(req);
    io.done = 0;
    this.writeZeros(req, io);
  }

  private writeZeros(req: UblkRequest, io: Io): void {
    this.zeros ??= native.alloc(ZERO_CHUNK); // page-aligned, so O_DIRECT takes it
    const s = this.io.sqe(req, SUB_ZEROS);
    prepWrite(this.ring, s, this.fd, native.addressOf(this.zeros), Math.min(ZERO_CHUNK, req.length - io.done), req.offset + io.done);
  }
}

interface Options extends TargetOptions { file: string; buffered: boolean; metadataFile?: string; initMetadata?: boolean }

export default defineTarget<Options, Shared>({
  name: 'loop',
  recoverable: true,
  options: [
    { key: 'file', short: 'f', type: 'string', arg: 'PATH', required: true, help: 'the backing regular file or block device' },
    { key: 'buffered', type: 'bool', default: false, help: 'use the page cache (default: O_DIRECT)' },
    sizeOption(false, 'device size (default: the file\'s, less a partial last block)'),
    { key: 'metadataFile', type: 'string', arg: 'PATH',
      help: 'with --metadata-size: the file keeping each block\'s metadata, block after block (it limits the device size)' },
    { key: 'initMetadata', type: 'bool',
      help: 'with --metadata-file: fill the metadata with 0xff first (protection information then checks nothing until written)' },
  ],
  setup(options, device) {
    const file = options.file;
    const metadataSize = device?.metadataSize ?? 0;
    if (metadataSize && options.metadataFile === undefined) {
      throw new TargetOptionError('--metadata-size needs --metadata-file PATH: the loop target keeps the metadata there');
    }
    if (!metadataSize && (options.metadataFile !== undefined || options.initMetadata)) {
      throw new TargetOptionError(`${options.metadataFile !== undefined ? '--metadata-file' : '--init-metadata'} only applies with --metadata-size`);
    }
    const store: BackingStore = backingStore(file, options.buffered);
    let size = store.size - (store.size % store.logicalBlockSize);
    let metaFd = -1;
    if (metadataSize) {
      try {
        const meta = openMetadataFile(options.metadataFile!, metadataSize, store.logicalBlockSize);
        metaFd = meta.fd;
        size = Math.min(size, meta.dataBytes);
      } catch (e) {
        fs.closeSync(store.fd);
        throw e;
      }
    }
    const closeAll = () => {
      fs.closeSync(store.fd);
      if (metaFd >= 0) fs.closeSync(metaFd);
    };
    if (options.size !== undefined) {
      if (options.size > size) {
        closeAll();
        throw new TargetOptionError(size < store.size
          ? `${options.metadataFile} holds the metadata of ${size} bytes only, less than the device size ${options.size}`
          : `${file} holds ${store.size} bytes, less than the device size ${options.size}`);
      }
      size = options.size;
    }
    if (size === 0 || size % store.logicalBlockSize) {
      closeAll();
      throw new TargetOptionError(size === 0
        ? `${file} is too small for a block device (${store.size} bytes; at least ${store.logicalBlockSize} needed)`
        : `device size ${size} is not a multiple of ${file}'s logical block size ${store.logicalBlockSize}`);
    }
    if (options.initMetadata) fillMetadata(metaFd, size / store.logicalBlockSize * metadataSize);
    const shared: Shared = { fd: store.fd, blockDevice: store.blockDevice, metaFd };
    return {
      size,
      // A hole or zeros would leave the blocks' metadata as it was: with metadata, the kernel writes zeros itself.
      caps: { flush: true, fua: true, discard: !metadataSize, writeZeroes: !metadataSize },
      integrity: true,
      data: 'ring',
      logicalBlockSize: store.logicalBlockSize,
      shared,
      // A regular file grows to the new size (sparse); a block device must hold it already.
      resize: metadataSize ? undefined : (newSize) => {
        const have = store.blockDevice ? store.size : fs.fstatSync(store.fd).size;
        if (newSize <= have) return;
        if (store.blockDevice) throw new TargetOptionError(`${file} holds ${have} bytes, less than ${newSize}`);
        fs.ftruncateSync(store.fd, newSize);
      },
      cleanup: closeAll,
    };
  },
  open(ctx) {
    const { fd, blockDevice, metaFd } = ctx.shared;
    return new LoopQueue(ctx.io, fd, blockDevice, metaFd);
  },
});
