// The CLI's small promises: `listen --stdin` waits for room instead of refusing piped whispers, and
// `--version` / `-V` print the version.
import { afterEach, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ZreNode } from '../../runtime/zre/node.ts';
import { beaconPort, processFixture, until } from '../helpers.ts';
import pkg from '../../package.json' with { type: 'json' };

const cli = fileURLToPath(new URL('../../dist/starling.cjs', import.meta.url));
const { track } = processFixture('starling-listen-');
const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0)) await c();
});

it('listen --stdin delivers 70,000 piped whispers: a full send queue makes it wait, not refuse', async () => {
  const port = beaconPort();
  const receiver = new ZreNode({ iface: 'lo', beaconPort: port, beaconInterval: 100, pingInterval: 100, name: 'sink' });
  let got = 0;
  receiver.on('whisper', () => got++);
  await receiver.start();
  cleanup.push(() => receiver.stop());
  const p = track(spawn(process.execPath, [cli, 'listen', '--iface', 'lo', '--port', String(port), '--stdin', '--json'], { stdio: ['pipe', 'pipe', 'inherit'] }));
  const events: { event: string; name?: string; error?: string }[] = [];
  createInterface({ input: p.stdout! }).on('line', (l) => events.push(JSON.parse(l)));
  await until(() => events.some((e) => e.event === 'ENTER' && e.name === 'sink'), 10_000, 'listen to meet the sink');
  const N = 70_000;
  const text = Array.from({ length: N }, (_, i) => `whisper sink message ${i}`).join('\n') + '\n';
  p.stdin!.write(text);
  await until(() => got === N, 60_000, `${N} whispers (got ${got})`);
  expect(events.filter((e) => e.event === 'ERROR')).toEqual([]);
  p.stdin!.end();
}, 90_000);

it('--version and -V print the version', () => {
  for (const flag of ['--version', '-V']) {
    const r = spawnSync(process.execPath, [cli, flag], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`starling ${pkg.version}\n`);
  }
});
