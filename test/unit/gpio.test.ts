// GPIO: pin names resolved through gpiochip base and label (fixture sysfs trees of a Pi 4 and a Pi 5), and
// the line logic (edges, debounce, active-low, initial and safe levels) over the simulated line.
import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { resolvePin } from '../../drivers/gpio/chip.ts';
import { SimLine } from '../../drivers/gpio/line.ts';
import { GpioDriver } from '../../drivers/gpio/gpio.ts';
import type { GpioConfig } from '../../runtime/config/load.ts';

const PI4 = fileURLToPath(new URL('../fixtures/sysfs', import.meta.url));
const PI5 = fileURLToPath(new URL('../fixtures/sysfs-pi5', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const line = (over: Partial<GpioConfig>): GpioConfig => ({ name: 'l', pin: 'GPIO17', mode: 'input', pull: 'none', inverted: false, debounce: 0, initial: 0, ...over });

describe('pin resolution', () => {
  it('GPIO17 is base + 17 of the header chip: 529 on a Pi 4 (base 512), 588 on a Pi 5 (RP1, base 571)', async () => {
    expect((await resolvePin('GPIO17', PI4)).number).toBe(529);
    const pi5 = await resolvePin('GPIO17', PI5);
    expect(pi5.number).toBe(588);
    expect(pi5.chip.label).toBe('pinctrl-rp1');
  });

  it('CHIP:LINE by label or by gpiochip directory', async () => {
    expect((await resolvePin('raspberrypi-exp-gpio:2', PI4)).number).toBe(572);
    expect((await resolvePin('gpiochip570:7', PI4)).number).toBe(577);
  });

  it('says what it found when a pin cannot be resolved', async () => {
    await expect(resolvePin('GPIO99', PI4)).rejects.toThrow('GPIO99: pinctrl-bcm2711 has lines 0 to 57');
    await expect(resolvePin('nochip:1', PI4)).rejects.toThrow(/no gpiochip named or labelled 'nochip'; found: gpiochip512 \(pinctrl-bcm2711, base 512, 58 lines\); gpiochip570/);
    await expect(resolvePin('GPIO1', '/nonexistent')).rejects.toThrow(/cannot list \/nonexistent\/class\/gpio: ENOENT/);
  });
});

describe('lines over the simulated line', () => {
  it('an input reports each edge, inverted when active-low', async () => {
    const sim = new SimLine(1); // pulled up, button released
    const d = new GpioDriver(line({ inverted: true }), PI4, sim);
    expect((await d.open()).values).toEqual([0]);
    const seen: number[] = [];
    d.watch((r) => seen.push(r.values[0]!));
    sim.drive(0); // pressed
    sim.drive(1);
    sim.drive(0);
    expect(seen).toEqual([1, 0, 1]);
    expect((await d.read()).values).toEqual([1]);
    await d.close();
  });

  it('debounce: bounces shorter than the debounce time are ignored; a held level counts once', async () => {
    const sim = new SimLine(0);
    // 200 ms debounce against 5 ms bounces: wide margins, so a loaded machine's timer jitter cannot flip it.
    const d = new GpioDriver(line({ debounce: 200 }), PI4, sim);
    await d.open();
    const seen: number[] = [];
    d.watch((r) => seen.push(r.values[0]!));
    for (let i = 0; i < 5; i++) { sim.drive(1); await sleep(5); sim.drive(0); await sleep(5); } // contact bounce, ends low
    await sleep(300);
    expect(seen).toEqual([]);
    sim.drive(1); await sleep(5); sim.drive(0); await sleep(5); sim.drive(1); // bounces, then held high
    await sleep(300);
    expect(seen).toEqual([1]);
    await d.close();
  });

  it('an output starts at its initial level, follows writes, and goes to its safe level on close', async () => {
    const sim = new SimLine(0);
    const d = new GpioDriver(line({ mode: 'output', initial: 1, safe: 0, inverted: true }), PI4, sim);
    await d.open();
    expect(await sim.read()).toBe(0); // logical 1, active-low
    await d.write(0);
    expect(await sim.read()).toBe(1);
    expect((await d.read()).values).toEqual([0]);
    await d.write(1);
    await d.close();
    expect(await sim.read()).toBe(1); // safe logical 0 = level 1 when inverted
    await expect(d.write(2)).rejects.toThrow(/must be 0 or 1/);
  });

  it('writing an input is refused', async () => {
    const d = new GpioDriver(line({}), PI4, new SimLine());
    await d.open();
    await expect(d.write(1)).rejects.toThrow('gpio l is an input');
  });
});
