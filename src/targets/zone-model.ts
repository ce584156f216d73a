// The zones of a zoned block device (UBLK_F_ZONED), as pure logic: each zone's
// condition and write pointer, the open and active limits, and what every
// zoned request does to them. It knows nothing of where the data lives; the
// zoned target (zoned.ts) asks it before moving data.
//
// The state lives in one SharedArrayBuffer, so that every serving thread (a
// worker each) sees and changes the same zones; a spin lock in its first word
// makes each operation atomic across threads. The lock is held for a few
// loads and stores only, never while data moves.
//
// The rules follow the kernel's null_blk zoned emulation (ZBC/ZNS):
// - a write must start at its zone's write pointer and stay in the zone; it
//   opens an empty or closed zone implicitly, and a zone whose write pointer
//   reaches its end is full;
// - open zones (implicitly or explicitly) are at most `maxOpen`; to open one
//   more, an implicitly open zone is closed, and without one the request fails
//   with ETOOMANYREFS (BLK_STS_ZONE_OPEN_RESOURCE);
// - active zones (open or closed) are at most `maxActive`, else EOVERFLOW
//   (BLK_STS_ZONE_ACTIVE_RESOURCE); 0 means no limit for either;
// - conventional zones (the first `conventional` ones) take writes anywhere
//   and no zone management.
// All positions are in 512-byte sectors.
import {
  BLK_ZONE_COND_CLOSED, BLK_ZONE_COND_EMPTY, BLK_ZONE_COND_EXP_OPEN, BLK_ZONE_COND_FULL, BLK_ZONE_COND_IMP_OPEN, BLK_ZONE_COND_NOT_WP,
  BLK_ZONE_TYPE_CONVENTIONAL, BLK_ZONE_TYPE_SEQWRITE_REQ,
} from '../ublk/abi/uapi.js';
import { LAYOUTS } from '../ublk/abi/layout.js';
import { EIO } from '../errno.js';

/** Linux's ETOOMANYREFS, which the block layer maps to BLK_STS_ZONE_OPEN_RESOURCE (Node's table lacks it). */
export const ETOOMANYREFS = 109;
/** Linux's EOVERFLOW, which the block layer maps to BLK_STS_ZONE_ACTIVE_RESOURCE. */
export const EOVERFLOW = 75;

/** Bytes per struct blk_zone in a REPORT_ZONES reply. */
export const BLK_ZONE_BYTES = LAYOUTS.blk_zone.size;

export interface ZoneGeometry {
  /** Sectors per zone, a power of 2. */
  zoneSectors: number;
  /** Zones on the device. */
  zones: number;
  /** The first this many zones are conventional. */
  conventional: number;
  /** Most zones open at once (0: no limit). */
  maxOpen: number;
  /** Most zones open or closed at once (0: no limit). */
  maxActive: number;
}

// Header words (Int32Array).
const LOCK = 0, IMP_OPEN = 1, EXP_OPEN = 2, CLOSED = 3, HEADER_WORDS = 4;
const HEADER_BYTES = HEADER_WORDS * 4;
const Z = LAYOUTS.blk_zone.fields;
const TWO_32 = 2 ** 32;

export class ZoneModel {
  private readonly words: Int32Array;
  /** Per zone: the write pointer (sector). */
  private readonly wps: Float64Array;
  /** Per zone: BLK_ZONE_COND_*. */
  private readonly conds: Uint8Array;

  private constructor(readonly geometry: ZoneGeometry, readonly sab: SharedArrayBuffer) {
    const n = geometry.zones;
    this.words = new Int32Array(sab, 0, HEADER_WORDS);
    this.wps = new Float64Array(sab, HEADER_BYTES, n);
    this.conds = new Uint8Array(sab, HEADER_BYTES + 8 * n, n);
  }

  /** A device's zones, all empty (conventional ones: not write-pointer zones). */
  static create(g: ZoneGeometry): ZoneModel {
    const m = new ZoneModel(g, new SharedArrayBuffer(HEADER_BYTES + 9 * g.zones));
    for (let z = 0; z < g.zones; z++) {
      const conv = z < g.conventional;
      m.conds[z] = conv ? BLK_ZONE_COND_NOT_WP : BLK_ZONE_COND_EMPTY;
      m.wps[z] = conv ? m.end(z) : m.start(z);
    }
    return m;
  }

  /** Another thread's view of the zones `create` made (its `sab`, sent in a message). */
  static attach(g: ZoneGeometry, sab: SharedArrayBuffer): ZoneModel {
    return new ZoneModel(g, sab);
  }

