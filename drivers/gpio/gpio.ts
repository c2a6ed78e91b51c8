/**
 * A configured GPIO line as a driver: logical values (inverted = active-low), debounced inputs, outputs with
 * an initial and a safe state. The same logic runs over onoff on a device and over a simulated line elsewhere,
 * so what the tests prove about edges and debounce holds on the board.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { GpioConfig } from '../../runtime/config/load.ts';
import { fault, ok, Status, type Driver, type Reading } from '../driver.ts';
import { resolvePin } from './chip.ts';
import { OnoffLine, SimLine, type Level, type Line } from './line.ts';

export class GpioDriver implements Driver {
  readonly kind = 'gpio';
  readonly unit = '';
  readonly name: string;
  private line: Line | undefined;
  private stable: Level = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopRaw: (() => void) | undefined;
  private readonly listeners = new Set<(r: Reading) => void>();
  /** The sysfs number the pin resolved to (undefined for a simulated line or before open). */
  number: number | undefined;

  /**
   * `line` may be given (tests, the simulated twin); otherwise open() resolves the pin under `sysfs` and opens
   * it with onoff. `attach` (the CLI) takes the line as it is: no initial level, no safe level on close.
   */
  constructor(readonly config: GpioConfig, private readonly sysfs: string, private line0?: Line, private readonly attach = false) {
    this.name = config.name;
  }

  /** The simulated line, when this driver runs on one (for `drive()` in tests and demos). */
  get simLine(): SimLine | undefined {
    return this.line instanceof SimLine ? this.line : undefined;
  }

  private toLogical(level: Level): Level {
    return (this.config.inverted ? 1 - level : level) as Level;
  }

  async open(): Promise<Reading> {
    const c = this.config;
    const notes: string[] = [];
    try {
      if (this.line0) this.line = this.line0;
      else {
        const { number } = await resolvePin(c.pin, this.sysfs);
        this.number = number;
        const initialLevel = this.toLogical(c.initial as Level); // the same map inverts both ways
        this.line = await OnoffLine.open(number, c.mode === 'input' ? 'in' : this.attach ? 'out' : initialLevel ? 'high' : 'low', this.attach);
        if (c.pull !== 'none') notes.push(await applyPull(c.pin, c.pull));
      }
    } catch (e) {
      return fault(Status.MISSING, `gpio ${c.name} (${c.pin}): ${(e as Error).message}`);
    }
    const line = this.line;
    if (c.mode === 'output') {
      if (this.attach) this.stable = this.toLogical(await line.read());
      else {
        await line.write(this.toLogical(c.initial as Level));
        this.stable = c.initial as Level;
      }
    } else {
      this.stable = this.toLogical(await line.read());
      this.stopRaw = line.onChange((level) => this.onRaw(level));
    }
    const r = ok(this.stable);
    if (notes.length) r.error = notes.join('; ');
    return r;
  }

  /** Debounce: a level must hold `debounce` ms (checked by reading again) before it counts as a change. */
  private onRaw(level: Level): void {
    if (this.config.debounce <= 0) return this.settle(this.toLogical(level));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.line?.read().then((l) => this.settle(this.toLogical(l)), () => {});
    }, this.config.debounce);
  }

  private settle(value: Level): void {
    if (value === this.stable) return;
    this.stable = value;
    const r = ok(value);
    for (const l of [...this.listeners]) l(r);
  }

  async read(): Promise<Reading> {
    if (!this.line) return fault(Status.MISSING, `gpio ${this.name} is not open`);
    if (this.config.mode === 'input') return ok(this.stable);
    try {
      return ok(this.toLogical(await this.line.read()));
    } catch (e) {
      return fault(Status.READ_ERROR, `gpio ${this.name}: ${(e as Error).message}`);
    }
  }

  /** Sets an output's logical value (0 or 1). Throws for an input or a value other than 0/1. */
  async write(value: number): Promise<void> {
    if (this.config.mode !== 'output') throw new Error(`gpio ${this.name} is an input`);
    if (value !== 0 && value !== 1) throw new Error(`gpio ${this.name}: value must be 0 or 1, got ${value}`);
    if (!this.line) throw new Error(`gpio ${this.name} is not open`);
    await this.line.write(this.toLogical(value));
    this.stable = value;
  }

  watch(listener: (r: Reading) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Drives an output to its safe level (default: the initial one) now, keeping the line; nothing for an input
   * or a line taken as it is. The first thing a shutdown does, before anything slower.
   */
  async safe(): Promise<void> {
    if (!this.line || this.config.mode !== 'output' || this.attach) return;
    const level = (this.config.safe ?? this.config.initial) as Level;
    await this.line.write(this.toLogical(level)).catch(() => {});
    this.stable = level;
  }

  /** Outputs go to their safe state (default: the initial one) before the line is released. */
  async close(): Promise<void> {
    clearTimeout(this.timer);
    this.stopRaw?.();
    if (this.line && this.config.mode === 'output' && !this.attach) {
      await this.line.write(this.toLogical((this.config.safe ?? this.config.initial) as Level)).catch(() => {});
    }
    if (this.line && this.line !== this.line0) this.line.close();
    this.line = undefined;
    this.listeners.clear();
  }
}

/** Creates the driver for a configured line: onoff, or a simulated line idling at its pull level. */
export function createGpio(c: GpioConfig, sysfs: string, simulate: boolean): GpioDriver {
  return new GpioDriver(c, sysfs, (c.simulate ?? simulate) ? new SimLine(c.pull === 'up' ? 1 : 0) : undefined);
}

/**
 * sysfs cannot set a line's bias. On a Raspberry Pi `pinctrl set <n> pu|pd` can, for header pins (GPIOn);
 * elsewhere the pull must come from the device tree (e.g. `gpio=17=pu` in config.txt). Returns a note.
 */
async function applyPull(pin: string, pull: 'up' | 'down'): Promise<string> {
  const m = /^GPIO(\d+)$/.exec(pin);
  if (!m) return `pull-${pull} not applied to ${pin}: set it in the device tree`;
  try {
    await promisify(execFile)('pinctrl', ['set', m[1]!, pull === 'up' ? 'pu' : 'pd'], { timeout: 2000 });
    return `pull-${pull} applied with pinctrl`;
  } catch (e) {
    return `pull-${pull} not applied to ${pin} (${(e as NodeJS.ErrnoException).code ?? 'pinctrl failed'}): add gpio=${m[1]}=${pull === 'up' ? 'pu' : 'pd'} to config.txt`;
  }
}
