// The loop target when its backing file lets it down: reads beyond a file
// that shrank under the device fail with EIO (in classic mode after the
// commit linked to the read was cancelled, in batch mode through a normal
// commit), the rest of the device keeps working, and deletion does not hang.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { addDevice, assertClean, delDevice, run, sh, vmSuite } from './helpers.js';

vmSuite();

const MiB = 1 << 20;

// Classic mode in every copy mode (each links its commits differently), batch once.
const CASES = [['classic', 'kernel'], ['classic', 'user'], ['classic', 'zero'], ['batch', 'kernel']] as const;

for (const [mode, copy] of CASES) {
  const modeArgs = mode === 'batch' ? ['--batch'] : [];
  {
    test(`${mode}, ${copy} copy: reads past a truncated backing file fail with EIO; the rest still works`, () => {
      const file = `/tmp/shrink-${mode}-${copy}.img`;
      fs.writeFileSync(file, '');
      fs.truncateSync(file, 16 * MiB);
      const dev = addDevice('loop', '--file', file, '--copy', copy, ...modeArgs);
      try {
        sh('dd', 'if=/dev/urandom', `of=${dev}`, 'bs=1M', 'count=2', 'oflag=direct', 'status=none');
        fs.truncateSync(file, 4 * MiB);
        const beyond = run('dd', [`if=${dev}`, 'of=/dev/null', 'bs=4k', 'count=4', `skip=${(8 * MiB) / 4096}`, 'iflag=direct']);
        assert.notEqual(beyond.code, 0, 'a read beyond the backing file fails');
        assert.match(beyond.stderr, /Input\/output error/);
        // Several failures in a row, then reads and writes inside the file.
        for (let i = 0; i < 2; i++) assert.notEqual(run('dd', [`if=${dev}`, 'of=/dev/null', 'bs=64k', 'count=1', `skip=${200 + i}`, 'iflag=direct']).code, 0);
        sh('dd', `if=${dev}`, 'of=/dev/null', 'bs=1M', 'count=2', 'iflag=direct', 'status=none');
        sh('dd', 'if=/dev/zero', `of=${dev}`, 'bs=4k', 'count=16', 'oflag=direct', 'status=none');
      } finally {
        delDevice(dev);
        fs.rmSync(file, { force: true });
      }
      assertClean();
    });
  }
}