  zoneOf(sector: number): number { return Math.floor(sector / this.geometry.zoneSectors); }
  start(zone: number): number { return zone * this.geometry.zoneSectors; }
  end(zone: number): number { return (zone + 1) * this.geometry.zoneSectors; }
  cond(zone: number): number { return this.conds[zone]!; }
  wp(zone: number): number { return this.wps[zone]!; }
  /** Zones open (implicitly, explicitly), and closed. */
  get counts(): { impOpen: number; expOpen: number; closed: number } {
    return { impOpen: this.words[IMP_OPEN]!, expOpen: this.words[EXP_OPEN]!, closed: this.words[CLOSED]! };
  }

  /** WRITE of `sectors` at `sector`: 0, or -errno (and nothing changes). */
  write(sector: number, sectors: number): number {
    this.lock();
    try {
      const z = this.zoneOf(sector);
      if (z >= this.geometry.zones || sector + sectors > this.end(z)) return -EIO;
      if (z < this.geometry.conventional) return 0;
      if (sector !== this.wps[z]) return -EIO;
      return this.advance(z, sectors);
    } finally {
      this.unlock();
    }
  }

  /**
   * ZONE_APPEND of `sectors` to the zone starting at `sector`: the sector the
   * data goes to (the write pointer, which moves past it), or -errno.
   */
  append(sector: number, sectors: number): number {
    this.lock();
    try {
      const z = this.zoneOf(sector);
      if (z >= this.geometry.zones || z < this.geometry.conventional || sector !== this.start(z)) return -EIO;
      const at = this.wps[z]!;
      if (at + sectors > this.end(z)) return -EIO;
      const r = this.advance(z, sectors);
      return r < 0 ? r : at;
    } finally {
      this.unlock();
    }
  }

  /** ZONE_OPEN: the zone is explicitly open until closed, finished, reset or filled. */
  open(sector: number): number {
    return this.manage(sector, (z) => {
      switch (this.conds[z]) {
        case BLK_ZONE_COND_EXP_OPEN: return 0;
        case BLK_ZONE_COND_IMP_OPEN: this.words[IMP_OPEN]!--; break;
        case BLK_ZONE_COND_EMPTY: {
          const r = this.activate();
          if (r < 0) return r;
          break;
        }
        case BLK_ZONE_COND_CLOSED: {
          const r = this.makeOpenRoom();
          if (r < 0) return r;
          this.words[CLOSED]!--;
          break;
        }
        default: return -EIO; // full
      }
      this.conds[z] = BLK_ZONE_COND_EXP_OPEN;
      this.words[EXP_OPEN]!++;
      return 0;
    });
  }

  /** ZONE_CLOSE: an open zone becomes closed (empty again if nothing was written); others stay as they are. */
  close(sector: number): number {
    return this.manage(sector, (z) => {
      const c = this.conds[z];
      if (c !== BLK_ZONE_COND_IMP_OPEN && c !== BLK_ZONE_COND_EXP_OPEN) return 0;
      this.release(z);
      if (this.wps[z] === this.start(z)) {
        this.conds[z] = BLK_ZONE_COND_EMPTY;
      } else {
        this.conds[z] = BLK_ZONE_COND_CLOSED;
        this.words[CLOSED]!++;
      }
      return 0;
    });
  }

  /** ZONE_FINISH: the write pointer moves to the zone's end, and the zone is full. */
  finish(sector: number): number {
    return this.manage(sector, (z) => {
      this.release(z);
      this.conds[z] = BLK_ZONE_COND_FULL;
      this.wps[z] = this.end(z);
      return 0;
    });
  }

  /**
   * ZONE_RESET: the zone is empty again, its write pointer at its start.
   * `clear(zone)` (the target dropping the zone's data) runs first, under the
   * lock; should it fail, nothing changes.
   */
  reset(sector: number, clear?: (zone: number) => number): number {
    return this.manage(sector, (z) => {
      // The data goes under the lock, before the state: between the two,
      // another thread could write at the new write pointer and have its
      // acknowledged data wiped by a clear that came after.
      const r = clear ? clear(z) : 0;
      if (r < 0) return r;
      this.emptyZone(z);
      return 0;
    });
  }

  /** ZONE_RESET_ALL: every sequential zone is reset (`clear` of the first and the count first, as in reset). */
  resetAll(clear?: (first: number, count: number) => number): number {
    this.lock();
    try {
      const first = this.geometry.conventional;
      const r = clear ? clear(first, this.geometry.zones - first) : 0;
      if (r < 0) return r;
      for (let z = first; z < this.geometry.zones; z++) this.emptyZone(z);
      return 0;
    } finally {
      this.unlock();
    }
  }

