/**
 * CURVE against plain, side by side in one run (issue 13): ZRE whispers of 16 B and 1 KiB between two nodes,
 * batched telemetry samples over tcp, and the time from connect to the first message. Both sides run in this
 * process on loopback, so each figure counts the sender's and the receiver's work on one core; the ratio
 * CURVE/plain is the figure to read. Medians of --runs (default 3).
 *
 *   node dist/bench/curve.mjs [--runs N] [--json]
 */
import { parseArgs } from 'node:util';
import { Dealer, Router, curveKeyPair } from 'zeromq';
import { ZreNode, type ZreCurve } from '../runtime/zre/node.ts';
import { Publisher } from '../runtime/telemetry/publisher.ts';
import { Subscriber } from '../runtime/telemetry/subscriber.ts';
import { Zap } from '../runtime/security/zap.ts';

const { values } = parseArgs({ options: { runs: { type: 'string' }, json: { type: 'boolean' } } });
const RUNS = Number(values.runs ?? 3);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
type Mode = 'plain' | 'curve';
const ka = curveKeyPair();
const kb = curveKeyPair();
const curveOf = (own: { publicKey: string; secretKey: string }, other: string): ZreCurve => ({ ...own, allows: (k) => k === other });

let port = 37000 + (process.pid % 500) * 4;

/** Whispers of `size` bytes from a to b for about a second: messages per second received. */
async function whispers(mode: Mode, size: number): Promise<number> {
  port++;
  const a = new ZreNode({ iface: 'lo', beaconPort: port, beaconInterval: 100, ...(mode === 'curve' ? { curve: curveOf(ka, kb.publicKey) } : {}) });
  const b = new ZreNode({ iface: 'lo', beaconPort: port, beaconInterval: 100, ...(mode === 'curve' ? { curve: curveOf(kb, ka.publicKey) } : {}) });
  const met = new Promise((r) => a.once('enter', r));
  await b.start();
  await a.start();
  await met;
  let got = 0;
  b.on('whisper', () => got++);
  const payload = Buffer.alloc(size, 0x61);
  const t0 = performance.now();
  let sent = 0;
  while (performance.now() - t0 < 1000) {
    for (let i = 0; i < 1000; i++) {
      while (!a.whisper(b.id, payload)) await a.drained(b.id);
      sent++;
    }
    await new Promise((r) => setImmediate(r));
  }
  await a.flush(b.id, 30_000);
  const rate = got / ((performance.now() - t0) / 1000);
  await Promise.all([a.stop(), b.stop()]);
  if (got < sent) throw new Error(`whispers lost: ${sent - got} of ${sent}`);
  return rate;
}

/** Batched one-value samples over tcp for about a second: samples per second received. */
async function telemetry(mode: Mode): Promise<number> {
  const pub = new Publisher({
    endpoints: ['tcp://127.0.0.1:*'],
    ...(mode === 'curve' ? { curve: { ...ka, allows: (k: string) => k === kb.publicKey } } : {}),
  });
  await pub.start();
  const sub = new Subscriber(mode === 'curve' ? { curve: kb } : {});
  sub.start();
  let got = 0;
  sub.on('batch', (b, from) => (got += b.count - from));
  await sub.connect(pub.endpoints[0]!, undefined, mode === 'curve' ? ka.publicKey : undefined);
  await pub.waitForSubscriber('t', 5000);
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < 1000) {
    for (let i = 0; i < 10_000; i++) pub.publish('t', n++);
    await pub.drained();
    await new Promise((r) => setImmediate(r));
  }
  pub.flushAll();
  await pub.drained();
  const end = performance.now() + 5000;
  while (got < n && performance.now() < end) await new Promise((r) => setTimeout(r, 5));
  const rate = got / ((performance.now() - t0) / 1000);
  await sub.stop();
  await pub.stop(200);
  return rate;
}

/** A new DEALER's connect to its first message received by a ROUTER: median ms of 20. */
async function connectTime(mode: Mode): Promise<number> {
  const zap = mode === 'curve' ? await Zap.shared() : undefined;
  const reg = zap?.register('bench', (k) => k === kb.publicKey);
  const router = new Router({ linger: 0, ...(mode === 'curve' ? { curveServer: true, curvePublicKey: ka.publicKey, curveSecretKey: ka.secretKey, zapDomain: reg!.domain, zapEnforceDomain: true } : {}) });
  await router.bind('tcp://127.0.0.1:*');
  const times: number[] = [];
  for (let i = 0; i < 20; i++) {
    const d = new Dealer({ linger: 0, ...(mode === 'curve' ? { curveServerKey: ka.publicKey, curvePublicKey: kb.publicKey, curveSecretKey: kb.secretKey } : {}) });
    const t0 = performance.now();
    d.connect(router.lastEndpoint!);
    await d.send('first');
    await router.receive();
    times.push(performance.now() - t0);
    d.close();
  }
  router.close();
  reg?.unregister();
  return median(times);
}

const figures: { figure: string; unit: string; plain: number; curve: number }[] = [];
async function measure(figure: string, unit: string, fn: (m: Mode) => Promise<number>): Promise<void> {
  const runs: Record<Mode, number[]> = { plain: [], curve: [] };
  // Alternate which mode goes first, so warm-up and drift fall on both alike.
  for (let i = 0; i < RUNS; i++) for (const m of i % 2 ? (['curve', 'plain'] as const) : (['plain', 'curve'] as const)) runs[m].push(await fn(m));
  figures.push({ figure, unit, plain: median(runs.plain), curve: median(runs.curve) });
}

await measure('ZRE whisper 16 B', 'msg/s', (m) => whispers(m, 16));
await measure('ZRE whisper 1 KiB', 'msg/s', (m) => whispers(m, 1024));
await measure('telemetry over tcp, batched (256 per batch)', 'samples/s', telemetry);
await measure('connect → first message', 'ms', connectTime);

if (values.json) process.stdout.write(JSON.stringify(figures) + '\n');
else {
  console.log(`CURVE against plain (medians of ${RUNS}, loopback, both ends in one process; Node ${process.version})\n`);
  console.log('| figure | plain | CURVE | CURVE / plain |');
  console.log('|---|---|---|---|');
  const fmt = (v: number, unit: string) => (unit === 'ms' ? `${v.toFixed(2)} ms` : `${v >= 1e6 ? (v / 1e6).toFixed(2) + 'M' : Math.round(v / 1000) + 'k'} ${unit}`);
  for (const f of figures) console.log(`| ${f.figure} | ${fmt(f.plain, f.unit)} | ${fmt(f.curve, f.unit)} | ${Math.round((f.curve / f.plain) * 100)} % |`);
}
process.exit(0);
