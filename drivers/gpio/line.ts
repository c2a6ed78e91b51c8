/**
 * A GPIO line at the electrical level (no inversion, no debounce): onoff over sysfs on a device, or a
 * simulated line behind the same interface for laptops and tests (GPIO interrupts cannot be produced here).
 */
import { access, constants, writeFile } from 'node:fs/promises';

export type Level = 0 | 1;

export interface Line {
  read(): Promise<Level>;
  write(level: Level): Promise<void>;
  /** Calls `listener` with the new level on each change; returns the function that stops it. */
  onChange(listener: (level: Level) => void): () => void;
  close(): void;
}

/** A line nobody wires: `drive()` plays the outside world (a button, a sensor's output). */
export class SimLine implements Line {
  private level: Level;
  private listeners = new Set<(l: Level) => void>();

  constructor(idle: Level = 0) {
    this.level = idle;
  }

  async read(): Promise<Level> {
    return this.level;
  }

  async write(level: Level): Promise<void> {
    this.drive(level);
  }

  /** Sets the level from outside; listeners hear it synchronously, as an interrupt would fire. */
  drive(level: Level): void {
    if (level === this.level) return;
    this.level = level;
    for (const l of [...this.listeners]) l(level);
  }

  onChange(listener: (level: Level) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    this.listeners.clear();
  }
}

interface OnoffGpio {
  read(): Promise<number>;
  write(v: number): Promise<void>;
  readSync(): number;
  watch(cb: (err: Error | null | undefined, value: number) => void): void;
  unwatch(cb?: unknown): void;
  unexport(): void;
}

/** onoff's fixed sysfs location (it takes no root): lines are always under /sys/class/gpio. */
const GPIO_ROOT = '/sys/class/gpio';

/** How often an input is polled where edge interrupts are not available (EPERM/EINVAL from epoll). */
export const POLL_MS = 20;

/**
 * A sysfs line through onoff: exports it, sets its direction, reads and writes the value file. Changes come
 * from onoff's epoll watch; where that cannot work (no edge support, or a fake sysfs in tests) the line is
 * polled every {@link POLL_MS} ms instead, so inputs still report changes.
 */
type OnoffGpioClass = new (n: number, d: string, e?: string | object, o?: object) => OnoffGpio;

export class OnoffLine implements Line {
  private readonly gpio: OnoffGpio;
  private poll: NodeJS.Timeout | undefined;

  private constructor(Gpio: OnoffGpioClass, readonly number: number, direction: 'in' | 'out' | 'high' | 'low', private readonly keep: boolean) {
    const options = { reconfigureDirection: !keep };
    this.gpio = direction === 'in' ? new Gpio(number, 'in', 'both', options) : new Gpio(number, direction, options);
  }

  /**
   * Exports the line if needed and waits (asynchronously, up to `ms`) until udev has made its files
   * accessible — onoff's own wait is a 10,000-try busy loop that blocks the event loop and can give up
   * before a slow udev rule has run — then lets onoff set direction and edge.
   * `keep`: attach to a line as it is (no direction change, so an output keeps its level; no unexport on close).
   */
  static async open(number: number, direction: 'in' | 'out' | 'high' | 'low', keep = false, ms = 2000): Promise<OnoffLine> {
    const dir = `${GPIO_ROOT}/gpio${number}`;
    const ready = () => access(`${dir}/value`, constants.R_OK | constants.W_OK).then(() => true, () => false);
    if (!(await ready())) {
      await writeFile(`${GPIO_ROOT}/export`, String(number));
      const deadline = Date.now() + ms;
      while (!(await ready())) {
        if (Date.now() > deadline) throw new Error(`exported GPIO ${number}, but ${dir}/value did not become accessible within ${ms} ms`);
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    // onoff is CommonJS with a native dependency (epoll); loaded only when a real line is opened.
    const onoff = (await import('onoff')) as unknown as { Gpio?: OnoffGpioClass; default?: { Gpio: OnoffGpioClass } };
    return new OnoffLine((onoff.default?.Gpio ?? onoff.Gpio)!, number, direction, keep);
  }

  async read(): Promise<Level> {
    return ((await this.gpio.read()) ? 1 : 0) as Level;
  }

  async write(level: Level): Promise<void> {
    await this.gpio.write(level);
  }

  onChange(listener: (level: Level) => void): () => void {
    const onEdge = (err: Error | null | undefined, value: number) => {
      if (!err) listener(value ? 1 : 0);
    };
    try {
      this.gpio.watch(onEdge);
      return () => this.gpio.unwatch(onEdge);
    } catch {
      let last = this.gpio.readSync();
      this.poll = setInterval(() => {
        try {
          const v = this.gpio.readSync();
          if (v !== last) listener((last = v) ? 1 : 0);
        } catch {
          // a read error now and then: the next poll tries again
        }
      }, POLL_MS);
      return () => clearInterval(this.poll);
    }
  }

  close(): void {
    clearInterval(this.poll);
    try {
      this.gpio.unwatch();
      if (!this.keep) this.gpio.unexport();
    } catch {
      // already released
    }
  }
}
