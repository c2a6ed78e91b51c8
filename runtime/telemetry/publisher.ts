/**
 * The telemetry publisher: samples in, batches out over ZeroMQ (tcp, ipc, epgm), as FORMAT.md lays out.
 *
 * Batching: samples of one topic collect in that topic's preallocated {@link BatchWriter}; a batch is flushed
 * when it holds `batchSamples` samples, when the next would pass `batchBytes`, or `batchMs` after its first
 * sample. Sending: one XPUB socket with no-drop on, so a full high-water mark makes the socket mute instead of
 * dropping silently; flushed batches then wait in a bounded queue, and when that is full the oldest is handed
 * to `spool` if one is given, else dropped — both counted in {@link PublisherStats}.
 *
 * Nothing opens on construction; {@link Publisher.start} binds, {@link Publisher.stop} flushes and closes.
 */
import { randomBytes } from 'node:crypto';
import { capability, Router, XPublisher } from 'zeromq';
import { BoundedQueue } from '../queue.ts';
import { curveServer, type CurveServer } from '../security/zap.ts';
import { Batch, BatchWriter, encodeOne, HEADER_BYTES, sampleBytes, SYNC_PREFIX, TelemetryFormatError } from './sample.ts';

export class TelemetryError extends Error {
  override name = 'TelemetryError';
}

export interface PublisherOptions {
  /** Where to bind: `tcp://IPv4:port|*`, `ipc:///path`, `epgm://IPv4;239.x.y.z:port`. At least one. */
  endpoints: string[];
  /** Where to bind the snapshot ROUTER (`tcp://IPv4:*`); none when absent. */
  snapshotEndpoint?: string;
  /** 16-byte publisher id; random by default (a restart is a new publisher). */
  id?: Buffer;
  /**
   * Flush a batch at this many samples. 1 means unbatched. Default 256, chosen with bench/telemetry.ts: one-value
   * samples, publisher and subscriber in separate processes, tcp on loopback: 64 → about 3 M samples/s,
   * 256 → about 4.5–5 M; 256 one-value samples take 3.4 KB, inside the default 4096-byte frame.
   */
  batchSamples?: number;
  /** Largest batch frame in bytes. Default 4096. */
  batchBytes?: number;
  /** Flush a batch this long after its first sample. Default 50 ms. */
  batchMs?: number;
  /** Topics with their own batch buffer; a new topic past this flushes and forgets the oldest. Default 1024. */
  maxTopics?: number;
  /** Flushed batches waiting while the socket is mute. Default 1024. */
  queueLimit?: number;
  /** Receives batches pushed out of a full queue instead of dropping them (e.g. the bridge's spool). */
  spool?: (topic: string, frame: Buffer) => void;
  /** ZeroMQ send high-water mark (messages per subscriber). Default 1000. */
  sendHighWaterMark?: number;
  /** epgm send rate in kbit/s (ZMQ_RATE). libzmq's default of 100 kbit/s silently drops the excess. Default 10000. */
  rate?: number;
  /**
   * Secure mode: the XPUB and the snapshot ROUTER are CURVE servers with this key pair, behind the process's
   * ZAP handler: only keys `allows` accepts (the `read` role) subscribe. epgm is refused: libzmq has no CURVE
   * for it, and plaintext multicast would undo the rest.
   */
  curve?: { publicKey: string; secretKey: string; allows(publicKey: string): boolean; refused?(info: { publicKey: string; address?: string; why: string }): void; zapDomain?: string };
}

export interface PublisherStats {
  samplesPublished: number;
  batchesSent: number;
  /** Batches (and their samples) pushed out of the full queue and dropped. */
  batchesDropped: number;
  samplesDropped: number;
  /** Batches pushed out of the full queue and handed to `spool`. */
  batchesSpooled: number;
  /** Topics forgotten because `maxTopics` was reached (their sequence restarts). */
  topicsEvicted: number;
  /** Snapshot requests answered. */
  snapshotsServed: number;
  /** Times the socket was found mute (a subscriber's high-water mark reached) and sending had to wait. */
  muteEvents: number;
  /** Topic prefixes subscribers have asked for (XPUB; not visible over epgm). */
  subscriptions: number;
  /** Secure mode: subscribers (and snapshot requests) whose key lacks the read role, refused by ZAP. */
  subscribersRefused?: number;
}

