// The client side of the NBD fixed newstyle handshake, up to the transmission
// phase: NBD_OPT_GO (NBD_OPT_EXPORT_NAME where the server lacks it), with
// NBD_OPT_LIST to name the exports when the one asked for does not exist.
// Everything the server sends is checked; anything off ends the handshake with
// an NbdError that says what the server did.
import {
  CLISERV_MAGIC, IHAVEOPT, NBD_FLAG_C_FIXED_NEWSTYLE, NBD_FLAG_C_NO_ZEROES, NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES, NBD_INFO_BLOCK_SIZE, NBD_INFO_EXPORT, NBD_OPT_ABORT, NBD_OPT_EXPORT_NAME, NBD_OPT_GO, NBD_OPT_LIST, NBD_OPT_STARTTLS, NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK, NBD_REP_ERR_TLS_REQD, NBD_REP_ERR_UNKNOWN, NBD_REP_ERR_UNSUP, NBD_REP_FLAG_ERROR, NBD_REP_INFO,
  NBD_REP_SERVER, NBDMAGIC, OPT_REPLY_MAGIC, REP_ERROR_NAMES,
} from './constants.js';

/** A byte stream to the server: `read` resolves with exactly `n` bytes or rejects (end of stream, error). */
export interface HandshakeIo {
  read(n: number): Promise<Uint8Array>;
  write(bytes: Uint8Array): Promise<void>;
}

/** The server broke the protocol, refused us, or went away during the handshake. */
export class NbdError extends Error {
  override name = 'NbdError';
}

export interface ExportInfo {
  /** Bytes. */
  size: number;
  /** Transmission flags (NBD_FLAG_*). */
  flags: number;
  /** Size constraints: the server's, or the specification's defaults. */
  minBlock: number;
  preferredBlock: number;
  maxPayload: number;
  /** The server agreed to structured replies (NBD_OPT_STRUCTURED_REPLY): READs are answered in chunks, holes included. */
  structured: boolean;
}

/** Longest option reply we take in: info and error texts are short, and a bigger length is a broken server. */
const MAX_OPTION_REPLY = 1 << 20;
/** Longest export name the specification allows. */
const MAX_NAME = 4096;
const DEFAULT_MAX_PAYLOAD = 1 << 25;

const isPow2 = (x: number): boolean => x > 0 && (x & (x - 1)) === 0;

function optionHeader(option: number, length: number): Buffer {
  const b = Buffer.alloc(16 + length);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(length, 12);
  return b;
}

interface OptionReply { type: number; data: Buffer }

async function readOptionReply(io: HandshakeIo, option: number): Promise<OptionReply> {
  const h = Buffer.from(await io.read(20));
  if (h.readBigUInt64BE(0) !== OPT_REPLY_MAGIC) throw new NbdError(`server sent a bad option reply magic 0x${h.readBigUInt64BE(0).toString(16)}`);
  const opt = h.readUInt32BE(8), type = h.readUInt32BE(12), length = h.readUInt32BE(16);
  if (opt !== option) throw new NbdError(`server replied to option ${opt}, but option ${option} was sent`);
  if (length > MAX_OPTION_REPLY) throw new NbdError(`server sent an option reply of ${length} bytes (at most ${MAX_OPTION_REPLY} expected)`);
  return { type, data: length ? Buffer.from(await io.read(length)) : Buffer.alloc(0) };
}

/** The error reply's meaning and the server's message, if any. */
function describeError(r: OptionReply): string {
  const name = REP_ERROR_NAMES[r.type] ?? `error 0x${r.type.toString(16)}`;
  const text = r.data.toString('utf8').trim().replace(/[^\x20-\x7e]/g, '?');
  return text ? `${name}: ${text}` : name;
}

/** The server's greeting and our client flags. Returns whether NO_ZEROES was agreed. */
async function greet(io: HandshakeIo): Promise<boolean> {
  const g = Buffer.from(await io.read(18));
  if (g.readBigUInt64BE(0) !== NBDMAGIC) throw new NbdError('not an NBD server (no NBDMAGIC greeting)');
  const second = g.readBigUInt64BE(8);
  if (second === CLISERV_MAGIC) throw new NbdError('server speaks only the oldstyle negotiation, which is not supported (use a newstyle server)');
  if (second !== IHAVEOPT) throw new NbdError(`server sent an unknown negotiation magic 0x${second.toString(16)}`);
  const flags = g.readUInt16BE(16);
  if (!(flags & NBD_FLAG_FIXED_NEWSTYLE)) throw new NbdError('server does not offer fixed newstyle negotiation');
  const noZeroes = (flags & NBD_FLAG_NO_ZEROES) !== 0;
  const c = Buffer.alloc(4);
  c.writeUInt32BE(NBD_FLAG_C_FIXED_NEWSTYLE | (noZeroes ? NBD_FLAG_C_NO_ZEROES : 0));
  await io.write(c);
  return noZeroes;
}

