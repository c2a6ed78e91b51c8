/**
 * The telemetry subscriber: one SUB socket per publisher endpoint it connects to (tcp, ipc, epgm), batches
 * decoded in place, loss detected per (connection, publisher, topic) from the sample sequence numbers, and late
 * joining served by each publisher's snapshot (FORMAT.md, "Late joiners").
 *
 * Everything that arrives is checked against FORMAT.md before it is used (topic 1–255 bytes of UTF-8 without
 * NUL, the batch layout, a finite base time between 1970 and 2100); what fails is dropped and counted in
 * `malformed`, with a log line per connection at most every 10 s (`onProblem`). Sequence state is kept per
 * connection, so a host cannot advance or reset the sequence of a publisher it is not: a batch that claims
 * another publisher's id only moves the state of the connection it came on.
 *
 * Events fire synchronously from the receive loops:
 *   - `batch` (batch, from): samples `from`..`count-1` of `batch` are new (earlier ones were already
 *     delivered, e.g. by a snapshot); snapshot batches come first for a publisher that was just connected.
 *   - `gap` ({publisher, topic, lost}): `lost` samples of that topic never arrived.
 */
import { EventEmitter } from 'node:events';
import { isUtf8 } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { Dealer, Subscriber as ZmqSubscriber, capability } from 'zeromq';
import { BoundedQueue } from '../queue.ts';
import { ProblemLog, type ProblemSink } from '../problems.ts';
import { Batch, SYNC_PREFIX, TelemetryFormatError } from './sample.ts';

export interface SubscriberOptions {
  /** Topic prefix to receive; '' (default) for everything. */
  prefix?: string;
  /** Live batches of one connection held until its snapshot ends. Default 10000. */
  holdLimit?: number;
  /** The whole snapshot must arrive within this long, or the rest of it is given up. Default 2000 ms. */
  snapshotTimeout?: number;
  /** Topics one snapshot may hold; past it the snapshot is cut short (counted as a timeout). Default 4096. */
  snapshotLimit?: number;
  /** Publisher endpoints connected at once; more are refused. Default 256. */
  maxConnections?: number;
  /** (connection, publisher, topic) streams whose sequence is tracked; the least recent is forgotten past it. Default 65536. */
  maxStreams?: number;
  receiveHighWaterMark?: number;
  /** epgm receive rate in kbit/s (ZMQ_RATE), which also sizes PGM's receive window; match the publisher's. Default 10000. */
  rate?: number;
  /** Hears each kind of bad input, rate-limited per connection. */
  onProblem?: ProblemSink;
  /** Secure mode: our key pair; each connection then needs the publisher's key (from its HELLO's X-PUBLICKEY). */
  curve?: { publicKey: string; secretKey: string };
}

export interface SubscriberStats {
  batchesReceived: number;
  samplesReceived: number;
  /** Samples that never arrived (sequence gaps). */
  samplesLost: number;
  gaps: number;
  /** Samples received twice (e.g. both in a snapshot and live), not delivered again. */
  duplicates: number;
  /** Messages that were not valid batches (FORMAT.md), dropped. */
  malformed: number;
  /** Live batches dropped because the hold queue was full while a snapshot was pending. */
  heldDropped: number;
  snapshots: number;
  /** Snapshots given up: no END within `snapshotTimeout`, or more than `snapshotLimit` topics. */
  snapshotTimeouts: number;
  /** Endpoints refused because `maxConnections` were connected. */
  connectionsRefused: number;
}

export interface SubscriberEvents {
  batch: [Batch, number];
  gap: [{ publisher: string; topic: string; lost: number }];
}

export class SubscriberError extends Error {
  override name = 'SubscriberError';
}

/** One publisher endpoint: its own SUB socket, so what arrives on it is known to come from it. */
interface Connection {
  endpoint: string;
  /** The topic prefix this connection subscribed to. */
  prefix: string;
  socket: ZmqSubscriber;
  loop: Promise<void>;
  /** Live batches held while this connection's snapshot is pending. */
  held: BoundedQueue<Batch> | undefined;
}

