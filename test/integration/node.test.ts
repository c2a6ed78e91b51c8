// The ZRE node on loopback with real ZeroMQ and UDP sockets.
import { describe, expect, it, vi } from 'vitest';
import { createSocket } from 'node:dgram';
import { ZreNode, ZreNodeError } from '../../runtime/zre/node.ts';
import { decodeZre, encodeBeacon } from '../../runtime/zre/codec.ts';
import { beaconPort, freeTcpPort, meshed, nodeFixture, until, waitFor } from '../helpers.ts';

const { nodes, rawPeer, track } = nodeFixture();

describe('discovery and presence', () => {
  it('two nodes find each other by beacon; ENTER carries name, endpoint and headers', async () => {
    const port = beaconPort();
    const a = new ZreNode({ iface: 'lo', beaconPort: port, name: 'alpha', headers: { 'X-ROLE': 'sensor', 'X-UTF8': 'grüße ✓' } });
    const b = new ZreNode({ iface: 'lo', beaconPort: port, name: 'bravo' });
    track(a, b);
    const entered = waitFor(b, 'enter');
    await a.start();
    await b.start();
    const [info] = await entered;
    expect(info).toMatchObject({ peer: a.id, name: 'alpha', endpoint: a.endpoint, headers: { 'X-ROLE': 'sensor', 'X-UTF8': 'grüße ✓' } });
    expect(a.endpoint).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
    expect(a.iface).toMatchObject({ name: 'lo', address: '127.0.0.1', broadcast: '127.255.255.255' });
    await meshed([a, b]);
    expect(a.findPeer('bravo')?.peer).toBe(b.id);
  });

  it('a node that stops cleanly is seen leaving at once (port-0 beacon)', async () => {
    const [a, b] = await nodes(2, { expiredTimeout: 60_000 });
    await meshed([a!, b!]);
    const exit = waitFor(a!, 'exit');
    const t0 = performance.now();
    await b!.stop();
    const [ev] = await exit;
    expect(ev).toMatchObject({ peer: b!.id, name: b!.name, reason: 'leaving' });
    expect(performance.now() - t0).toBeLessThan(5_000);
  });

  it('a quiet peer turns EVASIVE then SILENT, and is dropped after the expiry', async () => {
    const [a] = await nodes(1, { evasiveTimeout: 300, silentTimeout: 600, expiredTimeout: 1200 });
    const raw = await rawPeer(a!);
    await raw.hello({ name: 'mute' });
    await waitFor(a!, 'enter');
    // The raw peer never answers the node's PINGs.
    const [evasive] = await waitFor(a!, 'evasive');
    const [silent] = await waitFor(a!, 'silent');
    const [exit] = await waitFor(a!, 'exit');
    expect([evasive.name, silent.name, exit.name, exit.reason]).toEqual(['mute', 'mute', 'mute', 'expired']);
    expect(a!.peerList()).toEqual([]);
  });

  it('a peer that beacons is heard without PINGs (36/ZRE), and one that stops is EVASIVE, then dropped', async () => {
    const [a] = await nodes(1, { evasiveTimeout: 300, silentTimeout: 600, expiredTimeout: 1200 });
    const raw = await rawPeer(a!);
    await raw.hello({ name: 'beaconing' });
    await waitFor(a!, 'enter');
    const pings: number[] = [];
    void (async () => {
      try {
        for (;;) {
          const [, ...frames] = await raw.inbox.receive();
          if (decodeZre(frames).type === 'PING') pings.push(Date.now());
        }
      } catch {
        // the raw peer closed
      }
    })();
    // It never answers a PING, but beacons from its inbox every 100 ms, for longer than the expiry.
    const udp = createSocket('udp4');
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
    const port = Number(/:(\d+)$/.exec(raw.endpoint)![1]);
    const beacon = encodeBeacon({ version: 1, uuid: raw.uuid, port });
    const evasive: string[] = [];
    a!.on('evasive', (p) => evasive.push(p.name));
    const beaconPortOfA = (a as unknown as { opts: { beaconPort: number } }).opts.beaconPort;
    const timer = setInterval(() => udp.send(beacon, beaconPortOfA, '127.0.0.1'), 100);
    try {
      await new Promise((r) => setTimeout(r, 2500));
      expect(evasive).toEqual([]);
      expect(pings).toEqual([]);
      expect(a!.peerList().map((p) => p.name)).toEqual(['beaconing']);
    } finally {
      clearInterval(timer);
      udp.close();
    }
    // Beacons stop: PINGs (unanswered), EVASIVE, then EXIT at the expiry.
    const [exit] = await waitFor(a!, 'exit', undefined, 5000);
    expect(exit).toMatchObject({ name: 'beaconing', reason: 'expired' });
    expect(evasive).toEqual(['beaconing']);
    expect(pings.length).toBeGreaterThan(0);
  });

  it('a listener that throws does not keep the event from the listeners after it; the throw is counted', async () => {
    const [a, b] = await nodes(2);
    const heard: string[] = [];
    a!.on('enter', () => {
      throw new Error('out of sockets (a listener of ours)');
    });
    a!.on('enter', (p) => heard.push(p.name));
    await meshed([a!, b!]);
    await until(() => heard.length === 1, 5000, 'the second listener to hear ENTER');
    expect(heard).toEqual([b!.name]);
    expect(a!.stats().internalErrors).toBe(1);
    expect(a!.stats().lastError).toContain("a 'enter' listener: out of sockets");
    // The node goes on: it still talks.
    const got = waitFor(b!, 'whisper');
    a!.whisper(b!.id, 'still here');
    expect(String((await got)[0].content[0])).toBe('still here');
  });

  it('idle healthy peers never turn evasive (beacons or PINGs keep them heard)', async () => {
    // Timeouts generous enough for a loaded CI machine: a healthy peer answers a PING in milliseconds.
    const [a, b] = await nodes(2, { evasiveTimeout: 1000, silentTimeout: 2000, expiredTimeout: 4000 });
    await meshed([a!, b!]);
    const evasive: string[] = [];
    a!.on('evasive', (p) => evasive.push(p.name));
    b!.on('evasive', (p) => evasive.push(p.name));
    await new Promise((r) => setTimeout(r, 3000));
    expect(evasive).toEqual([]);
    expect(a!.peerList()).toHaveLength(1);
    expect(b!.peerList()).toHaveLength(1);
  });

  it('static peers find each other without broadcast (different beacon ports)', async () => {
    const a = new ZreNode({ iface: 'lo', beaconPort: beaconPort(), mailboxPort: 0, name: 'a' });
    track(a);
    await a.start();
    const b = new ZreNode({ iface: 'lo', beaconPort: beaconPort(), name: 'b', peers: [a.endpoint], beaconInterval: 100 });
    track(b);
    const aSees = waitFor(a, 'enter');
    const bSees = waitFor(b, 'enter');
    await b.start();
    expect((await aSees)[0].name).toBe('b');
    expect((await bSees)[0].name).toBe('a');
    // Static peers have no beacon to say goodbye with: GOODBYE does it.
    const exit = waitFor(a, 'exit');
    await b.stop();
    expect((await exit)[0].reason).toBe('goodbye');
  });

  it('a start that cannot have its beacon port or its inbox port says which, and leaves nothing open', async () => {
    // The inbox and both beacon sockets are opened at once: whichever fails, the others are closed again.
    const port = beaconPort();
    const blocker = createSocket({ type: 'udp4' }); // no SO_REUSEADDR: our wildcard bind on the port fails
    await new Promise<void>((r) => blocker.bind(port, () => r()));
    const inbox = await freeTcpPort();
    const a = new ZreNode({ iface: 'lo', beaconPort: port, mailboxPort: inbox, name: 'a' });
    track(a);
    await expect(a.start()).rejects.toThrow(new RegExp(`cannot open the beacon socket on UDP port ${port}: .*EADDRINUSE`));
    blocker.close();
    // The inbox's port was let go: a second node binds it, on the beacon port now free.
    const b = new ZreNode({ iface: 'lo', beaconPort: port, mailboxPort: inbox, name: 'b' });
    track(b);
    await b.start();
    expect(b.endpoint).toBe(`tcp://127.0.0.1:${inbox}`);
    // The inbox port taken (by b): the error names it, and the beacon sockets a tried are closed — a socket
    // without SO_REUSEADDR can have the beacon port once b has stopped.
    const c = new ZreNode({ iface: 'lo', beaconPort: port, mailboxPort: inbox, name: 'c' });
    track(c);
    await expect(c.start()).rejects.toThrow(`cannot bind the inbox on 127.0.0.1:${inbox}`);
    await b.stop();
    const probe = createSocket({ type: 'udp4' });
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.bind(port, () => resolve());
    });
    probe.close();
  });
});

