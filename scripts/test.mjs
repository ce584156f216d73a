#!/usr/bin/env node
// What `npm test` runs after `tsc`: the host tests, the VM tests (each VM
// booted by scripts/vmrun: Debian unstable's kernel with ublk_drv), then a
// subset of the kernel's own ublk selftests.
//
//   node scripts/test.mjs [--host] [--vm] [--kernel] [FILTER...]
//
// --host / --vm / --kernel run only those stages (none given: all three). A FILTER keeps the test files whose path
// (relative to dist/test/) contains it, e.g. `uapi` or `vm/lifecycle`; the kernel stage runs only without filters.
// Host tests:   dist/test/host/**/*.test.js, run here.
// VM tests:     dist/test/vm/**/*.test.js, one at a time in a 2-CPU VM, except
//               *.c4.test.js, which get a VM of their own with 4 CPUs.
// Kernel tests: KERNEL_SUBSET of tools/testing/selftests/ublk through
//               scripts/test-kernel.sh (one 4-CPU VM); `npm run test:kernel` runs all of them.
// First of all, scripts/install-deps.sh installs what the tests need (or says what).
//
// Every run writes a spec report to stdout (live) and a TAP report to a file in
// the checkout (shared read-write with the VM); the TAP summaries are added up
// into one closing line, `tests: N passed, N failed[, N skipped]`. The exit
// status is non-zero if a test failed, a VM did not boot or timed out, a run
// ended without its summary, or no test ran at all; a run that broke down
// (VM crash or timeout) counts as one failed test on top of what it reported.
// Environment: UBLK_TS_TEST_DEADLINE=<unix seconds> caps the VM timeouts.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const DIST_TEST = join(ROOT, 'dist/test');
const VMRUN = join(ROOT, 'scripts/vmrun');
const INSTALL_DEPS = join(ROOT, 'scripts/install-deps.sh');
const VM_TIMEOUT_S = 40 * 60; // per VM (scripts/vmrun -t)
const TEST_TIMEOUT_MS = 15 * 60 * 1000; // per test, so one hung test does not take the rest with it
// Optional overall deadline (Unix seconds, set by .ci/run): VM timeouts shrink
// to fit, so a slow run fails with a report instead of being killed silently.
const DEADLINE = Number(process.env.UBLK_TS_TEST_DEADLINE) || Infinity;
// One selftest of each group the issue names (null, loop, stripe, batch,
// recover, stress), about 6 minutes in all; the whole set is `npm run test:kernel`.
// Not generic_06: it allows 5 s for three starts of our kublk front end (Node
// starts), which passes here but would fail on a machine whose VM runs much
// slower.
const KERNEL_SUBSET = ['null_01', 'loop_03', 'stripe_01', 'batch_01', 'recover_01', 'stress_01'];
const TEST_KERNEL = join(ROOT, 'scripts/test-kernel.sh');
// A work directory of its own, so that `npm run test:kernel` may run meanwhile.
const KERNEL_WORK = join(ROOT, '.cache/kernel-selftests/npm-test');
const KERNEL_RESULTS = join(KERNEL_WORK, 'results.txt');
// Where a VM runs the VM tests from: a copy of the built package on its tmpfs.
const VM_APP = '/tmp/ublk-ts-app';
/** A word for sh -c: single-quoted. */
const shq = (w) => `'${String(w).replace(/'/g, `'\\''`)}'`;

function usage(msg) {
  if (msg) console.error(`test.mjs: ${msg}`);
  console.error('usage: node scripts/test.mjs [--host] [--vm] [--kernel] [FILTER...]');
  process.exit(2);
}

let wantHost = false;
let wantVm = false;
let wantKernel = false;
const filters = [];
for (const arg of process.argv.slice(2)) {
  if (arg === '--host') wantHost = true;
  else if (arg === '--vm') wantVm = true;
  else if (arg === '--kernel') wantKernel = true;
  else if (arg === '-h' || arg === '--help') usage();
  else if (arg.startsWith('-')) usage(`unknown option ${arg}`);
  else filters.push(arg);
}
if (!wantHost && !wantVm && !wantKernel) wantHost = wantVm = wantKernel = true;
if (filters.length) wantKernel = false;

const isSmoke = (f) => /(^|\/)smoke\.[^/]*$/.test(f);

/** Test files under dist/test/<sub>, recursively, matching the filters. */
function testFiles(sub) {
  const dir = join(DIST_TEST, sub);
  if (!existsSync(dir)) return [];
  const out = [];
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.test.js')) out.push(p);
    }
  };
  walk(dir);
  return out
    .filter((f) => filters.length === 0 || filters.some((flt) => relative(DIST_TEST, f).includes(flt)))
    // smoke tests first: when they fail, the other failures say little.
    .sort((a, b) => Number(isSmoke(b)) - Number(isSmoke(a)) || a.localeCompare(b));
}

// TAP reports live in the checkout so a VM can write them too.
const runDir = join(ROOT, '.cache/test-runs', `${new Date().toISOString().replace(/[:.]/g, '-')}-${process.pid}`);
mkdirSync(runDir, { recursive: true });

const totals = { passed: 0, failed: 0, skipped: 0, ran: 0 };
const problems = [];

function nodeTestArgs(tapFile, files, extra = []) {
  return [
    '--test',
    `--test-timeout=${TEST_TIMEOUT_MS}`,
    ...extra,
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    '--test-reporter=tap',
    `--test-reporter-destination=${tapFile}`,
    ...files,
  ];
}

let interrupted = false;

function run(cmd, args, env = process.env) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'], env });
    const forward = (sig) => {
      interrupted = true;
      child.kill(sig);
    };
    process.on('SIGINT', forward).on('SIGTERM', forward);
    child.on('error', (e) => {
      console.error(`test.mjs: cannot run ${cmd}: ${e.message}`);
      resolve(127);
    });
    child.on('close', (code, signal) => {
      process.off('SIGINT', forward).off('SIGTERM', forward);
      resolve(code ?? 128 + (signal === 'SIGKILL' ? 9 : 15));
    });
  });
}

/**
 * The closing `# pass N` etc. of a TAP report. A run cut short (VM crash or
 * timeout) has no summary: then its test points are counted, as `partial`.
 */
