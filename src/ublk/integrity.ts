// UBLK_F_INTEGRITY (Linux 7.0): each logical block carries `metadata_size`
// bytes of metadata (integrity data), optionally holding a protection
// information tuple the block layer generates and verifies. The device's
// option rows, their cross-checks (what the driver's ublk_validate_params
// would refuse with a bare -EINVAL) and the UBLK_PARAM_TYPE_INTEGRITY
// parameters they become. The data path is worker/integrity.ts.
import { nameOf, OptionError, type Naming, type OptionSpec } from '../options/spec.js';
import type { Struct } from './abi/codec.js';
import {
  LBMD_PI_CAP_INTEGRITY, LBMD_PI_CAP_REFTAG, LBMD_PI_CSUM_CRC16_T10DIF, LBMD_PI_CSUM_CRC64_NVME, LBMD_PI_CSUM_IP, LBMD_PI_CSUM_NONE,
} from './abi/uapi.js';

export const CSUM_TYPES = ['none', 'ip', 't10dif', 'nvme'] as const;
export type CsumType = (typeof CSUM_TYPES)[number];

const CSUM: Record<CsumType, number> = {
  none: LBMD_PI_CSUM_NONE, ip: LBMD_PI_CSUM_IP, t10dif: LBMD_PI_CSUM_CRC16_T10DIF, nvme: LBMD_PI_CSUM_CRC64_NVME,
};

/** Bytes of the protection information tuple each checksum type puts in a block's metadata. */
export const PI_TUPLE_SIZE: Record<CsumType, number> = { none: 0, ip: 8, t10dif: 8, nvme: 16 };

export const INTEGRITY_OPTIONS: readonly OptionSpec[] = [
  { key: 'metadataSize', type: 'int', arg: 'BYTES', min: 1, max: 255,
    help: 'UBLK_F_INTEGRITY: BYTES of metadata per logical block, moved with each request (Linux 7.0, --copy user)' },
  // No defaults below: a device without metadata keeps its options free of them (each is 0, none or no).
  { key: 'piOffset', type: 'int', arg: 'BYTES', min: 0, max: 255,
    help: 'with --metadata-size: where the protection information tuple starts in a block\'s metadata (default 0)' },
  { key: 'csumType', type: 'enum', arg: 'TYPE', choices: CSUM_TYPES,
    help: 'with --metadata-size: the protection information\'s checksum (ip, t10dif: 8-byte tuple; nvme: 16 bytes; ' +
      'none, the default: no PI)' },
  { key: 'tagSize', type: 'int', arg: 'BYTES', min: 0, max: 255,
    help: 'with --metadata-size: bytes of the tuple that are an application tag, e.g. 8 for nvme\'s storage tag (default 0)' },
  { key: 'integrityCapable', type: 'bool',
    help: 'with --metadata-size: the device itself checks the protection information (LBMD_PI_CAP_INTEGRITY)' },
  { key: 'integrityReftag', type: 'bool',
    help: 'with --metadata-size and a checksum: the tuple carries a reference tag (LBMD_PI_CAP_REFTAG)' },
];

/** UBLK_F_INTEGRITY's device options (part of DeviceOptions). */
export interface IntegrityChoice {
  /** Bytes of metadata per logical block, 1..255 (Linux 7.0, user copy); the target keeps them. */
  metadataSize?: number;
  /** Where the protection information tuple starts in a block's metadata. Default 0. */
  piOffset?: number;
  /** The protection information's checksum; 'none' (default): metadata without PI. */
  csumType?: CsumType;
  /** Bytes of the tuple that are an application tag. Default 0. */
  tagSize?: number;
  /** The device checks the PI itself (LBMD_PI_CAP_INTEGRITY). Default false. */
  integrityCapable?: boolean;
  /** The tuple carries a reference tag (LBMD_PI_CAP_REFTAG). Default false. */
  integrityReftag?: boolean;
}

