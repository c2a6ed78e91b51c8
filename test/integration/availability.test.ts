// Home Assistant availability per device (as Zigbee2MQTT does it): a hub bridging the loopback mesh to a real
// Mosquitto announces a peer's entities with two availability topics — the bridge's and the peer's own
// (`starling/shed/@node/availability`, retained) — and the peer's flips to offline when it leaves the mesh
// (EXIT) and back to online when it returns. The hub's own entities follow the bridge only. A node's status
// topics (@node/…) are announced as diagnostic entities.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../runtime/config/load.ts';
import { LogRing } from '../../runtime/supervisor/log.ts';
import { Supervisor } from '../../runtime/supervisor/supervisor.ts';
import { servicesFrom } from '../../app/compose.ts';
import { MqttClient } from '../../services/mqtt-bridge/client.ts';
import { Mosquitto } from '../mosquitto.ts';
import { beaconPort, until } from '../helpers.ts';

const port = beaconPort();
const broker = new Mosquitto();
const dir = mkdtempSync(join(tmpdir(), 'starling-avail-'));
const sups: Supervisor[] = [];
let shed: Supervisor | undefined;
let watcher: MqttClient;
const got = new Map<string, string>();

async function device(name: string, extra: string): Promise<Supervisor> {
  const config = parseConfig(`simulate: true
node: { name: ${name}, iface: lo, port: ${port} }
security: { mode: none }
telemetry: { prefix: ${name}/ }
web: { listen: "off" }
fleet: { status_interval: 500ms }
${extra}
sensors:
  - { platform: sim, name: air, interval: 200ms, unit: "°C" }
`);
  const log = new LogRing(1000, null);
  const c = servicesFrom(config, log);
  const sup = new Supervisor(c.services, log);
  c.fleet.supervisor = sup;
  sups.push(sup);
  await sup.start();
  return sup;
}

beforeAll(async () => {
  await broker.start();
  watcher = new MqttClient({ url: broker.url, clientId: 'ha', reconnect: { min: 100, max: 300 } });
  await watcher.start();
  watcher.on('message', (t, p) => got.set(t, p.toString()));
  await watcher.subscribe('#', 1);
  await device('hub', `mqtt: { url: "${broker.url}", spool: "${join(dir, 'spool')}" }`);
  shed = await device('shed', '');
}, 30_000);

afterAll(async () => {
  for (const s of sups) await s.stop();
  await watcher?.stop();
  await broker.destroy();
  rmSync(dir, { recursive: true, force: true });
});

const config = (topic: string) => JSON.parse(got.get(topic) ?? 'null') as Record<string, unknown> | null;

it('a peer\'s entities name its own availability, online while it is on the mesh', async () => {
  await until(() => got.get('starling/shed/@node/availability') === 'online' && config('homeassistant/sensor/starling_shed_air/config') !== null, 15_000, 'shed online and announced');
  expect(config('homeassistant/sensor/starling_shed_air/config')).toMatchObject({
    availability: [
      { topic: 'starling/bridge/hub/status', payload_available: 'online', payload_not_available: 'offline' },
      { topic: 'starling/shed/@node/availability', payload_available: 'online', payload_not_available: 'offline' },
    ],
    availability_mode: 'all',
  });
  await until(() => config('homeassistant/sensor/starling_hub_air/config') !== null, 10_000, 'the hub\'s own sensor');
  const own = config('homeassistant/sensor/starling_hub_air/config')!;
  expect(own).toMatchObject({ availability_topic: 'starling/bridge/hub/status' });
  expect(own.availability).toBeUndefined();
  await until(() => config('homeassistant/sensor/starling_shed_-node-rss/config') !== null, 10_000, 'shed\'s status announced');
  expect(config('homeassistant/sensor/starling_shed_-node-rss/config')).toMatchObject({ entity_category: 'diagnostic', unit_of_measurement: 'MB', state_topic: 'starling/shed/@node/rss' });
});

it('offline when the peer leaves the mesh, online when it is back', async () => {
  await shed!.stop();
  sups.splice(sups.indexOf(shed!), 1);
  await until(() => got.get('starling/shed/@node/availability') === 'offline', 30_000, 'shed offline');
  // The bridge itself is still there.
  expect(got.get('starling/bridge/hub/status')).toBe('online');
  shed = await device('shed', '');
  await until(() => got.get('starling/shed/@node/availability') === 'online', 15_000, 'shed online again');
}, 60_000);
