// Finds a target module: a built-in by name, or the user's own module by path or URL.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { TargetOptionError, type TargetModule } from './target.js';
import { compiled } from '../package-files.js';

export const BUILTIN_TARGETS = ['null', 'memory', 'loop', 'stripe', 'fault-inject', 'zoned', 'nbd'] as const;

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
  let mod: { default?: TargetModule };
  try {
    mod = (await import(url)) as { default?: TargetModule };
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
