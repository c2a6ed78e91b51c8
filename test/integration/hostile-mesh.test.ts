// Hostile input on the mesh, with real UDP and ZeroMQ sockets on loopback: beacon floods, endpoint claims,
// re-HELLO loops and oversized HELLOs are refused and counted, and honest peers keep talking during and after.
import { describe, expect, it } from 'vitest';
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { ZreNode } from '../../runtime/zre/node.ts';
import { decodeZre, encodeBeacon } from '../../runtime/zre/codec.ts';
import { meshed, nodeFixture, until, waitFor } from '../helpers.ts';

const { nodes, rawPeer, track } = nodeFixture();

const beaconPortOf = (n: ZreNode) => (n as unknown as { opts: { beaconPort: number } }).opts.beaconPort;

/** Whispers a → b and waits for it: the honest path works. */
async function talks(a: ZreNode, b: ZreNode, text: string): Promise<void> {
  const got = waitFor(b, 'whisper', (m) => String(m.content[0]) === text, 5000);
  expect(a.whisper(b.id, text)).toBe(true);
  await got;
}

describe('a flood of beacons with made-up UUIDs', () => {
  it('costs a bounded number of half-open peers, is counted, and real peers still meet and talk', async () => {
    const problems: string[] = [];
    // The handshake timeout is 5 s here (15 s by default) to keep the test short.
    const [a, b] = await nodes(2, { handshakeTimeout: 5000, onProblem: (m: string) => problems.push(m) });
    await meshed([a!, b!]);
    const udp = createSocket('udp4');
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
    udp.setBroadcast(true); // to every node on the port, as beacons go (a unicast would reach one socket of the two)
    const port = beaconPortOf(a!);
    let maxKnown = 0;
    // 20,000 beacons in bursts of 100 (paced so the socket buffers keep most), each naming a fresh UUID and a
    // port that nobody listens on.
    for (let burst = 0; burst < 200; burst++) {
      await Promise.all(Array.from({ length: 100 }, () => new Promise<void>((r) => {
        udp.send(encodeBeacon({ version: 1, uuid: randomBytes(16), port: 1 + Math.floor(Math.random() * 1000) }), port, '127.255.255.255', () => r());
      })));
      maxKnown = Math.max(maxKnown, a!.stats().knownPeers);
      if (burst === 100) await talks(a!, b!, 'during the flood');
      await new Promise((r) => setTimeout(r, 5));
    }
    udp.close();
    // The kernel may drop some of the flood from the socket buffer; wait until what arrived has been read.
    // (b's own beacons, every 100 ms, go on arriving: "settled" is fewer than 10 new ones in 300 ms.)
    let seen = -100;
    while (a!.stats().beaconsReceived - seen >= 10) {
      seen = a!.stats().beaconsReceived;
      await new Promise((r) => setTimeout(r, 300));
    }
    const st = a!.stats();
    expect(st.beaconsReceived).toBeGreaterThan(10_000);
    // The defaults: 16 admitted at once from one source, then 4 a second; never more than 128 half-open.
    expect(maxKnown).toBeLessThanOrEqual(1 + 128);
    expect(st.halfOpen).toBeLessThanOrEqual(128);
    // Everything but the few admitted (16 at once, then 4 a second, from this one source) was refused.
    expect(st.peersRefused).toBeGreaterThan(st.beaconsReceived - 100);
    // One rate-limited log line for the source, not one per beacon.
    const lines = problems.filter((m) => m.includes('refused') && m.includes('admission rate'));
    expect(lines.length).toBeGreaterThanOrEqual(1);
    expect(lines.length).toBeLessThanOrEqual(3);
    await talks(a!, b!, 'after the flood');
    await talks(b!, a!, 'and back');
    // The phantoms never say HELLO: they go after the handshake timeout, and the real peer stays.
    await until(() => a!.stats().halfOpen === 0, 10_000, 'the half-open phantoms to time out');
    expect(a!.stats().handshakeTimeouts).toBeGreaterThan(0);
    expect(a!.peerList().map((p) => p.peer)).toEqual([b!.id]);
  }, 30_000);

  it('a new node from the flooded address still joins: its HELLO needs no admission', async () => {
    const [a] = await nodes(1, { admitBurst: 1, admitRate: 0.01 });
    const udp = createSocket('udp4');
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
    for (let i = 0; i < 200; i++) {
      await new Promise<void>((r) => udp.send(encodeBeacon({ version: 1, uuid: randomBytes(16), port: 9 }), beaconPortOf(a!), '127.0.0.1', () => r()));
    }
    udp.close();
    await until(() => a!.stats().peersRefused >= 199, 5000, 'the beacons to be refused');
    const late = new ZreNode({ iface: 'lo', beaconPort: beaconPortOf(a!), beaconInterval: 100, pingInterval: 100, name: 'late' });
    track(late);
    await late.start();
    await Promise.all([waitFor(a!, 'enter', (p) => p.name === 'late', 10_000), waitFor(late, 'enter', (p) => p.peer === a!.id, 10_000)]);
    await talks(late, a!, 'hello from the flooded address');
  }, 20_000);
});

