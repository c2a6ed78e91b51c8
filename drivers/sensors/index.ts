/** Builds the driver for a configured sensor: the real one, or its simulated twin. */
import type { SensorConfig } from '../../runtime/config/load.ts';
import type { Driver } from '../driver.ts';
import { Ds18b20, HwmonSensor, IioSensor, SystemSensor, ThermalSensor } from './kernel.ts';
import { SimSensor, type SimOptions } from './sim.ts';

export interface Roots {
  sysfs: string;
  procfs: string;
}

/** Plausible values for each kind's twin, so a laptop run looks like a device. */
function twinOf(c: SensorConfig): SimOptions {
  const base = { waveform: 'sine' as const, period: 600_000, noise: 0.05, fail_rate: 0, seed: hash(c.name) };
  switch (c.platform) {
    case 'ds18b20': return { ...base, min: 18, max: 24, unit: '°C' };
    case 'iio':
      return c.channel === 'temp' ? { ...base, min: 20, max: 23, unit: '°C' }
        : c.channel === 'humidityrelative' ? { ...base, min: 40, max: 60, unit: '%' }
        : { ...base, min: 99, max: 102, unit: 'kPa' };
    case 'hwmon':
    case 'thermal': return { ...base, min: 40, max: 60, unit: '°C' };
    case 'system': return { ...base, min: 0, max: c.metric === 'wifi_signal' ? -40 : 2, unit: '' };
    case 'sim': return c;
  }
}

function hash(s: string): number {
  let h = 2166136261;
  for (const ch of s) h = Math.imul(h ^ ch.charCodeAt(0), 16777619);
  return h >>> 0;
}

export function createSensor(c: SensorConfig, roots: Roots, simulate: boolean): Driver {
  if (c.platform === 'sim') return new SimSensor(c.name, c);
  if (c.simulate ?? simulate) return new SimSensor(c.name, twinOf(c), c.platform);
  switch (c.platform) {
    case 'ds18b20': return new Ds18b20(c.name, c.address, roots.sysfs);
    case 'iio': return new IioSensor(c.name, c.device, c.channel, roots.sysfs);
    case 'hwmon': return new HwmonSensor(c.name, c.chip, c.input, roots.sysfs);
    case 'thermal': return new ThermalSensor(c.name, c.zone, roots.sysfs);
    case 'system': return new SystemSensor(c.name, c.metric, c.interface, roots.procfs);
  }
}
