// A device started before its network: its eth0 does not exist yet (Wi-Fi after boot, a USB adapter), then
// appears without an address, then gets one (DHCP late). The
// supervisor says degraded, with the reason, in systemd's STATUS= and keeps the watchdog fed; the device is
// retried in the process, and once the address appears a peer on another host sees it and its telemetry within
// 5 s, without a restart. A stopped event loop (SIGSTOP) stops WATCHDOG=1. Needs root; in CI it may not be
// skipped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, CLI, Segment, rootTests, requireRootAndBuild, type Event } from './netns.ts';
import { notifyReceiver, processFixture, until } from '../helpers.ts';

const runHere = rootTests('the wait-for-network test');

describe.runIf(runHere)('a device whose interface is not there yet', () => {
  const seg = new Segment();
  const { track, tempDir, lines } = processFixture('starling-wait-');
  const agents: Agent[] = [];

  beforeAll(() => {
    requireRootAndBuild();
    // Host 1 is the peer; host 2, the device, starts with loopback only.
    seg.create(1, 1);
  });

  afterAll(async () => {
    for (const a of agents) a.kill('SIGKILL');
    await Promise.all(agents.map((a) => a.exited()));
    seg.destroy();
  });

  it('is degraded and retried with the watchdog fed; found by a peer within 5 s of the interface appearing; SIGSTOP stops the watchdog', async () => {
    const dir = tempDir();
    const sock = join(dir, 'notify');
    const { got } = await notifyReceiver(sock, track);
    const config = join(dir, 'starling.yaml');
    writeFileSync(config, [
      'simulate: true',
      'node: { name: late, iface: eth0 }',
      'security: { mode: none }',
      'telemetry: { prefix: late/ }',
      'sensors:',
      '  - { platform: sim, name: temp, interval: 200ms, unit: "°C" }',
    ].join('\n'));
    const run = track(spawn('ip', ['netns', 'exec', seg.hosts[1]!, process.execPath, CLI, 'run', '--config', config], {
      env: { ...process.env, NOTIFY_SOCKET: sock, WATCHDOG_USEC: '400000', DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent' }, stdio: ['ignore', 'pipe', 'inherit'],
    }));
    const log = lines(run);
    await until(() => got.some((l) => /STATUS=degraded: device: waiting for interface eth0: interface 'eth0' has no IPv4 address here/.test(l)), 15_000, 'STATUS=degraded');
    // Waiting is not dying: the watchdog goes on, and the wait is logged once, not every second.
    const dogs = () => got.filter((l) => l.endsWith(' WATCHDOG=1')).length;
    const before = dogs();
    await new Promise((r) => setTimeout(r, 1500));
    expect(dogs()).toBeGreaterThanOrEqual(before + 4);
    expect(log.filter((l) => l.includes('waiting for interface eth0')).length).toBe(1);
    expect(run.exitCode).toBeNull();

    const tail = new Agent('tail', seg.hosts[0]!, CLI, ['late/', '--json'], ['tail']);
    agents.push(tail);
    // The interface appears (with its address: the veth and its address come in one step here).
    const t0 = Date.now();
    seg.wire(2);
    const sample = await tail.waitFor((e: Event) => e.topic === 'late/temp', 15_000, 'a sample from the late device');
    const took = Date.now() - t0;
    expect(sample).toMatchObject({ unit: '°C' });
    expect(took).toBeLessThan(5000);
    console.log(`interface created and addressed → first sample at a peer: ${took} ms`);
    await until(() => got.some((l) => / STATUS=device running, web running, files running, fleet running$/.test(l)), 5000, 'STATUS=device running, web running, files running, fleet running');
    expect(log.some((l) => l.includes('"msg":"device is running again"') || l.includes('is running again'))).toBe(true);

    // The event loop stopped: no WATCHDOG=1 while it is; it comes back with SIGCONT.
    const pid = Number(execFileSync('pgrep', ['-f', `${CLI} run --config ${config}`], { encoding: 'utf8' }).trim().split('\n')[0]);
    process.kill(pid, 'SIGSTOP');
    await new Promise((r) => setTimeout(r, 300));
    const stopped = dogs();
    await new Promise((r) => setTimeout(r, 1500));
    expect(dogs()).toBe(stopped);
    process.kill(pid, 'SIGCONT');
    await until(() => dogs() > stopped, 5000, 'WATCHDOG=1 again after SIGCONT');
  }, 60_000);
});
