/**
 * MQTT bridge figures, printed as a table (or --json), against a real Mosquitto on loopback:
 *   - samples/s from a telemetry publisher through the bridge into Mosquitto, counted by an MQTT subscriber,
 *     beside MQTT.js publishing the same messages (ready-made JSON, QoS 1, 256 in flight like the bridge) to the
 *     same Mosquitto, counted by the same subscriber; once one message per sample (shape 'sample'), once one
 *     JSON state per device of 20 fields (shape 'device', Zigbee2MQTT's shape), where a sample counts as
 *     arrived when its value (the round it was published in) first shows in its device's state;
 *   - spool write rate (append, fsync once a second, and fsync after every batch) and drain rate into
 *     Mosquitto after an outage;
 *   - RSS of this process (publisher, bridge and counting client together) after each run.
 *
 *   node dist/bench/bridge.mjs [--json] [--samples N]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Publisher } from '../runtime/telemetry/publisher.ts';
import { Subscriber } from '../runtime/telemetry/subscriber.ts';
import { Bridge } from '../services/mqtt-bridge/bridge.ts';
import { MqttClient } from '../services/mqtt-bridge/client.ts';
import { Spool } from '../runtime/spool.ts';
import { Mosquitto } from '../test/mosquitto.ts';
import mqttjs from 'mqtt';
import { Worker, isMainThread, parentPort } from 'node:worker_threads';

const { values } = parseArgs({ options: { json: { type: 'boolean' }, samples: { type: 'string' } } });
const N = Number(values.samples ?? 100_000);
/** shape 'device': devices × fields, one sample of each field per round. */
const DEVICES = 200;
const FIELDS = 20;
const rows: { figure: string; value: string; rss: string }[] = [];
const mb = () => `${(process.memoryUsage().rss / 1048576).toFixed(1)} MB`;
const dir = mkdtempSync(join(tmpdir(), 'starling-bench-bridge-'));

/**
 * The mesh side, in a thread of its own (as a real hub's publishers are other devices): a telemetry publisher
 * that feeds on request and answers when done.
 */
async function feeder(): Promise<never> {
  const port = parentPort!;
  const pub = new Publisher({ endpoints: ['tcp://127.0.0.1:*'], maxTopics: DEVICES * FIELDS, queueLimit: 65_536 });
  await pub.start();
  port.on('message', async (m: { op: 'wait' } | { op: 'feed'; topic: string } | { op: 'devices'; rounds: number } | { op: 'stop' }) => {
    if (m.op === 'wait') await pub.waitForSubscriber('x', 5000);
    else if (m.op === 'feed') {
      for (let i = 0; i < N; i++) {
        if (!pub.publish(m.topic, i)) await pub.drained();
        if (i % 1000 === 999) await new Promise((r) => setImmediate(r));
      }
      pub.flushAll();
    } else if (m.op === 'devices') {
      // Rounds of one sample per field of every device (value: the round), each round flushed at once.
      for (let r = 1; r <= m.rounds; r++) {
        for (let d = 0; d < DEVICES; d++) for (let f = 0; f < FIELDS; f++) if (!pub.publish(`dev${d}/f${f}`, r)) await pub.drained();
        pub.flushAll();
        await new Promise((res) => setImmediate(res));
      }
    } else {
      await pub.stop(100);
      port.postMessage('done');
      process.exit(0); // this thread only
    }
    port.postMessage('done');
  });
  port.postMessage(pub.endpoints[0]);
  return new Promise<never>(() => {});
}
if (!isMainThread) await feeder();

const broker = new Mosquitto();
const MQTTJS_VERSION = '5.16.0';
let received = 0;
let arrivedFields = 0;
const lastSeen = new Map<string, number[]>();
const ratios: [string, number][] = [];

/** MQTT.js publishing `messages` at QoS 1 with at most 256 awaiting PUBACK; seconds until `done()`. */
async function mqttJs(messages: (readonly [string, Buffer])[], done: () => boolean): Promise<number> {
  const js = await mqttjs.connectAsync(broker.url, { clean: true, clientId: 'bench-mqttjs' });
  const t0 = performance.now();
  let inflight = 0;
  let wake: (() => void) | undefined;
  for (const [topic, payload] of messages) {
    while (inflight >= 256) await new Promise<void>((r) => (wake = r));
    inflight++;
    js.publish(topic, payload, { qos: 1 }, () => {
      inflight--;
      wake?.();
      wake = undefined;
    });
  }
  await until(done, 120_000);
  const s = (performance.now() - t0) / 1000;
  await js.endAsync();
  return s;
}

/** The bridge's own client publishing the same way (ready-made messages, 256 awaiting PUBACK); seconds until `done()`. */
async function ownClient(messages: (readonly [string, Buffer])[], done: () => boolean): Promise<number> {
  const c = new MqttClient({ url: broker.url, clientId: 'bench-own', clean: true, maxInflight: 256 });
  await c.start();
  await until(() => c.isConnected, 5000);
  const t0 = performance.now();
  const window: Promise<void>[] = [];
  for (const [topic, payload] of messages) {
    window.push(c.publish(topic, payload, { qos: 1 }));
    if (window.length >= 256) await window.shift();
  }
  await until(done, 120_000);
  const s = (performance.now() - t0) / 1000;
  await c.stop();
  return s;
}

