// Waiting for a promise no longer than a bound: for kernel commands that can
// wait for good (STOP_DEV behind requests a wedged target holds).

/** Waits for `p` at most `ms`: true if it settled by then (a rejection counts as settled). */
export async function settledWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => (timer = setTimeout(resolve, ms, false)));
  try {
    return await Promise.race([p.then(() => true, () => true), late]);
  } finally {
    clearTimeout(timer);
  }
}
