// Medians over interleaved rounds, and the table printed at the end.

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** Measurements keyed by case, then by subject ("ublk-ts null", "null_blk", ...). */
export class Results {
  private readonly data = new Map<string, Map<string, number[]>>();

  add(caseName: string, subject: string, value: number): void {
    let c = this.data.get(caseName);
    if (!c) this.data.set(caseName, (c = new Map()));
    let v = c.get(subject);
    if (!v) c.set(subject, (v = []));
    v.push(value);
  }

  /** The subject's values in the case, one per round in order (none if not measured). */
  private values(caseName: string, subject: string): number[] {
    return this.data.get(caseName)?.get(subject) ?? [];
  }

  get(caseName: string, subject: string): number {
    const v = this.values(caseName, subject);
    return median(v.length ? v : [NaN]);
  }

  /**
   * The ratio a/b of each round (the rounds interleave the subjects, so a
   * round's two values were measured minutes apart at most): its lowest and
   * highest, which show how far one median ratio can be trusted in this VM.
   */
  private roundRatios(caseName: string, a: string, b: string): string {
    const xs = this.values(caseName, a), ys = this.values(caseName, b);
    const r = xs.slice(0, ys.length).map((x, i) => x / ys[i]!).filter((v) => Number.isFinite(v));
    return r.length > 1 ? ` (${Math.min(...r).toFixed(2)}-${Math.max(...r).toFixed(2)})` : '';
  }

  /**
   * One row per case (default: all, in the order measured): each subject's
   * median, then subject/baseline ratios of the medians, each with the range
   * of the per-round ratios.
   */
  table(title: string, unit: string, subjects: string[], ratios: Array<[string, string]>, cases = [...this.data.keys()], digits = 0): string {
    const head = ['case', ...subjects.map((s) => `${s} (${unit})`), ...ratios.map(([a, b]) => `${a} / ${b}`)];
    const rows = cases.map((c) => [
      c,
      ...subjects.map((s) => this.get(c, s).toFixed(digits)),
      ...ratios.map(([a, b]) => (this.get(c, a) / this.get(c, b)).toFixed(2) + 'x' + this.roundRatios(c, a, b)),
    ]);
    const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    const line = (r: string[]) => r.map((x, i) => (i === 0 ? x.padEnd(w[i]!) : x.padStart(w[i]!))).join('  ');
    return [`## ${title}`, line(head), ...rows.map(line)].join('\n');
  }
}
