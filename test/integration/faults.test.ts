// `starling run` as a process against faults from its own side: a damaged spool segment after kill -9, a
// child that writes one endless line, a grandchild that escapes the process group holding the pipes, and every
// file descriptor it may have in use.
import { describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beaconPort, freeTcpPort, processesWith, processFixture, spooledStates, until } from '../helpers.ts';
import { Mosquitto } from '../mosquitto.ts';
import { MqttClient } from '../../services/mqtt-bridge/client.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = `${root}/dist/starling.cjs`;
const env = { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent' };
const { track, tempDir, lines } = processFixture('starling-faults-');



const rssOf = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
const exited = (p: ChildProcess) => new Promise<number | null>((r) => (p.exitCode !== null ? r(p.exitCode) : p.once('exit', (c) => r(c))));

describe('the spool after kill -9', () => {
  it('with a damaged segment, a restart delivers every intact record once, in order, and reports the damage', async () => {
    const dir = tempDir();
    const broker = new Mosquitto();
    await broker.start();
    await broker.stop(); // away: every sample goes to the spool
    const spool = join(dir, 'spool');
    const file = join(dir, 'starling.yaml');
    writeFileSync(file, [
      'simulate: true', 'web: { listen: "off" }',
      `node: { name: silo, iface: lo, port: ${beaconPort()} }`,
      'security: { mode: none }',
      'telemetry: { prefix: silo/ }',
      `mqtt: { url: "${broker.url}", spool: "${spool}", mesh: false }`,
      'sensors:',
      '  - { platform: sim, name: level, interval: 10ms, waveform: ramp, min: 0, max: 100, period: 10s }',
    ].join('\n'));
    const first = spawn(process.execPath, [cli, 'run', '--config', file], { env, stdio: ['ignore', 'ignore', 'inherit'] });
    track(first);
    await until(() => {
      try {
        return readdirSync(spool).some((f) => f.endsWith('.seg') && readFileSync(join(spool, f)).length > 20_000);
      } catch {
        return false;
      }
    }, 15_000, 'a spool segment of 20 KB');
    first.kill('SIGKILL');
    await exited(first);
    // Flip one byte in the middle of the first segment.
    const seg = join(spool, readdirSync(spool).filter((f) => f.endsWith('.seg')).sort()[0]!);
    const data = readFileSync(seg);
    data[Math.floor(data.length / 2)]! ^= 0xff;
    writeFileSync(seg, data);
    // What is intact, read from a copy with the same scan.
    const { seqs: intact, publisher, corrupt } = spooledStates(spool, join(dir, 'copy'), 'starling/silo/level');
    expect(corrupt).toBe(1);
    expect(intact.length).toBeGreaterThan(100);
    // Records are lost only around the damage: a run of consecutive sequence numbers with one hole.
    const holes = intact.slice(1).filter((s, i) => s !== intact[i]! + 1);
    expect(holes.length).toBe(1);
    await broker.start();
    const watcher = new MqttClient({ url: broker.url, clientId: 'ha-damage', reconnect: { min: 100, max: 300 } });
    const got: number[] = [];
    try {
      await watcher.start();
      await watcher.subscribe('starling/silo/level', 1);
      watcher.on('message', (_t, p) => {
        const s = JSON.parse(p.toString());
        if (s.publisher === publisher) got.push(s.seq);
      });
      const second = spawn(process.execPath, [cli, 'run', '--config', file], { env, stdio: ['ignore', 'pipe', 'inherit'] });
      track(second);
      const log = lines(second);
      await until(() => got.length >= intact.length, 20_000, `all ${intact.length} intact records`);
      await new Promise((r) => setTimeout(r, 500)); // any duplicate would have come by now
      expect(got).toEqual(intact);
      expect(log.some((l) => /"service":"mqtt".*damaged byte\(s\)/.test(l))).toBe(true);
      second.kill('SIGTERM');
      expect(await exited(second)).toBe(0);
    } finally {
      await watcher.stop();
      await broker.destroy();
    }
  }, 60_000);
});

describe('children', () => {
  function run(dir: string, services: string[]) {
    const file = join(dir, 'starling.yaml');
    writeFileSync(file, ['simulate: true', 'web: { listen: "off" }', `node: { name: kid, iface: lo, port: ${beaconPort()} }`, 'security: { mode: none }', 'sensors:', '  - { platform: sim, name: t, interval: 1s }', 'services:', ...services].join('\n'));
    const p = spawn(process.execPath, [cli, 'run', '--config', file], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    track(p);
    return { p, log: lines(p) };
  }

  it('one endless line without a newline: cut at 4,096 characters, the rest counted not kept; memory stays flat', async () => {
    const dir = tempDir();
    // 64 MB of 'x' with no newline, then a normal line; the service then idles.
    const { p, log } = run(dir, [`  - { name: chatty, command: sh, args: ["-c", "head -c 67108864 /dev/zero | tr '\\\\0' x; echo; echo after; exec sleep 600"] }`]);
    await until(() => log.some((l) => l.includes('"msg":"started chatty"')), 15_000, 'the service');
    const idle = rssOf(p.pid!);
    let peak = idle;
    const sampler = setInterval(() => (peak = Math.max(peak, rssOf(p.pid!))), 20);
    try {
      await until(() => log.some((l) => l.includes('"service":"chatty","msg":"after"')), 30_000, 'the line after the endless one');
    } finally {
      clearInterval(sampler);
    }
    const cut = log.map((l) => JSON.parse(l) as { service: string; msg: string }).find((e) => e.service === 'chatty' && e.msg.startsWith('xxx'))!;
    expect(cut.msg).toHaveLength(4097);
    expect(cut.msg.endsWith('…')).toBe(true);
    // Before, readline buffered the whole line: +389 MB for 3 s of output. Now the growth is the stream's chunks.
    expect(peak - idle).toBeLessThan(48 * 1024 * 1024);
    console.log(`endless line: supervisor RSS ${(idle / 1e6).toFixed(1)} MB idle, peak ${(peak / 1e6).toFixed(1)} MB while 64 MB went by`);
    p.kill('SIGTERM');
    expect(await exited(p)).toBe(0);
  }, 60_000);

  it('a grandchild that escaped with setsid and holds the pipes does not keep the supervisor from exiting', async () => {
    const dir = tempDir();
    const { p, log } = run(dir, [`  - { name: escaper, command: sh, args: ["-c", "setsid sh -c 'sleep 600; echo ${dir}' & echo up; exec sleep 600"] }`]);
    await until(() => log.some((l) => l.includes('"service":"escaper","msg":"up"')), 15_000, 'the service');
    await until(() => processesWith(dir).length > 0, 5000, 'the escaped grandchild');
    const t0 = Date.now();
    p.kill('SIGTERM');
    expect(await exited(p)).toBe(0);
    expect(Date.now() - t0).toBeLessThan(5000);
    // It is still there (under systemd the unit's cgroup ends it); the supervisor did not wait for it.
    expect(processesWith(dir).length).toBeGreaterThan(0);
  }, 30_000);
});

describe('file descriptors', () => {
  it('with every descriptor in use (clients held open on its broker), it keeps running: its status goes without rss, said once', async () => {
    const dir = tempDir();
    const port = await freeTcpPort();
    const file = join(dir, 'starling.yaml');
    writeFileSync(file, [
      'simulate: true', 'web: { listen: "off" }',
      `node: { name: fdless, iface: lo, port: ${beaconPort()} }`,
      'security: { mode: none }',
      'telemetry: { prefix: fdless/ }',
      `mqtt: { embedded: true, embedded_listen: "127.0.0.1:${port}", spool: "${join(dir, 'spool')}", discovery: false }`,
      'fleet: { status_interval: 200ms }',
      'sensors:',
      '  - { platform: sim, name: level, interval: 100ms, min: 0, max: 100 }',
    ].join('\n'));
    // 256 descriptors at most (prlimit), so that 400 connections exhaust them.
    const p = track(spawn('prlimit', ['--nofile=256:256', process.execPath, cli, 'run', '--config', file], { env, stdio: ['ignore', 'pipe', 'inherit'] }));
    const out = lines(p);
    await until(() => out.some((l) => l.includes('"state":"running"') && l.includes('fleet')), 20_000, 'the fleet service running');
    const held: Socket[] = [];
    try {
      for (let i = 0; i < 400; i++) {
        const c = connect(port, '127.0.0.1');
        c.on('error', () => {}); // refused or reset once it has no descriptor left: expected
        held.push(c);
      }
      await until(() => out.some((l) => l.includes("cannot read this process's memory")), 10_000, 'the status report to meet EMFILE');
      // Several report intervals later it still runs, and said it once (rate-limited), not each 200 ms.
      await new Promise((r) => setTimeout(r, 1500));
      expect(p.exitCode).toBe(null);
      expect(out.filter((l) => l.includes("cannot read this process's memory")).length).toBe(1);
    } finally {
      for (const c of held) c.destroy();
    }
    // Descriptors back: it goes on, its status published with rss again (through its bridge to its broker).
    const watcher = new MqttClient({ url: `mqtt://127.0.0.1:${port}`, clientId: 'fd-watch', clean: true });
    const topics: string[] = [];
    watcher.on('message', (t: string, _p: Buffer, o: { retain: boolean }) => !o.retain && topics.push(t)); // published now, not kept from before
    await watcher.start();
    try {
      await watcher.subscribe('#', 0);
      await until(() => topics.some((t) => /rss/.test(t)), 10_000, 'a status with rss at the broker');
    } finally {
      await watcher.stop();
    }
    expect(p.exitCode).toBe(null);
    p.kill('SIGTERM');
    expect(await exited(p)).toBe(0);
  }, 60_000);
});
