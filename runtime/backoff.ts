/**
 * The one backoff helper: exponential delays with jitter, capped, reset after success. Used for sensor read
 * retries and (issue 5) service restarts.
 */
export interface BackoffOptions {
  /** First delay, ms. */
  min: number;
  /** Largest delay, ms. */
  max: number;
  /** Growth per failure. Default 2. */
  factor?: number;
  /** Fraction of each delay randomised (0..1): the delay is d × (1 - jitter × r), r in [0, 1). Default 0.2. */
  jitter?: number;
  random?: () => number;
}

export class Backoff {
  private failures = 0;

  constructor(private readonly o: BackoffOptions) {
    if (!(o.min > 0 && o.max >= o.min)) throw new RangeError(`backoff needs 0 < min <= max, got ${o.min}..${o.max}`);
  }

  /** Failures since the last reset. */
  get attempts(): number {
    return this.failures;
  }

  /** Records a failure and returns how long to wait before the next try. */
  next(): number {
    const base = Math.min(this.o.max, this.o.min * (this.o.factor ?? 2) ** this.failures);
    this.failures++;
    const jitter = this.o.jitter ?? 0.2;
    return Math.round(base * (1 - jitter * (this.o.random ?? Math.random)()));
  }

  reset(): void {
    this.failures = 0;
  }
}
