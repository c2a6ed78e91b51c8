/**
 * A node's file server: a ROUTER on its interface's address that answers META and GET for the files it
 * offers (chunks.ts has the wire format). It reads each chunk from disk when asked, so memory does not grow
 * with file size; what is in flight is bounded by the fetchers' credit (at most their window per transfer)
 * and by the upload cap: at most `maxUploads` fetchers (DEALER connections) are served at once, a further one
 * gets BUSY with a time to wait (counted). In secure mode the ROUTER is a CURVE server behind the process's
 * ZAP handler, and `allows` decides which keys may fetch.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { Router } from 'zeromq';
import { curveServer, type CurveServer } from '../security/zap.ts';
import { chunkCount, decodeRequest, encodeReply, encodeTable, hashFile, type ChunkTable } from './chunks.ts';

export interface FileServerOptions {
  /** Fetchers served at once (default 4); the rest get BUSY. */
  maxUploads?: number;
  /** A fetcher that asked nothing for this long no longer holds an upload slot (default 5 s). */
  idleMs?: number;
  curve?: { publicKey: string; secretKey: string; zapDomain: string; allows(key: string): boolean; refused?(info: { publicKey: string; address?: string; why: string }): void };
}

export interface FileServerStats {
  chunksServed: number;
  bytesServed: number;
  /** Requests refused with BUSY: the upload cap was reached. */
  uploadsBusy: number;
  /** Requests for a file not offered here, or a chunk past its end. */
  requestsUnknown: number;
  requestsMalformed: number;
  fetchersRefused: number;
  /** Fetchers holding an upload slot now (a gauge). */
  uploadsActive: number;
  /** The most that ever held one at once (never above maxUploads). */
  uploadsPeak: number;
}

interface Offered {
  table: ChunkTable;
  path: string;
  fh?: Promise<FileHandle>;
}

export class FileServer {
  private router: Router | undefined;
  private curve: CurveServer | undefined;
  private readonly files = new Map<string, Offered>();
  private readonly fetchers = new Map<string, number>();
  private readonly counters = { chunksServed: 0, bytesServed: 0, uploadsBusy: 0, requestsUnknown: 0, requestsMalformed: 0, fetchersRefused: 0, uploadsPeak: 0 };
  endpoint = '';

  constructor(private readonly o: FileServerOptions = {}) {}

  /** Binds on `address` (an IPv4 address; an ephemeral port) and starts answering. */
  async start(address: string): Promise<void> {
    const c = this.o.curve;
    if (c) {
      this.curve = await curveServer(c, c.zapDomain, c.allows, (key, addr) => {
        this.counters.fetchersRefused++;
        c.refused?.({ publicKey: key, address: addr, why: 'file fetch (needs the read role)' });
      });
    }
    await this.bind(address);
  }

  private async bind(address: string): Promise<void> {
    const router = new Router({ linger: 0, sendHighWaterMark: 64, ...(this.curve?.options ?? {}) });
    await router.bind(`tcp://${address}:0`);
    this.endpoint = router.lastEndpoint!.replace(/^tcp:\/\/0\.0\.0\.0/, `tcp://${address}`);
    this.router = router;
    void this.serve(router);
  }

  /** Moves to `address` (a new port too): offers are kept; transfers in progress reconnect there. */
  async rebind(address: string): Promise<void> {
    const old = this.router;
    this.router = undefined;
    old?.close();
    await this.bind(address);
  }

  /** Offers `path` (hashed now unless its table is given); returns its table. Served until withdrawn. */
  async offer(path: string, table?: ChunkTable): Promise<ChunkTable> {
    const t = table ?? (await hashFile(path));
    const was = this.files.get(t.sha256);
    if (was?.path === path) return t;
    if (was) void this.closeFile(was);
    this.files.set(t.sha256, { table: t, path });
    return t;
  }

  /** True when the file `id` (hex) is offered. */
  has(id: string): boolean {
    return this.files.has(id);
  }

  withdraw(id: string): void {
    const f = this.files.get(id);
    this.files.delete(id);
    if (f) void this.closeFile(f);
  }

  stats(): FileServerStats {
    this.prune(Date.now());
    return { ...this.counters, uploadsActive: this.fetchers.size };
  }

  async stop(): Promise<void> {
    this.router?.close();
    this.router = undefined;
    this.curve?.release();
    this.curve = undefined;
    await Promise.all([...this.files.values()].map((f) => this.closeFile(f)));
    this.files.clear();
  }

  private async closeFile(f: Offered): Promise<void> {
    const fh = f.fh;
    f.fh = undefined;
    await (await fh?.catch(() => undefined))?.close().catch(() => {});
  }

  private prune(now: number): void {
    const idle = this.o.idleMs ?? 5000;
    for (const [k, t] of this.fetchers) if (now - t > idle) this.fetchers.delete(k);
  }

  private async serve(router: Router): Promise<void> {
    const max = this.o.maxUploads ?? 4;
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await router.receive();
      } catch {
        return;
      }
      const [rid, ...rest] = frames;
      const req = decodeRequest(rest);
      if (!rid || !req) {
        this.counters.requestsMalformed++;
        continue;
      }
      const now = Date.now();
      const who = rid.toString('hex');
      if (!this.fetchers.has(who)) {
        this.prune(now);
        if (this.fetchers.size >= max) {
          this.counters.uploadsBusy++;
          const wait = Buffer.alloc(4);
          wait.writeUInt32BE(1000);
          if (!(await this.reply(router, rid, encodeReply('BUSY', req.id, req.index, wait)))) return;
          continue;
        }
      }
      this.fetchers.set(who, now);
      if (this.fetchers.size > this.counters.uploadsPeak) this.counters.uploadsPeak = this.fetchers.size;
      const f = this.files.get(req.id.toString('hex'));
      let out: Buffer[];
      if (!f) {
        this.counters.requestsUnknown++;
        out = encodeReply('NONE', req.id, req.index, Buffer.from('not served here'));
      } else if (req.verb === 'META') {
        out = encodeReply('META', req.id, 0, encodeTable(f.table));
      } else if (req.index >= chunkCount(f.table.size, f.table.chunkSize)) {
        this.counters.requestsUnknown++;
        out = encodeReply('NONE', req.id, req.index, Buffer.from(`chunk ${req.index} past the end (${chunkCount(f.table.size, f.table.chunkSize)} chunks)`));
      } else {
        try {
          const data = await this.read(f, req.index);
          this.counters.chunksServed++;
          this.counters.bytesServed += data.length;
          out = encodeReply('CHUNK', req.id, req.index, data);
        } catch (e) {
          out = encodeReply('NONE', req.id, req.index, Buffer.from(`read failed: ${(e as Error).message}`));
        }
      }
      if (!(await this.reply(router, rid, out))) return;
    }
  }

  /** One chunk, read now (a fresh buffer: zeromq keeps it until sent). */
  private async read(f: Offered, index: number): Promise<Buffer> {
    f.fh ??= open(f.path, 'r');
    const fh = await f.fh;
    const { size, chunkSize } = f.table;
    const off = index * chunkSize;
    const len = Math.min(chunkSize, size - off);
    const buf = Buffer.allocUnsafe(len);
    const { bytesRead } = await fh.read(buf, 0, len, off);
    if (bytesRead !== len) throw new Error(`short read at ${off}`);
    return buf;
  }

  private async reply(router: Router, rid: Buffer, frames: Buffer[]): Promise<boolean> {
    try {
      await router.send([rid, ...frames]);
      return true;
    } catch {
      return this.router === router; // closed: stop serving; otherwise (a peer gone) go on
    }
  }
}
