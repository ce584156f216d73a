// The nbd target with TLS (NBD_OPT_STARTTLS, X.509): certificates made here
// with openssl, servers nbdkit (--tls=require) and qemu-nbd (tls-creds-x509,
// checking clients too). The server is verified against --tls-ca by default:
// another CA or another name is refused, as is plain text to a TLS server.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import nbd from '../../src/targets/nbd.js';
import { checkTargetOptions, TargetOptionError } from '../../src/ublk/target.js';
import { freePort, readWrite, startServer, withTarget } from './nbd-servers.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nbd-tls-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const MiB = 1 << 20;

const openssl = (...args: string[]): void => void execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A CA in `d` (ca-cert.pem, ca-key.pem): what nbdkit and qemu-nbd look for in their certificate directory. */
function makeCa(d: string): string {
  fs.mkdirSync(d, { recursive: true });
  openssl('req', '-x509', ...EC, '-keyout', `${d}/ca-key.pem`, '-out', `${d}/ca-cert.pem`, '-days', '2', '-subj', `/CN=${path.basename(d)} CA`);
  return `${d}/ca-cert.pem`;
}

/** A certificate `name`-cert.pem / `name`-key.pem in `d`, signed by the CA there. */
function makeCert(d: string, name: string, usage: 'serverAuth' | 'clientAuth'): void {
  fs.writeFileSync(`${d}/${name}.ext`, `subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=${usage}\nkeyUsage=digitalSignature\n`);
  openssl('req', ...EC, '-keyout', `${d}/${name}-key.pem`, '-out', `${d}/${name}.csr`, '-subj', `/CN=${name}`);
  openssl('x509', '-req', '-in', `${d}/${name}.csr`, '-CA', `${d}/ca-cert.pem`, '-CAkey', `${d}/ca-key.pem`, '-CAcreateserial',
    '-out', `${d}/${name}-cert.pem`, '-days', '2', '-extfile', `${d}/${name}.ext`);
}

const pki = path.join(dir, 'pki'), other = path.join(dir, 'other');
const ca = makeCa(pki);
makeCert(pki, 'server', 'serverAuth');
makeCert(pki, 'client', 'clientAuth');
const otherCa = makeCa(other);
makeCert(other, 'client', 'clientAuth');

const refused = (given: Record<string, unknown>, message: RegExp) =>
  assert.rejects(async () => nbd.setup(checkTargetOptions(nbd, { timeout: 5, ...given }, 'library') as never),
    (e: Error) => e instanceof TargetOptionError && message.test(e.message) && !e.message.includes('\n'));

test('nbd over TLS to nbdkit --tls=require: every command (also in zero copy); plain text, another CA and another name refused', async () => {
  const port = freePort();
  const srv = await startServer('nbdkit', ['-f', '--tls=require', `--tls-certificates=${pki}`, '-i', '127.0.0.1', '-p', String(port), 'memory', '8M'], { port });
  try {
    await withTarget({ host: '127.0.0.1', port, tlsCa: ca, connections: 2 }, (h) => readWrite(h, 8 * MiB));
    await withTarget({ host: 'localhost', port, tlsCa: ca }, (h) => readWrite(h, 8 * MiB));
    // Zero copy: a WRITE's data read from its pages (user copy), READ data written there.
    await withTarget({ host: 'localhost', port, tlsCa: ca }, (h) => readWrite(h, 8 * MiB), 'zero');
    await refused({ host: '127.0.0.1', port }, /requires TLS for the default export: give --tls-ca/);
    await refused({ host: '127.0.0.1', port, tlsCa: otherCa }, /TLS: unable to verify the first certificate|TLS: self.signed/);
    await refused({ host: '127.0.0.1', port, tlsCa: ca, tlsHostname: 'elsewhere.example' }, /TLS: Hostname\/IP does not match certificate's altnames/);
  } finally {
    srv.proc.kill('SIGKILL'); // nbdkit waits for its clients on SIGTERM
    await srv.stop();
  }
});

test('nbd over TLS to qemu-nbd checking clients (Unix socket): our certificate is needed, and one of its CA', async () => {
  const img = path.join(dir, 'disk.img');
  fs.writeFileSync(img, '');
  fs.truncateSync(img, 8 * MiB);
  const sock = path.join(dir, 'qemu.sock');
  const srv = await startServer('qemu-nbd', ['--object', `tls-creds-x509,id=tls0,dir=${pki},endpoint=server,verify-peer=on`,
    '--tls-creds', 'tls0', '-f', 'raw', '-k', sock, '-t', img], { path: sock });
  try {
    await withTarget({ socket: sock, tlsCa: ca, tlsCert: `${pki}/client-cert.pem`, tlsKey: `${pki}/client-key.pem` }, (h) => readWrite(h, 8 * MiB));
    // The server ends the TLS session on a client without a certificate, or with one of another CA.
    await refused({ socket: sock, tlsCa: ca }, /^NBD server at .*qemu\.sock: TLS: |closed the connection/);
    await refused({ socket: sock, tlsCa: ca, tlsCert: `${other}/client-cert.pem`, tlsKey: `${other}/client-key.pem` },
      /^NBD server at .*qemu\.sock: TLS: |closed the connection/);
  } finally {
    await srv.stop();
  }
});

test('nbd: TLS options are checked (one line each)', async () => {
  await refused({ socket: '/s', tlsCert: `${pki}/client-cert.pem` }, /^--tls-cert needs --tls-key/);
  await refused({ socket: '/s', tlsKey: `${pki}/client-key.pem` }, /^--tls-key needs --tls-cert/);
  await refused({ socket: '/s', tlsCert: 'c', tlsKey: 'k' }, /^--tls-cert needs --tls-ca/);
  await refused({ socket: '/s', tlsHostname: 'x' }, /^--tls-hostname needs --tls-ca/);
  await refused({ socket: '/s', tlsCa: path.join(dir, 'none.pem') }, /^cannot read --tls-ca .*none\.pem: ENOENT$/);
});
