// The nbd target: a block device in front of an NBD server (qemu-nbd, nbdkit,
// nbd-server), over TCP or a Unix socket.
//
// `setup` (main thread) does one handshake to learn the export's size, block
// size constraints and transmission flags: a read-only export gives a
// read-only device, and flush, FUA, discard and write-zeroes are announced only
// where the export has them. Every serving thread then opens its own
// connection(s), handshakes, and moves all requests and replies through its
// own io_uring (src/nbd/connection.ts): no thread hop per request.
//
//   block request      NBD command
//   READ / WRITE       NBD_CMD_READ / NBD_CMD_WRITE (FUA: NBD_CMD_FLAG_FUA)
//   FLUSH              NBD_CMD_FLUSH
//   DISCARD            NBD_CMD_TRIM
//   WRITE_ZEROES       NBD_CMD_WRITE_ZEROES (NOUNMAP: NBD_CMD_FLAG_NO_HOLE)
//
// Every copy mode works. With --copy zero each byte crosses memory once, as
// in the kernel's NBD client (socket to the request's pages and back, see
// src/nbd/connection.ts); kernel and user copy move it through the tag buffer.
//
// Structured replies are used where the server has them (sparse reads: a
// hole arrives as a chunk header, not as zeros on the wire; src/nbd/reply-parser.ts).
//
// A dropped connection is made again while its requests wait, up to
// --timeout (src/nbd/queue.ts). With --tls-ca the connections use TLS
// (NBD_OPT_STARTTLS, the server's certificate verified against that CA); Node
// then does the socket IO and the cryptography, on the same serving thread's
// event loop (src/nbd/tls-connection.ts).
import fs from 'node:fs';
import { defineTarget, TargetOptionError, type TargetOptions } from '../ublk/target.js';
import {
  NBD_DEFAULT_PORT, NBD_FLAG_CAN_MULTI_CONN, NBD_FLAG_READ_ONLY, NBD_FLAG_SEND_FLUSH, NBD_FLAG_SEND_FUA, NBD_FLAG_SEND_TRIM, NBD_FLAG_SEND_WRITE_ZEROES,
} from '../nbd/constants.js';
import { NbdError, type ExportInfo } from '../nbd/handshake.js';
import { NbdQueue } from '../nbd/queue.js';
import { FLUSH_GUARD_BYTES } from '../nbd/flush-guard.js';
import { disconnect, openNbd, type TlsConfig } from '../nbd/open.js';
import { describeAddress, type NbdAddress } from '../nbd/socket-io.js';

interface Options extends TargetOptions {
  host?: string; port: number; socket?: string; export?: string; connections: number; timeout: number;
  tlsCa?: string; tlsCert?: string; tlsKey?: string; tlsHostname?: string;
}

interface Shared {
  address: NbdAddress; exportName: string; size: number; flags: number; maxPayload: number; timeoutMs: number; tls?: TlsConfig;
  /** FlushGuard's counters, the device's (its threads share them). */
  flushGuard: SharedArrayBuffer;
}

const MAX_CONNECTIONS = 16;

function address(o: Options): NbdAddress {
  if ((o.host === undefined) === (o.socket === undefined)) {
    throw new TargetOptionError(o.host === undefined ? 'nbd needs --host HOST or --socket PATH' : '--host and --socket exclude each other: give one');
  }
  if (o.socket !== undefined) {
    if (o.socket === '') throw new TargetOptionError('--socket needs a path');
    return { path: o.socket };
  }
  if (o.host === '') throw new TargetOptionError('--host needs a name or address');
  return { host: o.host!, port: o.port };
}

