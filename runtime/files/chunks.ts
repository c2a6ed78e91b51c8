/**
 * Files as the mesh moves them: cut into chunks of 256 KiB, each named by its SHA-256, the whole file by its
 * own SHA-256 (its id). The chunk table travels beside the file (a META reply, or a release manifest) so a
 * receiver checks every chunk before writing it and the whole file before keeping it.
 *
 * The wire format of the file channel (a ROUTER per serving node, advertised as `X-FILES` in its HELLO; one
 * DEALER per source on the fetching side) is data here, one encode and one decode:
 *
 *   request  [ "STARLING-FILES/1", VERB, id (32 bytes), index (uint32 BE) ]         VERB: META | GET
 *   reply    [ "STARLING-FILES/1", KIND, id (32 bytes), index (uint32 BE), body ]   KIND: META | CHUNK | BUSY | NONE
 *
 *   META  body = the chunk table: size (uint64 BE), chunk size (uint32 BE), N × 32-byte SHA-256
 *   CHUNK body = chunk `index`'s bytes (the last one may be short)
 *   BUSY  body = uint32 BE milliseconds to wait (the server is at its upload cap)
 *   NONE  body = UTF-8 reason (not served here, index out of range, read failed)
 *
 * Credit is the fetcher's: it never has more than its window of GETs outstanding (the ZeroMQ Guide's
 * pipelined-credit model, chapter 7), so a server never queues more than that per transfer.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';

export const CHUNK_SIZE = 256 * 1024;
export const FILES_PROTOCOL = 'STARLING-FILES/1';
/** The HELLO header naming a node's file endpoint (tcp://IP:PORT, on the host of its ZRE inbox). */
export const HEADER_FILES = 'X-FILES';
/** HELLO headers: the version running, and the SHA-256 of the release bundle it runs (peers may fetch it from us). */
export const HEADER_VERSION = 'X-VERSION';
export const HEADER_RELEASE = 'X-RELEASE';
/** Largest chunk table decoded: 1 GiB of 256 KiB chunks is 4,096 entries (128 KiB of hashes). */
export const MAX_CHUNKS = 65_536;

export class FileError extends Error {
  override name = 'FileError';
}

export interface ChunkTable {
  /** SHA-256 of the whole file, hex: the file's id. */
  sha256: string;
  size: number;
  chunkSize: number;
  /** One 32-byte SHA-256 per chunk. */
  hashes: Buffer[];
}

export const chunkCount = (size: number, chunkSize: number): number => Math.ceil(size / chunkSize);

export const sha256 = (b: Buffer): Buffer => createHash('sha256').update(b).digest();

/**
 * Hashes `path` chunk by chunk (and whole). Cost: one read of the file through one chunk-sized buffer — memory
 * stays at one chunk whatever the size (about 0.3 s for 100 MB here).
 */
export async function hashFile(path: string, chunkSize = CHUNK_SIZE): Promise<ChunkTable> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const whole = createHash('sha256');
    const hashes: Buffer[] = [];
    const buf = Buffer.allocUnsafe(chunkSize);
    for (let off = 0; off < size; off += chunkSize) {
      const want = Math.min(chunkSize, size - off);
      const { bytesRead } = await fh.read(buf, 0, want, off);
      if (bytesRead !== want) throw new FileError(`${path} changed while it was read (short read at ${off})`);
      const chunk = buf.subarray(0, want);
      whole.update(chunk);
      hashes.push(sha256(chunk));
    }
    if (hashes.length > MAX_CHUNKS) throw new FileError(`${path} is ${size} bytes: more than ${MAX_CHUNKS} chunks of ${chunkSize}`);
    return { sha256: whole.digest('hex'), size, chunkSize, hashes };
  } finally {
    await fh.close();
  }
}

/** The META body. */
export function encodeTable(t: ChunkTable): Buffer {
  const head = Buffer.alloc(12);
  head.writeBigUInt64BE(BigInt(t.size), 0);
  head.writeUInt32BE(t.chunkSize, 8);
  return Buffer.concat([head, ...t.hashes]);
}

/** Reads a META body for the file `id` (hex); throws {@link FileError} saying what is wrong. */
export function decodeTable(id: string, body: Buffer): ChunkTable {
  if (body.length < 12) throw new FileError(`chunk table of ${body.length} bytes (at least 12)`);
  const size = Number(body.readBigUInt64BE(0));
  const chunkSize = body.readUInt32BE(8);
  if (chunkSize < 1024 || chunkSize > 4 * 1024 * 1024) throw new FileError(`chunk size ${chunkSize} outside 1 KiB..4 MiB`);
  const n = chunkCount(size, chunkSize);
  if (n > MAX_CHUNKS) throw new FileError(`${n} chunks (at most ${MAX_CHUNKS})`);
  if (body.length !== 12 + 32 * n) throw new FileError(`chunk table of ${body.length} bytes for ${n} chunks (expected ${12 + 32 * n})`);
  const hashes: Buffer[] = [];
  for (let i = 0; i < n; i++) hashes.push(body.subarray(12 + 32 * i, 44 + 32 * i));
  return { sha256: id, size, chunkSize, hashes };
}

export type RequestVerb = 'META' | 'GET';
export type ReplyKind = 'META' | 'CHUNK' | 'BUSY' | 'NONE';

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

export const encodeRequest = (verb: RequestVerb, id: Buffer, index: number): Buffer[] => [Buffer.from(FILES_PROTOCOL), Buffer.from(verb), id, u32(index)];
export const encodeReply = (kind: ReplyKind, id: Buffer, index: number, body: Buffer): Buffer[] => [Buffer.from(FILES_PROTOCOL), Buffer.from(kind), id, u32(index), body];

function header(frames: Buffer[], verbs: readonly string[]): { verb: string; id: Buffer; index: number } | undefined {
  const [proto, verb, id, index] = frames;
  if (!proto?.equals(PROTO) || !verb || !verbs.includes(verb.toString()) || id?.length !== 32 || index?.length !== 4) return undefined;
  return { verb: verb.toString(), id, index: index.readUInt32BE(0) };
}
const PROTO = Buffer.from(FILES_PROTOCOL);

/** A request's fields (the frames after the ROUTER's routing id), or undefined when malformed. */
export function decodeRequest(frames: Buffer[]): { verb: RequestVerb; id: Buffer; index: number } | undefined {
  if (frames.length !== 4) return undefined;
  return header(frames, ['META', 'GET']) as { verb: RequestVerb; id: Buffer; index: number } | undefined;
}

/** A reply's fields, or undefined when malformed. */
export function decodeReply(frames: Buffer[]): { kind: ReplyKind; id: Buffer; index: number; body: Buffer } | undefined {
  if (frames.length !== 5) return undefined;
  const h = header(frames, ['META', 'CHUNK', 'BUSY', 'NONE']);
  return h ? { kind: h.verb as ReplyKind, id: h.id, index: h.index, body: frames[4]! } : undefined;
}
