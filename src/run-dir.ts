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

/**
 * What is wrong with RUN_DIR as a place to trust, or null (fine, or not made
 * yet). What lies there is trusted: a state file names the module a
 * recovering server loads, a socket is where requests go. So a directory
 * someone else made (XDG_RUNTIME_DIR in a shared place such as /tmp), a
 * symlink, or one others may enter would hand them our rights.
 */
export function runDirProblem(): string | null {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(RUN_DIR);
  } catch {
    return null;
  }
  const uid = process.geteuid?.() ?? 0;
  if (st.isDirectory() && st.uid === uid && (st.mode & 0o077) === 0) return null;
  // Ours, and others could only read it (an older ublk-ts made /run/ublk-ts 0755): nothing was planted, close it.
  if (st.isDirectory() && st.uid === uid && (st.mode & 0o022) === 0) {
    try {
      fs.chmodSync(RUN_DIR, 0o700);
      return null;
    } catch { /* refused below */ }
  }
  const what = !st.isDirectory() ? 'not a directory' : st.uid !== uid ? `owned by uid ${st.uid}` : `mode ${(st.mode & 0o777).toString(8)}`;
  return `${RUN_DIR} is ${what}, not a directory only its user may enter: refusing to trust what is in it${FIX}`;
}

const FIX = ': set XDG_RUNTIME_DIR to a directory of yours (systemd-logind makes /run/user/UID), or UBLK_TS_RUN_DIR';

/** Makes RUN_DIR (only its owner may enter it) if needed, and refuses one that is not ours alone; the error names the fix. */
export function ensureRunDir(): void {
  try {
    fs.mkdirSync(RUN_DIR, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new Error(`cannot make ${RUN_DIR} (${(e as NodeJS.ErrnoException).code})${FIX}`);
  }
  const bad = runDirProblem();
  if (bad !== null) throw new Error(bad);
}
