/**
 * Memory under hostile input, each figure beside the same process's idle RSS in the same run:
 *   - a device (`starling run`, three simulated sensors) while 20,000 beacons with made-up UUIDs arrive;
 *   - a hub (`starling run` bridging the mesh to its embedded broker) while peers join whose HELLO lists
 *     5,000 X-TELEMETRY endpoints each.
 * Everything runs on loopback (each process its own beacon port range), so anyone can run it, no root:
 *
 *   node dist/bench/hostile.mjs [--beacons N] [--liars N] [--json]
 *
 * Issue 11's aim: peak under 2× idle. Before the fixes the flood took a device from 62 MB to 1.7 GB.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { memoryOf } from './lib/proc.ts';
import { encodeBeacon } from '../runtime/zre/codec.ts';
import { ZreNode } from '../runtime/zre/node.ts';
import { HEADER_ENDPOINTS } from '../runtime/telemetry/mesh.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const { values: opts } = parseArgs({ options: { beacons: { type: 'string' }, liars: { type: 'string' }, json: { type: 'boolean' } } });
const BEACONS = Number(opts.beacons ?? 20_000);
const LIARS = Number(opts.liars ?? 20);
const work = mkdtempSync(join(tmpdir(), 'starling-bench-hostile-'));
const basePort = 34000 + (process.pid % 500) * 2;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mb = (b: number) => Math.round(b / 1e5) / 10;

function run(name: string, yaml: string): { proc: ChildProcess; ready: Promise<void> } {
  const file = join(work, `${name}.yaml`);
  writeFileSync(file, yaml);
  const proc = spawn(process.execPath, [join(root, 'dist/starling.cjs'), 'run', '--config', file], {
    stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent' },
  });
  const ready = new Promise<void>((resolve) => {
    createInterface({ input: proc.stdout! }).on('line', (l) => {
      if (l.includes('telemetry at tcp://')) resolve();
    });
  });
  return { proc, ready };
}

/** Idle RSS after a settling pause, then the peak while `load` runs and for `after` ms past it. */
async function measure(proc: ChildProcess, load: () => Promise<void>, after = 3000): Promise<{ idle: number; peak: number; end: number }> {
  await sleep(3000);
  const idle = memoryOf(proc.pid!).rss;
  let peak = idle;
  const timer = setInterval(() => (peak = Math.max(peak, memoryOf(proc.pid!).rss)), 20);
  await load();
  await sleep(after);
  clearInterval(timer);
  return { idle, peak, end: memoryOf(proc.pid!).rss };
}

const rows: { figure: string; idle: number; peak: number; end: number }[] = [];
try {
  // 1. The device under a beacon flood.
  const devicePort = basePort;
  const device = run('device', `simulate: true
node: { name: target, iface: lo, port: ${devicePort} }
sensors:
  - { platform: sim, name: a, interval: 100ms }
  - { platform: sim, name: b, interval: 100ms }
  - { platform: sim, name: c, interval: 100ms }
`);
  await device.ready;
  const flood = await measure(device.proc, async () => {
    const udp = createSocket('udp4');
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
    udp.setBroadcast(true);
    for (let sent = 0; sent < BEACONS; sent += 100) {
      await Promise.all(Array.from({ length: 100 }, () => new Promise<void>((r) => {
        udp.send(encodeBeacon({ version: 1, uuid: randomBytes(16), port: 1 + Math.floor(Math.random() * 60000) }), devicePort, '127.255.255.255', () => r());
      })));
      await sleep(2);
    }
    udp.close();
  });
  rows.push({ figure: `device, ${BEACONS.toLocaleString('en')}-beacon flood`, ...flood });
  device.proc.kill('SIGTERM');

  // 2. The hub while peers with 5,000-endpoint HELLOs join.
  const hubPort = basePort + 1;
  const hub = run('hub', `simulate: true
node: { name: hub, iface: lo, port: ${hubPort} }
telemetry: { prefix: hub/ }
mqtt: { embedded: true, embedded_listen: "127.0.0.1:${35000 + (process.pid % 500)}", spool: "${join(work, 'spool')}" }
sensors:
  - { platform: sim, name: beat, interval: 100ms }
`);
  await hub.ready;
  const many = Array.from({ length: 5000 }, (_, i) => `tcp://127.0.0.1:${10_000 + i}`).join(' ');
  const liars: ZreNode[] = [];
  const hello = await measure(hub.proc, async () => {
    for (let i = 0; i < LIARS; i++) {
      const n = new ZreNode({ iface: 'lo', beaconPort: hubPort, name: `liar${i}`, headers: { [HEADER_ENDPOINTS]: many } });
      await n.start();
      liars.push(n);
    }
    await sleep(2000);
  });
  await Promise.all(liars.map((n) => n.stop()));
  rows.push({ figure: `hub, ${LIARS} peers with 5,000-endpoint HELLOs`, ...hello });
  hub.proc.kill('SIGTERM');
} finally {
  await sleep(500);
  rmSync(work, { recursive: true, force: true });
}

if (opts.json) process.stdout.write(JSON.stringify(rows) + '\n');
else {
  console.log('| figure | idle RSS | peak RSS | after | peak / idle |');
  console.log('|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.figure} | ${mb(r.idle)} MB | ${mb(r.peak)} MB | ${mb(r.end)} MB | ${(r.peak / r.idle).toFixed(2)}× |`);
}
