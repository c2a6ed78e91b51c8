/**
 * Telemetry figures, side by side in one run, printed as a table (or --json):
 *   - samples/s through Starling's publisher and subscriber, unbatched (one sample per message) and batched,
 *     over tcp and ipc;
 *   - the physical reference: a minimal C libzmq PUB/SUB (bench/c/pubsub.c, built here with cc -lzmq), one
 *     100-byte message per sample;
 *   - epgm samples/s at a configured rate between two network namespaces (root only);
 *   - RSS of the publishing and the subscribing process at the end of each run.
 * Publisher and subscriber run in separate processes.
 *
 *   node dist/bench/telemetry.mjs [--json] [--samples N] [--batch N] [--rate KBIT]
 */
import { execFileSync } from 'node:child_process';
import { child, emit, waitForStdinEnd } from './lib/child.ts';
import { buildC } from './lib/c.ts';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { capability } from 'zeromq';
import { Publisher } from '../runtime/telemetry/publisher.ts';
import { Subscriber } from '../runtime/telemetry/subscriber.ts';
import { Segment } from '../test/net/netns.ts';

const self = fileURLToPath(import.meta.url);

// --- roles --------------------------------------------------------------------------------------------------

async function subRole(endpoint: string, total: number, rate: number): Promise<void> {
  const sub = new Subscriber({ rate });
  let got = 0;
  let t0 = 0;
  let t1 = 0;
  let sum = 0;
  const done = new Promise<void>((resolve) => {
    sub.on('batch', (b, from) => {
      if (got === 0) t0 = performance.now();
      // Touch every value, as a consumer would.
      for (let i = from; i < b.count; i++) sum += b.value(i);
      got += b.count - from;
      t1 = performance.now();
      if (got >= total) resolve();
    });
  });
  sub.start();
  await sub.connect(endpoint);
  emit({ event: 'ready' });
  // All arrived, or the conductor says the publisher is done (lossy transports never reach the total).
  await Promise.race([done, waitForStdinEnd()]);
  emit({ event: 'result', samples: got, seconds: (t1 - t0) / 1000, rss: process.memoryUsage().rss, lost: sub.stats().samplesLost, sum });
  await sub.stop();
}

async function pubRole(endpoint: string, total: number, batch: number, rate: number): Promise<void> {
  const pub = new Publisher({ endpoints: [endpoint], batchSamples: batch, rate });
  await pub.start();
  emit({ event: 'bound', endpoint: pub.endpoints[0] });
  // epgm has no subscriptions to wait for: the conductor says when the subscriber is up.
  if (!endpoint.startsWith('epgm')) await pub.waitForSubscriber('s', 10_000);
  else await new Promise((r) => setTimeout(r, 1500));
  const t0 = Date.now();
  for (let i = 0; i < total; i++) {
    // false: the send queue is full; wait instead of letting the oldest batch be pushed out.
    if (!pub.publish('s/x', i & 0xff, { ts: t0 + i / 1000 })) await pub.drained();
  }
  pub.flushAll();
  await pub.drained();
  emit({ event: 'sent', rss: process.memoryUsage().rss, dropped: pub.stats().samplesDropped, mutes: pub.stats().muteEvents });
  await waitForStdinEnd();
  await pub.stop(100);
}


// --- the conductor ------------------------------------------------------------------------------------------


interface Row { name: string; transport: string; samples: number; perSec: number; pubRss: number; subRss: number; lost: number }

async function starlingRun(name: string, transport: string, pubEp: string, subEp: string, total: number, batch: number, rate: number, ns?: [string, string]): Promise<Row> {
  const node = [process.execPath, self, '--role'];
  const pub = child([...node, 'pub', '--endpoint', pubEp, '--total', String(total), '--batch', String(batch), '--rate', String(rate)], ns?.[0]);
  const bound = await pub.next('bound');
  const sub = child([...node, 'sub', '--endpoint', subEp.replace('$BOUND', String(bound.endpoint)), '--total', String(total), '--rate', String(rate)], ns?.[1]);
  await sub.next('ready');
  const sent = await pub.next('sent');
  // Give the last batches a moment to arrive, then ask the subscriber for its figures.
  const result = sub.next('result');
  const settled = await Promise.race([result.then(() => true), new Promise((r) => setTimeout(() => r(false), 2000))]);
  if (!settled) void sub.end();
  const res = await result;
  await pub.end();
  await sub.end();
  return { name, transport, samples: res.samples as number, perSec: (res.samples as number) / (res.seconds as number), pubRss: sent.rss as number, subRss: res.rss as number, lost: total - (res.samples as number) };
}

