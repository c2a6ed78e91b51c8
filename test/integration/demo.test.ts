// The README's first command: `starling demo` — three simulated devices and a hub bridging them to the embedded
// MQTT broker; the same check runs against the x64 single executable in test/image.
import { it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { checkDemo } from '../demo-check.ts';
import { beaconPort, freeTcpPort } from '../helpers.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

it('starling demo: devices meet the hub, states and discovery reach the broker, an MQTT command switches a fan', async () => {
  const mqtt = `127.0.0.1:${await freeTcpPort()}`;
  const out = execFileSync(process.execPath, [`${root}/dist/starling.cjs`, 'demo', '--seconds', '8', '--web', '127.0.0.1:0', '--port', String(beaconPort()), '--mqtt', mqtt, '--json'], { encoding: 'utf8', timeout: 60_000 });
  checkDemo(out);
}, 90_000);