describe('groups and messages', () => {
  it('join, shout to the group only, whisper with several frames (empty ones too), leave', async () => {
    const [a, b, c] = await nodes(3);
    await meshed([a!, b!, c!]);
    const bJoin = waitFor(a!, 'join', (e) => e.peer === b!.id && e.group === 'CHAT');
    b!.join('CHAT');
    expect((await bJoin)[0].name).toBe(b!.name);
    const shouted = waitFor(b!, 'shout');
    const cShouts: unknown[] = [];
    c!.on('shout', (e) => cShouts.push(e));
    expect(a!.shout('CHAT', 'hello', Buffer.from([0, 1, 2]))).toBe(1);
    const [sh] = await shouted;
    expect(sh.group).toBe('CHAT');
    expect(sh.content.map((f) => f.toString('hex'))).toEqual([Buffer.from('hello').toString('hex'), '000102']);

    const whispered = waitFor(c!, 'whisper');
    expect(a!.whisper(c!.id, 'one', Buffer.alloc(0), 'three')).toBe(true);
    const [wh] = await whispered;
    expect(wh).toMatchObject({ peer: a!.id, name: a!.name });
    expect(wh.content.map(String)).toEqual(['one', '', 'three']);

    // No content goes as one empty frame, as Zyre C sends it (vector whisper-empty-content): pyre dies on none.
    const empty = waitFor(c!, 'whisper');
    a!.whisper(c!.id);
    expect((await empty)[0].content).toEqual([Buffer.alloc(0)]);

    const left = waitFor(a!, 'leave', (e) => e.peer === b!.id);
    b!.leave('CHAT');
    expect((await left)[0].group).toBe('CHAT');
    expect(a!.shout('CHAT', 'anyone?')).toBe(0);
    expect(cShouts).toEqual([]);
  });

  it('a node that joined groups before a peer arrived lists them in HELLO; the peer fires JOIN for each', async () => {
    const port = beaconPort();
    const a = new ZreNode({ iface: 'lo', beaconPort: port, beaconInterval: 100 });
    track(a);
    a.join('RED');
    a.join('BLUE');
    a.join('RED'); // already in: no status change
    await a.start();
    const b = new ZreNode({ iface: 'lo', beaconPort: port, beaconInterval: 100 });
    track(b);
    const joins: string[] = [];
    b.on('join', (e) => joins.push(e.group));
    const entered = waitFor(b, 'enter');
    await b.start();
    expect((await entered)[0].groups).toEqual([]);
    await vi.waitFor(() => expect(joins).toEqual(['RED', 'BLUE']), { timeout: 2000 });
    expect(b.findPeer(a.id)?.groups).toEqual(['RED', 'BLUE']);
  });

  it('the group status we send counts every JOIN and LEAVE, starting from what HELLO said', async () => {
    const [a] = await nodes(1);
    a!.join('X'); // status 1, before the raw peer exists
    const raw = await rawPeer(a!);
    await raw.hello();
    const [rid, ...frames] = await raw.inbox.receive();
    expect(rid!.subarray(1).toString('hex').toUpperCase()).toBe(a!.id);
    const hello = decodeZre(frames);
    expect(hello).toMatchObject({ type: 'HELLO', sequence: 1, status: 1, groups: ['X'], endpoint: a!.endpoint });
    a!.join('Y');
    a!.leave('X');
    a!.leave('X'); // not in it any more: nothing sent
    a!.join('Z');
    const got = [];
    for (let i = 0; i < 3; i++) got.push(decodeZre((await raw.inbox.receive()).slice(1)));
    expect(got.map((m) => [m.type, 'group' in m ? m.group : '', 'status' in m ? m.status : -1, m.sequence])).toEqual([
      ['JOIN', 'Y', 2, 2], ['LEAVE', 'X', 3, 3], ['JOIN', 'Z', 4, 4],
    ]);
  });

  it('bounds each peer\'s send queue by bytes: refusals are counted, accepted messages all arrive', async () => {
    const [a, b] = await nodes(2, { sendQueueBytes: 4000 });
    await meshed([a!, b!]);
    const got: number[] = [];
    b!.on('whisper', (w) => got.push(w.content[0]!.readUInt16BE(0)));
    const accepted: number[] = [];
    for (let i = 0; i < 20; i++) {
      const msg = Buffer.alloc(1000);
      msg.writeUInt16BE(i, 0);
      if (a!.whisper(b!.id, msg)) accepted.push(i);
    }
    expect(accepted.length).toBeGreaterThan(0);
    expect(accepted.length).toBeLessThan(20);
    expect(a!.stats().sendsDropped).toBe(20 - accepted.length);
    expect(await a!.flush(b!.id)).toBe(true);
    expect(got).toEqual(accepted);
  });

  it('refuses names, groups and header keys over 255 bytes with a clear error, before sending anything', async () => {
    const long = 'x'.repeat(256);
    expect(() => new ZreNode({ name: long })).toThrow(ZreNodeError);
    expect(() => new ZreNode({ name: long })).toThrow(/node name is 256 bytes in UTF-8; ZRE allows at most 255/);
    expect(() => new ZreNode({ headers: { [long]: 'v' } })).toThrow(/header key/);
    expect(() => new ZreNode({ headers: { K: long } })).not.toThrow(); // values are longstr
    const [a] = await nodes(1);
    expect(() => a!.join(long)).toThrow(/group name is 256 bytes/);
    expect(() => a!.shout(long, 'x')).toThrow(/group name is 256 bytes/);
    expect(a!.ownGroups()).toEqual([]);
    expect(() => a!.setName('late')).toThrow(/before start/);
  });
});