async function cRun(bin: string, transport: string, endpoint: string, total: number): Promise<Row> {
  const sub = child([bin, 'sub', endpoint, String(total)]);
  await sub.next('ready');
  const pub = child([bin, 'pub', endpoint, String(total)]);
  const res = await sub.next('result');
  const sent = await pub.next('sent');
  await pub.end();
  await sub.end();
  return { name: 'C libzmq, 100 B message per sample', transport, samples: res.msgs as number, perSec: (res.msgs as number) / (res.seconds as number), pubRss: sent.rss as number, subRss: res.rss as number, lost: total - (res.msgs as number) };
}

async function conduct(): Promise<void> {
  const { values } = parseArgs({ options: { json: { type: 'boolean' }, samples: { type: 'string' }, batch: { type: 'string' }, rate: { type: 'string' } } });
  const total = Number(values.samples ?? 2_000_000);
  const batch = Number(values.batch ?? 256);
  const rate = Number(values.rate ?? 10_000);
  const dir = mkdtempSync(join(tmpdir(), 'starling-bench-'));
  const rows: Row[] = [];
  const notes: string[] = [];
  try {
    const unbatched = Math.min(total, 300_000);
    for (const [transport, ep] of [['tcp', 'tcp://127.0.0.1:*'], ['ipc', `ipc://${dir}/t`]] as const) {
      const subEp = transport === 'tcp' ? '$BOUND' : ep;
      rows.push(await starlingRun('Starling, unbatched (1 sample/message)', transport, ep, subEp, unbatched, 1, rate));
      rows.push(await starlingRun(`Starling, batched (${batch} samples/message)`, transport, ep, subEp, total, batch, rate));
    }
    try {
      const bin = buildC('pubsub', dir);
      rows.push(await cRun(bin, 'tcp', 'tcp://127.0.0.1:6011', unbatched * 4));
      rows.push(await cRun(bin, 'ipc', `ipc://${dir}/c`, unbatched * 4));
    } catch (e) {
      notes.push(`C reference not run: ${(e as Error).message.split('\n')[0]}`);
    }
    if (process.getuid?.() === 0 && capability.pgm) {
      const seg = new Segment().create(2);
      try {
        const ep = `epgm://${seg.address(1)};239.192.9.1:5601`;
        const subEp = `epgm://${seg.address(2)};239.192.9.1:5601`;
        const n = Math.min(total, 200_000);
        rows.push(await starlingRun(`Starling epgm, batched, rate ${rate} kbit/s`, 'epgm (veth)', ep, subEp, n, batch, rate, [seg.hosts[0]!, seg.hosts[1]!]));
      } finally {
        seg.destroy();
      }
    } else notes.push('epgm not run: needs root (network namespaces) and zeromq.js with OpenPGM (bash image/setup.sh)');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  if (values.json) {
    process.stdout.write(JSON.stringify({ rows, notes }) + '\n');
    return;
  }
  const mb = (b: number) => (b ? `${(b / 1048576).toFixed(1)} MB` : '-');
  console.log(`Telemetry bench — Node ${process.version}, libzmq ${execFileSync('pkg-config', ['--modversion', 'libzmq']).toString().trim()}; publisher and subscriber in separate processes\n`);
  const header = ['run', 'transport', 'samples', 'samples/s', 'pub RSS', 'sub RSS', 'lost'];
  const body = rows.map((r) => [r.name, r.transport, String(r.samples), `${(r.perSec / 1000).toFixed(0)}k`, mb(r.pubRss), mb(r.subRss), String(r.lost)]);
  const w = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (c: string[]) => '| ' + c.map((x, i) => x.padEnd(w[i]!)).join(' | ') + ' |';
  console.log(line(header));
  console.log('|' + w.map((n) => '-'.repeat(n + 2)).join('|') + '|');
  for (const b of body) console.log(line(b));
  const find = (t: string, re: RegExp) => rows.find((r) => r.transport === t && re.test(r.name));
  for (const t of ['tcp', 'ipc']) {
    const u = find(t, /unbatched/);
    const b = find(t, /Starling, batched/);
    const c = find(t, /^C libzmq/);
    if (u && b) console.log(`${t}: batched / unbatched = ${(b.perSec / u.perSec).toFixed(1)}×${c ? `; batched / C one-message-per-sample = ${(b.perSec / c.perSec).toFixed(1)}×` : ''}`);
  }
  for (const n of notes) console.log(n);
}

// --- entry --------------------------------------------------------------------------------------------------

const { values: a } = parseArgs({
  options: { role: { type: 'string' }, endpoint: { type: 'string' }, total: { type: 'string' }, batch: { type: 'string' }, rate: { type: 'string' } },
  strict: false,
});
if (a.role === 'sub') await subRole(String(a.endpoint), Number(a.total), Number(a.rate));
else if (a.role === 'pub') await pubRole(String(a.endpoint), Number(a.total), Number(a.batch), Number(a.rate));
else await conduct();
