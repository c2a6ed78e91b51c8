/**
 * The ZRE (36/ZRE, version 2) and zgossip (version 1) message codecs and the UDP beacon codec.
 *
 * Each message layout is declared once, as data (`ZRE_LAYOUTS`, `GOSSIP_LAYOUTS`); one encoder and one decoder
 * walk those tables. Encodings (36/ZRE "Message formats"): integers are unsigned big-endian; `string` is a u8
 * length then bytes (≤ 255); `longstr` a u32 length then bytes; `strings` a u32 count of longstr; `hash` a u32
 * count of (string key, longstr value) pairs.
 *
 * Cost: encoding allocates one Buffer of the exact size (two passes over the fields); decoding copies strings out
 * of the frame and keeps content frames as they came (no copy). Decoders throw {@link ZreDecodeError} on any
 * malformed input; the node catches it, counts it and drops the frame.
 */

/** Thrown by the decoders; says which field of which message was wrong. Never escapes the node. */
export class ZreDecodeError extends Error {
  override name = 'ZreDecodeError';
}

/** Thrown by the encoders when a value cannot travel (e.g. a `string` field over 255 bytes). */
export class ZreEncodeError extends Error {
  override name = 'ZreEncodeError';
}

type FieldType = 'u8' | 'u16' | 'u32' | 'string' | 'longstr' | 'strings' | 'hash';
type Layout = { readonly id: number; readonly fields: ReadonlyArray<readonly [string, FieldType]>; readonly content?: true };

/** 36/ZRE message layouts. `content: true` means frames 2..n carry the application's content. */
export const ZRE_LAYOUTS = {
  HELLO: { id: 1, fields: [['endpoint', 'string'], ['groups', 'strings'], ['status', 'u8'], ['name', 'string'], ['headers', 'hash']] },
  WHISPER: { id: 2, fields: [], content: true },
  SHOUT: { id: 3, fields: [['group', 'string']], content: true },
  JOIN: { id: 4, fields: [['group', 'string'], ['status', 'u8']] },
  LEAVE: { id: 5, fields: [['group', 'string'], ['status', 'u8']] },
  PING: { id: 6, fields: [] },
  PING_OK: { id: 7, fields: [] },
  ELECT: { id: 8, fields: [['group', 'string'], ['challengerId', 'string']] },
  LEADER: { id: 9, fields: [['group', 'string'], ['leaderId', 'string']] },
  GOODBYE: { id: 10, fields: [] },
} as const satisfies Record<string, Layout>;

/** zgossip message layouts (CZMQ zgossip_msg, version 1; no sequence number). */
export const GOSSIP_LAYOUTS = {
  HELLO: { id: 1, fields: [] },
  PUBLISH: { id: 2, fields: [['key', 'string'], ['value', 'longstr'], ['ttl', 'u32']] },
  PING: { id: 3, fields: [] },
  PONG: { id: 4, fields: [] },
  INVALID: { id: 5, fields: [] },
} as const satisfies Record<string, Layout>;

/** Header maps keep wire order (a Map, so numeric-looking keys keep their place too). */
export type Headers = Map<string, string>;

type FieldValue<T extends FieldType> = T extends 'u8' | 'u16' | 'u32' ? number
  : T extends 'string' | 'longstr' ? string
  : T extends 'strings' ? string[]
  : Headers;
type Fields<L extends Layout> = { -readonly [F in L['fields'][number] as F[0]]: FieldValue<F[1]> };
type MessageOf<Layouts extends Record<string, Layout>, Extra> = {
  [K in keyof Layouts & string]: { type: K } & Extra & Fields<Layouts[K]>
    & (Layouts[K] extends { content: true } ? { content: Buffer[] } : unknown);
}[keyof Layouts & string];

/** A decoded ZRE message: `type`, `sequence`, its fields, and `content` for WHISPER/SHOUT. */
export type ZreMessage = MessageOf<typeof ZRE_LAYOUTS, { sequence: number }>;
export type ZreType = ZreMessage['type'];
/** A decoded zgossip message. */
export type GossipMessage = MessageOf<typeof GOSSIP_LAYOUTS, unknown>;
export type GossipType = GossipMessage['type'];

