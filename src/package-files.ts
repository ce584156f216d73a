// Files of the installed package (the worker script, built-in targets, the
// CLI's entry, the addon, package.json), found from the package root. The code
// runs from dist/src/ or bundled (dist/ublk-ts.cjs, the CLI, and
// dist/ublk-worker.cjs: scripts/bundle.mjs), so a path relative to the running
// module would differ between the two: the root is found by its package.json instead.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const pj = join(dir, 'package.json');
    if (existsSync(pj) && (JSON.parse(readFileSync(pj, 'utf8')) as { name?: string }).name === 'ublk-ts') return dir;
    if (dirname(dir) === dir) throw new Error(`ublk-ts package root not found above ${from}`);
  }
}

/** Defined (true) by scripts/bundle.mjs in the bundles; absent from dist/src/. */
declare const UBLK_TS_BUNDLE: boolean | undefined;
/** Whether this code runs from one of the bundles rather than from dist/src/. */
export const BUNDLED = typeof UBLK_TS_BUNDLE !== 'undefined' && UBLK_TS_BUNDLE;

export const PACKAGE_ROOT = findRoot(dirname(fileURLToPath(import.meta.url)));

/** The absolute path of a file of the package, e.g. `packageFile('dist/src/targets/null.js')`. */
export const packageFile = (...parts: string[]): string => join(PACKAGE_ROOT, ...parts);

/** Where tsc puts the compiled library (tsconfig: outDir dist, sources under src/). */
export const compiled = (...parts: string[]): string => packageFile('dist', 'src', ...parts);
