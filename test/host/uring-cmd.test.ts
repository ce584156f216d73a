// IORING_OP_URING_CMD encoding: a socket's SIOCINQ through io_uring, in 64-
// and 128-byte SQEs, and a file without a ->uring_cmd handler.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { once } from 'node:events';
import {
  Ring, prepUringCmd, setUserData, SQE_CMD_OFFSET, SOCKET_URING_OP_SIOCINQ, SOCKET_URING_OP_SIOCOUTQ,
} from '../../src/uring/index.js';

function uringCmd(ring: Ring, fd: number, op: number): number {
  const s = ring.getSqe();
  prepUringCmd(ring, s, fd, op);
  setUserData(ring, s, 0xc0ffee, 0);
  ring.submitAndWait(1);
  let res = NaN;
  assert.equal(ring.reap((lo, _hi, r) => (assert.equal(lo, 0xc0ffee), (res = r))), 1);
  return res;
}

async function tcpPair(): Promise<{ server: net.Server; client: net.Socket; accepted: net.Socket }> {
  // pauseOnConnect: Node must not read the accepted socket, so its receive
  // queue stays for SIOCINQ to measure.
  const server = net.createServer({ pauseOnConnect: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  const acceptedP = once(server, 'connection');
  const client = net.connect(port, '127.0.0.1');
  await once(client, 'connect');
  const [accepted] = (await acceptedP) as [net.Socket];
  return { server, client, accepted };
}

function fdOf(sock: net.Socket): number {
  const fd = (sock as unknown as { _handle: { fd: number } })._handle.fd;
  assert.ok(Number.isInteger(fd) && fd >= 0);
  return fd;
}

for (const sqe128 of [false, true]) {
  test(`URING_CMD SOCKET_URING_OP_SIOCINQ on a TCP socket (${sqe128 ? 128 : 64}-byte SQEs)`, { timeout: 10_000 }, async () => {
    const ring = Ring.create({ entries: 4, sqe128 });
    const { server, client, accepted } = await tcpPair();
    try {
      assert.equal(SQE_CMD_OFFSET, 48);
      const fd = fdOf(accepted);
      assert.equal(uringCmd(ring, fd, SOCKET_URING_OP_SIOCINQ), 0);
      client.write('0123456789abc');
      let queued = 0;
      for (let i = 0; i < 100 && queued < 13; i++) {
        await new Promise((r) => setTimeout(r, 5));
        queued = uringCmd(ring, fd, SOCKET_URING_OP_SIOCINQ);
      }
      assert.equal(queued, 13, 'bytes waiting in the receive queue');
      assert.ok(uringCmd(ring, fdOf(client), SOCKET_URING_OP_SIOCOUTQ) >= 0);
      assert.equal(uringCmd(ring, fd, 0x7777), -95, 'unknown socket cmd_op: -EOPNOTSUPP');
    } finally {
      ring.close();
      client.destroy();
      accepted.destroy();
      server.close();
    }
  });
}

test('URING_CMD on a regular file is refused with -EOPNOTSUPP', () => {
  const ring = Ring.create({ entries: 4, sqe128: true });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'uring-cmd-'));
  const fd = fs.openSync(path.join(dir, 'f'), 'w+');
  try {
    assert.equal(uringCmd(ring, fd, 0), -95);
    assert.equal(uringCmd(ring, 99_999, 0), -9, 'the fd field reaches the kernel');
  } finally {
    ring.close();
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true });
  }
});
