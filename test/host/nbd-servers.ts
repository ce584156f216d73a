// NBD servers for the host tests: qemu-nbd and nbdkit started on loopback TCP
// or a Unix socket, and stopped by the test; and the harness that drives the
// nbd target on the host's real io_uring, without a ublk driver.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import assert from 'node:assert/strict';
import { KIND_OWN, udKind, udTag } from '../../src/ublk/worker/worker-ring.js';
import { servingMode } from '../../src/ublk/mode.js';
import { DataPath } from './data-path.js';
import { checkTargetOptions, type TargetModule, type TargetSetup } from '../../src/ublk/target.js';
import { UBLK_IO_F_FUA, UBLK_IO_OP_FLUSH, UBLK_IO_OP_READ, UBLK_IO_OP_WRITE } from '../../src/ublk/abi/uapi.js';
import nbd from '../../src/targets/nbd.js';
import * as fs from 'node:fs';
import { native } from '../../src/native.js';
import { UblkRequest } from '../../src/ublk/worker/request.js';

const PROT_READ = 1, PROT_WRITE = 2, MAP_SHARED = 1;

const MiB = 1 << 20;

export interface Server { proc: ChildProcess; args: string[]; stop(): Promise<void> }

let nextPort = 20000 + (process.pid % 20000);
export const freePort = (): number => nextPort++;

