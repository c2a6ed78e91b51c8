/**
 * zgossip (CZMQ's zgossip, the discovery Zyre uses where UDP broadcast does not pass), byte-compatible with
 * CZMQ 4.2 and Zyre's gossip mode (vectors `gossip-*` in ../shared/zre-vectors): a server (ROUTER) that keeps
 * a table of tuples (key, value, ttl) and clients (DEALER, one per seed) that publish their own and receive
 * everyone's. Zyre's tuple is (node UUID as 32 uppercase hex, its inbox endpoint).
 *
 * The protocol, as the reference runs it (vectors README rule 11):
 *   - a client opens with HELLO; the server answers with PUBLISH for every tuple it knows;
 *   - a PUBLISH from a client is stored and forwarded to every client (tuples can come back to their sender);
 *   - PING is answered with PONG; anything from a client that has not said HELLO, or that the server forgot
 *     (after `clientTimeout` of silence, 1 s by default), is answered with INVALID; a client that gets INVALID
 *     says HELLO again and publishes its tuples again.
 *
 * Beyond CZMQ, without breaking it: our tuples carry a `ttl` (seconds) that CZMQ fills with 0 and ignores; here
 * it is a lease — we republish ours every ttl/3, and a tuple with a ttl that nobody refreshed within it expires
 * from the view (`expire` fires), so a vanished node leaves it. Tuples with ttl 0 (Zyre C's) never expire.
 * Clients ping every 300 ms, so the server does not forget them. Any node may bind a server and connect to two
 * or three seeds: losing one seed does not split discovery.
 *
 * Bounds: at most `maxTuples` tuples (new ones past it are refused and counted), `maxClients` clients of the
 * server; keys and values are ZRE strings (≤ 255 bytes) and longstr (≤ 1 KiB here); malformed messages are
 * dropped and counted, never thrown.
 */
import { EventEmitter } from 'node:events';
import { Dealer, Router } from 'zeromq';
import { decodeGossip, encodeGossip, type GossipMessage } from './codec.ts';

export interface GossipOptions {
  /** `tcp://IP:PORT` to serve on. */
  bind?: string;
  /** Seeds to connect to, `tcp://IP:PORT` each. */
  connect?: string[];
  /** Lease of our own tuples, seconds (0: none, as CZMQ). Default 30. */
  ttl?: number;
  /** ms of silence after which the server forgets a client. Default 1000 (CZMQ's). */
  clientTimeout?: number;
  /** ms between our clients' PINGs. Default 300. */
  pingInterval?: number;
  maxTuples?: number;
  maxClients?: number;
}

export interface GossipStats {
  tuples: number;
  clients: number;
  published: number;
  received: number;
  malformed: number;
  invalid: number;
  expired: number;
  tuplesRefused: number;
  /** Messages dropped because a socket's outbox was full. */
  sendsDropped: number;
}

export interface GossipEvents {
  /** A tuple is new or changed its value. */
  tuple: [{ key: string; value: string; ttl: number }];
  /** A tuple's lease ran out. */
  expire: [{ key: string; value: string }];
}

interface Tuple {
  value: string;
  ttl: number;
  /** ms (monotonic) when it expires; Infinity for ttl 0. */
  until: number;
}

/**
 * Messages waiting for one socket: zeromq.js takes one send at a time per socket, so sends queue here (bounded;
 * past it the newest are dropped and counted) and go out in order.
 */
class Outbox {
  private readonly queue: Buffer[][] = [];
  private pumping = false;
  dropped = 0;

  constructor(private readonly socket: Dealer | Router, private readonly limit = 10_000) {}

  send(frames: Buffer[]): void {
    if (this.queue.length >= this.limit) {
      this.dropped++;
      return;
    }
    this.queue.push(frames);
    if (!this.pumping) void this.pump();
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      for (let m = this.queue.shift(); m; m = this.queue.shift()) {
        try {
          await this.socket.send(m);
        } catch (e) {
          // A seed away long enough to fill ZeroMQ's queue (send timeout 0): this one is dropped, counted.
          if ((e as { code?: string }).code !== 'EAGAIN') throw e;
          this.dropped++;
        }
      }
    } catch {
      this.queue.length = 0; // closed
    } finally {
      this.pumping = false;
    }
  }
}

