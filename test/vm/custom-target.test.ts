// A user's own target: a module path given to `ublk-ts add`, loaded in the
// server and in every serving thread.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { addDevice, assertClean, delDevice, run, sh, vmSuite } from './helpers.js';

// Reads return each sector's number (mod 256) in every byte; writes are refused.
const PATTERN_TARGET = `
export default {
  name: 'pattern',
  setup: (options) => ({ size: options.size }),
  open: () => ({
    read(req) {
      for (let s = 0; s < req.sectors; s++) req.buffer.fill((req.sector + s) & 0xff, s * 512, (s + 1) * 512);
      return req.length;
    },
    write: async () => -30, // -EROFS, from a promise: the async path
  }),
};
`;

vmSuite();

for (const modeArgs of [[], ['--batch']]) {
  test(`a target module given by path serves reads and refuses writes (${modeArgs.length ? 'batch' : 'classic'})`, () => {
    const mod = '/tmp/pattern-target.mjs';
    fs.writeFileSync(mod, PATTERN_TARGET);
    const dev = addDevice(mod, '--size', '4M', '--queues', '2', ...modeArgs);
    try {
      const bytes = sh('sh', '-c', `dd if=${dev} bs=4k skip=1 count=1 iflag=direct status=none | od -An -v -tu1 | tr -s ' ' '\\n' | sort -un | tr '\\n' ' '`);
      assert.equal(bytes.trim(), '8 9 10 11 12 13 14 15', 'sectors 8..15 read back their own numbers');
      const w = run('dd', ['if=/dev/zero', `of=${dev}`, 'bs=4k', 'count=1', 'oflag=direct', 'status=none']);
      assert.notEqual(w.code, 0, 'a write to the read-only target fails');
    } finally {
      delDevice(dev);
    }
    assertClean();
  });
}
