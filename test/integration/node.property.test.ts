// Property tests against a live node: random and mutated frames and beacons, sent over real sockets, never
// throw out of the node; malformed input is dropped and counted, and the node keeps serving its real peers.
import { afterAll, beforeAll, expect, it } from 'vitest';
import fc from 'fast-check';
import { createSocket, type Socket } from 'node:dgram';
import { encodeBeacon } from '../../runtime/zre/codec.ts';
import type { ZreNode } from '../../runtime/zre/node.ts';
import { loadVectors } from '../fixtures/vectors.ts';
import { loopbackNodes, meshed, RawPeer, waitFor } from '../helpers.ts';

let a: ZreNode, b: ZreNode;
let udp: Socket;
const uncaught: unknown[] = [];
const onUncaught = (e: unknown) => uncaught.push(e);

beforeAll(async () => {
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  [a, b] = (await loopbackNodes(2)) as [ZreNode, ZreNode];
  await meshed([a, b]);
  udp = createSocket('udp4');
  udp.bind(() => udp.setBroadcast(true));
});
afterAll(async () => {
  process.off('uncaughtException', onUncaught);
  process.off('unhandledRejection', onUncaught);
  udp.close();
  await Promise.all([a.stop(), b.stop()]);
});

// HELLOs are left out: a mutated endpoint could name an address off this machine, and the node would dial it.
const vectorFrames = loadVectors().filter((v) => v.kind === 'zre' && v.decoded.message !== 'HELLO').map((v) => v.frames!.map((h) => Buffer.from(h, 'hex')));
const randomFrame = fc.uint8Array({ maxLength: 120 }).map((x) => Buffer.from(x));
/** A message: random frames, or a captured Zyre message with one byte changed or cut short. */
const hostileMessage = fc.oneof(
  fc.array(randomFrame, { minLength: 1, maxLength: 3 }),
  fc.tuple(fc.constantFrom(...vectorFrames), fc.nat(), fc.integer({ min: 0, max: 255 }), fc.boolean()).map(([frames, at, byte, cut]) => {
    const f = Buffer.from(frames[0]!);
    const i = at % f.length;
    const first = cut ? f.subarray(0, i) : (f[i] = byte, f);
    return [first, ...frames.slice(1)];
  }),
);

async function settle(): Promise<void> {
  // A round trip through b proves a has handled everything queued before it.
  const got = waitFor(a, 'whisper', (w) => w.peer === b.id && String(w.content[0]) === 'ping?');
  b.whisper(a.id, 'ping?');
  await got;
}

it('hostile frames from a peer that said HELLO, and from strangers, never take the node down', async () => {
  const before = a.stats();
  await fc.assert(fc.asyncProperty(fc.array(hostileMessage, { minLength: 1, maxLength: 20 }), fc.boolean(), async (messages, greet) => {
    const raw = new RawPeer();
    await raw.open(a.endpoint);
    try {
      if (greet) await raw.hello();
      for (const m of messages) await raw.raw(m);
      await new Promise((r) => setTimeout(r, 5));
      await settle();
    } finally {
      raw.close();
    }
  }), { numRuns: 150 });
  const after = a.stats();
  expect(uncaught).toEqual([]);
  expect(after.internalErrors).toBe(0);
  expect(after.messagesMalformed).toBeGreaterThan(before.messagesMalformed);
  expect(after.beforeHello).toBeGreaterThan(before.beforeHello);
  // The real peer was never confused with the hostile ones.
  expect(a.findPeer(b.id)).toBeDefined();
  expect(after.messagesReceived - before.messagesReceived).toBeGreaterThanOrEqual(150);
}, 120_000);

it('random and mutated beacons never take the node down; each malformed one is counted', async () => {
  const port = (a as unknown as { opts: { beaconPort: number } }).opts.beaconPort;
  const valid = encodeBeacon({ version: 1, uuid: Buffer.alloc(16, 9), port: 1 });
  const before = a.stats().beaconsMalformed;
  let sentMalformed = 0;
  await fc.assert(fc.asyncProperty(
    fc.oneof(fc.uint8Array({ maxLength: 60 }).map((x) => Buffer.from(x)),
      fc.tuple(fc.nat(21), fc.integer({ min: 0, max: 255 })).map(([i, v]) => { const c = Buffer.from(valid); c[i] = v; return c; })),
    async (bytes) => {
      const malformed = bytes.length !== 22 || bytes.subarray(0, 3).toString('latin1') !== 'ZRE' || bytes[3] !== 1;
      if (malformed) sentMalformed++;
      // Well-formed ones name a peer at 127.0.0.1:<port> that is not there: the node just dials it.
      await new Promise<void>((r) => udp.send(bytes, port, '127.255.255.255', () => r()));
      // Pace the datagrams so the node reads them before its socket buffer fills (UDP drops the excess).
      await new Promise((r) => setTimeout(r, 1));
    },
  ), { numRuns: 500 });
  const deadline = Date.now() + 5000;
  while (a.stats().beaconsMalformed - before < sentMalformed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  expect(a.stats().beaconsMalformed - before).toBe(sentMalformed);
  expect(uncaught).toEqual([]);
  expect(a.stats().internalErrors).toBe(0);
  await settle();
}, 60_000);
