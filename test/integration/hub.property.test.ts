// A property test against a whole hub: `starling run` bridging the mesh to a real Mosquitto, while peers with
// random HELLO headers join and leave and send random telemetry batches (topics with wildcards, NUL, control
// characters, invalid UTF-8, odd units and values). The hub never exits, Mosquitto never disconnects it, and
// an honest device's telemetry and the hub's own keep reaching the broker.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { XPublisher } from 'zeromq';
import { ZreNode } from '../../runtime/zre/node.ts';
import { Publisher } from '../../runtime/telemetry/publisher.ts';
import { advertise, HEADER_ENDPOINTS, HEADER_EPGM, HEADER_INPUTS, HEADER_OUTPUTS, HEADER_PREFIX, HEADER_SNAPSHOT } from '../../runtime/telemetry/mesh.ts';
import { BatchWriter } from '../../runtime/telemetry/sample.ts';
import { Mosquitto } from '../mosquitto.ts';
import { MqttClient } from '../../services/mqtt-bridge/client.ts';
import { beaconPort, until } from '../helpers.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = `${root}/dist/starling.cjs`;

describe('a hub under random peers and batches', () => {
  const port = beaconPort();
  const dir = mkdtempSync(join(tmpdir(), 'starling-hub-prop-'));
  const broker = new Mosquitto();
  let hub: ChildProcess;
  let watcher: MqttClient;
  const got: string[] = [];

  beforeAll(async () => {
    await broker.start();
    const file = join(dir, 'hub.yaml');
    writeFileSync(file, [
      'simulate: true', 'web: { listen: "off" }', `node: { name: hub, iface: lo, port: ${port} }`, 'security: { mode: none }', 'telemetry: { prefix: hub/ }',
      `mqtt: { url: "${broker.url}", spool: "${join(dir, 'spool')}" }`,
      'sensors:', '  - { platform: sim, name: beat, interval: 100ms }',
    ].join('\n'));
    hub = spawn(process.execPath, [cli, 'run', '--config', file], { env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent' }, stdio: ['ignore', 'ignore', 'inherit'] });
    watcher = new MqttClient({ url: broker.url, clientId: 'prop-watcher', reconnect: { min: 100, max: 300 } });
    await watcher.start();
    watcher.on('message', (t) => got.push(t));
    await watcher.subscribe('starling/#', 1);
    await until(() => got.includes('starling/hub/beat'), 15_000, 'the hub bridging');
  });

  afterAll(async () => {
    await watcher?.stop();
    hub?.kill('SIGKILL');
    await broker.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const text = fc.oneof(
    fc.constantFrom('a/#', '+/b', '#', '+', '$SYS/x', 'x\u0000y', 'bell\u0007', 'c1\u0085', '', ' ', 'ok/name', 'pump,fan', 'A,B,,c', '239.1.1.1:1', 'tcp://127.0.0.1:1'),
    fc.string({ unit: 'binary', maxLength: 60 }),
    fc.string({ unit: 'grapheme-ascii', maxLength: 6000 }),
  );
  const headerKey = fc.oneof(fc.constantFrom(HEADER_PREFIX, HEADER_OUTPUTS, HEADER_INPUTS, HEADER_EPGM, HEADER_SNAPSHOT), fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 20 }));
  const topic = fc.oneof(text.map((s) => Buffer.from(s)), fc.uint8Array({ minLength: 1, maxLength: 300 }).map((u) => Buffer.from(u)));
  const sample = fc.record({ topic, unit: fc.string({ unit: 'binary', maxLength: 40 }), values: fc.array(fc.double(), { minLength: 1, maxLength: 3 }), base: fc.oneof(fc.constant(Date.now()), fc.double()) });

  it('never exits, is never disconnected by the broker, and honest telemetry keeps flowing', async () => {
    const writer = new BatchWriter(8192);
    let runs = 0;
    await fc.assert(fc.asyncProperty(
      fc.dictionary(headerKey, text, { maxKeys: 6 }), fc.boolean(), fc.array(sample, { maxLength: 12 }),
      async (headers, advertiseTelemetry, samples) => {
        runs++;
        const raw = new XPublisher({ linger: 0 });
        await raw.bind('tcp://127.0.0.1:*');
        const node = new ZreNode({ iface: 'lo', beaconPort: port, beaconInterval: 100, pingInterval: 100, name: `liar${runs}` });
        try {
          for (const [k, v] of Object.entries(headers)) node.setHeader(k, v);
          if (advertiseTelemetry) node.setHeader(HEADER_ENDPOINTS, raw.lastEndpoint!);
          await node.start();
          if (advertiseTelemetry) {
            // Wait (a little) for the hub to subscribe; its HELLO headers may make it refuse to follow.
            raw.receiveTimeout = 1500;
            await raw.receive().catch(() => {});
          }
          for (const s of samples) {
            try {
              writer.begin('x', Buffer.alloc(16, runs & 0xff), 0, s.base, s.unit, s.values.length);
              writer.add(s.base, 0, s.values);
            } catch {
              continue; // a unit over 255 bytes cannot even be written
            }
            await raw.send([s.topic, writer.finish()]);
          }
          await new Promise((r) => setTimeout(r, 100));
        } finally {
          await node.stop();
          raw.close();
        }
        expect(hub.exitCode).toBeNull();
      },
    ), { numRuns: 30, interruptAfterTimeLimit: 60_000 });
    expect(runs).toBeGreaterThan(10);

    // An honest device joins afterwards: its telemetry is bridged.
    const pub = new Publisher({ endpoints: ['tcp://127.0.0.1:*'], snapshotEndpoint: 'tcp://127.0.0.1:*', batchSamples: 1 });
    await pub.start();
    const honest = new ZreNode({ iface: 'lo', beaconPort: port, beaconInterval: 100, pingInterval: 100, name: 'honest' });
    advertise(honest, pub, undefined, { prefix: 'honest/', outputs: [], inputs: [] });
    await honest.start();
    try {
      await pub.waitForSubscriber('honest/', 10_000);
      const timer = setInterval(() => pub.publish('honest/temp', 20.5, { unit: '°C' }), 50);
      await until(() => got.includes('starling/honest/temp'), 10_000, 'the honest device at the broker').finally(() => clearInterval(timer));
      const beats = got.filter((t) => t === 'starling/hub/beat').length;
      await until(() => got.filter((t) => t === 'starling/hub/beat').length > beats + 3, 5000, 'the hub\'s own telemetry going on');
    } finally {
      await honest.stop();
      await pub.stop(100);
    }
    expect(hub.exitCode).toBeNull();
    // Mosquitto saw the hub connect once and never dropped it.
    const log = broker.log();
    expect(log.match(/New client connected from .* as starling-hub /g) ?? []).toHaveLength(1);
    expect(log).not.toMatch(/starling-hub.*disconnected|Client starling-hub .*(error|closed)/);
    const random = new Set(got.filter((t) => !t.startsWith('starling/hub/') && !t.startsWith('starling/honest/') && !t.startsWith('starling/bridge/')));
    console.log(`hub property test: ${runs} hostile peers; ${random.size} of their random topics were valid and bridged`);
    // Nothing with a wildcard or a control character ever became a topic.
    expect(got.filter((t) => /[+#\u0000-\u001f\u007f-\u009f]/.test(t))).toEqual([]);
  }, 120_000);
});