/** Resolves once something accepts connections at `a`. */
export async function waitListening(a: { path: string } | { port: number }, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = 'path' in a ? net.connect(a.path) : net.connect(a.port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`nothing listens at ${JSON.stringify(a)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts `cmd args` (in the foreground) and waits until it listens at `a`. */
export async function startServer(cmd: string, args: string[], a: { path: string } | { port: number }): Promise<Server> {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  try {
    await Promise.race([waitListening(a), exited.then(() => { throw new Error(`${cmd} exited: ${err.trim()}`); })]);
  } catch (e) {
    proc.kill('SIGKILL');
    throw e;
  }
  return {
    proc, args,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        await exited;
      }
    },
  };
}

export const DEPTH = 8;
export const BUF = 1 << 20;

/** A worker's data path for one queue (data-path.ts), served from the event loop as the nbd target needs. */
export class Harness extends DataPath {
  constructor(copy: 'kernel' | 'zero' = 'kernel', charFd = -1, depth = DEPTH) {
    super(depth, BUF, { entries: 64, cqEntries: 128 },
      servingMode({ batch: false, copy, autoBufReg: true, metadataSize: 0 }, { name: 'test', data: 'ring-and-user-copy', integrity: false }), false, charFd);
  }

  async open<O extends Record<string, unknown>>(mod: TargetModule, given: O): Promise<TargetSetup> {
    const options = checkTargetOptions(mod, given, 'library');
    const setup = await mod.setup(options);
    await this.openTarget(mod, options, setup.shared);
    return setup;
  }

  /** Serves the ring until every tag in `tags` has completed (or `ms` passed). */
  async wait(tags: number[], ms = 10000): Promise<number[]> {
    const end = Date.now() + ms;
    while (!tags.every((t) => this.results.has(t))) {
      assert.ok(Date.now() < end, `requests ${tags.filter((t) => !this.results.has(t))} complete`);
      this.ring.submit();
      if (this.ring.cqReady() === 0) await new Promise((r) => setTimeout(r, 1));
      this.ring.reap((lo, hi, res, fl) => {
        if (udKind(lo) === KIND_OWN) this.dispatcher.onOwnCqe(hi, res, fl);
        else this.dispatcher.onCqe(this.reqs[udTag(lo)]!, udKind(lo), hi, res, fl);
      });
    }
    return tags.map((t) => this.results.get(t)!);
  }

  /**
   * `seen(sub, res)` sees every own CQE (a connection's send, recv...)
   * before the target does; returning true keeps it from the target (a CQE
   * of the test's own).
   */
  watchOwnCqes(seen: (sub: number, res: number) => boolean | void): void {
    const pass = this.dispatcher.onOwnCqe.bind(this.dispatcher);
    this.dispatcher.onOwnCqe = (hi, res, flags) => {
      if (seen(hi, res) !== true) pass(hi, res, flags);
    };
  }

  async serve(tag: number, op: number, offset: number, length: number, flags = 0): Promise<number> {
    this.start(tag, op, offset, length, flags);
    return (await this.wait([tag]))[0]!;
  }

  override async close(): Promise<void> {
    await this.target?.close?.();
    super.close();
  }
}

/**
 * The harness in zero copy, as the driver serves it: each tag's pages are
 * fixed buffer `tag` of the ring and, at the same time, the request's bytes
 * at its user-copy position on what stands in for /dev/ublkcN (a memfd,
 * mapped there), so READ_FIXED / WRITE_FIXED and pwrite / pread reach the
 * same memory, and the dispatcher copies nothing.
 */
export class ZeroCopyHarness extends Harness {
  private readonly views: Uint8Array[] = [];
  private readonly memfd: number;

  /** `userCopyFd`: what the target gets for /dev/ublkcN instead of the memfd (e.g. one that refuses user copy). */
  constructor(userCopyFd?: number, depth = DEPTH) {
    const fd = native.memfdCreate('nbd-zero-copy', 0);
    super('zero', userCopyFd ?? fd, depth);
    this.memfd = fd;
    fs.ftruncateSync(fd, this.reqs[depth - 1]!.userCopyPos + BUF);
    for (let t = 0; t < depth; t++) {
      const pos = this.reqs[t]!.userCopyPos, map = native.mmap(BUF, PROT_READ | PROT_WRITE, MAP_SHARED, fd, pos);
      this.views.push(new Uint8Array(map));
      // Zero copy: no tag buffer (the target must not touch req.buffer); the
      // address is the data's place in the fixed buffer, here its own address.
      this.reqs[t] = new UblkRequest(0, t, null, t, native.addressOf(map));
    }
    this.ring.registerBuffers(this.views);
  }

  override tagBuffer(tag: number): Uint8Array { return this.views?.[tag] ?? super.tagBuffer(tag); }

  override async close(): Promise<void> {
    await super.close();
    for (const v of this.views) native.munmap(v.buffer as ArrayBuffer);
    native.close(this.memfd);
  }
}

export function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 131 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

export async function withTarget(given: Record<string, unknown>, fn: (h: Harness) => Promise<void>, copy: 'kernel' | 'zero' = 'kernel'): Promise<void> {
  const h = copy === 'zero' ? new ZeroCopyHarness() : new Harness();
  try {
    await h.open(nbd, given);
    await fn(h);
  } finally {
    await h.close();
  }
}

/** WRITE then READ back at several offsets and sizes, some at once; FUA and FLUSH. */
export async function readWrite(h: Harness, size: number): Promise<void> {
  const cases = [[0, 0, 4096], [1, MiB + 512, 256 << 10], [2, size - 4096, 4096], [3, 3 * MiB, MiB]] as const;
  for (const [tag, offset, len] of cases) {
    h.tagBuffer(tag).set(pattern(len, tag + 1));
    h.start(tag, UBLK_IO_OP_WRITE, offset, len, tag === 2 ? UBLK_IO_F_FUA : 0);
  }
  assert.deepEqual(await h.wait(cases.map((c) => c[0])), cases.map((c) => c[2]));
  assert.equal(await h.serve(0, UBLK_IO_OP_FLUSH, 0, 0), 0);
  for (const [tag, offset, len] of cases) {
    h.tagBuffer(tag + 4).fill(0xee, 0, len);
    h.start(tag + 4, UBLK_IO_OP_READ, offset, len);
  }
  assert.deepEqual(await h.wait(cases.map((c) => c[0] + 4)), cases.map((c) => c[2]));
  for (const [tag, , len] of cases) assert.deepEqual(h.tagBuffer(tag + 4).subarray(0, len), pattern(len, tag + 1), `tag ${tag}'s data read back`);
}
