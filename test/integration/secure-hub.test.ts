// A secure hub (issue 13, point 8) with real sockets and Mosquitto: a telemetry prefix and its outputs belong
// to the key that first announced them. A second trusted key announcing the same ones is refused and counted
// (its telemetry is not followed, its outputs not routed), and commands go to the owner only, also after it left.
import { afterEach, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { curveKeyPair } from 'zeromq';
import { parseConfig } from '../../runtime/config/load.ts';
import { LogRing } from '../../runtime/supervisor/log.ts';
import { ZreNode } from '../../runtime/zre/node.ts';
import { HEADER_OUTPUTS, HEADER_PREFIX } from '../../runtime/telemetry/mesh.ts';
import { createIdentity } from '../../runtime/security/identity.ts';
import { TrustStore } from '../../runtime/security/trust.ts';
import { openSecurity } from '../../runtime/security/context.ts';
import { servicesFrom } from '../../app/compose.ts';
import { Supervisor } from '../../runtime/supervisor/supervisor.ts';
import { MqttClient } from '../../services/mqtt-bridge/client.ts';
import { Mosquitto } from '../mosquitto.ts';
import { beaconPort, until, waitFor } from '../helpers.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

it('the first key to announce a prefix and its outputs owns them; another key is refused, now and after the owner left', async () => {
  const broker = new Mosquitto();
  await broker.start();
  cleanup.push(() => broker.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'starling-secure-hub-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const [owner, other] = [curveKeyPair(), curveKeyPair()];
  const hubId = createIdentity(join(dir, 'hub-id'));
  const trust = new TrustStore(join(dir, 'hub-trusted'));
  trust.add(owner.publicKey, { name: 'pond' });
  trust.add(other.publicKey, { name: 'other' });
  const port = beaconPort();
  const config = parseConfig(`simulate: true
web: { listen: "off" }
node: { name: hub, iface: lo, port: ${port} }
security: { mode: curve, identity: "${join(dir, 'hub-id')}", trusted: "${join(dir, 'hub-trusted')}" }
mqtt: { url: "${broker.url}", spool: "${join(dir, 'spool')}" }`);
  const log = new LogRing(1000, null);
  const { services, bridge } = servicesFrom(config, log, openSecurity(config.security, { create: false }));
  const sup = new Supervisor(services, log);
  await sup.start();
  cleanup.push(() => sup.stop());

  // Both peers trust the hub; both advertise prefix pond/ and an output valve.
  const commands: string[] = [];
  const peer = (name: string, keys: { publicKey: string; secretKey: string }) => {
    const node = new ZreNode({
      iface: 'lo', beaconPort: port, beaconInterval: 100, name, headers: { [HEADER_PREFIX]: 'pond/', [HEADER_OUTPUTS]: 'valve' },
      curve: { ...keys, allows: (k) => k === hubId.publicKey },
    });
    node.on('whisper', (m) => commands.push(`${name} ${String(m.content[0])}`));
    cleanup.push(() => node.stop());
    return node;
  };
  const a = peer('pond', owner);
  await a.start();
  await waitFor(a, 'enter', (p) => p.name === 'hub', 10_000);
  const stats = () => bridge!.stats();
  await until(() => bridge?.bridge?.client.isConnected === true, 10_000, 'the bridge');
  const b = peer('pond-too', other);
  await b.start();
  await waitFor(b, 'enter', (p) => p.name === 'hub', 10_000);
  await until(() => (stats()['mesh.pinsRefused'] ?? 0) >= 2, 5000, 'the second claim refused (prefix and outputs)');
  expect(log.tail(200).some((e) => /pond-too.*belong(s)? to another key/.test(e.msg))).toBe(true);

  // Home Assistant's command reaches the owner only.
  const ha = new MqttClient({ url: broker.url, clientId: 'ha-secure', reconnect: { min: 100, max: 300 } });
  await ha.start();
  cleanup.push(() => ha.stop());
  await ha.publish('starling/pond/valve/set', '1', { qos: 1 });
  await until(() => commands.length >= 1, 5000, 'the command');
  expect(commands).toEqual(['pond {"gpio":"valve","set":1}']);

  // The owner leaves: the name stays its own. A command now goes to nobody (counted), not to the newcomer.
  await a.stop();
  await until(() => bridge!.stats()['bridge.commands'] === 1 && !(bridge as unknown as { remote: Map<string, unknown> }).remote.has('pond/valve'), 5000, 'the owner gone');
  await ha.publish('starling/pond/valve/set', '0', { qos: 1 });
  await until(() => (stats()['bridge.commandErrors'] ?? 0) >= 1, 5000, 'the command refused');
  await new Promise((r) => setTimeout(r, 300));
  expect(commands).toEqual(['pond {"gpio":"valve","set":1}']);
}, 30_000);