type Protocol = { name: string; signature: number; version: number; sequenced: boolean; layouts: Record<string, Layout> };
const ZRE: Protocol = { name: 'ZRE', signature: 0xaaa1, version: 2, sequenced: true, layouts: ZRE_LAYOUTS };
const GOSSIP: Protocol = { name: 'zgossip', signature: 0xaaa0, version: 1, sequenced: false, layouts: GOSSIP_LAYOUTS };

const byId = (p: Protocol): Map<number, [string, Layout]> =>
  new Map(Object.entries(p.layouts).map(([name, l]) => [l.id, [name, l]]));
const ZRE_BY_ID = byId(ZRE);
const GOSSIP_BY_ID = byId(GOSSIP);

/** Byte length of a UTF-8 string (what the wire counts; `café` is 5). */
const utf8Length = (s: string): number => Buffer.byteLength(s, 'utf8');

/**
 * Checks that `value` fits a 36/ZRE `string` field (at most 255 UTF-8 bytes). Our API calls this before
 * anything is queued, so an over-long name, group or header key is refused, never truncated (the reference
 * writes a truncated length byte and a corrupt message).
 */
export function assertShortString(value: string, what: string): void {
  if (typeof value !== 'string') throw new ZreEncodeError(`${what} must be a string`);
  const n = utf8Length(value);
  if (n > 255) throw new ZreEncodeError(`${what} is ${n} bytes in UTF-8; ZRE allows at most 255`);
}

function fieldSize(type: FieldType, value: unknown, where: string): number {
  switch (type) {
    case 'u8': return 1;
    case 'u16': return 2;
    case 'u32': return 4;
    case 'string': assertShortString(value as string, where); return 1 + utf8Length(value as string);
    case 'longstr': return 4 + utf8Length(value as string);
    case 'strings': {
      let n = 4;
      for (const s of value as string[]) n += 4 + utf8Length(s);
      return n;
    }
    case 'hash': {
      let n = 4;
      for (const [k, v] of value as Headers) {
        assertShortString(k, `${where} key ${JSON.stringify(k.slice(0, 40))}`);
        n += 1 + utf8Length(k) + 4 + utf8Length(v);
      }
      return n;
    }
  }
}

function writeField(buf: Buffer, at: number, type: FieldType, value: unknown): number {
  switch (type) {
    case 'u8': buf.writeUInt8(checkInt(value, 0xff), at); return at + 1;
    case 'u16': buf.writeUInt16BE(checkInt(value, 0xffff), at); return at + 2;
    case 'u32': buf.writeUInt32BE(checkInt(value, 0xffffffff), at); return at + 4;
    case 'string': {
      const n = buf.write(value as string, at + 1, 'utf8');
      buf.writeUInt8(n, at);
      return at + 1 + n;
    }
    case 'longstr': {
      const n = buf.write(value as string, at + 4, 'utf8');
      buf.writeUInt32BE(n, at);
      return at + 4 + n;
    }
    case 'strings': {
      const list = value as string[];
      buf.writeUInt32BE(list.length, at);
      at += 4;
      for (const s of list) at = writeField(buf, at, 'longstr', s);
      return at;
    }
    case 'hash': {
      const map = value as Headers;
      buf.writeUInt32BE(map.size, at);
      at += 4;
      for (const [k, v] of map) {
        at = writeField(buf, at, 'string', k);
        at = writeField(buf, at, 'longstr', v);
      }
      return at;
    }
  }
}

function checkInt(value: unknown, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
    throw new ZreEncodeError(`integer field out of range 0..${max}: ${String(value)}`);
  }
  return value;
}

/** A bounds-checked reader over one frame; every read names the field it was reading when it fails. */
class Reader {
  at = 0;
  constructor(private readonly buf: Buffer, private readonly what: string) {}

