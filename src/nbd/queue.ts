// What serves one thread's requests for the nbd target: its connections to
// the export, and what happens when one drops.
//
// A request goes to the least busy live connection. When a connection dies
// (closed, a send or recv error, a reply that breaks the protocol), the
// requests it had no reply for are sent again on another live connection; with
// none left they wait while the connection is made again, with backoff
// (100 ms doubling up to 2 s). Once --timeout has passed since the drop, the
// waiting requests fail with EIO, and so does each later request for which one
// more attempt fails: a server gone for good is an error, never a hang. A
// connection on which a request has waited --timeout for its reply (a stopped
// or stuck server, a peer gone without a word, a reply lost) counts as
// dropped, so such requests fail within about twice --timeout. A
// request is completed once only: a dead connection forgets its requests
// before they are handed on, and ignores anything that still arrives on it.
import type net from 'node:net';
import { EIO } from '../sys.js';
import { PENDING, type IoResult, type Target, type TargetIo } from '../ublk/target.js';
import type { UblkRequest } from '../ublk/worker/request.js';
import {
  UBLK_IO_OP_DISCARD, UBLK_IO_OP_FLUSH, UBLK_IO_OP_READ, UBLK_IO_OP_WRITE, UBLK_IO_OP_WRITE_ZEROES,
} from '../ublk/abi/uapi.js';
import {
  NBD_CMD_FLAG_FUA, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_FLUSH, NBD_CMD_READ, NBD_CMD_TRIM, NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES,
} from './constants.js';
import { NbdConnection, subConn, type ConnectionHost } from './connection.js';
import { disconnect, openNbd, type TlsConfig } from './open.js';
import { TlsConnection } from './tls-connection.js';
import { describeAddress, type NbdAddress } from './socket-io.js';
import { FlushGuard } from './flush-guard.js';

/** A request sent this often without a reply fails with EIO (a server that breaks the protocol on it every time). */
const MAX_SENDS = 4;
const FIRST_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 2000;
/** How often the watchdog looks at the connections (a quarter of --timeout where that is less). */
const WATCH_MS = 1000;
/** Requests sent between two looks from the send path: a loop that never yields to the event loop starves the timer. */
const WATCH_SENDS = 4096;

/** The NBD command for a block request. */
function commandOf(req: UblkRequest): number {
  switch (req.op) {
    case UBLK_IO_OP_READ: return NBD_CMD_READ;
    case UBLK_IO_OP_WRITE: return NBD_CMD_WRITE;
    case UBLK_IO_OP_FLUSH: return NBD_CMD_FLUSH;
    case UBLK_IO_OP_DISCARD: return NBD_CMD_TRIM;
    case UBLK_IO_OP_WRITE_ZEROES: return NBD_CMD_WRITE_ZEROES;
    default: return -1;
  }
}

/** Its command flags: FUA where the request has it, NO_HOLE for WRITE_ZEROES with NOUNMAP. */
const flagsOf = (req: UblkRequest): number =>
  (req.fua ? NBD_CMD_FLAG_FUA : 0) | (req.op === UBLK_IO_OP_WRITE_ZEROES && req.noUnmap ? NBD_CMD_FLAG_NO_HOLE : 0);

export interface QueueConfig {
  address: NbdAddress;
  exportName: string;
  /** What setup learnt: a server that comes back with another export is refused. */
  size: number;
  flags: number;
  connections: number;
  timeoutMs: number;
  tls?: TlsConfig;
  /** Zero copy: /dev/ublkcN, for data put into a request's pages outside the ring (-1: requests have tag buffers). */
  userCopyFd: number;
  /** The device's FlushGuard counters (FLUSH_GUARD_BYTES), shared by its serving threads. */
  flushGuard: SharedArrayBuffer;
}

/** A connection in the transmission phase: on the ring (connection.ts) or over TLS (tls-connection.ts). */
type Connection = NbdConnection | TlsConnection;

