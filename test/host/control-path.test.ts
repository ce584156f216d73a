// Control commands on an unprivileged device carry its char device's path
// before their own buffer ([path\0][payload], dev_path_len = the path's
// length with its NUL): the kernel checks the caller's permission on that
// node, then reads the payload after it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withDevPath } from '../../src/ublk/control/control.js';

test('withDevPath: the path, its NUL, then the payload; the length counts the NUL', () => {
  const payload = Uint8Array.of(1, 2, 3, 4);
  const { buf, devPathLen } = withDevPath(17, payload);
  assert.equal(devPathLen, '/dev/ublkc17'.length + 1);
  assert.equal(Buffer.from(buf.subarray(0, devPathLen - 1)).toString(), '/dev/ublkc17');
  assert.equal(buf[devPathLen - 1], 0);
  assert.deepEqual([...buf.subarray(devPathLen)], [1, 2, 3, 4]);
  const bare = withDevPath(3);
  assert.equal(bare.buf.byteLength, bare.devPathLen, 'a command without a buffer of its own carries the path alone');
});
