/**
 * Sensors the kernel already exposes as files (no native code): 1-Wire DS18B20, IIO, hwmon, thermal zones,
 * and system figures from procfs. Each takes the sysfs (or procfs) root, so tests read fixture trees.
 * A device missing at open is reported (status MISSING) and looked for again on every read.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { fault, ok, Status, type Driver, type Reading } from '../driver.ts';
import { findByName, parseNumber, readFailure, readText } from './files.ts';

/** Common shape: find the file once (again while missing), read it, turn its text into a reading. */
abstract class FileSensor implements Driver {
  abstract readonly kind: string;
  abstract readonly unit: string;
  private path: string | undefined;

  constructor(readonly name: string) {}

  /** Where the value lives, or undefined (with a reason) when the device is not there. */
  protected abstract locate(): Promise<string | undefined>;
  protected abstract describe(): string;
  protected abstract parse(text: string): Reading;

  async open(): Promise<Reading> {
    this.path = await this.locate();
    return this.path ? ok() : fault(Status.MISSING, `${this.describe()} not found`);
  }

  async read(): Promise<Reading> {
    this.path ??= await this.locate();
    if (!this.path) return fault(Status.MISSING, `${this.describe()} not found`);
    try {
      return this.parse(await readText(this.path));
    } catch (e) {
      const r = readFailure(e, this.describe());
      if (r.status === Status.MISSING) this.path = undefined; // vanished: look again next time
      return r;
    }
  }

  async close(): Promise<void> {
    this.path = undefined;
  }
}

/** DS18B20 on the 1-Wire bus (w1-gpio, w1-therm): w1_slave's first line ends in YES when the CRC matched. */
export class Ds18b20 extends FileSensor {
  readonly kind = 'ds18b20';
  readonly unit = '°C';
  /** Reads again this many times when the CRC fails, 100 ms apart. */
  static readonly CRC_RETRIES = 2;

  constructor(name: string, private readonly address: string, private readonly sysfs: string) {
    super(name);
  }

  protected describe(): string {
    return `1-Wire device ${this.address}`;
  }

  protected async locate(): Promise<string | undefined> {
    const path = `${this.sysfs}/bus/w1/devices/${this.address}/w1_slave`;
    try {
      await readText(path);
      return path;
    } catch {
      return undefined;
    }
  }

  override async read(): Promise<Reading> {
    let r = await super.read();
    for (let i = 0; i < Ds18b20.CRC_RETRIES && r.status === Status.CRC; i++) {
      await sleep(100);
      r = await super.read();
    }
    return r;
  }

  protected parse(text: string): Reading {
    const [crcLine = '', dataLine = ''] = text.split('\n');
    if (!/\bYES$/.test(crcLine.trim())) return fault(Status.CRC, `${this.describe()}: CRC check failed (${crcLine.trim().slice(-12)})`);
    const m = /t=(-?\d+)/.exec(dataLine);
    if (!m) return fault(Status.BAD_DATA, `${this.describe()}: no t= in ${JSON.stringify(dataLine.slice(0, 40))}`);
    const milli = Number(m[1]);
    // 85 °C is the power-on reset value: the conversion did not run (usually a power problem).
    if (milli === 85000) return fault(Status.BAD_DATA, `${this.describe()}: power-on reset value 85 °C (conversion did not run)`);
    return ok(milli / 1000);
  }
}

/** Unit and divisor from the IIO ABI's units (milli-degrees, milli-percent, kPa). */
const IIO_UNITS = { temp: ['°C', 1000], humidityrelative: ['%', 1000], pressure: ['kPa', 1] } as const;

/** An IIO channel: in_<ch>_input, or (in_<ch>_raw + in_<ch>_offset) × in_<ch>_scale, in the ABI's units. */
export class IioSensor extends FileSensor {
  readonly kind = 'iio';
  readonly unit: string;
  private scale = 1;
  private offset = 0;
  private processed = false;

  constructor(name: string, private readonly device: string, private readonly channel: keyof typeof IIO_UNITS, private readonly sysfs: string) {
    super(name);
    this.unit = IIO_UNITS[channel][0];
  }

  protected describe(): string {
    return `IIO ${this.device} channel ${this.channel}`;
  }

  protected async locate(): Promise<string | undefined> {
    const dir = await findByName(`${this.sysfs}/bus/iio/devices`, this.device, 'name');
    if (!dir) return undefined;
    const base = `${dir}/in_${this.channel}`;
    try {
      await readText(`${base}_input`);
      this.processed = true;
      return `${base}_input`;
    } catch {
      // no processed value: raw with scale and offset
    }
    try {
      await readText(`${base}_raw`);
    } catch {
      return undefined;
    }
    this.processed = false;
    this.scale = await readText(`${base}_scale`).then(parseNumber, () => 1);
    this.offset = await readText(`${base}_offset`).then(parseNumber, () => 0);
    if (Number.isNaN(this.scale)) this.scale = 1;
    if (Number.isNaN(this.offset)) this.offset = 0;
    return `${base}_raw`;
  }

