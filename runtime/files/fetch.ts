/**
 * Fetching one file from the nodes that serve it (server.ts), by chunks, into a file on disk.
 *
 * - **Credit**: at most `window` chunks (default 10, 2.5 MiB) are requested and not yet received, for the whole
 *   transfer, whatever the number of sources; each request goes to the source with the fewest outstanding.
 *   Memory is that window plus one chunk being written, whatever the file's size.
 * - **Checked before written**: each chunk's SHA-256 must match the table; one that does not is refused
 *   (counted), asked for again (from another source when there is one), and a source that sent three bad
 *   chunks is dropped. When every chunk is held the whole file's SHA-256 is checked too, then the file is fsynced.
 * - **No total deadline**: only a per-chunk timeout (first 5 s, doubled on each timeout up to 60 s, back to
 *   5 s after a chunk arrives). On a timeout only the oldest chunk is asked for again (the others' deadlines are
 *   extended, and the window drops to 1, growing by one per chunk received), so a link that drops for a while
 *   costs about one duplicate chunk per timeout, not a window of them.
 * - **Resumable**: chunks already in `dest` (a transfer cut by a restart) are hashed and kept; chunks of the
 *   `seeds` (local files, e.g. the release being replaced) whose hashes match are copied, not fetched.
 * - **Several sources**: given at start or added later (`addSource`); a source that does not hold the file
 *   (NONE) is dropped; one at its upload cap (BUSY) is left alone for the time it asks.
 */
import { EventEmitter } from 'node:events';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { Dealer } from 'zeromq';
import { releaseYoung } from '../memory.ts';
import { chunkCount, decodeReply, decodeTable, encodeRequest, FileError, sha256, type ChunkTable } from './chunks.ts';

export interface FetchSource {
  endpoint: string;
  /** Secure mode: the server's CURVE public key (Z85), from the peer's proven X-PUBLICKEY. */
  serverKey?: string;
  /** For messages. */
  name?: string;
}

export interface FetchOptions {
  /** The file's SHA-256, hex. */
  id: string;
  size: number;
  /** The chunk table when known (a signed release manifest has it); otherwise asked of the sources (META). */
  table?: ChunkTable;
  /** Where the file is written (kept when the transfer is cancelled, so a later one resumes from it). */
  dest: string;
  sources: FetchSource[];
  /** Secure mode: our CURVE key pair. */
  client?: { publicKey: string; secretKey: string };
  window?: number;
  chunkTimeoutMs?: number;
  maxChunkTimeoutMs?: number;
  seeds?: string[];
  /** Reject when every source was dropped (an update from one pusher), instead of waiting for `addSource`. */
  failWithoutSources?: boolean;
  onProblem?: (message: string) => void;
}

export interface FetchStats {
  chunks: number;
  held: number;
  bytesReceived: number;
  chunksResumed: number;
  chunksReused: number;
  chunksRefused: number;
  chunksDuplicate: number;
  timeouts: number;
  busy: number;
  sourcesDropped: number;
  sources: number;
}

interface Source extends FetchSource {
  dealer: Dealer;
  outstanding: number;
  strikes: number;
  busyUntil: number;
  dropped: boolean;
  /** When META was last asked of it (while the table is not known). */
  metaAt: number;
}

interface Outstanding {
  source: Source;
  deadline: number;
}

const TICK_MS = 200;

export class Fetch extends EventEmitter<{ progress: [FetchStats] }> {
  private readonly id: Buffer;
  private table: ChunkTable | undefined;
  private have = new Uint8Array(0);
  private held = 0;
  private readonly sources = new Map<string, Source>();
  private readonly outstanding = new Map<number, Outstanding>();
  private readonly requeued: number[] = [];
  private cursor = 0;
  private cwnd: number;
  private timeout: number;
  private fh: FileHandle | undefined;
  private timer: NodeJS.Timeout | undefined;
  private settle: { resolve: (t: ChunkTable) => void; reject: (e: Error) => void } | undefined;
  private done = false;
  private sinceGc = 0;
  private probeGate = 0;
  private writing = Promise.resolve();
  private readonly counters = { bytesReceived: 0, chunksResumed: 0, chunksReused: 0, chunksRefused: 0, chunksDuplicate: 0, timeouts: 0, busy: 0, sourcesDropped: 0 };

