// The Influx sink against the real servers from Debian's packages, started here on the loopback: an InfluxDB
// 1.6 (`influxd`) and a VictoriaMetrics, each fed by a device of its own on the loopback mesh, both taken down
// for 30 s in the middle of the run and brought back on the same data. Afterwards each database must hold
// every sample the sink received, once each, in order: the sequence numbers one by one, the timestamps
// rising — what was written while the database was away came through the spool.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../runtime/config/load.ts';
import { LogRing } from '../../runtime/supervisor/log.ts';
import { Supervisor } from '../../runtime/supervisor/supervisor.ts';
import { servicesFrom, type Composition } from '../../app/compose.ts';
import { beaconPort, freeTcpPort, until } from '../helpers.ts';

const OUTAGE_MS = 30_000;
const port = beaconPort();
let dir = '';
const procs = new Set<ChildProcess>();

/** A database server: started (and restarted) by `start`, taken down by `stop` (SIGTERM: a clean shutdown). */
class Server {
  private p: ChildProcess | undefined;
  constructor(readonly name: string, private readonly command: string, private readonly args: string[], readonly url: string) {}

  async start(): Promise<void> {
    const p = spawn(this.command, this.args, { stdio: 'ignore' });
    procs.add(p);
    p.on('exit', () => procs.delete(p));
    this.p = p;
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        const r = await fetch(`${this.url}/ping`);
        if (r.status < 500) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`${this.name} did not answer /ping in 30 s`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async stop(): Promise<void> {
    const p = this.p;
    if (!p || p.exitCode !== null) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await Promise.race([gone, new Promise((r) => setTimeout(r, 15_000))]);
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  }
}

let influx: Server;
let vm: Server;
const sups: Supervisor[] = [];
const devices: Composition[] = [];

async function device(name: string, sink: string): Promise<Composition> {
  const config = parseConfig(`simulate: true
node: { name: ${name}, iface: lo, port: ${port} }
security: { mode: none }
telemetry: { prefix: ${name}/ }
web: { listen: "off" }
fleet: { status_interval: 0 }   # only the sensor's samples: the counts below are of them
influx: { ${sink}, interval: 200ms, timeout: 2s, spool: ${join(dir, `spool-${name}`)}, mesh: false }
sensors:
  - { platform: sim, name: air, waveform: sine, min: 10, max: 20, period: 10s, interval: 50ms, unit: "°C" }
`);
  const log = new LogRing(1000, null);
  const c = servicesFrom(config, log);
  const sup = new Supervisor(c.services, log);
  sups.push(sup);
  devices.push(c);
  await sup.start();
  return c;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'starling-influx-'));
  const [ip, rpc, vp] = [await freeTcpPort(), await freeTcpPort(), await freeTcpPort()];
  mkdirSync(join(dir, 'influxdb'));
  writeFileSync(join(dir, 'influxdb.conf'), `reporting-disabled = true
bind-address = "127.0.0.1:${rpc}"
[meta]
  dir = "${dir}/influxdb/meta"
[data]
  dir = "${dir}/influxdb/data"
  wal-dir = "${dir}/influxdb/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:${ip}"
  log-enabled = false
[monitor]
  store-enabled = false
`);
  influx = new Server('influxd', '/usr/bin/influxd', ['-config', join(dir, 'influxdb.conf')], `http://127.0.0.1:${ip}`);
  vm = new Server('victoria-metrics', '/usr/bin/victoria-metrics', [`-storageDataPath=${join(dir, 'vm')}`, `-httpListenAddr=127.0.0.1:${vp}`], `http://127.0.0.1:${vp}`);
  await Promise.all([influx.start(), vm.start()]);
  const r = await fetch(`${influx.url}/query`, { method: 'POST', body: new URLSearchParams({ q: 'CREATE DATABASE starling' }) });
  expect(r.status).toBe(200);
}, 60_000);

