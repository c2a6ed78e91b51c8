// Secure mode on real sockets (loopback): CURVE nodes with an allowlist meet and talk; a stranger's key is
// refused at the beacon and at ZAP and remembered; plain and secure nodes ignore each other's beacons (counted
// as another version, not malformed); a UUID stays bound to its key; a key announced without its secret
// gets no ENTER.
import { afterEach, describe, expect, it } from 'vitest';
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { curveKeyPair } from 'zeromq';
import { ZreNode, HEADER_PUBLICKEY, type ZreCurve, type ZreNodeOptions } from '../../runtime/zre/node.ts';
import { encodeBeacon } from '../../runtime/zre/codec.ts';
import { z85Decode } from '../../runtime/security/z85.ts';
import { beaconPort, until, waitFor } from '../helpers.ts';

const running: ZreNode[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((n) => n.stop()));
});

type Keys = { publicKey: string; secretKey: string };
const keys = (): Keys => curveKeyPair();

/** A secure node trusting `trusted` (keys), counting refusals. */
function secure(port: number, own: Keys, trusted: () => string[], extra: ZreNodeOptions = {}): { node: ZreNode; refused: { publicKey: string; why: string; name?: string }[] } {
  const refused: { publicKey: string; why: string; name?: string }[] = [];
  const curve: ZreCurve = { ...own, allows: (k) => trusted().includes(k), refused: (r) => refused.push(r) };
  const node = new ZreNode({ iface: 'lo', beaconPort: port, beaconInterval: 100, pingInterval: 100, curve, ...extra });
  running.push(node);
  return { node, refused };
}

