// Whether a process exists: for waiting on servers and supervisors, and for
// telling a live server from a stale pid.
import fs from 'node:fs';

/** Whether process `pid` exists (EPERM: it does, and is not ours). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** Whether process `pid` has `file` open (false where its descriptors cannot be read: not ours, or gone). */
export function processHolds(pid: number, file: string): boolean {
  const dir = `/proc/${pid}/fd`;
  let fds: string[];
  try {
    fds = fs.readdirSync(dir);
  } catch {
    return false;
  }
  return fds.some((fd) => {
    try {
      return fs.readlinkSync(`${dir}/${fd}`) === file;
    } catch {
      return false;
    }
  });
}