const DEFAULTS = {
  prefix: '', holdLimit: 10_000, snapshotTimeout: 2000, snapshotLimit: 4096, maxConnections: 256, maxStreams: 65_536, receiveHighWaterMark: 1000, rate: 10_000,
};

/** Latest base time a batch may carry: 2100-01-01 (ms since the epoch). A board without a clock may say 1970. */
const MAX_BASE_TIME = 4_102_444_800_000;

/**
 * Checks a received [topic, batch] message against FORMAT.md and decodes it; throws
 * {@link TelemetryFormatError} saying what is wrong. Cost: one UTF-8 check of the topic, one pass over the header.
 */
export function parseBatch(topic: Buffer | undefined, frame: Buffer | undefined): Batch {
  if (!topic || !frame) throw new TelemetryFormatError('expected two frames: topic, batch');
  if (topic.length === 0 || topic.length > 255) throw new TelemetryFormatError(`topic of ${topic.length} bytes (1 to 255)`);
  if (topic.includes(0)) throw new TelemetryFormatError('topic holds a NUL byte');
  if (!isUtf8(topic)) throw new TelemetryFormatError('topic is not valid UTF-8');
  const batch = new Batch(topic.toString('utf8'), frame);
  if (!(batch.base >= 0 && batch.base <= MAX_BASE_TIME)) throw new TelemetryFormatError(`base time ${batch.base} is not between 1970 and 2100`);
  return batch;
}

export class Subscriber extends EventEmitter<SubscriberEvents> {
  private readonly opts: typeof DEFAULTS & SubscriberOptions;
  private started = false;
  /** Next expected sequence per connection + '\n' + publisher + '\n' + topic. */
  private readonly expected = new Map<string, number>();
  private readonly connections = new Map<string, Connection>();
  private readonly snapshotDealers = new Set<Dealer>();
  private paused: Promise<void> | undefined;
  private resumeFn: (() => void) | undefined;
  private readonly problems: ProblemLog;
  private readonly counters: SubscriberStats = {
    batchesReceived: 0, samplesReceived: 0, samplesLost: 0, gaps: 0, duplicates: 0, malformed: 0, heldDropped: 0, snapshots: 0, snapshotTimeouts: 0,
    connectionsRefused: 0,
  };

