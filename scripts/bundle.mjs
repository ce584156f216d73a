#!/usr/bin/env node
// What `npm run build` does after tsc: bundles the CLI and the serving
// threads' entry into one CommonJS file each, with the built-in targets in
// them, so that a Node start loads one file instead of dozens of ES modules.
// In the test VM (software emulation) a serving thread started in 0.8 s
// from dist/src/, 0.5 s from an ES module bundle and 0.37 s from a CommonJS
// one (medians of 8); an `add` of a null device took 2.3 s instead of 2.7 s,
// of a loop device 2.2 s instead of 3.1 s (medians of 6, against an ES module
// bundle of the CLI without the targets).
//
//   dist/ublk-ts.cjs      the CLI (bin/ublk-ts.js), also every server and daemon it starts
//   dist/ublk-worker.cjs  a serving thread, for code that runs from the CLI bundle
//
//   node scripts/bundle.mjs ENTRY OUTFILE   bundles ENTRY alone, the same way
//                                           (scripts/test-kernel.sh: the kublk front end)
//
// The library (dist/src/index.js) is not bundled: its serving threads run
// dist/src/ublk/worker/worker.js, with the modules its user imports.
import { build } from 'esbuild';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));

const common = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  logLevel: 'warning',
  // The code finds the package root (package-files.ts) and the addon
  // (native.ts) from its own file, as import.meta.url, which CommonJS lacks.
  define: { 'import.meta.url': '__ublk_ts_url', UBLK_TS_BUNDLE: 'true' },
  banner: { js: "const __ublk_ts_url = require('node:url').pathToFileURL(__filename).href;" },
};

const args = process.argv.slice(2);
if (args.length !== 0 && args.length !== 2) {
  console.error('usage: node scripts/bundle.mjs [ENTRY OUTFILE]');
  process.exit(2);
}
const bundles = args.length ? [args] : [
  [join(ROOT, 'dist/src/cli/main.js'), join(ROOT, 'dist/ublk-ts.cjs')],
  [join(ROOT, 'dist/src/ublk/worker/worker.js'), join(ROOT, 'dist/ublk-worker.cjs')],
];
await Promise.all(bundles.map(([entry, outfile]) => build({ ...common, entryPoints: [entry], outfile })));
