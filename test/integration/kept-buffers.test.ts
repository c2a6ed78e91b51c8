/**
 * What is kept for long holds only its own bytes: no slice of Node's shared buffer pool (a kept slice keeps the
 * whole pool, 64 KB in Node 24), and the embedded broker makes no 65,536-buffer number cache.
 */
import { createRequire } from 'node:module';
import { afterEach, expect, it } from 'vitest';
import { EventLog, type EventSink } from '../../services/web/live.ts';
import { BatchWriter } from '../../runtime/telemetry/sample.ts';
import { SMALL_POOL_BYTES, smallBufferPool } from '../../runtime/memory.ts';
import { EmbeddedBroker } from '../../services/mqtt-bridge/broker.ts';
import { MqttClient } from '../../services/mqtt-bridge/client.ts';
import { freeTcpPort, until } from '../helpers.ts';

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

/** True when the buffer's memory is its own: not a slice of a larger (pooled) allocation. */
const own = (b: Buffer) => b.byteOffset === 0 && b.buffer.byteLength === b.length;

it("the web view's event log keeps each event in memory of its own, small or large", () => {
  const chunks: Buffer[] = [];
  const sink: EventSink = { write: (c) => (chunks.push(c), true), once: () => undefined, destroy: () => undefined };
  const log = new EventLog();
  log.attach(sink, undefined);
  const before = chunks.length; // the greeting
  log.publish('status', { ok: 1 });
  log.publish('samples', { p: 'x'.repeat(3000) });
  log.publish('log', ['a line']);
  const events = chunks.slice(before);
  expect(events.map((c) => c.toString().split('\n')[1])).toEqual(['event: status', 'event: samples', 'event: log']);
  for (const e of events) expect(own(e), `${e.length} bytes in a ${e.buffer.byteLength}-byte allocation`).toBe(true);
});

it("a finished telemetry batch (kept as its topic's last for late joiners) is in memory of its own", () => {
  const w = new BatchWriter(4096);
  const frames: Buffer[] = [];
  for (let first = 0; first < 3; first++) {
    w.begin('t', Buffer.alloc(16, 1), first * 4, Date.now(), 'C', 1);
    for (let i = 0; i < 4; i++) w.add(Date.now(), 0, [i]);
    frames.push(w.finish());
  }
  for (const f of frames) expect(own(f), `${f.length} bytes in a ${f.buffer.byteLength}-byte allocation`).toBe(true);
});

it('smallBufferPool makes the next pools 8 KB where the pool was larger (Node 24), and never larger', () => {
  const was = Buffer.poolSize;
  cleanup.push(() => (Buffer.poolSize = was));
  Buffer.poolSize = 64 * 1024;
  smallBufferPool();
  expect(Buffer.poolSize).toBe(SMALL_POOL_BYTES);
  // Use up the pool made before the call: every pool after it is the small one.
  const pools = new Set<ArrayBuffer>();
  for (let i = 0; i < 3000; i++) pools.add(Buffer.allocUnsafe(100).buffer as ArrayBuffer);
  const sizes = [...pools].map((p) => p.byteLength);
  expect(sizes.slice(-3)).toEqual([SMALL_POOL_BYTES, SMALL_POOL_BYTES, SMALL_POOL_BYTES]);
  Buffer.poolSize = 4096;
  smallBufferPool();
  expect(Buffer.poolSize).toBe(4096);
});

it('the embedded broker delivers QoS 1 without making mqtt-packet\'s 65,536-buffer number cache', async () => {
  const port = await freeTcpPort();
  const broker = new EmbeddedBroker(`127.0.0.1:${port}`);
  await broker.start();
  cleanup.push(() => broker.stop());
  const sub = new MqttClient({ url: broker.url, clientId: 'kept-sub', clean: true });
  const pub = new MqttClient({ url: broker.url, clientId: 'kept-pub', clean: true });
  await sub.start();
  await pub.start();
  cleanup.push(() => sub.stop(), () => pub.stop());
  const got: string[] = [];
  sub.on('message', (_t: string, p: Buffer) => got.push(p.toString()));
  await sub.subscribe('kept/#', 1);
  for (let i = 0; i < 20; i++) await pub.publish(`kept/${i}`, `v${i}`, { qos: 1 });
  await until(() => got.length === 20, 5000, 'the 20 messages through the broker');
  expect(got).toEqual(Array.from({ length: 20 }, (_, i) => `v${i}`));
  // The same module instance aedes writes with (one copy of mqtt-packet is installed).
  const numbers = createRequire(import.meta.url)('mqtt-packet/numbers.js') as { cache: Record<number, Buffer> };
  expect(Object.keys(numbers.cache).length).toBe(0);
});
