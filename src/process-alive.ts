// Whether a process exists: for waiting on servers and supervisors, and for
// telling a live server from a stale pid.

/** Whether process `pid` exists (EPERM: it does, and is not ours). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}
