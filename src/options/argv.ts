// The command line, read against option rows: `--name value`, `--name=value`,
// `-n value`, `-nVALUE`, flags without a value for yes/no options, and `--`
// to end the options. Values stay text here; checkOptions() types and checks them.
import { flagOf, formatSize, OptionError, type OptionSpec } from './spec.js';

export interface ParsedArgv {
  /** Raw values by option key: text, or a boolean for yes/no options. */
  values: Record<string, string | boolean>;
  positionals: string[];
  /** `-h` / `--help` was given. */
  help: boolean;
}

/** Reads argv; throws OptionError (naming the option and `see`, the help to read) for what it cannot place. */
export function parseArgv(argv: readonly string[], specs: readonly OptionSpec[], see: string): ParsedArgv {
  const byFlag = new Map<string, OptionSpec>();
  const byShort = new Map<string, OptionSpec>();
  for (const s of specs) {
    byFlag.set(flagOf(s), s);
    if (s.short) byShort.set(s.short, s);
  }
  const out: ParsedArgv = { values: {}, positionals: [], help: false };
  const set = (s: OptionSpec, shown: string, inline: string | undefined, next: () => string | undefined): void => {
    if (out.values[s.key] !== undefined) throw new OptionError(`${shown} is given twice`);
    if (s.type === 'bool') {
      if (inline !== undefined) throw new OptionError(`${shown} takes no value (got '${inline}')`);
      out.values[s.key] = !s.negated;
      return;
    }
    const v = inline ?? next();
    if (v === undefined) throw new OptionError(`${shown} needs a value: ${shown} ${s.arg ?? 'VALUE'}`);
    out.values[s.key] = v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = (): string | undefined => (i + 1 < argv.length ? argv[++i] : undefined);
    if (a === '--') {
      out.positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a === '-h' || a === '--help') {
      out.help = true;
    } else if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = a.slice(2, eq < 0 ? undefined : eq);
      const s = byFlag.get(name);
      if (!s) throw new OptionError(`unknown option --${name} (see ${see})`);
      set(s, `--${name}`, eq < 0 ? undefined : a.slice(eq + 1), next);
    } else if (a.length > 1 && a.startsWith('-') && !/^-\d/.test(a)) {
      const s = byShort.get(a[1]!);
      if (!s) throw new OptionError(`unknown option ${a.slice(0, 2)} (see ${see})`);
      const rest = a.slice(2);
      if (s.type === 'bool' && rest !== '') throw new OptionError(`-${s.short} takes no value (got '${rest}')`);
      set(s, `-${s.short}`, rest === '' ? undefined : rest, next);
    } else {
      out.positionals.push(a);
    }
  }
  return out;
}

/** Words of `text` in lines of at most `width` characters. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const w of text.split(' ')) {
    if (line && line.length + 1 + w.length > width) {
      lines.push(line);
      line = w;
    } else {
      line = line ? `${line} ${w}` : w;
    }
  }
  return [...lines, line];
}

/** Help lines for the rows: `  -q, --queues N   hardware queues; 1 to 4096, default 1`, wrapped at 100 columns. */
export function optionHelp(specs: readonly OptionSpec[]): string {
  const rows = specs.map((s) => {
    const left = `${s.short ? `-${s.short}, ` : '    '}--${flagOf(s)}${s.type === 'bool' ? '' : ` ${s.arg ?? 'VALUE'}`}`;
    const notes: string[] = [];
    if (s.choices) notes.push(s.choices.join('|'));
    if (s.required) notes.push('required');
    else if (s.default !== undefined && s.type !== 'bool') notes.push(`default ${s.type === 'size' ? formatSize(s.default as number) : String(s.default)}`);
    return [left, notes.length ? `${s.help}; ${notes.join(', ')}` : s.help] as const;
  });
  const width = Math.max(...rows.map(([l]) => l.length)) + 2;
  const pad = ' '.repeat(width + 2);
  return rows.map(([l, r]) => `  ${l.padEnd(width)}${wrap(r, Math.max(40, 100 - width - 2)).join(`\n${pad}`)}`).join('\n') + '\n';
}