function checkName(name: string): Buffer {
  const b = Buffer.from(name, 'utf8');
  if (b.length > MAX_NAME) throw new NbdError(`export name of ${b.length} bytes (at most ${MAX_NAME})`);
  return b;
}

function exportInfoReply(d: Buffer, info: Partial<ExportInfo>): void {
  const type = d.length >= 2 ? d.readUInt16BE(0) : -1;
  if (type === NBD_INFO_EXPORT) {
    if (d.length !== 12) throw new NbdError(`server sent NBD_INFO_EXPORT of ${d.length} bytes (12 expected)`);
    const size = d.readBigUInt64BE(2);
    if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw new NbdError(`server announced an export of ${size} bytes, too big`);
    info.size = Number(size);
    info.flags = d.readUInt16BE(10);
  } else if (type === NBD_INFO_BLOCK_SIZE) {
    if (d.length !== 14) throw new NbdError(`server sent NBD_INFO_BLOCK_SIZE of ${d.length} bytes (14 expected)`);
    const min = d.readUInt32BE(2), pref = d.readUInt32BE(6), max = d.readUInt32BE(10);
    if (!isPow2(min) || min > 65536) throw new NbdError(`server announced a minimum block size of ${min} (a power of 2 up to 65536 expected)`);
    if (!isPow2(pref) || pref < Math.max(min, 512)) throw new NbdError(`server announced a preferred block size of ${pref} (a power of 2, at least ${Math.max(min, 512)}, expected)`);
    if (max !== 0xffffffff && (max < min || max % min)) throw new NbdError(`server announced a maximum payload of ${max} (a multiple of the minimum block size ${min} expected)`);
    info.minBlock = min;
    info.preferredBlock = pref;
    info.maxPayload = max;
  } else if (type < 0) {
    throw new NbdError(`server sent an NBD_REP_INFO of ${d.length} bytes (no type)`);
  } // other information types: ignored, as the specification says
}

function finish(info: Partial<ExportInfo>, structured: boolean): ExportInfo {
  if (info.size === undefined || info.flags === undefined) throw new NbdError('server ended NBD_OPT_GO without NBD_INFO_EXPORT');
  if (!(info.flags & NBD_FLAG_HAS_FLAGS)) throw new NbdError(`server sent transmission flags 0x${info.flags.toString(16)} without NBD_FLAG_HAS_FLAGS`);
  return {
    size: info.size, flags: info.flags,
    minBlock: info.minBlock ?? 1, preferredBlock: info.preferredBlock ?? 4096, maxPayload: info.maxPayload ?? DEFAULT_MAX_PAYLOAD,
    structured,
  };
}

/** The exports the server lists (NBD_OPT_LIST), or null where it will not list them. */
export async function listExports(io: HandshakeIo): Promise<string[] | null> {
  await io.write(optionHeader(NBD_OPT_LIST, 0));
  const names: string[] = [];
  for (;;) {
    const r = await readOptionReply(io, NBD_OPT_LIST);
    if (r.type === NBD_REP_ACK) return names;
    if (r.type & NBD_REP_FLAG_ERROR) return null;
    if (r.type !== NBD_REP_SERVER) throw new NbdError(`server sent reply type ${r.type} to NBD_OPT_LIST`);
    if (r.data.length < 4 || r.data.readUInt32BE(0) > r.data.length - 4) throw new NbdError('server sent a malformed NBD_REP_SERVER');
    names.push(r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString('utf8'));
  }
}

/** Tells the server we are going (NBD_OPT_ABORT); its reply, if any, does not matter. */
async function abort(io: HandshakeIo): Promise<void> {
  try { await io.write(optionHeader(NBD_OPT_ABORT, 0)); } catch { /* going anyway */ }
}

const shown = (name: string): string => (name === '' ? 'the default export' : `export '${name}'`);

