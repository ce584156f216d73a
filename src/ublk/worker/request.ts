// One block request as a target sees it. Queue engines keep one object per tag
// and refill it for every request, so serving an IO allocates nothing: the
// data view is made only when a target asks for `buffer` (targets that do
// their IO through the ring never do), and kept while the next request's data
// lies in the same place.
import { native } from '../../native.js';
import { DESC_ADDR, DESC_NR_SECTORS, DESC_OP_FLAGS, DESC_START_SECTOR, DESC_WORDS } from './queue-memory.js';
import {
  UBLK_IO_F_FUA, UBLK_IO_F_NEED_REG_BUF, UBLK_IO_F_NOUNMAP, UBLK_IO_F_SHMEM_ZC, UBLK_IO_OP_READ, UBLK_IO_OP_REPORT_ZONES,
  UBLK_IO_OP_WRITE, UBLK_IO_OP_ZONE_APPEND, UBLK_QID_OFF, UBLK_SHMEM_ZC_IDX_MASK, UBLK_TAG_OFF, UBLKSRV_IO_BUF_OFFSET,
} from '../abi/uapi.js';
import { LAYOUTS } from '../abi/layout.js';
import type { TargetIo } from '../target.js';

/** The two functions a target's promise is given (then), made once per tag rather than per request. */
export interface PromiseSettlers {
  readonly fulfilled: (value: unknown) => void;
  readonly rejected: (error: unknown) => void;
}

const SECTOR = 512;
/** REPORT_ZONES: bytes per zone in the reply (struct blk_zone). */
const ZONE_BYTES = LAYOUTS.blk_zone.size;
const TWO_32 = 2 ** 32;
const EMPTY = new Uint8Array(0);

export class UblkRequest {
  /** UBLK_IO_OP_* */
  op = 0;
  /** UBLK_IO_F_* bits (already shifted, as in op_flags). */
  flags = 0;
  /** First 512-byte sector. */
  sector = 0;
  /** Length in 512-byte sectors (REPORT_ZONES: the number of zones, nr_zones). */
  sectors = 0;
  /**
   * Kernel and user copy: address of this tag's buffer (`buffer` starts
   * there), for the target's own io_uring IO. Zero copy: the address of the
   * data within fixed buffer `bufIndex` for READ_FIXED/WRITE_FIXED (0: buffers
   * the driver registers start at 0). A request served from shared memory
   * (UBLK_F_SHMEM_ZC): where its data lies in this thread's mapping of it.
   */
  bufferAddress: number;
  /**
   * User copy: position of the request's data on /dev/ublkcN (below 2^53:
   * 0x80000000 + queue << 41 + tag << 25).
   */
  readonly userCopyPos: number;
  /** Zero copy: the worker ring's fixed-buffer index holding the request's pages. */
  readonly bufIndex: number;
  /**
   * UBLK_F_INTEGRITY (worker/integrity.ts): bytes of metadata this request
   * carries (UBLK_IO_F_INTEGRITY), 0 if none. Its place in a store that
   * keeps each block's metadata after the previous block's is `integrityOffset`.
   */
  integrity = 0;
  integrityOffset = 0;
  /**
   * This tag's metadata buffer (`integrity` bytes used), at
   * `integrityAddress`: targets find WRITE metadata there and put READ
   * metadata there (the dispatcher copies it in and out).
   */
  integrityBuffer: Uint8Array = EMPTY;
  integrityAddress = 0;

  /**
   * UBLK_IO_F_SHMEM_ZC: the registered shared memory buffer holding the data
   * (REG_BUF's index), and the data's byte offset in it; -1 for other requests.
   */
  shmemIndex = -1;
  shmemOffset = 0;

  /** ZONE_APPEND: the sector where the target put the data, for the commit (zone_append_lba). */
  zoneAppendLba = 0;

  /** @internal where complete() hands the request (set by a pull target, pull.ts) */
  completer: TargetIo | null = null;
  /** @internal result kept while the engine finishes a request (copy-out, unregister) */
  result = 0;
  /** @internal the request's pages were registered by an explicit REGISTER_IO_BUF */
  registered = false;
  /** @internal between dispatch and completion */
  owned = false;
  /** @internal the result of a commit linked to the target's IO (TargetIo.linkCommit), or NaN */
  linkedResult = NaN;
  /** @internal the target's io_uring operations for this request whose CQE is still to come */
  ringOps = 0;
  /**
   * @internal the result the request completed with while some of its ring operations were still in
   * flight (NaN: none): it is committed when the last one's CQE is in, so that none lands on the tag's next request
   */
  deferred = NaN;
  /** @internal one of the engine's steps (copy in/out, (un)register) is in flight: its CQE moves the request on */
  staged = false;
  /**
   * @internal the target returned PENDING with no ring operation to wait for: it completes from
   * elsewhere (a timer, a socket), so the serving loop must keep the event loop running
   */
  external = false;
  /** @internal the current request waits for the promise its target returned */
  awaitsPromise = false;
  /** @internal promises returned for this tag's requests that have not settled yet (more than one: a target's bug) */
  promises = 0;
  /** @internal this tag's handlers for such a promise, made at its first (dispatch.ts) */
  settlers: PromiseSettlers | null = null;

  /** Where the data lies (the tag buffer, a shared memory region; null: no data), from which byte, how many. */
  private dataIn: Uint8Array | null = null;
  private dataOffset = 0;
  private dataLength = 0;
  /** The last view `buffer` made, and of what. */
  private view: Uint8Array = EMPTY;
  private viewOf: Uint8Array | null = null;
  private viewOffset = 0;

