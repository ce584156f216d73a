// Our UAPI definitions against the real kernel headers: every constant and
// struct layout in src/ is compared with what gcc computes from Debian
// unstable's linux/ublk_cmd.h and linux/io_uring.h (scripts/uapi-headers.sh).
// One generated C program prints everything as JSON; values travel as decimal
// strings and are compared as BigInt, so 64-bit flags are exact.
//
// No gcc or no headers is a failure, not a skip: this is the only check that
// the byte offsets we hand the kernel are right.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as ublkUapi from '../../src/ublk/abi/uapi.js';
import * as uringConstants from '../../src/uring/constants.js';
import { LAYOUTS as UBLK_LAYOUTS } from '../../src/ublk/abi/layout.js';
import { LAYOUTS as URING_LAYOUTS } from '../../src/uring/layout.js';

// Compiled to dist/test/host/, so the checkout is three levels up.
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const HEADERS_SCRIPT = join(ROOT, 'scripts/uapi-headers.sh');

// blkzoned.h's BLK_ZONE_* codes are part of the ublk UAPI (ublk_cmd.h says so).
const UBLK_NAME = /^(UBLK|BLK_ZONE_)/;
// linux/fs.h's values that UBLK_PARAM_TYPE_INTEGRITY's fields take (src/ublk/abi/uapi.ts exports them too).
const LBMD_NAME = /^LBMD_/;
const URING_NAME = /^(IORING_|IOSQE_|IOU_)/;

/** One line of the generated program; `key` is what it prints under. */
interface Item {
  key: string;
  /** One statement inside main(). */
  code: string;
  /** Used instead of `code` when `code` does not compile. */
  fallback?: string;
}

interface Compiled {
  values: Map<string, string>;
  /** key -> gcc's message, for items that compiled neither way. */
  broken: Map<string, string>;
}

let includeDir = '';
let work = '';
let result: Compiled;
let setupError: string | undefined;

function numericExports(mod: Record<string, unknown>, name: RegExp): Map<string, number | bigint> {
  const out = new Map<string, number | bigint>();
  for (const [k, v] of Object.entries(mod)) {
    if (!name.test(k)) continue;
    if (typeof v === 'number' || typeof v === 'bigint') out.set(k, v);
    // Functions and tables (e.g. name lists) under such names are not constants.
  }
  return out;
}

type Layouts = Map<string, { size: number; fields: Map<string, readonly [number, number]> }>;

function readLayouts(file: string, table: unknown): Layouts {
  assert.ok(table && typeof table === 'object', `${file}: LAYOUTS is not an object`);
  const out: Layouts = new Map();
  for (const [struct, layout] of Object.entries(table as Record<string, unknown>)) {
    const l = layout as { size?: unknown; fields?: unknown };
    assert.ok(typeof l?.size === 'number' && l.fields && typeof l.fields === 'object', `${file}: LAYOUTS.${struct} is not { size, fields }`);
    const fields = new Map<string, readonly [number, number]>();
    for (const [f, v] of Object.entries(l.fields as Record<string, unknown>)) {
      assert.ok(
        Array.isArray(v) && v.length === 2 && v.every((n) => Number.isInteger(n)),
        `${file}: LAYOUTS.${struct}.fields.${f} is not [offset, size]`,
      );
      fields.set(f, [v[0] as number, v[1] as number]);
    }
    out.set(struct, { size: l.size as number, fields });
  }
  return out;
}

const ublkConsts = numericExports(ublkUapi as Record<string, unknown>, UBLK_NAME);
const lbmdConsts = numericExports(ublkUapi as Record<string, unknown>, LBMD_NAME);
const uringConsts = numericExports(uringConstants as Record<string, unknown>, URING_NAME);

const printValue = (key: string, expr: string) => `PV(${JSON.stringify(key)}, (${expr}));`;
// A case label must be an integer constant expression of integer type: this
// does not compile for string, floating, pointer or struct values (which PV's
// casts alone would let through), nor for names the headers lack.
const integerOnly = (expr: string) => `switch (0ULL) { case (${expr}): break; }`;

