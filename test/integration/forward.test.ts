// A command from MQTT for a peer's output goes to the peer as the mesh command (runtime/command.ts), and the
// peer's reply comes back: a refusal or silence reaches the MQTT side as a counted, logged failure.
import { afterEach, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../runtime/config/load.ts';
import { LogRing } from '../../runtime/supervisor/log.ts';
import { ZreNode } from '../../runtime/zre/node.ts';
import { HEADER_OUTPUTS, HEADER_PREFIX } from '../../runtime/telemetry/mesh.ts';
import { encodeReply, parseCommand } from '../../runtime/command.ts';
import { servicesFrom } from '../../app/compose.ts';
import { Supervisor } from '../../runtime/supervisor/supervisor.ts';
import { MqttClient } from '../../services/mqtt-bridge/client.ts';
import { Mosquitto } from '../mosquitto.ts';
import { beaconPort, until, waitFor } from '../helpers.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

it('the peer\'s reply decides: ok passes, a refusal or no answer is a logged command error', async () => {
  const broker = new Mosquitto();
  await broker.start();
  cleanup.push(() => broker.destroy());
  const port = beaconPort();
  const spool = mkdtempSync(join(tmpdir(), 'starling-forward-'));
  cleanup.push(() => rmSync(spool, { recursive: true, force: true }));
  const config = parseConfig(`simulate: true\nweb: { listen: "off" }\nnode: { name: hub, iface: lo, port: ${port} }\nsecurity: { mode: none }\nmqtt: { url: "${broker.url}", spool: "${spool}" }`);
  const log = new LogRing(1000, null);
  const { services, bridge } = servicesFrom(config, log);
  const sup = new Supervisor(services, log);
  await sup.start();
  cleanup.push(() => sup.stop());
  // A peer that plays a device: "valve" answers as told, "mute" never answers.
  const peer = new ZreNode({ iface: 'lo', beaconPort: port, beaconInterval: 100, pingInterval: 100, name: 'pond', headers: { [HEADER_PREFIX]: 'pond/', [HEADER_OUTPUTS]: 'valve,mute' } });
  let answer = { ok: true, value: 1 } as { ok: boolean; value?: number; error?: string };
  peer.on('whisper', (m) => {
    const msg = parseCommand(m.content[0]);
    if ('command' in msg && msg.command.gpio === 'valve') peer.whisper(m.peer, encodeReply({ ...answer, gpio: 'valve' }));
  });
  await peer.start();
  cleanup.push(() => peer.stop());
  await waitFor(peer, 'enter', (p) => p.name === 'hub', 10_000);
  const ha = new MqttClient({ url: broker.url, clientId: 'ha-forward', reconnect: { min: 100, max: 300 } });
  await ha.start();
  cleanup.push(() => ha.stop());
  const stats = () => bridge!.bridge!.stats();
  // The bridge says 'online' once its command subscriptions are in, and announces the peer's outputs.
  const seen: string[] = [];
  ha.on('message', (t, p) => seen.push(`${t} ${p.toString()}`));
  await ha.subscribe('#', 1);
  await until(() => seen.some((l) => l.endsWith(' online')) && seen.some((l) => l.includes('/config ') && l.includes('pond/valve')), 10_000, 'the bridge online and the valve announced');
  await ha.publish('starling/pond/valve/set', '1', { qos: 1 });
  await until(() => stats().commands === 1, 5000, 'the first command');
  await new Promise((r) => setTimeout(r, 300)); // the peer's ok comes in a few ms; a failure would be counted by now
  expect(stats().commandErrors).toBe(0);
  answer = { ok: false, error: 'valve stuck' };
  await ha.publish('starling/pond/valve/set', '0', { qos: 1 });
  await until(() => stats().commandErrors === 1, 5000, 'the refusal counted');
  expect(log.tail(100).some((e) => e.service === 'mqtt' && /pond refused valve=0: valve stuck/.test(e.msg))).toBe(true);
  await ha.publish('starling/pond/mute/set', '1', { qos: 1 });
  await until(() => stats().commandErrors === 2, 8000, 'the silence counted');
  expect(log.tail(100).some((e) => e.service === 'mqtt' && /no answer from pond within 5 s/.test(e.msg))).toBe(true);
}, 30_000);
