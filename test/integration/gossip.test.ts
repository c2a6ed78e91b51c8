// zgossip on real sockets on loopback: our server and client speak the bytes Zyre C's do (vectors gossip-*),
// nodes in gossip mode meet without beacons and say GOODBYE when they stop, and a tuple's lease takes a
// SIGKILLed node out of every view.
import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Dealer, Router } from 'zeromq';
import { Gossip } from '../../runtime/zre/gossip.ts';
import { decodeGossip } from '../../runtime/zre/codec.ts';
import { ZreNode } from '../../runtime/zre/node.ts';
import { loadVectors } from '../fixtures/vectors.ts';
import { freeTcpPort, processFixture, until, waitFor } from '../helpers.ts';

const cli = fileURLToPath(new URL('../../dist/starling.cjs', import.meta.url));
const { track } = processFixture('starling-gossip-');
const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});
const vector = (name: string) => {
  const v = loadVectors().find((x) => x.name === name);
  if (!v) throw new Error(`vector ${name} missing`);
  return v.frames!.map((h) => Buffer.from(h, 'hex'));
};
const hex = (frames: Buffer[]) => frames.map((f) => f.toString('hex'));

describe('the wire, against Zyre C\'s vectors', () => {
  it('our server answers HELLO with every tuple, PING with the PONG of the vector, a stranger\'s PUBLISH with INVALID', async () => {
    const endpoint = `tcp://127.0.0.1:${await freeTcpPort()}`;
    const server = new Gossip({ bind: endpoint, ttl: 0 });
    await server.start();
    cleanup.push(() => server.stop());
    server.publish('C3FC54701DF34437AAF31D7A6703A4C0', 'tcp://10.78.0.1:49152');
    const client = new Dealer({ linger: 0, receiveTimeout: 3000 });
    client.connect(endpoint);
    cleanup.push(() => client.close());
    await client.send(vector('gossip-hello'));
    // The server's tuple, byte for byte as Zyre C's server sent it (gossip-publish-server-to-client).
    expect(hex(await client.receive())).toEqual(hex(vector('gossip-publish-server-to-client')));
    await client.send(vector('gossip-ping'));
    expect(hex(await client.receive())).toEqual(hex(vector('gossip-pong')));
    // Zyre C's client announcing itself: stored in the view.
    await client.send(vector('gossip-publish-client-to-server'));
    await until(() => server.view().get('32D48CD64BF4409799D9B5F04B26FA22') === 'tcp://10.78.0.2:49152', 3000, 'the tuple stored');
    const stranger = new Dealer({ linger: 0, receiveTimeout: 3000 });
    stranger.connect(endpoint);
    cleanup.push(() => stranger.close());
    await stranger.send(vector('gossip-publish-client-to-server'));
    expect(hex(await stranger.receive())).toEqual(hex(vector('gossip-invalid')));
  });

  it('our client opens with the HELLO and PUBLISH of the vectors (ttl 0, as CZMQ), and says HELLO again after INVALID', async () => {
    const endpoint = `tcp://127.0.0.1:${await freeTcpPort()}`;
    const seed = new Router({ linger: 0, receiveTimeout: 3000 });
    await seed.bind(endpoint);
    cleanup.push(() => seed.close());
    const client = new Gossip({ connect: [endpoint], ttl: 0 });
    client.publish('32D48CD64BF4409799D9B5F04B26FA22', 'tcp://10.78.0.2:49152');
    await client.start();
    cleanup.push(() => client.stop());
    const next = async () => {
      for (;;) {
        const [rid, ...frames] = await seed.receive();
        if (decodeGossip(frames).type !== 'PING') return { rid: rid!, frames };
      }
    };
    expect(hex((await next()).frames)).toEqual(hex(vector('gossip-hello')));
    const { rid, frames } = await next();
    expect(hex(frames)).toEqual(hex(vector('gossip-publish-client-to-server')));
    await seed.send([rid, ...vector('gossip-invalid')]);
    expect(hex((await next()).frames)).toEqual(hex(vector('gossip-hello')));
    expect(hex((await next()).frames)).toEqual(hex(vector('gossip-publish-client-to-server')));
  });
});

describe('nodes in gossip mode', () => {
  async function gossipNode(name: string, gossip: ConstructorParameters<typeof Gossip>[0], extra = {}) {
    const n = new ZreNode({ iface: 'lo', name, pingInterval: 100, gossip, ...extra });
    await n.start();
    cleanup.push(() => n.stop());
    return n;
  }

  it('meet through a seed without beacons, and a stopping node says GOODBYE to every peer', async () => {
    const seed = `tcp://127.0.0.1:${await freeTcpPort()}`;
    const a = await gossipNode('a', { bind: seed });
    const b = await gossipNode('b', { connect: [seed] });
    const c = await gossipNode('c', { connect: [seed] });
    const t0 = Date.now();
    await until(() => [a, b, c].every((n) => n.peerList().length === 2), 5000, 'all three to meet');
    console.log(`gossip: three nodes met in ${Date.now() - t0} ms`);
    expect(a.stats().beaconsSent).toBe(0);
    const gone = Promise.all([waitFor(a, 'exit', (e) => e.name === 'c'), waitFor(b, 'exit', (e) => e.name === 'c')]);
    await c.stop();
    const [[ea], [eb]] = await gone;
    expect([ea.reason, eb.reason]).toEqual(['goodbye', 'goodbye']);
  });

  it('a SIGKILLed node leaves the views within its lease', async () => {
    const seed = `tcp://127.0.0.1:${await freeTcpPort()}`;
    const a = await gossipNode('a', { bind: seed, ttl: 2 }, { evasiveTimeout: 1000 });
    const victim = track(spawn(process.execPath, [cli, 'listen', '--iface', 'lo', '--name', 'victim', '--gossip-connect', seed, '--gossip-ttl', '2', '--json'], { stdio: ['ignore', 'pipe', 'inherit'] }));
    await waitFor(a, 'enter', (p) => p.name === 'victim', 10_000);
    await until(() => a.stats().gossip!.tuples === 2, 3000, 'its tuple');
    victim.kill('SIGKILL');
    const t0 = Date.now();
    const [exit] = await waitFor(a, 'exit', (e) => e.name === 'victim', 10_000);
    const took = Date.now() - t0;
    expect(exit.reason).toBe('expired');
    // Lease 2 s (plus a check every 300 ms), far inside ZRE's own 30 s expiry.
    expect(took).toBeLessThan(4000);
    expect(a.stats().gossip!.expired).toBe(1);
  });
});
