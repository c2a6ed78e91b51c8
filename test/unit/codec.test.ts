import { describe, expect, it } from 'vitest';
import {
  decodeBeacon, decodeGossip, decodeZre, encodeBeacon, encodeGossip, encodeZre, whisperHeader,
  assertShortString, ZreDecodeError, ZreEncodeError, type ZreMessage, type GossipMessage,
} from '../../runtime/zre/codec.ts';
import { loadVectors } from '../fixtures/vectors.ts';

const vectors = loadVectors();
const hex = (b: Buffer) => b.toString('hex');
const META = new Set(['message', 'id', 'version', 'protocol', 'publicKeyZ85']);

/** Our decoded form, turned into the vectors' JSON shape (headers as ordered object, content as hex). */
function asVectorShape(msg: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(msg)) {
    if (k === 'type') continue;
    if (v instanceof Map) out[k] = Object.fromEntries(v);
    else if (Array.isArray(v) && v.every((x) => Buffer.isBuffer(x))) out[k] = v.map(hex);
    else out[k] = v;
  }
  return out;
}

/** The vector's decoded fields, turned into our message shape for encoding. */
function fromVectorShape(d: Record<string, unknown>): Record<string, unknown> {
  const msg: Record<string, unknown> = { type: d.message };
  for (const [k, v] of Object.entries(d)) {
    if (META.has(k)) continue;
    if (k === 'headers') msg[k] = new Map(Object.entries(v as Record<string, string>));
    else if (k === 'content') msg[k] = (v as string[]).map((h) => Buffer.from(h, 'hex'));
    else msg[k] = v;
  }
  return msg;
}

describe('codec against the Zyre C 2.0.1 vectors', () => {
  it('has all 31 captured cases', () => {
    expect(vectors).toHaveLength(31);
  });

  for (const v of vectors) {
    it(`${v.kind} ${v.name}: decodes to the captured fields and encodes back to the same bytes`, () => {
      if (v.kind === 'beacon') {
        const bytes = Buffer.from(v.bytes!, 'hex');
        const b = decodeBeacon(bytes, v.decoded.version as 1 | 3);
        expect(b.uuid.toString('hex').toUpperCase()).toBe(v.decoded.uuid);
        expect(b.port).toBe(v.decoded.port);
        if (b.version === 3) expect(hex(b.publicKey!)).toBe(v.decoded.publicKey);
        expect(hex(encodeBeacon(b))).toBe(v.bytes);
        return;
      }
      const frames = v.frames!.map((f) => Buffer.from(f, 'hex'));
      const decoded = v.kind === 'zre' ? decodeZre(frames) : decodeGossip(frames);
      expect(decoded.type).toBe(v.decoded.message);
      const expected = Object.fromEntries(Object.entries(v.decoded).filter(([k]) => !META.has(k)));
      expect(asVectorShape(decoded as unknown as Record<string, unknown>)).toEqual(expected);
      // Header order on the wire is kept, so re-encoding reproduces the bytes.
      if (v.decoded.headers) {
        expect([...(decoded as Extract<ZreMessage, { type: 'HELLO' }>).headers.keys()]).toEqual(Object.keys(v.decoded.headers));
      }
      const msg = fromVectorShape(v.decoded);
      const encoded = v.kind === 'zre' ? encodeZre(msg as ZreMessage) : encodeGossip(msg as GossipMessage);
      expect(encoded.map(hex)).toEqual(v.frames);
    });
  }

  it('the WHISPER fast-path header equals the table encoding, across the sequence wrap', () => {
    for (const seq of [0, 1, 255, 256, 65535]) {
      expect(whisperHeader(seq)).toEqual(encodeZre({ type: 'WHISPER', sequence: seq, content: [] })[0]);
    }
  });
});

describe('codec refusals', () => {
  it('refuses a string field over 255 bytes instead of truncating it', () => {
    const long = 'é'.repeat(128); // 256 bytes in UTF-8, 128 characters
    expect(() => assertShortString(long, 'group name')).toThrow(/group name is 256 bytes in UTF-8; ZRE allows at most 255/);
    expect(() => encodeZre({ type: 'JOIN', sequence: 2, group: long, status: 1 })).toThrow(ZreEncodeError);
    expect(() => encodeZre({
      type: 'HELLO', sequence: 1, endpoint: 'tcp://127.0.0.1:1', groups: [], status: 0, name: 'n',
      headers: new Map([['k'.repeat(256), 'v']]),
    })).toThrow(/HELLO headers key/);
  });

  it('accepts a header value longer than 255 bytes (longstr)', () => {
    const [frame] = encodeZre({
      type: 'HELLO', sequence: 1, endpoint: 'tcp://127.0.0.1:1', groups: [], status: 0, name: 'n',
      headers: new Map([['X-LONG', 'x'.repeat(300)]]),
    });
    const back = decodeZre([frame!]) as Extract<ZreMessage, { type: 'HELLO' }>;
    expect(back.headers.get('X-LONG')).toHaveLength(300);
  });

  it.each([
    ['no frames', [], /empty message/],
    ['a short frame', [Buffer.from('aa', 'hex')], /frame ends inside field 'signature'/],
    ['a bad signature', [Buffer.from('aaa20202000100', 'hex')], /bad signature 0xaaa2/],
    ['an unknown id', [Buffer.from('aaa10b020001', 'hex')], /unknown message id 11/],
    ['version 3', [Buffer.from('aaa106030001', 'hex')], /PING: version 3 \(want 2\)/],
    ['a truncated JOIN group', [Buffer.from('aaa10402000305434841', 'hex')], /frame ends inside field 'JOIN.group'/],
    ['an absurd strings count', [Buffer.from('aaa1010200010000ffffffff', 'hex')], /HELLO.groups/],
    ['extra frames on PING', [Buffer.from('aaa106020001', 'hex'), Buffer.alloc(1)], /unexpected extra frame/],
  ])('rejects %s with a ZreDecodeError that says where', (_what, frames, message) => {
    expect(() => decodeZre(frames as Buffer[])).toThrow(ZreDecodeError);
    expect(() => decodeZre(frames as Buffer[])).toThrow(message);
  });

  it('rejects beacons of the wrong length, prefix or version', () => {
    const good = encodeBeacon({ version: 1, uuid: Buffer.alloc(16, 7), port: 1234 });
    expect(decodeBeacon(good).port).toBe(1234);
    expect(() => decodeBeacon(good.subarray(0, 21))).toThrow(/21 bytes/);
    const badPrefix = Buffer.from(good); badPrefix[0] = 0x41;
    expect(() => decodeBeacon(badPrefix)).toThrow(/"ZRE"/);
    const v2 = Buffer.from(good); v2[3] = 2;
    expect(() => decodeBeacon(v2)).toThrow(/version 2 \(want 1\)/);
  });
});
