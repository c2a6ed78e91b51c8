/**
 * What the web view keeps and streams, independent of HTTP: a bounded history per telemetry topic, and a
 * numbered log of events that live clients follow by Server-Sent Events and resume from with Last-Event-ID.
 *
 * Bounds (each counted when hit):
 * - a topic keeps its last `recent` samples, and one average per minute for the last 24 h before that; at most
 *   `maxTopics` topics have a history (the one updated longest ago goes);
 * - the event log keeps the last {@link REPLAY_EVENTS} events or {@link REPLAY_BYTES} bytes, whichever is less: a
 *   client that comes back later than that is told to load the state again (a `reset` event). Of the events that
 *   carry a whole state (the view's `services` and `peers`), only the latest of each is kept: an older one tells a
 *   resuming client nothing the latest does not. (Kept in full, the services' counters, which change every
 *   second, filled the log to its 2,000 events in about 33 minutes on an idle device, with nobody looking.)
 * - each client has a queue of at most {@link CLIENT_QUEUE_BYTES} bytes behind its socket: a client slower than
 *   that is disconnected (its browser reconnects and resumes from the log, or reloads).
 */

/** Events kept for clients that reconnect. */
export const REPLAY_EVENTS = 2000;
/** Bytes of events kept for clients that reconnect. */
export const REPLAY_BYTES = 2 * 1024 * 1024;
/** Bytes waiting behind one client's socket before the client is dropped as too slow. */
export const CLIENT_QUEUE_BYTES = 1024 * 1024;
const HEARTBEAT = Buffer.from(': \n\n');
/** Minute averages kept per topic (24 h). */
const MINUTES = 24 * 60;

/** A ring of (time, value) pairs in two Float64Arrays: no allocation per point. */
class Ring {
  private readonly ts: Float64Array;
  private readonly vs: Float64Array;
  private head = 0;
  size = 0;

  constructor(readonly capacity: number) {
    this.ts = new Float64Array(capacity);
    this.vs = new Float64Array(capacity);
  }

  /** Adds a point; returns the one pushed out when full (or undefined). */
  push(t: number, v: number): [number, number] | undefined {
    let out: [number, number] | undefined;
    if (this.size === this.capacity) out = [this.ts[this.head]!, this.vs[this.head]!];
    else this.size++;
    this.ts[this.head] = t;
    this.vs[this.head] = v;
    this.head = (this.head + 1) % this.capacity;
    return out;
  }

  last(): number | undefined {
    return this.size ? this.ts[(this.head - 1 + this.capacity) % this.capacity] : undefined;
  }

  /** Oldest first, into the given arrays. */
  copyTo(ts: number[], vs: (number | null)[]): void {
    const start = (this.head - this.size + this.capacity) % this.capacity;
    for (let i = 0; i < this.size; i++) {
      const k = (start + i) % this.capacity;
      ts.push(this.ts[k]!);
      const v = this.vs[k]!;
      vs.push(Number.isNaN(v) ? null : v);
    }
  }
}

/** One topic's history: the recent samples, and minute averages of the samples older than those. */
export class TopicHistory {
  private readonly recent: Ring;
  private readonly minutes = new Ring(MINUTES);
  private minute = -1;
  private sum = 0;
  private count = 0;
  updated = 0;
  value: number | undefined;
  status = 0;
  /** The publisher (32 hex digits) of the last sample. */
  publisher = '';

  constructor(readonly topic: string, public unit: string, recent: number) {
    this.recent = new Ring(recent);
  }

  add(ts: number, value: number, status: number): void {
    this.updated = ts;
    this.status = status;
    this.value = status === 0 ? value : undefined;
    const old = this.recent.push(ts / 1000, status === 0 ? value : NaN);
    if (old) this.fold(old[0], old[1]);
  }

  /** A sample leaving the recent ring goes into its minute's average. */
  private fold(t: number, v: number): void {
    const m = Math.floor(t / 60);
    if (m !== this.minute) {
      if (this.count > 0) this.minutes.push(this.minute * 60 + 30, this.sum / this.count);
      this.minute = m;
      this.sum = this.count = 0;
    }
    if (!Number.isNaN(v)) {
      this.sum += v;
      this.count++;
    }
  }

