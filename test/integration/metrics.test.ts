// /metrics scraped by a real Prometheus (Debian's prometheus, started here on the loopback): two devices on the
// loopback mesh, the web view of one serving the exposition; Prometheus's own query API must return each
// sensor's last value (as the web view's /api/state has it) labelled with the node that published it, and the
// services' health and counters.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../runtime/config/load.ts';
import { LogRing } from '../../runtime/supervisor/log.ts';
import { Supervisor } from '../../runtime/supervisor/supervisor.ts';
import { servicesFrom, type Composition } from '../../app/compose.ts';
import { beaconPort, freeTcpPort } from '../helpers.ts';

const PROMETHEUS = '/usr/bin/prometheus';
const port = beaconPort();
const sups: Supervisor[] = [];
let porch: Composition;
let prometheus: ChildProcess | undefined;
let promUrl = '';
let dir = '';

async function device(name: string, web: string, sensor: string): Promise<Composition> {
  const config = parseConfig(`simulate: true
node: { name: ${name}, iface: lo, port: ${port} }
security: { mode: none }
telemetry: { prefix: ${name}/ }
web: { listen: "${web}" }
sensors:
  - ${sensor}
`);
  const log = new LogRing(1000, null);
  const c = servicesFrom(config, log);
  const sup = new Supervisor(c.services, log);
  if (c.web) c.web.supervisor = sup;
  sups.push(sup);
  await sup.start();
  return c;
}

beforeAll(async () => {
  // One sample each, an hour apart: the value Prometheus scrapes is the one the web view holds.
  porch = await device('porch', '127.0.0.1:0', '{ platform: sim, name: air, waveform: random_walk, min: 10, max: 20, interval: 1h, unit: "°C" }');
  await device('shed', 'off', '{ platform: sim, name: soil, waveform: random_walk, min: 0, max: 100, interval: 1h, unit: "%" }');
  dir = mkdtempSync(join(tmpdir(), 'starling-prom-'));
  const target = new URL(porch.web!.url!).host;
  writeFileSync(join(dir, 'prometheus.yml'), `global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: starling
    metrics_path: /metrics
    static_configs: [ { targets: ["${target}"] } ]
`);
  const listen = `127.0.0.1:${await freeTcpPort()}`;
  promUrl = `http://${listen}`;
  prometheus = spawn(PROMETHEUS, [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=${listen}`], { stdio: 'ignore' });
}, 30_000);

afterAll(async () => {
  prometheus?.kill('SIGKILL');
  for (const s of sups.reverse()) await s.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Prometheus's instant query: [labels, value] of each series. */
async function query(q: string): Promise<[Record<string, string>, number][]> {
  try {
    const r = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`);
    const j = (await r.json()) as { data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
    return j.data.result.map((s) => [s.metric, Number(s.value[1])]);
  } catch {
    return []; // not up yet
  }
}

/** Queries until at least `count` series come back (Prometheus starting, its first scrapes), up to a minute. */
async function poll(q: string, count: number): Promise<[Record<string, string>, number][]> {
  let got: [Record<string, string>, number][] = [];
  const deadline = Date.now() + 60_000;
  while ((got = await query(q)).length < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 500));
  return got;
}

it('a real Prometheus scrapes the web view: each sensor\'s last value with its node, topic and unit', async () => {
  const got = await poll('starling_sample_value', 2);
  const state = (await (await fetch(new URL('/api/state', porch.web!.url!))).json()) as { topics: { topic: string; value: number }[] };
  const expected = Object.fromEntries(state.topics.map((t) => [t.topic, t.value]));
  const byTopic = Object.fromEntries(got.map(([m, v]) => [m.topic!, { ...m, v }]));
  expect(byTopic['porch/air']).toMatchObject({ node: 'porch', unit: '°C', job: 'starling' });
  expect(byTopic['shed/soil']).toMatchObject({ node: 'shed', unit: '%' });
  // The exposition writes the value as JavaScript prints it; Prometheus parses it back to the same double.
  expect(byTopic['porch/air']!.v).toBe(expected['porch/air']);
  expect(byTopic['shed/soil']!.v).toBe(expected['shed/soil']);
}, 90_000);

it('and the services\' health and counters', async () => {
  const healthy = await poll('starling_service_healthy{service="device"}', 1);
  expect(healthy.map(([, v]) => v)).toEqual([1]);
  const requests = await query('starling_service_stat{service="web",name="requests"}');
  // Each scrape is a request to the web view.
  expect(requests[0]?.[1]).toBeGreaterThan(0);
}, 60_000);
