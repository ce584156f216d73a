// The option rows and what is made of them: argv parsing, checking, help; the
// device's table and a target's own rows as `ublk-ts add` reads them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgv, optionHelp } from '../../src/options/argv.js';
import { checkOptions, formatSize, OptionError, parseSizeText, type OptionSpec } from '../../src/options/spec.js';
import { checkDeviceOptions, DEVICE_OPTIONS } from '../../src/ublk/control/device-options.js';
import { parseAdd } from '../../src/cli/add.js';

const SPECS: OptionSpec[] = [
  { key: 'queues', short: 'q', type: 'int', arg: 'N', default: 1, min: 1, max: 8, help: 'queues' },
  { key: 'size', short: 's', type: 'size', arg: 'SIZE', min: 512, multipleOf: 512, required: true, help: 'size' },
  { key: 'fast', type: 'bool', help: 'go fast' },
  { key: 'autoReg', flag: 'no-auto-reg', type: 'bool', negated: true, default: true, onlyWith: { key: 'mode', value: 'z' }, help: 'x' },
  { key: 'mode', type: 'enum', choices: ['a', 'z'], default: 'a', help: 'mode' },
];

test('argv: long, long=value, short, short with the value attached, flags, -- and positionals', () => {
  assert.throws(() => parseArgv(['--size=1M', '-s', '2M'], SPECS, 'h'), /^OptionError: -s is given twice$/);
  const q = parseArgv(['a', '-q4', '--size=1M', '--fast', '--no-auto-reg', '--', '--x'], SPECS, 'h');
  assert.deepEqual(q.values, { queues: '4', size: '1M', fast: true, autoReg: false });
  assert.deepEqual(q.positionals, ['a', '--x']);
  assert.equal(q.help, false);
  assert.equal(parseArgv(['-h'], SPECS, 'h').help, true);
});

test('argv: what it cannot place is one message naming the option and the help to read', () => {
  assert.throws(() => parseArgv(['--colour', 'blue'], SPECS, 'ublk-ts add --help'), /^OptionError: unknown option --colour \(see ublk-ts add --help\)$/);
  assert.throws(() => parseArgv(['-x'], SPECS, 'h'), /unknown option -x/);
  assert.throws(() => parseArgv(['--queues'], SPECS, 'h'), /--queues needs a value: --queues N/);
  assert.throws(() => parseArgv(['--fast=yes'], SPECS, 'h'), /--fast takes no value/);
  // A negative number is a value, not an option.
  assert.deepEqual(parseArgv(['--size', '-5'], SPECS, 'h').values, { size: '-5' });
});

test('checking: text and values alike, defaults filled in, ranges, multiples, required, onlyWith', () => {
  assert.deepEqual(checkOptions(SPECS, { size: '4K' }, 'cli'), { queues: 1, size: 4096, autoReg: true, mode: 'a' });
  assert.deepEqual(checkOptions(SPECS, { size: 4096, queues: 8 }, 'library'), { queues: 8, size: 4096, autoReg: true, mode: 'a' });
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{}, /^--size SIZE is required$/],
    [{ size: '0' }, /^--size must be at least 512 B, got '0'$/],
    [{ size: '1000' }, /^--size must be a multiple of 512 bytes, got '1000'$/],
    [{ size: '12X' }, /^--size must be a size in bytes/],
    [{ size: '1M', queues: '9' }, /^--queues must be from 1 to 8, got '9'$/],
    [{ size: '1M', queues: 'two' }, /^--queues must be a whole number, got 'two'$/],
    [{ size: '1M', queues: '1.5' }, /^--queues must be a whole number/],
    [{ size: '1M', mode: 'q' }, /^--mode must be one of a, z, got 'q'$/],
    [{ size: '1M', autoReg: false }, /^--no-auto-reg only applies with --mode z$/],
    [{ size: '1M', colour: 'blue' }, /^unknown option --colour/],
  ];
  for (const [given, msg] of bad) assert.throws(() => checkOptions(SPECS, given, 'cli'), (e: Error) => e instanceof OptionError && msg.test(e.message));
  assert.throws(() => checkOptions(SPECS, { size: 1.5 }, 'library'), /^OptionError: size must be a size in bytes/);
  assert.throws(() => checkOptions(SPECS, {}, 'library'), /^OptionError: size is required$/);
  assert.equal(checkOptions(SPECS, { size: '1M', mode: 'z', autoReg: false }, 'cli').autoReg, false);
});

test('sizes: K/M/G/T are powers of 1024, shown back in binary units', () => {
  assert.equal(parseSizeText('1G'), 2 ** 30);
  assert.equal(parseSizeText('2TiB'), 2 * 2 ** 40);
  assert.equal(parseSizeText('512'), 512);
  assert.equal(parseSizeText('1.5G'), undefined);
  assert.equal(formatSize(2 ** 30), '1 GiB');
  assert.equal(formatSize(1536), '1.5 KiB');
  assert.equal(formatSize(100), '100 B');
});

test('help: one line per row with its alias, placeholder, choices and default', () => {
  const help = optionHelp(SPECS);
  assert.match(help, /^ {2}-q, --queues N +queues; default 1$/m);
  assert.match(help, /^ {2}-s, --size SIZE +size; required$/m);
  assert.match(help, /^ {6}--no-auto-reg +x$/m);
  assert.match(help, /^ {6}--mode VALUE +mode; a\|z, default a$/m);
});

