// A serving thread's view of the shared memory regions registered for
// UBLK_F_SHMEM_ZC (control/shmem.ts). A request the driver found in one comes
// with UBLK_IO_F_SHMEM_ZC and (index, offset) in its descriptor instead of a
// copy in the tag buffer; place() points the request's `buffer` and
// `bufferAddress` at its data in this thread's own mapping of the same file
// (same pages, so the target reads WRITE data and writes READ data in place,
// whether in JavaScript or with its own io_uring operations).
import { native } from '../../native.js';
import { MAP_SHARED, PROT_READ, PROT_WRITE } from '../../sys.js';
import { UBLK_IO_OP_READ, UBLK_IO_OP_WRITE } from '../abi/uapi.js';
import type { ShmemRegion } from '../control/shmem.js';
import type { UblkRequest } from './request.js';

export class ShmemViews {
  /** By the kernel's buffer index. */
  private readonly views: Array<Uint8Array | undefined> = [];
  private readonly addrs: number[] = [];
  private readonly readOnly: boolean[] = [];

  constructor(regions: readonly ShmemRegion[]) {
    try {
      for (const r of regions) {
        const mem = native.mmap(r.size, PROT_READ | (r.readOnly ? 0 : PROT_WRITE), MAP_SHARED, r.fd, 0);
        this.views[r.index] = new Uint8Array(mem);
        this.addrs[r.index] = native.addressOf(mem);
        this.readOnly[r.index] = r.readOnly;
      }
    } catch (e) {
      // The regions mapped before the one that failed are unmapped now, not
      // whenever the collector finds their buffers (gigabytes of address space
      // and a reference to each file, held by a thread that goes on serving).
      this.free();
      throw e;
    }
  }

  /**
   * Points a READ/WRITE request at its data in the region its descriptor
   * names. False where that cannot be (an index this thread does not know, a
   * range past the region's end, a READ into a read-only region): the
   * request must fail rather than touch memory outside the region.
   */
  place(req: UblkRequest): boolean {
    const op = req.op;
    if (op !== UBLK_IO_OP_READ && op !== UBLK_IO_OP_WRITE) return true; // no data
    const i = req.shmemIndex, view = this.views[i], off = req.shmemOffset, len = req.length;
    if (view === undefined || off + len > view.byteLength || (op === UBLK_IO_OP_READ && this.readOnly[i])) return false;
    req.placeData(view, off);
    req.bufferAddress = this.addrs[i]! + off;
    return true;
  }

  free(): void {
    for (const v of this.views) if (v) native.munmap(v.buffer as ArrayBuffer);
    this.views.length = 0;
  }
}
