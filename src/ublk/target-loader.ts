// Finds a target module: a built-in by name, or the user's own module by path or URL.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { TargetOptionError, type TargetModule } from './target.js';
import { compiled } from '../package-files.js';

export const BUILTIN_TARGETS = ['null', 'memory', 'loop', 'stripe', 'fault-inject', 'zoned', 'nbd'] as const;

type Loaded = { default?: TargetModule };
/**
 * The built-in targets, imported by literal paths, which a bundle
 * (scripts/bundle.mjs) takes in: loaded from it, not from dist/src/ (a dozen
 * ES modules more per Node start, and a second copy of what they import).
 */
const BUILTIN_IMPORTS: Record<(typeof BUILTIN_TARGETS)[number], () => Promise<Loaded>> = {
  'null': () => import('../targets/null.js'),
  'memory': () => import('../targets/memory.js'),
  'loop': () => import('../targets/loop.js'),
  'stripe': () => import('../targets/stripe.js'),
  'fault-inject': () => import('../targets/fault-inject.js'),
  'zoned': () => import('../targets/zoned.js'),
  'nbd': () => import('../targets/nbd.js'),
};

/** The import of a built-in target's module URL (resolveTarget's), if it is one. */
function builtinImport(url: string): (() => Promise<Loaded>) | undefined {
  const name = BUILTIN_TARGETS.find((n) => resolveTarget(n) === url);
  return name && BUILTIN_IMPORTS[name];
}

/** The module URL for a target name or path; throws TargetOptionError if there is none. */
export function resolveTarget(target: string | URL): string {
  if (target instanceof URL) return target.href;
  if ((BUILTIN_TARGETS as readonly string[]).includes(target)) {
    return pathToFileURL(compiled('targets', `${target}.js`)).href;
  }
  if (target.startsWith('file:')) return target;
  if (target.includes('/') || /\.[cm]?js$/.test(target)) {
    const abs = path.resolve(target);
    if (!fs.existsSync(abs)) throw new TargetOptionError(`target module ${abs} does not exist`);
    return pathToFileURL(abs).href;
  }
  throw new TargetOptionError(`unknown target '${target}' (built-in: ${BUILTIN_TARGETS.join(', ')}, or a module path)`);
}

/** Imports a target module; a module that fails to load is named with its error. */
export async function loadTarget(url: string): Promise<TargetModule> {
  let mod: Loaded;
  try {
    mod = await (builtinImport(url)?.() ?? (import(url) as Promise<Loaded>));
  } catch (e) {
    const where = url.startsWith('file:') ? fileURLToPath(url) : url;
    throw new TargetOptionError(`cannot load target module ${where}: ${(e as Error)?.message ?? String(e)}`.split('\n')[0]!);
  }
  const t = mod.default;
  if (!t || typeof t.setup !== 'function' || typeof t.open !== 'function') {
    throw new TargetOptionError(`${url} does not default-export a target (an object with setup() and open())`);
  }
  return t;
}