function tapSummary(file) {
  let text;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const last = (key) => {
    const all = [...text.matchAll(new RegExp(`^# ${key} (\\d+)$`, 'gm'))];
    return all.length ? Number(all[all.length - 1][1]) : undefined;
  };
  const pass = last('pass');
  const fail = last('fail');
  if (pass !== undefined && fail !== undefined) {
    return { pass, fail, cancelled: last('cancelled') ?? 0, skipped: (last('skipped') ?? 0) + (last('todo') ?? 0) };
  }
  const points = [...text.matchAll(/^\s*(not )?ok \d+\b.*$/gm)];
  if (points.length === 0) return undefined;
  const s = { pass: 0, fail: 0, cancelled: 0, skipped: 0, partial: true };
  for (const [line, not] of points) {
    if (/# (SKIP|TODO)\b/i.test(line)) s.skipped++;
    else if (not) s.fail++;
    else s.pass++;
  }
  return s;
}

/**
 * The verdict lines of scripts/test-kernel.sh (`PASS name ...`) as a summary;
 * a selftest that did not run (the VM broke down) is missing: `partial`.
 */
function kernelSummary(file, expected) {
  let text;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const count = (v) => (text.match(new RegExp(`^${v} `, 'gm')) ?? []).length;
  const s = { pass: count('PASS'), fail: count('FAIL'), cancelled: 0, skipped: count('SKIP') };
  return s.pass + s.fail + s.skipped === 0 ? undefined : { ...s, partial: s.pass + s.fail + s.skipped < expected };
}

/** Runs one stage: `files` are what it runs (test files, or selftest names); `summary` reads its report. */
async function runSuite(name, files, command, summary = tapSummary) {
  if (files.length === 0 || interrupted) return;
  const tap = join(runDir, `${name}.tap`);
  console.log(`\n=== ${name}: ${files.length} file(s) ===`);
  const started = Date.now();
  const [cmd, args, env] = command(tap);
  const code = await run(cmd, args, env);
  const secs = Math.round((Date.now() - started) / 1000);
  const s = summary(tap);
  if (s) {
    totals.passed += s.pass;
    totals.failed += s.fail + s.cancelled;
    totals.skipped += s.skipped;
    totals.ran += s.pass + s.fail + s.cancelled;
  }
  const what = s
    ? `${s.pass} passed, ${s.fail + s.cancelled} failed, ${s.skipped} skipped${s.partial ? ' (cut short: counted from the partial report)' : ''}`
    : 'no test report';
  console.log(`=== ${name}: ${what}, exit ${code}, ${secs}s ===`);
  // A run that broke down counts as one more failed test, so that the closing
  // line never says "0 failed" for a failing run.
  const broke = (why) => {
    problems.push(`${name}: ${why} (counted as 1 failed)`);
    totals.failed++;
  };
  if (code === 124) broke('the VM timed out (vmrun exit 124)');
  else if (code === 125) broke('the VM did not run the tests to the end (vmrun exit 125: boot failure or crash)');
  else if (!s || s.partial) broke(`ended (exit ${code}) without a test summary`);
  else if (code !== 0 && s.fail + s.cancelled === 0) broke(`exit ${code} although no test failed`);
}

const node = process.execPath;

// qemu, fio, mkfs, gcc... and the Debian unstable apt source (the VM's kernel,
// the UAPI headers the host tests compile): installed first if missing (root
// on Debian); else the run stops at once with what to install.
const depsOk = (await run(INSTALL_DEPS, [])) === 0;
if (!depsOk) {
  console.error('test.mjs: no test ran: scripts/install-deps.sh failed (its message is above)');
  process.exit(1);
}

if (wantHost) {
  const files = testFiles('host');
  if (files.length === 0 && filters.length === 0) problems.push('no host test files in dist/test/host (did tsc run?)');
  await runSuite('host', files, (tap) => [node, nodeTestArgs(tap, files)]);
}

if (wantVm) {
  const all = testFiles('vm');
  if (all.length === 0 && filters.length === 0) problems.push('no VM test files in dist/test/vm (did tsc run?)');
  const c4 = all.filter((f) => f.endsWith('.c4.test.js'));
  const c2 = all.filter((f) => !f.endsWith('.c4.test.js'));
  // Inside the VM the checkout is at the same path and the host's node is
  // visible.
  const inVm = (name, cpus, files) => {
    const left = Math.floor(DEADLINE - Date.now() / 1000) - 60;
    if (left < 120) {
      if (files.length) problems.push(`${name}: not run, the overall deadline (UBLK_TS_TEST_DEADLINE) is too close`);
      return runSuite(name, [], () => []);
    }
    const tmo = Math.min(VM_TIMEOUT_S, left);
    // The VM reads this checkout over 9p, where every stat and open is a round
    // trip to the host, and every CLI call and every server's worker threads
    // load dozens of modules. So the built package is copied to the VM's tmpfs
    // first and the tests run from the copy, CLI and servers included.
    const copied = (f) => join(VM_APP, relative(ROOT, f));
    return runSuite(name, files, (tap) => {
      const script = [
        `mkdir -p ${VM_APP}/build/Release`,
        `cp -a ${['bin', 'dist', 'package.json'].map((p) => shq(join(ROOT, p))).join(' ')} ${VM_APP}/`,
        `cp ${shq(join(ROOT, 'build/Release/ublk_native.node'))} ${VM_APP}/build/Release/`,
        `exec ${[node, ...nodeTestArgs(tap, files.map(copied), ['--test-concurrency=1'])].map(shq).join(' ')}`,
      ];
      return [VMRUN, ['-c', String(cpus), '-t', String(tmo), '--', 'sh', '-c', script.join(' && ')]];
    });
  };
  await inVm('vm', 2, c2);
  await inVm('vm-c4', 4, c4);
}

if (wantKernel) {
  // test-kernel.sh sizes its VM's timeout from UBLK_TS_TEST_DEADLINE itself.
  rmSync(KERNEL_RESULTS, { force: true });
  await runSuite('kernel-selftests', KERNEL_SUBSET,
    () => [TEST_KERNEL, KERNEL_SUBSET.map((t) => `test_${t}.sh`), { ...process.env, UBLK_TS_SELFTEST_WORK: KERNEL_WORK }],
    () => kernelSummary(KERNEL_RESULTS, KERNEL_SUBSET.length));
}

if (interrupted) problems.push('interrupted');
if (totals.ran === 0) problems.push('no test ran');
for (const p of problems) console.error(`test.mjs: ${p}`);
if (problems.length || totals.failed) console.error(`test.mjs: TAP reports kept in ${relative(ROOT, runDir)}`);
else rmSync(runDir, { recursive: true, force: true });

console.log(
  `tests: ${totals.passed} passed, ${totals.failed} failed` + (totals.skipped ? `, ${totals.skipped} skipped` : ''),
);
process.exit(problems.length || totals.failed ? 1 : 0);