/**
 * The handshake on a fresh connection, ending in the transmission phase on
 * export `name` ('' : the server's default). `where` names the server in errors.
 * With `startTls`, NBD_OPT_STARTTLS comes first, and once the server agreed,
 * `startTls` returns the stream (TLS over the same connection) the rest goes through.
 */
export async function negotiate(io: HandshakeIo, name: string, where: string,
  startTls?: () => Promise<HandshakeIo>): Promise<ExportInfo> {
  const noZeroes = await greet(io);
  const nameBytes = checkName(name);
  if (startTls) {
    await io.write(optionHeader(NBD_OPT_STARTTLS, 0));
    const r = await readOptionReply(io, NBD_OPT_STARTTLS);
    if (r.type & NBD_REP_FLAG_ERROR) {
      await abort(io);
      throw new NbdError(`${where} does not do TLS (NBD_OPT_STARTTLS: ${describeError(r)})`);
    }
    if (r.type !== NBD_REP_ACK || r.data.length) throw new NbdError(`server sent reply type ${r.type} of ${r.data.length} bytes to NBD_OPT_STARTTLS`);
    io = await startTls();
  }
  // Structured replies (sparse reads) where the server has them; any refusal means simple replies.
  await io.write(optionHeader(NBD_OPT_STRUCTURED_REPLY, 0));
  const sr = await readOptionReply(io, NBD_OPT_STRUCTURED_REPLY);
  if (!(sr.type & NBD_REP_FLAG_ERROR) && (sr.type !== NBD_REP_ACK || sr.data.length)) {
    throw new NbdError(`server sent reply type ${sr.type} of ${sr.data.length} bytes to NBD_OPT_STRUCTURED_REPLY`);
  }
  const structured = sr.type === NBD_REP_ACK;
  const go = optionHeader(NBD_OPT_GO, 4 + nameBytes.length + 2 + 2);
  go.writeUInt32BE(nameBytes.length, 16);
  nameBytes.copy(go, 20);
  go.writeUInt16BE(1, 20 + nameBytes.length); // one information request:
  go.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 22 + nameBytes.length); // we honour size constraints
  await io.write(go);
  const info: Partial<ExportInfo> = {};
  for (;;) {
    const r = await readOptionReply(io, NBD_OPT_GO);
    if (r.type === NBD_REP_INFO) {
      exportInfoReply(r.data, info);
    } else if (r.type === NBD_REP_ACK) {
      if (r.data.length) throw new NbdError(`server sent NBD_REP_ACK with ${r.data.length} bytes of data`);
      return finish(info, structured);
    } else if (r.type === NBD_REP_ERR_UNSUP) {
      return exportName(io, nameBytes, noZeroes, structured);
    } else if (r.type === NBD_REP_ERR_UNKNOWN) {
      const names = await listExports(io).catch(() => null);
      await abort(io);
      throw new NbdError(`${where} has no ${shown(name)}` +
        (names === null ? '' : names.length ? ` (it has: ${names.map((n) => (n === '' ? "''" : n)).join(', ')})` : ' (it lists none)'));
    } else if (r.type === NBD_REP_ERR_TLS_REQD) {
      await abort(io);
      throw new NbdError(`${where} requires TLS for ${shown(name)}: give --tls-ca (and --tls-cert/--tls-key if it checks clients)`);
    } else if (r.type & NBD_REP_FLAG_ERROR) {
      await abort(io);
      throw new NbdError(`${where} refused ${shown(name)}: ${describeError(r)}`);
    } else {
      throw new NbdError(`server sent reply type ${r.type} to NBD_OPT_GO`);
    }
  }
}

/** NBD_OPT_EXPORT_NAME, for servers without NBD_OPT_GO: a missing export is a closed connection. */
async function exportName(io: HandshakeIo, nameBytes: Buffer, noZeroes: boolean, structured: boolean): Promise<ExportInfo> {
  const o = optionHeader(NBD_OPT_EXPORT_NAME, nameBytes.length);
  nameBytes.copy(o, 16);
  await io.write(o);
  const d = Buffer.from(await io.read(noZeroes ? 10 : 134));
  const size = d.readBigUInt64BE(0);
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw new NbdError(`server announced an export of ${size} bytes, too big`);
  return finish({ size: Number(size), flags: d.readUInt16BE(8) }, structured);
}