  need(n: number, field: string): void {
    if (this.at + n > this.buf.length) {
      throw new ZreDecodeError(`${this.what}: frame ends inside field '${field}' (needs ${n} bytes at offset ${this.at}, frame is ${this.buf.length})`);
    }
  }
  u8(field: string): number { this.need(1, field); return this.buf.readUInt8(this.at++); }
  u16(field: string): number { this.need(2, field); const v = this.buf.readUInt16BE(this.at); this.at += 2; return v; }
  u32(field: string): number { this.need(4, field); const v = this.buf.readUInt32BE(this.at); this.at += 4; return v; }
  bytes(n: number, field: string): string {
    this.need(n, field);
    const s = this.buf.toString('utf8', this.at, this.at + n);
    this.at += n;
    return s;
  }
  read(type: FieldType, field: string): unknown {
    switch (type) {
      case 'u8': return this.u8(field);
      case 'u16': return this.u16(field);
      case 'u32': return this.u32(field);
      case 'string': return this.bytes(this.u8(field), field);
      case 'longstr': return this.bytes(this.u32(field), field);
      case 'strings': {
        const count = this.u32(field);
        // Each entry takes at least 4 bytes: refuse absurd counts before allocating anything.
        this.need(count * 4, field);
        const out: string[] = [];
        for (let i = 0; i < count; i++) out.push(this.bytes(this.u32(field), field));
        return out;
      }
      case 'hash': {
        const count = this.u32(field);
        this.need(count * 5, field);
        const out: Headers = new Map();
        for (let i = 0; i < count; i++) {
          const k = this.bytes(this.u8(field), field);
          out.set(k, this.bytes(this.u32(field), field));
        }
        return out;
      }
    }
  }
}

function decodeWith(p: Protocol, table: Map<number, [string, Layout]>, frames: readonly Buffer[]): Record<string, unknown> {
  const first = frames[0];
  if (!first) throw new ZreDecodeError(`${p.name}: empty message (no frames)`);
  const r = new Reader(first, p.name);
  const signature = r.u16('signature');
  if (signature !== p.signature) {
    throw new ZreDecodeError(`${p.name}: bad signature 0x${signature.toString(16)} (want 0x${p.signature.toString(16)})`);
  }
  const id = r.u8('id');
  const entry = table.get(id);
  if (!entry) throw new ZreDecodeError(`${p.name}: unknown message id ${id}`);
  const [type, layout] = entry;
  const version = r.u8('version');
  if (version !== p.version) throw new ZreDecodeError(`${p.name} ${type}: version ${version} (want ${p.version})`);
  const msg: Record<string, unknown> = { type };
  if (p.sequenced) msg.sequence = r.u16('sequence');
  for (const [field, ftype] of layout.fields) msg[field] = r.read(ftype, `${type}.${field}`);
  if (layout.content) msg.content = frames.slice(1);
  else if (frames.length > 1) throw new ZreDecodeError(`${p.name} ${type}: ${frames.length - 1} unexpected extra frame(s)`);
  // Trailing bytes after the last field are tolerated, as the reference does (36/ZRE rule 12 in the vectors README).
  return msg;
}

function encodeWith(p: Protocol, msg: Record<string, unknown> & { type: string }): Buffer[] {
  const layout = p.layouts[msg.type];
  if (!layout) throw new ZreEncodeError(`${p.name}: unknown message type ${msg.type}`);
  let size = 4 + (p.sequenced ? 2 : 0);
  for (const [field, ftype] of layout.fields) size += fieldSize(ftype, msg[field], `${msg.type} ${field}`);
  const buf = Buffer.allocUnsafe(size);
  buf.writeUInt16BE(p.signature, 0);
  buf.writeUInt8(layout.id, 2);
  buf.writeUInt8(p.version, 3);
  let at = 4;
  if (p.sequenced) at = writeField(buf, at, 'u16', msg.sequence);
  for (const [field, ftype] of layout.fields) at = writeField(buf, at, ftype, msg[field]);
  if (!layout.content) return [buf];
  return [buf, ...((msg.content as Buffer[] | undefined) ?? [])];
}

