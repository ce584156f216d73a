// Finds a target module: a built-in by name, or the user's own module by path or URL.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { TargetOptionError, type TargetModule } from './target.js';

export const BUILTIN_TARGETS = ['null', 'memory', 'loop'] as const;

/** The module URL for a target name or path; throws TargetOptionError if there is none. */
export function resolveTarget(target: string | URL): string {
  if (target instanceof URL) return target.href;
  if ((BUILTIN_TARGETS as readonly string[]).includes(target)) {
    return new URL(`../targets/${target}.js`, import.meta.url).href;
  }
  if (target.startsWith('file:')) return target;
  if (target.includes('/') || /\.[cm]?js$/.test(target)) {
    const abs = path.resolve(target);
    if (!fs.existsSync(abs)) throw new TargetOptionError(`target module ${abs} does not exist`);
    return pathToFileURL(abs).href;
  }
  throw new TargetOptionError(`unknown target '${target}' (built-in: ${BUILTIN_TARGETS.join(', ')}, or a module path)`);
}

export async function loadTarget(url: string): Promise<TargetModule> {
  const mod = (await import(url)) as { default?: TargetModule };
  const t = mod.default;
  if (!t || typeof t.setup !== 'function' || typeof t.open !== 'function') {
    throw new TargetOptionError(`${url} does not default-export a target (an object with setup() and open())`);
  }
  return t;
}
