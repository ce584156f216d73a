// `ublk-ts list [ID] [--json]`: the devices, as the kernel and our state files know them.
import { formatSize } from '../options/spec.js';
import { print, readArgs, oneId, type Command, idOption } from './command.js';
import { deviceIds, describe, withControl, type DeviceListing } from './devices.js';
import { UsageError } from './errors.js';

export const listCommand: Command = {
  name: 'list',
  brief: 'show the devices and their servers',
  synopsis: '[ID] [--json]',
  summary: 'Show the ublk devices (or device ID) and their servers; --json gives sizes in bytes.',
  options: [
    idOption('only this device'),
    { key: 'json', type: 'bool', help: 'machine-readable output' },
  ],
  async run(argv) {
    const args = readArgs(listCommand, argv);
    if (!args) return;
    const id = oneId(args, listCommand);
    const devs = await withControl(async (ctrl) => {
      const out: DeviceListing[] = [];
      for (const i of id === undefined ? deviceIds() : [id]) {
        const d = await describe(ctrl, i);
        if (d) out.push(d);
      }
      return out;
    });
    if (id !== undefined && devs.length === 0) throw new UsageError(`no ublk device with id ${id}`);
    if (args.values.json) {
      print(JSON.stringify(id === undefined ? devs : devs[0], null, 2));
      return;
    }
    for (const d of devs) {
      print(`${d.path}: id ${d.id}, ${d.state}, target ${d.target}, ${formatSize(d.size)}, ${d.queues} queue(s) x ${d.depth}, ` +
        `${d.copy} copy, pid ${d.pid ?? '-'}`);
      print(`  flags: ${d.flags.join(' ')}`);
      if (d.zoned) {
        const limit = (n: number) => (n ? String(n) : 'no limit');
        print(`  zoned: ${d.zoned.zones} zones of ${formatSize(d.zoned.zoneSize)}, open ${limit(d.zoned.maxOpen)}, active ${limit(d.zoned.maxActive)}`);
      }
      const m = d.integrity;
      if (m) print(`  metadata: ${m.metadataSize} bytes per ${m.intervalBytes}-byte block, checksum ${m.csumType} at ${m.piOffset}`);
      if (d.shmem) print(`  shared memory: ${d.shmem}`);
    }
  },
};
