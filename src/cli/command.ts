// What every subcommand shares: its options as rows, its --help made from
// them, and reading argv against them.
import { parseArgv, optionHelp } from '../options/argv.js';
import { OptionError, type OptionSpec } from '../options/spec.js';
import { UsageError } from './errors.js';

export interface Command {
  name: string;
  /** After `ublk-ts NAME`: `[ID] [--json]`. */
  synopsis: string;
  /** One line for `ublk-ts --help`. */
  brief: string;
  /** The paragraph of the command's own --help. */
  summary: string;
  options: readonly OptionSpec[];
  /** More text for `--help`, after the options. */
  details?: string;
  run(argv: string[]): Promise<void>;
}

export const print = (line: string): void => void process.stdout.write(line + '\n');

export function commandHelp(cmd: Command, specs: readonly OptionSpec[] = cmd.options, extra = ''): string {
  let text = `usage: ublk-ts ${cmd.name} ${cmd.synopsis}\n\n${cmd.summary}\n`;
  if (specs.length) text += `\noptions:\n${optionHelp(specs)}`;
  if (extra) text += `\n${extra}`;
  if (cmd.details) text += `\n${cmd.details}`;
  return text;
}

export interface Args {
  values: Record<string, string | boolean>;
  positionals: string[];
}

/**
 * Reads argv against `specs` (default: the command's own). Prints the help
 * and returns null for `-h`/`--help`. Errors are UsageErrors naming the help to read.
 */
export function readArgs(cmd: Command, argv: readonly string[], specs = cmd.options, extraHelp = ''): Args | null {
  try {
    const p = parseArgv(argv, specs, `ublk-ts ${cmd.name} --help`);
    if (p.help) {
      process.stdout.write(commandHelp(cmd, specs, extraHelp));
      return null;
    }
    return p;
  } catch (e) {
    if (e instanceof OptionError) throw new UsageError(e.message);
    throw e;
  }
}

/** The device a command acts on, as `-n ID` (as ublksrv and kublk take it) besides the positional ID; read by oneId(). */
export const idOption = (help: string): OptionSpec =>
  ({ key: 'id', short: 'n', type: 'string', arg: 'ID', help: `${help} (as the positional ID)` });

/** An id given as `ID` or `-n ID`. */
export function oneId(args: Args, cmd: Command): number | undefined {
  const given = [...args.positionals, ...(args.values.id === undefined ? [] : [args.values.id as string])];
  if (given.length > 1) throw new UsageError(`${cmd.name} takes one device id (usage: ublk-ts ${cmd.name} ${cmd.synopsis})`);
  if (given.length === 0) return undefined;
  const text = given[0]!;
  if (!/^\d+$/.test(text)) throw new UsageError(`device id must be a whole number, got '${text}'`);
  return Number(text);
}
