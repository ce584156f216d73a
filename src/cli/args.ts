// Parsing and validating command-line values; errors are one line for the user.

/** Bad input from the user: printed as `ublk-ts: message`, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** "512", "4K", "1G", "2T" (powers of 1024; an optional trailing "B"/"iB" is accepted). */
export function parseSize(text: string, what = 'size'): number {
  const m = /^(\d+)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  if (!m) throw new UsageError(`invalid ${what} '${text}' (expected a number with an optional K, M, G or T suffix)`);
  const bytes = Number(m[1]) * UNITS[m[2]!.toUpperCase()]!;
  if (!Number.isSafeInteger(bytes)) throw new UsageError(`${what} '${text}' is too large`);
  return bytes;
}

/** A device size: positive and a multiple of the 512-byte sector. */
export function parseDeviceSize(text: string): number {
  const bytes = parseSize(text);
  if (bytes === 0) throw new UsageError('size must be greater than 0');
  if (bytes % 512) throw new UsageError(`size ${text} is not a multiple of 512 bytes`);
  return bytes;
}

export function parseIntOption(name: string, text: string, min: number, max: number): number {
  if (!/^\d+$/.test(text.trim())) throw new UsageError(`--${name} must be a whole number, got '${text}'`);
  const v = Number(text);
  if (v < min || v > max) throw new UsageError(`--${name} must be from ${min} to ${max}, got ${v}`);
  return v;
}
