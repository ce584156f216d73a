// The CLI runs from its bundle (dist/ublk-ts.cjs, scripts/bundle.mjs), built-in
// targets included: an `add` that loaded a target's ES modules from dist/src/
// would start slower (each module a file to find, read and compile) and hold a
// second copy of the library. A module hook (node:module register) records
// every ES module import the CLI makes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BUILTIN_TARGETS } from '../../src/ublk/target-loader.js';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/ublk-ts.js');

/** The module URLs the CLI's ES module loader resolved while running `args`. */
function importsOf(args: string[]): string[] {
  const log = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ublk-ts-imports-')), 'urls');
  const hooks = `import fs from 'node:fs';
    export async function resolve(s, c, next) { const r = await next(s, c); fs.appendFileSync(${JSON.stringify(log)}, r.url + '\\n'); return r; }`;
  const register = `import { register } from 'node:module'; register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hooks)}));`;
  const r = spawnSync(process.execPath, ['--import', `data:text/javascript,${encodeURIComponent(register)}`, CLI, ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  try {
    return fs.readFileSync(log, 'utf8').trim().split('\n');
  } finally {
    fs.rmSync(path.dirname(log), { recursive: true, force: true });
  }
}

test('add TARGET --help loads each built-in target from the CLI bundle, no module from dist/src/', () => {
  for (const target of BUILTIN_TARGETS) {
    const urls = importsOf(['add', target, '--help']);
    assert.ok(urls.some((u) => u.endsWith('/bin/ublk-ts.js')), `the hook saw the CLI start: ${urls.join(' ')}`);
    assert.deepEqual(urls.filter((u) => u.includes('/dist/src/')), [], `${target}: modules loaded from dist/src/`);
  }
});
