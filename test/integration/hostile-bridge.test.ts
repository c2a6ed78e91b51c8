// The bridge and its MQTT client against what can go wrong on either side: topics from the mesh that MQTT
// forbids and a message a real Mosquitto refuses (it must not poison the link or the spool), commands that are
// not exactly 0/1/OFF/ON, and a broker that misbehaves — an endless packet, no CONNACK, no PUBACK, accepting
// and dropping at once (a scripted TCP server: no real broker does these on demand).
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XPublisher as RawPub } from 'zeromq'; // a raw PUB that also tells when a subscription arrives
import { Bridge, commandValue } from '../../services/mqtt-bridge/bridge.ts';
import { MqttClient, PacketSizes } from '../../services/mqtt-bridge/client.ts';
import { Subscriber } from '../../runtime/telemetry/subscriber.ts';
import { BatchWriter } from '../../runtime/telemetry/sample.ts';
import { Mosquitto } from '../mosquitto.ts';
import { MAX_PEER_LINES, peerLines } from '../../runtime/telemetry/mesh.ts';
import { HEADER_INPUTS, HEADER_OUTPUTS, HEADER_PREFIX } from '../../runtime/telemetry/mesh.ts';
import { until } from '../helpers.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

const writer = new BatchWriter(8192);
const ID = Buffer.alloc(16, 5);
const seqs = new Map<string, number>();
function batch(topic: string, values: number[], unit = ''): Buffer {
  const first = seqs.get(topic) ?? 0;
  seqs.set(topic, first + 1);
  writer.begin(topic, ID, first, Date.now(), unit, values.length);
  writer.add(Date.now(), 0, values);
  return writer.finish();
}

/** A broker, a raw telemetry PUB the bridge's subscriber follows, the bridge, and a watcher subscribed to '#'. */
async function setup(o: { extra?: string[]; switches?: string[]; onCommand?: (t: string, v: 0 | 1) => Promise<void>; startBroker?: boolean } = {}) {
  const broker = new Mosquitto(undefined, undefined, o.extra);
  if (o.startBroker !== false) await broker.start();
  cleanup.push(() => broker.destroy());
  const raw = new RawPub({ linger: 0 });
  await raw.bind('tcp://127.0.0.1:*');
  cleanup.push(() => raw.close());
  const sub = new Subscriber();
  sub.start();
  await sub.connect(raw.lastEndpoint!);
  const spoolDir = mkdtempSync(join(tmpdir(), 'starling-hostile-bridge-'));
  const problems: string[] = [];
  if (!broker.port) broker.port = (await import('../mosquitto.ts').then((m) => m.freePort()));
  const bridge = new Bridge({
    mqtt: { url: broker.url, clientId: 'hub', reconnect: { min: 50, max: 200 }, keepalive: 5 },
    node: 'hub', spoolDir, switches: o.switches, onCommand: o.onCommand, onProblem: (m) => problems.push(m),
  }, sub);
  let connects = 0;
  bridge.client.on('connect', () => connects++);
  await bridge.start();
  const got: [string, string][] = [];
  let watcher: MqttClient | undefined;
  const watch = async () => {
    watcher = new MqttClient({ url: broker.url, clientId: 'watcher', reconnect: { min: 100, max: 300 } });
    await watcher.start();
    watcher.on('message', (t, p) => got.push([t, p.toString()]));
    await watcher.subscribe('#', 1);
  };
  if (o.startBroker !== false) {
    await until(() => bridge.client.isConnected, 5000, 'the bridge to connect');
    await watch();
  }
  cleanup.push(async () => {
    await watcher?.stop();
    await bridge.stop(200);
    await sub.stop();
    rmSync(spoolDir, { recursive: true, force: true });
  });
  await raw.receive(); // the subscription reached the raw PUB
  return { broker, raw, bridge, got, problems, connects: () => connects, watch, watcher: () => watcher! };
}

describe('topics from the mesh', () => {
  it('a topic MQTT forbids is refused and counted, never sent or spooled; the link stays up', async () => {
    const { raw, bridge, got, problems, connects } = await setup();
    for (const topic of ['evil/#', 'evil/+/x', 'evil/\u0001bell', 'evil/\u009f']) await raw.send([topic, batch(topic, [1])]);
    await raw.send(['fine/air', batch('fine/air', [21])]);
    await until(() => got.some(([t]) => t === 'starling/fine/air'), 5000, 'the fine topic');
    await new Promise((r) => setTimeout(r, 300));
    expect(bridge.stats()).toMatchObject({ refusedTopics: 4 });
    expect(bridge.spool.stats().appended).toBe(0);
    expect(got.filter(([t]) => t.includes('evil'))).toEqual([]);
    expect(connects()).toBe(1);
    expect(problems.filter((p) => p.includes('not bridged'))).toHaveLength(1); // rate-limited: one line
  });
});

