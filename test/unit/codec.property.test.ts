// Property tests of the codec: arbitrary and mutated input only ever yields a message or a ZreDecodeError,
// and every message we can build survives encode → decode unchanged.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decodeBeacon, decodeGossip, decodeZre, encodeZre, ZreDecodeError, type ZreMessage } from '../../runtime/zre/codec.ts';
import { loadVectors } from '../fixtures/vectors.ts';

const frame = fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a));
const frames = fc.array(frame, { minLength: 0, maxLength: 4 });

function decodesOrRefuses(fn: () => unknown): boolean {
  try {
    fn();
    return true;
  } catch (e) {
    if (e instanceof ZreDecodeError) return true;
    throw e;
  }
}

/** Turns a vector's frames into a mutated copy: flip, truncate, extend, or overwrite bytes of frame 0. */
const mutation = fc.record({
  kind: fc.constantFrom('flip', 'truncate', 'extend', 'overwrite', 'drop-frames'),
  at: fc.nat(),
  byte: fc.integer({ min: 0, max: 255 }),
  extra: fc.uint8Array({ maxLength: 16 }),
});
function mutate(src: Buffer[], m: { kind: string; at: number; byte: number; extra: Uint8Array }): Buffer[] {
  const out = src.map((b) => Buffer.from(b));
  const f = out[0]!;
  const i = f.length ? m.at % f.length : 0;
  switch (m.kind) {
    case 'flip': if (f.length) f[i] = f[i]! ^ (1 << (m.byte % 8)); break;
    case 'truncate': out[0] = f.subarray(0, i); break;
    case 'extend': out[0] = Buffer.concat([f, m.extra]); break;
    case 'overwrite': if (f.length) f[i] = m.byte; break;
    case 'drop-frames': return out.slice(0, 1 + (m.at % Math.max(1, out.length)));
  }
  return out;
}

const shortStr = fc.string({ unit: 'grapheme', maxLength: 30 }).filter((s) => Buffer.byteLength(s) <= 255);
const longStr = fc.string({ unit: 'grapheme', maxLength: 400 });
const content = fc.array(frame, { maxLength: 3 });
const sequence = fc.integer({ min: 0, max: 65535 });
const status = fc.integer({ min: 0, max: 255 });
const message: fc.Arbitrary<ZreMessage> = fc.oneof(
  fc.record({ type: fc.constant('HELLO' as const), sequence, endpoint: shortStr, groups: fc.array(shortStr, { maxLength: 4 }), status, name: shortStr,
    headers: fc.array(fc.tuple(shortStr, longStr), { maxLength: 4 }).map((kv) => new Map(kv)) }),
  fc.record({ type: fc.constant('WHISPER' as const), sequence, content }),
  fc.record({ type: fc.constant('SHOUT' as const), sequence, group: shortStr, content }),
  fc.record({ type: fc.constantFrom('JOIN' as const, 'LEAVE' as const), sequence, group: shortStr, status }),
  fc.record({ type: fc.constantFrom('PING' as const, 'PING_OK' as const, 'GOODBYE' as const), sequence }),
  fc.record({ type: fc.constant('ELECT' as const), sequence, group: shortStr, challengerId: shortStr }),
  fc.record({ type: fc.constant('LEADER' as const), sequence, group: shortStr, leaderId: shortStr }),
) as fc.Arbitrary<ZreMessage>;

describe('codec properties', () => {
  it('random frames decode to a message or a ZreDecodeError, nothing else', () => {
    fc.assert(fc.property(frames, (f) => decodesOrRefuses(() => decodeZre(f)) && decodesOrRefuses(() => decodeGossip(f))), { numRuns: 5000 });
  });

  it('random frames behind a valid ZRE signature and version decode or refuse cleanly', () => {
    const prefixed = fc.tuple(fc.integer({ min: 0, max: 12 }), fc.uint8Array({ maxLength: 200 }), fc.array(frame, { maxLength: 3 }))
      .map(([id, rest, more]) => [Buffer.concat([Buffer.from([0xaa, 0xa1, id, 2]), rest]), ...more]);
    fc.assert(fc.property(prefixed, (f) => decodesOrRefuses(() => decodeZre(f))), { numRuns: 5000 });
  });

  it('mutations of every captured Zyre message decode or refuse cleanly', () => {
    const msgs = loadVectors().filter((v) => v.frames).map((v) => ({ kind: v.kind, frames: v.frames!.map((h) => Buffer.from(h, 'hex')) }));
    fc.assert(fc.property(fc.constantFrom(...msgs), mutation, (v, m) => {
      const f = mutate(v.frames, m);
      return decodesOrRefuses(() => (v.kind === 'gossip' ? decodeGossip(f) : decodeZre(f)));
    }), { numRuns: 5000 });
  });

  it('random datagrams decode as a beacon or a ZreDecodeError', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 60 }), fc.constantFrom(1 as const, 3 as const),
      (b, v) => decodesOrRefuses(() => decodeBeacon(Buffer.from(b), v))), { numRuns: 5000 });
  });

  it('every message we can build survives encode then decode unchanged', () => {
    fc.assert(fc.property(message, (m) => {
      expect(decodeZre(encodeZre(m))).toEqual(m);
    }), { numRuns: 3000 });
  });
});