  constructor(private readonly o: FetchOptions) {
    super();
    if (!/^[0-9a-f]{64}$/.test(o.id)) throw new FileError(`file id must be 64 hex digits, got ${JSON.stringify(o.id.slice(0, 70))}`);
    this.id = Buffer.from(o.id, 'hex');
    this.cwnd = o.window ?? 10;
    this.timeout = o.chunkTimeoutMs ?? 5000;
  }

  /** Resolves with the table when `dest` holds the whole file, checked and fsynced; rejects on cancel or a bad file. */
  run(): Promise<ChunkTable> {
    return new Promise<ChunkTable>((resolve, reject) => {
      this.settle = { resolve, reject };
      for (const s of this.o.sources) this.addSource(s);
      this.timer = setInterval(() => this.tick(), TICK_MS);
      void this.prepare().catch((e) => this.finish(e as Error));
    });
  }

  /** Another node that holds the file (ignored when known already). */
  addSource(s: FetchSource): void {
    if (this.done || this.sources.has(s.endpoint)) return;
    const c = this.o.client;
    const dealer = new Dealer({ linger: 0, receiveHighWaterMark: 64, ...(c && s.serverKey ? { curveServerKey: s.serverKey, curvePublicKey: c.publicKey, curveSecretKey: c.secretKey } : {}) });
    dealer.connect(s.endpoint);
    const src: Source = { ...s, dealer, outstanding: 0, strikes: 0, busyUntil: 0, dropped: false, metaAt: Date.now() };
    this.sources.set(s.endpoint, src);
    void this.receive(src);
    if (this.table) this.fill();
    else void this.send(src, 'META', 0);
  }

  /** Stops the transfer; `run()` rejects with `reason`. What was written stays in `dest`. */
  cancel(reason = 'cancelled'): void {
    this.finish(new FileError(reason));
  }

  stats(): FetchStats {
    return { chunks: this.table ? this.have.length : 0, held: this.held, ...this.counters, sources: [...this.sources.values()].filter((s) => !s.dropped).length };
  }

  private async prepare(): Promise<void> {
    if (this.o.table) await this.begin(this.o.table);
  }

  /** The table is known: open `dest`, keep what it and the seeds already hold, then request the rest. */
  private async begin(t: ChunkTable): Promise<void> {
    if (this.table) return;
    if (t.size !== this.o.size) throw new FileError(`chunk table says ${t.size} bytes, the offer ${this.o.size}`);
    this.table = t;
    const n = chunkCount(t.size, t.chunkSize);
    this.have = new Uint8Array(n);
    const existing = await stat(this.o.dest).catch(() => undefined);
    this.fh = await open(this.o.dest, existing ? 'r+' : 'w+');
    if (this.done) return void (await this.fh.close());
    if (existing) this.counters.chunksResumed = await this.scan(this.fh, existing.size);
    for (const seed of this.o.seeds ?? []) {
      if (this.held === n) break;
      const s = await open(seed, 'r').catch(() => undefined);
      if (!s) continue;
      try {
        this.counters.chunksReused += await this.reuse(s, (await s.stat()).size);
      } finally {
        await s.close();
      }
    }
    await this.fh.truncate(t.size);
    this.emit('progress', this.stats());
    if (this.held === n) return this.complete();
    this.fill();
  }

  /** Marks every chunk of `fh` (of `size` bytes) at its own index whose hash matches. */
  private async scan(fh: FileHandle, size: number): Promise<number> {
    const t = this.table!;
    const buf = Buffer.allocUnsafe(t.chunkSize);
    let kept = 0;
    for (let i = 0; i < this.have.length; i++) {
      const off = i * t.chunkSize;
      const len = Math.min(t.chunkSize, t.size - off);
      if (off + len > size) break;
      const { bytesRead } = await fh.read(buf, 0, len, off);
      if (bytesRead === len && sha256(buf.subarray(0, len)).equals(t.hashes[i]!)) {
        this.have[i] = 1;
        this.held++;
        kept++;
      }
    }
    return kept;
  }

