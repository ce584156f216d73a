// Giving up on a promise that may never settle (a target's setup or open that
// hangs) when the caller is told to stop: the work itself cannot be cancelled,
// so what it yields late is handed to `late` to be undone (closed, cleaned up).

/** The error a signal aborted with (its reason, as an Error). */
export function abortError(signal: AbortSignal): Error {
  const r: unknown = signal.reason;
  return r instanceof Error ? r : new Error(String(r ?? 'cancelled'));
}

/**
 * `p`, or its abort error once `signal` fires first; a value `p` yields after
 * that goes to `late` (its failure, and a failure after that, are dropped).
 */
export function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined, late: (value: T) => unknown = () => {}): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    let given = false;
    const onAbort = (): void => {
      given = true;
      reject(abortError(signal));
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    p.then((v) => {
      signal.removeEventListener('abort', onAbort);
      if (!given) resolve(v);
      else void Promise.resolve().then(() => late(v)).catch(() => {});
    }, (e: unknown) => {
      signal.removeEventListener('abort', onAbort);
      if (!given) reject(e);
    });
  });
}