  protected parse(text: string): Reading {
    const n = parseNumber(text);
    if (Number.isNaN(n)) return fault(Status.BAD_DATA, `${this.describe()}: not a number: ${JSON.stringify(text.slice(0, 20))}`);
    const abi = this.processed ? n : (n + this.offset) * this.scale;
    return ok(abi / IIO_UNITS[this.channel][1]);
  }
}

/** Unit and divisor from the hwmon ABI's units (m°C, mV, rpm, µW, mA, m%). */
const HWMON_UNITS: Record<string, [string, number]> = {
  temp: ['°C', 1000], in: ['V', 1000], fan: ['rpm', 1], power: ['W', 1e6], curr: ['A', 1000], humidity: ['%', 1000],
};

/** A hwmon input (<input>_input), converted from the hwmon ABI's milli/micro units. */
export class HwmonSensor extends FileSensor {
  readonly kind = 'hwmon';
  readonly unit: string;
  private readonly divisor: number;

  constructor(name: string, private readonly chip: string, private readonly input: string, private readonly sysfs: string) {
    super(name);
    const [unit, divisor] = HWMON_UNITS[input.replace(/\d+$/, '')] ?? ['', 1];
    this.unit = unit;
    this.divisor = divisor;
  }

  protected describe(): string {
    return `hwmon ${this.chip} ${this.input}`;
  }

  protected async locate(): Promise<string | undefined> {
    const dir = await findByName(`${this.sysfs}/class/hwmon`, this.chip, 'name');
    return dir ? `${dir}/${this.input}_input` : undefined;
  }

  protected parse(text: string): Reading {
    const n = parseNumber(text);
    return Number.isNaN(n) ? fault(Status.BAD_DATA, `${this.describe()}: not a number`) : ok(n / this.divisor);
  }
}

/** A thermal zone's temp (millidegrees Celsius), e.g. the CPU temperature. */
export class ThermalSensor extends FileSensor {
  readonly kind = 'thermal';
  readonly unit = '°C';

  constructor(name: string, private readonly zone: string, private readonly sysfs: string) {
    super(name);
  }

  protected describe(): string {
    return `thermal zone ${this.zone}`;
  }

  protected async locate(): Promise<string | undefined> {
    const dir = await findByName(`${this.sysfs}/class/thermal`, this.zone, 'type');
    return dir ? `${dir}/temp` : undefined;
  }

  protected parse(text: string): Reading {
    const n = parseNumber(text);
    return Number.isNaN(n) ? fault(Status.BAD_DATA, `${this.describe()}: not a number`) : ok(n / 1000);
  }
}

export type SystemMetric = 'load1' | 'load5' | 'load15' | 'mem_available' | 'mem_used_percent' | 'wifi_signal' | 'wifi_quality';
const SYSTEM_UNITS: Record<SystemMetric, string> = {
  load1: '', load5: '', load15: '', mem_available: 'MB', mem_used_percent: '%', wifi_signal: 'dBm', wifi_quality: '',
};

/** System figures from procfs: load averages, memory, Wi-Fi signal and link quality (/proc/net/wireless). */
export class SystemSensor extends FileSensor {
  readonly kind = 'system';
  readonly unit: string;

  constructor(name: string, private readonly metric: SystemMetric, private readonly iface: string, private readonly procfs: string) {
    super(name);
    this.unit = SYSTEM_UNITS[metric];
  }

  protected describe(): string {
    return this.metric.startsWith('wifi') ? `Wi-Fi ${this.iface} in ${this.procfs}/net/wireless` : `${this.metric} in ${this.procfs}`;
  }

  protected async locate(): Promise<string | undefined> {
    const file = this.metric.startsWith('load') ? 'loadavg' : this.metric.startsWith('mem') ? 'meminfo' : 'net/wireless';
    const path = `${this.procfs}/${file}`;
    try {
      await readText(path);
      return path;
    } catch {
      return undefined;
    }
  }

  protected parse(text: string): Reading {
    switch (this.metric) {
      case 'load1':
      case 'load5':
      case 'load15': {
        const v = parseNumber(text.split(/\s+/)[{ load1: 0, load5: 1, load15: 2 }[this.metric]] ?? '');
        return Number.isNaN(v) ? fault(Status.BAD_DATA, 'loadavg: unexpected format') : ok(v);
      }
      case 'mem_available':
      case 'mem_used_percent': {
        const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
        const total = kb('MemTotal');
        const available = kb('MemAvailable');
        if (Number.isNaN(total) || Number.isNaN(available)) return fault(Status.BAD_DATA, 'meminfo: no MemTotal/MemAvailable');
        return this.metric === 'mem_available' ? ok(Math.round(available / 1024)) : ok(Math.round((1 - available / total) * 1000) / 10);
      }
      case 'wifi_signal':
      case 'wifi_quality': {
        const line = text.split('\n').find((l) => l.trim().startsWith(`${this.iface}:`));
        if (!line) return fault(Status.MISSING, `Wi-Fi interface ${this.iface} not in ${this.procfs}/net/wireless (not associated?)`);
        const f = line.trim().split(/\s+/);
        const v = parseNumber((this.metric === 'wifi_signal' ? f[3] : f[2])?.replace(/\.$/, '') ?? '');
        return Number.isNaN(v) ? fault(Status.BAD_DATA, `net/wireless: unexpected line for ${this.iface}`) : ok(v);
      }
    }
  }
}