  /** Times in seconds (as uPlot takes them) and values (null for a failed read), oldest first. */
  points(): [number[], (number | null)[]] {
    const ts: number[] = [];
    const vs: (number | null)[] = [];
    this.minutes.copyTo(ts, vs);
    if (this.count > 0) {
      ts.push(this.minute * 60 + 30);
      vs.push(this.sum / this.count);
    }
    this.recent.copyTo(ts, vs);
    return [ts, vs];
  }
}

/** Every topic's history, at most `maxTopics` of them. */
export class Histories {
  private readonly topics = new Map<string, TopicHistory>();
  /** Topics whose history was dropped to make room for a new one. */
  evicted = 0;

  constructor(private readonly recent: number, private readonly maxTopics: number) {}

  /** Adds a sample; returns true when the topic is new. */
  add(topic: string, unit: string, ts: number, value: number, status: number, publisher = ''): boolean {
    let h = this.topics.get(topic);
    const fresh = !h;
    if (!h) {
      if (this.topics.size >= this.maxTopics) this.evictOldest();
      h = new TopicHistory(topic, unit, this.recent);
      this.topics.set(topic, h);
    }
    h.unit = unit;
    h.publisher = publisher;
    h.add(ts, value, status);
    return fresh;
  }

  private evictOldest(): void {
    let oldest: TopicHistory | undefined;
    for (const h of this.topics.values()) if (!oldest || h.updated < oldest.updated) oldest = h;
    if (oldest) {
      this.topics.delete(oldest.topic);
      this.evicted++;
    }
  }

  get(topic: string): TopicHistory | undefined {
    return this.topics.get(topic);
  }

  get size(): number {
    return this.topics.size;
  }

  values(): IterableIterator<TopicHistory> {
    return this.topics.values();
  }
}

/**
 * The string's UTF-8 bytes in a buffer of their own. `Buffer.from(string)` takes a slice of a shared pool (64 KB
 * in Node 24) for all but large strings, and a kept slice keeps its whole pool: the log's 2 MB of events held
 * 8.2 MB of pools under bench/soak.ts's load (a heap snapshot), and 2,000 small events could hold 2,000 pools.
 */
function exactBuffer(text: string): Buffer {
  const b = Buffer.allocUnsafeSlow(Buffer.byteLength(text));
  b.write(text);
  return b;
}

/** What {@link EventLog} writes to: an HTTP response, or anything with the same three methods. */
export interface EventSink {
  write(chunk: Buffer): boolean;
  /** Bytes the sink itself holds, not yet handed to the kernel (an HTTP response's socket buffer). */
  readonly writableLength?: number;
  once(event: 'drain', l: () => void): unknown;
  destroy(): void;
}

/** One live client: its socket, and what waits behind it (bounded). */
class Client {
  private readonly queue: Buffer[] = [];
  queued = 0;
  private blocked = false;
  dropped = false;

  constructor(readonly sink: EventSink, private readonly onSlow: () => void) {}

  send(chunk: Buffer): void {
    if (this.dropped) return;
    if (this.blocked) {
      this.queue.push(chunk);
      this.queued += chunk.length;
      if (this.queued > CLIENT_QUEUE_BYTES) this.drop();
      return;
    }
    if (!this.sink.write(chunk)) {
      this.blocked = true;
      this.sink.once('drain', () => this.flush());
    }
  }

  private flush(): void {
    this.blocked = false;
    while (this.queue.length && !this.dropped) {
      const c = this.queue.shift()!;
      this.queued -= c.length;
      if (!this.sink.write(c)) {
        this.blocked = true;
        this.sink.once('drain', () => this.flush());
        return;
      }
    }
  }

  drop(): void {
    if (this.dropped) return;
    this.dropped = true;
    this.queue.length = 0;
    this.queued = 0;
    this.onSlow();
    this.sink.destroy();
  }
}

export interface EventLogStats {
  clients: number;
  /** Bytes waiting for the clients now: their queues and what their sockets hold (each at most CLIENT_QUEUE_BYTES plus the socket's). */
  clientBytesQueued: number;
  /** Clients disconnected because their queue passed CLIENT_QUEUE_BYTES. */
  slowClientsDropped: number;
  /** Clients that resumed from the log (Last-Event-ID within it). */
  resumed: number;
  /** Clients that asked for events older than the log holds, told to load the state again. */
  resets: number;
  eventsSent: number;
}

