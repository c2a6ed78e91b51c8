// The web view's server with real sockets on loopback: a device with a simulated sensor and output under a
// supervisor, the web view on a free port, and plain HTTP clients (node:http) — the Host check, the POST rules,
// switching with the confirmed value, the history, SSE resumption with Last-Event-ID, the client bound, and a
// client too slow to read its stream dropped and counted.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { request, type IncomingMessage } from 'node:http';
import { connect, createServer, type Socket } from 'node:net';
import { parseConfig } from '../../runtime/config/load.ts';
import { LogRing } from '../../runtime/supervisor/log.ts';
import { Supervisor } from '../../runtime/supervisor/supervisor.ts';
import { servicesFrom, type Composition } from '../../app/compose.ts';
import { EventLog, CLIENT_QUEUE_BYTES } from '../../services/web/live.ts';
import { beaconPort, until } from '../helpers.ts';

let sup: Supervisor;
let composed: Composition;
let base: URL;

beforeAll(async () => {
  const config = parseConfig(`simulate: true
node: { name: porch, iface: lo, port: ${beaconPort()} }
security: { mode: none }
telemetry: { prefix: porch/ }
web: { listen: "127.0.0.1:0", max_clients: 3, hosts: [porch.local] }
sensors:
  - { platform: sim, name: air, waveform: sine, min: 10, max: 20, period: 10s, interval: 100ms, unit: "°C" }
gpio:
  - { name: lamp, pin: GPIO17, mode: output }
`);
  const log = new LogRing(1000, null);
  composed = servicesFrom(config, log);
  sup = new Supervisor(composed.services, log);
  composed.web!.supervisor = sup;
  await sup.start();
  base = new URL(composed.web!.url!);
});
afterAll(() => sup?.stop());

interface Reply { status: number; headers: IncomingMessage['headers']; body: string }
function http(path: string, opts: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, base), { method: opts.method ?? 'GET', headers: opts.headers ?? {} }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}
const stats = () => sup.stats().web!;
const token = async () => /name="starling-token" content="([^"]+)"/.exec((await http('/')).body)![1]!;
const uuid = () => composed.device.node!.uuid.toString('hex').toUpperCase();

/** Opens /events; collects `id`/`event` pairs as they arrive. */
function events(headers: Record<string, string> = {}, query = ''): Promise<{ seen: { id: number; event: string }[]; status: number; close(): void }> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(`/events${query}`, base), { headers }, (res) => {
      const seen: { id: number; event: string }[] = [];
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buf += c;
        let at;
        while ((at = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, at);
          buf = buf.slice(at + 2);
          const id = /^id: (\d+)$/m.exec(block)?.[1];
          const event = /^event: (.+)$/m.exec(block)?.[1];
          if (id && event) seen.push({ id: Number(id), event });
        }
      });
      resolve({ seen, status: res.statusCode!, close: () => req.destroy() });
    });
    req.on('error', (e) => (e.message.includes('socket hang up') ? undefined : reject(e)));
    req.end();
  });
}

it('answers only to IP addresses, localhost and web.hosts; the page carries the token; the history and state are JSON', async () => {
  expect((await http('/', { headers: { host: 'attacker.example:8080' } })).status).toBe(421);
  expect(stats()['refused.host']).toBe(1);
  expect((await http('/', { headers: { host: 'porch.local' } })).status).toBe(200);
  expect((await http('/', { headers: { host: `localhost:${base.port}` } })).status).toBe(200);
  const page = await http('/');
  expect(page.headers['content-security-policy']).toMatch(/default-src 'self'/);
  expect(await token()).toMatch(/^[A-Za-z0-9_-]{32}$/);
  const js = await http('/app.js', { headers: { 'accept-encoding': 'gzip' } });
  expect(js.headers['content-encoding']).toBe('gzip');
  await until(() => (stats().topics ?? 0) >= 2, 5000, 'the air and lamp topics');
  const state = JSON.parse((await http('/api/state')).body) as { self: { name: string; outputs: string[] }; topics: { topic: string }[]; services: { name: string }[] };
  expect(state.self).toMatchObject({ name: 'porch', outputs: ['lamp'] });
  // The sensor, the line, and the node's own status topics (services/fleet.ts).
  expect(state.topics.map((t) => t.topic).filter((t) => !t.startsWith('porch/@node/')).sort()).toEqual(['porch/air', 'porch/lamp']);
  expect(state.services.map((s) => s.name)).toEqual(['device', 'web', 'files', 'fleet']);
  const history = async () => JSON.parse((await http('/api/history?topic=porch/air')).body) as { ts: number[]; vs: number[] };
  let h = await history();
  for (let i = 0; i < 50 && h.ts.length < 3; i++) {
    await new Promise((r) => setTimeout(r, 100));
    h = await history();
  }
  expect(h.ts.length).toBeGreaterThanOrEqual(3);
  expect(h.ts.length).toBe(h.vs.length);
  expect(h.vs.every((v) => v >= 9.9 && v <= 20.1)).toBe(true);
});

