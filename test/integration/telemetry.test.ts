// Telemetry over real ZeroMQ sockets on this machine: tcp on loopback and ipc.
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Publisher, TelemetryError } from '../../runtime/telemetry/publisher.ts';
import { Subscriber } from '../../runtime/telemetry/subscriber.ts';
import { Batch, BatchWriter, SYNC_PREFIX, type Sample } from '../../runtime/telemetry/sample.ts';
import { XPublisher as RawPub, Dealer as RawDealer, Router as RawRouter, Subscriber as RawSub } from 'zeromq'; // raw sockets: RawPub also tells when a subscription arrives
import { until } from '../helpers.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function pair(endpoint: string, pubOpts: Partial<ConstructorParameters<typeof Publisher>[0]> = {}, prefix = '') {
  const pub = new Publisher({ endpoints: [endpoint], snapshotEndpoint: 'tcp://127.0.0.1:*', ...pubOpts });
  await pub.start();
  cleanup.push(() => pub.stop(200));
  const sub = new Subscriber({ prefix });
  sub.start();
  cleanup.push(() => sub.stop());
  const samples: Sample[] = [];
  sub.on('batch', (b, from) => {
    for (let i = from; i < b.count; i++) samples.push(b.sample(i));
  });
  await sub.connect(pub.endpoints[0]!, pub.snapshotEndpoint);
  if (prefix !== '\u0000none') await pub.waitForSubscriber(prefix || 'x', 5000);
  return { pub, sub, samples };
}