  /** Copies every chunk of a seed file (at any chunk-aligned offset) whose hash a missing chunk has. */
  private async reuse(seed: FileHandle, size: number): Promise<number> {
    const t = this.table!;
    const wanted = new Map<string, number[]>();
    for (let i = 0; i < this.have.length; i++) {
      if (this.have[i]) continue;
      const k = t.hashes[i]!.toString('hex');
      const at = wanted.get(k);
      if (at) at.push(i);
      else wanted.set(k, [i]);
    }
    const buf = Buffer.allocUnsafe(t.chunkSize);
    let copied = 0;
    for (let off = 0; off < size && wanted.size > 0; off += t.chunkSize) {
      const { bytesRead } = await seed.read(buf, 0, Math.min(t.chunkSize, size - off), off);
      for (const len of new Set([bytesRead, t.size % t.chunkSize || t.chunkSize])) {
        if (len > bytesRead) continue;
        const k = sha256(buf.subarray(0, len)).toString('hex');
        const at = wanted.get(k);
        if (!at) continue;
        for (const i of at) {
          if (Math.min(t.chunkSize, t.size - i * t.chunkSize) !== len) continue;
          await this.fh!.write(buf, 0, len, i * t.chunkSize);
          if (!this.have[i]) {
            this.have[i] = 1;
            this.held++;
            copied++;
          }
        }
        wanted.delete(k);
      }
    }
    return copied;
  }

  private nextMissing(): number | undefined {
    while (this.requeued.length) {
      const i = this.requeued.pop()!;
      if (!this.have[i] && !this.outstanding.has(i)) return i;
    }
    while (this.cursor < this.have.length) {
      const i = this.cursor++;
      if (!this.have[i] && !this.outstanding.has(i)) return i;
    }
    return undefined;
  }

  private pick(now: number, avoid?: Source): Source | undefined {
    let best: Source | undefined;
    for (const s of this.sources.values()) {
      if (s.dropped || s.busyUntil > now) continue;
      if (!best || s.outstanding < best.outstanding || (best === avoid && s !== avoid)) best = s;
    }
    return best;
  }

  /** Requests missing chunks until the window is full. */
  private fill(avoid?: Source): void {
    if (this.done || !this.table) return;
    const now = Date.now();
    while (this.outstanding.size < this.cwnd) {
      const src = this.pick(now, avoid);
      if (!src) return;
      const i = this.nextMissing();
      if (i === undefined) return;
      this.outstanding.set(i, { source: src, deadline: now + this.timeout });
      src.outstanding++;
      void this.send(src, 'GET', i);
    }
  }

  private async send(src: Source, verb: 'META' | 'GET', index: number): Promise<void> {
    try {
      await src.dealer.send(encodeRequest(verb, this.id, index));
    } catch {
      /* closed: the timeout asks again */
    }
  }

