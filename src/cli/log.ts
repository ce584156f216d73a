// The detached server's log: every line of its stderr (its own and its
// serving threads') with a timestamp, first into the shared start-up log and,
// once the device has an id, into that device's own file.
import fs from 'node:fs';

export class ServerLog {
  private fd: number;
  private atLineStart = true;

  /** Takes over process.stderr, writing to `fd` (the start-up log the parent opened). */
  constructor(fd = 2) {
    this.fd = fd;
    const write = (chunk: string | Uint8Array, enc?: unknown, cb?: unknown): boolean => {
      this.write(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
      const done = typeof enc === 'function' ? enc : cb;
      if (typeof done === 'function') (done as () => void)();
      return true;
    };
    process.stderr.write = write as typeof process.stderr.write;
  }

  /** From now on, into `file` (appended). */
  moveTo(file: string): void {
    const fd = fs.openSync(file, 'a');
    if (this.fd !== 2) fs.closeSync(this.fd);
    this.fd = fd;
    this.atLineStart = true;
  }

  private write(text: string): void {
    let out = '';
    for (const part of text.split(/(?<=\n)/)) {
      if (this.atLineStart && part !== '') out += `${new Date().toISOString()} `;
      out += part;
      this.atLineStart = part.endsWith('\n');
    }
    try {
      fs.writeSync(this.fd, out);
    } catch {
      // a full or vanished log must not stop the server
    }
  }
}
