/**
 * Logs across the mesh. Each node publishes the entries of its RAM log ring on a ZeroMQ PUB socket of its own
 * (not the ZRE mailboxes, which carry the mesh's own traffic), advertised in its HELLO as `X-LOGS`
 * (`tcp://IPv4:port`, on the host of its ZRE inbox). Nothing is written to disk on either side.
 *
 * Wire: two frames, `L` and the JSON `{"n": seq, "t": ms, "l": level, "s": service, "m": message}`. `n` counts
 * every entry of the ring from 0 — also those this node did not send (past its rate, `rate` lines a second
 * with a burst of twice that) — so a reader sees each gap as a jump and can mark it. The PUB socket keeps at
 * most 1,000 entries for a slow reader (ZeroMQ's high-water mark), then drops, which is a gap too.
 *
 * {@link MeshLogs} is the reading side: one SUB socket per peer that advertises X-LOGS (at most
 * {@link MAX_LOG_PEERS}), and the last `capacity` lines of all of them in RAM, each with the peer's name and
 * UUID as this node knows them (never what the line claims), a `gap` line before the first after a jump.
 * Secure mode: the PUB is a CURVE server for keys with the read role, as telemetry is.
 */
import { Publisher as ZmqPublisher, Subscriber as ZmqSubscriber } from 'zeromq';
import type { LogEntry, LogRing } from './log.ts';
import { BoundedQueue } from '../queue.ts';
import { curveServer, type CurveServer } from '../security/zap.ts';
import type { PeerInfo, ZreNode } from '../zre/node.ts';

export const HEADER_LOGS = 'X-LOGS';
/** Peers whose logs are followed at once, at most. */
export const MAX_LOG_PEERS = 256;
/** The largest log frame read from a peer; longer ones are dropped (counted). */
const MAX_FRAME = 16 * 1024;

/** One line of the mesh's logs, or (with `gap`) the mark of `gap` lines a node logged that did not arrive. */
export interface MeshLogLine {
  node: string;
  uuid: string;
  seq: number;
  ts: number;
  level: string;
  service: string;
  msg: string;
  gap?: number;
}

type ServerCurve = { publicKey: string; secretKey: string; allows(k: string): boolean; refused?(r: { publicKey: string; address?: string; why: string }): void; zapDomain: string };

/** The publishing side: this node's ring on the mesh. */
export class LogStream {
  private socket: ZmqPublisher | undefined;
  private off: (() => void) | undefined;
  private seq = 0;
  private tokens: number;
  private refilled = Date.now();
  private curve: CurveServer | undefined;
  endpoint: string | undefined;
  private readonly counters = { sent: 0, rateLimited: 0, queueDropped: 0, refused: 0 };
  private readonly queue = new BoundedQueue<string>(1000);
  private pumping = false;

  /** `rate`: lines a second sent at most (a burst of twice that). */
  constructor(private readonly ring: LogRing, private readonly rate = 50, private readonly secure?: ServerCurve) {
    this.tokens = rate * 2;
  }

  stats(): Record<string, number> {
    return { ...this.counters, seq: this.seq };
  }

  /** Binds on `address` (an IPv4 address, any port) and starts sending; returns the endpoint to advertise. */
  async bind(address: string): Promise<string> {
    await this.close();
    const c = this.secure;
    if (c) {
      this.curve ??= await curveServer(c, c.zapDomain, c.allows, (key, addr) => {
        this.counters.refused++;
        c.refused?.({ publicKey: key, address: addr, why: 'log subscription' });
      });
    }
    const socket = new ZmqPublisher({ linger: 0, sendHighWaterMark: 1000, ...(this.curve?.options ?? {}) });
    await socket.bind(`tcp://${address}:*`);
    this.socket = socket;
    this.endpoint = socket.lastEndpoint ?? undefined;
    this.off ??= this.ring.follow((e) => this.send(e));
    return this.endpoint!;
  }

  private send(e: LogEntry): void {
    const n = this.seq++;
    const now = Date.now();
    this.tokens = Math.min(this.rate * 2, this.tokens + ((now - this.refilled) * this.rate) / 1000);
    this.refilled = now;
    if (this.tokens < 1) {
      this.counters.rateLimited++;
      return;
    }
    this.tokens--;
    if (!this.socket) return;
    // One send at a time (zeromq.js allows no more); a full queue drops, and the reader sees the jump in n.
    if (!this.queue.push(JSON.stringify({ n, t: e.ts, l: e.level, s: e.service, m: e.msg.slice(0, 4096) }))) this.counters.queueDropped++;
    if (!this.pumping) void this.pump();
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      for (let line = this.queue.shift(); line !== undefined && this.socket; line = this.queue.shift()) {
        await this.socket.send(['L', line]);
        this.counters.sent++;
      }
    } catch {
      // closed meanwhile
    } finally {
      this.pumping = false;
    }
  }

  /**
   * Stops sending and closes the socket, and gives up its place behind the ZAP handler (a registration left
   * there keeps the handler's socket, and so the process, alive). bind() opens it all again.
   */
  async close(): Promise<void> {
    this.off?.();
    this.off = undefined;
    const s = this.socket;
    this.socket = undefined;
    this.endpoint = undefined;
    s?.close();
    this.curve?.release();
    this.curve = undefined;
  }
}

