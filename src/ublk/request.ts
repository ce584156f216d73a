// One block request as a target sees it. Queue engines keep one object per tag
// and refill it for every request, so serving an IO allocates nothing but the
// data view.
import { UBLK_IO_F_FUA, UBLK_IO_F_NOUNMAP } from './uapi.js';

const SECTOR = 512;
const EMPTY = new Uint8Array(0);

export class UblkRequest {
  /** UBLK_IO_OP_* */
  op = 0;
  /** UBLK_IO_F_* bits (already shifted, as in op_flags). */
  flags = 0;
  /** First 512-byte sector. */
  sector = 0;
  /** Length in 512-byte sectors. */
  sectors = 0;
  /** The request's data: WRITE data to consume, or where READ data goes (empty for other ops). */
  buffer: Uint8Array;

  constructor(readonly queue: number, readonly tag: number, private readonly tagBuffer: Uint8Array) {
    this.buffer = EMPTY;
  }

  /** Byte offset on the device. */
  get offset(): number { return this.sector * SECTOR; }
  /** Length in bytes. */
  get length(): number { return this.sectors * SECTOR; }
  get fua(): boolean { return (this.flags & UBLK_IO_F_FUA) !== 0; }
  /** WRITE_ZEROES must not deallocate. */
  get noUnmap(): boolean { return (this.flags & UBLK_IO_F_NOUNMAP) !== 0; }

  /** @internal refilled by the queue engine from the tag's descriptor */
  load(opFlags: number, sectors: number, sector: number, hasData: boolean): void {
    this.op = opFlags & 0xff;
    this.flags = opFlags & ~0xff;
    this.sectors = sectors;
    this.sector = sector;
    this.buffer = hasData ? this.tagBuffer.subarray(0, sectors * SECTOR) : EMPTY;
  }
}
