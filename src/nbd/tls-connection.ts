// An NBD connection in the transmission phase over TLS: Node's TLS stream
// encrypts and decrypts on the serving thread's event loop, so requests wait
// there (TargetIo.hold) rather than on the ring. Replies are checked exactly
// as on the plain connection (connection.ts): anything wrong ends the
// connection and hands its requests back, never completing one twice.
import type net from 'node:net';
import type { UblkRequest } from '../ublk/worker/request.js';
import { NBD_CMD_WRITE, REQUEST_BYTES, SIMPLE_REPLY_BYTES } from './constants.js';
import { InFlight, SETTLED } from './in-flight.js';
import { encodeRequest, type SimpleReply } from './wire.js';

export interface TlsHost {
  hold(req: UblkRequest): void;
  replied(req: UblkRequest, result: number): void;
}

export class TlsConnection {
  private readonly inFlight = new InFlight();
  private readonly hdr = Buffer.alloc(SIMPLE_REPLY_BYTES);
  private readonly hdrView = new DataView(this.hdr.buffer, this.hdr.byteOffset, SIMPLE_REPLY_BYTES);
  private readonly reply: SimpleReply = { error: 0, handleLo: 0, handleHi: 0 };
  private got = 0;
  private dataSlot = -1;
  dead = false;
  /** Nothing of ours is on the ring. */
  readonly armed = false;

  constructor(private readonly host: TlsHost, private readonly socket: net.Socket,
    private readonly onDead: (pending: UblkRequest[], why: string) => void) {
    socket.on('data', (b: Buffer) => this.onData(b));
    socket.on('error', (e) => this.die(`TLS: ${e.message}`));
    socket.on('close', () => this.die('the server closed the connection'));
  }

  get busy(): number { return this.inFlight.count; }

  queue(req: UblkRequest, type: number, flags: number): void {
    this.host.hold(req);
    const slot = this.inFlight.add(req, type, flags);
    // The stream keeps what it is given until it is sent: a header of its own per request.
    const h = Buffer.allocUnsafe(REQUEST_BYTES);
    encodeRequest(new DataView(h.buffer, h.byteOffset, REQUEST_BYTES), 0, type, flags, slot, this.inFlight.seq(slot), req.offset, req.length);
    this.socket.cork();
    this.socket.write(h);
    if (type === NBD_CMD_WRITE) this.socket.write(req.buffer); // the request, and so its buffer, lives until the reply
    this.socket.uncork();
  }

  onCqe(): void { /* no ring operations */ }

  private onData(b: Buffer): void {
    let at = 0;
    while (at < b.length && !this.dead) {
      if (this.dataSlot >= 0) {
        const req = this.inFlight.req(this.dataSlot);
        const n = Math.min(b.length - at, req.length - this.got);
        req.buffer.set(b.subarray(at, at + n), this.got);
        at += n;
        this.got += n;
        if (this.got === req.length) {
          this.inFlight.release(this.dataSlot);
          this.dataSlot = -1;
          this.got = 0;
          this.host.replied(req, req.length);
        }
        continue;
      }
      const n = Math.min(b.length - at, SIMPLE_REPLY_BYTES - this.got);
      b.copy(this.hdr, this.got, at, at + n);
      at += n;
      this.got += n;
      if (this.got < SIMPLE_REPLY_BYTES) break;
      this.got = 0;
      this.onHeader();
    }
  }

  private onHeader(): void {
    const m = this.inFlight.settle(this.hdrView, 0, this.reply, this.host.replied);
    if (typeof m === 'string') this.die(m);
    else if (m !== SETTLED) this.dataSlot = m; // its data follows
  }

  die(why: string): void {
    if (this.dead) return;
    this.dead = true;
    this.socket.destroy();
    this.onDead(this.inFlight.drain(), why);
  }
}
