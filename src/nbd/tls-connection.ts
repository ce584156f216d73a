// An NBD connection in the transmission phase over TLS: Node's TLS stream
// encrypts and decrypts on the serving thread's event loop, so requests wait
// there (TargetIo.hold) rather than on the ring. Replies are checked exactly
// as on the plain connection (connection.ts): anything wrong ends the
// connection and hands its requests back, never completing one twice. In
// zero copy a WRITE's payload is read from /dev/ublkcN (user copy) into a
// buffer of its own for the stream, and READ data goes there (the parser).
import type net from 'node:net';
import type { UblkRequest } from '../ublk/worker/request.js';
import { NBD_CMD_WRITE, REQUEST_BYTES } from './constants.js';
import { EIO } from '../sys.js';
import { InFlight } from './in-flight.js';
import { ReplyParser, SCRATCH_BYTES } from './reply-parser.js';
import { encodeRequest } from './wire.js';

export interface TlsHost {
  hold(req: UblkRequest): void;
  replied(req: UblkRequest, result: number): void;
}

export class TlsConnection {
  private readonly inFlight = new InFlight();
  private readonly scratch = Buffer.alloc(SCRATCH_BYTES);
  private readonly parser: ReplyParser;
  dead = false;
  /** Nothing of ours is on the ring. */
  readonly armed = false;

  constructor(private readonly host: TlsHost, private readonly socket: net.Socket, structured: boolean,
    private readonly onDead: (pending: UblkRequest[], why: string) => void,
    /** Zero copy: /dev/ublkcN (-1: requests have tag buffers). */
    private readonly userCopyFd = -1) {
    this.parser = new ReplyParser(this.inFlight, new DataView(this.scratch.buffer, this.scratch.byteOffset, SCRATCH_BYTES), structured, host.replied,
      userCopyFd);
    socket.on('data', (b: Buffer) => this.onData(b));
    socket.on('error', (e) => this.die(`TLS: ${e.message}`));
    socket.on('close', () => this.die('the server closed the connection'));
  }

  get busy(): number { return this.inFlight.count; }
  longestWait(now: number): number { return this.inFlight.longestWait(now); }

  queue(req: UblkRequest, type: number, flags: number): void {
    this.host.hold(req);
    let payload: Uint8Array | null = null;
    if (type === NBD_CMD_WRITE) {
      // The request, and so its buffer, lives until the reply; in zero copy its data is read out first.
      payload = this.userCopyFd < 0 ? req.buffer : this.readPayload(req);
      if (payload === null) {
        this.host.replied(req, -EIO);
        return;
      }
    }
    const slot = this.inFlight.add(req, type, flags);
    // The stream keeps what it is given until it is sent: a header of its own per request.
    const h = Buffer.allocUnsafe(REQUEST_BYTES);
    encodeRequest(new DataView(h.buffer, h.byteOffset, REQUEST_BYTES), 0, type, flags, slot, this.inFlight.seq(slot), req.offset, req.length);
    this.socket.cork();
    this.socket.write(h);
    if (payload !== null) this.socket.write(payload);
    this.socket.uncork();
  }

  /** Zero copy: a WRITE's data, from its pages (user copy); null if the driver refused. */
  private readPayload(req: UblkRequest): Uint8Array | null {
    const b = Buffer.allocUnsafe(req.length);
    const n = req.readPages(this.userCopyFd, b, 0, req.length);
    return n === req.length ? b : null;
  }

  onCqe(): void { /* no ring operations */ }

  private onData(b: Buffer): void {
    if (this.dead) return;
    const bad = this.parser.feed(b, 0, b.length);
    if (bad !== null) this.die(bad);
  }

  die(why: string): void {
    if (this.dead) return;
    this.dead = true;
    this.socket.destroy();
    this.onDead(this.inFlight.drain(), why);
  }
}
