// Property tests for secure mode (issue 13): random and mutated v1 and v3 beacons against a live secure node
// and a live plain one, and random ZAP requests against the process's ZAP handler, over real sockets. Nothing
// throws, every beacon and request is counted in exactly one counter, and afterwards two trusted nodes still
// meet over CURVE.
import { afterAll, beforeAll, expect, it } from 'vitest';
import fc from 'fast-check';
import { createSocket, type Socket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { Dealer, curveKeyPair } from 'zeromq';
import { encodeBeacon } from '../../runtime/zre/codec.ts';
import { ZreNode, type ZreStats } from '../../runtime/zre/node.ts';
import { Zap, ZAP_ENDPOINT } from '../../runtime/security/zap.ts';
import { beaconPort, until, waitFor } from '../helpers.ts';

const uncaught: unknown[] = [];
const onUncaught = (e: unknown) => uncaught.push(e);
let udp: Socket;
const nodes: ZreNode[] = [];
const ka = curveKeyPair();
const kb = curveKeyPair();

beforeAll(async () => {
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  udp = createSocket('udp4');
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
});
afterAll(async () => {
  process.off('uncaughtException', onUncaught);
  process.off('unhandledRejection', onUncaught);
  udp.close();
  await Promise.all(nodes.map((n) => n.stop()));
});

/** A beacon: random bytes, or a valid v1 or v3 beacon with one byte changed or cut short. */
const beacons = fc.oneof(
  fc.uint8Array({ maxLength: 80 }).map((x) => Buffer.from(x)),
  fc.tuple(fc.constantFrom(1, 3), fc.nat(53), fc.integer({ min: 0, max: 255 }), fc.nat(60)).map(([v, i, byte, cut]) => {
    const b = v === 3
      ? encodeBeacon({ version: 3, uuid: randomBytes(16), port: 9, publicKey: randomBytes(32) })
      : encodeBeacon({ version: 1, uuid: randomBytes(16), port: 9 });
    if (i < b.length) b[i] = byte;
    return cut < 5 ? b.subarray(0, b.length - cut) : b;
  }),
);

/**
 * Every way a node accounts for one beacon that is not its own: malformed, the other version, or received
 * (and then, in secure mode, dropped for a zero key or refused for an untrusted one, counted again there).
 */
const beaconCount = (s: ZreStats) => s.beaconsMalformed + s.beaconsOtherVersion + s.beaconsReceived;

for (const mode of ['secure', 'plain'] as const) {
  it(`${mode} node: random and mutated v1/v3 beacons never throw; each is counted once`, async () => {
    const port = beaconPort();
    // Nobody's key is trusted: a well-formed v3 beacon is refused (counted in keysRefused, after beaconsReceived).
    const node = new ZreNode({ iface: 'lo', beaconPort: port, beaconInterval: 60_000, admitBurst: 10_000, admitRate: 10_000, maxHalfOpen: 10_000,
      ...(mode === 'secure' ? { curve: { ...ka, allows: () => false } } : {}) });
    nodes.push(node);
    await node.start();
    const before = node.stats();
    let sent = 0;
    // A well-formed v3 beacon with port 0 says its node is leaving: received, and nothing else to do.
    let leaving = 0;
    await fc.assert(fc.asyncProperty(beacons, async (bytes) => {
      sent++;
      if (bytes.length === 54 && bytes.subarray(0, 4).equals(Buffer.from('ZRE\x03', 'latin1')) && bytes.readUInt16BE(20) === 0) leaving++;
      await new Promise<void>((r) => udp.send(bytes, port, '127.0.0.1', () => r()));
      await new Promise((r) => setTimeout(r, 1)); // paced: the socket buffer keeps them all
    }), { numRuns: 400 });
    await until(() => beaconCount(node.stats()) - beaconCount(before) >= sent, 5000, 'every beacon counted');
    const after = node.stats();
    expect(beaconCount(after) - beaconCount(before)).toBe(sent);
    expect(after.beaconsMalformed - before.beaconsMalformed).toBeGreaterThan(0);
    if (mode === 'secure') {
      // Well-formed v3 beacons: either a zero-key (dropped) or an untrusted key (refused), never a dial; or a
      // leaving one (port 0: a mutation of a port byte, rare; it failed this test once in a full suite run).
      expect(after.knownPeers).toBe(0);
      expect(after.keysRefused - before.keysRefused + after.beaconsBadKey - before.beaconsBadKey).toBeGreaterThanOrEqual(after.beaconsReceived - before.beaconsReceived - leaving);
    }
    expect(after.internalErrors).toBe(0);
    expect(uncaught).toEqual([]);
  }, 60_000);
}

it('random ZAP requests never stop the handler; each is counted, and CURVE nodes meet afterwards', async () => {
  const zap = await Zap.shared();
  const { unregister } = zap.register('fuzz', () => true); // keeps the handler up for the requests
  const d = new Dealer({ linger: 0 });
  d.connect(ZAP_ENDPOINT);
  const before = zap.stats();
  const valid = () => [Buffer.alloc(0), Buffer.from('1.0'), Buffer.from('1'), Buffer.from('fuzz'), Buffer.from('127.0.0.1'), Buffer.alloc(0), Buffer.from('CURVE'), randomBytes(32)];
  let sent = 0;
  await fc.assert(fc.asyncProperty(
    fc.oneof(
      fc.array(fc.uint8Array({ maxLength: 40 }).map((x) => Buffer.from(x)), { minLength: 1, maxLength: 10 }),
      fc.tuple(fc.nat(7), fc.uint8Array({ maxLength: 40 })).map(([i, x]) => { const f = valid(); f[i] = Buffer.from(x); return f; }),
    ),
    async (frames) => {
      sent++;
      await d.send(frames);
    },
  ), { numRuns: 300 });
  await until(() => zap.stats().zapRequests - before.zapRequests >= sent, 5000, 'every request counted');
  const after = zap.stats();
  expect(after.zapRequests - before.zapRequests).toBe(sent);
  // Each one was either malformed (no answer) or answered, allowed or refused.
  expect((after.zapMalformed - before.zapMalformed) + (after.zapAllowed - before.zapAllowed) + (after.zapRefused - before.zapRefused)).toBeGreaterThanOrEqual(sent);
  d.close();
  // The handler still serves real handshakes.
  const port = beaconPort();
  const a = new ZreNode({ iface: 'lo', beaconPort: port, beaconInterval: 100, curve: { ...ka, allows: (k) => k === kb.publicKey } });
  const b = new ZreNode({ iface: 'lo', beaconPort: port, beaconInterval: 100, curve: { ...kb, allows: (k) => k === ka.publicKey } });
  nodes.push(a, b);
  const met = Promise.all([waitFor(a, 'enter', () => true, 10_000), waitFor(b, 'enter', () => true, 10_000)]);
  await a.start();
  await b.start();
  await met;
  unregister();
  expect(uncaught).toEqual([]);
}, 60_000);
