// A fleet of simulated peers in one process, for the web view's scale test and bench/web.ts: N mesh nodes on
// one interface, each with a telemetry publisher advertised as a device's (prefix `simNN/`, one GPIO output
// named `relay` it does not drive), publishing T topics every interval. Prints {"event":"ready"} once every
// node has started, {"event":"published", samples} when asked by a line on stdin, and ends when stdin closes.
//
//   node dist/bench/web-fleet.mjs --nodes 50 --topics 4 --interval-ms 1000 --iface lo --port 5670
import { parseArgs } from 'node:util';
import { context } from 'zeromq';
import { ZreNode } from '../runtime/zre/node.ts';
import { Publisher } from '../runtime/telemetry/publisher.ts';
import { telemetryHeaders } from '../runtime/telemetry/mesh.ts';
import { emit, waitForStdinEnd } from './lib/child.ts';

const { values } = parseArgs({ options: { nodes: { type: 'string' }, topics: { type: 'string' }, 'interval-ms': { type: 'string' }, iface: { type: 'string' }, port: { type: 'string' } } });
const count = Number(values.nodes ?? 50);
const topics = Number(values.topics ?? 4);
const interval = Number(values['interval-ms'] ?? 1000);
const iface = values.iface;
if (!iface) throw new Error('--iface is required (lo, or an interface inside a namespace)');
const port = Number(values.port ?? 5670);

// Every node meets every other: N × (N − 1) DEALERs in this one process, beyond libzmq's default of 1,023
// sockets (run it with a raised `ulimit -n`, as the test and the bench do).
context.maxSockets = Math.max(1024, 4 * count * count);
const nodes: ZreNode[] = [];
const pubs: Publisher[] = [];
for (let i = 0; i < count; i++) {
  const name = `sim${String(i).padStart(2, '0')}`;
  const pub = new Publisher({ endpoints: [`tcp://${iface === 'lo' ? '127.0.0.1' : iface}:*`] });
  await pub.start();
  const node = new ZreNode({ name, iface, beaconPort: port });
  for (const [k, v] of Object.entries(telemetryHeaders(pub, undefined, { prefix: `${name}/`, outputs: ['relay'], inputs: [] }))) node.setHeader(k, v);
  await node.start();
  nodes.push(node);
  pubs.push(pub);
}
let samples = 0;
let step = 0;
const timer = setInterval(() => {
  step++;
  const now = Date.now();
  for (let i = 0; i < pubs.length; i++) {
    for (let t = 0; t < topics; t++) {
      pubs[i]!.publish(`${nodes[i]!.name}/t${t}`, 20 + 5 * Math.sin((step + i * 7 + t) / 10), { unit: '°C', ts: now });
      samples++;
    }
  }
}, interval);
emit({ event: 'ready', nodes: count, topics: count * topics });
process.stdin.on('data', () => emit({ event: 'published', samples }));
await waitForStdinEnd();
clearInterval(timer);
await Promise.all(nodes.map((n) => n.stop()));
await Promise.all(pubs.map((p) => p.stop()));
emit({ event: 'done', samples });
process.exit(0);
