// `ublk-ts resize ID SIZE`: the device's new size (UBLK_F_UPDATE_SIZE's
// UPDATE_SIZE). Its server changes the target first when growing (memory and
// loop grow and shrink; a loop file grows sparse) and the kernel's size first
// when shrinking: the target always serves what the kernel announces.
import { checkValue, formatSize } from '../options/spec.js';
import { sizeOption } from '../ublk/target.js';
import { askServer } from './control-socket.js';
import { askDaemon, servedByDaemon } from './daemon.js';
import { print, readArgs, oneId, type Command, idOption } from './command.js';
import { UsageError } from './errors.js';

const SIZE = sizeOption(false, 'the new size (or as the second argument)');

export const resizeCommand: Command = {
  name: 'resize',
  brief: 'change a device\'s size (memory, loop, null: grow and shrink)',
  synopsis: 'ID SIZE',
  summary: 'Change the size of device ID to SIZE (K, M, G, T: powers of 1024; whole logical blocks). The target\n' +
    'changes first (a loop file grows sparse), then the kernel announces the new size.',
  options: [idOption('the device'), SIZE],
  async run(argv) {
    const args = readArgs(resizeCommand, argv);
    if (!args) return;
    // `resize ID SIZE`, or -n ID -s SIZE as kublk's update_size takes them.
    const sizeText = args.values.size ?? (args.positionals.length === 2 ? args.positionals.pop() : undefined);
    const id = oneId(args, resizeCommand);
    if (id === undefined || sizeText === undefined) throw new UsageError('usage: ublk-ts resize ID SIZE');
    let size: number;
    try {
      size = checkValue(SIZE, String(sizeText), 'cli') as number;
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    // The daemon serves many devices on one socket; a server of its own has one per device.
    if (servedByDaemon(id)) await askDaemon({ op: 'resize', id, size });
    else await askServer(id, { op: 'resize', size });
    print(`/dev/ublkb${id}: ${formatSize(size)}`);
  },
};
