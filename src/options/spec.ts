// One row per option: the command line's parsing, each command's --help and
// the library's validation all come from these rows, so an option is written
// down once (name, short alias, type, default, range, help) and checked the
// same way whether it came from argv (text) or from a library call (a value).

export type OptionType = 'int' | 'size' | 'bool' | 'string' | 'enum';

export interface OptionSpec {
  /** The library's name and the key in the options object (camelCase). */
  key: string;
  /** Command-line name without dashes; default: `key` in kebab-case. */
  flag?: string;
  /** One-letter alias as ublksrv, kublk and rublk use it (`-q`). */
  short?: string;
  type: OptionType;
  /** Command line: the flag sets `false` (`--no-auto-buf-reg` for `autoBufReg`); bool only. */
  negated?: boolean;
  default?: number | string | boolean;
  /** int/size: inclusive range. */
  min?: number;
  max?: number;
  /** size: the value must be a multiple of this many bytes. */
  multipleOf?: number;
  /** int/size: the value must be a power of 2. */
  powerOf2?: boolean;
  /** enum: the allowed values. */
  choices?: readonly string[];
  required?: boolean;
  /** Only meaningful together with another option's value, e.g. `{ key: 'copy', value: 'zero' }`. */
  onlyWith?: { key: string; value: unknown; why?: string };
  /** Placeholder in help and errors: N, SIZE, PATH. */
  arg?: string;
  help: string;
}

/** Bad input from the user or a library caller: one line, naming the option and what is expected. */
export class OptionError extends Error {
  override name = 'OptionError';
}

/** How an option is named in messages: `--queues` on the command line, `queues` in the library. */
export type Naming = 'cli' | 'library';

export const flagOf = (s: OptionSpec): string => s.flag ?? s.key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());

export function nameOf(s: OptionSpec, naming: Naming): string {
  return naming === 'cli' ? `--${flagOf(s)}` : s.key;
}

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** "512", "4K", "1G", "2TiB" (powers of 1024); undefined if it is not a size. */
export function parseSizeText(text: string): number | undefined {
  const m = /^(\d+)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  return m ? Number(m[1]) * UNITS[m[2]!.toUpperCase()]! : undefined;
}

/** 1073741824 → "1 GiB", 1536 → "1.5 KiB", 100 → "100 B". */
export function formatSize(bytes: number): string {
  let v = bytes, u = 0;
  const names = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  while (v >= 1024 && u < names.length - 1) {
    v /= 1024;
    u++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${names[u]}`;
}

function rangeText(s: OptionSpec): string {
  const show = (n: number) => (s.type === 'size' ? formatSize(n) : String(n));
  return s.max === undefined ? `at least ${show(s.min ?? 0)}` : `from ${show(s.min ?? 0)} to ${show(s.max)}`;
}

const shown = (raw: unknown): string => (typeof raw === 'string' ? `'${raw}'` : JSON.stringify(raw) ?? String(raw));

/** One value, as text from argv or as a value from a library caller, checked against its row. */
export function checkValue(s: OptionSpec, raw: unknown, naming: Naming): number | string | boolean {
  const name = nameOf(s, naming);
  switch (s.type) {
    case 'bool':
      if (typeof raw !== 'boolean') throw new OptionError(`${name} is a yes/no option, got ${shown(raw)}`);
      return raw;
    case 'string':
      if (typeof raw !== 'string' || raw === '') throw new OptionError(`${name} needs ${s.arg ?? 'a value'}`);
      return raw;
    case 'enum':
      if (typeof raw !== 'string' || !s.choices!.includes(raw)) {
        throw new OptionError(`${name} must be one of ${s.choices!.join(', ')}, got ${shown(raw)}`);
      }
      return raw;
    case 'int':
    case 'size': {
      let v: number | undefined;
      if (typeof raw === 'number') v = raw;
      else if (typeof raw === 'string') v = s.type === 'size' ? parseSizeText(raw) : /^\s*\d+\s*$/.test(raw) ? Number(raw) : undefined;
      if (v === undefined || !Number.isSafeInteger(v)) {
        const what = s.type === 'size' ? 'a size in bytes (K, M, G, T suffixes: powers of 1024)' : 'a whole number';
        throw new OptionError(`${name} must be ${what}, got ${shown(raw)}`);
      }
      if (v < (s.min ?? 0) || (s.max !== undefined && v > s.max)) throw new OptionError(`${name} must be ${rangeText(s)}, got ${shown(raw)}`);
      if (s.multipleOf && v % s.multipleOf) throw new OptionError(`${name} must be a multiple of ${s.multipleOf} bytes, got ${shown(raw)}`);
      if (s.powerOf2 && !Number.isInteger(Math.log2(v))) throw new OptionError(`${name} must be a power of 2, got ${v}`);
      return v;
    }
  }
}

/**
 * Checks a whole set of options against the rows: unknown keys, types,
 * ranges, required ones, and options given without the one they depend on.
 * Returns every row's value, defaults filled in (absent where a row has none).
 */
export function checkOptions(specs: readonly OptionSpec[], given: Record<string, unknown>, naming: Naming): Record<string, unknown> {
  const byKey = new Map(specs.map((s) => [s.key, s]));
  for (const k of Object.keys(given)) {
    if (given[k] !== undefined && !byKey.has(k)) {
      throw new OptionError(`unknown option ${naming === 'cli' ? `--${k}` : k} (known: ${specs.map((s) => nameOf(s, naming)).join(', ')})`);
    }
  }
  const out: Record<string, unknown> = {};
  for (const s of specs) {
    const raw = given[s.key];
    if (raw === undefined) {
      if (s.required) throw new OptionError(`${nameOf(s, naming)}${naming === 'cli' && s.arg ? ` ${s.arg}` : ''} is required`);
      if (s.default !== undefined) out[s.key] = s.default;
      continue;
    }
    out[s.key] = checkValue(s, raw, naming);
  }
  // A value equal to its default asks for nothing (it also lets checked options be checked again).
  for (const s of specs) {
    if (!s.onlyWith || given[s.key] === undefined || out[s.key] === s.default) continue;
    const dep = byKey.get(s.onlyWith.key)!;
    if (out[dep.key] !== s.onlyWith.value) {
      const want = dep.type === 'bool' ? nameOf(dep, naming) : `${nameOf(dep, naming)} ${String(s.onlyWith.value)}`;
      throw new OptionError(`${nameOf(s, naming)} only applies with ${want}${s.onlyWith.why ? ` (${s.onlyWith.why})` : ''}`);
    }
  }
  return out;
}