/** A publisher (in a thread) and a subscriber on loopback tcp, the subscriber feeding a bridge to Mosquitto. */
async function pipeline(name: string, mqtt: { reconnect?: { min: number; max: number } } = {}, shape: 'sample' | 'device' = 'sample') {
  const worker = new Worker(new URL(import.meta.url), { argv: process.argv.slice(2) }); // the same --samples
  const next = () => new Promise<unknown>((r) => worker.once('message', r));
  const ask = (m: object) => {
    const p = next();
    worker.postMessage(m);
    return p;
  };
  const endpoint = (await next()) as string;
  const sub = new Subscriber();
  sub.start();
  await sub.connect(endpoint);
  await ask({ op: 'wait' });
  const bridge = new Bridge({ mqtt: { url: broker.url, clientId: name, maxInflight: 256, ...mqtt }, node: name, discovery: false, spoolDir: join(dir, `${name}-spool`), shape }, sub);
  await bridge.start();
  const feedDevices = async (rounds: number) => void (await ask({ op: 'devices', rounds }));
  const feed = async (topic: string) => void (await ask({ op: 'feed', topic }));
  const stop = async () => {
    await bridge.stop(2000);
    await sub.stop();
    await ask({ op: 'stop' });
  };
  return { bridge, feed, feedDevices, stop };
}

async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
}

