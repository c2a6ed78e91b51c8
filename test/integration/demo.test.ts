// The README's first command: `starling demo` — nodes on loopback that meet, shout, whisper and leave.
import { expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { beaconPort } from '../helpers.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

it('starling demo: three nodes meet, shout to the group, whisper, and see one leave', () => {
  execFileSync(process.execPath, [`${root}/image/build.mjs`]);
  const out = execFileSync(process.execPath, [`${root}/dist/starling.cjs`, 'demo', '--seconds', '3', '--port', String(beaconPort()), '--json'], { encoding: 'utf8', timeout: 30_000 });
  const events = out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const of = (node: string, event: string) => events.filter((e) => e.node === node && e.event === event);
  for (const node of ['alpha', 'bravo', 'charlie']) {
    expect(of(node, 'ENTER')).toHaveLength(2);
    expect(of(node, 'SHOUT')).toHaveLength(2);
    expect(of(node, 'WHISPER')).toHaveLength(1);
  }
  expect(of('bravo', 'EXIT')[0]).toMatchObject({ name: 'alpha', reason: 'leaving' });
  expect(events[events.length - 1]).toMatchObject({ node: 'demo', note: 'stopped; dropped or malformed messages: 0' });
});
