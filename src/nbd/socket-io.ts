// HandshakeIo over a Node socket, and the connection it ends up as: after the
// handshake the socket's fd is handed to a serving thread's io_uring, so
// Node must stop reading it first (and must not have read past the handshake).
import net from 'node:net';
import { NbdError, type HandshakeIo } from './handshake.js';

export type NbdAddress = { host: string; port: number } | { path: string };

export const describeAddress = (a: NbdAddress): string => ('path' in a ? `NBD server at ${a.path}` : `NBD server at ${a.host}:${a.port}`);

export class SocketIo implements HandshakeIo {
  private chunks: Buffer[] = [];
  private have = 0;
  private want = 0;
  private waiter: { resolve: (b: Uint8Array) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;
  private readonly onData = (b: Buffer): void => {
    this.chunks.push(b);
    this.have += b.length;
    this.deliver();
  };
  private readonly onError = (e: Error): void => this.fail(new NbdError(`${this.where}: ${this.layer}${e.message}`));
  private readonly onClose = (): void => this.fail(new NbdError(`${this.where} closed the connection during the handshake`));

  /** `layer` prefixes socket errors, e.g. 'TLS: '. */
  constructor(readonly socket: net.Socket, private readonly where: string, private readonly layer = '') {
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
  }

  private fail(e: Error): void {
    this.failure ??= e;
    const w = this.waiter;
    this.waiter = null;
    w?.reject(this.failure);
  }

  /** Ends this reader's part: the server must have sent nothing beyond what was read. */
  release(): void {
    this.socket.off('data', this.onData);
    this.socket.off('error', this.onError);
    this.socket.off('close', this.onClose);
    if (this.have) throw new NbdError(`${this.where} sent ${this.have} unexpected bytes after the handshake`);
  }

  read(n: number): Promise<Uint8Array> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.want = n;
      this.waiter = { resolve, reject };
      this.deliver();
    });
  }

  write(bytes: Uint8Array): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => this.socket.write(bytes, (e) => (e ? reject(new NbdError(`${this.where}: ${e.message}`)) : resolve())));
  }

  private deliver(): void {
    if (!this.waiter || this.have < this.want) return;
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, this.want);
    const rest = all.subarray(this.want);
    this.chunks = rest.length ? [rest] : [];
    this.have = rest.length;
    const w = this.waiter;
    this.waiter = null;
    w.resolve(out);
  }

  /**
   * Stops Node reading the socket and returns its fd for io_uring. The server
   * must have sent nothing beyond the handshake. The socket stays open until
   * `socket.destroy()`.
   */
  detach(): number {
    this.socket.pause();
    this.release();
    this.socket.on('error', () => {}); // Node no longer reads or writes it: an error here is seen on the ring
    const handle = (this.socket as unknown as { _handle?: { fd?: number; readStop?: () => number } })._handle;
    handle?.readStop?.();
    const fd = handle?.fd;
    if (typeof fd !== 'number' || fd < 0) throw new NbdError(`${this.where}: the connection has no file descriptor`);
    return fd;
  }
}

/** A connected socket (TCP with TCP_NODELAY, or Unix); rejects with an NbdError after `timeoutMs`. */
export function connectSocket(a: NbdAddress, timeoutMs: number): Promise<net.Socket> {
  const where = describeAddress(a);
  return new Promise((resolve, reject) => {
    const s = 'path' in a ? net.connect({ path: a.path }) : net.connect({ host: a.host, port: a.port, noDelay: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new NbdError(`${where}: no connection after ${timeoutMs / 1000} s`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(new NbdError(`cannot connect to ${where}: ${(e as NodeJS.ErrnoException).code ?? e.message}`));
    });
  });
}