try {
  await broker.start();
  const counter = new MqttClient({ url: broker.url, clientId: 'bench-counter', clean: true });
  await counter.start();
  await counter.subscribe('starling/#', 0);
  counter.on('message', (t, payload) => {
    if (t.includes('/bridge/')) return;
    if (t.startsWith('starling/dev') || t.startsWith('starling/js') && !t.startsWith('starling/js/')) {
      // A device state: each field whose round is newer than the last seen is a sample arrived.
      const st = JSON.parse(payload.toString()) as Record<string, number>;
      let seen = lastSeen.get(t);
      if (!seen) lastSeen.set(t, (seen = new Array<number>(FIELDS).fill(0)));
      for (let f = 0; f < FIELDS; f++) {
        const v = st[`f${f}`] ?? 0;
        if (v > seen[f]!) {
          seen[f] = v;
          arrivedFields++;
        }
      }
    } else received++;
  });

  // 1. End to end through the bridge, one message per sample; then MQTT.js with the same messages.
  const first = await pipeline('bench-bridge');
  await until(() => first.bridge.client.isConnected, 5000);
  let t0 = performance.now();
  await first.feed('bench/value');
  await until(() => received >= N, 120_000);
  let s = (performance.now() - t0) / 1000;
  const bridgeRate = received / s;
  rows.push({ figure: `shape sample: publisher → bridge → Mosquitto → subscriber (${N} samples, QoS 1)`, value: `${Math.round(bridgeRate)} samples/s`, rss: mb() });
  const spooledDuringRun = first.bridge.stats().spooled;
  await first.stop();
  const sampleJson = Buffer.from(JSON.stringify({ value: 21.5, unit: '°C', ts: Date.now(), seq: 123456, publisher: '0'.repeat(32) }));
  received = 0;
  const jsSeconds = await mqttJs(Array.from({ length: N }, () => ['starling/js/value', sampleJson] as const), () => received >= N);
  const jsSampleRate = received / jsSeconds;
  rows.push({ figure: `shape sample: MQTT.js ${MQTTJS_VERSION} publishing the same ${N} JSON states → Mosquitto → subscriber (QoS 1, 256 in flight)`, value: `${Math.round(jsSampleRate)} samples/s`, rss: mb() });
  received = 0;
  const ownSeconds = await ownClient(Array.from({ length: N }, () => ['starling/own/value', sampleJson] as const), () => received >= N);
  const ownRate = received / ownSeconds;
  rows.push({ figure: `shape sample: the bridge's MQTT client publishing the same ${N} JSON states → Mosquitto → subscriber (QoS 1, 256 in flight)`, value: `${Math.round(ownRate)} samples/s`, rss: mb() });

  // 1b. One state per device: DEVICES devices of FIELDS fields, ROUNDS rounds.
  const ROUNDS = Math.max(1, Math.round(N * 4 / (DEVICES * FIELDS)));
  const total = ROUNDS * DEVICES * FIELDS;
  const dev = await pipeline('bench-bridge-device', {}, 'device');
  await until(() => dev.bridge.client.isConnected, 5000);
  arrivedFields = 0;
  lastSeen.clear();
  t0 = performance.now();
  await dev.feedDevices(ROUNDS);
  await until(() => lastSeen.size === DEVICES && [...lastSeen.values()].every((v) => v.every((x) => x === ROUNDS)), 120_000);
  s = (performance.now() - t0) / 1000;
  const deviceRate = arrivedFields / s;
  const ds = dev.bridge.stats();
  rows.push({ figure: `shape device: ${DEVICES} devices × ${FIELDS} fields × ${ROUNDS} rounds (${total} samples) → bridge → Mosquitto → subscriber; ${ds.deviceStates} states, ${ds.coalesced} samples superseded`, value: `${Math.round(deviceRate)} samples/s`, rss: mb() });
  await dev.stop();
  // MQTT.js with the same states: every device's state of every round, all fields new.
  const states: (readonly [string, Buffer])[] = [];
  for (let r = 1; r <= ROUNDS; r++) for (let d = 0; d < DEVICES; d++) {
    const st: Record<string, number> = {};
    for (let f = 0; f < FIELDS; f++) st[`f${f}`] = r;
    st.ts = Date.now();
    states.push([`starling/js${d}`, Buffer.from(JSON.stringify(st))]);
  }
  arrivedFields = 0;
  lastSeen.clear();
  const jsDeviceSeconds = await mqttJs(states, () => arrivedFields >= total);
  const jsDeviceRate = arrivedFields / jsDeviceSeconds;
  rows.push({ figure: `shape device: MQTT.js ${MQTTJS_VERSION} publishing the same ${states.length} device states (${total} samples) → Mosquitto → subscriber`, value: `${Math.round(jsDeviceRate)} samples/s`, rss: mb() });
  ratios.push(
    ['the bridge end to end, shape sample, ÷ MQTT.js publishing its messages', bridgeRate / jsSampleRate],
    ['the bridge\'s MQTT client ÷ MQTT.js, the same ready-made messages', ownRate / jsSampleRate],
    ['the bridge end to end, shape device (samples/s), ÷ MQTT.js publishing one message per sample', deviceRate / jsSampleRate],
    ['the bridge end to end, shape device, ÷ MQTT.js publishing its ready-made device states', deviceRate / jsDeviceRate],
  );

  // 2. Spool writes.
  const payload = Buffer.from(JSON.stringify({ value: 21.5, unit: '°C', ts: Date.now(), seq: 123456, publisher: '0'.repeat(32) }));
  for (const fsync of ['interval', 'always'] as const) {
    const spool = new Spool(join(dir, `spool-${fsync}`), 1024 * 1024 * 1024, fsync);
    spool.open();
    t0 = performance.now();
    for (let i = 0; i < N; i++) {
      spool.append({ topic: 'starling/bench/value', payload, qos: 1, retain: false });
      if (i % 100 === 99) await new Promise((r) => setImmediate(r)); // batches of 100, as a busy bridge makes them
    }
    spool.flush();
    s = (performance.now() - t0) / 1000;
    rows.push({ figure: `spool append, ${payload.length} B payloads, fsync ${fsync === 'always' ? 'after every batch of 100' : 'once a second'}`, value: `${Math.round(N / s)} msgs/s`, rss: mb() });
    spool.close();
  }

  // 3. Spool drain after an outage: fill while the broker is away, then time the catch-up.
  await broker.stop();
  const second = await pipeline('bench-bridge-2', { reconnect: { min: 50, max: 100 } });
  const bridge2 = second.bridge;
  await second.feed('bench/drain');
  await until(() => bridge2.stats().spool.queued >= N, 30_000);
  const queued = bridge2.stats().spool.queued;
  await broker.start();
  await counter.subscribe('starling/#', 0).catch(() => {});
  t0 = performance.now();
  await until(() => bridge2.client.isConnected, 10_000);
  await until(() => bridge2.stats().spool.queued === 0, 300_000);
  s = (performance.now() - t0) / 1000;
  rows.push({ figure: `spool drain into Mosquitto after an outage (${queued} messages, QoS 1, up to 256 awaiting PUBACK)`, value: `${Math.round(queued / s)} msgs/s`, rss: mb() });
  await second.stop();
  await counter.stop();

  if (values.json) process.stdout.write(JSON.stringify({ rows, spooledDuringRun, ratios: Object.fromEntries(ratios) }) + '\n');
  else {
    console.log(`MQTT bridge bench — Node ${process.version}, Mosquitto on loopback, everything in this one process\n`);
    const w = [Math.max(...rows.map((r) => r.figure.length)), 18, 9];
    const line = (c: string[]) => '| ' + c.map((x, i) => x.padEnd(w[i]!)).join(' | ') + ' |';
    console.log(line(['figure', 'rate', 'RSS']));
    console.log('|' + w.map((n) => '-'.repeat(n + 2)).join('|') + '|');
    for (const r of rows) console.log(line([r.figure, r.value, r.rss]));
    console.log('\n| ratio, same broker, same run | × |\n|---|---|');
    for (const [k, v] of ratios) console.log(`| ${k} | ${v.toFixed(2)} |`);
    console.log('aim: the bridge at 100,000 samples/s or more at QoS 1, and ahead of MQTT.js');
  }
} finally {
  await broker.destroy();
  rmSync(dir, { recursive: true, force: true });
}