const DEFAULTS = { ttl: 30, clientTimeout: 1000, pingInterval: 300, maxTuples: 4096, maxClients: 1024 };
const MAX_VALUE = 1024;
const now = (): number => performance.now();

export class Gossip extends EventEmitter<GossipEvents> {
  private readonly o: typeof DEFAULTS & GossipOptions;
  private server: Router | undefined;
  private serverOut: Outbox | undefined;
  private readonly seedOut = new Map<Dealer, Outbox>();
  private readonly clients = new Map<string, { rid: Buffer; seen: number }>();
  private readonly seeds: Dealer[] = [];
  private readonly tuples = new Map<string, Tuple>();
  private readonly own = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private republished = 0;
  private readonly loops: Promise<void>[] = [];
  private readonly counters = { published: 0, received: 0, malformed: 0, invalid: 0, expired: 0, tuplesRefused: 0 };

  /** Stores the options; opens nothing. */
  constructor(options: GossipOptions) {
    super();
    this.o = { ...DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) } as typeof DEFAULTS & GossipOptions;
  }

  /** Binds the server (if asked) and connects to the seeds. Rejects if the bind fails; then nothing stays open. */
  async start(): Promise<void> {
    if (this.o.bind) {
      const server = new Router({ linger: 0, sendTimeout: 0 });
      try {
        await server.bind(this.o.bind);
      } catch (e) {
        server.close();
        throw new Error(`cannot bind the gossip server on ${this.o.bind}: ${(e as Error).message}`);
      }
      this.server = server;
      this.serverOut = new Outbox(server);
      this.loops.push(this.serve(server));
    }
    for (const endpoint of this.o.connect ?? []) {
      const d = new Dealer({ linger: 0, sendTimeout: 0, reconnectInterval: 100, reconnectMaxInterval: 2000 });
      d.connect(endpoint);
      this.seeds.push(d);
      this.seedOut.set(d, new Outbox(d));
      this.loops.push(this.listen(d));
      this.greet(d);
    }
    this.timer = setInterval(() => this.tick(), this.o.pingInterval);
  }

  /** Publishes (or changes) one of our tuples, to our seeds and our server's clients. */
  publish(key: string, value: string): void {
    this.own.set(key, value);
    const ttl = this.o.ttl;
    this.store(key, value, ttl);
    this.forward({ type: 'PUBLISH', key, value, ttl });
  }

  /** The tuples known now (ours included). */
  view(): Map<string, string> {
    return new Map([...this.tuples].map(([k, t]) => [k, t.value]));
  }

  stats(): GossipStats {
    let dropped = this.serverOut?.dropped ?? 0;
    for (const o of this.seedOut.values()) dropped += o.dropped;
    return { ...this.counters, tuples: this.tuples.size, clients: this.clients.size, sendsDropped: dropped };
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.server?.close();
    for (const d of this.seeds) d.close();
    await Promise.all(this.loops);
    this.server = undefined;
    this.seeds.length = 0;
    this.seedOut.clear();
    this.serverOut = undefined;
    this.clients.clear();
  }

  // --- internals -----------------------------------------------------------------------------------------

  private greet(d: Dealer): void {
    this.seedOut.get(d)?.send(encodeGossip({ type: 'HELLO' }));
    for (const [key, value] of this.own) this.seedOut.get(d)?.send(encodeGossip({ type: 'PUBLISH', key, value, ttl: this.o.ttl }));
  }

  /**
   * Stores a tuple; emits `tuple` when it is new or changed. Returns whether to pass it on: new, changed, or a
   * refresh that moved its lease on by more than a sixth of the ttl (so a refresh that comes round a loop of
   * servers a moment later stops there). False too when the table is full.
   */
  private store(key: string, value: string, ttl: number): boolean {
    const old = this.tuples.get(key);
    if (!old && this.tuples.size >= this.o.maxTuples) {
      this.counters.tuplesRefused++;
      return false;
    }
    const until = ttl > 0 ? now() + ttl * 1000 : Infinity;
    this.tuples.set(key, { value, ttl, until });
    if (!old || old.value !== value) {
      this.emit('tuple', { key, value, ttl });
      return true;
    }
    return ttl > 0 && (old.until === Infinity || until - old.until > (ttl * 1000) / 6);
  }

  /** Passes a tuple on: to our server's clients and up to our seeds (except the seed it came from). */
  private forward(msg: GossipMessage, from?: Dealer): void {
    const frames = encodeGossip(msg);
    for (const c of this.clients.values()) this.serverOut?.send([c.rid, ...frames]);
    for (const d of this.seeds) if (d !== from) this.seedOut.get(d)?.send(frames);
  }

  private accept(msg: GossipMessage): boolean {
    if (msg.type !== 'PUBLISH') return false;
    if (Buffer.byteLength(msg.value) > MAX_VALUE) {
      this.counters.malformed++;
      return false;
    }
    this.counters.received++;
    return this.store(msg.key, msg.value, msg.ttl);
  }

  /** The server's side (vectors README rule 11). */
  private async serve(server: Router): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await server.receive();
      } catch {
        return;
      }
      const [rid, ...body] = frames;
      if (!rid) continue;
      let msg: GossipMessage;
      try {
        msg = decodeGossip(body);
      } catch {
        this.counters.malformed++;
        continue;
      }
      const id = rid.toString('hex');
      const client = this.clients.get(id);
      if (msg.type === 'HELLO') {
        if (!client && this.clients.size >= this.o.maxClients) continue;
        this.clients.set(id, { rid, seen: now() });
        for (const [key, t] of this.tuples) {
          this.serverOut?.send([rid, ...encodeGossip({ type: 'PUBLISH', key, value: t.value, ttl: t.ttl })]);
        }
        continue;
      }
      if (!client) {
        this.counters.invalid++;
        this.serverOut?.send([rid, ...encodeGossip({ type: 'INVALID' })]);
        continue;
      }
      client.seen = now();
      if (msg.type === 'PING') this.serverOut?.send([rid, ...encodeGossip({ type: 'PONG' })]);
      else if (msg.type === 'PUBLISH') {
        this.counters.published++;
        // New, changed or a fresh refresh: on to every client (a lease is kept alive by refreshes at every hop).
        if (this.accept(msg)) this.forward(msg);
      }
    }
  }

  /** A client's side: what a seed's server sends us. */
  private async listen(d: Dealer): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await d.receive();
      } catch {
        return;
      }
      let msg: GossipMessage;
      try {
        msg = decodeGossip(frames);
      } catch {
        this.counters.malformed++;
        continue;
      }
      if (msg.type === 'INVALID') this.greet(d); // the server forgot us (or restarted): start again
      else if (msg.type === 'PUBLISH' && this.accept(msg)) this.forward(msg, d);
    }
  }

  private tick(): void {
    const t = now();
    for (const d of this.seeds) this.seedOut.get(d)?.send(encodeGossip({ type: 'PING' }));
    for (const [id, c] of this.clients) if (t - c.seen > this.o.clientTimeout) this.clients.delete(id);
    for (const [key, tuple] of this.tuples) {
      if (tuple.until > t || this.own.has(key)) continue;
      this.tuples.delete(key);
      this.counters.expired++;
      this.emit('expire', { key, value: tuple.value });
    }
    // Our leases: republish every ttl/3.
    if (this.o.ttl > 0 && t - this.republished >= (this.o.ttl * 1000) / 3) {
      this.republished = t;
      for (const [key, value] of this.own) this.publish(key, value);
    }
  }
}
