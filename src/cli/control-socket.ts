// Unix sockets a running server answers on, only for root (mode 0600): one
// JSON request per connection, one JSON reply. A device's own socket,
// /run/ublk-ts/ID.sock, is for what only its server can do because only it
// holds the target (`resize` changes the target's size before the kernel's);
// the daemon's, /run/ublk-ts/daemon.sock, is how `add` and `del` reach it.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { STATE_DIR } from './state.js';
import { ensureRunDir, runDirProblem } from '../run-dir.js';

export type ControlRequest = { op: 'resize'; size: number };
export type Reply<T> = ({ ok: true } & T) | { ok: false; error: string; exitCode?: number };

export const socketPath = (id: number): string => path.join(STATE_DIR, `${id}.sock`);

/** A request longer than this (no newline yet) ends its connection. */
const MAX_REQUEST_CHARS = 1 << 20;

/** An error a handler throws with the exit code the asking command should end with. */
export interface CodedError extends Error { exitCode?: number }

/**
 * Answers requests on the socket `file` until the returned close() is called.
 * `handle` is given a signal that fires should the asker go away before its answer.
 */
export function listenJson<Req, T extends object>(file: string, handle: (req: Req, asker: AbortSignal) => Promise<T>, keepAlive = false): { close(): void } {
  ensureRunDir();
  fs.rmSync(file, { force: true }); // a dead server's
  const server = net.createServer((conn) => {
    let text = '';
    let answered = false;
    const asker = new AbortController();
    conn.on('close', () => {
      if (!answered) asker.abort(new Error('the asking command went away'));
    });
    conn.setEncoding('utf8');
    // One request per connection, its first line: what comes after it is not run again.
    const onData = (d: string): void => {
      text += d;
      const nl = text.indexOf('\n');
      if (nl < 0) {
        if (text.length > MAX_REQUEST_CHARS) conn.destroy();
        return;
      }
      conn.off('data', onData);
      let reply: Promise<T>;
      try {
        reply = handle(JSON.parse(text.slice(0, nl)) as Req, asker.signal);
      } catch (e) {
        reply = Promise.reject(e);
      }
      void reply.then((r) => ({ ok: true, ...r }) as Reply<T>, (e: unknown) => {
        const err = e as CodedError;
        return { ok: false, error: err?.message ?? String(e), ...(err?.exitCode === undefined ? {} : { exitCode: err.exitCode }) } as Reply<T>;
      }).then((r) => {
        answered = true;
        conn.end(JSON.stringify(r) + '\n');
      });
    };
    conn.on('data', onData);
    conn.on('error', () => {});
  });
  // Made before anyone can connect: a socket is never open to all, even for a moment.
  const mask = process.umask(0o177);
  try {
    server.listen(file);
  } finally {
    process.umask(mask);
  }
  if (!keepAlive) server.unref(); // a device, not its socket, keeps its server running
  return {
    close: () => {
      server.close();
      fs.rmSync(file, { force: true });
    },
  };
}

/** Why a socket did not answer: nobody listens there (ENOENT, ECONNREFUSED), or something else. */
export class NoServerError extends Error {}

/** Sends one request to the socket `file`; resolves with the reply, or throws its error (with its exit code). */
export function askJson<Req, T extends object>(file: string, req: Req, timeoutMs: number, who: string): Promise<T> {
  return new Promise((resolve, reject) => {
    // A socket in a run directory others may write to could be anyone's.
    const bad = runDirProblem();
    if (bad !== null) return reject(new Error(bad));
    const conn = net.connect(file);
    let text = '';
    // (0: no bound)
    const timer = timeoutMs > 0 ? setTimeout(() => conn.destroy(new Error(`${who} did not answer within ${timeoutMs / 1000} s`)), timeoutMs) : undefined;
    conn.setEncoding('utf8');
    conn.on('connect', () => conn.write(JSON.stringify(req) + '\n'));
    conn.on('data', (d: string) => (text += d));
    conn.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? new NoServerError(`${who} is not running (${e.code})`) : e);
    });
    conn.on('end', () => {
      clearTimeout(timer);
      let r: Reply<T>;
      try {
        r = JSON.parse(text) as Reply<T>;
      } catch {
        reject(new Error(`${who} gave no answer`));
        return;
      }
      if (r.ok) resolve(r);
      else reject(Object.assign(new Error(r.error), r.exitCode === undefined ? {} : { exitCode: r.exitCode }));
    });
  });
}

/** Serves device `id`'s socket until the returned close() is called. */
export function listenControl(id: number, handle: (req: ControlRequest) => Promise<void>): { close(): void } {
  return listenJson<ControlRequest, object>(socketPath(id), async (req) => {
    await handle(req);
    return {};
  });
}

/** Sends one request to device `id`'s server; throws its error, or if no server answers. */
export async function askServer(id: number, req: ControlRequest, timeoutMs = 60_000): Promise<void> {
  try {
    await askJson<ControlRequest, object>(socketPath(id), req, timeoutMs, `the server of device ${id}`);
  } catch (e) {
    if (e instanceof NoServerError) throw new Error(`device ${id} has no ublk-ts server to ask: its server is gone, or not ours`);
    throw e;
  }
}