afterAll(async () => {
  for (const s of sups) await s.stop().catch(() => {});
  for (const p of procs) p.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Sequence numbers and timestamps (ms) InfluxDB holds for `topic`, in time order. */
async function influxPoints(topic: string): Promise<{ seq: number[]; ts: number[] }> {
  const q = new URLSearchParams({ db: 'starling', epoch: 'ms', q: `SELECT seq FROM starling WHERE topic = '${topic}'` });
  const j = (await (await fetch(`${influx.url}/query?${q}`)).json()) as { results: { series?: { values: [number, number][] }[] }[] };
  const values = j.results[0]?.series?.[0]?.values ?? [];
  return { ts: values.map((v) => v[0]), seq: values.map((v) => v[1]) };
}

/** The same from VictoriaMetrics's raw export (every stored sample, duplicates included), in time order. */
async function vmPoints(topic: string): Promise<{ seq: number[]; ts: number[] }> {
  // What it took recently is searchable only once flushed from memory: ask for that first.
  await fetch(`${vm.url}/internal/force_flush`);
  const r = await fetch(`${vm.url}/api/v1/export`, { method: 'POST', body: new URLSearchParams({ 'match[]': `starling_seq{topic="${topic}"}` }) });
  const text = await r.text();
  const series = text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { values: number[]; timestamps: number[] });
  expect(series.length).toBeLessThanOrEqual(1);
  return { seq: series[0]?.values ?? [], ts: series[0]?.timestamps ?? [] };
}

function expectOnceInOrder(p: { seq: number[]; ts: number[] }, received: number): void {
  const first = p.seq[0]!;
  const missing: number[] = [];
  for (let i = 0, want = first; i < p.seq.length; i++, want++) {
    while (p.seq[i]! > want) missing.push(want++);
  }
  expect({ count: p.seq.length, missing: missing.slice(0, 20) }).toEqual({ count: received, missing: [] });
  expect(p.seq).toEqual(p.seq.map((_, i) => first + i));
  for (let i = 1; i < p.ts.length; i++) expect(p.ts[i]!).toBeGreaterThan(p.ts[i - 1]!);
}

it('InfluxDB and VictoriaMetrics receive every sample of a run with a 30 s outage, once each, in order', async () => {
  const porch = await device('porch', `url: "${influx.url}", db: starling`);
  const shed = await device('shed', `url: "${vm.url}", db: starling`);
  const writer = (c: Composition) => c.influx!.writer!;
  await until(() => writer(porch).stats().written! > 20 && writer(shed).stats().written! > 20, 20_000, 'both sinks writing');

  await Promise.all([influx.stop(), vm.stop()]);
  await until(() => writer(porch).stats().failing === 1 && writer(shed).stats().failing === 1, 10_000, 'both sinks failing');
  await new Promise((r) => setTimeout(r, OUTAGE_MS));
  const spooled = [writer(porch).stats()['spool.queued']!, writer(shed).stats()['spool.queued']!];
  // 20 samples a second for 30 s wait on disk.
  for (const n of spooled) expect(n).toBeGreaterThan(400);
  expect(sups.map((s) => s.list().find((x) => x.name === 'influx')?.healthy)).toEqual([true, true]);

  await Promise.all([influx.start(), vm.start()]);
  // The backoff is at most 30 s; then the spool drains.
  await until(() => writer(porch).stats()['spool.queued'] === 0 && writer(shed).stats()['spool.queued'] === 0 && !writer(porch).stats().failing && !writer(shed).stats().failing, 60_000, 'both spools drained');
  await new Promise((r) => setTimeout(r, 1000));
  for (const s of sups) await s.stop();

  for (const c of [porch, shed]) {
    const st = writer(c).stats();
    expect({ rejected: st.rejected, dropped: st['spool.dropped'], queued: st['spool.queued'], pending: st.pending }).toEqual({ rejected: 0, dropped: 0, queued: 0, pending: 0 });
    expect(st.written).toBe(st.received);
    expect(st.spooled).toBeGreaterThan(400);
  }
  expectOnceInOrder(await influxPoints('porch/air'), writer(porch).stats().received!);
  // VictoriaMetrics makes what it took searchable within a few seconds.
  let v = await vmPoints('shed/air');
  for (let i = 0; i < 40 && v.seq.length < writer(shed).stats().received!; i++) {
    await new Promise((r) => setTimeout(r, 500));
    v = await vmPoints('shed/air');
  }
  expectOnceInOrder(v, writer(shed).stats().received!);
}, 180_000);
