// Memory a queue worker shares with the kernel: the read-only descriptor array
// mmapped from /dev/ublkcN, and (in kernel-copy mode) one data buffer per tag.
import { ErrnoError, native } from '../../native.js';
import {
  ENOMEM, MADV_DONTNEED, MADV_NOHUGEPAGE, MAP_ANONYMOUS, MAP_NORESERVE, MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, PAGE_SIZE, PROT_READ, PROT_WRITE, roundUp,
} from '../../sys.js';
import { LAYOUTS } from '../abi/layout.js';
import { UBLKSRV_CMD_BUF_OFFSET, UBLK_MAX_QUEUE_DEPTH } from '../abi/uapi.js';

const DESC_SIZE = LAYOUTS.ublksrv_io_desc.size;
/** Fault injection for tests: UBLK_TS_FAULT_TAG_BUFFERS=1 fails every tag buffer mapping with ENOMEM. */
const FAULT_TAG_BUFFERS = process.env.UBLK_TS_FAULT_TAG_BUFFERS === '1';
/** u32 words per descriptor, and each field's word index within one. */
export const DESC_WORDS = DESC_SIZE / 4;
export const DESC_OP_FLAGS = LAYOUTS.ublksrv_io_desc.fields.op_flags[0] / 4;
export const DESC_NR_SECTORS = LAYOUTS.ublksrv_io_desc.fields.nr_sectors[0] / 4;
export const DESC_START_SECTOR = LAYOUTS.ublksrv_io_desc.fields.start_sector[0] / 4;
export const DESC_ADDR = LAYOUTS.ublksrv_io_desc.fields.addr[0] / 4;

/**
 * Maps queue `q`'s descriptors. The kernel places queues at a fixed stride sized
 * for the maximum depth, whatever the real depth; the length must be exactly the
 * real depth's array rounded to a page (else -EINVAL).
 */
export function mapDescriptors(charFd: number, q: number, depth: number): Uint32Array {
  const stride = roundUp(UBLK_MAX_QUEUE_DEPTH * DESC_SIZE, PAGE_SIZE);
  const len = roundUp(depth * DESC_SIZE, PAGE_SIZE);
  const ab = native.mmap(len, PROT_READ, MAP_SHARED | MAP_POPULATE, charFd, UBLKSRV_CMD_BUF_OFFSET + q * stride);
  return new Uint32Array(ab);
}

/**
 * Page-aligned per-tag buffers of `size` bytes each, in one mapping: private
 * memory for a queue served by one thread, or a shared memfd that every thread
 * serving the queue maps (batch mode hands any tag to any thread; each thread
 * sees the same pages at its own address, and the kernel accepts any of them).
 */
export class TagBuffers {
  readonly views: Uint8Array[] = [];
  readonly addrs: number[] = [];
  private readonly mem: ArrayBuffer;

  /** A memfd every thread of the queue maps (batch mode, several threads), not this thread's own memory. */
  readonly shared: boolean;

  constructor(count: number, readonly size: number, sharedFd?: number) {
    if (FAULT_TAG_BUFFERS) throw new ErrnoError(-ENOMEM, 'mmap (UBLK_TS_FAULT_TAG_BUFFERS)');
    this.shared = sharedFd !== undefined;
    // Private buffers take no commitment up front (MAP_NORESERVE): depth x
    // the largest request can be gigabytes (4096 tags of 1 MiB), of which
    // requests touch what they use, and trim() gives back; the overcommit
    // heuristic refuses one mapping larger than the machine's memory. (Where
    // overcommit is strict, vm.overcommit_memory=2, the kernel ignores the
    // flag and commits it all; where memory runs out, a page is refused
    // when a request first touches it, as for any lazily used memory.)
    this.mem = sharedFd === undefined
      ? native.mmap(count * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
      : native.mmap(count * size, PROT_READ | PROT_WRITE, MAP_SHARED, sharedFd, 0);
    // Where transparent huge pages are on, the first 4 KiB the kernel copies
    // into a 1 MiB buffer would fault in a whole 2 MiB page: 128 tags of a
    // device that saw only small requests would hold 256 MiB. Buffers hold
    // only the pages requests touched.
    native.madvise(this.mem, 0, count * size, MADV_NOHUGEPAGE);
    const base = native.addressOf(this.mem);
    for (let t = 0; t < count; t++) {
      this.views.push(new Uint8Array(this.mem, t * size, size));
      this.addrs.push(base + t * size);
    }
  }

  free(): void { native.munmap(this.mem); }

  /**
   * Gives the pages requests touched back to the system (the next request
   * that needs one gets a zeroed page). Only while no request uses a buffer,
   * from the thread the kernel copies into them for (which it does inside
   * that thread's io_uring_enter); not for buffers shared with other threads.
   */
  trim(): void {
    if (!this.shared) native.madvise(this.mem, 0, this.mem.byteLength, MADV_DONTNEED);
  }

  /**
   * For a thread that ends while its device may still be served: the kernel
   * keeps the addresses this thread gave it (batch mode: any thread may then
   * get a tag whose last address was ours) and would copy into whatever
   * reused them. They stay mapped until the process exits.
   */
  keep(): void { native.keepMapped(this.mem); }
}