/** Object-like `#define UBLK...` names in ublk_cmd.h, in order. */
function headerUblkMacros(): string[] {
  const text = readFileSync(join(includeDir, 'linux/ublk_cmd.h'), 'utf8');
  const names: string[] = [];
  for (const m of text.matchAll(/^[ \t]*#[ \t]*define[ \t]+(UBLK\w*)(\(?)/gm)) {
    if (m[2] === '(') continue; // function-like: not a constant
    names.push(m[1]!);
  }
  return [...new Set(names)];
}

function buildItems(macros: string[], ublkLayouts: Layouts, uringLayouts: Layouts): Item[] {
  const items: Item[] = [];
  for (const [table, names] of [['ublk', ublkConsts.keys()], ['uring', uringConsts.keys()], ['lbmd', lbmdConsts.keys()]] as const) {
    for (const name of names) {
      const key = `${table}:${name}`;
      items.push({ key, code: `{ ${integerOnly(name)} ${printValue(key, name)} }` });
    }
  }
  // Completeness probe: compiles exactly for the macros we must export.
  for (const name of macros) items.push({ key: `probe:${name}`, code: `{ ${integerOnly(name)} }` });
  for (const [table, layouts] of [['ublk', ublkLayouts], ['uring', uringLayouts]] as const) {
    for (const [struct, l] of layouts) {
      const t = `struct ${struct}`;
      items.push({ key: `${table}:${struct}:sizeof`, code: printValue(`${table}:${struct}:sizeof`, `sizeof(${t})`) });
      for (const f of l.fields.keys()) {
        const k = `${table}:${struct}.${f}`;
        items.push({ key: `${k}:offset`, code: printValue(`${k}:offset`, `offsetof(${t}, ${f})`) });
        // A flexible array member (`x[]`) has no sizeof; if it indexes, it is
        // one, and its C size is 0 like that of a GNU zero-length array `x[0]`.
        items.push({
          key: `${k}:size`,
          code: printValue(`${k}:size`, `sizeof(((${t} *)0)->${f})`),
          fallback: printValue(`${k}:size`, `0 * sizeof(((${t} *)0)->${f}[0])`),
        });
      }
    }
  }
  return items;
}

function program(items: Item[], useFallback: Set<string>): { src: string; lineOf: Map<number, Item> } {
  const head = [
    '#include <stdio.h>',
    '#include <stddef.h>',
    '#include <errno.h>',
    '#include <linux/ioctl.h>',
    '#include <linux/ublk_cmd.h>',
    '#include <linux/blkzoned.h>',
    '#include <linux/io_uring.h>',
    '#include <linux/fs.h>',
    '#define PV(k, v) do { if ((v) < 0) printf("\\"%s\\":\\"%lld\\",\\n", k, (long long)(v)); \\',
    '  else printf("\\"%s\\":\\"%llu\\",\\n", k, (unsigned long long)(v)); } while (0)',
  ];
  const lines = [...head];
  const lineOf = new Map<number, Item>();
  const emit = (it: Item) => {
    lines.push(useFallback.has(it.key) ? it.fallback! : it.code);
    lineOf.set(lines.length, it);
  };
  lines.push('int main(void) {', '  printf("{\\n");');
  for (const it of items) emit(it);
  lines.push('  printf("\\"\\":\\"\\"}\\n");', '  return 0;', '}');
  return { src: lines.join('\n') + '\n', lineOf };
}

/**
 * Compile and run all items. gcc's diagnostics (warnings are off, so every one
 * belongs to an error) name lines of our program; those items are retried with
 * their fallback, then dropped as broken, and the rest compiled again.
 */
function compileAll(items: Item[]): Compiled {
  const broken = new Map<string, string>();
  const useFallback = new Set<string>();
  let live = items;
  for (let round = 0; round < 8; round++) {
    const { src, lineOf } = program(live, useFallback);
    const c = join(work, 'uapi.c');
    const exe = join(work, 'uapi');
    writeFileSync(c, src);
    const cc = spawnSync('gcc', ['-std=gnu11', '-w', '-I', includeDir, '-o', exe, c], { encoding: 'utf8' });
    if (cc.error) throw new Error(`cannot run gcc: ${cc.error.message}`);
    if (cc.status === 0) {
      const out = execFileSync(exe, { encoding: 'utf8' });
      const values = new Map<string, string>(Object.entries(JSON.parse(out) as Record<string, string>));
      values.delete('');
      return { values, broken };
    }
    const bad = new Map<Item, string>();
    for (const line of cc.stderr.split('\n')) {
      const m = /uapi\.c:(\d+):(?:\d+:)?\s*(.*)$/.exec(line);
      const it = m && lineOf.get(Number(m[1]));
      if (it && !bad.has(it)) bad.set(it, m![2]!);
    }
    if (bad.size === 0) throw new Error(`gcc failed on the generated program (${c}):\n${cc.stderr}`);
    for (const [it, msg] of bad) {
      if (it.fallback && !useFallback.has(it.key)) useFallback.add(it.key);
      else broken.set(it.key, msg);
    }
    live = live.filter((it) => !broken.has(it.key));
  }
  throw new Error('gcc kept failing on the generated program');
}

before(() => {
  try {
    const gcc = spawnSync('gcc', ['--version'], { encoding: 'utf8' });
    if (gcc.error || gcc.status !== 0) throw new Error('gcc is not available (apt-get install gcc); it is needed to check the UAPI definitions');
    const hs = spawnSync('bash', [HEADERS_SCRIPT], { encoding: 'utf8' });
    if (hs.error || hs.status !== 0) {
      throw new Error(`${HEADERS_SCRIPT} failed (status ${hs.status}): ${hs.error?.message ?? ''}\n${hs.stderr}`);
    }
    includeDir = hs.stdout.trim().split('\n').pop() ?? '';
    for (const h of ['linux/ublk_cmd.h', 'linux/io_uring.h']) {
      try {
        readFileSync(join(includeDir, h));
      } catch {
        throw new Error(`${HEADERS_SCRIPT} printed "${includeDir}", which has no ${h}`);
      }
    }
    work = mkdtempSync(join(tmpdir(), 'ublk-ts-uapi-'));
    const ublkLayouts = readLayouts('src/ublk/layout.ts', UBLK_LAYOUTS);
    const uringLayouts = readLayouts('src/uring/layout.ts', URING_LAYOUTS);
    result = compileAll(buildItems(headerUblkMacros(), ublkLayouts, uringLayouts));
  } catch (e) {
    setupError = e instanceof Error ? e.message : String(e);
  }
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

function ready(): Compiled {
  assert.equal(setupError, undefined, `cannot check the UAPI against the kernel headers: ${setupError}`);
  return result;
}

function compareConstants(table: 'ublk' | 'uring' | 'lbmd', ours: Map<string, number | bigint>, header: string, t: { diagnostic(msg: string): void }): void {
  const { values, broken } = ready();
  assert.ok(ours.size > 0, `no ${table} constants exported at all`);
  const problems: string[] = [];
  for (const [name, v] of ours) {
    const key = `${table}:${name}`;
    if (broken.has(key)) {
      problems.push(`${name}: not an integer constant defined by ${header} (${broken.get(key)})`);
      continue;
    }
    if (typeof v === 'number' && !Number.isInteger(v)) {
      problems.push(`${name}: ours is ${v}, not an integer`);
      continue;
    }
    const c = BigInt(values.get(key)!);
    if (BigInt(v) !== c) problems.push(`${name}: ours ${v} (0x${BigInt(v).toString(16)}), ${header} ${c} (0x${c.toString(16)})`);
  }
  assert.deepEqual(problems, [], `${problems.length} constant(s) differ from ${header}:\n  ${problems.join('\n  ')}`);
  t.diagnostic(`${ours.size} constants checked`);
}

test('every UBLK* constant of src/ublk/uapi.ts equals linux/ublk_cmd.h', (t) => {
  compareConstants('ublk', ublkConsts, 'ublk_cmd.h', t);
});

test('every LBMD_* constant of src/ublk/uapi.ts (integrity flags and checksums) equals linux/fs.h', (t) => {
  compareConstants('lbmd', lbmdConsts, 'fs.h', t);
});

test('every IORING_/IOSQE_/IOU_ constant of src/uring/constants.ts equals linux/io_uring.h', (t) => {
  compareConstants('uring', uringConsts, 'io_uring.h', t);
});

test('src/ublk/uapi.ts exports every integer #define UBLK* of linux/ublk_cmd.h', (t) => {
  const { broken } = ready();
  const macros = headerUblkMacros();
  assert.ok(macros.length > 50, `only ${macros.length} UBLK macros found in ublk_cmd.h: parsing went wrong`);
  const notInteger = macros.filter((m) => broken.has(`probe:${m}`));
  if (notInteger.length) t.diagnostic(`not integer constants, so not required: ${notInteger.join(', ')}`);
  const missing = macros.filter((m) => !broken.has(`probe:${m}`) && !ublkConsts.has(m));
  t.diagnostic(`${macros.length} macros in ublk_cmd.h, ${macros.length - notInteger.length} of them integer constants`);
  assert.deepEqual(missing, [], `src/ublk/uapi.ts lacks ${missing.length} constant(s) of ublk_cmd.h: ${missing.join(', ')}`);
});

function compareLayouts(table: 'ublk' | 'uring', file: string, layouts: unknown, t: { diagnostic(msg: string): void }): void {
  const { values, broken } = ready();
  const ours = readLayouts(file, layouts);
  assert.ok(ours.size > 0, `${file}: LAYOUTS is empty`);
  const problems: string[] = [];
  const c = (key: string): bigint | string => (broken.has(key) ? `does not compile: ${broken.get(key)}` : BigInt(values.get(key)!));
  for (const [struct, l] of ours) {
    const size = c(`${table}:${struct}:sizeof`);
    if (typeof size === 'string') {
      problems.push(`struct ${struct}: ${size}`);
      continue;
    }
    if (BigInt(l.size) !== size) problems.push(`sizeof(struct ${struct}): ours ${l.size}, C ${size}`);
    for (const [f, [off, sz]] of l.fields) {
      const k = `${table}:${struct}.${f}`;
      const cOff = c(`${k}:offset`);
      const cSize = c(`${k}:size`);
      if (typeof cOff === 'string') {
        problems.push(`${struct}.${f}: ${cOff}`);
        continue;
      }
      if (BigInt(off) !== cOff) problems.push(`offsetof(${struct}, ${f}): ours ${off}, C ${cOff}`);
      if (typeof cSize === 'string') problems.push(`sizeof(${struct}.${f}): ${cSize}`);
      else if (cSize === 0n && sz !== 0) {
        // A zero-length or flexible array: C leaves its length to the context
        // (e.g. sqe cmd[] is 16 or 80 bytes depending on IORING_SETUP_SQE128).
        t.diagnostic(`${struct}.${f} is a variable-length array in C; ours gives it ${sz} bytes (offset checked only)`);
      } else if (BigInt(sz) !== cSize) problems.push(`sizeof(${struct}.${f}): ours ${sz}, C ${cSize}`);
    }
  }
  assert.deepEqual(problems, [], `${file} differs from the C layout:\n  ${problems.join('\n  ')}`);
  t.diagnostic(`${ours.size} structs, ${[...ours.values()].reduce((n, l) => n + l.fields.size, 0)} fields checked`);
}

test('src/ublk/layout.ts LAYOUTS match the C structs of linux/ublk_cmd.h', (t) => {
  compareLayouts('ublk', 'src/ublk/layout.ts', UBLK_LAYOUTS, t);
});

test('src/uring/layout.ts LAYOUTS match the C structs of linux/io_uring.h', (t) => {
  compareLayouts('uring', 'src/uring/layout.ts', URING_LAYOUTS, t);
});
