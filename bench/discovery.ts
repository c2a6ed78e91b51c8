/**
 * Discovery time: a second node starts beside a running one; how long until each sees the other (ENTER), by
 * UDP beacon and by gossip, and where the time goes: the new node's start() (interface, inbox bind, beacon
 * socket or gossip connection), then the first beacon or tuple, then the HELLO exchange. Both nodes run in this
 * process on loopback; medians of --runs (default 7).
 *
 *   node dist/bench/discovery.mjs [--runs N] [--json]
 *
 * The Zyre C reference (issue 12): about 2 ms by beacon, over veth, each node in its own process.
 */
import { parseArgs } from 'node:util';
import { createServer } from 'node:net';
import { ZreNode, type ZreNodeOptions } from '../runtime/zre/node.ts';

const { values } = parseArgs({ options: { runs: { type: 'string' }, json: { type: 'boolean' } } });
const RUNS = Number(values.runs ?? 7);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const { port } = srv.address() as { port: number };
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

interface Run { start: number; newSees: number; oldSees: number; both: number }

async function once(mode: 'beacon' | 'gossip', i: number): Promise<Run> {
  const beaconPort = 36000 + (process.pid % 500) * 10 + i;
  const seed = `tcp://127.0.0.1:${await freePort()}`;
  const base: ZreNodeOptions = { iface: 'lo', beaconPort };
  const first = new ZreNode({ ...base, name: 'first', ...(mode === 'gossip' ? { gossip: { bind: seed } } : {}) });
  await first.start();
  await new Promise((r) => setTimeout(r, 200));
  const second = new ZreNode({ ...base, name: 'second', ...(mode === 'gossip' ? { gossip: { connect: [seed] } } : {}) });
  const t0 = performance.now();
  const newSees = new Promise<number>((r) => second.once('enter', () => r(performance.now() - t0)));
  const oldSees = new Promise<number>((r) => first.once('enter', () => r(performance.now() - t0)));
  await second.start();
  const start = performance.now() - t0;
  const [a, b] = await Promise.all([newSees, oldSees]);
  await Promise.all([second.stop(), first.stop()]);
  return { start, newSees: a, oldSees: b, both: Math.max(a, b) };
}

const rows: { mode: string; start: number; newSees: number; oldSees: number; both: number; cold: number }[] = [];
for (const mode of ['beacon', 'gossip'] as const) {
  const runs: Run[] = [];
  for (let i = 0; i < RUNS; i++) runs.push(await once(mode, i));
  // The first run of the process pays for what every later one finds ready (JIT, libzmq's context and I/O thread).
  rows.push({ mode, cold: runs[0]!.both, start: median(runs.map((r) => r.start)), newSees: median(runs.map((r) => r.newSees)), oldSees: median(runs.map((r) => r.oldSees)), both: median(runs.map((r) => r.both)) });
}
if (values.json) process.stdout.write(JSON.stringify(rows) + '\n');
else {
  console.log(`| discovery (medians of ${RUNS}, loopback, one process) | start() | new node's ENTER | old node's ENTER | both | both, first run (cold) |`);
  console.log('|---|---|---|---|---|---|');
  const ms = (x: number) => `${x.toFixed(1)} ms`;
  for (const r of rows) console.log(`| ${r.mode} | ${ms(r.start)} | ${ms(r.newSees)} | ${ms(r.oldSees)} | ${ms(r.both)} | ${ms(r.cold)} |`);
}