/** The TLS options checked and their files read, or undefined without --tls-ca. */
function tlsConfig(o: Options): TlsConfig | undefined {
  if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) {
    throw new TargetOptionError(o.tlsCert === undefined ? '--tls-key needs --tls-cert (the client certificate it belongs to)' : '--tls-cert needs --tls-key (its private key)');
  }
  if (o.tlsCa === undefined) {
    const stray = o.tlsCert !== undefined ? '--tls-cert' : o.tlsHostname !== undefined ? '--tls-hostname' : null;
    if (stray) throw new TargetOptionError(`${stray} needs --tls-ca (the CA that signed the server's certificate)`);
    return undefined;
  }
  const read = (flag: string, file: string): string => {
    try {
      return fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw new TargetOptionError(`cannot read ${flag} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  };
  return {
    ca: read('--tls-ca', o.tlsCa),
    cert: o.tlsCert === undefined ? undefined : read('--tls-cert', o.tlsCert),
    key: o.tlsKey === undefined ? undefined : read('--tls-key', o.tlsKey),
    hostname: o.tlsHostname,
  };
}

/** The device's logical block: 512, or 4096 where the export's minimum block is bigger than 512. */
function logicalBlock(info: ExportInfo, where: string): number {
  if (info.minBlock <= 512) return 512;
  if (info.minBlock <= 4096) return 4096;
  throw new TargetOptionError(`${where} needs blocks of ${info.minBlock} bytes; ublk devices have 512 or 4096`);
}

export default defineTarget<Options, Shared>({
  name: 'nbd',
  recoverable: true,
  options: [
    { key: 'host', type: 'string', arg: 'HOST', help: 'the NBD server\'s host name or address (TCP)' },
    { key: 'port', type: 'int', arg: 'PORT', min: 1, max: 65535, default: NBD_DEFAULT_PORT, help: 'the NBD server\'s TCP port' },
    { key: 'socket', type: 'string', arg: 'PATH', help: 'the NBD server\'s Unix socket (instead of --host)' },
    { key: 'export', type: 'string', arg: 'NAME', help: 'the export\'s name (default: the server\'s default export)' },
    { key: 'connections', type: 'int', arg: 'N', min: 1, max: MAX_CONNECTIONS, default: 1, help: 'connections per serving thread' },
    { key: 'tlsCa', type: 'string', arg: 'FILE', help: 'use TLS (NBD_OPT_STARTTLS); the server\'s certificate must be signed by this CA (PEM)' },
    { key: 'tlsCert', type: 'string', arg: 'FILE', help: 'with --tls-ca: our client certificate (PEM), for servers that check clients' },
    { key: 'tlsKey', type: 'string', arg: 'FILE', help: 'with --tls-cert: its private key (PEM)' },
    { key: 'tlsHostname', type: 'string', arg: 'NAME', help: 'with --tls-ca: the name the server\'s certificate must carry (default: --host; with --socket: none checked)' },
    { key: 'timeout', type: 'int', arg: 'SECONDS', min: 1, max: 3600, default: 30, help: 'how long a request waits for its reply, and requests for the server to come back (and a connection for its handshake), before the connection is made again or they fail with EIO' },
  ],
  async setup(o, device) {
    const a = address(o);
    if (o.socket !== undefined && o.port !== NBD_DEFAULT_PORT) throw new TargetOptionError('--port only applies with --host');
    const where = describeAddress(a);
    const timeoutMs = o.timeout * 1000;
    const tls = tlsConfig(o);
    let info: ExportInfo;
    try {
      const c = await openNbd(a, o.export ?? '', timeoutMs, tls);
      disconnect(c.socket);
      info = c.info;
    } catch (e) {
      if (e instanceof NbdError) throw new TargetOptionError(e.message);
      throw e;
    }
    // Without it, a FLUSH on one connection need not cover writes that went through another.
    const threads = device?.threads ?? 1, total = o.connections * threads;
    if (total > 1 && !(info.flags & NBD_FLAG_CAN_MULTI_CONN)) {
      const why = threads > 1 ? `${threads} serving threads (--queues/--threads) × --connections ${o.connections}` : `--connections ${o.connections}`;
      throw new TargetOptionError(`${why}: ${where} does not allow several connections to the export (no NBD_FLAG_CAN_MULTI_CONN); use one queue and one connection`);
    }
    const lbs = logicalBlock(info, where);
    const size = info.size - (info.size % lbs);
    if (size === 0) throw new TargetOptionError(`${where}: the export holds ${info.size} bytes, less than one ${lbs}-byte block`);
    const f = info.flags;
    return {
      size,
      logicalBlockSize: lbs,
      readOnly: (f & NBD_FLAG_READ_ONLY) !== 0,
      caps: {
        flush: (f & NBD_FLAG_SEND_FLUSH) !== 0, fua: (f & NBD_FLAG_SEND_FUA) !== 0,
        discard: (f & NBD_FLAG_SEND_TRIM) !== 0, writeZeroes: (f & NBD_FLAG_SEND_WRITE_ZEROES) !== 0,
      },
      // The data moves by io_uring between the socket and the tag buffer
      // (req.bufferAddress) or, in zero copy, the request's pages, where
      // staged READ data goes with user copy.
      data: 'ring-and-user-copy',
      maxIoBytes: info.maxPayload, // the kernel splits bigger IO
      shared: {
        address: a, exportName: o.export ?? '', size: info.size, flags: f, maxPayload: info.maxPayload, timeoutMs, tls,
        flushGuard: new SharedArrayBuffer(FLUSH_GUARD_BYTES),
      },
    };
  },
  async open(ctx) {
    const s = ctx.shared, where = describeAddress(s.address);
    if (ctx.maxIoBytes > s.maxPayload) {
      throw new Error(`${where} takes requests of at most ${s.maxPayload} bytes, but the device's are up to ${ctx.maxIoBytes}`);
    }
    const q = new NbdQueue(ctx.io, { ...s, connections: ctx.options.connections, userCopyFd: ctx.io.copy === 'zero' ? ctx.io.charFd : -1 });
    try {
      await q.connect();
    } catch (e) {
      q.close();
      throw e;
    }
    return q;
  },
});
