// ublk-ts command line: add | list | del | features.
import { add, del, features, list, serveChild } from './commands.js';
import { UsageError } from './args.js';
import { TargetOptionError } from '../ublk/target.js';

const USAGE = `usage: ublk-ts <command> [options]

  add TARGET [--size SIZE] [--queues N] [--depth N] [--id N] [--batch [--threads N]]
             [--copy kernel|user|zero [--no-auto-buf-reg]] [--coalesce-us N] [--poll-us N] [--foreground]
  add loop --file PATH [--buffered] [options above]
        create a device served by TARGET (null, memory, loop, or a target module
        path); SIZE takes K, M, G, T suffixes (powers of 1024) and is required
        for null and memory (loop: defaults to the file's size). Prints the block
        device path once the device is live; the server keeps running in the
        background.
        --batch uses UBLK_F_BATCH_IO; --threads N serving threads for any queues.
        --copy: how data moves between the kernel and the server: kernel (the
        driver copies into server buffers, default), user (the server reads and
        writes it on /dev/ublkcN, UBLK_F_USER_COPY) or zero (the request's pages
        are used in place, UBLK_F_AUTO_BUF_REG; --no-auto-buf-reg registers them
        with REGISTER_IO_BUF per request instead). zero needs a target that does
        its IO with io_uring (null, loop).
        loop: --file is a regular file or block device, opened with O_DIRECT
        unless --buffered.
        --coalesce-us N: once requests come in bursts, wait up to N µs for more
        before serving them (default 0: off).
        --poll-us N: after serving requests, spin up to N µs watching for more
        before sleeping (default 0: off); costs CPU, saves wake-ups.
  list [--json]            the ublk devices and their servers
  del ID | --all           stop and remove devices (waits until they are gone)
  features [--json]        the running kernel's UBLK_F_* features
`;

const COMMANDS: Record<string, (argv: string[]) => Promise<void>> = { add, list, del, features };

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === '__serve') {
    await serveChild(rest[0]!);
    return 0;
  }
  if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(USAGE);
    return cmd === undefined ? 2 : 0;
  }
  const run = COMMANDS[cmd];
  if (!run) throw new UsageError(`unknown command '${cmd}' (try: ublk-ts --help)`);
  await run(rest);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    const err = e as Error & { code?: string };
    // parseArgs reports unknown options and missing values with ERR_PARSE_ARGS_* codes.
    const usage = e instanceof UsageError || e instanceof TargetOptionError || err.code?.startsWith('ERR_PARSE_ARGS');
    process.stderr.write(`ublk-ts: ${err.message ?? String(e)}\n`);
    process.exitCode = usage ? 2 : 1;
  },
);
