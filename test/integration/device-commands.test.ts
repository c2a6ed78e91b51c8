// Mesh commands to a running device (simulated lines, real ZRE sockets on loopback): only exactly 0 or 1
// switches an output; every other value is refused with a reason, counted, and logged (rate-limited).
import { afterEach, expect, it } from 'vitest';
import { parseConfig } from '../../runtime/config/load.ts';
import { Device } from '../../services/device.ts';
import { ZreNode } from '../../runtime/zre/node.ts';
import { beaconPort, waitFor } from '../helpers.ts';

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

it('a command sets an output only with "set" exactly 0 or 1; "1", true, [1] and 2 are refused with a reason', async () => {
  const port = beaconPort();
  const config = parseConfig(`simulate: true\nweb: { listen: "off" }\nnode: { name: plant, iface: lo, port: ${port} }\nsecurity: { mode: none }\ngpio:\n  - { name: pump, pin: GPIO17, mode: output }`);
  const logged: string[] = [];
  const device = new Device(config, (_level, msg) => logged.push(msg));
  await device.start();
  cleanup.push(() => device.stop());
  const viewer = new ZreNode({ iface: 'lo', beaconPort: port, beaconInterval: 100, pingInterval: 100, name: 'viewer' });
  await viewer.start();
  cleanup.push(() => viewer.stop());
  const [peer] = await waitFor(viewer, 'enter', (p) => p.name === 'plant');
  const ask = async (command: string) => {
    const reply = waitFor(viewer, 'whisper', (m) => m.peer === peer.peer);
    viewer.whisper(peer.peer, command);
    return JSON.parse(String((await reply)[0].content[0])) as { ok: boolean; value?: number; error?: string };
  };
  for (const bad of ['"1"', 'true', '[1]', '2', '"on"', 'null']) {
    const r = await ask(`{"gpio":"pump","set":${bad}}`);
    expect(r.ok).toBe(false);
    expect(r.error).toMatch(/"set" must be 0 or 1, got /);
  }
  expect(device.commandErrors).toBe(6);
  expect((await ask('{"gpio":"pump"}')).value).toBe(0); // none of them switched it
  expect(await ask('{"gpio":"pump","set":1}')).toMatchObject({ ok: true, value: 1 });
  expect(await ask('{"gpio":"pump","set":0}')).toMatchObject({ ok: true, value: 0 });
  // One log line for the peer, however many refusals.
  expect(logged.filter((l) => l.includes('mesh command from viewer refused'))).toHaveLength(1);
});