  /**
   * REPORT_ZONES: struct blk_zone entries into `out` for up to `nrZones`
   * zones from the one at `sector`; the rest of `out` is zeroed (a zero-length
   * entry ends the report). Returns the number of zones reported.
   */
  report(sector: number, nrZones: number, out: Uint8Array): number {
    out.fill(0);
    const first = this.zoneOf(sector);
    const n = Math.max(0, Math.min(nrZones, this.geometry.zones - first, Math.floor(out.length / BLK_ZONE_BYTES)));
    const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
    const u64 = (off: number, v: number) => {
      dv.setUint32(off, v % TWO_32, true);
      dv.setUint32(off + 4, Math.floor(v / TWO_32), true);
    };
    const len = this.geometry.zoneSectors;
    this.lock();
    try {
      for (let i = 0; i < n; i++) {
        const z = first + i, b = i * BLK_ZONE_BYTES;
        u64(b + Z.start[0], this.start(z));
        u64(b + Z.len[0], len);
        u64(b + Z.wp[0], this.wps[z]!);
        dv.setUint8(b + Z.type[0], z < this.geometry.conventional ? BLK_ZONE_TYPE_CONVENTIONAL : BLK_ZONE_TYPE_SEQWRITE_REQ);
        dv.setUint8(b + Z.cond[0], this.conds[z]!);
        u64(b + Z.capacity[0], len);
      }
    } finally {
      this.unlock();
    }
    return n;
  }

  // ---- internals; the lock is held ----

  /** A zone-management request on the zone at `sector`: sequential zones only. */
  private manage(sector: number, f: (zone: number) => number): number {
    this.lock();
    try {
      const z = this.zoneOf(sector);
      if (z >= this.geometry.zones || z < this.geometry.conventional) return -EIO;
      return f(z);
    } finally {
      this.unlock();
    }
  }

  /** Writes `sectors` at zone z's write pointer: open it implicitly if need be, full at the end. */
  private advance(z: number, sectors: number): number {
    switch (this.conds[z]) {
      case BLK_ZONE_COND_FULL: return -EIO;
      case BLK_ZONE_COND_EMPTY: {
        const r = this.activate();
        if (r < 0) return r;
        this.conds[z] = BLK_ZONE_COND_IMP_OPEN;
        this.words[IMP_OPEN]!++;
        break;
      }
      case BLK_ZONE_COND_CLOSED: {
        const r = this.makeOpenRoom();
        if (r < 0) return r;
        this.words[CLOSED]!--;
        this.conds[z] = BLK_ZONE_COND_IMP_OPEN;
        this.words[IMP_OPEN]!++;
        break;
      }
    }
    const wp = this.wps[z]! + sectors;
    this.wps[z] = wp;
    if (wp === this.end(z)) {
      this.release(z);
      this.conds[z] = BLK_ZONE_COND_FULL;
    }
    return 0;
  }

  /** Room for an empty zone to become open: an active slot, then an open one. */
  private activate(): number {
    const max = this.geometry.maxActive, w = this.words;
    if (max && w[IMP_OPEN]! + w[EXP_OPEN]! + w[CLOSED]! >= max) return -EOVERFLOW;
    return this.makeOpenRoom();
  }

  /** Room for one more open zone: below the limit, or by closing an implicitly open zone. */
  private makeOpenRoom(): number {
    const max = this.geometry.maxOpen, w = this.words;
    if (!max || w[IMP_OPEN]! + w[EXP_OPEN]! < max) return 0;
    if (w[IMP_OPEN] === 0) return -ETOOMANYREFS;
    for (let z = this.geometry.conventional; z < this.geometry.zones; z++) {
      if (this.conds[z] !== BLK_ZONE_COND_IMP_OPEN) continue;
      this.conds[z] = BLK_ZONE_COND_CLOSED; // written to (it was opened by a write), so not empty
      w[IMP_OPEN]!--;
      w[CLOSED]!++;
      return 0;
    }
    return -ETOOMANYREFS;
  }

  /** Zone z stops counting as open or closed. */
  private release(z: number): void {
    switch (this.conds[z]) {
      case BLK_ZONE_COND_IMP_OPEN: this.words[IMP_OPEN]!--; break;
      case BLK_ZONE_COND_EXP_OPEN: this.words[EXP_OPEN]!--; break;
      case BLK_ZONE_COND_CLOSED: this.words[CLOSED]!--; break;
    }
  }

  private emptyZone(z: number): void {
    this.release(z);
    this.conds[z] = BLK_ZONE_COND_EMPTY;
    this.wps[z] = this.start(z);
  }

  private lock(): void {
    // Held for a few loads and stores at most: spinning beats sleeping here.
    while (Atomics.compareExchange(this.words, LOCK, 0, 1) !== 0) { /* spin */ }
  }

  private unlock(): void {
    Atomics.store(this.words, LOCK, 0);
  }
}
