// `ublk-ts quiesce ID`: live replacement, step one. The device's server is
// asked (QUIESCE_SIGNAL) to quiesce it (UBLK_F_QUIESCE): new IO waits, the
// requests in flight finish, the server lets go of the device and exits, and
// its supervisor with it; `ublk-ts recover ID` then starts the new server.
// File systems stay mounted all along. A device whose server is not ours (or
// is gone) is quiesced from here with QUIESCE_DEV.
import { UBLK_F_QUIESCE, UBLK_S_DEV_QUIESCED, STATE_NAMES } from '../ublk/abi/uapi.js';
import { blockDevicePath } from '../ublk/control/control.js';
import { batchQuiesceLoses } from '../ublk/control/device.js';
import { checkOptions } from '../options/spec.js';
import { readArgs, oneId, print, type Command, idOption } from './command.js';
import { waitFor, withControl } from './devices.js';
import { UsageError } from './errors.js';
import { QUIESCE_SIGNAL } from './server.js';
import { daemonServes, readState } from './state.js';
import { processAlive } from '../process-alive.js';

export const quiesceCommand: Command = {
  name: 'quiesce',
  brief: 'hold a device\'s IO and let its server go, for `recover` to attach a new one',
  synopsis: 'ID [--timeout SECONDS]',
  summary: 'Quiesce device ID (created with --recovery, on a kernel with UBLK_F_QUIESCE): new IO waits, IO in\n' +
    'flight finishes, and the server (with its supervisor) exits; `ublk-ts recover ID` then attaches a new\n' +
    'server. Nothing needs unmounting, and no IO fails.',
  options: [
    idOption('the device'),
    { key: 'timeout', type: 'int', arg: 'SECONDS', min: 1, max: 3600, default: 30, help: 'give up after this long' },
  ],
  async run(argv) {
    const args = readArgs(quiesceCommand, argv);
    if (!args) return;
    const id = oneId(args, quiesceCommand);
    if (id === undefined) throw new UsageError('usage: ublk-ts quiesce ID');
    const { timeout } = checkOptions(quiesceCommand.options, args.values, 'cli') as { timeout: number };
    const timeoutMs = timeout * 1000;
    await withControl(async (ctrl) => {
      const info = await ctrl.getDevInfo(id);
      if (!(info.flags & UBLK_F_QUIESCE)) {
        throw new UsageError(`device ${id} cannot be quiesced: it was created without --recovery, or the kernel lacks UBLK_F_QUIESCE`);
      }
      const unsafe = batchQuiesceLoses(info.flags);
      if (unsafe !== null) throw new UsageError(`device ${id}: ${unsafe}`);
      const quiesced = async (): Promise<boolean> => (await ctrl.getDevInfo(id)).state === UBLK_S_DEV_QUIESCED;
      if (await quiesced()) {
        print(`${blockDevicePath(id)} is quiesced already: \`ublk-ts recover ${id}\` attaches a new server`);
        return;
      }
      const pid = info.ublksrv_pid;
      const st = readState(id);
      if (daemonServes(st, pid)) {
        throw new UsageError(`device ${id} is served by the ublk-ts daemon, which cannot let go of one device alone: ` +
          'add it with --no-daemon to replace its server live');
      }
      const ours = pid > 0 && st?.pid === pid && processAlive(pid);
      if (ours) process.kill(pid, QUIESCE_SIGNAL);
      else await ctrl.quiesceDev(id, timeoutMs);
      if (!(await waitFor(quiesced, timeoutMs + 5000)) || (ours && !(await waitFor(() => !processAlive(pid), 5000)))) {
        const state = STATE_NAMES[(await ctrl.getDevInfo(id)).state] ?? 'unknown';
        throw new Error(`device ${id} did not quiesce within ${timeoutMs / 1000} s (state ${state}); see /run/ublk-ts/${id}.log`);
      }
      print(`${blockDevicePath(id)} quiesced: \`ublk-ts recover ${id}\` attaches a new server`);
    });
  },
};
