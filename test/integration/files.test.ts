// File transfer over real ZeroMQ sockets on loopback: the server, the fetcher's credit, checks, resume and reuse.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Router } from 'zeromq';
import { CHUNK_SIZE, decodeRequest, encodeReply, encodeTable, hashFile } from '../../runtime/files/chunks.ts';
import { Fetch } from '../../runtime/files/fetch.ts';
import { FileServer } from '../../runtime/files/server.ts';

const dirs: string[] = [];
const closers: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'starling-files-'));
  dirs.push(d);
  return d;
};

async function served(bytes: Buffer, opts: ConstructorParameters<typeof FileServer>[0] = {}): Promise<{ server: FileServer; path: string }> {
  const path = join(tmp(), 'src.bin');
  writeFileSync(path, bytes);
  const server = new FileServer(opts);
  await server.start('127.0.0.1');
  closers.push(() => server.stop());
  await server.offer(path);
  return { server, path };
}

/** A hostile source on a real ROUTER: serves the table and the chunks, but flips a byte of each `corrupt` chunk the first time it sends it. */
async function corrupting(path: string, corrupt: Set<number>): Promise<{ endpoint: string; sent: number[] }> {
  const table = await hashFile(path);
  const bytes = readFileSync(path);
  const router = new Router({ linger: 0 });
  await router.bind('tcp://127.0.0.1:0');
  closers.push(() => router.close());
  const sent: number[] = [];
  void (async () => {
    for await (const [rid, ...rest] of router) {
      const r = decodeRequest(rest)!;
      if (r.verb === 'META') {
        await router.send([rid!, ...encodeReply('META', r.id, 0, encodeTable(table))]);
        continue;
      }
      const data = Buffer.from(bytes.subarray(r.index * CHUNK_SIZE, (r.index + 1) * CHUNK_SIZE));
      if (corrupt.delete(r.index)) data[7] = data[7]! ^ 0xff;
      sent.push(r.index);
      await router.send([rid!, ...encodeReply('CHUNK', r.id, r.index, data)]);
    }
  })().catch(() => {});
  return { endpoint: router.lastEndpoint!, sent };
}

