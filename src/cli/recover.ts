// `ublk-ts recover ID [target options]`: a new server for a device created
// with --recovery whose server is gone, with the target, options and mode it
// was created with (kept in its state file); IO that waited meanwhile goes on.
// Target options given here replace the saved ones (a moved backing file, a
// fault to inject), for this server and the ones after it.
import { loadTarget, resolveTarget } from '../ublk/target-loader.js';
import { checkTargetOptions, targetOptionSpecs } from '../ublk/target.js';
import { readArgs, oneId, type Command, idOption } from './command.js';
import { UsageError } from './errors.js';
import { launch } from './launch.js';
import { readState } from './state.js';

export const recoverCommand: Command = {
  name: 'recover',
  brief: 'attach a new server to a device whose server is gone (--recovery)',
  synopsis: 'ID [--foreground] [target options]',
  summary: 'Start a new server for device ID, created with --recovery, whose server died or was let go of:\n' +
    'the target, options and mode it was created with are used again; target options given here replace\n' +
    'the saved ones. Prints its path once it is live.',
  options: [
    idOption('the device'),
    { key: 'foreground', type: 'bool', help: 'keep the server attached to this terminal' },
  ],
  async run(argv) {
    // The saved configuration names the target, whose options this command line may also carry.
    const peeked = peekId(argv);
    const config = peeked === undefined ? undefined : readState(peeked)?.config;
    const mod = config ? await loadTarget(resolveTarget(config.target)) : null;
    const targetSpecs = mod ? targetOptionSpecs(mod) : [];
    const args = readArgs(recoverCommand, argv, [...recoverCommand.options, ...targetSpecs]);
    if (!args) return;
    const id = oneId(args, recoverCommand);
    if (id === undefined) throw new UsageError('usage: ublk-ts recover ID');
    if (!config || !mod) throw new UsageError(`no saved configuration for device ${id} (not created by ublk-ts add --recovery, or deleted)`);
    const given = Object.fromEntries(targetSpecs.filter((s) => s.key in args.values).map((s) => [s.key, args.values[s.key]]));
    const options = Object.keys(given).length ? checkTargetOptions(mod, { ...config.options, ...given }, 'cli') : config.options;
    await launch({ ...config, options, recoverId: id }, args.values.foreground === true);
  },
};

/**
 * The device id on a command line not parsed yet (its target, and so its
 * options, are not known): `-n ID`, `--id ID`, or a number that is not an
 * option's value (first, or after --foreground).
 */
function peekId(argv: readonly string[]): number | undefined {
  let positional: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!, prev = argv[i - 1];
    const v = a === '-n' || a === '--id' ? argv[i + 1] : /^--id=(\d+)$/.exec(a)?.[1];
    if (v !== undefined) return /^\d+$/.test(v) ? Number(v) : undefined;
    if (positional === undefined && /^\d+$/.test(a) && (prev === undefined || prev === '--foreground' || !prev.startsWith('-'))) positional = a;
  }
  return positional === undefined ? undefined : Number(positional);
}
