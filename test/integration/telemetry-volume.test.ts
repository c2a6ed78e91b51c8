// 1,000,000 samples through a real tcp PUB/SUB pair with bounded memory.
import { afterAll, expect, it } from 'vitest';
import { Publisher } from '../../runtime/telemetry/publisher.ts';
import { Subscriber } from '../../runtime/telemetry/subscriber.ts';

/** The stated bound: RSS may grow by at most this much while 1,000,000 samples pass (queues are bounded). */
const RSS_GROWTH_BOUND = 64 * 1024 * 1024;

const pub = new Publisher({ endpoints: ['tcp://127.0.0.1:*'] });
const sub = new Subscriber();
afterAll(async () => {
  await pub.stop(500);
  await sub.stop();
});

it('1,000,000 samples pass with RSS growth under 64 MiB and none lost', async () => {
  await pub.start();
  sub.start();
  await sub.connect(pub.endpoints[0]!);
  await pub.waitForSubscriber('x', 5000);
  const TOTAL = 1_000_000;
  let received = 0;
  let sum = 0;
  sub.on('batch', (b, from) => {
    for (let i = from; i < b.count; i++) sum += b.value(i);
    received += b.count - from;
  });
  global.gc?.();
  const before = process.memoryUsage().rss;
  let peak = before;
  const t0 = Date.now();
  for (let i = 0; i < TOTAL; i++) {
    pub.publish(`sensor/${i % 8}`, i % 100, { unit: 'x', ts: t0 + i / 1000 });
    if (i % 20_000 === 19_999) {
      // Back-pressure from the producer's side: let the queue drain now and then.
      await pub.drained();
      peak = Math.max(peak, process.memoryUsage().rss);
    }
  }
  pub.flushAll();
  await pub.drained();
  const deadline = Date.now() + 30_000;
  while (received < TOTAL && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
    peak = Math.max(peak, process.memoryUsage().rss);
  }
  expect(received).toBe(TOTAL);
  expect(sum).toBe(49.5 * TOTAL);
  expect(sub.stats()).toMatchObject({ samplesLost: 0, malformed: 0, duplicates: 0 });
  expect(pub.stats()).toMatchObject({ samplesPublished: TOTAL, samplesDropped: 0 });
  console.log(`1M samples: RSS before ${(before / 1048576).toFixed(1)} MB, peak ${(peak / 1048576).toFixed(1)} MB, growth ${((peak - before) / 1048576).toFixed(1)} MB`);
  expect(peak - before).toBeLessThan(RSS_GROWTH_BOUND);
}, 120_000);
