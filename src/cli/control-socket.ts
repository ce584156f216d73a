// A running server's own control channel: a Unix socket per device,
// /run/ublk-ts/ID.sock, only for root (mode 0600), for what only the server
// can do because only it holds the target (`resize` changes the target's
// size before the kernel's). One JSON request per connection, one JSON reply.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { STATE_DIR } from './state.js';

export type ControlRequest = { op: 'resize'; size: number };
export type ControlReply = { ok: true } | { ok: false; error: string };

export const socketPath = (id: number): string => path.join(STATE_DIR, `${id}.sock`);

/** Serves requests on device `id`'s socket until the returned close() is called. */
export function listenControl(id: number, handle: (req: ControlRequest) => Promise<void>): { close(): void } {
  const file = socketPath(id);
  fs.rmSync(file, { force: true }); // a dead server's
  const server = net.createServer((conn) => {
    let text = '';
    conn.setEncoding('utf8');
    conn.on('data', (d: string) => {
      text += d;
      if (!text.includes('\n')) return;
      let reply: Promise<ControlReply>;
      try {
        reply = handle(JSON.parse(text) as ControlRequest).then(() => ({ ok: true }) as const);
      } catch (e) {
        reply = Promise.reject(e);
      }
      void reply.catch((e: unknown) => ({ ok: false, error: (e as Error)?.message ?? String(e) }) as const)
        .then((r) => conn.end(JSON.stringify(r) + '\n'));
    });
    conn.on('error', () => {});
  });
  server.listen(file, () => fs.chmodSync(file, 0o600));
  server.unref(); // the device, not this socket, keeps the server running
  return {
    close: () => {
      server.close();
      fs.rmSync(file, { force: true });
    },
  };
}

/** Sends one request to device `id`'s server; throws its error, or if no server answers. */
export function askServer(id: number, req: ControlRequest, timeoutMs = 60_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const conn = net.connect(socketPath(id));
    let text = '';
    const timer = setTimeout(() => conn.destroy(new Error(`the server of device ${id} did not answer within ${timeoutMs / 1000} s`)), timeoutMs);
    conn.setEncoding('utf8');
    conn.on('connect', () => conn.write(JSON.stringify(req) + '\n'));
    conn.on('data', (d: string) => (text += d));
    conn.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
        ? new Error(`device ${id} has no ublk-ts server to ask (${e.code}): its server is gone, or not ours`) : e);
    });
    conn.on('end', () => {
      clearTimeout(timer);
      try {
        const r = JSON.parse(text) as ControlReply;
        if (r.ok) resolve();
        else reject(new Error(r.error));
      } catch {
        reject(new Error(`the server of device ${id} gave no answer`));
      }
    });
  });
}