export class NbdQueue implements Target {
  /** Every connection made, by the index in its SQEs' sub (a dead one keeps its place, so its late CQEs find it). */
  private readonly conns: Connection[] = [];
  private readonly sockets: (net.Socket | null)[] = [];
  private readonly live: Connection[] = [];
  /** Requests waiting for a connection (held: the serving loop keeps the event loop running). */
  private waiting: UblkRequest[] = [];
  private connecting = false;
  /** Until when requests wait for a connection: --timeout after the last one dropped (0: none dropped). */
  private outageUntil = 0;
  private closed = false;
  private readonly where: string;
  private readonly host: ConnectionHost;
  /** How often requests lost with a connection have been sent (only those: the common path never touches it). */
  private readonly sends = new Map<UblkRequest, number>();
  private readonly watch: ReturnType<typeof setInterval>;
  private sentSinceWatch = 0;
  private readonly guard: FlushGuard;

  constructor(private readonly io: TargetIo, private readonly cfg: QueueConfig) {
    this.where = describeAddress(cfg.address);
    this.guard = new FlushGuard(cfg.flushGuard);
    this.host = {
      ring: io.ring, ownSqe: (sub) => io.ownSqe(sub), reserve: (n) => io.reserve(n),
      replied: (req, r) => this.done(req, r),
    };
    this.watch = setInterval(() => this.endOverdue(), Math.min(WATCH_MS, cfg.timeoutMs / 4));
    this.watch.unref();
  }

  /** Opens the configured connections (the serving thread's start: failures are the caller's). */
  async connect(): Promise<void> {
    while (this.live.length < this.cfg.connections) await this.addConnection();
  }

  read(req: UblkRequest): IoResult { return this.send(req); }
  write(req: UblkRequest): IoResult { return this.send(req); }
  flush(req: UblkRequest): IoResult { return this.send(req); }
  discard(req: UblkRequest): IoResult { return this.send(req); }
  writeZeroes(req: UblkRequest): IoResult { return this.send(req); }

  onOwnCqe(res: number, _flags: number, sub: number): void {
    const i = subConn(sub), conn = this.conns[i]!;
    conn.onCqe(sub, res);
    // A dead connection's socket is closed only once none of our operations names its fd:
    // a new connection may get the same number, and a late SQE would hit that one.
    if (conn.dead && !conn.armed && this.sockets[i]) {
      this.sockets[i]!.destroy();
      this.sockets[i] = null;
    }
  }

  close(): void {
    this.closed = true;
    clearInterval(this.watch);
    // Every request has completed when the queue stops: the live connections can say goodbye.
    for (let i = 0; i < this.conns.length; i++) {
      const s = this.sockets[i];
      if (s === null || s === undefined) continue;
      if (this.conns[i]!.dead) s.destroy();
      else disconnect(s);
    }
    this.failWaiting();
  }

  /** Every request ends here, once. */
  private done(req: UblkRequest, result: number): void {
    if (this.sends.size) this.sends.delete(req);
    const r = this.guard.completed(req, result);
    if (r !== result) console.error(`ublk-ts: nbd: a FLUSH fails with EIO: writes acknowledged before all connections to ${this.where} dropped were never flushed, and may be lost`);
    this.io.complete(req, r);
  }

  private send(req: UblkRequest): IoResult {
    if (++this.sentSinceWatch === WATCH_SENDS) this.endOverdue();
    this.guard.sending(req);
    const c = this.pick();
    if (c !== null) {
      c.queue(req, commandOf(req), flagsOf(req));
      return PENDING;
    }
    if (this.closed) return -EIO;
    this.io.hold(req);
    this.waiting.push(req);
    if (!this.connecting) this.io.background(this.reconnect());
    return PENDING;
  }

  /** The least busy live connection, or null. */
  private pick(): Connection | null {
    let best: Connection | null = null;
    for (const c of this.live) if (best === null || c.busy < best.busy) best = c;
    return best;
  }

