// The MQTT bridge between real telemetry sockets and a real Mosquitto: samples to state topics, Home Assistant
// discovery, nothing lost while the broker is down (spool), discovery again after the broker restarts,
// availability with a last will, and commands from Home Assistant.
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bridge } from '../../services/mqtt-bridge/bridge.ts';
import { MqttClient } from '../../services/mqtt-bridge/client.ts';
import { Publisher } from '../../runtime/telemetry/publisher.ts';
import { Subscriber } from '../../runtime/telemetry/subscriber.ts';
import { Mosquitto } from '../mosquitto.ts';
import { until } from '../helpers.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});


async function setup(opts: { switches?: string[]; onCommand?: (t: string, v: number) => Promise<void>; shape?: 'sample' | 'device' } = {}) {
  const broker = new Mosquitto();
  await broker.start();
  cleanup.push(() => broker.destroy());
  const pub = new Publisher({ endpoints: ['tcp://127.0.0.1:*'], batchMs: 5, batchSamples: 16 });
  await pub.start();
  const sub = new Subscriber();
  sub.start();
  await sub.connect(pub.endpoints[0]!);
  await pub.waitForSubscriber('x', 5000);
  const spoolDir = mkdtempSync(join(tmpdir(), 'starling-bridge-'));
  const bridge = new Bridge({
    mqtt: { url: broker.url, clientId: 'bridge-test', reconnect: { min: 100, max: 300 }, keepalive: 2 },
    node: 'hub', spoolDir, ...opts,
  }, sub);
  await bridge.start();
  await until(() => bridge.client.isConnected, 5000, 'the bridge to connect');
  const watcher = new MqttClient({ url: broker.url, clientId: 'watcher', reconnect: { min: 100, max: 300 } });
  await watcher.start();
  const got: [string, string, boolean][] = [];
  watcher.on('message', (t, p, { retain }) => got.push([t, p.toString(), retain]));
  await watcher.subscribe('#', 1);
  cleanup.push(async () => {
    await watcher.stop();
    await bridge.stop(200);
    await sub.stop();
    await pub.stop(100);
    rmSync(spoolDir, { recursive: true, force: true });
  });
  return { broker, pub, bridge, watcher, got };
}

