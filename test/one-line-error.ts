// What every refused command line must look like, on the host or in the VM:
// one line on stderr, `ublk-ts: ` and the message, nothing on stdout.
import assert from 'node:assert/strict';

export function assertOneLineError(r: { stdout: string; stderr: string }, message: RegExp): void {
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line: ${r.stderr}`);
  assert.match(lines[0]!, /^ublk-ts: /);
  assert.match(lines[0]!, message);
  assert.equal(r.stdout, '');
}
