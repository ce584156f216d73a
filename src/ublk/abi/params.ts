// struct ublk_params: the device parameters sent with SET_PARAMS.
import { decode, encode, offsetOf, sizeOf, type Struct } from './codec.js';
import {
  UBLK_PARAM_TYPE_BASIC, UBLK_PARAM_TYPE_DISCARD, UBLK_PARAM_TYPE_DMA_ALIGN, UBLK_PARAM_TYPE_INTEGRITY, UBLK_PARAM_TYPE_SEGMENT,
  UBLK_PARAM_TYPE_ZONED,
} from './uapi.js';

export interface UblkParams {
  basic: Partial<Struct<'ublk_param_basic'>>;
  discard?: Partial<Struct<'ublk_param_discard'>>;
  dma?: Partial<Struct<'ublk_param_dma_align'>>;
  seg?: Partial<Struct<'ublk_param_segment'>>;
  /** UBLK_F_ZONED devices (basic.chunk_sectors is then the zone size). */
  zoned?: Partial<Struct<'ublk_param_zoned'>>;
  integrity?: Partial<Struct<'ublk_param_integrity'>>;
}

export interface DecodedParams {
  types: number;
  basic: Struct<'ublk_param_basic'>;
  discard: Struct<'ublk_param_discard'>;
  devt: Struct<'ublk_param_devt'>;
  zoned: Struct<'ublk_param_zoned'>;
  /** Meaningful where `types` has UBLK_PARAM_TYPE_INTEGRITY. */
  integrity: Struct<'ublk_param_integrity'>;
}

export const PARAMS_SIZE = sizeOf('ublk_params');

/** The optional parts of UblkParams: each one's struct and the UBLK_PARAM_TYPE_* bit that says it is there. */
const OPTIONAL_PARTS = [
  ['discard', 'ublk_param_discard', UBLK_PARAM_TYPE_DISCARD],
  ['dma', 'ublk_param_dma_align', UBLK_PARAM_TYPE_DMA_ALIGN],
  ['seg', 'ublk_param_segment', UBLK_PARAM_TYPE_SEGMENT],
  ['zoned', 'ublk_param_zoned', UBLK_PARAM_TYPE_ZONED],
  ['integrity', 'ublk_param_integrity', UBLK_PARAM_TYPE_INTEGRITY],
] as const;

export function encodeParams(p: UblkParams): Uint8Array {
  const buf = new Uint8Array(PARAMS_SIZE);
  const dv = new DataView(buf.buffer);
  let types = UBLK_PARAM_TYPE_BASIC;
  encode('ublk_param_basic', dv, offsetOf('ublk_params', 'basic'), p.basic);
  for (const [key, struct, bit] of OPTIONAL_PARTS) {
    const part = p[key];
    if (!part) continue;
    types |= bit;
    // The table pairs each key with its struct; TypeScript cannot follow that pairing through the loop.
    encode(struct, dv, offsetOf('ublk_params', key), part as never);
  }
  dv.setUint32(offsetOf('ublk_params', 'len'), PARAMS_SIZE, true);
  dv.setUint32(offsetOf('ublk_params', 'types'), types, true);
  return buf;
}

/** A GET_PARAMS buffer: `len` must be preset to our struct size. */
export function paramsRequestBuffer(): Uint8Array {
  const buf = new Uint8Array(PARAMS_SIZE);
  new DataView(buf.buffer).setUint32(offsetOf('ublk_params', 'len'), PARAMS_SIZE, true);
  return buf;
}

export function decodeParams(buf: Uint8Array): DecodedParams {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  return {
    types: dv.getUint32(offsetOf('ublk_params', 'types'), true),
    basic: decode('ublk_param_basic', dv, offsetOf('ublk_params', 'basic')),
    discard: decode('ublk_param_discard', dv, offsetOf('ublk_params', 'discard')),
    devt: decode('ublk_param_devt', dv, offsetOf('ublk_params', 'devt')),
    zoned: decode('ublk_param_zoned', dv, offsetOf('ublk_params', 'zoned')),
    integrity: decode('ublk_param_integrity', dv, offsetOf('ublk_params', 'integrity')),
  };
}
