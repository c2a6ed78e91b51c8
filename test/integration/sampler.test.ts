// The sampler over real telemetry sockets: readings pass their filters and reach a subscriber; a failing
// sensor becomes status samples and is retried with backoff; GPIO changes are published as they happen.
import { afterEach, describe, expect, it } from 'vitest';
import { FilterChain, Sampler } from '../../services/sampler.ts';
import { Publisher } from '../../runtime/telemetry/publisher.ts';
import { Subscriber } from '../../runtime/telemetry/subscriber.ts';
import { Status, type Driver, type Reading } from '../../drivers/driver.ts';
import { SimLine } from '../../drivers/gpio/line.ts';
import { GpioDriver } from '../../drivers/gpio/gpio.ts';
import type { Sample } from '../../runtime/telemetry/sample.ts';
import { until } from '../helpers.ts';

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function bus() {
  const pub = new Publisher({ endpoints: ['tcp://127.0.0.1:*'], batchMs: 5 });
  await pub.start();
  const sub = new Subscriber();
  sub.start();
  const samples: Sample[] = [];
  sub.on('batch', (b, from) => { for (let i = from; i < b.count; i++) samples.push(b.sample(i)); });
  await sub.connect(pub.endpoints[0]!);
  await pub.waitForSubscriber('x', 5000);
  cleanup.push(async () => { await sub.stop(); await pub.stop(100); });
  return { pub, samples };
}

/** A driver that replays a script of readings, then repeats the last one. */
class Scripted implements Driver {
  readonly kind = 'scripted';
  readonly unit = 'u';
  reads = 0;
  constructor(readonly name: string, private readonly script: Reading[]) {}
  async open(): Promise<Reading> { return { values: [], status: Status.OK }; }
  async read(): Promise<Reading> { return this.script[Math.min(this.reads++, this.script.length - 1)]!; }
  async close(): Promise<void> {}
}


describe('filters', () => {
  it('moving average, delta and throttle, in order', () => {
    const avg = new FilterChain([{ moving_average: 3 }]);
    expect([1, 2, 3, 4].map((v) => avg.apply([v], 0)?.[0])).toEqual([1, 1.5, 2, 3]);
    const delta = new FilterChain([{ delta: 0.5 }]);
    expect([10, 10.2, 10.6, 10.7, 9].map((v) => delta.apply([v], 0)?.[0])).toEqual([10, undefined, 10.6, undefined, 9]);
    const throttle = new FilterChain([{ throttle: 1000 }]);
    expect([0, 500, 1000, 1999, 2000].map((t) => throttle.apply([t], t)?.[0])).toEqual([0, undefined, 1000, undefined, 2000]);
  });
});

describe('sampler', () => {
  it('publishes readings on <prefix><name> with the driver\'s unit', async () => {
    const { pub, samples } = await bus();
    const d = new Scripted('temp', [{ values: [21.5], status: Status.OK }]);
    const s = new Sampler([{ driver: d, interval: 20, filters: [] }], pub, 'kitchen/');
    cleanup.push(() => s.stop());
    await s.start();
    await until(() => samples.length >= 3);
    expect(samples[0]).toMatchObject({ topic: 'kitchen/temp', values: [21.5], unit: 'u', status: 0 });
  });

  it('a failing sensor is published once as a status sample, retried with backoff, and recovers', async () => {
    const { pub, samples } = await bus();
    const bad: Reading = { values: [NaN], status: Status.READ_ERROR, error: 'EIO' };
    const d = new Scripted('flaky', [bad, bad, bad, { values: [7], status: Status.OK }]);
    const s = new Sampler([{ driver: d, interval: 10, filters: [] }], pub);
    cleanup.push(() => s.stop());
    const t0 = Date.now();
    await s.start();
    await until(() => samples.some((x) => x.status === 0), 15_000);
    // Three failures, retried after about 1 s and 2 s (with jitter): the interval (10 ms) does not apply.
    expect(Date.now() - t0).toBeGreaterThan(2000);
    expect(d.reads).toBeGreaterThanOrEqual(4);
    // One status sample for the whole failure spell, then values (more may have come in since: every 10 ms).
    const statuses = samples.map((x) => x.status);
    expect(statuses[0]).toBe(Status.READ_ERROR);
    expect(statuses.slice(1).every((st) => st === 0)).toBe(true);
    expect(samples[0]!.values[0]).toBeNaN();
    expect(s.status()[0]).toMatchObject({ name: 'flaky', failures: 3, status: 0 });
    expect(samples.find((x) => x.status === 0)!.values).toEqual([7]);
  }, 20_000);

  it('a device missing at start is reported and the others go on', async () => {
    const { pub, samples } = await bus();
    const missing = new Scripted('gone', [{ values: [NaN], status: Status.MISSING, error: 'not found' }]);
    missing.open = async () => ({ values: [NaN], status: Status.MISSING, error: 'not found' });
    const fine = new Scripted('fine', [{ values: [1], status: Status.OK }]);
    const s = new Sampler([{ driver: missing, interval: 10_000, filters: [] }, { driver: fine, interval: 20, filters: [] }], pub);
    cleanup.push(() => s.stop());
    await s.start();
    await until(() => samples.some((x) => x.topic === 'fine'));
    expect(samples.find((x) => x.topic === 'gone')).toMatchObject({ status: Status.MISSING });
    expect(s.status().find((x) => x.name === 'gone')).toMatchObject({ status: Status.MISSING, error: 'not found' });
  });

  it('GPIO inputs publish each change', async () => {
    const { pub, samples } = await bus();
    const sim = new SimLine(0);
    const d = new GpioDriver({ name: 'door', pin: 'GPIO4', mode: 'input', pull: 'none', inverted: false, debounce: 0, initial: 0 }, '/nonexistent', sim);
    const s = new Sampler([{ driver: d, interval: 0, filters: [] }], pub);
    cleanup.push(() => s.stop());
    await s.start();
    sim.drive(1);
    sim.drive(0);
    await until(() => samples.length >= 3);
    expect(samples.map((x) => x.values[0])).toEqual([0, 1, 0]);
  });
});
