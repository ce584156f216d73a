// How the command line reports a failure: one line on stderr, and the exit
// code says whose it was — 2 for what the user typed (usage, options, a mode
// that cannot be served as asked), 1 for what went wrong at run time.

/** Bad input from the user: printed as `ublk-ts: message`, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export const EXIT_RUNTIME = 1;
export const EXIT_USAGE = 2;

// By name, not instanceof: the CLI runs bundled (dist/ublk-ts.cjs) while a
// target module of the user's imports its own copy of the library from
// dist/src/, so a TargetOptionError thrown by its setup is not an instance of
// the bundle's class.
const USAGE_ERRORS = new Set(['UsageError', 'OptionError', 'TargetOptionError', 'ModeError']);

export function isUsageError(e: unknown): boolean {
  return e instanceof Error && USAGE_ERRORS.has(e.name);
}

/** A failure another process (the detached server) reported, with the exit code it would have had here. */
export class ReportedError extends Error {
  constructor(message: string, readonly exitCode: number) {
    super(message);
  }
}

export function exitCodeOf(e: unknown): number {
  if (e instanceof ReportedError) return e.exitCode;
  return isUsageError(e) ? EXIT_USAGE : EXIT_RUNTIME;
}

/** The first line of an error's message (a stack or a multi-line text never reaches the user). */
export function oneLine(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return text.split('\n').find((l) => l.trim() !== '')?.trim() ?? String(e);
}
