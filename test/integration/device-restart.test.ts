// The bridge follows its own device across a restart of the device service (the D-Bus `restart device`, or a
// device that failed): the new device has a new node and publisher at a new endpoint, and the bridge must not
// stay "running" on the old one, forwarding nothing. Found by the board boot test (test/board/).
import { afterEach, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../runtime/config/load.ts';
import { LogRing } from '../../runtime/supervisor/log.ts';
import { servicesFrom } from '../../app/compose.ts';
import { Supervisor } from '../../runtime/supervisor/supervisor.ts';
import { MqttClient } from '../../services/mqtt-bridge/client.ts';
import { Mosquitto } from '../mosquitto.ts';
import { beaconPort, until } from '../helpers.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

it('after the device service restarts, the bridge is restarted onto the new device and its samples reach the broker again', async () => {
  const broker = new Mosquitto();
  await broker.start();
  cleanup.push(() => broker.destroy());
  const spool = mkdtempSync(join(tmpdir(), 'starling-restart-'));
  cleanup.push(() => rmSync(spool, { recursive: true, force: true }));
  const config = parseConfig(`simulate: true
web: { listen: "off" }
node: { name: board, iface: lo, port: ${beaconPort()} }
security: { mode: none }
telemetry: { prefix: board/ }
sensors:
  - { platform: sim, name: air, interval: 100ms }
mqtt: { url: "${broker.url}", spool: "${spool}" }`);
  const log = new LogRing(1000, null);
  const { services } = servicesFrom(config, log);
  const sup = new Supervisor(services, log);
  await sup.start();
  cleanup.push(() => sup.stop());
  const ha = new MqttClient({ url: broker.url, clientId: 'ha-restart', reconnect: { min: 100, max: 300 } });
  await ha.start();
  cleanup.push(() => ha.stop());
  const states: { publisher: string; seq: number }[] = [];
  ha.on('message', (t, p) => {
    if (t === 'starling/board/air') states.push(JSON.parse(p.toString()) as { publisher: string; seq: number });
  });
  await ha.subscribe('starling/board/air', 1);
  await until(() => states.length >= 3, 10_000, 'samples before the restart');
  const first = states[0]!.publisher;

  await sup.restartService('device');
  // The bridge notices (unhealthy: the device it follows is gone), is restarted, and follows the new publisher.
  await until(() => states.some((s) => s.publisher !== first), 15_000, 'a sample of the restarted device on the broker');
  const row = (name: string) => sup.list().find((s) => s.name === name)!;
  expect(row('device').restarts).toBe(1);
  expect(row('mqtt').restarts).toBeGreaterThanOrEqual(1);
  await until(() => row('mqtt').state === 'running' && row('mqtt').healthy, 10_000, 'the bridge healthy again');
  const after = states.filter((s) => s.publisher !== first).length;
  await until(() => states.filter((s) => s.publisher !== first).length >= after + 5, 5000, 'samples keep coming');
  expect(log.tail(2000).some((e) => e.service === 'supervisor' && /mqtt/.test(e.msg) && /device restarted/.test(e.msg))).toBe(true);
}, 40_000);
