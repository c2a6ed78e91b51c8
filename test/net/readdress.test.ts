// A device's address changes while it runs (DHCP hands out another): within 5 s a peer lists it at the new
// endpoint and `tail` keeps receiving its samples, without a restart of either. Needs root; in CI it may not
// be skipped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, CLI, Segment, rootTests, requireRootAndBuild, type Event } from './netns.ts';
import { processFixture } from '../helpers.ts';

const runHere = rootTests('the address-change test');

describe.runIf(runHere)('an address that changes under a running device', () => {
  const seg = new Segment();
  const { track, tempDir, lines } = processFixture('starling-readdress-');
  const agents: Agent[] = [];

  beforeAll(() => {
    requireRootAndBuild();
    seg.create(2);
  });

  afterAll(async () => {
    for (const a of agents) a.kill('SIGKILL');
    await Promise.all(agents.map((a) => a.exited()));
    seg.destroy();
  });

  it('is followed: the inbox and telemetry move, peers see the new endpoint within 5 s, tail goes on', async () => {
    const dir = tempDir();
    const config = join(dir, 'starling.yaml');
    writeFileSync(config, [
      'simulate: true',
      'node: { name: mover, iface: eth0 }',
      'security: { mode: none }',
      'telemetry: { prefix: mover/ }',
      'sensors:',
      '  - { platform: sim, name: level, interval: 100ms, waveform: ramp, min: 0, max: 100, period: 60s }',
      'gpio:',
      '  - { name: pump, pin: GPIO17, mode: output }',
    ].join('\n'));
    const run = track(spawn('ip', ['netns', 'exec', seg.hosts[0]!, process.execPath, CLI, 'run', '--config', config], {
      env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent' }, stdio: ['ignore', 'pipe', 'inherit'],
    }));
    const log = lines(run);
    const listen = new Agent('listen', seg.hosts[1]!, CLI, ['--name', 'watcher']);
    const tail = new Agent('tail', seg.hosts[1]!, CLI, ['mover/', '--json'], ['tail']);
    agents.push(listen, tail);
    const first = await listen.waitFor((e: Event) => e.event === 'ENTER' && e.name === 'mover', 15_000, 'ENTER mover');
    expect(first.endpoint).toMatch(/^tcp:\/\/10\.231\.0\.1:\d+$/);
    await tail.waitFor((e: Event) => e.topic === 'mover/level', 15_000, 'samples before the change');
    // The pump is on before the change; it must stay on (the device is not restarted).
    listen.command('whisper mover {"gpio":"pump","set":1}');
    await listen.waitFor((e: Event) => e.event === 'WHISPER' && JSON.stringify(e.content).includes('"value\\":1'), 10_000, 'the pump on');

    const from = tail.events.length;
    const t0 = Date.now();
    execFileSync('ip', ['-n', seg.hosts[0]!, 'addr', 'del', `${seg.address(1)}/24`, 'dev', 'eth0']);
    execFileSync('ip', ['-n', seg.hosts[0]!, 'addr', 'add', '10.231.0.21/24', 'brd', '+', 'dev', 'eth0']);
    const moved = await listen.waitFor((e: Event) => e.event === 'ENTER' && e.name === 'mover' && String(e.endpoint).startsWith('tcp://10.231.0.21:'), 10_000, 'ENTER at the new address');
    const took = Date.now() - t0;
    expect(took).toBeLessThan(5000);
    const after = await tail.waitFor((e: Event) => tail.events.indexOf(e) >= from && e.topic === 'mover/level' && Number(e.ts) > t0 + 500, 10_000, 'samples after the change');
    expect(after.topic).toBe('mover/level');
    console.log(`address change → ENTER at the new endpoint after ${took} ms`);
    expect(moved.endpoint).not.toBe(first.endpoint);
    // The same node (UUID) and process; the pump still on; the move was logged.
    expect(moved.peer).toBe(first.peer);
    expect(run.exitCode).toBeNull();
    expect(log.some((l) => l.includes('address changed from 10.231.0.1 to 10.231.0.21'))).toBe(true);
    listen.command('whisper mover {"gpio":"pump"}');
    await listen.waitFor((e: Event) => listen.events.indexOf(e) > listen.events.indexOf(moved) && e.event === 'WHISPER' && JSON.stringify(e.content).includes('"value\\":1'), 10_000, 'the pump still on');
    const gaps = tail.events.filter((e) => e.event === 'GAP');
    expect(gaps.length).toBeLessThanOrEqual(1);
  }, 60_000);

  it('several addresses on one interface: the primary is taken, deterministically; --iface IP picks another', () => {
    const host = seg.hosts[1]!;
    execFileSync('ip', ['-n', host, 'addr', 'add', '10.231.0.32/24', 'dev', 'eth0']); // a secondary beside .2
    try {
      const on = (iface: string) => spawnSyncStderr(host, iface);
      for (let i = 0; i < 3; i++) expect(on('eth0')).toMatch(/^on eth0 \(10\.231\.0\.2\)/);
      expect(on('10.231.0.32')).toMatch(/^on eth0 \(10\.231\.0\.32\)/);
    } finally {
      execFileSync('ip', ['-n', host, 'addr', 'del', '10.231.0.32/24', 'dev', 'eth0']);
    }
  });
});

function spawnSyncStderr(host: string, iface: string): string {
  return spawnSync('ip', ['netns', 'exec', host, process.execPath, CLI, 'peers', '--iface', iface, '--wait', '0'], { encoding: 'utf8' }).stderr;
}