describe('file transfer', () => {
  it('fetches a file chunk by chunk, checked whole, with at most the window outstanding', async () => {
    const bytes = randomBytes(5 * CHUNK_SIZE + 1234);
    const { server, path } = await served(bytes);
    const t = await hashFile(path);
    const dest = join(tmp(), 'out.bin');
    const f = new Fetch({ id: t.sha256, size: t.size, dest, sources: [{ endpoint: server.endpoint }], window: 3 });
    await f.run();
    expect(readFileSync(dest).equals(bytes)).toBe(true);
    const s = f.stats();
    expect(s).toMatchObject({ chunks: 6, held: 6, chunksRefused: 0, chunksDuplicate: 0, bytesReceived: bytes.length });
    expect(server.stats()).toMatchObject({ chunksServed: 6, bytesServed: bytes.length });
  });

  it('refuses a chunk corrupted on the way, fetches it again from another source and drops a source after three', async () => {
    const bytes = randomBytes(12 * CHUNK_SIZE);
    const { server, path } = await served(bytes);
    const bad = await corrupting(path, new Set([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]));
    const t = await hashFile(path);
    const dest = join(tmp(), 'out.bin');
    const problems: string[] = [];
    const f = new Fetch({ id: t.sha256, size: t.size, table: t, dest, sources: [{ endpoint: bad.endpoint, name: 'liar' }, { endpoint: server.endpoint, name: 'honest' }], onProblem: (m) => problems.push(m) });
    await f.run();
    expect(readFileSync(dest).equals(bytes)).toBe(true);
    const s = f.stats();
    expect(s.chunksRefused).toBeGreaterThanOrEqual(1);
    expect(s.chunksRefused).toBeLessThanOrEqual(3);
    expect(s.sourcesDropped).toBe(s.chunksRefused === 3 ? 1 : 0);
    expect(problems.some((p) => /liar sent chunk \d+ with the wrong hash: refused, asked for again/.test(p))).toBe(true);
  });

  it('a single corrupting source: the refused chunk is asked for again', async () => {
    const bytes = randomBytes(4 * CHUNK_SIZE);
    const path = join(tmp(), 'src.bin');
    writeFileSync(path, bytes);
    const bad = await corrupting(path, new Set([2]));
    const t = await hashFile(path);
    const dest = join(tmp(), 'out.bin');
    const f = new Fetch({ id: t.sha256, size: t.size, dest, sources: [{ endpoint: bad.endpoint }] });
    const run = f.run();
    await run;
    expect(readFileSync(dest).equals(bytes)).toBe(true);
    expect(f.stats().chunksRefused).toBe(1);
    expect(bad.sent.filter((i) => i === 2).length).toBe(2);
  });

  it('resumes from the chunks already in the destination and reuses matching chunks of a seed', async () => {
    const bytes = randomBytes(8 * CHUNK_SIZE + 17);
    const { server, path } = await served(bytes);
    const t = await hashFile(path);
    const dir = tmp();
    const dest = join(dir, 'out.bin');
    // Chunks 0-2 already written by an earlier, cut transfer; chunk 3 half written.
    writeFileSync(dest, bytes.subarray(0, 3 * CHUNK_SIZE + CHUNK_SIZE / 2));
    // A seed (the release being replaced) sharing chunks 5 and 8 (the short last one), 5 at another offset.
    const seed = join(dir, 'seed.bin');
    writeFileSync(seed, Buffer.concat([randomBytes(CHUNK_SIZE), bytes.subarray(5 * CHUNK_SIZE, 6 * CHUNK_SIZE), randomBytes(CHUNK_SIZE), bytes.subarray(8 * CHUNK_SIZE)]));
    const f = new Fetch({ id: t.sha256, size: t.size, dest, sources: [{ endpoint: server.endpoint }], seeds: [seed, join(dir, 'missing')] });
    await f.run();
    expect(readFileSync(dest).equals(bytes)).toBe(true);
    expect(f.stats()).toMatchObject({ chunksResumed: 3, chunksReused: 2 });
    expect(server.stats().chunksServed).toBe(4); // 3, 4, 6, 7
  });

  it('the upload cap: a further fetcher waits (BUSY, counted) and completes once a slot frees', async () => {
    const bytes = randomBytes(6 * CHUNK_SIZE);
    const { server, path } = await served(bytes, { maxUploads: 1, idleMs: 300 });
    const t = await hashFile(path);
    const a = new Fetch({ id: t.sha256, size: t.size, table: t, dest: join(tmp(), 'a'), sources: [{ endpoint: server.endpoint }], window: 1 });
    const b = new Fetch({ id: t.sha256, size: t.size, table: t, dest: join(tmp(), 'b'), sources: [{ endpoint: server.endpoint }], window: 1 });
    await Promise.all([a.run(), b.run()]);
    expect(readFileSync(join(dirs.at(-2)!, 'a')).equals(bytes)).toBe(true);
    expect(readFileSync(join(dirs.at(-1)!, 'b')).equals(bytes)).toBe(true);
    expect(server.stats().uploadsBusy).toBeGreaterThan(0);
    expect(a.stats().busy + b.stats().busy).toBe(server.stats().uploadsBusy);
  });

  it('a source that does not hold the file is dropped; one added later completes the transfer', async () => {
    const bytes = randomBytes(2 * CHUNK_SIZE);
    const { server, path } = await served(bytes);
    const other = new FileServer();
    await other.start('127.0.0.1');
    closers.push(() => other.stop());
    const t = await hashFile(path);
    const f = new Fetch({ id: t.sha256, size: t.size, dest: join(tmp(), 'out'), sources: [{ endpoint: other.endpoint }] });
    const run = f.run();
    const until = Date.now() + 5000;
    while (f.stats().sourcesDropped === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    expect(f.stats()).toMatchObject({ sourcesDropped: 1, sources: 0 });
    f.addSource({ endpoint: server.endpoint });
    await run;
    expect(other.stats().requestsUnknown).toBe(1);
  });

  it('cancel rejects the run and keeps what was written', async () => {
    const { server, path } = await served(randomBytes(3 * CHUNK_SIZE));
    const t = await hashFile(path);
    await server.stop();
    const f = new Fetch({ id: t.sha256, size: t.size, table: t, dest: join(tmp(), 'out'), sources: [{ endpoint: server.endpoint }] });
    const run = f.run();
    f.cancel('update cancelled');
    await expect(run).rejects.toThrow('update cancelled');
  });
});