describe('a message the broker refuses', () => {
  // Mosquitto disconnects a client whose packet passes max_packet_size (MQTT 3.1.1 has no way to refuse one).
  const limit = ['max_packet_size 800'];
  const big = () => batch('dev/huge', Array.from({ length: 32 }, () => 1.2345678901234567), 'x'.repeat(255));

  it('sent directly: given up after a bounded number of tries; what follows arrives', async () => {
    const { raw, bridge, got, connects } = await setup({ extra: limit });
    await raw.send(['dev/huge', big()]);
    for (let i = 0; i < 3; i++) await raw.send(['dev/ok', batch('dev/ok', [i])]);
    await until(() => got.filter(([t]) => t === 'starling/dev/ok').length === 3, 15_000, 'the three samples behind it');
    expect(bridge.stats().givenUp).toBeGreaterThanOrEqual(1);
    expect(bridge.client.faults.givenUp).toBeGreaterThanOrEqual(1);
    // Five lost connections for the state, and the discovery config of the same topic (also too large) once refused.
    expect(connects()).toBeLessThanOrEqual(12);
    const before = connects();
    await new Promise((r) => setTimeout(r, 1000));
    expect(connects()).toBe(before); // no loop: the link is stable again
  }, 30_000);

  it('from the spool: skipped after a bounded number of tries, and says so; the records behind it are delivered in order', async () => {
    const { broker, raw, bridge, got, problems, watch } = await setup({ extra: limit, startBroker: false });
    await raw.send(['dev/ok', batch('dev/ok', [0])]);
    await raw.send(['dev/huge', big()]);
    for (let i = 1; i <= 5; i++) await raw.send(['dev/ok', batch('dev/ok', [i])]);
    await until(() => bridge.spool.length === 7, 5000, 'seven spooled');
    await broker.start();
    await watch();
    await until(() => bridge.spool.length === 0, 20_000, 'the spool to drain');
    expect(bridge.spool.stats().skipped).toBe(1);
    // The broker acknowledged all six others (the watcher may have subscribed after the first ones went).
    expect(bridge.stats().forwarded).toBe(6);
    await until(() => got.some(([t, p]) => t === 'starling/dev/ok' && JSON.parse(p).value === 5), 5000, 'the last sample');
    // Every one the watcher saw is in order.
    const values = got.filter(([t]) => t === 'starling/dev/ok').map(([, p]) => JSON.parse(p).value as number);
    expect(values).toEqual([...values].sort((a, b) => a - b));
    expect(problems.some((p) => /given up on the message to 'starling\/dev\/huge'/.test(p))).toBe(true);
  }, 30_000);
});

describe('commands from MQTT', () => {
  it('only 0, 1, OFF and ON switch; every other payload is refused with a reason', async () => {
    const values: number[] = [];
    const { watcher, bridge, problems } = await setup({ switches: ['dev/pump'], onCommand: async (_t, v) => void values.push(v) });
    for (const p of ['', '0x1', 'true', '[1]', ' 1', '2', 'on', '1.0', '1', 'ON', 'OFF', '0']) await watcher().publish('starling/dev/pump/set', p, { qos: 1 });
    await until(() => bridge.stats().commands === 12, 5000, 'twelve commands');
    expect(values).toEqual([1, 1, 0, 0]);
    expect(bridge.stats().commandErrors).toBe(8);
    expect(problems.some((p) => p.includes('payload "" is not 0, 1, OFF or ON'))).toBe(true);
    expect([...'01'].map((c) => commandValue(Buffer.from(c)))).toEqual([0, 1]);
  });
});

