// Status across the mesh (services/fleet.ts): three devices on the loopback mesh, each publishing its status
// topics (<prefix>@node/…) every 200 ms; the first's fleet service has a row for each with the numbers they
// reported, its bridge-facing telemetry carries them like any sample, and a node that leaves is shown gone
// with its last report. `starling status --mesh` prints these rows (meshTable; over D-Bus in test/net/dbus).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parseConfig } from '../../runtime/config/load.ts';
import { LogRing } from '../../runtime/supervisor/log.ts';
import { Supervisor } from '../../runtime/supervisor/supervisor.ts';
import { servicesFrom, type Composition } from '../../app/compose.ts';
import { Subscriber } from '../../runtime/telemetry/subscriber.ts';
import { meshTable } from '../../app/cli/device.ts';
import { totals, type MeshRow } from '../../services/fleet.ts';
import { beaconPort, until } from '../helpers.ts';

const port = beaconPort();
const sups = new Map<string, Supervisor>();
const nodes = new Map<string, Composition>();

async function device(name: string, follow = true): Promise<void> {
  const config = parseConfig(`simulate: true
node: { name: ${name}, iface: lo, port: ${port} }
security: { mode: none }
telemetry: { prefix: ${name}/ }
web: { listen: "off" }
fleet: { status_interval: 200ms, follow: ${follow} }
sensors:
  - { platform: sim, name: air, interval: 1s }
`);
  const log = new LogRing(1000, null);
  const c = servicesFrom(config, log);
  const sup = new Supervisor(c.services, log);
  c.fleet.supervisor = sup;
  sups.set(name, sup);
  nodes.set(name, c);
  await sup.start();
}

beforeAll(async () => {
  for (const n of ['porch', 'shed', 'attic']) await device(n);
}, 30_000);
afterAll(async () => {
  for (const s of sups.values()) await s.stop();
});

const rows = (): MeshRow[] => nodes.get('porch')!.fleet.mesh();

it('one row per node, with what each reported: uptime, health, RSS, load, spool and drops', async () => {
  await until(() => rows().length === 3 && rows().every((r) => r.rss !== undefined), 15_000, 'three nodes with their status');
  const r = rows();
  expect(r.map((x) => [x.name, x.presence])).toEqual([['porch', 'self'], ['attic', 'alive'], ['shed', 'alive']]);
  for (const x of r) {
    expect(x).toMatchObject({ healthy: 1, spool: 0, dropped: 0, uuid: expect.stringMatching(/^[0-9A-F]{32}$/) });
    // A whole Node process with zeromq: tens of MB, not zero and not gigabytes.
    expect(x.rss!).toBeGreaterThan(10);
    expect(x.rss!).toBeLessThan(2000);
    expect(x.uptime!).toBeGreaterThanOrEqual(0);
    expect(x.load!).toBeGreaterThanOrEqual(0);
  }
  const shed = nodes.get('shed')!;
  expect(r.find((x) => x.name === 'shed')!.uuid).toBe(shed.device.node!.uuid.toString('hex').toUpperCase());
  const table = meshTable(r, Date.now());
  expect(table[0]).toMatch(/^NODE +PRESENCE +VERSION +UPTIME +HEALTH +RSS +TEMP +LOAD +SPOOL +DROPPED +REPORTED$/);
  expect(table[1]).toMatch(/^porch +self .* healthy +\d+\.\dMB .* now$/);
  expect(table[3]).toMatch(/^shed +alive .* healthy .* \d+s ago$/);
});

it('the status topics are telemetry like any other: a plain subscriber sees shed/@node/rss', async () => {
  const sub = new Subscriber();
  sub.start();
  const seen: [string, number, string][] = [];
  sub.on('batch', (b) => seen.push([b.topic, b.value(b.count - 1), b.unit]));
  const pub = nodes.get('shed')!.device.publisher!;
  await sub.connect(pub.endpoints[0]!);
  await until(() => seen.some(([t]) => t === 'shed/@node/rss'), 5000, 'shed/@node/rss');
  await sub.stop();
  expect(seen.find(([t]) => t === 'shed/@node/rss')![2]).toBe('MB');
  expect(seen.find(([t]) => t === 'shed/@node/healthy')![1]).toBe(1);
});

it('a node that leaves is shown gone, with its last report', async () => {
  await sups.get('shed')!.stop();
  sups.delete('shed');
  await until(() => rows().find((x) => x.name === 'shed')?.presence === 'gone', 30_000, 'shed gone');
  const shed = rows().find((x) => x.name === 'shed')!;
  expect(shed.rss!).toBeGreaterThan(10);
  expect(Date.now() - shed.updated!).toBeLessThan(60_000);
}, 40_000);

it('fleet.follow false: a leaf reports its status to the others but follows none of theirs (nor their logs)', async () => {
  await device('leaf', false);
  const leaf = nodes.get('leaf')!.fleet;
  // Its status reaches porch, which follows everyone.
  await until(() => rows().find((x) => x.name === 'leaf')?.rss !== undefined, 15_000, 'porch to hear leaf\'s status');
  // It sees its peers by presence only, and no log lines but its own.
  await until(() => leaf.mesh().filter((x) => x.presence === 'alive').length === 2, 15_000, 'leaf to see porch and attic');
  await new Promise((r) => setTimeout(r, 1000)); // five status intervals
  expect(leaf.mesh().filter((x) => x.presence !== 'self').every((x) => x.rss === undefined)).toBe(true);
  expect(leaf.mesh().find((x) => x.presence === 'self')!.rss).toBeGreaterThan(10);
  expect(leaf.meshTail(1000).every((l) => l.node === 'leaf')).toBe(true);
  expect(leaf.stats()['logs.peers']).toBeUndefined(); // no log follower at all
  expect(nodes.get('porch')!.fleet.stats()['logs.peers']).toBe(2); // porch follows attic's and leaf's
}, 40_000);

it('sums every counter of something dropped, and every spool', () => {
  expect(totals({ mqtt: { 'spool.queued': 5, 'spool.dropped': 2, forwarded: 9 }, device: { 'telemetry.batchesDropped': 3, 'mesh.sequenceGaps': 1 }, influx: { 'spool.queued': 1 } }))
    .toEqual({ dropped: 5, spool: 6 });
});