test('device options: the library and the command line get the same defaults and checks', () => {
  const d = checkDeviceOptions({}, 'library');
  assert.deepEqual(d, {
    queues: 1, depth: 128, maxIoBytes: 1 << 20, batch: false, autoBufReg: true, recovery: 'none', coalesceUsec: 0,
    needGetData: false, partScan: true,
  }, 'no copy default: the mode picks one for the target (servingMode)');
  assert.throws(() => checkDeviceOptions({ depth: 0 }, 'library'), /^OptionError: depth must be from 1 to 4096, got 0$/);
  assert.throws(() => checkDeviceOptions({ depth: '0' }, 'cli'), /^OptionError: --depth must be from 1 to 4096, got '0'$/);
  assert.equal(checkDeviceOptions({ threads: 2 }, 'library').threads, 2, 'classic mode takes --threads too (per-IO daemons)');
  assert.throws(() => checkDeviceOptions({ dmaAlign: 3000 }, 'library'), /^OptionError: dmaAlign must be a power of 2, got 3000$/);
  assert.throws(() => checkDeviceOptions({ segmentBoundary: '12K' }, 'cli'), /^OptionError: --segment-boundary must be a power of 2, got 12288$/);
  assert.throws(() => checkDeviceOptions({ dmaAlign: '8K' }, 'cli'), /--dma-align must be from 1 B to 4 KiB/);
  assert.ok(DEVICE_OPTIONS.every((s) => s.help.length > 0), 'every row has help');
  // Every default passes its own row (checked values are checked again by the library).
  for (const s of DEVICE_OPTIONS) if (s.default !== undefined) assert.doesNotThrow(() => checkOptions([s], { [s.key]: s.default }, 'library'), s.key);
  // What the command line checked, UblkDevice.create() checks again: the result must pass unchanged.
  const cli = checkDeviceOptions({ batch: true, threads: '2', copy: 'zero', autoBufReg: false }, 'cli');
  assert.deepEqual(checkDeviceOptions({ ...cli }, 'library'), cli);
  assert.deepEqual(checkDeviceOptions({ ...d }, 'library'), d);
  const flags = DEVICE_OPTIONS.map((s) => s.flag ?? s.key);
  assert.equal(new Set(flags).size, flags.length, 'no flag twice');
});

test('ublk-ts add: target first or -t, target rows parsed with the device rows, typed values', async () => {
  const r = await parseAdd(['loop', '-f', '/tmp/x.img', '--buffered', '-q', '2', '-d', '64', '-b', '--threads', '3', '--copy', 'user']);
  assert.deepEqual(r, {
    foreground: false,
    daemon: true,
    cfg: {
      target: 'loop', options: { file: '/tmp/x.img', buffered: true },
      queues: 2, depth: 64, maxIoBytes: 1 << 20, batch: true, threads: 3, copy: 'user', autoBufReg: true, recovery: 'none',
      coalesceUsec: 0, needGetData: false, partScan: true,
    },
  });
  const t = await parseAdd(['-t', 'memory', '--size', '1G', '--foreground', '-n', '7']);
  assert.equal(t!.cfg.target, 'memory');
  assert.deepEqual(t!.cfg.options, { size: 2 ** 30 });
  assert.equal(t!.cfg.id, 7);
  assert.equal(t!.foreground, true);
  assert.equal(t!.daemon, false, 'a server in the foreground is this process, never the daemon');
  assert.equal((await parseAdd(['null', '-s', '1G', '--no-daemon']))!.daemon, false);
});

test('ublk-ts add: paths the user gives relative are the caller\'s (the server runs from /, the daemon from its own directory)', async () => {
  const cwd = process.cwd();
  const loop = await parseAdd(['loop', '-f', 'disk.img', '--metadata-file', 'meta.img', '--copy', 'user', '--metadata-size', '8']);
  assert.deepEqual(loop!.cfg.options, { file: path.join(cwd, 'disk.img'), buffered: false, metadataFile: path.join(cwd, 'meta.img') });
  const stripe = await parseAdd(['stripe', '--files', 'a.img,/b.img']);
  assert.equal(stripe!.cfg.options!.files, `${path.join(cwd, 'a.img')},/b.img`);
  const mod = path.relative(cwd, fileURLToPath(new URL('../../src/targets/null.js', import.meta.url)));
  const custom = await parseAdd([mod, '--size', '1G']);
  assert.equal(custom!.cfg.target, path.resolve(mod), 'a module path too');
  assert.equal((await parseAdd(['null', '-s', '1G']))!.cfg.target, 'null');
  assert.equal((await parseAdd(['null', '-s', '1G', '--shmem', 'buf.img']))!.cfg.shmem, path.join(cwd, 'buf.img'), 'a device option too');
});

test('ublk-ts add: bad input is one usage error naming the option', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['null'], /^--size SIZE is required$/],
    [['null', '-s', '1M', '--file', 'x'], /^unknown option --file \(see ublk-ts add --help\)$/],
    [['loop'], /^--file PATH is required$/],
    [['floppy'], /^unknown target 'floppy'/],
    [[], /^add needs a target/],
    [['null', '-s', '1M', 'extra'], /^unexpected argument 'extra'/],
    [['null', '-s', '1M', '--no-supervisor'], /^--no-supervisor only applies with --recovery$/],
    [['null', '-s', '1M', '--dma-align', '100'], /^--dma-align must be a power of 2, got 100$/],
    [['memory', '-s', '1M', '--no-auto-buf-reg'], /^--no-auto-buf-reg only applies with --copy zero$/],
  ];
  for (const [argv, msg] of cases) {
    await assert.rejects(parseAdd(argv), (e: Error) => msg.test(e.message), `add ${argv.join(' ')}`);
  }
});