describe('publish and subscribe', () => {
  it.each([
    ['tcp', 'tcp://127.0.0.1:*'],
    ['ipc', 'ipc'],
  ])('over %s: samples arrive in order with topic, time, values, unit, status and sequence', async (_name, ep) => {
    let endpoint = ep;
    if (ep === 'ipc') {
      const dir = mkdtempSync(join(tmpdir(), 'starling-'));
      cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
      endpoint = `ipc://${dir}/telemetry`;
    }
    const { pub, sub, samples } = await pair(endpoint, { batchSamples: 4 });
    const t0 = Date.now();
    for (let i = 0; i < 10; i++) pub.publish('kitchen/temp', 20 + i / 10, { unit: '°C', ts: t0 + i });
    pub.publish('kitchen/accel', [0.1, -0.2, 9.81], { unit: 'm/s²', ts: t0 });
    pub.publish('kitchen/temp', NaN, { unit: '°C', ts: t0 + 20, status: 3 });
    pub.flushAll();
    await until(() => samples.length === 12, 5000, '12 samples');
    const temps = samples.filter((s) => s.topic === 'kitchen/temp');
    expect(temps.map((s) => s.seq)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(temps[3]).toMatchObject({ ts: t0 + 3, values: [20.3], unit: '°C', status: 0, publisher: pub.id.toString('hex').toUpperCase() });
    expect(temps[10]!.status).toBe(3);
    expect(temps[10]!.values[0]).toBeNaN();
    expect(samples.find((s) => s.topic === 'kitchen/accel')).toMatchObject({ values: [0.1, -0.2, 9.81], unit: 'm/s²', seq: 0 });
    expect(sub.stats()).toMatchObject({ samplesLost: 0, malformed: 0 });
    // 11 temperature samples in batches of 4: 3 batches; 1 accel batch.
    expect(pub.stats()).toMatchObject({ samplesPublished: 12, batchesSent: 4, batchesDropped: 0 });
  });

  it('flushes a partly filled batch after batchMs', async () => {
    const { pub, samples } = await pair('tcp://127.0.0.1:*', { batchSamples: 1000, batchMs: 30 });
    pub.publish('slow/topic', 1);
    await until(() => samples.length === 1, 2000, 'the timed flush');
    expect(samples[0]!.values).toEqual([1]);
  });

  it('filters by topic prefix inside ZeroMQ', async () => {
    const { pub, sub, samples } = await pair('tcp://127.0.0.1:*', { batchSamples: 1 }, 'garden/');
    pub.publish('kitchen/temp', 1);
    pub.publish('garden/soil', 2);
    pub.publish('garden/rain', 3);
    await until(() => samples.length === 2, 5000);
    await new Promise((r) => setTimeout(r, 50));
    expect(samples.map((s) => s.topic)).toEqual(['garden/soil', 'garden/rain']);
    expect(sub.stats().batchesReceived).toBe(2); // the kitchen batch never reached this process
  });

  it('refuses epgm with a clear error when zeromq.js lacks OpenPGM, and bad epgm endpoints always', () => {
    expect(() => new Publisher({ endpoints: ['epgm://eth0;239.192.0.1:5555'] })).toThrow(/name the interface by its IPv4 address/);
    expect(() => new Publisher({ endpoints: ['epgm://10.0.0.1;10.0.0.2:5555'] })).toThrow(/not a multicast group/);
    expect(() => new Publisher({ endpoints: [] })).toThrow(TelemetryError);
  });
});

describe('loss and late joiners', () => {
  it('a late joiner gets the last value of each topic at once, then the live stream without duplicates', async () => {
    const pub = new Publisher({ endpoints: ['tcp://127.0.0.1:*'], snapshotEndpoint: 'tcp://127.0.0.1:*', batchSamples: 8 });
    await pub.start();
    cleanup.push(() => pub.stop(200));
    for (let i = 0; i < 20; i++) pub.publish('room/a', i);
    for (let i = 0; i < 5; i++) pub.publish('room/b', 100 + i);
    pub.publish('other/c', 7);
    pub.flushAll();
    await pub.drained();
    const sub = new Subscriber({ prefix: 'room/' });
    sub.start();
    cleanup.push(() => sub.stop());
    const got: Sample[] = [];
    sub.on('batch', (b, from) => {
      for (let i = from; i < b.count; i++) got.push(b.sample(i));
    });
    await sub.connect(pub.endpoints[0]!, pub.snapshotEndpoint);
    // The snapshot: the last value of each topic under the prefix, with its real sequence number.
    expect(got.map((s) => [s.topic, s.values[0], s.seq])).toEqual([['room/a', 19, 19], ['room/b', 104, 4]]);
    await pub.waitForSubscriber('room/a', 5000);
    pub.publish('room/a', 20);
    pub.flushAll();
    await until(() => got.length === 3, 5000);
    expect(got[2]).toMatchObject({ topic: 'room/a', values: [20], seq: 20 });
    expect(sub.stats()).toMatchObject({ samplesLost: 0, snapshots: 1 });
  });

  it('a snapshot that overlaps a held live batch delivers each sample once', async () => {
    const { pub, sub, samples } = await pair('tcp://127.0.0.1:*', { batchSamples: 4 });
    for (let i = 0; i < 8; i++) pub.publish('t', i);
    await until(() => samples.length === 8, 5000);
    // A second subscriber joins mid-stream: its snapshot is sample 7; live samples 8.. follow.
    const late = new Subscriber();
    late.start();
    cleanup.push(() => late.stop());
    const lateGot: number[] = [];
    late.on('batch', (b, from) => {
      for (let i = from; i < b.count; i++) lateGot.push(b.seq(i));
    });
    await late.connect(pub.endpoints[0]!, pub.snapshotEndpoint);
    for (let i = 8; i < 16; i++) pub.publish('t', i);
    await until(() => lateGot.includes(15), 5000);
    expect(lateGot).toEqual([7, 8, 9, 10, 11, 12, 13, 14, 15]);
    expect(sub.stats().samplesLost).toBe(0);
  });

  it('sync token: the publisher takes a snapshot only once the asker\'s subscription is in effect (or after 1 s)', async () => {
    // Without it, a sample published after the snapshot was taken and before the new subscription reached the
    // publisher was in neither: a gap at join (the simulation's hub saw one or two per run).
    const pub = new Publisher({ endpoints: ['tcp://127.0.0.1:*'], snapshotEndpoint: 'tcp://127.0.0.1:*', batchSamples: 1 });
    await pub.start();
    cleanup.push(() => pub.stop(200));
    pub.publish('t', 1);
    const asker = new RawDealer({ linger: 0, receiveTimeout: 400 });
    asker.connect(pub.snapshotEndpoint!);
    cleanup.push(() => asker.close());
    await asker.send(['SNAPSHOT', '', 'tok1']);
    await expect(asker.receive()).rejects.toThrow(); // no answer while the token is not subscribed
    const sub = new RawSub({ linger: 0 });
    sub.connect(pub.endpoints[0]!);
    cleanup.push(() => sub.close());
    sub.subscribe(`${SYNC_PREFIX}tok1`);
    asker.receiveTimeout = 2000;
    const [topic] = await asker.receive();
    expect(topic!.toString()).toBe('t');
    expect((await asker.receive())[0]!.toString()).toBe('END');
    // A token that never comes: answered after the wait all the same; and a request without one at once.
    const t0 = Date.now();
    await asker.send(['SNAPSHOT', '', 'never']);
    await asker.receive();
    await asker.receive();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    const t1 = Date.now();
    await asker.send(['SNAPSHOT', '']);
    await asker.receive();
    expect((await asker.receive())[0]!.toString()).toBe('END');
    expect(Date.now() - t1).toBeLessThan(500);
  });

  it('sync token: the subscriber subscribes its token after the prefix, names it in its request, and drops it after', async () => {
    const stream = new RawPub({ linger: 0 });
    await stream.bind('tcp://127.0.0.1:*');
    cleanup.push(() => stream.close());
    const snap = new RawRouter({ linger: 0 });
    await snap.bind('tcp://127.0.0.1:*');
    cleanup.push(() => snap.close());
    const sub = new Subscriber({ prefix: 'p/' });
    sub.start();
    cleanup.push(() => sub.stop());
    const connected = sub.connect(stream.lastEndpoint!, snap.lastEndpoint!);
    const [rid, verb, prefix, token] = await snap.receive();
    expect([verb!.toString(), prefix!.toString()]).toEqual(['SNAPSHOT', 'p/']);
    expect(token!.toString()).toMatch(/^[0-9a-f]{16}$/);
    const subs = [(await stream.receive())[0]!, (await stream.receive())[0]!];
    expect(subs.map((m) => [m[0], m.toString('utf8', 1)])).toEqual([[1, 'p/'], [1, `${SYNC_PREFIX}${token!.toString()}`]]);
    await snap.send([rid!, 'END']);
    await connected;
    const [gone] = await stream.receive();
    expect([gone![0], gone!.toString('utf8', 1)]).toEqual([0, `${SYNC_PREFIX}${token!.toString()}`]);
  });

  it('detects a sequence gap and counts exactly the samples lost', async () => {
    // A raw PUB sends hand-made batches with samples 4..7 missing.
    const raw = new RawPub({ linger: 0 });
    await raw.bind('tcp://127.0.0.1:*');
    cleanup.push(() => raw.close());
    const sub = new Subscriber();
    sub.start();
    cleanup.push(() => sub.stop());
    const gaps: number[] = [];
    sub.on('gap', (g) => gaps.push(g.lost));
    await sub.connect(raw.lastEndpoint!);
    await raw.receive(); // the subscription reached the PUB
    const w = new BatchWriter(4096);
    const id = Buffer.alloc(16, 1);
    const batch = (first: number) => {
      w.begin('g', id, first, Date.now(), '', 1);
      for (let i = 0; i < 4; i++) w.add(Date.now(), 0, [first + i]);
      return w.finish();
    };
    for (const first of [0, 8, 12]) await raw.send(['g', batch(first)]);
    await raw.send(['g', Buffer.from('not a batch')]);
    await until(() => sub.stats().batchesReceived === 3 && sub.stats().malformed === 1, 5000);
    expect(gaps).toEqual([4]);
    expect(sub.stats()).toMatchObject({ gaps: 1, samplesLost: 4, samplesReceived: 12, malformed: 1 });
  });

  it('a mute socket (slow subscriber) drops the oldest batches, counted at both ends', async () => {
    const { pub, sub, samples } = await pair('tcp://127.0.0.1:*', { batchSamples: 10, queueLimit: 4, sendHighWaterMark: 2 });
    sub.pause();
    // 26 MB of samples, far more than the socket buffers, ZeroMQ's queues and our 4-batch queue hold while
    // nobody reads; the event loop turns between chunks so the publisher sends until the socket is mute.
    const TOTAL = 2_000_000;
    for (let i = 0; i < TOTAL; i++) {
      pub.publish('fast', i);
      if (i % 10_000 === 9_999) await new Promise((r) => setImmediate(r));
    }
    pub.flushAll();
    await new Promise((r) => setTimeout(r, 300));
    sub.resume();
    await pub.drained();
    await until(() => samples.length > 0 && samples[samples.length - 1]!.seq === TOTAL - 1, 20_000, 'the last sample');
    const ps = pub.stats();
    const ss = sub.stats();
    expect(ps.batchesDropped).toBeGreaterThan(0);
    // Every sample is accounted for: delivered, or dropped at the publisher (the subscriber sees that as loss).
    expect(ss.samplesReceived + ps.samplesDropped).toBe(TOTAL);
    expect(ss.samplesLost).toBe(ps.samplesDropped);
    expect(ps.muteEvents).toBeGreaterThan(0);
    // What did arrive arrived in order.
    expect(samples.every((s, i) => i === 0 || s.seq > samples[i - 1]!.seq)).toBe(true);
  });

  it('malformed frames in a batch are rejected with a reason', () => {
    const w = new BatchWriter(4096);
    w.begin('t', Buffer.alloc(16), 0, 0, 'u', 1);
    w.add(0, 0, [1]);
    const ok = w.finish();
    expect(new Batch('t', ok).value(0)).toBe(1);
    expect(() => new Batch('t', ok.subarray(0, ok.length - 1))).toThrow(/header says/);
    const v2 = Buffer.from(ok); v2[2] = 2;
    expect(() => new Batch('t', v2)).toThrow(/version 2/);
    expect(() => new Batch('t', Buffer.from('ST'))).toThrow(/shorter than/);
  });
});
