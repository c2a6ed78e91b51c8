/**
 * ZRE node figures, printed as a table (or --json):
 *   - discovery: second node's start() → ENTER seen on both sides;
 *   - one-way whisper throughput, 16 B and 1 KiB, between two processes;
 *   - idle RSS of one node after it has settled;
 * and beside the whisper figures, in the same run, their floor: bench/c/whisper.c, a DEALER → ROUTER pair on
 * Debian's libzmq sending the frames a ZRE WHISPER takes one way (the transport Zyre C itself sits on), so each
 * is printed as a ratio to it; Zyre C's own figures (issue 18, veth, medians of 3) stand beside as the reference.
 * Each node runs in a process of its own. By default over loopback; with --netns (root) each process runs in a
 * network namespace of its own joined by veth through a bridge, as the Zyre C reference figures were taken.
 *
 *   node dist/bench/zre.mjs [--netns] [--json] [--count16 N] [--count1k N]
 */
import { child as spawnChild, emit, waitForStdinEnd, type Child } from './lib/child.ts';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ZreNode } from '../runtime/zre/node.ts';
import { Segment } from '../test/net/netns.ts';
import { buildC, ZYRE_C } from './lib/c.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const self = fileURLToPath(import.meta.url);
const wall = () => performance.timeOrigin + performance.now();

// --- roles, each in its own process ----------------------------------------------------------------------

async function receiver(iface: string, port: number): Promise<void> {
  const node = new ZreNode({ iface, beaconPort: port, name: 'receiver' });
  let count = 0;
  let bytes = 0;
  let first = 0;
  node.on('enter', () => emit({ event: 'enter', at: wall() }));
  node.on('whisper', ({ content }) => {
    const c = content[0]!;
    if (c.length === 3 && c.toString() === 'END') {
      emit({ event: 'done', count, bytes, seconds: (performance.now() - first) / 1000, rss: process.memoryUsage().rss });
      count = 0;
      bytes = 0;
      return;
    }
    if (count === 0) first = performance.now();
    count++;
    bytes += c.length;
  });
  await node.start();
  emit({ event: 'started', endpoint: node.endpoint });
  await waitForStdinEnd();
  await node.stop();
}

async function sender(iface: string, port: number, runs: [number, number][]): Promise<void> {
  const startAt = wall();
  const node = new ZreNode({ iface, beaconPort: port, name: 'sender' });
  const entered = new Promise<string>((resolve) => node.once('enter', (p) => {
    emit({ event: 'enter', at: wall(), start: startAt });
    resolve(p.peer);
  }));
  await node.start();
  const peer = await entered;
  for (const [size, count] of runs) {
    const payload = Buffer.alloc(size, 0x61);
    for (let i = 0; i < count; i++) {
      while (!node.whisper(peer, payload)) await node.drained(peer);
    }
    while (!node.whisper(peer, 'END')) await node.drained(peer);
    await node.flush(peer, 60_000);
  }
  emit({ event: 'sent' });
  await node.stop();
}

/**
 * One node joins the receiver and reports start() → its own ENTER (the receiver reports its side). `warm`: two
 * nodes of the process first meet on another beacon port and leave, so libzmq's context and I/O thread exist
 * and the discovery path is compiled, as in a supervisor that restarts its mesh service; without it the figure
 * includes what a fresh process pays for its first ZeroMQ socket and first HELLO.
 */
async function joiner(iface: string, port: number, warm: boolean): Promise<void> {
  if (warm) {
    // Two nodes of this process meet on a beacon port of their own, then leave.
    const w = [new ZreNode({ iface, beaconPort: port + 7, name: 'warmup' }), new ZreNode({ iface, beaconPort: port + 7, name: 'warmup' })];
    const met = Promise.all(w.map((n) => new Promise((r) => n.once('enter', r))));
    await Promise.all(w.map((n) => n.start()));
    await met;
    await Promise.all(w.map((n) => n.stop()));
  }
  const node = new ZreNode({ iface, beaconPort: port, name: 'joiner' });
  const startAt = wall();
  const entered = new Promise<void>((resolve) => node.once('enter', () => {
    emit({ event: 'enter', at: wall(), start: startAt });
    resolve();
  }));
  await node.start();
  const started = wall() - startAt;
  await entered;
  emit({ event: 'started', ms: started });
  await waitForStdinEnd();
  await node.stop();
}