/**
 * Numbered events, kept for resumption and sent to every live client: each is serialised and encoded once,
 * and the same bytes are written to every socket (nothing is copied per client).
 */
export class EventLog {
  private seq = 0;
  private readonly kept: { id: number; text: Buffer }[] = [];
  private keptBytes = 0;
  /** The newest event the bounds pushed out of the log: a client that has seen it can resume. */
  private evictedThrough = 0;
  /** The id of the kept event of each whole-state kind. */
  private readonly lastState = new Map<string, number>();
  private readonly clients = new Set<Client>();
  private readonly counters = { slowClientsDropped: 0, resumed: 0, resets: 0, eventsSent: 0 };

  /** `states`: the events whose data is a whole state, of which the log keeps only the latest of each. */
  constructor(private readonly states: readonly string[] = []) {}

  /** The id of the last event: a state read now is "as of" this id. */
  get last(): number {
    return this.seq;
  }

  /** Appends an event and sends it to every client. `data` is serialised once. */
  publish(event: string, data: unknown): void {
    this.publishJson(event, JSON.stringify(data));
  }

  /** {@link publish} for data already serialised (one line of JSON). */
  publishJson(event: string, json: string): void {
    const id = ++this.seq;
    const text = exactBuffer(`id: ${id}\nevent: ${event}\ndata: ${json}\n\n`);
    if (this.states.includes(event)) {
      const older = this.lastState.get(event);
      if (older !== undefined) this.forget(older);
      this.lastState.set(event, id);
    }
    this.kept.push({ id, text });
    this.keptBytes += text.length;
    while (this.kept.length > REPLAY_EVENTS || (this.keptBytes > REPLAY_BYTES && this.kept.length > 1)) {
      const gone = this.kept.shift()!;
      this.keptBytes -= gone.text.length;
      this.evictedThrough = gone.id;
    }
    for (const c of this.clients) c.send(text);
    this.counters.eventsSent += this.clients.size;
  }

  /**
   * Adds a client that has seen every event up to `after` (its Last-Event-ID, or the id of the state it
   * loaded): it gets the events since then, or a `reset` when the log no longer holds them all. Returns the
   * function that removes it (call it when the socket closes).
   */
  attach(sink: EventSink, after: number | undefined): () => void {
    const client = new Client(sink, () => {
      this.counters.slowClientsDropped++;
      this.clients.delete(client);
    });
    client.send(Buffer.from(': starling\nretry: 2000\n\n'));
    if (after !== undefined && after <= this.seq) {
      if (after >= this.evictedThrough) {
        if (after < this.seq) this.counters.resumed++;
        for (const e of this.kept) if (e.id > after) client.send(e.text);
      } else {
        this.counters.resets++;
        client.send(Buffer.from(`id: ${this.seq}\nevent: reset\ndata: {}\n\n`));
      }
    } else if (after !== undefined) {
      // An id from before a restart of this process: its events are gone.
      this.counters.resets++;
      client.send(Buffer.from(`id: ${this.seq}\nevent: reset\ndata: {}\n\n`));
    }
    this.clients.add(client);
    return () => this.clients.delete(client);
  }

  /** Drops the kept event `id` (superseded), if the bounds have not already: the log is in id order. */
  private forget(id: number): void {
    let [lo, hi] = [0, this.kept.length - 1];
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const k = this.kept[mid]!.id;
      if (k === id) {
        this.keptBytes -= this.kept[mid]!.text.length;
        this.kept.splice(mid, 1);
        return;
      }
      if (k < id) lo = mid + 1;
      else hi = mid - 1;
    }
  }

  /** A comment line to every client, so proxies and browsers keep idle streams open. */
  heartbeat(): void {
    for (const c of this.clients) c.send(HEARTBEAT);
  }

  /** Disconnects every client. */
  close(): void {
    for (const c of this.clients) c.sink.destroy();
    this.clients.clear();
  }

  stats(): EventLogStats {
    let clientBytesQueued = 0;
    for (const c of this.clients) clientBytesQueued += c.queued + (c.sink.writableLength ?? 0);
    return { clients: this.clients.size, clientBytesQueued, ...this.counters };
  }
}
