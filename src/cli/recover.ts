// `ublk-ts recover ID`: a new server for a device created with --recovery
// whose server is gone, with the target, options and mode it was created
// with (kept in its state file); IO that waited meanwhile goes on.
import { readArgs, oneId, type Command, idOption } from './command.js';
import { UsageError } from './errors.js';
import { launch } from './launch.js';
import { readState } from './state.js';

export const recoverCommand: Command = {
  name: 'recover',
  brief: 'attach a new server to a device whose server is gone (--recovery)',
  synopsis: 'ID [--foreground]',
  summary: 'Start a new server for device ID, created with --recovery, whose server died or was let go of:\n' +
    'the target, options and mode it was created with are used again. Prints its path once it is live.',
  options: [
    idOption('the device'),
    { key: 'foreground', type: 'bool', help: 'keep the server attached to this terminal' },
  ],
  async run(argv) {
    const args = readArgs(recoverCommand, argv);
    if (!args) return;
    const id = oneId(args, recoverCommand);
    if (id === undefined) throw new UsageError('usage: ublk-ts recover ID');
    const config = readState(id)?.config;
    if (!config) throw new UsageError(`no saved configuration for device ${id} (not created by ublk-ts add --recovery, or deleted)`);
    await launch({ ...config, recoverId: id }, args.values.foreground === true);
  },
};
