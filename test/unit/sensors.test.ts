// Sensor drivers against fixture sysfs and procfs trees (test/fixtures), and the simulated twin.
import { afterEach, describe, expect, it } from 'vitest';
import { cpSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ds18b20, HwmonSensor, IioSensor, SystemSensor, ThermalSensor } from '../../drivers/sensors/kernel.ts';
import { SimSensor } from '../../drivers/sensors/sim.ts';
import { createSensor } from '../../drivers/sensors/index.ts';
import { Status } from '../../drivers/driver.ts';

const SYS = fileURLToPath(new URL('../fixtures/sysfs', import.meta.url));
const PROC = fileURLToPath(new URL('../fixtures/procfs', import.meta.url));
const temps: string[] = [];
afterEach(() => {
  for (const t of temps.splice(0)) rmSync(t, { recursive: true, force: true });
});

async function readOnce(d: { open(): Promise<unknown>; read(): Promise<{ values: number[]; status: number; error?: string }> }) {
  await d.open();
  return d.read();
}

describe('DS18B20 (1-Wire)', () => {
  it('reads the temperature when the CRC line says YES', async () => {
    expect(await readOnce(new Ds18b20('w', '28-0316a2795aff', SYS))).toEqual({ values: [23.125], status: Status.OK });
  });

  it('retries a bad CRC, then reports status CRC', async () => {
    const t0 = Date.now();
    const r = await readOnce(new Ds18b20('w', '28-0000000000bd', SYS));
    expect(r.status).toBe(Status.CRC);
    expect(r.values[0]).toBeNaN();
    expect(r.error).toMatch(/CRC check failed/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(Ds18b20.CRC_RETRIES * 100 - 10);
  });

  it('recognises the 85 °C power-on value as bad data', async () => {
    const r = await readOnce(new Ds18b20('w', '28-000000000085', SYS));
    expect(r).toMatchObject({ status: Status.BAD_DATA, error: expect.stringMatching(/power-on reset value 85/) });
  });

  it('a device missing at start is reported, and found when it appears; a vanished one is reported again', async () => {
    const root = mkdtempSync(join(tmpdir(), 'starling-sys-'));
    temps.push(root);
    const d = new Ds18b20('w', '28-0316a2795aff', root);
    expect(await d.open()).toMatchObject({ status: Status.MISSING, error: '1-Wire device 28-0316a2795aff not found' });
    expect((await d.read()).status).toBe(Status.MISSING);
    cpSync(SYS, root, { recursive: true });
    expect(await d.read()).toEqual({ values: [23.125], status: Status.OK });
    const dev = join(root, 'bus/w1/devices/28-0316a2795aff');
    renameSync(dev, dev + '.gone');
    expect(await d.read()).toMatchObject({ status: Status.MISSING });
    renameSync(dev + '.gone', dev);
    expect((await d.read()).status).toBe(Status.OK);
  });
});

describe('IIO, hwmon, thermal', () => {
  it('IIO: (raw + offset) × scale in the ABI units, found by device name', async () => {
    // (2345 - 100) × 10 = 22450 m°C
    expect(await readOnce(new IioSensor('t', 'bme280', 'temp', SYS))).toEqual({ values: [22.45], status: Status.OK });
    // 25130 × 0.004 = 100.52 kPa
    const p = await readOnce(new IioSensor('p', 'iio:device0', 'pressure', SYS));
    expect(p.values[0]).toBeCloseTo(100.52, 6);
    // a processed _input value wins over raw: 48123 m% = 48.123 %
    expect(await readOnce(new IioSensor('h', 'bme280', 'humidityrelative', SYS))).toEqual({ values: [48.123], status: Status.OK });
    expect(new IioSensor('h', 'bme280', 'humidityrelative', SYS).unit).toBe('%');
  });

  it('IIO: garbage in a value file is BAD_DATA, an unknown device MISSING', async () => {
    expect((await readOnce(new IioSensor('t', 'sht31', 'temp', SYS))).status).toBe(Status.BAD_DATA);
    expect(await readOnce(new IioSensor('t', 'nope', 'temp', SYS))).toMatchObject({ status: Status.MISSING, error: 'IIO nope channel temp not found' });
  });

  it('hwmon by chip name, in the hwmon units (m°C → °C, mV → V)', async () => {
    expect(await readOnce(new HwmonSensor('s', 'cpu_thermal', 'temp1', SYS))).toEqual({ values: [47.236], status: Status.OK });
    const v = new HwmonSensor('v', 'rpi_volt', 'in0', SYS);
    expect(await readOnce(v)).toEqual({ values: [0.87], status: Status.OK });
    expect(v.unit).toBe('V');
  });

  it('thermal zones by directory or by type', async () => {
    expect(await readOnce(new ThermalSensor('c', 'thermal_zone0', SYS))).toEqual({ values: [48.312], status: Status.OK });
    expect(await readOnce(new ThermalSensor('g', 'gpu-thermal', SYS))).toEqual({ values: [41], status: Status.OK });
  });
});

describe('system figures from procfs', () => {
  it.each([
    ['load1', 0.42], ['load15', 0.25], ['mem_available', 694], ['mem_used_percent', 25], ['wifi_signal', -56], ['wifi_quality', 54],
  ] as const)('%s', async (metric, want) => {
    expect(await readOnce(new SystemSensor('s', metric, 'wlan0', PROC))).toEqual({ values: [want], status: Status.OK });
  });

  it('a Wi-Fi interface that is not associated is MISSING', async () => {
    expect(await readOnce(new SystemSensor('s', 'wifi_signal', 'wlan1', PROC))).toMatchObject({ status: Status.MISSING });
  });
});

describe('simulated twins', () => {
  const base = { waveform: 'square' as const, min: 1, max: 5, period: 1000, noise: 0, unit: 'x', fail_rate: 0, seed: 7 };

  it('follow their waveform on the given clock', async () => {
    let now = 0;
    const s = new SimSensor('s', base, 'sim', () => now);
    await s.open();
    const values = [];
    for (now = 0; now < 2000; now += 250) values.push((await s.read()).values[0]);
    expect(values).toEqual([5, 5, 1, 1, 5, 5, 1, 1]);
  });

  it('repeat exactly for a seed, with noise and injected faults', async () => {
    const run = async () => {
      const s = new SimSensor('s', { ...base, waveform: 'random_walk', noise: 0.5, fail_rate: 0.2 }, 'sim', () => 0);
      await s.open();
      const out = [];
      for (let i = 0; i < 50; i++) out.push(await s.read());
      return out;
    };
    const [a, b] = [await run(), await run()];
    expect(a).toEqual(b);
    const failed = a.filter((r) => r.status === Status.INJECTED).length;
    expect(failed).toBeGreaterThan(3);
    expect(failed).toBeLessThan(20);
    expect(a.filter((r) => r.status === Status.OK).every((r) => r.values[0]! >= 0.5 && r.values[0]! <= 5.5)).toBe(true);
  });

  it('can vanish like a real device', async () => {
    const s = new SimSensor('s', base);
    await s.open();
    s.vanished = true;
    expect((await s.read()).status).toBe(Status.MISSING);
  });

  it('stand in for every kind when simulate is on, with that kind\'s unit', async () => {
    const d = createSensor({ platform: 'iio', name: 'h', device: 'x', channel: 'humidityrelative', interval: 1000, filters: [] }, { sysfs: '/nonexistent', procfs: '/nonexistent' }, true);
    expect([d.kind, d.unit]).toEqual(['iio', '%']);
    const r = await readOnce(d);
    expect(r.status).toBe(Status.OK);
    expect(r.values[0]).toBeGreaterThanOrEqual(39);
    expect(r.values[0]).toBeLessThanOrEqual(61);
  });
});

it('a sensor file that cannot be read for another reason is a READ_ERROR, not a throw', async () => {
  const root = mkdtempSync(join(tmpdir(), 'starling-sys-'));
  temps.push(root);
  cpSync(SYS, root, { recursive: true });
  const file = join(root, 'class/thermal/thermal_zone0/temp');
  const d = new ThermalSensor('c', 'thermal_zone0', root);
  await d.open();
  rmSync(file);
  // A directory where the file was: EISDIR on read.
  cpSync(join(root, 'class/thermal/thermal_zone1'), file, { recursive: true });
  expect(await d.read()).toMatchObject({ status: Status.READ_ERROR, error: expect.stringMatching(/EISDIR/) });
  rmSync(file, { recursive: true });
  writeFileSync(file, '50000\n');
  expect(await d.read()).toEqual({ values: [50], status: Status.OK });
});