/** Decodes one ZRE message from its frames (routing id already removed). Throws {@link ZreDecodeError}. */
export function decodeZre(frames: readonly Buffer[]): ZreMessage {
  // Fast path for the hot message: a 6-byte WHISPER header (signature, id 2, version 2, sequence).
  const first = frames[0];
  if (first?.length === 6 && first.readUInt32BE(0) === 0xaaa10202) {
    return { type: 'WHISPER', sequence: first.readUInt16BE(4), content: frames.slice(1) };
  }
  return decodeWith(ZRE, ZRE_BY_ID, frames) as ZreMessage;
}

/** Encodes one ZRE message to frames. Throws {@link ZreEncodeError} if a field cannot travel. */
export function encodeZre(msg: ZreMessage): Buffer[] {
  return encodeWith(ZRE, msg as ZreMessage & Record<string, unknown>);
}

/** Decodes one zgossip message. Throws {@link ZreDecodeError}. */
export function decodeGossip(frames: readonly Buffer[]): GossipMessage {
  return decodeWith(GOSSIP, GOSSIP_BY_ID, frames) as GossipMessage;
}

/** Encodes one zgossip message. */
export function encodeGossip(msg: GossipMessage): Buffer[] {
  return encodeWith(GOSSIP, msg as GossipMessage & Record<string, unknown>);
}

/**
 * Fast path for the hot message: the WHISPER header frame is always 6 bytes (signature, id 2, version 2,
 * sequence). Same bytes as `encodeZre({type:'WHISPER', …})[0]`, without the table walk.
 */
export function whisperHeader(sequence: number): Buffer {
  const b = Buffer.allocUnsafe(6);
  b.writeUInt32BE(0xaaa10202, 0);
  b.writeUInt16BE(sequence, 4);
  return b;
}

// --- Beacons (36/ZRE "Discovery and presence") -------------------------------------------------------------

/** A decoded UDP beacon. `publicKey` (32 raw bytes) only in version 3 (CURVE) beacons. */
export interface Beacon {
  version: 1 | 3;
  uuid: Buffer;
  port: number;
  publicKey?: Buffer;
}

export const BEACON_V1_SIZE = 22;
export const BEACON_V3_SIZE = 54;

/** Encodes a beacon: "ZRE", version, 16-byte UUID, u16 port (, 32-byte key for v3). */
export function encodeBeacon(b: Beacon): Buffer {
  if (b.uuid.length !== 16) throw new ZreEncodeError(`beacon uuid must be 16 bytes, got ${b.uuid.length}`);
  const v3 = b.version === 3;
  if (v3 && b.publicKey?.length !== 32) throw new ZreEncodeError('a version 3 beacon needs a 32-byte public key');
  const buf = Buffer.alloc(v3 ? BEACON_V3_SIZE : BEACON_V1_SIZE);
  buf.write('ZRE', 0, 'latin1');
  buf.writeUInt8(b.version, 3);
  b.uuid.copy(buf, 4);
  buf.writeUInt16BE(checkInt(b.port, 0xffff), 20);
  if (v3) b.publicKey!.copy(buf, 22);
  return buf;
}

/**
 * Decodes a beacon, accepting only `wantVersion` (plain nodes 1, CURVE nodes 3; vectors README rule 6).
 * Throws {@link ZreDecodeError} for a wrong length, prefix or version.
 */
export function decodeBeacon(buf: Buffer, wantVersion: 1 | 3 = 1): Beacon {
  const size = wantVersion === 3 ? BEACON_V3_SIZE : BEACON_V1_SIZE;
  if (buf.length !== size) throw new ZreDecodeError(`beacon: ${buf.length} bytes (want ${size} for version ${wantVersion})`);
  if (buf[0] !== 0x5a || buf[1] !== 0x52 || buf[2] !== 0x45) throw new ZreDecodeError('beacon: does not start with "ZRE"');
  if (buf[3] !== wantVersion) throw new ZreDecodeError(`beacon: version ${buf[3]} (want ${wantVersion})`);
  const beacon: Beacon = { version: wantVersion, uuid: Buffer.from(buf.subarray(4, 20)), port: buf.readUInt16BE(20) };
  if (wantVersion === 3) beacon.publicKey = Buffer.from(buf.subarray(22, 54));
  return beacon;
}
