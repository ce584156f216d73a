// What a long-running server (and its supervisor) must not hold on to.
//
// - Mounts of its own device. A process that is the last one in a mount
//   namespace unmounts that namespace's file systems as it exits; if one of
//   them sits on the device it serves, the unmount's writes wait for the
//   server that is exiting, and it never ends (ublksrv#186). So the server
//   runs in a mount namespace of its own, private (later mounts elsewhere do
//   not reach it), and drops what its copy holds of its device (`recover`
//   starts it while the device is mounted).
// - Inherited file descriptors. Whatever the shell or tool that ran `ublk-ts
//   add` left open without close-on-exec would stay open for the server's
//   life (a pipe that never gets EOF, a file on a file system that can then
//   not be unmounted). Node opens everything close-on-exec, so a descriptor
//   without that flag at start-up was inherited: it is closed.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

const O_CLOEXEC = 0o2000000;

/** Closes the descriptors above stderr that this process inherited (see above). */
export function closeInheritedFds(): void {
  for (const name of fs.readdirSync('/proc/self/fd')) {
    const fd = Number(name);
    if (fd <= 2) continue;
    try {
      const flags = /^flags:\s*([0-7]+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
      if (flags && !(parseInt(flags[1]!, 8) & O_CLOEXEC)) fs.closeSync(fd);
    } catch {
      // gone meanwhile (the directory's own fd)
    }
  }
}

/**
 * The command that runs `argv` in a private mount namespace of its own:
 * util-linux's unshare, where we may (root, CAP_SYS_ADMIN); else `argv` as it is.
 */
export function inOwnMountNamespace(argv: string[]): string[] {
  if (process.getuid?.() !== 0 || !fs.existsSync(UNSHARE)) return argv;
  return [UNSHARE, '--mount', '--propagation', 'private', '--', ...argv];
}
const UNSHARE = '/usr/bin/unshare';

/** Whether this process has a mount namespace other than init's. */
export function ownMountNamespace(): boolean {
  try {
    return fs.readlinkSync('/proc/self/ns/mnt') !== fs.readlinkSync('/proc/1/ns/mnt');
  } catch {
    return false;
  }
}

/** `\040` and the like in /proc/self/mountinfo paths. */
const unescape = (p: string): string => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/**
 * Lazily unmounts, in this process's own mount namespace only, every file
 * system on block device `ublkb<id>` or its partitions. Does nothing in a
 * shared namespace (that would unmount them for everyone).
 */
export function dropOwnDeviceMounts(id: number): void {
  if (!ownMountNamespace()) return;
  let major: string;
  try {
    major = fs.readFileSync(`/sys/block/ublkb${id}/dev`, 'utf8').trim().split(':')[0]!;
  } catch {
    return; // no disk (yet): nothing can be mounted from it
  }
  const devs = new Set<string>();
  for (const name of fs.readdirSync('/sys/class/block')) {
    if (name === `ublkb${id}` || name.startsWith(`ublkb${id}p`)) {
      const dev = fs.readFileSync(`/sys/class/block/${name}/dev`, 'utf8').trim();
      if (dev.split(':')[0] === major) devs.add(dev);
    }
  }
  const targets = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .map((l) => l.split(' ')).filter((f) => f.length > 4 && devs.has(f[2]!)).map((f) => unescape(f[4]!));
  // Deepest first, so that nested mounts go before the ones they sit on.
  for (const t of targets.sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', t], { stdio: 'ignore' });
}
