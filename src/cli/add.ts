// `ublk-ts add TARGET [options]`: the device's options (device-options.ts)
// and the target's own rows, read from one command line; the server then runs
// detached (or in the foreground) and `add` returns once the device is live.
import path from 'node:path';
import { optionHelp } from '../options/argv.js';
import { flagOf, type OptionSpec } from '../options/spec.js';
import { DEVICE_OPTIONS, checkDeviceOptions } from '../ublk/control/device-options.js';
import { BUILTIN_TARGETS, loadTarget, resolveTarget } from '../ublk/target-loader.js';
import { checkTargetOptions, targetOptionSpecs, type TargetModule } from '../ublk/target.js';
import { print, readArgs, type Command } from './command.js';
import { addToDaemon } from './daemon.js';
import { UsageError } from './errors.js';
import { launch } from './launch.js';
import type { ServeConfig } from './server.js';

const ADD_OPTIONS: readonly OptionSpec[] = [
  { key: 'type', short: 't', type: 'string', arg: 'TARGET', help: 'the target, as an alternative to the first argument' },
  { key: 'foreground', type: 'bool', help: 'keep the server attached to this terminal (SIGINT/SIGTERM stop the device)' },
  { key: 'daemon', flag: 'no-daemon', type: 'bool', negated: true, default: true,
    help: 'a server of its own even while `ublk-ts daemon` runs (which otherwise serves the device)' },
  { key: 'supervise', flag: 'no-supervisor', type: 'bool', negated: true, default: true,
    help: 'with --recovery: no supervisor restarts a server that dies (you do, with `ublk-ts recover ID`)' },
];

export const addCommand: Command = {
  name: 'add',
  brief: 'create a device and print its path once it is live',
  synopsis: 'TARGET [options]',
  summary: `Create a device served by TARGET (${BUILTIN_TARGETS.join(', ')}, or a target module path) and print its\n` +
    'path once it is live; the server keeps running in the background. `ublk-ts add TARGET --help`\n' +
    'lists the target\'s own options too.',
  options: [...DEVICE_OPTIONS, ...ADD_OPTIONS],
  run: add,
};

/** The target named by the first argument or by -t/--type, and the rest of argv. */
function splitTarget(argv: string[]): { target?: string; rest: string[] } {
  if (argv.length && !argv[0]!.startsWith('-')) return { target: argv[0], rest: argv.slice(1) };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if ((a === '-t' || a === '--type') && i + 1 < argv.length) return { target: argv[i + 1], rest: [...argv.slice(0, i), ...argv.slice(i + 2)] };
    const m = /^(?:-t|--type=)(.+)$/.exec(a);
    if (m) return { target: m[1], rest: [...argv.slice(0, i), ...argv.slice(i + 1)] };
  }
  return { rest: argv };
}

async function loadForCli(target: string): Promise<TargetModule> {
  return loadTarget(resolveTarget(target));
}

/** A target's rows must not take a name the device's options already use. */
function checkNoClash(name: string, specs: readonly OptionSpec[]): void {
  const taken = new Set(addCommand.options.flatMap((s) => [flagOf(s), s.key, ...(s.short ? [`-${s.short}`] : [])]));
  for (const s of specs) {
    for (const n of [flagOf(s), s.key, ...(s.short ? [`-${s.short}`] : [])]) {
      if (taken.has(n)) throw new UsageError(`target ${name} declares option ${n}, which is a device option: rename it`);
    }
  }
}

async function targetsHelp(): Promise<string> {
  let text = 'built-in targets and their options:\n';
  for (const name of BUILTIN_TARGETS) text += `\n${name}:\n${optionHelp(targetOptionSpecs(await loadForCli(name)))}`;
  return text;
}

/**
 * Options that name files (argument PATH or FILE, or a comma-separated list
 * of them) made absolute against the caller's directory: the server that
 * opens them runs elsewhere.
 */
function resolvePaths<O extends object>(specs: readonly OptionSpec[], options: O): O {
  const o = options as Record<string, unknown>;
  for (const s of specs) {
    const v = o[s.key];
    if (typeof v !== 'string' || !/^(PATH|FILE)\b/.test(s.arg ?? '')) continue;
    o[s.key] = s.arg!.includes(',') ? v.split(',').map((p) => (p ? path.resolve(p) : p)).join(',') : path.resolve(v);
  }
  return options;
}

/** Reads `add`'s command line into a server configuration; null after printing --help. */
export async function parseAdd(argv: string[]): Promise<{ cfg: ServeConfig; foreground: boolean; daemon: boolean } | null> {
  const { target, rest } = splitTarget(argv);
  if (target === undefined) {
    if (readArgs(addCommand, rest, addCommand.options, await targetsHelp()) === null) return null;
    throw new UsageError(`add needs a target: ublk-ts add ${BUILTIN_TARGETS.join('|')}|MODULE [options] (see ublk-ts add --help)`);
  }
  const mod = await loadForCli(target);
  const targetSpecs = targetOptionSpecs(mod);
  checkNoClash(mod.name, targetSpecs);
  const specs = [...DEVICE_OPTIONS, ...targetSpecs, ...ADD_OPTIONS];
  const args = readArgs(addCommand, rest, specs, `(the ${mod.name} target's options are among these)\n`);
  if (args === null) return null;
  if (args.positionals.length) throw new UsageError(`unexpected argument '${args.positionals[0]}' (add takes one target; see ublk-ts add --help)`);
  const pick = (rows: readonly OptionSpec[]) => Object.fromEntries(rows.filter((s) => s.key in args.values).map((s) => [s.key, args.values[s.key]]));
  // The server runs from / (the daemon from its own directory): a relative path is the caller's (--shmem, the target's files).
  const device = resolvePaths(DEVICE_OPTIONS, checkDeviceOptions(pick(DEVICE_OPTIONS), 'cli'));
  const options = resolvePaths(targetSpecs, checkTargetOptions(mod, pick(targetSpecs), 'cli'));
  const module = (BUILTIN_TARGETS as readonly string[]).includes(target) || target.startsWith('file:') ? target : path.resolve(target);
  if (args.values.supervise === false && device.recovery === 'none') throw new UsageError('--no-supervisor only applies with --recovery');
  const supervise = args.values.supervise === false ? { supervise: false } : {};
  const foreground = args.values.foreground === true;
  return { cfg: { ...device, target: module, options, ...supervise }, foreground, daemon: args.values.daemon !== false && !foreground };
}

async function add(argv: string[]): Promise<void> {
  const parsed = await parseAdd(argv);
  if (!parsed) return;
  // A running daemon serves the device; without one, a server of its own does.
  const viaDaemon = parsed.daemon ? await addToDaemon(parsed.cfg) : null;
  if (viaDaemon !== null) print(viaDaemon);
  else await launch(parsed.cfg, parsed.foreground);
}
