/**
 * The sampler service: drivers → samples → telemetry. Each sensor is read at its interval, its readings pass
 * its filters, and what remains is published on `<prefix><name>`. GPIO inputs publish on every (debounced)
 * change; outputs publish each value set. A failed read is published as a status sample (NaN, status code)
 * and retried with backoff; a device missing at start is reported and the rest go on. Nothing a driver does
 * throws out of the sampler.
 */
import { Backoff } from '../runtime/backoff.ts';
import type { Filter } from '../runtime/config/load.ts';
import type { Publisher } from '../runtime/telemetry/publisher.ts';
import { Status, type Driver, type Reading } from '../drivers/driver.ts';

export interface SamplerEntry {
  driver: Driver;
  /** ms between reads; 0 for drivers that only report changes (GPIO). */
  interval: number;
  filters: Filter[];
}

export interface DriverState {
  name: string;
  kind: string;
  unit: string;
  reads: number;
  failures: number;
  published: number;
  status: number;
  error?: string;
  value?: number[];
}

/** Applies a sensor's filters in order; returns the values to publish, or undefined to skip this reading. */
export class FilterChain {
  private readonly windows: number[][];
  private lastPublished: number | undefined;
  private lastTime = -Infinity;

  constructor(private readonly filters: Filter[]) {
    this.windows = filters.map(() => []);
  }

  apply(values: number[], now: number): number[] | undefined {
    let v = values;
    for (const [i, f] of this.filters.entries()) {
      if ('moving_average' in f) {
        const w = this.windows[i]!;
        w.push(v[0]!);
        if (w.length > f.moving_average) w.shift();
        v = [w.reduce((a, b) => a + b, 0) / w.length, ...v.slice(1)];
      } else if ('delta' in f) {
        if (this.lastPublished !== undefined && Math.abs(v[0]! - this.lastPublished) < f.delta) return undefined;
      } else if ('throttle' in f) {
        if (now - this.lastTime < f.throttle) return undefined;
      }
    }
    this.lastPublished = v[0];
    this.lastTime = now;
    return v;
  }
}

const RETRY = { min: 1000, max: 5 * 60_000 };

export class Sampler {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly unwatch: (() => void)[] = [];
  private readonly byName = new Map<string, DriverState>();
  private running = false;
  /** When a read last completed, good or bad (ms since the epoch): the sampler's progress. */
  lastProgress: number | undefined;

  /** Stores its parts; starts nothing. */
  constructor(private readonly entries: SamplerEntry[], private readonly publisher: Publisher, private readonly prefix = '') {}

  /** Opens every driver (a missing one is reported in its state and published as a status sample). */
  async start(): Promise<void> {
    this.running = true;
    for (const e of this.entries) {
      const d = e.driver;
      const state: DriverState = { name: d.name, kind: d.kind, unit: d.unit, reads: 0, failures: 0, published: 0, status: Status.OK };
      this.byName.set(d.name, state);
      let opened: Reading;
      try {
        opened = await d.open();
      } catch (err) {
        opened = { values: [NaN], status: Status.READ_ERROR, error: (err as Error).message };
      }
      if (opened.status !== Status.OK) this.record(state, opened);
      else if (opened.error) state.error = opened.error;
      const chain = new FilterChain(e.filters);
      if (d.watch) {
        if (opened.status === Status.OK && opened.values.length > 0) this.publishReading(state, opened, chain);
        this.unwatch.push(d.watch((r) => this.publishReading(state, r, chain)));
      }
      if (e.interval > 0) this.schedule(e, state, chain, new Backoff(RETRY), 0);
    }
  }

  /** The shortest read interval (ms), or undefined when nothing is read periodically. */
  get interval(): number | undefined {
    const periodic = this.entries.filter((e) => e.interval > 0).map((e) => e.interval);
    return periodic.length ? Math.min(...periodic) : undefined;
  }

  /** Publishes the reading of an output that was just set (GPIO from the mesh or the CLI). */
  noteWrite(name: string, value: number): void {
    const state = this.byName.get(name);
    if (state) this.publishReading(state, { values: [value], status: Status.OK }, new FilterChain([]));
  }

  /** Each driver's counters, last value and last error. */
  status(): DriverState[] {
    return [...this.byName.values()].map((s) => ({ ...s }));
  }

  async stop(): Promise<void> {
    this.running = false;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    for (const u of this.unwatch.splice(0)) u();
    for (const e of this.entries) await e.driver.close().catch(() => {});
  }

  private schedule(e: SamplerEntry, state: DriverState, chain: FilterChain, backoff: Backoff, delay: number): void {
    if (!this.running) return;
    this.timers.set(e.driver.name, setTimeout(async () => {
      let r: Reading;
      try {
        r = await e.driver.read();
      } catch (err) {
        r = { values: [NaN], status: Status.READ_ERROR, error: (err as Error).message };
      }
      state.reads++;
      this.lastProgress = Date.now();
      let next = e.interval;
      if (r.status === Status.OK) {
        backoff.reset();
        this.publishReading(state, r, chain);
      } else {
        // Retry after 1 s, then 2, 4, … up to 5 min, whatever the interval; success returns to the interval.
        next = backoff.next();
        this.record(state, r);
      }
      this.schedule(e, state, chain, backoff, next);
    }, delay));
  }

  /** A failed read: counted, and published as a status sample (only when the status changes, so a dead sensor does not flood). */
  private record(state: DriverState, r: Reading): void {
    state.failures++;
    const changed = state.status !== r.status;
    state.status = r.status;
    state.error = r.error;
    state.value = r.values;
    if (changed) this.publish(state, r.values.length ? r.values : [NaN], r.status);
  }

  private publishReading(state: DriverState, r: Reading, chain: FilterChain): void {
    if (r.status !== Status.OK) return this.record(state, r);
    state.status = Status.OK;
    state.error = undefined;
    state.value = r.values;
    const values = chain.apply(r.values, Date.now());
    if (values) this.publish(state, values, Status.OK);
  }

  private publish(state: DriverState, values: number[], status: number): void {
    try {
      this.publisher.publish(this.prefix + state.name, values, { unit: state.unit, status });
      state.published++;
    } catch (e) {
      state.error = `publish: ${(e as Error).message}`;
    }
  }
}
