// Two hosts: a device running a simulated sensor and a GPIO output (`starling run`) on one, `starling tail`
// and a mesh command on the other. Needs root (network namespaces); in CI it may not be skipped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, Segment, CLI, rootTests, requireRootAndBuild } from './netns.ts';

const cli = CLI;
const runHere = rootTests('the two-host device test');

describe.runIf(runHere)('a device and a viewer on two hosts', () => {
  const seg = new Segment();
  const agents: Agent[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'starling-device-'));
  const config = join(dir, 'device.yaml');

  beforeAll(() => {
    requireRootAndBuild();
    seg.create(2);
    writeFileSync(config, [
      'simulate: true',
      'node: { name: greenhouse }',
      'security: { mode: none }',
      'telemetry: { prefix: greenhouse/ }',
      'sensors:',
      '  - { platform: sim, name: air, interval: 100ms, min: 15, max: 25, period: 2s, unit: "°C" }',
      '  - { platform: ds18b20, name: soil, address: 28-0316a2795aff, interval: 200ms }',
      'gpio:',
      '  - { name: pump, pin: GPIO17, mode: output, initial: 0 }',
    ].join('\n'));
  });

  afterAll(async () => {
    for (const a of agents) a.kill('SIGKILL');
    await Promise.all(agents.map((a) => a.exited()));
    seg.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the viewer sees the simulated sensors through the mesh, and switches the pump by WHISPER', async () => {
    const device = new Agent('device', seg.hosts[0]!, cli, ['--config', config], ['run']);
    agents.push(device);
    const tail = new Agent('tail', seg.hosts[1]!, cli, ['greenhouse/', '--json'], ['tail']);
    agents.push(tail);
    const air = await tail.waitFor((e) => e.topic === 'greenhouse/air' && (e.seq as number) >= 5, 20_000, 'five samples of greenhouse/air');
    expect(air).toMatchObject({ unit: '°C', status: 0 });
    expect((air.values as number[])[0]).toBeGreaterThanOrEqual(15);
    expect((air.values as number[])[0]).toBeLessThanOrEqual(25);
    // The twin of a DS18B20 keeps the real sensor's topic and unit.
    expect(await tail.waitFor((e) => e.topic === 'greenhouse/soil', 10_000, 'greenhouse/soil')).toMatchObject({ unit: '°C', status: 0 });
    expect(await tail.waitFor((e) => e.topic === 'greenhouse/pump', 10_000, 'the pump\'s initial state')).toMatchObject({ values: [0] });

    // A mesh command from a third node (on the viewer's host) sets the pump; the viewer sees the change.
    const out = execFileSync('ip', ['netns', 'exec', seg.hosts[1]!, process.execPath, cli, 'whisper', 'greenhouse', '{"gpio":"pump","set":1}', '--json'], { encoding: 'utf8' });
    expect(JSON.parse(out)).toMatchObject({ name: 'greenhouse' });
    expect(await tail.waitFor((e) => e.topic === 'greenhouse/pump' && (e.values as number[])[0] === 1, 10_000, 'pump = 1')).toMatchObject({ status: 0 });
    expect(tail.events.filter((e) => e.event === 'GAP')).toEqual([]);

    device.kill('SIGTERM');
    expect(await device.exited()).toBe(0);
  }, 60_000);
});