describe('protocol errors are dropped and counted, never thrown', () => {
  it('ignores traffic before HELLO, then accepts the peer once it says HELLO', async () => {
    const [a] = await nodes(1);
    const raw = await rawPeer(a!);
    const whispers: unknown[] = [];
    a!.on('whisper', (w) => whispers.push(w));
    await raw.send({ type: 'WHISPER', content: [Buffer.from('too early')] });
    await raw.hello();
    await waitFor(a!, 'enter');
    await raw.send({ type: 'WHISPER', content: [Buffer.from('ok')] });
    await waitFor(a!, 'whisper');
    expect(whispers).toHaveLength(1);
    expect(a!.stats().beforeHello).toBe(1);
  });

  it('drops a peer on a sequence gap; it comes back with a fresh HELLO', async () => {
    const [a] = await nodes(1);
    const raw = await rawPeer(a!);
    await raw.hello();
    await waitFor(a!, 'enter');
    const exit = waitFor(a!, 'exit');
    await raw.send({ type: 'PING', sequence: 5 });
    expect((await exit)[0].reason).toBe('sequence-gap');
    expect(a!.stats().sequenceGaps).toBe(1);
    const back = waitFor(a!, 'enter');
    await raw.hello();
    expect((await back)[0].peer).toBe(raw.id);
  });

  it('drops a peer whose group status skips a value', async () => {
    const [a] = await nodes(1);
    const raw = await rawPeer(a!);
    await raw.hello({ status: 7, groups: ['G'] });
    await waitFor(a!, 'enter');
    await raw.send({ type: 'JOIN', group: 'H', status: 8 });
    await waitFor(a!, 'join', (e) => e.group === 'H');
    const exit = waitFor(a!, 'exit');
    await raw.send({ type: 'LEAVE', group: 'H', status: 10 });
    expect((await exit)[0].reason).toBe('status-mismatch');
    expect(a!.stats().statusMismatches).toBe(1);
  });

  it('answers PING with PING_OK in sequence, and re-HELLO means EXIT then ENTER', async () => {
    const [a] = await nodes(1);
    const raw = await rawPeer(a!);
    await raw.hello();
    await waitFor(a!, 'enter');
    await raw.inbox.receive(); // the node's HELLO
    await raw.send({ type: 'PING' });
    const [, ...frames] = await raw.inbox.receive();
    expect(decodeZre(frames)).toMatchObject({ type: 'PING_OK', sequence: 2 });
    const exit = waitFor(a!, 'exit');
    const enter = waitFor(a!, 'enter');
    await raw.hello({ name: 'again' });
    expect((await exit)[0].reason).toBe('rehello');
    expect((await enter)[0].name).toBe('again');
  });

  it('a re-HELLO that repeats what the peer told us is a reconnect: answered, counted, no EXIT', async () => {
    const [a] = await nodes(1);
    const raw = await rawPeer(a!);
    await raw.hello({ groups: ['G'], status: 1, headers: new Map([['X-A', '1']]) });
    await waitFor(a!, 'enter');
    let exits = 0;
    a!.on('exit', () => exits++);
    await raw.hello({ groups: ['G'], status: 1, headers: new Map([['X-A', '1']]) });
    await until(() => a!.stats().rehellos === 1, 5000, 'the re-HELLO');
    // Still in sequence after it (the re-HELLO restarted the count), and no EXIT was reported.
    await raw.send({ type: 'PING' });
    await until(() => a!.stats().rehellosQuiet === 1 && a!.stats().sequenceGaps === 0, 5000, 'a quiet re-HELLO');
    expect(exits).toBe(0);
    const exit = waitFor(a!, 'exit');
    await raw.hello({ groups: ['G'], status: 1, headers: new Map([['X-A', '2']]) }); // a header changed: the peer is taken afresh
    expect((await exit)[0].reason).toBe('rehello');
    expect(a!.stats().rehellosQuiet).toBe(1);
  });

  it('refuses to dial a HELLO endpoint that is not tcp://IPv4:port, and counts it', async () => {
    const [a] = await nodes(1);
    const raw = await rawPeer(a!);
    await raw.hello({ endpoint: 'tcp://some-host.example:5670' });
    await raw.hello({ endpoint: 'tcp://127.0.0.1:99999' });
    await raw.hello();
    await waitFor(a!, 'enter');
    expect(a!.stats().messagesMalformed).toBe(2);
    expect(a!.peerList().map((p) => p.endpoint)).toEqual([raw.endpoint]);
  });

  it('counts bad routing ids, malformed frames and malformed beacons, and keeps working', async () => {
    const [a, b] = await nodes(2);
    await meshed([a!, b!]);
    const { Dealer } = await import('zeromq');
    const stranger = new Dealer({ linger: 0, routingId: 'short' });
    stranger.connect(a!.endpoint);
    await stranger.send([Buffer.from('aaa106020001', 'hex')]);
    const raw = await rawPeer(a!);
    await raw.raw([Buffer.from('aaa1ff', 'hex')]);
    const udp = createSocket('udp4');
    await new Promise<void>((r) => udp.bind(() => r()));
    udp.setBroadcast(true);
    const port = (a as unknown as { opts: { beaconPort: number } }).opts.beaconPort;
    for (const bytes of [Buffer.from('ZRE'), Buffer.from('hello world, this is 22'), encodeBeacon({ version: 1, uuid: Buffer.alloc(16), port: 1 }).subarray(0, 21)]) {
      await new Promise<void>((r) => udp.send(bytes, port, '127.255.255.255', () => r()));
    }
    udp.close();
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && (a!.stats().badRoutingId < 1 || a!.stats().messagesMalformed < 1 || a!.stats().beaconsMalformed < 3)) {
      await new Promise((r) => setTimeout(r, 20));
    }
    stranger.close();
    expect(a!.stats()).toMatchObject({ badRoutingId: 1, messagesMalformed: 1, beaconsMalformed: 3 });
    const w = waitFor(b!, 'whisper');
    a!.whisper(b!.id, 'still here');
    expect(String((await w)[0].content[0])).toBe('still here');
  });
});
