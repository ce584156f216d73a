// Table-driven encoders/decoders for the ublk UAPI structs (control path, not
// the per-IO hot path: queue engines precompute typed-array indices instead).
import { LAYOUTS, type StructName } from './layout.js';

type FieldsOf<S extends StructName> = keyof (typeof LAYOUTS)[S]['fields'] & string;
export type Struct<S extends StructName> = { [K in FieldsOf<S>]: number };

// Fields that are signed in C; everything else is unsigned.
const SIGNED = new Set(['ublksrv_pid', 'result']);
const TWO_32 = 2 ** 32;

function readField(dv: DataView, off: number, size: number, signed: boolean): number {
  switch (size) {
    case 1: return dv.getUint8(off);
    case 2: return dv.getUint16(off, true);
    case 4: return signed ? dv.getInt32(off, true) : dv.getUint32(off, true);
    case 8: {
      const hi = dv.getUint32(off + 4, true);
      if (hi >= 2 ** 21) throw new RangeError(`u64 at +${off} does not fit a JS number`);
      return hi * TWO_32 + dv.getUint32(off, true);
    }
    default: return 0; // byte arrays (pad/reserved) are not decoded
  }
}

function writeField(dv: DataView, off: number, size: number, v: number): void {
  switch (size) {
    case 1: dv.setUint8(off, v); break;
    case 2: dv.setUint16(off, v, true); break;
    case 4: dv.setUint32(off, v >>> 0, true); break;
    case 8:
      if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`u64 value ${v} is not a safe non-negative integer`);
      dv.setUint32(off, v % TWO_32, true);
      dv.setUint32(off + 4, Math.floor(v / TWO_32), true);
      break;
    default:
      if (v !== 0) throw new RangeError('byte-array fields can only be zero');
  }
}

/** Byte size of struct S. */
export const sizeOf = (s: StructName): number => LAYOUTS[s].size;

/** Decodes struct S at `base` of `dv`. */
export function decode<S extends StructName>(s: S, dv: DataView, base = 0): Struct<S> {
  const out: Record<string, number> = {};
  for (const [name, [off, size]] of Object.entries(LAYOUTS[s].fields)) {
    out[name] = readField(dv, base + off, size, SIGNED.has(name));
  }
  return out as Struct<S>;
}

/** Writes struct S at `base`: the whole struct is zeroed first, then the given fields set. */
export function encode<S extends StructName>(s: S, dv: DataView, base: number, values: Partial<Struct<S>>): void {
  const { size, fields } = LAYOUTS[s];
  for (let i = 0; i < size; i++) dv.setUint8(base + i, 0);
  const table = fields as Record<string, readonly [number, number]>;
  for (const [name, v] of Object.entries(values as Record<string, number | undefined>)) {
    if (v === undefined) continue;
    const f = table[name];
    if (!f) throw new TypeError(`${s} has no field ${name}`);
    writeField(dv, base + f[0], f[1], v);
  }
}

/** A fresh zeroed buffer holding struct S with the given fields. */
export function build<S extends StructName>(s: S, values: Partial<Struct<S>>): Uint8Array {
  const buf = new Uint8Array(sizeOf(s));
  encode(s, new DataView(buf.buffer), 0, values);
  return buf;
}

export const dataView = (u8: Uint8Array): DataView => new DataView(u8.buffer, u8.byteOffset, u8.byteLength);

/** Byte offset of field `f` of struct S. */
export function offsetOf<S extends StructName>(s: S, f: FieldsOf<S>): number {
  return (LAYOUTS[s].fields as Record<string, readonly [number, number]>)[f]![0];
}