it('switches an output only by a JSON POST with the token in a header and no foreign Origin; answers the value read back', async () => {
  const t = await token();
  const body = JSON.stringify({ node: uuid(), gpio: 'lamp', set: 1 });
  const json = { 'content-type': 'application/json' };
  expect((await http('/api/gpio', { method: 'POST', headers: json, body })).status).toBe(403);
  // The cookie alone does not do (a cross-site form would carry it).
  expect((await http('/api/gpio', { method: 'POST', headers: { ...json, cookie: `starling_token=${t}` }, body })).status).toBe(403);
  expect((await http('/api/gpio', { method: 'POST', headers: { 'content-type': 'text/plain', 'x-starling-token': t }, body })).status).toBe(415);
  expect((await http('/api/gpio', { method: 'POST', headers: { ...json, 'x-starling-token': t, origin: 'http://attacker.example' }, body })).status).toBe(403);
  expect(composed.device.gpio.get('lamp')!.read).toBeDefined();
  expect((await composed.device.gpio.get('lamp')!.read()).values[0]).toBe(0);
  const bad = await http('/api/gpio', { method: 'POST', headers: { ...json, 'x-starling-token': t }, body: JSON.stringify({ node: uuid(), gpio: 'lamp', set: '1' }) });
  expect(bad.status).toBe(400);
  const ok = await http('/api/gpio', { method: 'POST', headers: { ...json, 'x-starling-token': t, origin: base.origin }, body });
  expect(ok.status).toBe(200);
  expect(JSON.parse(ok.body)).toEqual({ ok: true, value: 1 });
  expect((await composed.device.gpio.get('lamp')!.read()).values[0]).toBe(1);
  const none = await http('/api/gpio', { method: 'POST', headers: { ...json, authorization: `Bearer ${t}` }, body: JSON.stringify({ node: uuid(), gpio: 'nope', set: 1 }) });
  expect(none.status).toBe(502);
  expect(JSON.parse(none.body).error).toMatch(/no GPIO output named 'nope'/);
  const s = stats();
  expect(s['refused.token']).toBe(2);
  expect(s['refused.post']).toBe(2);
  expect(s['refused.origin']).toBe(1);
});

it('streams samples; a client that comes back with Last-Event-ID gets every event it missed, in order; an unknown id gets a reset', async () => {
  const a = await events();
  await until(() => a.seen.filter((e) => e.event === 'samples').length >= 3, 5000, 'three sample events');
  const lastSeen = a.seen[a.seen.length - 1]!.id;
  a.close();
  await new Promise((r) => setTimeout(r, 600)); // events go by while it is away
  const b = await events({ 'last-event-id': String(lastSeen) });
  await until(() => b.seen.length >= 3, 5000, 'the missed events');
  const ids = b.seen.map((e) => e.id);
  expect(ids[0]).toBe(lastSeen + 1);
  for (let i = 1; i < ids.length; i++) expect(ids[i]).toBe(ids[i - 1]! + 1);
  b.close();
  expect(stats().resumed).toBeGreaterThanOrEqual(1);
  const c = await events({ 'last-event-id': '999999999' }); // from before a restart
  await until(() => c.seen.length >= 1, 5000, 'a reset');
  expect(c.seen[0]!.event).toBe('reset');
  c.close();
  expect(stats().resets).toBeGreaterThanOrEqual(1);
});

it('takes at most web.max_clients live clients; the next is refused and counted', async () => {
  await until(() => stats().clients === 0, 5000, 'the earlier clients gone');
  const open = await Promise.all([events(), events(), events()]);
  const extra = await events();
  expect(extra.status).toBe(503);
  expect(stats()['refused.clients']).toBe(1);
  for (const o of [...open, extra]) o.close();
});