describe('MQTT bridge', () => {
  it('forwards samples to state topics and announces each topic to Home Assistant', async () => {
    const { pub, got } = await setup();
    pub.publish('greenhouse/air', 21.5, { unit: '°C' });
    pub.publish('greenhouse/accel', [0.5, 1], { unit: 'g' });
    pub.publish('greenhouse/soil', NaN, { unit: '°C', status: 2 });
    const state = (topic: string) => JSON.parse(got.find(([t]) => t === topic)![1]);
    await until(() => ['air', 'accel', 'soil'].every((n) => got.some(([t]) => t === `starling/greenhouse/${n}`)), 5000, 'the states');
    const id = pub.id.toString('hex').toUpperCase();
    expect(state('starling/greenhouse/air')).toMatchObject({ value: 21.5, unit: '°C', seq: 0, publisher: id, ts: expect.any(Number) });
    expect(state('starling/greenhouse/accel')).toMatchObject({ value: [0.5, 1], unit: 'g' });
    expect(state('starling/greenhouse/soil')).toMatchObject({ status: 'missing', seq: 0 });
    const config = got.find(([t]) => t === 'homeassistant/sensor/starling_greenhouse_air/config');
    expect(config).toBeDefined();
    expect(JSON.parse(config![1])).toEqual({
      name: 'air', unique_id: 'starling_greenhouse_air', state_topic: 'starling/greenhouse/air', value_template: '{{ value_json.value }}',
      availability_topic: 'starling/bridge/hub/status', payload_available: 'online', payload_not_available: 'offline',
      device: { identifiers: ['starling_greenhouse'], name: 'greenhouse', manufacturer: 'Starling' },
      unit_of_measurement: '°C', device_class: 'temperature', state_class: 'measurement',
    });
    expect(got.find(([t]) => t === 'starling/bridge/hub/status')?.[1]).toBe('online');
  });

  it('a broker away for 30 s while 1,000 samples/s flow: every sample arrives once (by sequence) and in order; discovery again', async () => {
    const OUTAGE_MS = 30_000;
    const { broker, pub, bridge, got } = await setup();
    let n = 0;
    // 1,000 samples/s: ten every 10 ms.
    const tick = setInterval(() => {
      for (let k = 0; k < 10; k++) pub.publish('yard/count', n++);
    }, 10);
    cleanup.push(() => clearInterval(tick));
    await until(() => got.some(([t]) => t === 'starling/yard/count'), 5000, 'the first sample');
    const announced = () => got.filter(([t]) => t === 'homeassistant/sensor/starling_yard_count/config').length;
    await until(() => announced() === 1, 5000, 'the first announcement');
    await broker.stop();
    const stoppedAt = n;
    await new Promise((r) => setTimeout(r, OUTAGE_MS));
    expect(n - stoppedAt).toBeGreaterThan(OUTAGE_MS * 0.8); // the rate held while the broker was away
    expect(bridge.stats().spool.queued).toBeGreaterThan(OUTAGE_MS * 0.8);
    await broker.start();
    await new Promise((r) => setTimeout(r, 500));
    clearInterval(tick);
    const last = n - 1;
    await until(() => got.some(([t, p]) => t === 'starling/yard/count' && JSON.parse(p).value === last), 30_000, `sample ${last}`);
    const seqs = got.filter(([t]) => t === 'starling/yard/count').map(([, p]) => JSON.parse(p).seq as number);
    // After dropping repeats by sequence number (QoS 1 allows them: Mosquitto replays what its persistence
    // file still held for the watcher across the restart), every sample arrived, in order.
    const firsts = seqs.filter((v, i) => seqs.indexOf(v) === i);
    expect(firsts.length).toBe(last + 1);
    expect(firsts.every((v, i) => v === i)).toBe(true);
    await until(() => announced() >= 2, 5000, 'the announcement after the restart');
    // The last PUBACKs may still be on their way when the watcher sees the last sample.
    await until(() => bridge.stats().spool.queued === 0, 5000, 'the spool to empty');
    expect(bridge.stats().spool).toMatchObject({ queued: 0, dropped: 0 });
    expect(bridge.stats().forwarded).toBe(n); // each sample handed to the broker once (plus QoS 1 re-sends)
  }, 120_000);

  it('re-announces everything when Home Assistant says it came online (birth message)', async () => {
    const { pub, watcher, got } = await setup();
    pub.publish('attic/temp', 30, { unit: '°C' });
    const announced = () => got.filter(([t]) => t === 'homeassistant/sensor/starling_attic_temp/config').length;
    await until(() => announced() === 1, 5000, 'the first announcement');
    await watcher.publish('homeassistant/status', 'online', { qos: 1 });
    await until(() => announced() === 2, 5000, 'the announcement after the birth message');
  });

  it('the last will says offline when the bridge drops off; commands from Home Assistant reach the device', async () => {
    const commands: [string, number][] = [];
    const { bridge, watcher, got } = await setup({ switches: ['hall/lamp'], onCommand: async (t, v) => void commands.push([t, v]) });
    await until(() => got.some(([t]) => t === 'homeassistant/switch/starling_hall_lamp/config'), 5000, 'the switch announcement');
    const lamp = got.find(([t]) => t === 'homeassistant/switch/starling_hall_lamp/config');
    expect(JSON.parse(lamp![1])).toMatchObject({ command_topic: 'starling/hall/lamp/set', state_topic: 'starling/hall/lamp', payload_on: '1' });
    await watcher.publish('starling/hall/lamp/set', '1', { qos: 1 });
    await watcher.publish('starling/hall/other/set', '1', { qos: 1 });
    await until(() => commands.length === 1 && bridge.stats().commandErrors === 1, 5000, 'the command');
    expect(commands).toEqual([['hall/lamp', 1]]);
    (bridge.client as unknown as { socket: { destroy(): void } }).socket.destroy();
    await until(() => got.some(([t, p]) => t === 'starling/bridge/hub/status' && p === 'offline'), 10_000, 'offline');
  }, 20_000);

  it('shape device: one JSON state per device with every field, entities reading their field, superseded samples counted, commands as before', async () => {
    const commands: [string, number][] = [];
    const { broker, pub, bridge, watcher, got } = await setup({ shape: 'device', switches: ['hall/lamp'], onCommand: async (t, v) => void commands.push([t, v]) });
    pub.publish('hall/air', 21.5, { unit: '°C' });
    pub.publish('hall/accel', [0.5, 1], { unit: 'g' });
    pub.publish('hall/soil', NaN, { unit: '°C', status: 2 });
    pub.publish('hall/lamp', 1);
    pub.publish('shed/air', 9, { unit: '°C' });
    pub.publish('lonely', 3);
    const last = (topic: string) => got.filter(([t]) => t === topic).at(-1);
    await until(() => JSON.parse(last('starling/hall')?.[1] ?? '{}').lamp === 1 && last('starling/shed') !== undefined && last('starling/lonely') !== undefined, 5000, 'the device states');
    const hall = last('starling/hall')!;
    expect(JSON.parse(hall[1])).toEqual({ air: 21.5, accel: [0.5, 1], soil: null, lamp: 1, status: { soil: 'missing' }, ts: expect.any(Number) });
    // It holds a GPIO line: retained (as the line's own state is in shape 'sample'), so a newcomer learns it.
    const late = new MqttClient({ url: broker.url, clientId: 'late', clean: true });
    await late.start();
    cleanup.push(() => late.stop());
    const retained: string[] = [];
    late.on('message', (t, p, { retain }) => void (retain && retained.push(t)));
    await until(() => late.isConnected, 5000, 'the late client');
    await late.subscribe('starling/+', 0);
    await until(() => retained.includes('starling/hall'), 5000, 'the retained state');
    expect(retained).not.toContain('starling/shed');
    expect(JSON.parse(last('starling/shed')![1])).toEqual({ air: 9, ts: expect.any(Number) });
    expect(JSON.parse(last('starling/lonely')![1])).toMatchObject({ value: 3 }); // no device in a topic without '/'
    expect(got.some(([t]) => t === 'starling/hall/air')).toBe(false);
    await until(() => got.some(([t]) => t === 'homeassistant/sensor/starling_hall_air/config'), 5000, 'the announcement');
    expect(JSON.parse(got.find(([t]) => t === 'homeassistant/sensor/starling_hall_air/config')![1])).toMatchObject({ state_topic: 'starling/hall', value_template: '{{ value_json["air"] }}' });
    const lamp = JSON.parse(got.find(([t]) => t === 'homeassistant/switch/starling_hall_lamp/config')![1]);
    expect(lamp).toMatchObject({ state_topic: 'starling/hall', value_template: '{{ value_json["lamp"] }}', command_topic: 'starling/hall/lamp/set' });
    await watcher.publish('starling/hall/lamp/set', 'ON', { qos: 1 });
    await until(() => commands.length === 1, 5000, 'the command');
    expect(commands).toEqual([['hall/lamp', 1]]);

    // 20 samples of one topic in one batch: one state carries the newest, 19 superseded.
    const before = bridge.stats();
    for (let i = 0; i < 20; i++) pub.publish('hall/air', 100 + i, { unit: '°C' });
    await until(() => JSON.parse(last('starling/hall')![1]).air === 119, 5000, 'the newest value');
    const after = bridge.stats();
    expect(after.samplesCarried - before.samplesCarried + after.coalesced - before.coalesced).toBe(20);
    expect(after.coalesced - before.coalesced).toBeGreaterThanOrEqual(1);
    expect(after.deviceStates).toBeGreaterThan(before.deviceStates);
  });

  it('fails over to the next broker when the one in use goes, and back round the list; every sample arrives, in order', async () => {
    const a = new Mosquitto();
    const b = new Mosquitto();
    await Promise.all([a.start(), b.start()]);
    cleanup.push(() => a.destroy(), () => b.destroy());
    const pub = new Publisher({ endpoints: ['tcp://127.0.0.1:*'], batchMs: 5, batchSamples: 16 });
    await pub.start();
    const sub = new Subscriber();
    sub.start();
    await sub.connect(pub.endpoints[0]!);
    await pub.waitForSubscriber('x', 5000);
    const spoolDir = mkdtempSync(join(tmpdir(), 'starling-bridge-'));
    const bridge = new Bridge({ mqtt: { url: a.url, failover: [b.url], clientId: 'bridge-failover', reconnect: { min: 100, max: 300 }, keepalive: 2 }, node: 'hub', spoolDir }, sub);
    await bridge.start();
    cleanup.push(async () => {
      await bridge.stop(200);
      await sub.stop();
      await pub.stop(100);
      rmSync(spoolDir, { recursive: true, force: true });
    });
    // A watcher on each broker: what the bridge published there, by sequence number.
    const seen: number[][] = [[], []];
    for (const [i, broker] of [a, b].entries()) {
      const w = new MqttClient({ url: broker.url, clientId: `watcher-${i}`, reconnect: { min: 100, max: 300 } });
      await w.start();
      w.on('message', (t, p) => t === 'starling/yard/count' && seen[i]!.push(JSON.parse(p.toString()).seq as number));
      await w.subscribe('starling/yard/count', 1);
      cleanup.push(() => w.stop());
    }
    let n = 0;
    const tick = setInterval(() => {
      for (let k = 0; k < 5; k++) pub.publish('yard/count', n++);
    }, 10);
    cleanup.push(() => clearInterval(tick));
    await until(() => seen[0]!.length > 100, 5000, 'samples at the first broker');
    expect(bridge.client.broker).toBe(0);
    await a.stop();
    await until(() => bridge.client.isConnected && bridge.client.broker === 1 && seen[1]!.length > 100, 10_000, 'the bridge on the second broker');
    // The first comes back and the second goes: round the list to the first again.
    await a.start();
    await b.stop();
    const before = seen[0]!.length;
    await until(() => bridge.client.isConnected && bridge.client.broker === 0 && seen[0]!.length > before + 100, 10_000, 'the bridge on the first broker again');
    clearInterval(tick);
    const last = n - 1;
    await until(() => seen[0]!.includes(last), 10_000, `sample ${last}`);
    await until(() => bridge.stats().spool.queued === 0, 5000, 'the spool to empty');
    // What each broker got is in order (repeats allowed: QoS 1 re-sends what was in flight when a broker went),
    // and together they hold every sample.
    for (const got of seen) {
      const firsts = got.filter((v, i) => got.indexOf(v) === i);
      for (let i = 1; i < firsts.length; i++) expect(firsts[i]!).toBeGreaterThan(firsts[i - 1]!);
    }
    const all = new Set([...seen[0]!, ...seen[1]!]);
    const first = Math.min(...all);
    expect(first).toBe(0);
    expect(all.size).toBe(last + 1);
    expect(bridge.stats().spool.dropped).toBe(0);
    expect(bridge.client.failovers).toBeGreaterThanOrEqual(2);
  }, 60_000);
});