/** RSS after 3 s idle with one node running, or (`withNode` false) with only Node and zeromq loaded. */
async function idle(iface: string, port: number, withNode: boolean): Promise<void> {
  const node = withNode ? new ZreNode({ iface, beaconPort: port, name: 'idle' }) : undefined;
  await node?.start();
  await new Promise((r) => setTimeout(r, 3000));
  global.gc?.();
  emit({ event: 'rss', rss: process.memoryUsage().rss });
  await node?.stop();
}


// --- the conductor ---------------------------------------------------------------------------------------

/** This script in another role, in network namespace `ns` when given. */
function child(ns: string | undefined, args: string[]): Child {
  const flags = ['--expose-gc', ...(process.env.BENCH_FLAGS ? process.env.BENCH_FLAGS.split(' ') : [])];
  return spawnChild([process.execPath, ...flags, self, ...args], ns);
}


async function conduct(): Promise<void> {
  const { values } = parseArgs({
    options: { netns: { type: 'boolean' }, json: { type: 'boolean' }, count16: { type: 'string' }, count1k: { type: 'string' }, repeat: { type: 'string' } },
  });
  const repeat = Math.max(1, Number(values.repeat ?? 3));
  const count16 = Number(values.count16 ?? 200_000);
  const count1k = Number(values.count1k ?? 200_000);
  let seg: Segment | undefined;
  let ifaceOf = (_i: number) => 'lo';
  let nsOf = (_i: number): string | undefined => undefined;
  if (values.netns) {
    seg = new Segment().create(2);
    ifaceOf = () => 'eth0';
    nsOf = (i) => seg!.hosts[i - 1];
  }
  const port = 30000 + (process.pid % 5000);
  try {
    const recv = child(nsOf(1), ['--role', 'receiver', '--iface', ifaceOf(1), '--port', String(port)]);
    await recv.next('started');
    const send = child(nsOf(2), ['--role', 'sender', '--iface', ifaceOf(2), '--port', String(port), '--runs',
      [...Array(repeat).fill(`16:${count16}`), ...Array(repeat).fill(`1024:${count1k}`)].join(',')]);
    const sEnter = await send.next('enter');
    const rEnter = await recv.next('enter');
    const discoveryMs = Math.max(sEnter.at as number, rEnter.at as number) - (sEnter.start as number);
    const smalls: Record<string, unknown>[] = [];
    const larges: Record<string, unknown>[] = [];
    for (let i = 0; i < repeat; i++) smalls.push(await recv.next('done'));
    for (let i = 0; i < repeat; i++) larges.push(await recv.next('done'));
    await send.next('sent');
    await send.end();
    // Discovery again, cold and warm joiners (medians of 5): where the first figure's milliseconds go.
    const joins = async (warm: boolean) => {
      const runs: { both: number; start: number }[] = [];
      for (let i = 0; i < 5; i++) {
        const j = child(nsOf(2), ['--role', 'joiner', '--iface', ifaceOf(2), '--port', String(port), ...(warm ? ['--warm'] : [])]);
        const jEnter = await j.next('enter');
        const rEnter = await recv.next('enter');
        const started = await j.next('started');
        runs.push({ both: Math.max(jEnter.at as number, rEnter.at as number) - (jEnter.start as number), start: started.ms as number });
        await j.end();
        await new Promise((r) => setTimeout(r, 100));
      }
      const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[2]!;
      return { both: med(runs.map((r) => r.both)), start: med(runs.map((r) => r.start)) };
    };
    const cold = await joins(false);
    const warm = await joins(true);
    await recv.end();

    // The floor: the C pair, the same sizes and counts, the same hosts, medians of `repeat`.
    const cdir = mkdtempSync(join(tmpdir(), 'starling-bench-zre-'));
    let floorBin: string | undefined;
    let floorMissing = '';
    try {
      floorBin = buildC('whisper', cdir);
    } catch (e) {
      floorMissing = `not run: ${(e as Error).message}`;
    }
    const floor = async (size: number, count: number): Promise<Record<string, unknown>[] | string> => {
      if (!floorBin) return floorMissing;
      const runs: Record<string, unknown>[] = [];
      for (let i = 0; i < repeat; i++) {
        const endpoint = `tcp://${seg ? seg.address(1) : '127.0.0.1'}:${port + 2 + i}`;
        const r = spawnChild([floorBin, 'recv', endpoint, String(count), String(size)], nsOf(1));
        await r.next('ready');
        const sn = spawnChild([floorBin, 'send', endpoint, String(count), String(size)], nsOf(2));
        const res = await r.next('result');
        runs.push({ count: res.msgs, seconds: res.seconds, rss: res.rss, bad: res.bad });
        await sn.end();
        await r.end();
      }
      return runs;
    };
    const floor16 = await floor(16, count16);
    const floor1k = await floor(1024, count1k);
    rmSync(cdir, { recursive: true, force: true });
    const rssOf = async (role: string) => {
      const c = child(nsOf(1), ['--role', role, '--iface', ifaceOf(1), '--port', String(port + 1)]);
      const rss = (await c.next('rss')).rss as number;
      await c.end();
      return rss;
    };
    const rss = await rssOf('idle');
    const baseRss = await rssOf('baseline');

    const rate = (d: Record<string, unknown>) => (d.count as number) / (d.seconds as number);
    // The median run by rate: this machine's scheduling noise moves single runs by ±20 %.
    const median = (runs: Record<string, unknown>[]) => [...runs].sort((x, y) => rate(x) - rate(y))[Math.floor(runs.length / 2)]!;
    const small = median(smalls);
    const large = median(larges);
    const range = (runs: Record<string, unknown>[]) => `${Math.round(Math.min(...runs.map(rate)) / 1000)}–${Math.round(Math.max(...runs.map(rate)) / 1000)}k`;
    const lost = (runs: Record<string, unknown>[], n: number) => runs.reduce((sum, r) => sum + n - (r.count as number), 0);
    const floorOf = (runs: Record<string, unknown>[] | string) => (typeof runs === 'string' ? undefined : median(runs));
    const f16 = floorOf(floor16);
    const f1k = floorOf(floor1k);
    const ratio = (a: Record<string, unknown>, f: Record<string, unknown> | undefined) => (f ? `${(rate(a) / rate(f)).toFixed(3)} ×` : '');
    const floorCell = (runs: Record<string, unknown>[] | string) => (typeof runs === 'string' ? runs : `${Math.round(rate(median(runs)) / 1000)}k msg/s (${range(runs)})`);
    const mb = (b: number) => `${(b / 1048576).toFixed(1)} MB`;
    const rows = [
      { figure: 'discovery (2nd node start → ENTER on both)', starling: `${discoveryMs.toFixed(1)} ms`, floor: '', ratio: '', zyre: `${ZYRE_C.discoveryMs} ms` },
      { figure: '  again, fresh process (median of 5)', starling: `${cold.both.toFixed(1)} ms (start() ${cold.start.toFixed(1)} ms)`, floor: '', ratio: '', zyre: '' },
      { figure: '  warm process: ZeroMQ up (median of 5)', starling: `${warm.both.toFixed(1)} ms (start() ${warm.start.toFixed(1)} ms)`, floor: '', ratio: '', zyre: `${ZYRE_C.discoveryMs} ms` },
      { figure: `whisper 16 B one way (median of ${repeat})`, starling: `${Math.round(rate(small) / 1000)}k msg/s (${range(smalls)})`, floor: floorCell(floor16), ratio: ratio(small, f16), zyre: `${ZYRE_C.whisper16PerSec / 1000}k msg/s (aim: Starling 1.5 ×)` },
      { figure: `whisper 1 KiB one way (median of ${repeat})`, starling: `${Math.round(rate(large) / 1000)}k msg/s (${range(larges)})`, floor: floorCell(floor1k), ratio: ratio(large, f1k), zyre: `${ZYRE_C.whisper1kPerSec / 1000}k msg/s (aim: Starling 1.2 ×)` },
      { figure: 'receiver RSS after 16 B / 1 KiB runs', starling: `${mb(small.rss as number)} / ${mb(large.rss as number)}`, floor: f16 && f1k ? `${mb(f16.rss as number)} / ${mb(f1k.rss as number)}` : '', ratio: '', zyre: `${ZYRE_C.receiverRssMB} MB (aim: under 2 × idle)` },
      { figure: 'idle RSS, one node', starling: mb(rss), floor: '', ratio: '', zyre: `${ZYRE_C.idleRssMB} MB` },
      { figure: '  of which Node + zeromq, no node', starling: mb(baseRss), floor: '', ratio: '', zyre: '' },
    ];
    if (values.json) {
      process.stdout.write(JSON.stringify({ transport: values.netns ? 'veth' : 'loopback', discoveryMs, discoveryColdMs: cold.both, discoveryWarmMs: warm.both, whisper16PerSec: rate(small), whisper1kPerSec: rate(large), idleRssBytes: rss, baselineRssBytes: baseRss, receiverRss16: small.rss, receiverRss1k: large.rss, floor16PerSec: f16 ? rate(f16) : null, floor1kPerSec: f1k ? rate(f1k) : null, lost: { small: lost(smalls, count16), large: lost(larges, count1k) } }) + '\n');
      return;
    }
    const transport = values.netns ? 'two network namespaces over veth' : 'loopback (use --netns as root for veth)';
    console.log(`ZRE node bench — ${transport}; Node ${process.version}; each node in its own process`);
    const badFloor = [floor16, floor1k].flatMap((r) => (typeof r === 'string' ? [] : r)).reduce((n, r) => n + (r.bad as number), 0);
    console.log(`${repeat} runs of ${count16} × 16 B and ${count1k} × 1 KiB; lost: ${lost(smalls, count16)} and ${lost(larges, count1k)}; the floor's receiver saw ${badFloor} out-of-sequence or malformed\n`);
    const w = [44, 34, 30, 12, 32];
    const line = (c: string[]) => '| ' + c.map((x, i) => x.padEnd(w[i]!)).join(' | ') + ' |';
    console.log(line(['figure', 'Starling (this run)', 'libzmq floor, C (this run)', '÷ floor', 'Zyre C 2.0.1 (issue 18, veth)']));
    console.log('|' + w.map((n) => '-'.repeat(n + 2)).join('|') + '|');
    for (const r of rows) console.log(line([r.figure, r.starling, r.floor, r.ratio, r.zyre]));
  } finally {
    seg?.destroy();
  }
}

// --- entry -----------------------------------------------------------------------------------------------

const { values: role } = parseArgs({
  options: { role: { type: 'string' }, iface: { type: 'string' }, port: { type: 'string' }, runs: { type: 'string' }, warm: { type: 'boolean' } },
  strict: false,
});
const iface = String(role.iface ?? 'lo');
const port = Number(role.port ?? 5670);
if (role.role === 'receiver') await receiver(iface, port);
else if (role.role === 'sender') await sender(iface, port, String(role.runs).split(',').map((r) => r.split(':').map(Number) as [number, number]));
else if (role.role === 'joiner') await joiner(iface, port, role.warm === true);
else if (role.role === 'idle') await idle(iface, port, true);
else if (role.role === 'baseline') await idle(iface, port, false);
else await conduct();