  /** Stores the options; opens nothing. */
  constructor(options: SubscriberOptions = {}) {
    super();
    this.opts = { ...DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) } as typeof DEFAULTS & SubscriberOptions;
    this.problems = new ProblemLog(options.onProblem);
  }

  /** Makes the subscriber ready to connect publishers ({@link connect}); sockets open per connection. */
  start(): void {
    this.started = true;
  }

  /**
   * Connects to a publisher endpoint on a SUB socket of its own, subscribed to the prefix. With
   * `snapshotEndpoint`, first asks that publisher for the last value of each topic under the prefix, holding
   * this connection's live batches meanwhile (others flow on); resolves when the snapshot was delivered or
   * given up. Connecting an endpoint twice does nothing. Rejects past `maxConnections` (counted). epgm
   * endpoints need a zeromq.js with OpenPGM (see image/setup.sh).
   */
  async connect(endpoint: string, snapshotEndpoint?: string, serverKey?: string, only?: string): Promise<void> {
    // `only`: this publisher's own prefix (secure mode: its topics are pinned to its key); the connection then
    // takes the narrower of it and ours, and nothing when they do not overlap.
    let prefix = this.opts.prefix;
    if (only !== undefined) {
      if (only.startsWith(prefix)) prefix = only;
      else if (!prefix.startsWith(only)) return;
    }
    if (!this.started) throw new SubscriberError('subscriber not started');
    const c = this.opts.curve;
    if (c && !serverKey) throw new SubscriberError(`cannot follow ${endpoint} securely: the publisher's key is not known`);
    if (this.connections.has(endpoint)) return;
    if (/^e?pgm:/.test(endpoint) && !capability.pgm) {
      throw new SubscriberError('epgm is not available in this zeromq.js build; run `bash image/setup.sh` to build it against the system libzmq');
    }
    if (this.connections.size >= this.opts.maxConnections) {
      this.counters.connectionsRefused++;
      throw new SubscriberError(`cannot follow ${endpoint}: ${this.opts.maxConnections} publishers are connected already (maxConnections)`);
    }
    const client = c && serverKey ? { curveServerKey: serverKey, curvePublicKey: c.publicKey, curveSecretKey: c.secretKey } : {};
    const socket = new ZmqSubscriber({ linger: 0, receiveHighWaterMark: this.opts.receiveHighWaterMark, rate: this.opts.rate, ...client });
    socket.subscribe(prefix);
    const conn: Connection = { endpoint, prefix, socket, loop: Promise.resolve(), held: snapshotEndpoint ? new BoundedQueue(this.opts.holdLimit) : undefined };
    try {
      // Subscribe to the live stream before asking for the snapshot, so nothing falls between the two.
      socket.connect(endpoint);
    } catch (e) {
      socket.close();
      throw new SubscriberError(`cannot connect to ${endpoint}: ${(e as Error).message}`);
    }
    this.connections.set(endpoint, conn);
    conn.loop = this.receiveLoop(conn);
    if (snapshotEndpoint) await this.requestSnapshot(conn, snapshotEndpoint, client);
  }

  disconnect(endpoint: string): void {
    const conn = this.connections.get(endpoint);
    if (!conn) return;
    this.connections.delete(endpoint);
    conn.socket.close();
  }

  /** The endpoints connected now. */
  endpoints(): string[] {
    return [...this.connections.keys()];
  }

  /** Stops reading: ZeroMQ then holds messages up to its high-water mark and the publishers go mute. */
  pause(): void {
    if (!this.paused) this.paused = new Promise((r) => (this.resumeFn = r));
  }

  resume(): void {
    this.resumeFn?.();
    this.paused = undefined;
    this.resumeFn = undefined;
  }

  stats(): SubscriberStats {
    return { ...this.counters };
  }

  async stop(): Promise<void> {
    this.started = false;
    this.resume();
    for (const d of this.snapshotDealers) d.close();
    this.snapshotDealers.clear();
    const loops = [...this.connections.values()].map((c) => (c.socket.close(), c.loop));
    this.connections.clear();
    await Promise.all(loops);
  }

  private malformed(conn: Connection | undefined, where: string, e: unknown): void {
    this.counters.malformed++;
    const endpoint = conn?.endpoint ?? where;
    this.problems.note(`malformed ${endpoint}`, `telemetry from ${endpoint}${where !== endpoint ? ` (${where})` : ''} dropped: ${(e as Error).message}`);
  }

  /** FORMAT.md "Late joiners": one request, topics until END, all within one deadline and a topic bound. */
  private async requestSnapshot(conn: Connection, endpoint: string, client: Record<string, unknown>): Promise<void> {
    const deadline = performance.now() + this.opts.snapshotTimeout;
    const dealer = new Dealer({ linger: 0, ...client });
    this.snapshotDealers.add(dealer);
    const snapshot: Batch[] = [];
    let complete = false;
    // The sync token (FORMAT.md): subscribed on this connection after the prefix, so once the publisher has
    // seen it, the prefix's subscription is in effect there too, and it takes the snapshot only then. Without
    // it a sample published after the snapshot but before the subscription arrived was in neither (a gap).
    // epgm carries no subscriptions: no token there.
    const token = /^e?pgm:/.test(conn.endpoint) ? undefined : randomBytes(8).toString('hex');
    if (token) conn.socket.subscribe(SYNC_PREFIX + token);
    try {
      dealer.connect(endpoint);
      await dealer.send(token ? ['SNAPSHOT', conn.prefix, token] : ['SNAPSHOT', conn.prefix]);
      while (snapshot.length <= this.opts.snapshotLimit) {
        const left = deadline - performance.now();
        if (left <= 0) break;
        dealer.receiveTimeout = Math.ceil(left);
        const [topic, frame, ...rest] = await dealer.receive();
        if (!frame && rest.length === 0 && topic?.toString() === 'END') {
          complete = true;
          break;
        }
        try {
          const b = parseBatch(topic, frame);
          if (!b.topic.startsWith(conn.prefix)) throw new TelemetryFormatError(`topic '${b.topic.slice(0, 60)}' is outside the prefix asked for`);
          snapshot.push(b);
        } catch (e) {
          this.malformed(conn, `snapshot ${endpoint}`, e);
        }
      }
    } catch {
      // timed out or closed: carry on with the live stream alone
    } finally {
      dealer.close();
      this.snapshotDealers.delete(dealer);
      if (token && !conn.socket.closed) conn.socket.unsubscribe(SYNC_PREFIX + token);
    }
    if (complete) this.counters.snapshots++;
    else {
      this.counters.snapshotTimeouts++;
      this.problems.note(`snapshot ${endpoint}`, `snapshot from ${endpoint} given up: ${snapshot.length > this.opts.snapshotLimit ? `over ${this.opts.snapshotLimit} topics` : `no END within ${this.opts.snapshotTimeout} ms`}; live telemetry goes on`);
    }
    const held = conn.held;
    conn.held = undefined;
    if (this.connections.get(conn.endpoint) !== conn) return; // disconnected meanwhile
    if (complete) for (const b of snapshot) this.deliver(conn, b);
    if (!held) return;
    for (let b = held.shift(); b; b = held.shift()) this.deliver(conn, b);
    this.counters.heldDropped += held.dropped;
  }

  private async receiveLoop(conn: Connection): Promise<void> {
    const socket = conn.socket;
    while (!socket.closed) {
      if (this.paused) await this.paused;
      let frames: Buffer[];
      try {
        frames = await socket.receive();
      } catch {
        return; // closed
      }
      let batch: Batch;
      try {
        if (frames.length !== 2) throw new TelemetryFormatError(`${frames.length} frames (expected topic, batch)`);
        batch = parseBatch(frames[0], frames[1]);
      } catch (e) {
        this.malformed(conn, conn.endpoint, e);
        continue;
      }
      this.counters.batchesReceived++;
      if (conn.held) {
        conn.held.push(batch);
        continue;
      }
      this.deliver(conn, batch);
    }
  }

  /** Sequence bookkeeping (FORMAT.md "Sequence numbers and loss"), then the `batch` event for what is new. */
  private deliver(conn: Connection, batch: Batch): void {
    const key = conn.endpoint + '\n' + batch.publisher + '\n' + batch.topic;
    const want = this.expected.get(key);
    let from = 0;
    if (want !== undefined && batch.first !== want) {
      const ahead = (batch.first - want) >>> 0;
      if (ahead < 0x80000000) {
        this.counters.gaps++;
        this.counters.samplesLost += ahead;
        this.emit('gap', { publisher: batch.publisher, topic: batch.topic, lost: ahead });
      } else {
        const behind = (want - batch.first) >>> 0; // samples of this batch already delivered
        if (behind >= batch.count) {
          this.counters.duplicates += batch.count;
          return;
        }
        this.counters.duplicates += behind;
        from = behind;
      }
    }
    if (want === undefined && this.expected.size >= this.opts.maxStreams) this.expected.delete(this.expected.keys().next().value as string);
    this.expected.set(key, (batch.first + batch.count) >>> 0);
    this.counters.samplesReceived += batch.count - from;
    this.emit('batch', batch, from);
  }
}