  private async receive(src: Source): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await src.dealer.receive();
      } catch {
        return;
      }
      if (this.done) return;
      const r = decodeReply(frames);
      if (!r || !r.id.equals(this.id)) {
        this.strike(src, 'sent a malformed reply');
        continue;
      }
      try {
        await this.onReply(src, r);
      } catch (e) {
        this.finish(e as Error);
        return;
      }
    }
  }

  private async onReply(src: Source, r: { kind: string; index: number; body: Buffer }): Promise<void> {
    const now = Date.now();
    if (r.kind === 'META') {
      if (this.table) return;
      let t: ChunkTable;
      try {
        t = decodeTable(this.o.id, r.body);
      } catch (e) {
        return this.strike(src, `sent a bad chunk table: ${(e as Error).message}`);
      }
      return this.begin(t);
    }
    const out = this.outstanding.get(r.index);
    if (out?.source === src) {
      this.outstanding.delete(r.index);
      src.outstanding--;
    }
    if (r.kind === 'BUSY') {
      this.counters.busy++;
      src.busyUntil = now + Math.min(r.body.length === 4 ? r.body.readUInt32BE(0) : 1000, 30_000);
      src.metaAt = 0; // a META asked of a busy server is asked again when it may serve
      if (!this.table) return;
      this.requeued.push(r.index);
      return this.fill();
    }
    if (r.kind === 'NONE') {
      this.drop(src, `does not serve it (${r.body.toString('utf8').slice(0, 80)})`);
      if (!this.table) return;
      this.requeued.push(r.index);
      return this.fill();
    }
    // CHUNK
    this.counters.bytesReceived += r.body.length;
    const t = this.table;
    if (!t || r.index >= this.have.length) return this.strike(src, `sent chunk ${r.index}, which is not in the table`);
    if (this.have[r.index]) {
      this.counters.chunksDuplicate++;
      return this.fill();
    }
    const len = Math.min(t.chunkSize, t.size - r.index * t.chunkSize);
    if (r.body.length !== len || !sha256(r.body).equals(t.hashes[r.index]!)) {
      this.counters.chunksRefused++;
      this.requeued.push(r.index);
      this.strike(src, `sent chunk ${r.index} with the wrong hash: refused, asked for again`);
      return this.fill(src);
    }
    this.have[r.index] = 1;
    this.held++;
    this.timeout = this.o.chunkTimeoutMs ?? 5000;
    this.probeGate = 0;
    if (this.cwnd < (this.o.window ?? 10)) this.cwnd++;
    this.fill();
    const write = this.writing.then(() => this.fh!.write(r.body, 0, len, r.index * t.chunkSize));
    this.writing = write.then(() => {}, () => {});
    await write;
    // Chunks are external buffers: give them back every MB (and what was promoted every 16 MB), not when V8 next feels heap pressure.
    if (++this.sinceGc % 4 === 0) releaseYoung(this.sinceGc % 64 === 0);
    this.emit('progress', this.stats());
    if (this.held === this.have.length) await this.complete();
  }

  private tick(): void {
    if (this.done) return;
    const now = Date.now();
    if (!this.table) {
      // Still asking for the table: again of each source that is not busy, once per timeout.
      for (const s of this.sources.values()) {
        if (s.dropped || s.busyUntil > now || now - s.metaAt < this.timeout) continue;
        s.metaAt = now;
        void this.send(s, 'META', 0);
      }
      return;
    }
    let late: Outstanding | undefined;
    for (const o of this.outstanding.values()) if (o.deadline <= now && (!late || o.deadline < late.deadline)) late = o;
    if (late && now >= this.probeGate) {
      // The oldest request is presumed lost: ask for it once more (elsewhere when there is another source),
      // wait longer, and let the rest run on — their replies may be queued behind a link that came back, and
      // asking again for all of them would fetch a window of duplicates.
      this.counters.timeouts++;
      const src = late.source;
      this.timeout = Math.min(this.timeout * 2, this.o.maxChunkTimeoutMs ?? 60_000);
      // One probe per timeout for the whole transfer: when the link itself is down, every source's requests
      // time out together, and a probe to each would be a duplicate each once it comes back.
      this.probeGate = now + this.timeout;
      for (const [i, o] of this.outstanding) {
        if (o === late) {
          this.outstanding.delete(i);
          src.outstanding--;
          const probe = this.pick(now, src) ?? src;
          this.outstanding.set(i, { source: probe, deadline: now + this.timeout });
          probe.outstanding++;
          void this.send(probe, 'GET', i);
        } else if (o.source === src) o.deadline = now + this.timeout;
      }
      this.cwnd = 1;
      if (this.sources.size > 1) src.busyUntil = now + this.timeout / 2;
    }
    this.fill();
  }

  private strike(src: Source, what: string): void {
    this.o.onProblem?.(`file ${this.o.id.slice(0, 12)}: ${src.name ?? src.endpoint} ${what}`);
    if (++src.strikes >= 3) this.drop(src, 'sent three bad replies');
  }

  private drop(src: Source, why: string): void {
    if (src.dropped) return;
    src.dropped = true;
    this.counters.sourcesDropped++;
    this.o.onProblem?.(`file ${this.o.id.slice(0, 12)}: source ${src.name ?? src.endpoint} dropped: ${why}`);
    for (const [i, o] of this.outstanding) {
      if (o.source !== src) continue;
      this.outstanding.delete(i);
      this.requeued.push(i);
    }
    src.dealer.close();
    if (this.o.failWithoutSources && [...this.sources.values()].every((s) => s.dropped)) {
      this.finish(new FileError(`no source left: the last one (${src.name ?? src.endpoint}) ${why}`));
    }
  }

  private async complete(): Promise<void> {
    if (this.done) return;
    const t = this.table!;
    await this.writing;
    const fh = this.fh!;
    await fh.sync();
    // The whole file, as the offer named it (a source cannot make us keep a file under another id).
    const whole = createHash('sha256');
    const buf = Buffer.allocUnsafe(t.chunkSize);
    for (let off = 0; off < t.size; off += t.chunkSize) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(t.chunkSize, t.size - off), off);
      whole.update(buf.subarray(0, bytesRead));
    }
    if (whole.digest('hex') !== this.o.id) return this.finish(new FileError(`every chunk matched its table, but the whole file's SHA-256 is not ${this.o.id}: the table was wrong`));
    this.finish(undefined);
  }

  private finish(err: Error | undefined): void {
    if (this.done) return;
    this.done = true;
    clearInterval(this.timer);
    for (const s of this.sources.values()) if (!s.dropped) s.dealer.close();
    const fh = this.fh;
    this.fh = undefined;
    void this.writing.then(() => fh?.close()).catch(() => {}).finally(() => {
      if (err) this.settle?.reject(err);
      else this.settle?.resolve(this.table!);
    });
  }
}
