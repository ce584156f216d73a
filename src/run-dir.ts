// Where ublk-ts keeps what lives as long as the machine is up (tmpfs /run):
// per-device state and control sockets (src/cli/state.ts), the daemon's
// socket, and facts about the running kernel that are slow to learn
// (src/ublk/control/kernel-zoned.ts). Root's is /run/ublk-ts; a user who is
// not root (unprivileged devices) has their own, in their runtime directory
// (XDG_RUNTIME_DIR, /run/user/UID where systemd-logind makes it), which no
// one else can enter: their devices' state, sockets and daemon are theirs.
import fs from 'node:fs';
import path from 'node:path';

function runDir(): string {
  if (process.env.UBLK_TS_RUN_DIR) return process.env.UBLK_TS_RUN_DIR;
  const uid = process.geteuid?.() ?? 0;
  if (uid === 0) return '/run/ublk-ts';
  return path.join(process.env.XDG_RUNTIME_DIR || `/run/user/${uid}`, 'ublk-ts');
}

export const RUN_DIR = runDir();

/** Makes RUN_DIR (only its owner may enter it) if needed; the error names the fix. */
export function ensureRunDir(): void {
  try {
    fs.mkdirSync(RUN_DIR, { recursive: true, mode: 0o700 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(`cannot make ${RUN_DIR} (${code}): set XDG_RUNTIME_DIR to a directory of yours` +
      ' (systemd-logind makes /run/user/UID), or UBLK_TS_RUN_DIR');
  }
}
