// `ublk-ts features [--json]`: what the running kernel's ublk driver supports.
import { featureNames } from '../ublk/abi/uapi.js';
import { print, readArgs, type Command } from './command.js';
import { withControl } from './devices.js';
import { usableFeatures } from '../ublk/control/kernel-zoned.js';

export const featuresCommand: Command = {
  name: 'features',
  brief: 'the running kernel\'s UBLK_F_* features',
  synopsis: '[--json]',
  summary: 'Show the UBLK_F_* features of the running kernel\'s ublk driver (ZONED only where the kernel has\n' +
    'zoned block devices, CONFIG_BLK_DEV_ZONED).',
  options: [{ key: 'json', type: 'bool', help: 'as a JSON array' }],
  async run(argv) {
    const args = readArgs(featuresCommand, argv);
    if (!args) return;
    const names = featureNames(usableFeatures(await withControl((ctrl) => ctrl.getFeatures())));
    print(args.values.json ? JSON.stringify(names) : names.join('\n'));
  },
};
