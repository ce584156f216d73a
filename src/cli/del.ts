// `ublk-ts del ID | --all`: stop and remove devices, waiting until they are gone.
import { readArgs, oneId, type Command, idOption } from './command.js';
import { deleteDevice, describe, deviceIds, waitFor, withControl } from './devices.js';
import { readState } from './state.js';
import { processAlive } from '../process-alive.js';
import { UsageError } from './errors.js';
import { isRoot, UblkControl, UblkControlError } from '../ublk/control/control.js';
import { EBUSY, ENODEV, EINVAL, EOPNOTSUPP } from '../sys.js';

export const delCommand: Command = {
  name: 'del',
  brief: 'stop and remove devices',
  synopsis: 'ID | --all [--safe]',
  summary: 'Stop and remove a device (in-flight IO finishes first) or all of them; waits until they are gone.',
  options: [
    idOption('the device'),
    { key: 'all', short: 'a', type: 'bool', help: 'every ublk device' },
    { key: 'safe', type: 'bool', help: 'only if nothing has the device open (UBLK_F_SAFE_STOP_DEV): else refuse' },
  ],
  async run(argv) {
    const args = readArgs(delCommand, argv);
    if (!args) return;
    const id = oneId(args, delCommand);
    if ((id === undefined) === !args.values.all) throw new UsageError('usage: ublk-ts del ID | --all');
    const busy: number[] = [];
    await withControl(async (ctrl) => {
      // --all: every device this user may delete (root: all; another user: their own).
      const ids = id === undefined ? await mine(ctrl, deviceIds()) : [id];
      for (const i of ids) {
        if (!args.values.safe) {
          await deleteDevice(ctrl, i);
          continue;
        }
        // Who serves it, asked before the stop: once stopped, its server deletes it and exits.
        const st = readState(i);
        // (Not the daemon's: it serves on.)
        const pids = [st?.supervisor, st?.daemon ? undefined : st?.pid].filter((p): p is number => p !== undefined);
        if (!(await safeStop(ctrl, i))) {
          busy.push(i);
          continue;
        }
        await deleteDevice(ctrl, i, true);
        await waitFor(() => pids.every((p) => !processAlive(p)), 10_000);
      }
    });
    if (busy.length) throw new Error(`device${busy.length > 1 ? 's' : ''} ${busy.join(', ')} in use (open or mounted): not deleted (--safe)`);
  },
};

/** The devices among `ids` this process may manage (what `list` shows it): root, all of them. */
async function mine(ctrl: UblkControl, ids: number[]): Promise<number[]> {
  if (isRoot()) return ids;
  const out: number[] = [];
  for (const i of ids) if (await describe(ctrl, i)) out.push(i);
  return out;
}

/** TRY_STOP_DEV: stops device `id` unless it is open; false if it is. */
async function safeStop(ctrl: UblkControl, id: number): Promise<boolean> {
  try {
    await ctrl.tryStopDev(id);
    return true;
  } catch (e) {
    if (e instanceof UblkControlError && e.errno === -EBUSY) return false;
    if (e instanceof UblkControlError && e.errno === -ENODEV) throw new UsageError(`no ublk device with id ${id}`);
    if (e instanceof UblkControlError && (e.errno === -EINVAL || e.errno === -EOPNOTSUPP)) {
      throw new Error(`this kernel's ublk driver has no TRY_STOP_DEV (--safe needs UBLK_F_SAFE_STOP_DEV, a recent kernel)`);
    }
    throw e;
  }
}
