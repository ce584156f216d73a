// A connection to an export, through the handshake and ready for the
// transmission phase: the socket and its fd (for io_uring), and what the
// server told of the export. With TLS, the socket is the TLS stream instead
// (fd -1): Node encrypts and decrypts, on the serving thread's event loop.
import net from 'node:net';
import tls from 'node:tls';
import { negotiate, NbdError, type ExportInfo } from './handshake.js';
import { NBD_CMD_DISC, REQUEST_BYTES } from './constants.js';
import { encodeRequest } from './wire.js';
import { connectSocket, describeAddress, SocketIo, type NbdAddress } from './socket-io.js';

/** X.509 material (PEM) for NBD_OPT_STARTTLS; the server's certificate is always verified against `ca`. */
export interface TlsConfig {
  ca: string;
  cert?: string;
  key?: string;
  /** The name the server's certificate must carry (default: the host; over a Unix socket: the chain only is checked). */
  hostname?: string;
}

export interface OpenExport { socket: net.Socket; fd: number; info: ExportInfo }

function startTls(io: SocketIo, a: NbdAddress, t: TlsConfig, where: string): () => Promise<SocketIo> {
  return () => new Promise((resolve, reject) => {
    io.release();
    const name = t.hostname ?? ('host' in a ? a.host : undefined);
    const s = tls.connect({
      socket: io.socket, ca: t.ca, cert: t.cert, key: t.key, servername: name !== undefined && net.isIP(name) === 0 ? name : undefined,
      // Over a Unix socket without --tls-hostname there is no name to check: the chain to --tls-ca is.
      checkServerIdentity: name === undefined ? () => undefined : (_h, cert) => tls.checkServerIdentity(name, cert),
    });
    s.once('secureConnect', () => {
      s.off('error', onError);
      resolve(new SocketIo(s, where, 'TLS: '));
    });
    const onError = (e: Error): void => reject(new NbdError(`${where}: TLS: ${e.message}`));
    s.once('error', onError);
  });
}

export async function openNbd(a: NbdAddress, exportName: string, timeoutMs: number, t?: TlsConfig): Promise<OpenExport> {
  const where = describeAddress(a);
  const plain = await connectSocket(a, timeoutMs);
  let socket: net.Socket = plain;
  try {
    let io = new SocketIo(plain, where);
    const timer = setTimeout(() => plain.destroy(new Error(`no handshake after ${timeoutMs / 1000} s ` +
      '(a server that has as many clients as it takes keeps new ones waiting: e.g. qemu-nbd --shared N)')), timeoutMs);
    let info: ExportInfo;
    try {
      info = await negotiate(io, exportName, where, t && (async () => {
        io = await startTls(io, a, t, where)();
        socket = io.socket;
        return io;
      }));
    } finally {
      clearTimeout(timer);
    }
    if (t) {
      io.release();
      return { socket, fd: -1, info };
    }
    return { socket, fd: io.detach(), info };
  } catch (e) {
    socket.destroy();
    plain.destroy();
    throw e;
  }
}

/**
 * Ends a connection in the transmission phase with no request in flight as
 * the specification asks: NBD_CMD_DISC, then closing our side.
 */
export function disconnect(socket: net.Socket): void {
  const disc = Buffer.alloc(REQUEST_BYTES);
  encodeRequest(new DataView(disc.buffer, disc.byteOffset, REQUEST_BYTES), 0, NBD_CMD_DISC, 0, 0, 0, 0, 0);
  socket.on('error', () => {}); // a server already gone: nothing to tell it
  socket.end(disc);
  socket.destroySoon();
}
