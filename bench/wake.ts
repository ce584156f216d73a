// The `wake` suite: what the same small piece of work costs right after the
// thread slept, against right after it spun, in C and in JavaScript, in this
// VM. A serving thread that sleeps between requests (QD 1 without polling)
// pays this on every request, so it bounds the server CPU per IO at low queue
// depth against kublk, a C server.
//
// The work: 64 reads through two small functions, from one 4 KiB page or
// from 64 (one per array of 64), summed. Before each pass the thread waits
// 50 µs, sleeping (C: nanosleep; JavaScript: Atomics.wait, a futex) or
// spinning on the clock; PASSES passes each, the first WARMUP not counted.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const PASSES = 4000, WARMUP = 500, WAIT_US = 50;

const C_SOURCE = `
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
static double *arrays[64];
__attribute__((noinline)) static double cell(int x) { return arrays[x & 63][(x * 7) & 511]; }
__attribute__((noinline)) static double pass(int pages) { double s = 0; for (int j = 0; j < 64; j++) s += cell((j % pages) * 13); return s; }
int main(int argc, char **argv) {
  int pages = atoi(argv[1]), sleep = argv[2][0] == 's';
  for (int i = 0; i < 64; i++) { arrays[i] = malloc(512 * sizeof(double)); for (int k = 0; k < 512; k++) arrays[i][k] = k; }
  double total = 0, sink = 0;
  for (int i = 0; i < ${PASSES}; i++) {
    if (sleep) { struct timespec w = { 0, ${WAIT_US} * 1000 }; nanosleep(&w, NULL); }
    else { double t0 = now(); while (now() - t0 < ${WAIT_US} * 1000.0) {} }
    double t0 = now();
    sink += pass(pages);
    if (i >= ${WARMUP}) total += now() - t0;
  }
  printf("%.0f %d\\n", total / ${PASSES - WARMUP}, sink > 0);
  return 0;
}
`;

const JS_SOURCE = `
const arrays = Array.from({ length: 64 }, () => Float64Array.from({ length: 512 }, (_, k) => k));
const cell = (x) => arrays[x & 63][(x * 7) & 511];
function pass(pages) { let s = 0; for (let j = 0; j < 64; j++) s += cell((j % pages) * 13); return s; }
const pages = Number(process.argv[2]), sleep = process.argv[3] === 'sleep', futex = new Int32Array(new SharedArrayBuffer(4));
let total = 0, sink = 0;
for (let i = 0; i < ${PASSES}; i++) {
  if (sleep) Atomics.wait(futex, 0, 0, ${WAIT_US} / 1000);
  else { const t0 = performance.now(); while (performance.now() - t0 < ${WAIT_US} / 1000) {} }
  const t0 = performance.now();
  sink += pass(pages);
  if (i >= ${WARMUP}) total += performance.now() - t0;
}
console.log(Math.round(total * 1e6 / ${PASSES - WARMUP}), sink > 0 ? 1 : 0);
`;

/** ns per pass of `cmd` over `pages` pages after each way of waiting. */
function run(cmd: readonly string[], pages: number, how: 'sleep' | 'spin'): number {
  return Number(execFileSync(cmd[0]!, [...cmd.slice(1), String(pages), how], { encoding: 'utf8' }).trim().split(' ')[0]);
}

export async function wakeSuite(): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-wake-'));
  try {
    fs.writeFileSync(path.join(dir, 'wake.c'), C_SOURCE);
    fs.writeFileSync(path.join(dir, 'wake.mjs'), JS_SOURCE);
    execFileSync('cc', ['-O2', '-o', path.join(dir, 'wake'), path.join(dir, 'wake.c')]);
    const programs = [['C', [path.join(dir, 'wake')]], ['JavaScript', [process.execPath, path.join(dir, 'wake.mjs')]]] as const;
    const rows = [1, 64].flatMap((pages) => programs.map(([name, cmd]) => {
      const spin = run(cmd, pages, 'spin'), sleep = run(cmd, pages, 'sleep');
      return `${`${name}, ${pages} page${pages > 1 ? 's' : ''}`.padEnd(20)}${String(spin).padStart(16)}${String(sleep).padStart(17)}` +
        `${String(sleep - spin).padStart(16)}`;
    }));
    return [
      `## the same work (64 reads through 2 calls) right after ${WAIT_US} µs spinning or sleeping, ns per pass (mean of ${PASSES - WARMUP})`,
      `${'work'.padEnd(20)}${'after spinning'.padStart(16)}${'after sleeping'.padStart(17)}${'wake-up cost'.padStart(16)}`,
      ...rows,
    ].join('\n');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