it('a client that stops reading is dropped once its queue passes the bound (counted); the others go on', async () => {
  // A real socket pair: the reading side is paused, so the kernel's buffers fill, then the client's queue.
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const slowReader = connect((server.address() as { port: number }).port, '127.0.0.1');
  slowReader.pause();
  const sink = await accepted;
  const fastServer = createServer();
  await new Promise<void>((r) => fastServer.listen(0, '127.0.0.1', () => r()));
  const fastAccepted = new Promise<Socket>((r) => fastServer.once('connection', r));
  const fastReader = connect((fastServer.address() as { port: number }).port, '127.0.0.1');
  let fastBytes = 0;
  fastReader.on('data', (d) => (fastBytes += d.length));
  const fastSink = await fastAccepted;
  const log = new EventLog();
  log.attach(sink, undefined);
  log.attach(fastSink, undefined);
  const payload = { p: 'x'.repeat(16 * 1024) };
  let sent = 0;
  let maxQueued = 0;
  // Bounded: at most 64 MB of events, stopping as soon as the slow one is dropped.
  while (log.stats().slowClientsDropped === 0 && sent < 4096) {
    maxQueued = Math.max(maxQueued, log.stats().clientBytesQueued);
    log.publish('samples', payload);
    sent++;
    if (sent % 64 === 0) await new Promise((r) => setImmediate(r));
  }
  expect(log.stats().slowClientsDropped).toBe(1);
  // What waited for the slow one is counted while it waits (its queue near the bound, then dropped with it).
  expect(maxQueued).toBeGreaterThan(CLIENT_QUEUE_BYTES / 2);
  expect(log.stats().clients).toBe(1);
  expect(sent * 16 * 1024).toBeGreaterThan(CLIENT_QUEUE_BYTES);
  await until(() => sink.destroyed, 2000, 'the slow socket closed');
  log.publish('samples', { p: 'after' });
  await until(() => fastBytes >= sent * 16 * 1024, 10_000, 'the fast client to receive everything');
  expect(log.stats().clientBytesQueued).toBe(0);
  log.close();
  slowReader.destroy();
  fastReader.destroy();
  server.close();
  fastServer.close();
});

it('the event log keeps only the latest whole-state event of each kind; a resuming client gets it after every sample it missed', () => {
  const log = new EventLog(['services', 'peers']);
  // The services' counters change every second: 3,000 of them (the log's bound is 2,000 events) between samples.
  log.publish('samples', { p: [['t', 1, 1]] });
  const seenFirst = log.last;
  for (let i = 0; i < 3000; i++) {
    log.publish('services', { stats: { beaconsSent: i } });
    if (i % 1000 === 0) log.publish('samples', { p: [['t', 2 + i, 2]] });
  }
  log.publish('peers', { peers: ['a'] });
  log.publish('peers', { peers: ['a', 'b'] });
  const chunks: Buffer[] = [];
  const sink = { write: (c: Buffer) => (chunks.push(c), true), once: () => undefined, destroy: () => undefined };
  log.attach(sink, seenFirst);
  const events = chunks.slice(1).map((c) => c.toString());
  // Nothing it missed is lost: the three samples, then the latest services and peers, in the order they happened.
  expect(events.map((e) => /event: (\w+)/.exec(e)![1])).toEqual(['samples', 'samples', 'samples', 'services', 'peers']);
  expect(events[3]).toContain('"beaconsSent":2999');
  expect(events[4]).toContain('["a","b"]');
  const ids = events.map((e) => Number(/^id: (\d+)/.exec(e)![1]));
  expect(ids).toEqual([...ids].sort((a, b) => a - b));
  expect(log.stats().resets).toBe(0);
  expect(log.stats().resumed).toBe(1);
});

it('the event log still resets a client that missed events its bounds pushed out', () => {
  const log = new EventLog(['services']);
  for (let i = 0; i < 2500; i++) log.publish('samples', { p: [['t', i, i]] });
  const chunks: Buffer[] = [];
  log.attach({ write: (c: Buffer) => (chunks.push(c), true), once: () => undefined, destroy: () => undefined }, 100);
  expect(chunks.slice(1).map((c) => /event: (\w+)/.exec(c.toString())![1])).toEqual(['reset']);
  expect(log.stats().resets).toBe(1);
});
