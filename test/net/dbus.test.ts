// The supervisor on a private system bus (a real dbus-daemon with Starling's policy file): list, restart and
// its signals, logs, and a restart refused by the policy for an unprivileged user. Needs root (to run the
// refused call as `nobody`); in CI it may not be skipped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { decodeBeacon } from '../../runtime/zre/codec.ts';

import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { CLI, rootTests, requireRootAndBuild, startSystemBus } from './netns.ts';
import { beaconPort, RawPeer } from '../helpers.ts';

const dbus = createRequire(import.meta.url)('dbus-next') as typeof import('dbus-next');
const cliPath = CLI;
const runHere = rootTests('the D-Bus policy test');

describe.runIf(runHere)('D-Bus control on a private system bus', () => {
  const dir = mkdtempSync(join(tmpdir(), 'starling-dbus-'));
  const address = `unix:path=${dir}/bus`;
  let daemon: number;
  let run: ChildProcess;
  let bus: ReturnType<typeof dbus.sessionBus>;
  const env = { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: address };
  const port = beaconPort();

  beforeAll(async () => {
    requireRootAndBuild();
    chmodSync(dir, 0o755);
    daemon = startSystemBus(dir, address);
    writeFileSync(join(dir, 'starling.yaml'), [
      'simulate: true',
      `node: { name: sup, iface: lo, port: ${port} }`,
      'security: { mode: none }',
      // A bridge whose broker never answers, with the smallest spool: it fills and drops (counted).
      `mqtt: { url: "mqtt://127.0.0.1:9", spool: "${dir}/spool", spool_max_mb: 1, spool_fsync: never, discovery: false, mesh: false }`,
      'sensors:',
      ...Array.from({ length: 10 }, (_, i) => `  - { platform: sim, name: s${i}, interval: 10ms }`),
      'services:',
      '  - { name: ticker, command: sh, args: ["-c", "while true; do echo tick; sleep 0.2; done"], restart: always }',
    ].join('\n'));
    run = spawn(process.execPath, [cliPath, 'run', '--config', join(dir, 'starling.yaml')], { env, stdio: ['ignore', 'ignore', 'inherit'] });
    bus = dbus.sessionBus({ busAddress: address });
    const deadline = Date.now() + 15_000;
    for (;;) {
      try {
        await (await bus.getProxyObject('org.starling.Supervisor1', '/org/starling/Supervisor1')).getInterface('org.starling.Supervisor1');
        break;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }, 30_000);

  afterAll(async () => {
    bus?.disconnect();
    run?.kill('SIGTERM');
    if (run) await new Promise((r) => (run.exitCode !== null ? r(null) : run.once('exit', r)));
    if (daemon) process.kill(daemon, 'SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists services, restarts one with StateChanged signals, and serves its logs', async () => {
    const obj = await bus.getProxyObject('org.starling.Supervisor1', '/org/starling/Supervisor1');
    const sup = obj.getInterface('org.starling.Supervisor1') as unknown as Record<string, (...a: unknown[]) => Promise<unknown>> & { on(s: string, f: (...a: string[]) => void): void };
    const list = (await sup.List!()) as [string, string, boolean, number, string][];
    expect(list.map(([n, s, h]) => [n, s, h])).toEqual([['device', 'running', true], ['mqtt', 'running', true], ['web', 'running', true], ['files', 'running', true], ['fleet', 'running', true], ['ticker', 'running', true]]);
    const states: string[] = [];
    sup.on('StateChanged', (name, state) => {
      if (name === 'ticker') states.push(state!);
    });
    await sup.Restart!('ticker');
    const deadline = Date.now() + 5000;
    while (states.length < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(states).toEqual(['stopping', 'stopped', 'starting', 'running']);
    let logs: { service: string; msg: string }[] = [];
    for (const end = Date.now() + 5000; logs.length < 3 && Date.now() < end; await new Promise((r) => setTimeout(r, 100))) {
      logs = ((await sup.Logs!('ticker', 3)) as string[]).map((l) => JSON.parse(l));
    }
    expect(logs).toHaveLength(3);
    expect(logs.every((e) => e.service === 'ticker' && e.msg === 'tick')).toBe(true);
    const props = obj.getInterface('org.freedesktop.DBus.Properties') as unknown as { Get(i: string, p: string): Promise<{ value: boolean }> };
    expect((await props.Get('org.starling.Supervisor1', 'Healthy')).value).toBe(true);
    const rows = (await (props as unknown as { Get(i: string, p: string): Promise<{ value: [string, string][] }> }).Get('org.starling.Supervisor1', 'Services')).value;
    expect(rows.map(([name, state]) => [name, state])).toEqual([['device', 'running'], ['mqtt', 'running'], ['web', 'running'], ['files', 'running'], ['fleet', 'running'], ['ticker', 'running']]);
    await expect(sup.Restart!('nope')).rejects.toThrow(/no service named 'nope'/);
  });

  it('an unprivileged user may list and read logs but not restart (policy); the CLI as root may', () => {
    // dbus-send as `nobody`: it needs no access to this checkout, wherever CI cloned it.
    const send = (member: string, ...args: string[]) => spawnSync('runuser', ['-u', 'nobody', '--', 'dbus-send', '--system', '--print-reply',
      '--dest=org.starling.Supervisor1', '/org/starling/Supervisor1', `org.starling.Supervisor1.${member}`, ...args], { env, encoding: 'utf8', timeout: 20_000 });
    const list = send('List');
    expect(list.status).toBe(0);
    expect(list.stdout).toMatch(/string "ticker"/);
    expect(send('Logs', 'string:ticker', 'uint32:1').stdout).toMatch(/tick/);
    const refused = send('Restart', 'string:ticker');
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(/AccessDenied.*Rejected send message.*member="Restart"/s);
    const cli = (...args: string[]) => spawnSync(process.execPath, [cliPath, ...args], { env, encoding: 'utf8', timeout: 20_000 });
    expect(cli('restart', 'ticker').stdout.trim()).toBe('restarted ticker');
    expect(JSON.parse(cli('status', '--json').stdout).map((x: { name: string }) => x.name)).toEqual(['device', 'mqtt', 'web', 'files', 'fleet', 'ticker']);
    expect(cli('logs', 'ticker', '-n', '2').stdout.trim().split('\n')).toHaveLength(2);
    // Status across the mesh: this node's row (it is alone here; test/integration/fleet.test.ts has several),
    // for anyone (the policy lets Mesh through like List).
    const mesh = JSON.parse(cli('status', '--mesh', '--json').stdout) as Record<string, unknown>[];
    expect(mesh[0]).toMatchObject({ name: 'sup', presence: 'self', healthy: 1, rss: expect.any(Number), uptime: expect.any(Number), spool: expect.any(Number) });
    expect(cli('status', '--mesh').stdout).toMatch(/^NODE +PRESENCE +VERSION +UPTIME +HEALTH +RSS .*\nsup +self +\S+ +\d+s +healthy +\d+\.\dMB/);
    expect(send('Mesh').stdout).toMatch(/"presence":"self"/);
    expect(cli('restart', 'nope')).toMatchObject({ status: 1, stderr: expect.stringMatching(/^starling: .*no service named 'nope'/) });
  });

  it('every counter is visible: Stats over D-Bus (for anyone), non-zero ones in status, all of them in status --json (a gap, refused sends, spool drops)', async () => {
    // Three malformed beacons and one mesh command the device refuses.
    const udp = createSocket('udp4');
    await new Promise<void>((r) => udp.bind(() => r()));
    udp.setBroadcast(true);
    for (const bytes of [Buffer.from('ZRE'), Buffer.from('not a beacon at all!!!'), Buffer.from('ZRE\x09' + 'x'.repeat(18))]) {
      await new Promise<void>((r) => udp.send(bytes, port, '127.255.255.255', () => r()));
    }
    udp.close();
    const cli = (...args: string[]) => spawnSync(process.execPath, [cliPath, ...args], { env, encoding: 'utf8', timeout: 20_000 });
    let rows: { name: string; stats: Record<string, number> }[] = [];
    for (const end = Date.now() + 5000; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) {
      rows = JSON.parse(cli('status', '--json').stdout);
      if (rows[0]?.stats['mesh.beaconsMalformed'] === 3) break;
    }
    let device = rows.find((r) => r.name === 'device')!;
    expect(device.stats).toMatchObject({ 'mesh.beaconsMalformed': 3, 'mesh.sequenceGaps': 0, 'mesh.peersRefused': 0, 'telemetry.batchesDropped': 0, commandErrors: 0 });

    // A sequence gap: a peer that says HELLO to the device's inbox (found by its beacon), then skips ahead.
    const listener = createSocket({ type: 'udp4', reuseAddr: true });
    const mailbox = await new Promise<number>((resolve) => {
      listener.on('message', (b) => {
        try {
          const beacon = decodeBeacon(b, 1);
          if (beacon.port) resolve(beacon.port);
        } catch {
          // not a beacon
        }
      });
      listener.bind(port);
    });
    listener.close();
    const raw = new RawPeer();
    // A small receive buffer and high-water mark on our side; the device's side still buffers about 37,000
    // replies in the kernel before its own queue fills.
    raw.inbox.receiveBufferSize = 4096;
    raw.inbox.receiveHighWaterMark = 10;
    await raw.open(`tcp://127.0.0.1:${mailbox}`);
    await raw.hello({ name: 'gappy' });
    // Refused sends: 80,000 commands for a line that does not exist, and an inbox that never reads the device's
    // replies; once ZeroMQ's and the kernel's buffers and the 10,000-message send queue to us are full, replies
    // are refused. Then a PING that skips ahead: a sequence gap.
    const N = 80_000;
    for (let i = 0; i < N; i++) await raw.send({ type: 'WHISPER', content: [Buffer.from('{"gpio":"nope"}')] });
    await raw.send({ type: 'PING', sequence: 9 });
    // And the spool, bound to 1 MiB with no broker, drops its oldest segment (1,000 samples a second).
    for (const end = Date.now() + 100_000; Date.now() < end; await new Promise((r) => setTimeout(r, 250))) {
      rows = JSON.parse(cli('status', '--json').stdout);
      const d = rows[0]?.stats ?? {};
      if (d['mesh.sequenceGaps'] === 1 && d.commandErrors === N && (rows[1]?.stats['spool.dropped'] ?? 0) > 0) break;
    }
    raw.close();
    device = rows.find((r) => r.name === 'device')!;

    const mqtt = rows.find((r) => r.name === 'mqtt')!.stats;
    expect(device.stats['mesh.sequenceGaps']).toBe(1);
    expect(device.stats.commandErrors).toBe(N);
    expect(device.stats['mesh.sendsDropped']).toBeGreaterThan(0);
    expect(device.stats['mesh.sendsDropped']).toBeLessThan(N);
    expect(mqtt['spool.dropped']).toBeGreaterThan(0);
    // Every message the spool took is accounted for: still queued, or dropped (none delivered: no broker).
    expect(mqtt['spool.appended']).toBe(mqtt['spool.queued']! + mqtt['spool.dropped']!);
    expect(mqtt['mqtt.connectFailures']).toBeGreaterThan(0);
    console.log(`counters: ${device.stats['mesh.sendsDropped']} of ${N} replies refused, ${mqtt['spool.dropped']} spooled messages dropped`);
    expect(Object.keys(device.stats).length).toBeGreaterThan(20);
    expect(rows.find((r) => r.name === 'ticker')!.stats).toMatchObject({ 'output.truncatedChars': 0 });
    const text = cli('status').stdout;
    expect(text).toMatch(/^device .*\n {2}.*mesh\.beaconsMalformed=3/m);
    expect(text).not.toMatch(/sequenceGaps=0/); // zeros are left out of the text form
    const asNobody = spawnSync('runuser', ['-u', 'nobody', '--', 'dbus-send', '--system', '--print-reply',
      '--dest=org.starling.Supervisor1', '/org/starling/Supervisor1', 'org.starling.Supervisor1.Stats'], { env, encoding: 'utf8', timeout: 20_000 });
    expect(asNobody.status).toBe(0);
    expect(asNobody.stdout).toMatch(/string "mesh\.beaconsMalformed"\s+double 3/);
  }, 150_000);
});
