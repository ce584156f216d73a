// `ublk-ts del ID | --all`: stop and remove devices, waiting until they are gone.
import { readArgs, oneId, type Command, idOption } from './command.js';
import { deleteDevice, deviceIds, withControl } from './devices.js';
import { UsageError } from './errors.js';

export const delCommand: Command = {
  name: 'del',
  brief: 'stop and remove devices',
  synopsis: 'ID | --all',
  summary: 'Stop and remove a device (in-flight IO finishes first) or all of them; waits until they are gone.',
  options: [
    idOption('the device'),
    { key: 'all', short: 'a', type: 'bool', help: 'every ublk device' },
  ],
  async run(argv) {
    const args = readArgs(delCommand, argv);
    if (!args) return;
    const id = oneId(args, delCommand);
    if ((id === undefined) === !args.values.all) throw new UsageError('usage: ublk-ts del ID | --all');
    await withControl(async (ctrl) => {
      for (const i of id === undefined ? deviceIds() : [id]) await deleteDevice(ctrl, i);
    });
  },
};