  /**
   * `ud`: the queue's index in user_data on the serving ring; `charFixed`:
   * the fixed-file index of /dev/ublkcN there (engine.ts, RingPlace).
   */
  constructor(readonly queue: number, readonly tag: number,
    /** @internal kernel and user copy: this tag's whole buffer (null in zero copy) */
    readonly tagBuffer: Uint8Array | null, bufIndex: number,
    private readonly tagAddress: number, readonly ud = queue, readonly charFixed = 0) {
    this.bufIndex = bufIndex;
    this.bufferAddress = tagAddress;
    this.userCopyPos = UBLKSRV_IO_BUF_OFFSET + queue * 2 ** UBLK_QID_OFF + tag * 2 ** UBLK_TAG_OFF;
  }

  /**
   * User copy: pread(2) on /dev/ublkcN (`fd`) of `length` bytes of the
   * request's data from byte `from` into `dst` at `at`; bytes, or -errno.
   * (The position, above 2^31, is split here for the native call: passed to
   * a function as a number it would be a boxed double.)
   */
  readPages(fd: number, dst: ArrayBufferView | ArrayBuffer, at: number, length: number, from = 0): number {
    const pos = this.userCopyPos + from;
    return native.pread(fd, dst, at, length, (pos % TWO_32) | 0, Math.floor(pos / TWO_32));
  }

  /** User copy: pwrite(2) of `length` bytes of `src` from `at` into the request's data at byte `from`; bytes, or -errno. */
  writePages(fd: number, src: ArrayBufferView | ArrayBuffer, at: number, length: number, from = 0): number {
    const pos = this.userCopyPos + from;
    return native.pwrite(fd, src, at, length, (pos % TWO_32) | 0, Math.floor(pos / TWO_32));
  }

  /**
   * Completes a request of a pull target (pull.ts) with `result`: bytes
   * (READ, WRITE), 0 (other requests) or a negative errno. Other targets
   * return the result, or call `ctx.io.complete(req, result)`.
   */
  complete(result: number): void {
    if (!this.completer) throw new Error('req.complete() is for the requests of a pullTarget (others: return the result, or ctx.io.complete)');
    this.completer.complete(this, result);
  }

  /** The request's data: WRITE data to consume, or where READ data goes (empty for other ops). */
  get buffer(): Uint8Array {
    const data = this.dataIn;
    if (data === null) return EMPTY;
    if (this.viewOf !== data || this.viewOffset !== this.dataOffset || this.view.length !== this.dataLength) {
      this.view = data.subarray(this.dataOffset, this.dataOffset + this.dataLength);
      this.viewOf = data;
      this.viewOffset = this.dataOffset;
    }
    return this.view;
  }

  /** @internal the data lies in `region` from byte `offset` (UBLK_F_SHMEM_ZC) */
  placeData(region: Uint8Array, offset: number): void {
    this.dataIn = region;
    this.dataOffset = offset;
    this.dataLength = this.length;
  }

  /** Byte offset on the device. */
  get offset(): number { return this.sector * SECTOR; }
  /** Length in bytes (REPORT_ZONES: of the reply, one struct blk_zone per zone). */
  get length(): number { return this.sectors * (this.op === UBLK_IO_OP_REPORT_ZONES ? ZONE_BYTES : SECTOR); }
  /** REPORT_ZONES: most zones to report. */
  get nrZones(): number { return this.sectors; }
  get fua(): boolean { return (this.flags & UBLK_IO_F_FUA) !== 0; }
  /** WRITE_ZEROES must not deallocate. */
  get noUnmap(): boolean { return (this.flags & UBLK_IO_F_NOUNMAP) !== 0; }
  /** Zero copy: automatic registration failed (UBLK_IO_F_NEED_REG_BUF); the engine registers explicitly. */
  get needsRegistration(): boolean { return (this.flags & UBLK_IO_F_NEED_REG_BUF) !== 0; }

  /** @internal refilled by the queue engine from this tag's ublksrv_io_desc in the queue's descriptor array */
  load(desc: Uint32Array): void {
    const b = this.tag * DESC_WORDS;
    const opFlags = desc[b + DESC_OP_FLAGS]!;
    const op = opFlags & 0xff;
    this.op = op;
    this.flags = opFlags & ~0xff;
    this.sectors = desc[b + DESC_NR_SECTORS]!;
    this.sector = desc[b + DESC_START_SECTOR]! + desc[b + DESC_START_SECTOR + 1]! * TWO_32;
    this.integrity = 0; // set by the dispatcher where UBLK_IO_F_INTEGRITY says so
    this.dataIn = this.tagBuffer !== null && (op === UBLK_IO_OP_READ || op === UBLK_IO_OP_WRITE || op === UBLK_IO_OP_ZONE_APPEND ||
      op === UBLK_IO_OP_REPORT_ZONES) ? this.tagBuffer : null;
    this.dataOffset = 0;
    this.dataLength = this.length;
    this.bufferAddress = this.tagAddress;
    if (opFlags & UBLK_IO_F_SHMEM_ZC) {
      this.shmemIndex = desc[b + DESC_ADDR + 1]! & UBLK_SHMEM_ZC_IDX_MASK;
      this.shmemOffset = desc[b + DESC_ADDR]!;
    } else {
      this.shmemIndex = -1;
    }
  }
}
