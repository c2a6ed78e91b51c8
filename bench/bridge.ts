/**
 * MQTT bridge figures, printed as a table (or --json), against a real Mosquitto on loopback:
 *   - samples/s from a telemetry publisher through the bridge into Mosquitto, counted by an MQTT subscriber;
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

const { values } = parseArgs({ options: { json: { type: 'boolean' }, samples: { type: 'string' } } });
const N = Number(values.samples ?? 50_000);
const rows: { figure: string; value: string; rss: string }[] = [];
const mb = () => `${(process.memoryUsage().rss / 1048576).toFixed(1)} MB`;
const dir = mkdtempSync(join(tmpdir(), 'starling-bench-bridge-'));
const broker = new Mosquitto();

/** A publisher and a subscriber on loopback tcp, the subscriber feeding a bridge to Mosquitto. */
async function pipeline(name: string, mqtt: { reconnect?: { min: number; max: number } } = {}) {
  const pub = new Publisher({ endpoints: ['tcp://127.0.0.1:*'] });
  await pub.start();
  const sub = new Subscriber();
  sub.start();
  await sub.connect(pub.endpoints[0]!);
  await pub.waitForSubscriber('x', 5000);
  const bridge = new Bridge({ mqtt: { url: broker.url, clientId: name, maxInflight: 256, ...mqtt }, node: name, discovery: false, spoolDir: join(dir, `${name}-spool`) }, sub);
  await bridge.start();
  const feed = async (topic: string) => {
    for (let i = 0; i < N; i++) {
      if (!pub.publish(topic, i)) await pub.drained();
      if (i % 1000 === 999) await new Promise((r) => setImmediate(r));
    }
    pub.flushAll();
  };
  const stop = async () => {
    await bridge.stop(2000);
    await sub.stop();
    await pub.stop(100);
  };
  return { bridge, feed, stop };
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
  let received = 0;
  counter.on('message', (t) => {
    if (!t.includes('/bridge/')) received++;
  });

  // 1. End to end through the bridge.
  const first = await pipeline('bench-bridge');
  await until(() => first.bridge.client.isConnected, 5000);
  let t0 = performance.now();
  await first.feed('bench/value');
  await until(() => received >= N, 120_000);
  let s = (performance.now() - t0) / 1000;
  rows.push({ figure: `publisher → bridge → Mosquitto → subscriber (${N} samples, QoS 1)`, value: `${Math.round(received / s)} samples/s`, rss: mb() });
  const spooledDuringRun = first.bridge.stats().spooled;
  await first.stop();

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

  if (values.json) process.stdout.write(JSON.stringify({ rows, spooledDuringRun }) + '\n');
  else {
    console.log(`MQTT bridge bench — Node ${process.version}, Mosquitto on loopback, everything in this one process\n`);
    const w = [Math.max(...rows.map((r) => r.figure.length)), 18, 9];
    const line = (c: string[]) => '| ' + c.map((x, i) => x.padEnd(w[i]!)).join(' | ') + ' |';
    console.log(line(['figure', 'rate', 'RSS']));
    console.log('|' + w.map((n) => '-'.repeat(n + 2)).join('|') + '|');
    for (const r of rows) console.log(line([r.figure, r.value, r.rss]));
  }
} finally {
  await broker.destroy();
  rmSync(dir, { recursive: true, force: true });
}
