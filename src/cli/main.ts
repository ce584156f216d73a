// ublk-ts command line: add | list | stats | resize | quiesce | recover | del | features | daemon.
import { readFileSync } from 'node:fs';
import { packageFile } from '../package-files.js';
import { addCommand } from './add.js';
import { serveChild } from './launch.js';
import { superviseChild } from './supervisor.js';
import { chownDeviceNode } from './udev.js';
import { recoverCommand } from './recover.js';
import { quiesceCommand } from './quiesce.js';
import { resizeCommand } from './resize.js';
import { print, type Command } from './command.js';
import { delCommand } from './del.js';
import { exitCodeOf, EXIT_USAGE, oneLine, UsageError } from './errors.js';
import { featuresCommand } from './features.js';
import { listCommand } from './list.js';
import { daemonCommand } from './daemon.js';
import { statsCommand } from './stats.js';

const COMMANDS: readonly Command[] = [
  addCommand, listCommand, statsCommand, resizeCommand, quiesceCommand, recoverCommand, delCommand, featuresCommand, daemonCommand,
];

function version(): string {
  const pkg = JSON.parse(readFileSync(packageFile('package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length + c.synopsis.length)) + 3;
  return 'usage: ublk-ts <command> [options]\n\n' +
    COMMANDS.map((c) => `  ${`${c.name} ${c.synopsis}`.padEnd(width)}${c.brief}`).join('\n') +
    '\n\n`ublk-ts <command> --help` for a command\'s options; --version for the version.\n';
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === '__serve') {
    await serveChild(rest[0]!);
    return 0;
  }
  if (cmd === '__chown') {
    await chownDeviceNode(rest[0] ?? '');
    return 0;
  }
  if (cmd === '__supervise') {
    await superviseChild(rest[0]!);
    return process.exitCode === undefined ? 0 : Number(process.exitCode);
  }
  if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(usage());
    return cmd === undefined ? EXIT_USAGE : 0;
  }
  if (cmd === '--version' || cmd === '-V' || cmd === 'version') {
    print(`ublk-ts ${version()}`);
    return 0;
  }
  const command = COMMANDS.find((c) => c.name === cmd);
  if (!command) throw new UsageError(`unknown command '${cmd}' (try: ublk-ts --help)`);
  await command.run(rest);
  return 0;
}

/**
 * A command that has ended exits this long after, whatever a target left
 * running in the process (a timer, a socket, a setup or cleanup that never
 * settled: a server, a daemon, `add --foreground`), which would otherwise keep
 * it, and whoever waits for it (`del`, `add`), going for good.
 */
const LEFTOVERS_EXIT_MS = 1000;

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`ublk-ts: ${oneLine(e)}\n`);
    process.exitCode = exitCodeOf(e);
  },
).finally(() => setTimeout(() => process.exit(), LEFTOVERS_EXIT_MS).unref());
