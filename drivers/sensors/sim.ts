/**
 * The simulated twin of every sensor: a deterministic waveform (seeded), optional noise and injected faults.
 * Time comes from an injectable clock, so tests step it; by default it is the wall clock since `open`.
 */
import { fault, ok, Status, type Driver, type Reading } from '../driver.ts';

export interface SimOptions {
  waveform: 'sine' | 'square' | 'ramp' | 'random_walk' | 'constant';
  min: number;
  max: number;
  /** ms per cycle */
  period: number;
  noise: number;
  unit: string;
  /** probability in [0, 1] that a read fails with status INJECTED */
  fail_rate: number;
  seed: number;
}

/** mulberry32: a small, fast, seedable PRNG; the same seed gives the same run. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class SimSensor implements Driver {
  readonly unit: string;
  private random: () => number;
  private start = 0;
  private walk: number;
  /** Set by tests (or a demo) to make the device vanish: reads then report MISSING. */
  vanished = false;

  constructor(readonly name: string, private readonly o: SimOptions, readonly kind = 'sim', private readonly clock: () => number = Date.now) {
    this.unit = o.unit;
    this.random = prng(o.seed);
    this.walk = (o.min + o.max) / 2;
  }

  async open(): Promise<Reading> {
    this.start = this.clock();
    this.random = prng(this.o.seed);
    return this.vanished ? fault(Status.MISSING, `simulated ${this.kind} ${this.name} is missing`) : ok();
  }

  async read(): Promise<Reading> {
    if (this.vanished) return fault(Status.MISSING, `simulated ${this.kind} ${this.name} vanished`);
    const failed = this.o.fail_rate > 0 && this.random() < this.o.fail_rate;
    const noise = this.o.noise > 0 ? (this.random() * 2 - 1) * this.o.noise : 0;
    if (failed) return fault(Status.INJECTED, `simulated ${this.kind} ${this.name}: injected read failure`);
    return ok(this.wave((this.clock() - this.start) / this.o.period) + noise);
  }

  private wave(cycles: number): number {
    const { min, max } = this.o;
    const phase = cycles - Math.floor(cycles);
    switch (this.o.waveform) {
      case 'sine': return min + (max - min) * (0.5 + 0.5 * Math.sin(2 * Math.PI * phase));
      case 'square': return phase < 0.5 ? max : min;
      case 'ramp': return min + (max - min) * phase;
      case 'constant': return min;
      case 'random_walk': {
        this.walk = Math.min(max, Math.max(min, this.walk + (this.random() * 2 - 1) * (max - min) * 0.05));
        return this.walk;
      }
    }
  }

  async close(): Promise<void> {}
}