  private async addConnection(): Promise<void> {
    const c = await openNbd(this.cfg.address, this.cfg.exportName, this.cfg.timeoutMs, this.cfg.tls);
    if (c.info.size !== this.cfg.size || c.info.flags !== this.cfg.flags) {
      c.socket.destroy();
      throw new Error(`${this.where} now has another export (size ${c.info.size}, flags 0x${c.info.flags.toString(16)}) than when the device was made`);
    }
    if (this.closed) {
      c.socket.destroy();
      return;
    }
    const index = this.conns.length;
    const onDead = (pending: UblkRequest[], why: string): void => this.dead(index, pending, why);
    const conn = c.fd < 0 ? new TlsConnection({ hold: (req) => this.io.hold(req), replied: this.host.replied }, c.socket, c.info.structured, onDead, this.cfg.userCopyFd)
      : new NbdConnection(this.host, c.fd, index, c.info.structured, onDead, this.cfg.userCopyFd);
    this.conns.push(conn);
    this.sockets.push(c.socket);
    this.live.push(conn);
    this.guard.connected();
  }

  /**
   * Ends each connection on which a request has waited --timeout for its
   * reply, as the kernel's NBD client does with a timeout set: a server that
   * stopped (SIGSTOP, stuck on its own storage), a peer gone without a word
   * (power lost, a network partition) or a reply lost leaves the socket open,
   * and the requests would wait forever. They are sent again, or fail, as
   * those of any lost connection.
   */
  private endOverdue(): void {
    this.sentSinceWatch = 0;
    const now = Date.now();
    for (let i = this.live.length - 1; i >= 0; i--) { // die() takes the connection out of `live`
      const c = this.live[i]!;
      if (c.busy > 0 && c.longestWait(now) >= this.cfg.timeoutMs) {
        c.die(`no reply for ${this.cfg.timeoutMs / 1000} s, with ${c.busy} requests waiting`);
      }
    }
  }

  private dead(index: number, pending: UblkRequest[], why: string): void {
    const conn = this.conns[index]!;
    this.live.splice(this.live.indexOf(conn), 1); // its socket is closed once its last operation is done (onOwnCqe)
    const atRisk = this.guard.dropped();
    if (this.closed) {
      for (const req of pending) this.done(req, -EIO);
      return;
    }
    console.error(`ublk-ts: nbd: connection to ${this.where} lost (${why}); ${pending.length} requests to send again` +
      (atRisk ? '; writes acknowledged since the last FLUSH may be lost with it: the next FLUSH fails with EIO' : ''));
    if (this.live.length === 0 && this.outageUntil === 0) this.outageUntil = Date.now() + this.cfg.timeoutMs;
    for (const req of pending) {
      const n = (this.sends.get(req) ?? 1) + 1;
      if (n > MAX_SENDS) {
        this.done(req, -EIO);
      } else {
        this.sends.set(req, n);
        this.send(req); // on another live connection, or waiting for one
      }
    }
    // (With nothing waiting, the device may be idle: the serving loop must still let the attempt run.)
    if (!this.connecting) this.io.background(this.reconnect());
  }

  /** Makes connections until there are enough again, or gives up on the waiting requests at the deadline. */
  private async reconnect(): Promise<void> {
    this.connecting = true;
    let backoff = FIRST_BACKOFF_MS;
    while (!this.closed && this.live.length < this.cfg.connections) {
      try {
        await this.addConnection();
        backoff = FIRST_BACKOFF_MS;
        this.outageUntil = 0;
        console.error(`ublk-ts: nbd: connected to ${this.where} again`);
        this.resend();
        continue;
      } catch (e) {
        if (Date.now() >= this.outageUntil && this.waiting.length) {
          console.error(`ublk-ts: nbd: ${this.where} unreachable (${(e as Error).message}); ${this.waiting.length} requests fail with EIO`);
          this.failWaiting();
        }
        // Nothing waits: the next request that finds no connection tries again.
        if (this.waiting.length === 0) break;
      }
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(2 * backoff, MAX_BACKOFF_MS);
    }
    this.connecting = false;
  }

  private resend(): void {
    const w = this.waiting;
    this.waiting = [];
    for (const req of w) this.send(req);
  }

  private failWaiting(): void {
    const w = this.waiting;
    this.waiting = [];
    for (const req of w) this.done(req, -EIO);
  }
}
