/**
 * Log lines about bad input, rate-limited per source: the first problem of a kind from one source is logged at
 * once, then at most one line per `intervalMs`, saying how many were left out meanwhile. A flood of bad frames
 * from one host therefore costs a line every few seconds, not one per frame, and other sources are still heard.
 * At most `maxKeys` sources are remembered (the least recent is forgotten), so the bookkeeping is bounded too.
 */
export type ProblemSink = (message: string) => void;

export class ProblemLog {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(private readonly sink: ProblemSink | undefined, private readonly intervalMs = 10_000, private readonly maxKeys = 1024) {}

  /** Notes one problem; `key` names its kind and source, e.g. `beacon 10.0.0.7`. Cost: one Map lookup. */
  note(key: string, message: string): void {
    if (!this.sink) return;
    const t = performance.now();
    const seen = this.last.get(key);
    if (seen && t - seen.at < this.intervalMs) {
      seen.suppressed++;
      return;
    }
    const more = seen?.suppressed ? ` (and ${seen.suppressed} more like it in the last ${Math.round((t - seen.at) / 1000)} s)` : '';
    this.last.delete(key);
    if (this.last.size >= this.maxKeys) this.last.delete(this.last.keys().next().value as string);
    this.last.set(key, { at: t, suppressed: 0 });
    this.sink(message + more);
  }
}