/** The host part of `tcp://IPv4:port`, or undefined. */
const tcpHost = (endpoint: string): string | undefined => /^tcp:\/\/(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(endpoint)?.[1];

interface Followed {
  socket: ZmqSubscriber;
  endpoint: string;
}

/** The reading side: every peer's log lines, merged, in a bounded ring. */
export class MeshLogs {
  private readonly lines: BoundedQueue<MeshLogLine>;
  private readonly followed = new Map<string, Followed>();
  /** The last seq heard from each peer (kept across EXIT and ENTER, so a return after a gap is marked). */
  private readonly last = new Map<string, number>();
  private readonly listeners = new Set<(l: MeshLogLine) => void>();
  private offNode: (() => void) | undefined;
  private readonly counters = { received: 0, gaps: 0, missed: 0, malformed: 0, peersRefused: 0, evicted: 0, openFailed: 0 };

  constructor(capacity = 5000, private readonly curve?: { publicKey: string; secretKey: string }, private readonly onProblem?: (m: string) => void) {
    this.lines = new BoundedQueue(capacity);
  }

  stats(): Record<string, number> {
    return { ...this.counters, peers: this.followed.size };
  }

  /** Follows every peer of `node` that advertises X-LOGS, now and as they come and go. */
  start(node: ZreNode): void {
    const onEnter = (p: PeerInfo) => this.connect(node, p);
    const onExit = ({ peer }: { peer: string }) => this.disconnect(peer);
    node.on('enter', onEnter);
    node.on('exit', onExit);
    for (const p of node.peerList()) onEnter(p);
    this.offNode = () => {
      node.off('enter', onEnter);
      node.off('exit', onExit);
    };
  }

  stop(): void {
    this.offNode?.();
    this.offNode = undefined;
    for (const peer of [...this.followed.keys()]) this.disconnect(peer);
  }

  /** The last `count` lines, oldest first by time. */
  tail(count: number): MeshLogLine[] {
    return [...this.lines].sort((a, b) => a.ts - b.ts).slice(-count);
  }

  /** Calls `listener` for each new line (and gap mark); returns the function that stops it. */
  follow(listener: (l: MeshLogLine) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private push(l: MeshLogLine): void {
    if (!this.lines.push(l)) {
      this.lines.shift();
      this.counters.evicted++;
      this.lines.push(l);
    }
    for (const f of this.listeners) f(l);
  }

  private connect(node: ZreNode, p: PeerInfo): void {
    const endpoint = p.headers[HEADER_LOGS];
    if (!endpoint || this.followed.has(p.peer)) return;
    const host = tcpHost(p.endpoint);
    if (!host || tcpHost(endpoint) !== host || this.followed.size >= MAX_LOG_PEERS) {
      this.counters.peersRefused++;
      this.onProblem?.(`not following the logs of ${p.name || p.peer}: ${this.followed.size >= MAX_LOG_PEERS ? `${MAX_LOG_PEERS} peers followed already` : `${HEADER_LOGS} ${JSON.stringify(endpoint.slice(0, 60))} is not tcp://IPv4:port on its own address`}`);
      return;
    }
    const key = node.peerKey(p.peer);
    if (this.curve && !key) return; // secure mode: only peers proven with a key
    let socket: ZmqSubscriber;
    try {
      socket = new ZmqSubscriber({
        linger: 0, receiveHighWaterMark: 1000, maxMessageSize: MAX_FRAME,
        ...(this.curve && key ? { curveServerKey: key, curvePublicKey: this.curve.publicKey, curveSecretKey: this.curve.secretKey } : {}),
      });
    } catch (e) {
      // Out of sockets (libzmq's limit, or open files): counted and said; the peer's next ENTER tries again.
      this.counters.openFailed++;
      this.onProblem?.(`not following the logs of ${p.name || p.peer}: no socket (${(e as Error).message})`);
      return;
    }
    socket.subscribe('L');
    socket.connect(endpoint);
    this.followed.set(p.peer, { socket, endpoint });
    void this.receive(socket, p.peer, p.name || p.peer);
  }

  private disconnect(peer: string): void {
    const f = this.followed.get(peer);
    if (!f) return;
    this.followed.delete(peer);
    f.socket.close();
  }

  private async receive(socket: ZmqSubscriber, uuid: string, name: string): Promise<void> {
    try {
      for await (const [, frame] of socket) {
        if (!frame || frame.length > MAX_FRAME) {
          this.counters.malformed++;
          continue;
        }
        let m: { n?: unknown; t?: unknown; l?: unknown; s?: unknown; m?: unknown };
        try {
          m = JSON.parse(frame.toString('utf8')) as typeof m;
        } catch {
          this.counters.malformed++;
          continue;
        }
        if (!Number.isSafeInteger(m.n) || typeof m.t !== 'number' || typeof m.l !== 'string' || typeof m.s !== 'string' || typeof m.m !== 'string') {
          this.counters.malformed++;
          continue;
        }
        const n = m.n as number;
        const before = this.last.get(uuid);
        if (before !== undefined && n > before + 1) {
          this.counters.gaps++;
          this.counters.missed += n - before - 1;
          this.push({ node: name, uuid, seq: before + 1, ts: m.t, level: 'warn', service: '', msg: `${n - before - 1} line(s) of ${name} missed`, gap: n - before - 1 });
        }
        if (!this.last.has(uuid) && this.last.size >= 4 * MAX_LOG_PEERS) this.last.delete(this.last.keys().next().value as string);
        this.last.set(uuid, n);
        this.counters.received++;
        this.push({ node: name, uuid, seq: n, ts: m.t, level: m.l.slice(0, 8), service: m.s.slice(0, 64), msg: m.m.slice(0, 4096) });
      }
    } catch {
      // closed
    }
  }
}
