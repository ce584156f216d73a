// Bad command lines, as a user types them: one line naming the problem, a
// non-zero exit, nothing on stdout. These are refused before the CLI asks the
// kernel anything: on this host, which has no ublk driver, a CLI that went to
// the kernel first would say "/dev/ublk-control not found" instead. The cases
// that need the kernel (a missing device, a kernel without a feature) are VM
// tests (test/vm/lifecycle.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { assertOneLineError } from '../one-line-error.js';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/ublk-ts.js');

const cases: Array<[name: string, args: string[], message: RegExp]> = [
  ['size 0', ['add', 'memory', '--size', '0'], /--size must be at least 512 B, got '0'/],
  ['size not a multiple of 512', ['add', 'memory', '--size', '1000'], /--size must be a multiple of 512 bytes/],
  ['size that is not a size', ['add', 'memory', '--size', '12X'], /--size must be a size in bytes/],
  ['missing size', ['add', 'null'], /--size SIZE is required/],
  ['depth 0', ['add', 'null', '--size', '1M', '--depth', '0'], /--depth must be from 1 to 4096/],
  ['depth above 4096', ['add', 'null', '--size', '1M', '--depth', '4097'], /--depth must be from 1 to 4096/],
  ['queues 0', ['add', 'null', '--size', '1M', '--queues', '0'], /--queues must be from 1/],
  ['coalescing window that is not a number', ['add', 'null', '--size', '1M', '--coalesce-us', 'soon'], /--coalesce-us must be a whole number/],
  ['a scheduler name no kernel uses', ['add', 'null', '--size', '1M', '--scheduler', 'Dead Line'], /--scheduler 'Dead Line' is not an I\/O scheduler's name/],
  ['unknown target', ['add', 'floppy', '--size', '1M'], /unknown target 'floppy'/],
  ['unknown option', ['add', 'null', '--size', '1M', '--colour', 'blue'], /unknown option --colour/],
  ['unknown command', ['frobnicate'], /unknown command 'frobnicate'/],
  ['del without an id', ['del'], /usage: ublk-ts del/],
];

for (const [name, args, message] of cases) {
  test(`bad input: ${name}`, () => {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
    assert.notEqual(r.status, 0, `exit code for ${args.join(' ')}`);
    assertOneLineError(r, message);
  });
}