/** A TCP server on loopback that plays a broker as scripted; `conns` records each connection's arrival time. */
async function fakeBroker(onData: (socket: Socket, data: Buffer, n: number) => void) {
  const conns: number[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    const n = conns.push(Date.now());
    sockets.add(socket);
    socket.on('data', (d) => onData(socket, d, n));
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanup.push(() => new Promise<void>((r) => {
    for (const s of sockets) s.destroy();
    server.close(() => r());
  }));
  return { url: `mqtt://127.0.0.1:${(server.address() as { port: number }).port}`, conns };
}
const CONNACK = Buffer.from([0x20, 0x02, 0x00, 0x00]);
const isConnect = (d: Buffer) => d[0] === 0x10;

describe('a broker that misbehaves', () => {
  async function client(url: string, over: Partial<ConstructorParameters<typeof MqttClient>[0]> = {}) {
    const c = new MqttClient({ url, clientId: 'c', reconnect: { min: 50, max: 2000 }, keepalive: 0, ...over });
    void c.start();
    cleanup.push(() => c.stop());
    return c;
  }

  it('a 256 MB remaining length ends the connection before anything buffers it', async () => {
    const { url, conns } = await fakeBroker((socket, d) => {
      if (!isConnect(d)) return;
      socket.write(CONNACK);
      // PUBLISH with a remaining length of 268,435,455 bytes, then a first megabyte of it.
      socket.write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]));
      socket.write(Buffer.alloc(1024 * 1024));
    });
    const rss = process.memoryUsage().rss;
    const c = await client(url, { maxPacketSize: 1024 * 1024 });
    await until(() => c.faults.oversized >= 2 && conns.length >= 2, 10_000, 'two oversized packets refused');
    expect(c.lastError).toMatch(/packet of 268435455 bytes, over the limit of 1048576/);
    expect(process.memoryUsage().rss - rss).toBeLessThan(100 * 1024 * 1024);
  });

  it('no CONNACK: a timeout, then a reconnect', async () => {
    const { url, conns } = await fakeBroker(() => {});
    const c = await client(url, { connackTimeout: 300 });
    await until(() => c.faults.connackTimeouts >= 2 && conns.length >= 2, 10_000, 'two CONNACK timeouts');
    expect(c.lastError).toBe('no CONNACK within 0.3 s');
    expect(c.isConnected).toBe(false);
  });

  it('no PUBACK: a timeout, a reconnect, and the message is sent again with DUP', async () => {
    const publishes: { n: number; dup: boolean }[] = [];
    const { url } = await fakeBroker((socket, d, n) => {
      if (isConnect(d)) socket.write(CONNACK);
      else if ((d[0]! & 0xf0) === 0x30) publishes.push({ n, dup: (d[0]! & 0x08) !== 0 });
    });
    const c = await client(url, { pubackTimeout: 400 });
    await until(() => c.isConnected, 5000, 'connected');
    void c.publish('t', 'x', { qos: 1 }).catch(() => {});
    await until(() => c.faults.pubackTimeouts >= 1 && publishes.length >= 2, 10_000, 'a PUBACK timeout and a resend');
    expect(publishes[0]).toEqual({ n: 1, dup: false });
    expect(publishes[1]!.n).toBeGreaterThan(1);
    expect(publishes[1]!.dup).toBe(true);
    expect(c.lastError).toBe('no PUBACK within 0.4 s');
  });

  it('CONNACK then a drop, again and again: the backoff keeps growing (it resets only after a stable connection)', async () => {
    const { url, conns } = await fakeBroker((socket, d) => {
      if (!isConnect(d)) return;
      socket.write(CONNACK);
      setTimeout(() => socket.destroy(), 20);
    });
    await client(url, { reconnect: { min: 50, max: 5000 }, stableAfter: 5000 });
    await until(() => conns.length >= 6, 15_000, 'six connections');
    const gaps = conns.slice(1).map((t, i) => t - conns[i]!);
    // 50, 100, 200, 400, 800 ms (less up to 20 % jitter), plus the 20 ms each connection lasts.
    expect(gaps[4]!).toBeGreaterThan(gaps[0]! * 4);
    expect(gaps[4]!).toBeGreaterThan(500);
  });

  it('PacketSizes follows packet boundaries across chunks', () => {
    const sizes = new PacketSizes(100);
    // Two small packets split at awkward places, then one over the limit whose length spans chunks.
    expect(sizes.feed(Buffer.from([0x30, 0x03, 1]))).toBeUndefined();
    expect(sizes.feed(Buffer.from([2, 3, 0xd0, 0x00, 0x30]))).toBeUndefined();
    expect(sizes.feed(Buffer.from([0xc8]))).toBeUndefined();
    expect(sizes.feed(Buffer.from([0x01]))).toBe(200);
  });
});

describe('what a peer advertises for Home Assistant', () => {
  const peer = (headers: Record<string, string>) => ({ peer: 'A'.repeat(32), name: 'p', endpoint: 'tcp://127.0.0.1:1', groups: [], headers, presence: 'alive' as const });

  it('30,000 output names, names that are not names, or a prefix with a wildcard: refused with the reason', () => {
    const many = Array.from({ length: 30_000 }, (_, i) => `o${i}`).join(',');
    expect(() => peerLines(peer({ [HEADER_OUTPUTS]: many }))).toThrow(/X-GPIO-OUTPUTS lists 30000 lines \(at most 64\)/);
    expect(() => peerLines(peer({ [HEADER_INPUTS]: 'door,Front Door' }))).toThrow(/holds "Front Door"; expected lower-case letters, digits and _/);
    expect(() => peerLines(peer({ [HEADER_PREFIX]: 'home/#/' }))).toThrow(/cannot be part of an MQTT topic/);
    expect(peerLines(peer({ [HEADER_PREFIX]: 'pond/', [HEADER_OUTPUTS]: 'pump,valve', [HEADER_INPUTS]: 'float' }))).toEqual({ prefix: 'pond/', outputs: ['pump', 'valve'], inputs: ['float'] });
    expect(MAX_PEER_LINES).toBe(64);
  });
});