interface TopicState {
  topic: string;
  topicFrame: Buffer;
  nextSeq: number;
  writer: BatchWriter;
  openedAt: number;
}

/** How long a snapshot request waits for its sync token's subscription, ms; and how many may wait at once. */
const SYNC_WAIT_MS = 1000;
const MAX_SYNC_WAITS = 256;

const DEFAULTS = { batchSamples: 256, batchBytes: 4096, batchMs: 50, maxTopics: 1024, queueLimit: 1024, sendHighWaterMark: 1000, rate: 10_000 };

/** Checks an epgm endpoint names the interface by IPv4 address (OpenPGM looks names up in DNS and fails offline). */
export function checkEpgmEndpoint(endpoint: string): void {
  const m = /^epgm:\/\/([^;]+);(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(endpoint);
  if (!m) throw new TelemetryError(`epgm endpoint '${endpoint}': expected epgm://<interface IPv4>;<group>:<port>`);
  if (!/^\d+\.\d+\.\d+\.\d+$/.test(m[1]!)) {
    throw new TelemetryError(`epgm endpoint '${endpoint}': name the interface by its IPv4 address, not '${m[1]}' (OpenPGM resolves names through DNS first)`);
  }
  const first = Number(m[2]!.split('.')[0]);
  if (first < 224 || first > 239) throw new TelemetryError(`epgm endpoint '${endpoint}': ${m[2]} is not a multicast group (224.0.0.0–239.255.255.255)`);
}

/** Refuses epgm when this zeromq.js has no PGM, saying how to get it. */
export function requirePgm(): void {
  if (!capability.pgm) {
    throw new TelemetryError('epgm is not available: this zeromq.js addon was built without OpenPGM. '
      + 'Run `bash image/setup.sh`, which builds it against Debian\'s libzmq3-dev (it has OpenPGM).');
  }
}

export class Publisher {
  readonly id: Buffer;
  private readonly opts: typeof DEFAULTS & PublisherOptions & { endpoints: string[] };
  private readonly topics = new Map<string, TopicState>();
  private lastTopic: string | undefined;
  private lastState: TopicState | undefined;
  private readonly open = new Set<TopicState>();
  private readonly queue: BoundedQueue<[Buffer, Buffer]>;
  private readonly lastBatch = new Map<string, Buffer>();
  private readonly prefixes = new Set<string>();
  private readonly counters = { samplesPublished: 0, batchesSent: 0, batchesDropped: 0, samplesDropped: 0, batchesSpooled: 0, topicsEvicted: 0, snapshotsServed: 0, muteEvents: 0 };
  private socket: XPublisher | undefined;
  private snapshot: Router | undefined;
  private timer: NodeJS.Timeout | undefined;
  private pumping = false;
  private drainWaiters: (() => void)[] = [];
  private subscriptionWaiters: (() => void)[] = [];
  private loops: Promise<void>[] = [];
  private _endpoints: string[] = [];
  private _snapshotEndpoint: string | undefined;

  /** Stores the options and checks them; opens nothing. */
  constructor(options: PublisherOptions) {
    this.opts = { ...DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) } as typeof DEFAULTS & PublisherOptions;
    if (options.endpoints.length === 0) throw new TelemetryError('a publisher needs at least one endpoint');
    this.id = options.id ?? randomBytes(16);
    if (this.id.length !== 16) throw new TelemetryError(`publisher id must be 16 bytes, got ${this.id.length}`);
    const o = this.opts;
    if (!Number.isInteger(o.batchSamples) || o.batchSamples < 1 || o.batchSamples > 0xffff) throw new TelemetryError(`batchSamples ${o.batchSamples}: expected 1..65535`);
    this.queue = new BoundedQueue(o.queueLimit);
    for (const e of options.endpoints) if (e.startsWith('epgm://') || e.startsWith('pgm://')) checkEpgmEndpoint(e.replace(/^pgm/, 'epgm'));
    if (options.curve && options.endpoints.some((e) => /^e?pgm:/.test(e))) {
      throw new TelemetryError('epgm cannot be secured (libzmq has no CURVE for multicast): drop telemetry.epgm, or run with security.mode: none');
    }
  }

  /** Secure mode: our place behind the ZAP handler (registered once, kept across rebinds). */
  private curveServer: CurveServer | undefined;
  private readonly curveCounters = { subscribersRefused: 0 };

  /** ZeroMQ options that make a server socket CURVE (secure mode), else none. */
  private async serverOptions(): Promise<Record<string, unknown>> {
    const c = this.opts.curve;
    if (!c) return {};
    try {
      this.curveServer ??= await curveServer(c, c.zapDomain ?? 'telemetry', c.allows, (key, address) => {
        this.curveCounters.subscribersRefused++;
        c.refused?.({ publicKey: key, address, why: 'telemetry subscription' });
      });
    } catch (e) {
      throw new TelemetryError(`secure telemetry: ${(e as Error).message}`);
    }
    return this.curveServer.options;
  }

  /** The endpoints actually bound (ephemeral ports resolved); empty before start. */
  get endpoints(): string[] {
    return this._endpoints;
  }

  get snapshotEndpoint(): string | undefined {
    return this._snapshotEndpoint;
  }

  /** Binds every endpoint and the snapshot ROUTER. Rejects with a clear error; then nothing stays open. */
  async start(): Promise<void> {
    const bound = await this.bindAll(this.opts.endpoints, this.opts.snapshotEndpoint);
    this.adopt(bound);
  }

  /**
   * Moves to another interface address: binds the same endpoints (and the snapshot ROUTER) on `address`,
   * switches sending to them and closes the old ones. Topics, sequence numbers and queued batches carry over,
   * so a subscriber that follows to the new endpoint loses at most what was in flight. Rejects, keeping the
   * old endpoints, when the new ones cannot be bound.
   */
  async rebind(address: string): Promise<void> {
    const swap = (e: string) => e.replace(/^tcp:\/\/[^:]+:/, `tcp://${address}:`).replace(/^(e?pgm):\/\/[^;]+;/, `$1://${address};`);
    const endpoints = this.opts.endpoints.map(swap);
    const snapshotEndpoint = this.opts.snapshotEndpoint === undefined ? undefined : swap(this.opts.snapshotEndpoint);
    const bound = await this.bindAll(endpoints, snapshotEndpoint);
    const [oldSocket, oldSnapshot] = [this.socket, this.snapshot];
    this.opts.endpoints = endpoints;
    this.opts.snapshotEndpoint = snapshotEndpoint;
    this.prefixes.clear(); // subscriptions belong to the old socket; subscribers come again to the new one
    const oldLoops = this.loops;
    this.loops = [];
    this.adopt(bound);
    oldSocket?.close();
    oldSnapshot?.close();
    await Promise.all(oldLoops); // they end with their sockets; only the current ones are kept
    if (this.queue.length > 0 && !this.pumping) void this.pump();
  }

  /** Binds a new XPUB on `endpoints` and a snapshot ROUTER; closes what it opened if any bind fails. */
  private async bindAll(endpoints: string[], snapshotEndpoint: string | undefined): Promise<{ socket: XPublisher; snapshot: Router | undefined; endpoints: string[]; snapshotEndpoint: string | undefined }> {
    if (endpoints.some((e) => /^e?pgm:/.test(e))) requirePgm();
    const secure = await this.serverOptions();
    const socket = new XPublisher({ noDrop: true, sendTimeout: 0, sendHighWaterMark: this.opts.sendHighWaterMark, linger: 1000, rate: this.opts.rate, ...secure });
    let snapshot: Router | undefined;
    const bound: string[] = [];
    try {
      for (const e of endpoints) {
        try {
          await socket.bind(e);
        } catch (err) {
          throw new TelemetryError(`cannot bind telemetry endpoint ${e}: ${(err as Error).message}`);
        }
        bound.push(e.startsWith('tcp://') && e.endsWith(':*') ? socket.lastEndpoint! : e);
      }
      if (snapshotEndpoint) {
        snapshot = new Router({ linger: 0, ...secure });
        try {
          await snapshot.bind(snapshotEndpoint);
        } catch (err) {
          throw new TelemetryError(`cannot bind snapshot endpoint ${snapshotEndpoint}: ${(err as Error).message}`);
        }
      }
    } catch (err) {
      socket.close();
      snapshot?.close();
      throw err;
    }
    return { socket, snapshot, endpoints: bound, snapshotEndpoint: snapshot?.lastEndpoint ?? undefined };
  }

  private adopt(b: { socket: XPublisher; snapshot: Router | undefined; endpoints: string[]; snapshotEndpoint: string | undefined }): void {
    this.socket = b.socket;
    this.snapshot = b.snapshot;
    this._endpoints = b.endpoints;
    this._snapshotEndpoint = b.snapshotEndpoint;
    this.loops.push(this.subscriptionLoop(b.socket));
    if (b.snapshot) this.loops.push(this.snapshotLoop(b.snapshot));
  }

  /**
   * Adds one sample to its topic's batch. Never blocks and never throws for a full queue (see the class doc);
   * throws {@link TelemetryError} for a topic or unit over 255 bytes or more than 32 values.
   * Returns false when the send queue is full: the next flush will push out the oldest batch, so a producer
   * that must not lose anything waits on {@link drained} first.
   * Cost: a map lookup (skipped for a repeated topic) and a few buffer writes; a flush adds one batch copy.
   */
  publish(topic: string, value: number | ArrayLike<number>, opts?: { unit?: string; ts?: number; status?: number }): boolean {
    const one = typeof value === 'number';
    const arity = one ? 1 : value.length;
    const unit = opts?.unit ?? '';
    const ts = opts?.ts ?? Date.now();
    const status = opts?.status ?? 0;
    // Consecutive samples are often of one topic: skip the map lookup then.
    let state = topic === this.lastTopic ? this.lastState! : this.topics.get(topic);
    if (!state) state = this.addTopic(topic);
    this.lastTopic = topic;
    this.lastState = state;
    const w = state.writer;
    if (w.count > 0 && (w.arity !== arity || w.unit !== unit)) this.flush(state);
    if (w.count === 0) this.begin(state, ts, unit, arity);
    if (!(one ? w.add1(ts, status, value) : w.add(ts, status, value))) {
      this.flush(state);
      this.begin(state, ts, unit, arity);
      if (!(one ? w.add1(ts, status, value) : w.add(ts, status, value))) {
        throw new TelemetryError(`sample for '${topic}' does not fit an empty batch of ${this.opts.batchBytes} bytes`);
      }
    }
    this.counters.samplesPublished++;
    if (w.count >= this.opts.batchSamples || !w.fits()) this.flush(state);
    return this.queue.length < this.queue.capacity;
  }

  /** Flushes every open batch now. */
  flushAll(): void {
    for (const s of [...this.open]) this.flush(s);
  }

  /** Resolves when every flushed batch has been handed to ZeroMQ (at once if none waits). */
  drained(): Promise<void> {
    if (this.queue.length === 0 && !this.pumping) return Promise.resolve();
    return new Promise((r) => this.drainWaiters.push(r));
  }

  /** True when a subscriber has asked for a prefix of `topic` (tcp/ipc only; epgm has no subscriptions). */
  hasSubscriber(topic: string): boolean {
    for (const p of this.prefixes) if (topic.startsWith(p)) return true;
    return false;
  }

  /** Resolves true once a subscriber wants `topic`, false after `ms`. */
  waitForSubscriber(topic: string, ms: number): Promise<boolean> {
    return this.untilSubscribed(() => this.hasSubscriber(topic), ms);
  }

  /** Resolves true once `ok()` holds, re-checked on each change of the subscriptions; false after `ms`. */
  private async untilSubscribed(ok: () => boolean, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!ok()) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.subscriptionWaiters.push(() => (clearTimeout(t), r()));
      });
    }
    return true;
  }

  /** Each topic's next sequence number (the count of samples it has published, modulo 2^32), topics evicted excepted. */
  sequences(): Map<string, number> {
    return new Map([...this.topics.values()].map((t) => [t.topic, t.nextSeq]));
  }

  stats(): PublisherStats {
    return { ...this.counters, subscriptions: this.prefixes.size, ...(this.opts.curve ? this.curveCounters : {}) };
  }

  /** Flushes open batches, waits up to `ms` for the queue to drain, then closes (ZeroMQ lingers 1 s). */
  async stop(ms = 2000): Promise<void> {
    if (!this.socket) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.flushAll();
    await Promise.race([this.drained(), new Promise((r) => setTimeout(r, ms))]);
    this.socket.close();
    this.snapshot?.close();
    await Promise.all(this.loops);
    this.socket = undefined;
    this.snapshot = undefined;
    this.loops = [];
    this.curveServer?.release();
    this.curveServer = undefined;
  }

  // --- internals -----------------------------------------------------------------------------------------

  private addTopic(topic: string): TopicState {
    const topicFrame = Buffer.from(topic, 'utf8');
    if (topicFrame.length > 255 || topicFrame.length === 0) throw new TelemetryError(`topic '${topic.slice(0, 40)}' must be 1 to 255 bytes`);
    if (topicFrame.includes(0)) throw new TelemetryError(`topic '${topic.slice(0, 40).replaceAll('\0', '\\0')}' holds a NUL byte`);
    if (this.topics.size >= this.opts.maxTopics) {
      const [, oldest] = this.topics.entries().next().value as [string, TopicState];
      if (oldest.writer.count > 0) this.flush(oldest);
      this.topics.delete(oldest.topic);
      if (this.lastState === oldest) this.lastTopic = this.lastState = undefined;
      this.counters.topicsEvicted++;
    }
    const least = HEADER_BYTES + 255 + sampleBytes(32);
    const state: TopicState = { topic, topicFrame, nextSeq: 0, writer: new BatchWriter(Math.max(this.opts.batchBytes, least)), openedAt: 0 };
    this.topics.set(topic, state);
    return state;
  }

  private begin(state: TopicState, ts: number, unit: string, arity: number): void {
    try {
      state.writer.begin(state.topic, this.id, state.nextSeq, ts, unit, arity);
    } catch (e) {
      if (e instanceof TelemetryFormatError) throw new TelemetryError(`topic '${state.topic}': ${e.message}`);
      throw e;
    }
    state.openedAt = performance.now();
    this.open.add(state);
    if (!this.timer) this.timer = setTimeout(() => this.flushDue(), this.opts.batchMs);
  }

  private flush(state: TopicState): void {
    const count = state.writer.count;
    if (count === 0) return;
    const frame = state.writer.finish();
    state.nextSeq = (state.nextSeq + count) >>> 0;
    this.open.delete(state);
    this.lastBatch.delete(state.topic); // re-insert: the map keeps recency order for eviction
    this.lastBatch.set(state.topic, frame);
    if (this.lastBatch.size > this.opts.maxTopics * 4) this.lastBatch.delete(this.lastBatch.keys().next().value as string);
    if (this.queue.length === this.queue.capacity) {
      const [topicFrame, old] = this.queue.shift()!;
      if (this.opts.spool) {
        this.counters.batchesSpooled++;
        this.opts.spool(topicFrame.toString('utf8'), old);
      } else {
        this.counters.batchesDropped++;
        this.counters.samplesDropped += old.readUInt16BE(24);
      }
    }
    this.queue.push([state.topicFrame, frame]);
    if (!this.pumping) void this.pump();
  }

  /** Flushes batches older than batchMs and re-arms the timer for the oldest still open. */
  private flushDue(): void {
    this.timer = undefined;
    const now = performance.now();
    let oldest = Infinity;
    for (const s of [...this.open]) {
      if (now - s.openedAt >= this.opts.batchMs - 1) this.flush(s);
      else oldest = Math.min(oldest, s.openedAt);
    }
    if (oldest !== Infinity) this.timer = setTimeout(() => this.flushDue(), Math.max(1, oldest + this.opts.batchMs - now));
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      for (let msg = this.queue.shift(); msg && this.socket; msg = this.queue.shift()) {
        // The message in flight is out of the queue, so a full queue pushes out only messages not yet sent.
        for (let attempt = 0; ; attempt++) {
          try {
            await this.socket.send(msg);
            break;
          } catch (e) {
            // Mute: XPUB with no-drop answers EAGAIN at the high-water mark and never signals when it can take
            // more (libzmq reports XPUB as always writable), so retry after a short, growing pause.
            if ((e as { code?: string }).code !== 'EAGAIN' || !this.socket) throw e;
            if (attempt === 0) this.counters.muteEvents++;
            await new Promise((r) => setTimeout(r, Math.min(attempt, 20)));
          }
        }
        this.counters.batchesSent++;
      }
    } catch {
      // Socket closed during stop(); what is queued goes with it.
    } finally {
      this.pumping = false;
      const waiters = this.drainWaiters;
      this.drainWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** XPUB delivers subscribe (0x01 + prefix) and unsubscribe (0x00 + prefix) messages. */
  private async subscriptionLoop(socket: XPublisher): Promise<void> {
    try {
      for (;;) {
        const [msg] = await socket.receive();
        if (!msg || msg.length === 0) continue;
        const prefix = msg.toString('utf8', 1);
        if (msg[0] === 1) this.prefixes.add(prefix);
        else if (msg[0] === 0) this.prefixes.delete(prefix);
        const waiters = this.subscriptionWaiters;
        this.subscriptionWaiters = [];
        for (const w of waiters) w();
      }
    } catch {
      // closed
    }
  }

  /**
   * Answers [SNAPSHOT, prefix] with the last sample of each matching topic, then [END] (FORMAT.md). With a sync
   * token, [SNAPSHOT, prefix, token], the snapshot is taken only once the token's subscription has arrived on
   * the XPUB (or after SYNC_WAIT_MS): the subscriber sent it after its prefix, on the same connection, so from
   * then on every sample reaches it live and none falls between the snapshot and the stream. At most
   * MAX_SYNC_WAITS requests wait at once; past that one is answered at once (as without a token). Answers go
   * out one at a time, in the order they became ready.
   */
  private async snapshotLoop(router: Router): Promise<void> {
    const writer = new BatchWriter(HEADER_BYTES + 255 + sampleBytes(32));
    let chain = Promise.resolve();
    let waiting = 0;
    let queued = 0;
    const answer = (rid: Buffer, prefix: string) => {
      queued++;
      chain = chain.then(async () => {
        try {
          for (const [topic, frame] of this.lastBatch) {
            if (!topic.startsWith(prefix)) continue;
            const b = new Batch(topic, frame);
            const last = b.sample(b.count - 1);
            await router.send([rid, Buffer.from(topic), encodeOne(writer, this.id, last)]);
          }
          await router.send([rid, Buffer.from('END')]);
          this.counters.snapshotsServed++;
        } catch {
          // closed, or the requester went (ROUTER_MANDATORY is off: nothing to do)
        }
        queued--;
      });
    };
    try {
      for (;;) {
        // Answers waiting to go are bounded: past MAX_SYNC_WAITS, requests wait in the ROUTER (its high-water mark).
        if (queued >= MAX_SYNC_WAITS) await chain;
        const [rid, verb, prefixFrame, tokenFrame] = await router.receive();
        if (!rid || verb?.toString() !== 'SNAPSHOT') continue;
        const prefix = prefixFrame?.toString('utf8') ?? '';
        const token = tokenFrame && tokenFrame.length > 0 && tokenFrame.length <= 64 ? SYNC_PREFIX + tokenFrame.toString('utf8') : undefined;
        if (!token || this.prefixes.has(token) || waiting >= MAX_SYNC_WAITS) {
          answer(rid, prefix);
          continue;
        }
        waiting++;
        void this.untilSubscribed(() => this.prefixes.has(token), SYNC_WAIT_MS).then(() => {
          waiting--;
          answer(rid, prefix);
        });
      }
    } catch {
      // closed
    }
  }
}
