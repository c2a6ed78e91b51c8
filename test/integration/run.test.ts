// `starling run` as a process: systemd notifications received on a real unix datagram socket standing in for
// NOTIFY_SOCKET, and SIGTERM stopping services together within their timeouts, nothing orphaned.
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beaconPort, notifyReceiver, processesWith, processFixture, spooledStates, until } from '../helpers.ts';
import { Notifier } from '../../runtime/supervisor/notify.ts';
import { Mosquitto } from '../mosquitto.ts';
import { MqttClient } from '../../services/mqtt-bridge/client.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = `${root}/dist/starling.cjs`;
const { track, tempDir, lines } = processFixture('starling-run-');

function config(dir: string, services: string[]): string {
  const file = join(dir, 'starling.yaml');
  writeFileSync(file, [
    'simulate: true', 'web: { listen: "off" }',
    `node: { name: sup, iface: lo, port: ${beaconPort()} }`,
    'security: { mode: none }',
    'sensors:',
    '  - { platform: sim, name: t, interval: 1s }',
    'services:',
    ...services,
  ].join('\n'));
  return file;
}


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('starling run', () => {
  it('tells systemd READY, STATUS, WATCHDOG at half of WATCHDOG_USEC, and STOPPING (real datagram socket)', async () => {
    const dir = tempDir();
    const sock = join(dir, 'notify');
    const { got } = await notifyReceiver(sock, track);
    const run = spawn(process.execPath, [cli, 'run', '--config', config(dir, ['  - { name: idle, command: sleep, args: ["60"] }'])], {
      env: { ...process.env, NOTIFY_SOCKET: sock, WATCHDOG_USEC: '400000', DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    track(run);
    const log = lines(run);
    await until(() => got.filter((l) => l.includes('WATCHDOG=1')).length >= 3, 15_000, 'three WATCHDOG=1');
    const ready = got.find((l) => l.includes('READY=1'));
    expect(ready).toMatch(/STATUS=device running, files running, fleet running, idle running/);
    expect(got.indexOf(ready!)).toBeLessThan(got.findIndex((l) => l.includes('WATCHDOG=1')));
    // Sent by the supervisor's own process through its sd_notify addon (it says so), not by a helper process.
    // (As root, systemd-notify would also claim the parent's pid, so the log line is what tells them apart.)
    for (const l of got.filter((x) => x !== 'bound')) expect(l.split(' ')[0]).toBe(String(run.pid));
    expect(log.some((l) => l.includes('systemd notifications from this process (sd_notify addon)'))).toBe(true);
    run.kill('SIGTERM');
    const code = await new Promise((r) => run.once('exit', r));
    expect(code).toBe(0);
    await until(() => got.some((l) => l.includes('STOPPING=1')), 5000, 'STOPPING=1');
    expect(got.find((l) => l.includes('STOPPING=1'))!.split(' ')[0]).toBe(String(run.pid));
  }, 30_000);

  it('a configuration with problems: --fallback runs the other one, logs each problem with its place, and STATUS says degraded', async () => {
    const dir = tempDir();
    const sock = join(dir, 'notify');
    const { got } = await notifyReceiver(sock, track);
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'node: { iface: lo }\nsensors:\n  - { platform: sim, name: t, interval: often }\n');
    const fallback = config(dir, []);
    writeFileSync(fallback, readFileSync(fallback, 'utf8').replace('node: { name: sup,', 'node: {'));
    // Without --fallback the start fails, naming the problem.
    const refused = spawn(process.execPath, [cli, 'run', '--config', bad], { stdio: ['ignore', 'pipe', 'pipe'] });
    track(refused);
    let err = '';
    refused.stderr!.on('data', (d) => (err += String(d)));
    expect(await new Promise((r) => refused.once('exit', r))).toBe(1);
    expect(err).toMatch(/bad\.yaml:3:\d+: sensors\[0\]\.interval is string "often"; expected a duration/);
    // With it, the fallback runs; its node has no name, so STARLING_NODE_NAME names it.
    const run = spawn(process.execPath, [cli, 'run', '--config', bad, '--fallback', fallback], {
      env: { ...process.env, NOTIFY_SOCKET: sock, STARLING_NODE_NAME: 'board-7', DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    track(run);
    const log = lines(run);
    await until(() => got.some((l) => l.includes('READY=1')), 15_000, 'READY=1');
    expect(got.find((l) => l.includes('READY=1'))).toMatch(new RegExp(`STATUS=degraded: ${bad.replace(/[/.]/g, '\\$&')} has 1 problem\\(s\\), running ${fallback.replace(/[/.]/g, '\\$&')}`));
    await until(() => log.some((l) => l.includes('"name":"board-7"') || l.includes('board-7')), 10_000, 'the node named board-7');
    const problems = log.map((l) => JSON.parse(l) as { level: string; msg: string }).filter((e) => e.level === 'error');
    expect(problems.map((e) => e.msg)).toEqual([
      `${bad} has 1 problem(s); running the fallback configuration ${fallback} instead:`,
      expect.stringMatching(/bad\.yaml:3:\d+: sensors\[0\]\.interval is string "often"/),
    ]);
    run.kill('SIGTERM');
    expect(await new Promise((r) => run.once('exit', r))).toBe(0);
  }, 30_000);

  it('without the addon (run from TypeScript), notifications go through systemd-notify', async () => {
    const sock = join(tempDir(), 'notify');
    const { got } = await notifyReceiver(sock, track);
    const n = new Notifier({ NOTIFY_SOCKET: sock, PATH: process.env.PATH });
    expect(n.via).toBe('systemd-notify');
    expect(await n.ready('device running')).toBe(true);
    expect(await n.send('WATCHDOG=1')).toBe(true);
    await until(() => got.some((l) => l.endsWith(' WATCHDOG=1')), 5000, 'WATCHDOG=1');
    expect(got.some((l) => / READY=1\|STATUS=device running$/.test(l))).toBe(true);
    expect(n.failures).toBe(0);
  }, 30_000);

  it('SIGTERM stops all services at once, SIGKILLs one past its stop timeout, and leaves nothing running', async () => {
    const dir = tempDir();
    const order = join(dir, 'order');
    const svc = (name: string, onTerm: string) => `  - { name: ${name}, command: sh, args: ["-c", "trap '${onTerm}' TERM; echo up; while true; do sleep 0.1; done"], stop_timeout: 500ms }`;
    const file = config(dir, [
      svc('one', `echo one >> ${order}; exit 0`),
      svc('two', `echo two >> ${order}`), // ignores SIGTERM: killed after 500 ms
      svc('three', `echo three >> ${order}; exit 0`),
    ]);
    const run = spawn(process.execPath, [cli, 'run', '--config', file], { env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent' }, stdio: ['ignore', 'pipe', 'inherit'] });
    track(run);
    const log = lines(run);
    await until(() => ['one', 'two', 'three'].every((n) => log.some((l) => l.includes(`"msg":"started ${n}"`))), 15_000, 'three services started');
    const pids = log.filter((l) => l.includes('"msg":"started ')).map((l) => JSON.parse(l).pid as number);
    const t0 = Date.now();
    run.kill('SIGTERM');
    expect(await new Promise((r) => run.once('exit', r))).toBe(0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(500);
    expect(readFileSync(order, 'utf8').trim().split('\n').sort()).toEqual(['one', 'three', 'two']);
    expect(log.some((l) => l.includes('two did not stop within 500 ms: SIGKILL'))).toBe(true);
    // Nothing of theirs runs on: not the shells, not their sleeps.
    expect(processesWith(order)).toEqual([]);
    expect(pids.length).toBe(3);
  }, 30_000);

  it('with mqtt configured, the device appears in Home Assistant terms on the broker, and a command switches its pump', async () => {
    const dir = tempDir();
    const broker = new Mosquitto();
    await broker.start();
    const watcher = new MqttClient({ url: broker.url, clientId: 'ha', reconnect: { min: 100, max: 300 } });
    try {
      await watcher.start();
      await watcher.subscribe('#', 1);
      const got: [string, string][] = [];
      watcher.on('message', (t, p) => got.push([t, p.toString()]));
      const file = join(dir, 'starling.yaml');
      writeFileSync(file, [
        'simulate: true', 'web: { listen: "off" }',
        `node: { name: shed, iface: lo, port: ${beaconPort()} }`,
        'security: { mode: none }',
        'telemetry: { prefix: shed/ }',
        `mqtt: { url: "${broker.url}", spool: "${join(dir, 'spool')}", mesh: false }`,
        'sensors:',
        '  - { platform: sim, name: temp, interval: 100ms, min: 10, max: 12, unit: "°C" }',
        'gpio:',
        '  - { name: pump, pin: GPIO17, mode: output }',
      ].join('\n'));
      const run = spawn(process.execPath, [cli, 'run', '--config', file], { env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent' }, stdio: ['ignore', 'ignore', 'inherit'] });
      track(run);
      await until(() => got.some(([t]) => t === 'starling/shed/temp'), 15_000, 'a temperature state');
      await until(() => got.some(([t]) => t === 'homeassistant/switch/starling_shed_pump/config'), 5000, 'the pump switch');
      // Announced in the same burst as the switch, but not necessarily before it.
      await until(() => got.some(([t]) => t === 'homeassistant/sensor/starling_shed_temp/config'), 5000, 'the temperature sensor');
      expect(JSON.parse(got.find(([t]) => t === 'homeassistant/sensor/starling_shed_temp/config')![1])).toMatchObject({ device_class: 'temperature', unit_of_measurement: '°C' });
      expect(got.find(([t]) => t === 'starling/bridge/shed/status')?.[1]).toBe('online');
      await watcher.publish('starling/shed/pump/set', '1', { qos: 1 });
      await until(() => got.some(([t, p]) => t === 'starling/shed/pump' && JSON.parse(p).value === 1), 5000, 'the pump on');
      run.kill('SIGTERM');
      expect(await new Promise((r) => run.once('exit', r))).toBe(0);
      await until(() => got.some(([t, p]) => t === 'starling/bridge/shed/status' && p === 'offline'), 5000, 'offline on a clean stop');
    } finally {
      await watcher.stop();
      await broker.destroy();
    }
  }, 40_000);

  it('a bridge killed with SIGKILL while the broker is away delivers, after restart, everything that reached its spool', async () => {
    const dir = tempDir();
    const broker = new Mosquitto();
    await broker.start();
    await broker.stop(); // the broker is away: every sample goes to the spool
    const spool = join(dir, 'spool');
    const file = join(dir, 'starling.yaml');
    writeFileSync(file, [
      'simulate: true', 'web: { listen: "off" }',
      `node: { name: barn, iface: lo, port: ${beaconPort()} }`,
      'security: { mode: none }',
      'telemetry: { prefix: barn/ }',
      `mqtt: { url: "${broker.url}", spool: "${spool}", mesh: false }`,
      'sensors:',
      '  - { platform: sim, name: level, interval: 10ms, waveform: ramp, min: 0, max: 100, period: 10s }',
    ].join('\n'));
    const env = { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent' };
    const first = spawn(process.execPath, [cli, 'run', '--config', file], { env, stdio: ['ignore', 'ignore', 'inherit'] });
    track(first);
    await sleep(2500);
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));
    // What reached the spool: read a copy of it.
    const { seqs: spooled, publisher } = spooledStates(spool, join(dir, 'spool-copy'), 'starling/barn/level');
    expect(spooled.length).toBeGreaterThan(50);
    await broker.start();
    const watcher = new MqttClient({ url: broker.url, clientId: 'ha-kill', reconnect: { min: 100, max: 300 } });
    try {
      await watcher.start();
      await watcher.subscribe('starling/barn/#', 1);
      const got = new Set<number>();
      watcher.on('message', (_t, p) => {
        const state = JSON.parse(p.toString());
        if (state.publisher === publisher) got.add(state.seq);
      });
      const second = spawn(process.execPath, [cli, 'run', '--config', file], { env, stdio: ['ignore', 'ignore', 'inherit'] });
      track(second);
      await until(() => spooled.every((s) => got.has(s)), 20_000, `all ${spooled.length} spooled samples`);
      second.kill('SIGTERM');
      await new Promise((r) => second.once('exit', r));
    } finally {
      await watcher.stop();
      await broker.destroy();
    }
  }, 60_000);

  it('with no broker but mqtt.embedded, the hub runs its own (aedes) and bridges to it; topics follow the template', async () => {
    const dir = tempDir();
    const { freePort } = await import('../mosquitto.ts');
    const port = await freePort();
    const file = join(dir, 'starling.yaml');
    writeFileSync(file, [
      'simulate: true', 'web: { listen: "off" }',
      `node: { name: hub, iface: lo, port: ${beaconPort()} }`,
      'security: { mode: none }',
      'telemetry: { prefix: hub/ }',
      `mqtt: { embedded: true, embedded_listen: "127.0.0.1:${port}", topic: "home/{topic}/state", spool: "${join(dir, 'spool')}", mesh: false }`,
      'sensors:',
      '  - { platform: sim, name: light, interval: 100ms, unit: lx }',
      'gpio:',
      '  - { name: fan, pin: GPIO5, mode: output }',
    ].join('\n'));
    const run = spawn(process.execPath, [cli, 'run', '--config', file], { env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent' }, stdio: ['ignore', 'ignore', 'inherit'] });
    track(run);
    const watcher = new MqttClient({ url: `mqtt://127.0.0.1:${port}`, clientId: 'ha-embedded', reconnect: { min: 100, max: 300 } });
    try {
      void watcher.start();
      await until(() => watcher.isConnected, 15_000, 'the embedded broker');
      await watcher.subscribe('#', 1);
      const got: [string, string][] = [];
      watcher.on('message', (t, p) => got.push([t, p.toString()]));
      await until(() => got.some(([t]) => t === 'home/hub/light/state'), 10_000, 'a state on the templated topic');
      await until(() => got.some(([t]) => t === 'homeassistant/switch/starling_hub_fan/config'), 5000, 'the fan switch');
      expect(JSON.parse(got.find(([t]) => t === 'homeassistant/switch/starling_hub_fan/config')![1])).toMatchObject({ command_topic: 'home/hub/fan/state/set' });
      await watcher.publish('home/hub/fan/state/set', '1', { qos: 1 });
      await until(() => got.some(([t, p]) => t === 'home/hub/fan/state' && JSON.parse(p).value === 1), 5000, 'the fan on');
    } finally {
      await watcher.stop();
      run.kill('SIGTERM');
      await new Promise((r) => run.once('exit', r));
    }
  }, 40_000);

  it('a hub bridges the whole mesh: a peer\'s pump appears as a switch, and a command reaches it by WHISPER', async () => {
    const dir = tempDir();
    const port = beaconPort();
    const broker = new Mosquitto();
    await broker.start();
    const env = { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent' };
    const write = (name: string, lines: string[]) => {
      const f = join(dir, `${name}.yaml`);
      writeFileSync(f, lines.join('\n'));
      return f;
    };
    const deviceCfg = write('device', [
      'simulate: true', 'web: { listen: "off" }', `node: { name: pond, iface: lo, port: ${port} }`, 'security: { mode: none }', 'telemetry: { prefix: pond/ }',
      'gpio:', '  - { name: pump, pin: GPIO17, mode: output }', '  - { name: float, pin: GPIO27, mode: input }',
    ]);
    const hubCfg = write('hub', [
      'simulate: true', 'web: { listen: "off" }', `node: { name: hub, iface: lo, port: ${port} }`, 'security: { mode: none }', 'telemetry: { prefix: hub/ }',
      `mqtt: { url: "${broker.url}", spool: "${join(dir, 'spool')}" }`,
    ]);
    const device = spawn(process.execPath, [cli, 'run', '--config', deviceCfg], { env, stdio: ['ignore', 'ignore', 'inherit'] });
    const hub = spawn(process.execPath, [cli, 'run', '--config', hubCfg], { env, stdio: ['ignore', 'ignore', 'inherit'] });
    track(device);
    track(hub);
    const watcher = new MqttClient({ url: broker.url, clientId: 'ha-mesh', reconnect: { min: 100, max: 300 } });
    try {
      await watcher.start();
      await watcher.subscribe('#', 1);
      const got: [string, string][] = [];
      watcher.on('message', (t, p) => got.push([t, p.toString()]));
      await until(() => got.some(([t]) => t === 'homeassistant/switch/starling_pond_pump/config'), 15_000, 'the peer\'s pump as a switch');
      await until(() => got.some(([t]) => t === 'starling/pond/pump'), 10_000, 'the pump\'s state through the hub');
      await until(() => got.some(([t]) => t === 'homeassistant/binary_sensor/starling_pond_float/config'), 5000, 'the float switch as a binary sensor');
      await watcher.publish('starling/pond/pump/set', '1', { qos: 1 });
      await until(() => got.some(([t, p]) => t === 'starling/pond/pump' && JSON.parse(p).value === 1), 10_000, 'the pump on, by WHISPER');
    } finally {
      await watcher.stop();
      for (const p of [hub, device]) {
        p.kill('SIGTERM');
        await new Promise((r) => p.once('exit', r));
      }
      await broker.destroy();
    }
  }, 60_000);
});