describe('secure mode', () => {
  it('two trusted nodes meet over CURVE and talk; each HELLO carries X-PUBLICKEY; the key is the proven one', async () => {
    const port = beaconPort();
    const [ka, kb] = [keys(), keys()];
    const a = secure(port, ka, () => [kb.publicKey], { name: 'alpha' });
    const b = secure(port, kb, () => [ka.publicKey], { name: 'bravo' });
    const aSees = waitFor(a.node, 'enter', (p) => p.name === 'bravo', 10_000);
    const bSees = waitFor(b.node, 'enter', (p) => p.name === 'alpha', 10_000);
    await a.node.start();
    await b.node.start();
    const [[pa]] = await Promise.all([aSees, bSees]);
    expect(pa.headers[HEADER_PUBLICKEY]).toBe(kb.publicKey);
    expect(a.node.peerKey(b.node.id)).toBe(kb.publicKey);
    const got = waitFor(b.node, 'whisper', (m) => String(m.content[0]) === 'secret hello', 5000);
    expect(a.node.whisper(b.node.id, 'secret hello')).toBe(true);
    await got;
    expect(a.node.stats()).toMatchObject({ beaconsMalformed: 0, keysRefused: 0, handshakeFailures: 0 });
  });

  it('a stranger\'s key is refused at the beacon and at ZAP, remembered with its name; neither side sees the other', async () => {
    const port = beaconPort();
    const [ka, ks] = [keys(), keys()];
    const a = secure(port, ka, () => []);
    // The stranger trusts everyone: it dials a, but a's ZAP handler says 400.
    const stranger = secure(port, ks, () => [ka.publicKey], { name: 'stranger' });
    const entered: string[] = [];
    a.node.on('enter', (p) => entered.push(p.name));
    stranger.node.on('enter', (p) => entered.push(p.name));
    await a.node.start();
    await stranger.node.start();
    await until(() => a.node.stats().keysRefused >= 3 && (a.node.stats().zap?.zapRefused ?? 0) >= 1, 5000, 'refusals at beacon and ZAP');
    await new Promise((r) => setTimeout(r, 500));
    expect(entered).toEqual([]);
    expect(a.node.peerList()).toEqual([]);
    expect(stranger.node.peerList()).toEqual([]);
    expect(a.refused.every((r) => r.publicKey === ks.publicKey)).toBe(true);
    expect(new Set(a.refused.map((r) => r.why))).toEqual(new Set(['beacon', 'connection to our inbox']));
    expect(stranger.node.stats().handshakeFailures).toBeGreaterThan(0);
  });

  it('plain and secure nodes ignore each other\'s beacons, counted as another version, never as malformed', async () => {
    const port = beaconPort();
    const a = secure(port, keys(), () => []);
    const plain = new ZreNode({ iface: 'lo', beaconPort: port, beaconInterval: 100 });
    running.push(plain);
    await a.node.start();
    await plain.start();
    await until(() => a.node.stats().beaconsOtherVersion >= 3 && plain.stats().beaconsOtherVersion >= 3, 5000, 'each other\'s beacons');
    expect(a.node.stats().beaconsMalformed).toBe(0);
    expect(plain.stats().beaconsMalformed).toBe(0);
    expect(a.node.peerList()).toEqual([]);
    expect(plain.peerList()).toEqual([]);
  });

  it('a v3 beacon whose key starts with 0x00 is dropped and counted; no beacon size crashes a node', async () => {
    const port = beaconPort();
    const a = secure(port, keys(), () => []);
    await a.node.start();
    const udp = createSocket('udp4');
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
    const key = Buffer.alloc(32, 7);
    key[0] = 0;
    const send = (b: Buffer) => new Promise<void>((r) => udp.send(b, port, '127.0.0.1', () => r()));
    await send(encodeBeacon({ version: 3, uuid: randomBytes(16), port: 9, publicKey: key }));
    for (let size = 0; size <= 80; size++) await send(Buffer.concat([Buffer.from('ZRE\x03'), randomBytes(Math.max(0, size - 4))]).subarray(0, size));
    udp.close();
    await until(() => a.node.stats().beaconsBadKey === 1, 5000, 'the zero-key beacon');
    await until(() => a.node.stats().beaconsMalformed >= 70, 5000, 'the odd sizes');
    expect(a.node.peerList()).toEqual([]);
  });

  it('a UUID stays bound to its key: a trusted node claiming it with another key is refused; the genuine peer stays', async () => {
    const port = beaconPort();
    const [ka, kb, kc] = [keys(), keys(), keys()];
    const a = secure(port, ka, () => [kb.publicKey, kc.publicKey]);
    const b = secure(port, kb, () => [ka.publicKey], { name: 'bravo' });
    await a.node.start();
    await b.node.start();
    await waitFor(a.node, 'enter', (p) => p.name === 'bravo', 10_000);
    const exits: string[] = [];
    a.node.on('exit', (p) => exits.push(p.name));
    const enters: string[] = [];
    a.node.on('enter', (p) => enters.push(p.name));
    // c holds a trusted key of its own but takes bravo's UUID and name.
    const c = secure(port, kc, () => [ka.publicKey], { name: 'bravo', uuid: b.node.uuid });
    await c.node.start();
    await until(() => a.node.stats().keyConflicts >= 3, 5000, 'the conflicting claims');
    expect(exits).toEqual([]);
    expect(enters).toEqual([]);
    expect(a.node.peerKey(b.node.id)).toBe(kb.publicKey);
    const got = waitFor(a.node, 'whisper', (m) => String(m.content[0]) === 'still me', 5000);
    b.node.whisper(a.node.id, 'still me');
    await got;
  });

  it('a node announcing a trusted key it does not hold never gets an ENTER: the handshake fails', async () => {
    const port = beaconPort();
    const [ka, kb, fake] = [keys(), keys(), keys()];
    const a = secure(port, ka, () => [kb.publicKey]);
    // The impostor beacons and says HELLO with bravo's public key, but holds another secret.
    const imp = secure(port, { publicKey: kb.publicKey, secretKey: fake.secretKey }, () => [ka.publicKey], { name: 'bravo' });
    const enters: string[] = [];
    a.node.on('enter', (p) => enters.push(p.name));
    await a.node.start();
    await imp.node.start();
    await until(() => a.node.stats().handshakeFailures >= 1, 5000, 'the failed handshake');
    await new Promise((r) => setTimeout(r, 500));
    expect(enters).toEqual([]);
    expect(z85Decode(kb.publicKey)).toHaveLength(32);
  });
});
