// Whether the kernel has zoned block devices is read from /proc/kallsyms once
// per boot (seconds on a slow machine), then from the run directory.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const MODULE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/ublk/control/kernel-zoned.js');
const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kernel-zoned-'));
after(() => fs.rmSync(runDir, { recursive: true, force: true }));
const cacheFile = path.join(runDir, 'kernel-zoned');
const boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();

/** kernelHasZonedDevices() in a fresh process (the module keeps its answer). */
function ask(dir = runDir): string {
  const r = spawnSync(process.execPath, ['-e', `import(${JSON.stringify(MODULE)}).then((m) => console.log(String(m.kernelHasZonedDevices())))`],
    { encoding: 'utf8', env: { ...process.env, UBLK_TS_RUN_DIR: dir } });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

test('kernel zoned support: asked once per boot, kept in the run directory', (t) => {
  const first = ask();
  if (first === 'undefined') {
    assert.ok(!fs.existsSync(cacheFile), 'nothing kept when the kernel could not tell');
    t.skip('no readable /proc/kallsyms here');
    return;
  }
  assert.equal(fs.readFileSync(cacheFile, 'utf8'), `${boot} ${first === 'true' ? 1 : 0}\n`);
  // The kept answer is what a later call gives: planted the other way round, it wins.
  const other = first === 'true' ? 'false' : 'true';
  fs.writeFileSync(cacheFile, `${boot} ${other === 'true' ? 1 : 0}\n`);
  assert.equal(ask(), other);
  // An answer from another boot (another kernel, perhaps) is asked again, and replaced.
  fs.writeFileSync(cacheFile, `00000000-another-boot ${other === 'true' ? 1 : 0}\n`);
  assert.equal(ask(), first);
  assert.equal(fs.readFileSync(cacheFile, 'utf8'), `${boot} ${first === 'true' ? 1 : 0}\n`);
  // A damaged file is not believed.
  fs.writeFileSync(cacheFile, 'garbage');
  assert.equal(ask(), first);
});

test('kernel zoned support: the run directory it makes to keep the answer (the first command after boot, say `features`) is its user\'s alone', (t) => {
  const fresh = path.join(runDir, 'fresh');
  if (ask(fresh) === 'undefined') {
    t.skip('no readable /proc/kallsyms here');
    return;
  }
  assert.equal(fs.statSync(fresh).mode & 0o777, 0o700, 'not 0755: root\'s state files and logs would be everyone\'s to read');
});