const rowOf = (key: string): OptionSpec => INTEGRITY_OPTIONS.find((s) => s.key === key)!;

/** The choice with each absent option at its value by default. */
const filled = (o: IntegrityChoice): Required<Omit<IntegrityChoice, 'metadataSize'>> => ({
  piOffset: o.piOffset ?? 0, csumType: o.csumType ?? 'none', tagSize: o.tagSize ?? 0,
  integrityCapable: o.integrityCapable ?? false, integrityReftag: o.integrityReftag ?? false,
});

/** The combinations the driver refuses (checked options in, one line naming the fix out). */
export function checkIntegrity(given: IntegrityChoice, naming: Naming): void {
  const n = (k: string) => nameOf(rowOf(k), naming);
  if (given.metadataSize === undefined) {
    // A value that asks for nothing (0, none, no) is no error.
    const neutral = filled({});
    const k = (['piOffset', 'csumType', 'tagSize', 'integrityCapable', 'integrityReftag'] as const)
      .find((x) => given[x] !== undefined && given[x] !== neutral[x]);
    if (k) throw new OptionError(`${n(k)} only applies with ${n('metadataSize')} (the bytes of metadata per block)`);
    return;
  }
  const o = { ...filled(given), metadataSize: given.metadataSize };
  const tuple = PI_TUPLE_SIZE[o.csumType];
  if (o.piOffset + tuple > o.metadataSize) {
    throw new OptionError(`${n('piOffset')} ${o.piOffset} plus the ${tuple}-byte ${o.csumType} tuple does not fit in ` +
      `${n('metadataSize')} ${o.metadataSize} (at most ${Math.max(0, o.metadataSize - tuple)}, or more metadata)`);
  }
  if (o.integrityReftag && o.csumType === 'none') {
    throw new OptionError(`${n('integrityReftag')} needs protection information: add ${n('csumType')} ip, t10dif or nvme`);
  }
  if (o.tagSize > o.metadataSize) {
    throw new OptionError(`${n('tagSize')} ${o.tagSize} is larger than ${n('metadataSize')} ${o.metadataSize}`);
  }
}

/** UBLK_PARAM_TYPE_INTEGRITY for these options (none without metadata); one protection interval per logical block. */
export function integrityParams(given: IntegrityChoice, logicalBsShift: number): Partial<Struct<'ublk_param_integrity'>> | undefined {
  if (given.metadataSize === undefined) return undefined;
  const o = filled(given);
  return {
    flags: (o.integrityCapable ? LBMD_PI_CAP_INTEGRITY : 0) | (o.integrityReftag ? LBMD_PI_CAP_REFTAG : 0),
    interval_exp: logicalBsShift,
    metadata_size: given.metadataSize,
    pi_offset: o.piOffset,
    csum_type: CSUM[o.csumType],
    tag_size: o.tagSize,
  };
}

/** What `list --json` shows of a device's UBLK_PARAM_TYPE_INTEGRITY. */
export interface IntegrityListing {
  metadataSize: number;
  piOffset: number;
  csumType: string;
  tagSize: number;
  integrityCapable: boolean;
  integrityReftag: boolean;
  /** Bytes of data each block of metadata covers. */
  intervalBytes: number;
}

export function describeIntegrity(p: Struct<'ublk_param_integrity'>): IntegrityListing {
  const csum = (Object.keys(CSUM) as CsumType[]).find((k) => CSUM[k] === p.csum_type);
  return {
    metadataSize: p.metadata_size,
    piOffset: p.pi_offset,
    csumType: csum ?? String(p.csum_type),
    tagSize: p.tag_size,
    integrityCapable: (p.flags & LBMD_PI_CAP_INTEGRITY) !== 0,
    integrityReftag: (p.flags & LBMD_PI_CAP_REFTAG) !== 0,
    intervalBytes: 2 ** p.interval_exp,
  };
}