describe('claims on another peer\'s inbox', () => {
  it('a HELLO naming a live peer\'s endpoint is refused: no eviction, no re-HELLO storm', async () => {
    const [a, b] = await nodes(2);
    await meshed([a!, b!]);
    let churn = 0;
    for (const n of [a!, b!]) {
      n.on('enter', () => churn++);
      n.on('exit', () => churn++);
    }
    const raw = await rawPeer(a!);
    await raw.hello({ endpoint: b!.endpoint, name: 'impostor' });
    await until(() => a!.stats().endpointConflicts === 1, 5000, 'the claim to be refused');
    await new Promise((r) => setTimeout(r, 2000));
    expect(churn).toBe(0);
    expect(a!.peerList().map((p) => p.name)).toEqual(['n1']);
    await talks(a!, b!, 'still you');
    await talks(b!, a!, 'still me');
  }, 15_000);
});

describe('re-HELLO', () => {
  it('is answered on the same connection at most once a second, so two nodes cannot feed it back', async () => {
    const [a] = await nodes(1);
    const raw = await rawPeer(a!);
    await raw.hello();
    await waitFor(a!, 'enter');
    await raw.inbox.receive(); // the node's first HELLO
    for (let i = 0; i < 10; i++) await raw.hello({ name: `again${i}` });
    await until(() => a!.stats().rehellos === 10, 5000, 'ten re-HELLOs');
    // Whatever it sent us since: one HELLO answer within the second, then (at most) our pings.
    const answers: string[] = [];
    raw.inbox.receiveTimeout = 300;
    for (;;) {
      try {
        const [, ...frames] = await raw.inbox.receive();
        answers.push(decodeZre(frames).type);
      } catch {
        break;
      }
    }
    expect(answers.filter((t) => t === 'HELLO')).toHaveLength(1);
    expect(a!.findPeer(raw.id)?.name).toBe('again9');
  }, 15_000);

  it('two honest nodes recover from a reset on one side without churn', async () => {
    const [a, b] = await nodes(2);
    await meshed([a!, b!]);
    let exits = 0;
    a!.on('exit', () => exits++);
    b!.on('exit', () => exits++);
    // b forgets a (as on a sequence gap): a sees b's fresh HELLO, answers once, and both go on.
    (b as unknown as { removePeer(p: unknown, r: string): void }).removePeer((b as unknown as { peers: Map<string, unknown> }).peers.get(a!.id), 'sequence-gap');
    await waitFor(b!, 'enter', (p) => p.peer === a!.id, 10_000);
    await talks(a!, b!, 'after the reset');
    await talks(b!, a!, 'both ways');
    await new Promise((r) => setTimeout(r, 1500));
    expect(exits).toBeLessThanOrEqual(3);
    expect(a!.stats().rehellos).toBeLessThanOrEqual(2);
  }, 20_000);
});

describe('bounds on what a HELLO may carry', () => {
  it('too many headers, a header value too long, or too many groups: refused and counted; a fair HELLO then works', async () => {
    const [a] = await nodes(1);
    const raw = await rawPeer(a!);
    await raw.hello({ headers: new Map(Array.from({ length: 65 }, (_, i) => [`X-H${i}`, 'v'])) });
    await raw.hello({ headers: new Map([['X-BIG', 'x'.repeat(5000)]]) });
    await raw.hello({ groups: Array.from({ length: 257 }, (_, i) => `G${i}`) });
    await until(() => a!.stats().helloRefused === 3, 5000, 'three HELLOs refused');
    expect(a!.peerList()).toEqual([]);
    await raw.hello({ headers: new Map([['X-OK', 'yes']]) });
    const [info] = await waitFor(a!, 'enter');
    expect(info.headers).toEqual({ 'X-OK': 'yes' });
  });

  it('JOINs past maxGroups follow the status but keep no group', async () => {
    const [a] = await nodes(1, { maxGroups: 4 });
    const raw = await rawPeer(a!);
    await raw.hello();
    await waitFor(a!, 'enter');
    for (let i = 1; i <= 6; i++) await raw.send({ type: 'JOIN', group: `G${i}`, status: i });
    await until(() => a!.stats().groupsRefused === 2, 5000, 'two JOINs refused');
    expect(a!.findPeer(raw.id)?.groups).toEqual(['G1', 'G2', 'G3', 'G4']);
    expect(a!.stats().statusMismatches).toBe(0);
    // The status was followed: the next LEAVE (status 7) is in order.
    const left = waitFor(a!, 'leave');
    await raw.send({ type: 'LEAVE', group: 'G1', status: 7 });
    expect((await left)[0].group).toBe('G1');
  });

  it('a message over maxMessageSize never reaches the node; the node goes on', async () => {
    const [a, b] = await nodes(2, { maxMessageSize: 64 * 1024 });
    await meshed([a!, b!]);
    const raw = await rawPeer(a!);
    await raw.hello();
    await waitFor(a!, 'enter', (p) => p.peer === raw.id);
    let whispers = 0;
    a!.on('whisper', (m) => m.peer === raw.id && whispers++);
    await raw.send({ type: 'WHISPER', content: [Buffer.alloc(1024 * 1024)] });
    await new Promise((r) => setTimeout(r, 500));
    expect(whispers).toBe(0);
    await talks(b!, a!, 'the node goes on');
  });
});
