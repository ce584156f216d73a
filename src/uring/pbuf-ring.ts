// A provided-buffer ring (IORING_REGISTER_PBUF_RING): the application adds
// buffers at the tail, the kernel takes them from the head for requests that
// carry IOSQE_BUFFER_SELECT and this group id, and reports the buffer id in
// cqe->flags >> IORING_CQE_BUFFER_SHIFT (with IORING_CQE_F_BUFFER set).
//
// The buffers themselves belong to the caller: the kernel writes to their
// addresses, so they must stay mapped until their completions are reaped.
import type { Ring } from './ring.js';
import { native, check } from '../native.js';
import { LAYOUTS } from './layout.js';
import { IORING_REGISTER_PBUF_RING, IORING_UNREGISTER_PBUF_RING, IOU_PBUF_RING_INC } from './constants.js';

const BUF = LAYOUTS.io_uring_buf;
const BUF_WORDS = BUF.size >> 2;
const ADDR = BUF.fields.addr[0] >> 2, LEN = BUF.fields.len[0] >> 2, BID = BUF.fields.bid[0] >> 1; // u32, u32, u16
const TAIL = LAYOUTS.io_uring_buf_ring.fields.tail[0] >> 1; // u16 index of the ring's tail
const REG = LAYOUTS.io_uring_buf_reg;

function bufReg(bgid: number, ringAddr = 0, entries = 0, flags = 0): DataView {
  const dv = new DataView(new ArrayBuffer(REG.size));
  dv.setUint32(REG.fields.ring_addr[0], ringAddr >>> 0, true);
  dv.setUint32(REG.fields.ring_addr[0] + 4, Math.floor(ringAddr / 0x100000000), true);
  dv.setUint32(REG.fields.ring_entries[0], entries, true);
  dv.setUint16(REG.fields.bgid[0], bgid, true);
  dv.setUint16(REG.fields.flags[0], flags, true);
  return dv;
}

export interface PbufRingOptions {
  /**
   * IOU_PBUF_RING_INC: a buffer is consumed piecewise; while a completion has
   * IORING_CQE_F_BUF_MORE the kernel keeps using the rest of that buffer (and
   * the next completion's data starts where the previous one ended).
   */
  incremental?: boolean;
}

export class PbufRing {
  readonly bgid: number;
  readonly entries: number;
  readonly incremental: boolean;
  private readonly ring: Ring;
  private readonly mask: number;
  private readonly mem: ArrayBuffer;
  private readonly u32: Uint32Array;
  private readonly u16: Uint16Array;
  /** Local tail; the kernel only sees it after advance(). u16, wraps. */
  private tail = 0;
  private registered = true;

  /** `entries` must be a power of two (at most 32768). */
  static register(ring: Ring, bgid: number, entries: number, opts: PbufRingOptions = {}): PbufRing {
    if (entries < 1 || entries > 32768 || (entries & (entries - 1)) !== 0) {
      throw new RangeError(`PbufRing entries must be a power of two ≤ 32768, got ${entries}`);
    }
    // Page-aligned: the kernel pins the ring's pages and reads it directly.
    const mem = native.alloc(entries * BUF.size);
    const flags = opts.incremental ? IOU_PBUF_RING_INC : 0;
    const res = native.register(ring.fd, IORING_REGISTER_PBUF_RING, bufReg(bgid, native.addressOf(mem), entries, flags), 1);
    if (res < 0) native.munmap(mem);
    check(res, 'IORING_REGISTER_PBUF_RING');
    return new PbufRing(ring, bgid, entries, !!opts.incremental, mem);
  }

  private constructor(ring: Ring, bgid: number, entries: number, incremental: boolean, mem: ArrayBuffer) {
    this.ring = ring;
    this.bgid = bgid;
    this.entries = entries;
    this.incremental = incremental;
    this.mask = entries - 1;
    this.mem = mem;
    this.u32 = new Uint32Array(mem);
    this.u16 = new Uint16Array(mem);
  }

  /**
   * Writes a buffer into slot tail + i, invisible to the kernel until
   * advance(). Entry 0's last two bytes are the ring tail, so only addr, len
   * and bid are written.
   */
  add(addr: number, len: number, bid: number, i: number): void {
    const e = ((this.tail + i) & this.mask) * BUF_WORDS;
    this.u32[e + ADDR] = addr >>> 0;
    this.u32[e + ADDR + 1] = Math.floor(addr / 0x100000000);
    this.u32[e + LEN] = len;
    this.u16[e * 2 + BID] = bid;
  }

  /**
   * Publishes `count` added buffers. The atomic store orders the entry writes
   * before the tail (once per batch of buffers: the plain x86 store ring.ts
   * uses per request would save little here).
   */
  advance(count: number): void {
    this.tail = (this.tail + count) & 0xffff;
    Atomics.store(this.u16, TAIL, this.tail);
  }

  /** Gives one buffer (back) to the kernel: add + advance(1). */
  recycle(addr: number, len: number, bid: number): void {
    this.add(addr, len, bid, 0);
    this.advance(1);
  }

  /** IORING_UNREGISTER_PBUF_RING, then frees the ring memory. Idempotent. */
  unregister(): void {
    if (!this.registered) return;
    this.registered = false;
    try {
      if (!this.ring.closed) check(native.register(this.ring.fd, IORING_UNREGISTER_PBUF_RING, bufReg(this.bgid), 1), 'IORING_UNREGISTER_PBUF_RING');
    } finally {
      native.munmap(this.mem);
    }
  }
}
