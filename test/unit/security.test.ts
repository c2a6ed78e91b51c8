// runtime/security without sockets: Z85 (RFC 32 and the CURVE vectors), zcert files, identities that never
// print their secret, the trusted directory (roles, bad files, edits) and pending keys (bounded).
import { afterEach, describe, expect, it } from 'vitest';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { curveKeyPair } from 'zeromq';
import { z85Decode, z85Encode, Z85Error } from '../../runtime/security/z85.ts';
import { createIdentity, formatCertificate, loadIdentity, parseCertificate, readCertificate, fingerprint, CertificateError } from '../../runtime/security/identity.ts';
import { parseRoles, TrustStore } from '../../runtime/security/trust.ts';
import { loadVectors } from '../fixtures/vectors.ts';

const dirs: string[] = [];
const temp = () => {
  const d = mkdtempSync(join(tmpdir(), 'starling-sec-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('Z85', () => {
  it('encodes RFC 32\'s example and the CURVE vectors\' key both ways', () => {
    const hello = Buffer.from([0x86, 0x4f, 0xd2, 0x6f, 0xb5, 0x59, 0xf7, 0x5b]);
    expect(z85Encode(hello)).toBe('HelloWorld');
    expect(z85Decode('HelloWorld')).toEqual(hello);
    const vectors = loadVectors();
    const beacon = vectors.find((v) => v.name === 'beacon-v3-curve')!;
    const hello2 = vectors.find((v) => v.name === 'hello-curve-publickey')!;
    const raw = Buffer.from(beacon.decoded.publicKey as string, 'hex');
    // Zyre C's charlie: the raw key of its v3 beacon is the Z85 key of its HELLO's X-PUBLICKEY.
    expect(z85Encode(raw)).toBe((hello2.decoded.headers as Record<string, string>)['X-PUBLICKEY']);
    expect(z85Encode(raw)).toBe(beacon.decoded.publicKeyZ85);
  });

  it('refuses lengths and characters outside Z85, saying where', () => {
    expect(() => z85Decode('abcd')).toThrow(Z85Error);
    expect(() => z85Decode('Hello Worl')).toThrow(/character 6/);
    expect(() => z85Encode(Buffer.alloc(3))).toThrow(/multiple of 4/);
  });
});

describe('identities and zcert files', () => {
  it('keygen writes CZMQ\'s layout: public 0644, secret 0600; the secret never prints', () => {
    const dir = temp();
    const id = createIdentity(dir, { name: 'greenhouse' });
    const pub = readCertificate(join(dir, 'node.key'));
    expect(pub).toEqual({ publicKey: id.publicKey, metadata: { name: 'greenhouse' } });
    const sec = readCertificate(join(dir, 'node.key_secret'));
    expect(sec.secretKey).toBe(id.secretKey);
    expect(readFileSync(join(dir, 'node.key_secret'), 'utf8')).toContain('ZeroMQ CURVE **Secret** Certificate');
    expect(loadIdentity(dir).publicKey).toBe(id.publicKey);
    for (const shown of [JSON.stringify(id), String(id), inspect(id), `${id}`, JSON.stringify({ id })]) expect(shown).not.toContain(id.secretKey);
    expect(JSON.parse(JSON.stringify(id))).toEqual({ publicKey: id.publicKey, fingerprint: fingerprint(id.publicKey) });
    expect(() => createIdentity(dir)).toThrow(/exists/);
  });

  it('refuses a secret file others can read, naming the file and mode, never the key', () => {
    const dir = temp();
    const id = createIdentity(dir);
    chmodSync(join(dir, 'node.key_secret'), 0o644);
    let message = '';
    try {
      loadIdentity(dir);
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/node\.key_secret is readable by others \(mode 644\)/);
    expect(message).not.toContain(id.secretKey);
  });

  it('parses CZMQ\'s own format (comments, quotes) and says what is wrong with a bad one', () => {
    const { publicKey } = curveKeyPair();
    const czmq = `#   ****  Generated on 2015-02-16 01:23:56 by CZMQ  ****\n#   ZeroMQ CURVE Public Certificate\n\nmetadata\n    name = "hub"\n    roles = "read command"\ncurve\n    public-key = "${publicKey}"\n`;
    expect(parseCertificate(czmq)).toEqual({ publicKey, metadata: { name: 'hub', roles: 'read command' } });
    expect(parseCertificate(formatCertificate({ publicKey, metadata: { name: 'x' } }))).toEqual({ publicKey, metadata: { name: 'x' } });
    expect(() => parseCertificate('metadata\ncurve\n    public-key = "short"\n', 'f.key')).toThrow(/f\.key: the public-key is not a 40-character Z85 key/);
    expect(() => parseCertificate('curve\n    what is this\n', 'f.key')).toThrow(/f\.key:2: expected name = "value"/);
    expect(() => parseCertificate('metadata\n', 'f.key')).toThrow(CertificateError);
  });
});

describe('the trusted directory', () => {
  it('add, list, remove by name or fingerprint; roles default to read; bad files skipped and reported once', () => {
    const dir = temp();
    const problems: string[] = [];
    const store = new TrustStore(join(dir, 'trusted'), { onProblem: (m) => problems.push(m) }).open();
    const [a, b] = [curveKeyPair().publicKey, curveKeyPair().publicKey];
    const changes: string[] = [];
    store.on('change', (c) => changes.push(`+${c.added.length} -${c.removed.length}`));
    store.add(a, { name: 'alpha' });
    store.add(b, { name: 'bravo', roles: ['read', 'command'] });
    expect(store.list().map((k) => [k.name, k.roles])).toEqual([['alpha', ['read']], ['bravo', ['read', 'command']]]);
    expect([store.allows(a), store.allows(a, 'command'), store.allows(b, 'command')]).toEqual([true, false, true]);
    writeFileSync(join(dir, 'trusted', 'broken.key'), 'curve\n    public-key = "nope"\n');
    store.reload();
    store.reload();
    expect(problems.filter((p) => p.includes('broken.key'))).toHaveLength(1);
    expect(store.remove(fingerprint(a))).toHaveLength(1);
    expect(store.remove('bravo')).toHaveLength(1);
    expect(store.list()).toEqual([]);
    expect(changes).toEqual(['+1 -0', '+1 -0', '+0 -1', '+0 -1']);
    expect(() => parseRoles('read admin', 'x')).toThrow(/unknown role "admin"/);
  });

  it('pending keys: the last 100, with address and name, written for the CLI; a refusal reported once a minute', () => {
    const dir = temp();
    const problems: string[] = [];
    const store = new TrustStore(join(dir, 'trusted'), { pendingFile: join(dir, 'pending.json'), onProblem: (m) => problems.push(m) });
    store.start();
    const keys = Array.from({ length: 120 }, () => curveKeyPair().publicKey);
    for (const k of keys) store.refused({ publicKey: k, address: '10.0.0.9', why: 'beacon' });
    for (let i = 0; i < 50; i++) store.refused({ publicKey: keys[119]!, address: '10.0.0.9', name: 'visitor', why: 'HELLO' });
    store.stop();
    const pending = JSON.parse(readFileSync(join(dir, 'pending.json'), 'utf8')) as { publicKey: string; name?: string; refusals: number; address: string }[];
    expect(pending).toHaveLength(100);
    expect(pending.at(-1)).toMatchObject({ publicKey: keys[119], name: 'visitor', refusals: 51, address: '10.0.0.9' });
    expect(pending.map((p) => p.publicKey)).not.toContain(keys[0]);
    expect(problems.filter((p) => p.includes(fingerprint(keys[119]!)))).toHaveLength(1);
    // Trusting a pending key takes it off the list.
    const cli = new TrustStore(join(dir, 'trusted'), { pendingFile: join(dir, 'pending.json') }).open();
    const found = cli.findPending(fingerprint(keys[119]!).slice(0, 9))!;
    cli.add(found.publicKey, { name: found.name });
    expect(cli.pending().map((p) => p.publicKey)).not.toContain(keys[119]);
    expect(cli.allows(keys[119]!)).toBe(true);
  });
});
