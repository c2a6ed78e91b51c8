// SIGTERM as systemd sends it, with the worst a board can have running: 20 services that ignore SIGTERM and an
// MQTT client connected to the embedded broker. The relay is a real sysfs GPIO line through onoff, on a tmpfs
// over /sys/class in a private mount namespace with the stand-in kernel of onoff.test.ts. The outputs must be
// at their safe level and the process gone within the unit's TimeoutStopSec=20s. Needs root; in CI it may not
// be skipped.
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { CLI, fakeGpioSysfs, rootTests, requireRootAndBuild } from './netns.ts';
import { freePort } from '../mosquitto.ts';
import { beaconPort, until } from '../helpers.ts';
import { MqttClient } from '../../services/mqtt-bridge/client.ts';

const runHere = rootTests('the shutdown test (mount namespace)');

describe.runIf(runHere)('SIGTERM under load', () => {
  it('20 services ignoring SIGTERM and a connected MQTT client: the relay is at its safe level and the process exits within 20 s', async () => {
    requireRootAndBuild();
    const dir = mkdtempSync(join(tmpdir(), 'starling-shutdown-'));
    const port = await freePort();
    const config = join(dir, 'starling.yaml');
    const services = Array.from({ length: 20 }, (_, i) => `  - { name: deaf${i}, command: sh, args: ["-c", "trap '' TERM; echo up; while true; do sleep 1; done"], stop_timeout: 60s }`);
    writeFileSync(config, [
      `node: { name: box, iface: lo, port: ${beaconPort()} }`,
      'security: { mode: none }',
      'telemetry: { prefix: box/ }',
      `mqtt: { embedded: true, embedded_listen: "127.0.0.1:${port}", spool: "${join(dir, 'spool')}", mesh: false }`,
      'gpio:',
      '  - { name: relay, pin: GPIO17, mode: output, initial: 0, safe: 0 }',
      'services:',
      ...services,
    ].join('\n'));
    const node = process.execPath;
    const log = join(dir, 'run.log');
    const script = `
      set -u
      ${fakeGpioSysfs(node)}
      ${node} ${CLI} run --config ${config} > ${log} 2>&1 &
      run=$!
      echo "pid=$run"
      wait $run
      echo "exit=$?"
      # The line is unexported when the device closes; the stand-in kernel keeps the level it was left at.
      for i in $(seq 1 300); do [ -f $G/.last-gpio529 ] && break; sleep 0.01; done
      echo "relay=$(cat $G/.last-gpio529)"
      kill $kernel
    `;
    const sh = spawn('unshare', ['-m', '--propagation', 'private', 'bash', '-c', script], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent' } });
    const out: string[] = [];
    createInterface({ input: sh.stdout! }).on('line', (l) => out.push(l));
    const value = (key: string) => out.find((l) => l.startsWith(`${key}=`))?.slice(key.length + 1);
    const runLog = () => {
      try {
        return readFileSync(log, 'utf8');
      } catch {
        return '';
      }
    };
    const watcher = new MqttClient({ url: `mqtt://127.0.0.1:${port}`, clientId: 'ha-connected', reconnect: { min: 100, max: 300 } });
    try {
      await until(() => value('pid') !== undefined, 15_000, 'the supervisor');
      await until(() => (runLog().match(/"msg":"started deaf\d+"/g) ?? []).length === 20, 30_000, '20 services started');
      void watcher.start();
      await until(() => watcher.isConnected, 15_000, 'the MQTT client on the embedded broker').catch((e: Error) => {
        // Say why: the supervisor's lines about the broker (a port taken meanwhile, say).
        throw new Error(`${e.message}; the run log says: ${runLog().split('\n').filter((l) => /broker|mqtt/.test(l)).slice(-5).join(' | ')}`);
      });
      const states: number[] = [];
      let bridge = '';
      watcher.on('message', (t, p) => {
        if (t === 'starling/box/relay') states.push(JSON.parse(p.toString()).value);
        if (t === 'starling/bridge/box/status') bridge = p.toString();
      });
      await watcher.subscribe('starling/box/relay', 1);
      // The bridge says online once it has subscribed to the command topics; a command published before that
      // has no subscriber and the broker drops it (MQTT keeps no unretained message for later subscribers).
      await watcher.subscribe('starling/bridge/box/status', 1);
      await until(() => bridge === 'online', 15_000, 'the bridge online');
      await watcher.publish('starling/box/relay/set', '1', { qos: 1 });
      await until(() => states.includes(1), 10_000, 'the relay on');
      const t0 = Date.now();
      process.kill(Number(value('pid')), 'SIGTERM');
      await until(() => value('relay') !== undefined, 25_000, 'the supervisor to exit');
      const took = Date.now() - t0;
      expect(value('exit')).toBe('0');
      expect(value('relay')).toBe('0'); // safe: 0
      expect(took).toBeLessThan(20_000);
      // The deadline, not the 60 s stop timeouts, decided when the deaf ones went.
      expect(runLog()).toMatch(/not stopped within 12000 ms, killed: (deaf\d+, ){19}deaf\d+/);
      console.log(`SIGTERM with 20 deaf services and a connected client: exited in ${(took / 1000).toFixed(1)} s, relay at its safe level`);
    } finally {
      await watcher.stop();
      sh.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});
