/**
 * A ZRE mesh node (36/ZRE), wire-compatible with Zyre C 2.x and pyre.
 *
 * Discovery: a 22-byte UDP beacon broadcast on the chosen interface (port 5670 by default) once at start and
 * then every `beaconInterval`. Mailboxes: one ROUTER inbox bound on the interface's IPv4 address with an
 * ephemeral port; one DEALER per peer. Nothing happens on construction; {@link ZreNode.start} acquires the
 * sockets and {@link ZreNode.stop} releases them.
 *
 * Nothing a peer sends can throw out of the node: malformed beacons and frames, traffic before HELLO, sequence
 * gaps and wrong group status are dropped and counted in {@link ZreNode.stats}.
 */
import { EventEmitter } from 'node:events';
import { createSocket, type Socket as UdpSocket, type RemoteInfo } from 'node:dgram';
import { randomUUID } from 'node:crypto';
import { Router } from 'zeromq';
import { curveServer, type CurveServer } from '../security/zap.ts';
import { z85Decode, z85Encode, isZ85Key } from '../security/z85.ts';
import { chooseInterface, type MeshInterface } from '../net/iface.ts';
import { assertShortString, decodeBeacon, encodeBeacon, decodeZre, ZreDecodeError, type Headers, type ZreMessage } from './codec.ts';
import { Peer, type OutgoingMessage, type Presence } from './peer.ts';
import { ProblemLog, type ProblemSink } from '../problems.ts';
import { Gossip, type GossipOptions, type GossipStats } from './gossip.ts';

export interface ZreNodeOptions {
  /** Our name in HELLO; defaults to the first 6 hex digits of the UUID (as Zyre does). At most 255 bytes. */
  name?: string;
  /** Headers sent in HELLO (keys at most 255 bytes each). */
  headers?: Record<string, string>;
  /** Interface name or IPv4 address; chosen automatically when absent (first up, non-loopback, broadcast). */
  iface?: string;
  /** UDP port for beacons. Default 5670 (36/ZRE). */
  beaconPort?: number;
  /** ms between beacons. Default 1000. */
  beaconInterval?: number;
  /** ms of silence before a peer is EVASIVE. We ping quiet peers from half of this on. Default 5000. */
  evasiveTimeout?: number;
  /** ms of silence before a peer is SILENT. Default 10000. */
  silentTimeout?: number;
  /** ms of silence before a peer is dropped (EXIT). Default 30000. */
  expiredTimeout?: number;
  /** ms between presence checks (and PINGs to quiet peers). Default 1000. */
  pingInterval?: number;
  /** TCP port of our inbox; 0 (default) picks an ephemeral one. Fix it when others list us as a static peer. */
  mailboxPort?: number;
  /** Static peer inbox endpoints (`tcp://IP:PORT`) for networks where broadcast does not pass. */
  peers?: string[];
  /** Messages queued per peer in JavaScript before sends are refused (and counted). Default 10000. */
  sendQueueLimit?: number;
  /** Bytes queued per peer in JavaScript before sends are refused (a single larger message still goes). Default 8 MiB. */
  sendQueueBytes?: number;
  /** ZeroMQ send high-water mark of each per-peer DEALER. Default 1000. */
  sendHighWaterMark?: number;
  /** Our 16-byte UUID; random by default. */
  uuid?: Buffer;
  /** Where to read interface flags; tests point it at a fixture. Default /sys. */
  sysRoot?: string;
  /** Hears what the node drops or refuses, one line each, rate-limited per kind and source (runtime/problems.ts). */
  onProblem?: ProblemSink;
  /**
   * Gossip instead of UDP beacons (Zyre's gossip mode, for networks without broadcast): serve on `bind`,
   * connect to the seeds in `connect`; our tuple is (UUID, inbox endpoint) with a lease of `ttl` seconds.
   * A stopping node then says GOODBYE to every peer instead of a port-0 beacon.
   */
  gossip?: GossipOptions;
  /** Peers known at once (ready or half-open); past it new ones are refused and counted. Default 1024. */
  maxPeers?: number;
  /** Peers we dialled after a beacon whose HELLO has not come yet, at once. Default 128. */
  maxHalfOpen?: number;
  /**
   * ms a half-open peer has to send its HELLO before it is dropped. Default 15000: a peer's HELLO can be late by
   * seconds when a whole mesh powers up at once on slow boards, and dropping it is worse than waiting (we dial
   * again on its next beacon, and it must answer our new HELLO as a re-HELLO): at 5000, 200 simulated nodes
   * on 2 cores dropped 15,000 half-open peers and answered 170,000 re-HELLOs, and took twice as long to mesh.
   * A phantom (a beacon nobody stands behind) holds its slot this long; `admitRate` and `maxHalfOpen` bound them.
   */
  handshakeTimeout?: number;
  /** New peers admitted from one source address: a burst of this many, then `admitRate` a second. Default 16. */
  admitBurst?: number;
  /** New peers admitted per second per source address after the burst. Default 4. */
  admitRate?: number;
  /** Largest message the inbox takes, bytes (ZMQ_MAXMSGSIZE: a larger one drops the connection). Default 1 MiB. */
  maxMessageSize?: number;
  /** Headers a HELLO may carry; a HELLO with more is refused. Default 64. */
  maxHeaders?: number;
  /** Bytes of one header value; a HELLO with a longer one is refused. Default 4096. */
  maxHeaderValue?: number;
  /** Groups a peer may be in (HELLO and JOINs); JOINs past it are counted, not kept. Default 256. */
  maxGroups?: number;
  /**
   * Secure mode, as Zyre C's zyre_set_zcert, and stricter: see {@link ZreCurve}. Absent: plain ZRE (v1
   * beacons, no encryption), which cannot see secure nodes nor be seen by them.
   */
  curve?: ZreCurve;
}

/**
 * Secure mode (issue 13): v3 beacons carrying our public key, `X-PUBLICKEY` in HELLO, the inbox a CURVE server
 * behind the process's ZAP handler (domain `zapDomain`), each DEALER a CURVE client of its peer's key. Beyond
 * Zyre: only keys `allows` accepts are dialled or let in; ENTER waits until our DEALER's handshake proved the
 * peer holds its key; a UUID stays bound to the first key it was proven with.
 */
export interface ZreCurve {
  /** Our key pair (Z85). */
  publicKey: string;
  secretKey: string;
  /** Whether a key may join the mesh (the allowlist). */
  allows(publicKey: string): boolean;
  /** Hears each refused key: untrusted, or claiming a UUID bound to another key. */
  refused?(info: { publicKey: string; address?: string; name?: string; why: string }): void;
  /** ZAP domain of the inbox. Default `global` (Zyre's). */
  zapDomain?: string;
}

/** The HELLO header that carries a secure node's public key (Zyre C's name for it). */
export const HEADER_PUBLICKEY = 'X-PUBLICKEY';

/** What ENTER carries: everything the peer's HELLO told us. */
export interface PeerInfo {
  /** The peer's UUID, 32 uppercase hex digits. */
  peer: string;
  name: string;
  endpoint: string;
  groups: string[];
  headers: Record<string, string>;
  presence: Presence;
}

export interface PeerRef { peer: string; name: string }

/**
 * Events. Each fires once per occurrence, synchronously while the node handles the message or timer that
 * caused it, and never before start() has resolved; listeners must not block.
 */
export interface ZreEvents {
  /** A peer's HELLO arrived: it is now known and can be whispered to. JOIN events for its groups follow. */
  enter: [PeerInfo];
  /** A peer left: port-0 beacon, GOODBYE, expiry (`expiredTimeout` of silence), a sequence gap or a re-HELLO. */
  exit: [PeerRef & { reason: ExitReason }];
  /** A peer joined a group (also fired for each group listed in its HELLO). */
  join: [PeerRef & { group: string }];
  /** A peer left a group. */
  leave: [PeerRef & { group: string }];
  /** A peer sent us a message; `content` holds its frames (possibly none). */
  whisper: [PeerRef & { content: Buffer[] }];
  /** A peer sent a message to a group. */
  shout: [PeerRef & { group: string; content: Buffer[] }];
  /** A peer has been quiet for `evasiveTimeout`; we ping it. Fires once per quiet spell. */
  evasive: [PeerRef];
  /** A peer has been quiet for `silentTimeout`. Fires once per quiet spell. */
  silent: [PeerRef];
}
export type ZreEventName = keyof ZreEvents;
export type ExitReason = 'leaving' | 'expired' | 'sequence-gap' | 'status-mismatch' | 'rehello' | 'goodbye';

/** Counters of what the node dropped or refused; they only grow. */
export interface ZreStats {
  beaconsSent: number;
  beaconSendErrors: number;
  beaconsReceived: number;
  beaconsMalformed: number;
  messagesReceived: number;
  messagesMalformed: number;
  badRoutingId: number;
  beforeHello: number;
  sequenceGaps: number;
  statusMismatches: number;
  sendsDropped: number;
  /** New peers refused: `maxPeers` or `maxHalfOpen` reached, their source address over its admission rate, or no socket to them. */
  peersRefused: number;
  /** Half-open peers dropped because their HELLO did not come within `handshakeTimeout`. */
  handshakeTimeouts: number;
  /** HELLOs or beacons claiming the inbox endpoint of another live peer, refused (that peer is kept). */
  endpointConflicts: number;
  /** HELLOs refused for their size: too many headers or groups, or a header value too long. */
  helloRefused: number;
  /** Second HELLOs from a ready peer (it reset its side); each answered with our HELLO at most once a second. */
  rehellos: number;
  /** Of those, the ones that changed nothing the peer had told us: a reconnect, no EXIT/ENTER reported. */
  rehellosQuiet: number;
  /** JOINs past `maxGroups` for one peer: the status is followed, the group not kept. */
  groupsRefused: number;
  /** Peers known now (ready or half-open), and of those, half-open: gauges, not counters. */
  knownPeers: number;
  halfOpen: number;
  /** Beacons of the other ZRE beacon version (v3 CURVE beacons in plain mode, v1 in secure mode): ignored. */
  beaconsOtherVersion: number;
  /** Secure mode: v3 beacons whose key starts with a zero byte (Zyre C drops them too). */
  beaconsBadKey: number;
  /** Secure mode: beacons, HELLOs and tuples from keys the allowlist does not hold, refused. */
  keysRefused: number;
  /** Secure mode: beacons, HELLOs or tuples claiming a UUID bound to another key, refused (the genuine peer is kept). */
  keyConflicts: number;
  /** Secure mode: HELLOs without a valid X-PUBLICKEY, ignored. */
  helloWithoutKey: number;
  /** Secure mode: CURVE handshakes of our DEALERs that failed (a peer without the secret of its key, or gone). */
  handshakeFailures: number;
  /** Secure mode: messages a peer sent before our handshake to it completed, dropped past the hold bound. */
  heldDropped: number;
  /** Secure mode: the process's ZAP handler (all CURVE servers of the process). */
  zap?: { zapRequests: number; zapAllowed: number; zapRefused: number; zapMalformed: number };
  /** Gossip's counters, in gossip mode. */
  gossip?: GossipStats;
  /** Exceptions from our own handlers, caught so the node goes on (each is a bug to report). */
  internalErrors: number;
  lastError: string | undefined;
}

export class ZreNodeError extends Error {
  override name = 'ZreNodeError';
}

/** Peers a node knows at once unless told otherwise (`maxPeers`). */
export const DEFAULT_MAX_PEERS = 1024;

const DEFAULTS = {
  beaconPort: 5670,
  beaconInterval: 1000,
  evasiveTimeout: 5000,
  silentTimeout: 10000,
  expiredTimeout: 30000,
  pingInterval: 1000,
  mailboxPort: 0,
  sendQueueLimit: 10000,
  sendQueueBytes: 8 * 1024 * 1024,
  sendHighWaterMark: 1000,
  maxPeers: DEFAULT_MAX_PEERS,
  maxHalfOpen: 128,
  handshakeTimeout: 15000,
  admitBurst: 16,
  admitRate: 4,
  maxMessageSize: 1024 * 1024,
  maxHeaders: 64,
  maxHeaderValue: 4096,
  maxGroups: 256,
};

/** Source addresses whose admission budget is remembered (the least recently seen is forgotten past it). */
const MAX_SOURCES = 4096;
/** A ready peer answers a re-HELLO with its own HELLO at most this often (so two nodes cannot ping-pong). */
const REHELLO_INTERVAL_MS = 1000;

/** Secure mode: messages held per peer until our handshake to it completes; past it the peer is dropped. */
const MAX_HELD = 256;
/** Secure mode: UUID → key bindings remembered. */
const MAX_BOUND_KEYS = 4096;

/** How long messages already handed to ZeroMQ may linger after stop(). */
const STOP_LINGER_MS = 500;
/** How long stop() waits for each peer to confirm it handled our last messages. */
const STOP_FLUSH_MS = 500;

/** True for what we dial: `tcp://IPv4:port` with octets ≤ 255 and a port 1..65535. */
function dialable(endpoint: string): boolean {
  const m = /^tcp:\/\/(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3}):(\d{1,5})$/.exec(endpoint);
  if (!m) return false;
  const port = Number(m[5]);
  return m.slice(1, 5).every((o) => Number(o) <= 255) && port >= 1 && port <= 65535;
}

const hexId = (uuid: Buffer): string => uuid.toString('hex').toUpperCase();
/** The IPv4 address of a `tcp://IPv4:port` endpoint (undefined for anything else). */
const hostOf = (endpoint: string): string | undefined => /^tcp:\/\/([\d.]+):/.exec(endpoint)?.[1];

/**
 * The beacon sockets' address lookup. They only ever bind and send to IPv4 literals (the interface's address, its
 * broadcast, 0.0.0.0), which Node's default (dns.lookup) hands back unchanged — after loading Node's DNS module,
 * about 1 ms of a first start. Anything else still goes to dns.lookup.
 */
function literalLookup(host: string, family: unknown, cb: (err: Error | null, address: string, family: number) => void): void {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(host)) process.nextTick(cb, null, host, 4);
  else (process.getBuiltinModule('node:dns') as typeof import('node:dns')).lookup(host, family as number, cb as never);
}
const now = (): number => performance.now();

export class ZreNode extends EventEmitter<ZreEvents> {
  readonly uuid: Buffer;
  /** Our UUID as 32 uppercase hex digits. */
  readonly id: string;
  private _name: string;
  private readonly headers: Headers = new Map();
  private readonly opts: typeof DEFAULTS & ZreNodeOptions;
  private readonly groups = new Set<string>();
  /** Our group status: +1 (mod 256) for each JOIN or LEAVE we make (vectors README rule 3). */
  private status = 0;
  private readonly peers = new Map<string, Peer>();
  /** Static endpoints we have dialled but whose UUID we do not know yet, by endpoint. */
  private readonly pending = new Map<string, Peer>();
  private readonly counters: ZreStats = {
    beaconsSent: 0, beaconSendErrors: 0, beaconsReceived: 0, beaconsMalformed: 0, messagesReceived: 0,
    messagesMalformed: 0, badRoutingId: 0, beforeHello: 0, sequenceGaps: 0, statusMismatches: 0, sendsDropped: 0,
    peersRefused: 0, handshakeTimeouts: 0, endpointConflicts: 0, helloRefused: 0, rehellos: 0, rehellosQuiet: 0, groupsRefused: 0,
    knownPeers: 0, halfOpen: 0, internalErrors: 0, lastError: undefined,
    beaconsOtherVersion: 0, beaconsBadKey: 0, keysRefused: 0, keyConflicts: 0, helloWithoutKey: 0, handshakeFailures: 0, heldDropped: 0,
  };
  /** Secure mode: the key each UUID was first proven with (bounded: the oldest is forgotten past 4,096). */
  private readonly boundKeys = new Map<string, string>();
  /** Half-open peers (dialled after a beacon, no HELLO yet) by source address, and their total. */
  private readonly halfOpenBySource = new Map<string, number>();
  private halfOpen = 0;
  /** Admission token buckets per source address (bounded by MAX_SOURCES). */
  private readonly admission = new Map<string, { tokens: number; at: number }>();
  private readonly problems: ProblemLog;
  private gossip: Gossip | undefined;

  private router: Router | undefined;
  private udp: UdpSocket | undefined;
  /** Beacons leave from this one, bound to the interface's own address (see openBeaconSocket). */
  private udpOut: UdpSocket | undefined;
  private beaconTimer: NodeJS.Timeout | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  private receiving: Promise<void> | undefined;
  private _iface: MeshInterface | undefined;
  private _endpoint = '';
  private running = false;
  private lastRoutingId: Buffer | undefined;
  private lastId = '';

  /** Stores the options; opens nothing. Throws {@link ZreNodeError} for a name or header that cannot travel. */
  constructor(options: ZreNodeOptions = {}) {
    super();
    this.opts = { ...DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) };
    this.problems = new ProblemLog(options.onProblem);
    this.uuid = options.uuid ?? Buffer.from(randomUUID().replaceAll('-', ''), 'hex');
    if (this.uuid.length !== 16) throw new ZreNodeError(`uuid must be 16 bytes, got ${this.uuid.length}`);
    this.id = hexId(this.uuid);
    this._name = this.id.slice(0, 6);
    if (options.name !== undefined) this.setName(options.name);
    for (const [k, v] of Object.entries(options.headers ?? {})) this.setHeader(k, v);
  }

  get name(): string {
    return this._name;
  }

  /** The interface chosen at start (undefined before). */
  get iface(): MeshInterface | undefined {
    return this._iface;
  }

  /** Our inbox endpoint, `tcp://IPv4:port` (empty before start). */
  get endpoint(): string {
    return this._endpoint;
  }

  /** Sets our name before start. Throws if longer than 255 bytes in UTF-8 or if the node is running. */
  setName(name: string): void {
    this.assertNotRunning('name');
    this.wrap(() => assertShortString(name, 'node name'));
    this._name = name;
  }

  /** Sets a HELLO header before start. Keys are at most 255 bytes; values may be longer. */
  setHeader(key: string, value: string): void {
    this.assertNotRunning('headers');
    this.wrap(() => assertShortString(key, `header key '${key.slice(0, 40)}'`));
    this.headers.set(key, String(value));
  }

  /**
   * Chooses the interface, binds the inbox, opens the beacon socket and sends the first beacon.
   * Rejects with a clear error if the interface or ports cannot be had; then nothing stays open.
   */
  async start(): Promise<void> {
    if (this.running) throw new ZreNodeError('node already started');
    const iface = chooseInterface(this.opts.iface, this.opts.sysRoot);
    if (this.opts.curve) await this.startZap(this.opts.curve);
    // The inbox and the beacon sockets are opened at once: libzmq binds on its own I/O thread (started by the
    // first socket of a process, 0.5–4 ms here) while Node's first UDP bind runs on this one (it loads Node's
    // cluster module, about 3 ms on a first start). One after the other, a fresh process paid both.
    const [inbox, beacons] = await Promise.allSettled([
      this.bindInbox(iface),
      this.opts.gossip ? Promise.resolve(undefined) : this.openBeaconSockets(iface.address),
    ]);
    if (inbox.status === 'rejected' || beacons.status === 'rejected') {
      if (inbox.status === 'fulfilled') inbox.value.router.close();
      if (beacons.status === 'fulfilled') for (const u of beacons.value ?? []) u.close();
      this.curveServer?.release();
      this.curveServer = undefined;
      if (inbox.status === 'rejected') throw inbox.reason;
      throw new ZreNodeError(`cannot open the beacon socket on UDP port ${this.opts.beaconPort}: ${((beacons as PromiseRejectedResult).reason as Error).message}`);
    }
    const { router, port } = inbox.value;
    this._iface = iface;
    this._endpoint = `tcp://${iface.address}:${port}`;
    this.router = router;
    if (this.opts.gossip) {
      const gossip = new Gossip(this.opts.gossip);
      try {
        await gossip.start();
      } catch (e) {
        router.close();
        this.router = undefined;
        throw new ZreNodeError((e as Error).message);
      }
      gossip.on('tuple', (t) => this.onTuple(t.key, t.value));
      gossip.on('expire', (t) => this.onTupleExpired(t.key));
      gossip.publish(this.id, this.gossipValue());
      this.gossip = gossip;
    } else {
      [this.udp, this.udpOut] = beacons.value!;
    }
    this.running = true;
    // The inbox is read from the next turn of the event loop on: listeners attached right after `await start()`
    // miss nothing (a HELLO already waiting would otherwise be handled between start() and its caller).
    this.receiving = new Promise((resolve) => setImmediate(() => resolve(this.receiveLoop(router))));
    this.sendBeacon(port);
    this.dialStatic();
    this.beaconTimer = setInterval(() => {
      this.sendBeacon(port);
      this.dialStatic();
    }, this.opts.beaconInterval);
    this.pingTimer = setInterval(() => this.checkPresence(), this.opts.pingInterval);
  }

  /**
   * Moves the node to another interface address while it runs (DHCP gave a new one): binds a new inbox there,
   * closes the old one, takes `headers` (e.g. telemetry endpoints on the new address), beacons from the new
   * address, and reconnects to every peer with a fresh HELLO, which carries the new endpoint: peers replace
   * their record of us (EXIT, then ENTER) without a restart on either side. Rejects, keeping the old inbox, if
   * the new one cannot be bound.
   */
  async rebind(iface: MeshInterface, headers: Record<string, string> = {}): Promise<void> {
    if (!this.running || !this.router) throw new ZreNodeError('rebind needs a running node');
    const { router, port } = await this.bindInbox(iface);
    const [oldRouter, oldLoop] = [this.router, this.receiving];
    this.router = router;
    this._iface = iface;
    this._endpoint = `tcp://${iface.address}:${port}`;
    for (const [k, v] of Object.entries(headers)) {
      this.wrap(() => assertShortString(k, `header key '${k.slice(0, 40)}'`));
      this.headers.set(k, String(v));
    }
    this.receiving = this.receiveLoop(router);
    oldRouter.close();
    await oldLoop;
    clearInterval(this.beaconTimer);
    if (this.udp) {
      const oldOut = this.udpOut;
      this.udpOut = await this.openBeaconSocket(iface.address).catch((e: Error) => {
        this.noteError(`beacon socket on ${iface.address}: ${e.message}`);
        return undefined;
      });
      oldOut?.close();
    }
    this.sendBeacon(port);
    this.beaconTimer = setInterval(() => {
      this.sendBeacon(port);
      this.dialStatic();
    }, this.opts.beaconInterval);
    for (const peer of this.peers.values()) peer.reconnect(this.uuid, this.hello(), this.opts.sendHighWaterMark);
    this.gossip?.publish(this.id, this.gossipValue());
  }

  /**
   * Leaves the mesh: waits (up to 500 ms) for each peer to confirm it handled what we sent, then sends GOODBYE
   * to static peers and a port-0 beacon (peers drop us at once), and closes every socket. Safe to call twice.
   */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    clearInterval(this.beaconTimer);
    clearInterval(this.pingTimer);
    // Let every peer handle what we sent before we say we are leaving: the port-0 beacon travels by UDP and
    // could overtake our last messages, which the peer would then drop as coming from a stranger.
    const ready = [...this.peers.values()].filter((p) => p.ready);
    await Promise.all(ready.map((p) => p.flush(STOP_FLUSH_MS)));
    // Where no beacon says we leave (gossip mode, static peers), GOODBYE does (vector goodbye-gossip-mode).
    for (const peer of ready) if (peer.isStatic || this.gossip) peer.send({ type: 'GOODBYE' });
    await this.sendBeaconNow(0);
    await this.gossip?.stop();
    this.gossip = undefined;
    // What was already handed to ZeroMQ gets a short linger to leave (a CLI whisper right before stop).
    for (const peer of [...this.peers.values(), ...this.pending.values()]) peer.close(STOP_LINGER_MS);
    this.peers.clear();
    this.pending.clear();
    this.udp?.close();
    this.udp = undefined;
    this.udpOut?.close();
    this.udpOut = undefined;
    this.router?.close();
    await this.receiving;
    this.router = undefined;
    this.curveServer?.release();
    this.curveServer = undefined;
  }

  /** Joins a group: JOIN with the next status goes to every peer. Joining a group we are in does nothing. */
  join(group: string): void {
    this.wrap(() => assertShortString(group, 'group name'));
    if (this.groups.has(group)) return;
    this.groups.add(group);
    this.status = (this.status + 1) & 0xff;
    for (const peer of this.peers.values()) peer.send({ type: 'JOIN', group, status: this.status });
  }

  /** Leaves a group: LEAVE with the next status goes to every peer. Leaving a group we are not in does nothing. */
  leave(group: string): void {
    this.wrap(() => assertShortString(group, 'group name'));
    if (!this.groups.delete(group)) return;
    this.status = (this.status + 1) & 0xff;
    for (const peer of this.peers.values()) peer.send({ type: 'LEAVE', group, status: this.status });
  }

  /**
   * Sends a message to one peer (its UUID). Frames may be none; strings go as UTF-8. Never blocks: returns
   * false when the peer is unknown, or when its send queue is full (counted in `sendsDropped`; wait on
   * {@link drained} and try again to apply back-pressure instead of losing it).
   * Cost: one 6-byte header allocation; content frames are passed to ZeroMQ as they are.
   */
  whisper(peerId: string, ...content: (Buffer | string)[]): boolean {
    const peer = this.peers.get(peerId.toUpperCase());
    if (!peer?.ready) return false;
    return peer.send({ type: 'WHISPER', content: content.map(toBuffer) });
  }

  /**
   * Sends a message to every peer that has joined `group` (we do not receive our own). Returns how many peers
   * it was queued for. Throws for a group name over 255 bytes.
   */
  shout(group: string, ...content: (Buffer | string)[]): number {
    this.wrap(() => assertShortString(group, 'group name'));
    const frames = content.map(toBuffer);
    let n = 0;
    for (const peer of this.peers.values()) {
      if (peer.ready && peer.groups.has(group) && peer.send({ type: 'SHOUT', group, content: frames })) n++;
    }
    return n;
  }

  /** True when the peer is ready and its send queue has room for another message (by count). */
  hasRoom(peerId: string): boolean {
    const peer = this.peers.get(peerId.toUpperCase());
    return Boolean(peer?.ready) && peer!.queued < this.opts.sendQueueLimit;
  }

  /** Resolves when everything queued for the peer has been handed to ZeroMQ (at once for an unknown peer). */
  drained(peerId: string): Promise<void> {
    return this.peers.get(peerId.toUpperCase())?.drained() ?? Promise.resolve();
  }

  /**
   * Resolves true once the peer has handled everything we sent it so far (a PING answered by PING_OK, which
   * comes back in order). Costs one round trip; false after `timeoutMs` or for an unknown peer.
   */
  flush(peerId: string, timeoutMs = 2000): Promise<boolean> {
    const peer = this.peers.get(peerId.toUpperCase());
    return peer?.ready ? peer.flush(timeoutMs) : Promise.resolve(false);
  }

  /** The peers whose HELLO we have, with what they told us. */
  peerList(): PeerInfo[] {
    return [...this.peers.values()].filter((p) => p.ready).map((p) => this.info(p));
  }

  /** Finds a ready peer by UUID (any case) or by name; the first match wins for duplicate names. */
  findPeer(nameOrId: string): PeerInfo | undefined {
    const byId = this.peers.get(nameOrId.toUpperCase());
    if (byId?.ready) return this.info(byId);
    for (const p of this.peers.values()) if (p.ready && p.name === nameOrId) return this.info(p);
    return undefined;
  }

  /** The groups we are in. */
  ownGroups(): string[] {
    return [...this.groups];
  }

  /** A snapshot of the drop and error counters. */
  stats(): ZreStats {
    let dropped = 0;
    for (const p of this.peers.values()) dropped += p.dropped;
    return {
      ...this.counters, sendsDropped: this.counters.sendsDropped + dropped, knownPeers: this.peers.size, halfOpen: this.halfOpen,
      ...(this.gossip ? { gossip: this.gossip.stats() } : {}),
      ...(this.curveServer ? { zap: this.curveServer.stats() } : {}),
    };
  }

  // --- internals -----------------------------------------------------------------------------------------

  /** Binds an inbox ROUTER on the interface (ephemeral port unless `mailboxPort`); closes it and throws on failure. */
  private async bindInbox(iface: MeshInterface): Promise<{ router: Router; port: number }> {
    const c = this.opts.curve;
    const router = new Router({
      // Plain mode hands a routing id over to its newest connection (a peer reconnecting after its address
      // changed). Secure mode keeps it with the first: another key's connection under a live peer's UUID would
      // otherwise take that peer's place in our inbox.
      handover: !c, linger: 0, maxMessageSize: this.opts.maxMessageSize,
      // Every peer of a mesh that powers up together dials us within a second or two. Past libzmq's default
      // listen backlog of 100 the kernel drops their SYNs (ListenOverflows) and each waits out a retransmit:
      // 2,000 dials to one inbox took 4.7 s at 100 and 0.44 s at 4,096 (2,000 DEALERs on loopback, this machine).
      // The kernel caps it at net.core.somaxconn (4,096 by default); nothing is allocated until it is used.
      backlog: this.opts.maxPeers,
      ...(c ? this.curveServer!.options : {}),
    });
    try {
      await router.bind(`tcp://${iface.address}:${this.opts.mailboxPort || '*'}`);
    } catch (e) {
      router.close();
      throw new ZreNodeError(`cannot bind the inbox on ${iface.address}:${this.opts.mailboxPort || '*'}: ${(e as Error).message}`);
    }
    // As Zyre checks after zyre_set_zcert: the socket really runs CURVE.
    if (c && router.securityMechanism !== 'curve') {
      router.close();
      throw new ZreNodeError(`the inbox runs ${router.securityMechanism ?? 'no'} security, not CURVE`);
    }
    return { router, port: Number(/:(\d+)$/.exec(router.lastEndpoint ?? '')?.[1]) };
  }

  /** Secure mode: the inbox's place behind the process's ZAP handler. */
  private curveServer: CurveServer | undefined;

  /** Secure mode's first step: the ZAP handler with our allowlist under our domain, before the inbox binds. */
  private async startZap(c: ZreCurve): Promise<void> {
    if (!isZ85Key(c.publicKey) || !isZ85Key(c.secretKey)) throw new ZreNodeError('secure mode needs a key pair of two 40-character Z85 keys');
    try {
      this.curveServer = await curveServer(c, c.zapDomain ?? 'global', c.allows, (key, address) => {
        this.counters.keysRefused++;
        c.refused?.({ publicKey: key, address, why: 'connection to our inbox' });
      });
    } catch (e) {
      throw new ZreNodeError(`secure mode: ${(e as Error).message} (security.mode: none runs without it)`);
    }
  }

  /** Our public key (Z85) in secure mode. */
  get publicKey(): string | undefined {
    return this.opts.curve?.publicKey;
  }

  /** The key a peer was proven with (secure mode), by UUID; undefined for plain peers and strangers. */
  peerKey(peerId: string): string | undefined {
    const peer = this.peers.get(peerId.toUpperCase());
    return peer?.ready ? peer.publicKey : undefined;
  }

  /**
   * Secure mode, after the allowlist changed: peers whose key is no longer allowed leave (EXIT) and our DEALERs
   * to them close. Their connections into our inbox stay until it moves: follow with {@link rebind} on the same
   * interface (a new port, announced by beacon and a fresh HELLO to every remaining peer), which closes every
   * connection into the old inbox; new ones meet ZAP again. Returns how many peers left.
   */
  dropUntrusted(): number {
    const c = this.opts.curve;
    if (!c || !this.running) return 0;
    const gone = [...this.peers.values(), ...this.pending.values()].filter((p) => p.publicKey && !c.allows(p.publicKey));
    for (const p of gone) this.removePeer(p, 'leaving');
    return gone.length;
  }

  private assertNotRunning(what: string): void {
    if (this.running) throw new ZreNodeError(`${what} can only be set before start()`);
  }

  private wrap(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      throw new ZreNodeError((e as Error).message);
    }
  }

  private info(p: Peer): PeerInfo {
    return {
      peer: p.id!, name: p.name, endpoint: p.endpoint, groups: [...p.groups], presence: p.presence,
      headers: Object.fromEntries(p.headers),
    };
  }

  private ref(p: Peer): PeerRef {
    return { peer: p.id!, name: p.name };
  }

  private hello(): OutgoingMessage {
    const headers = this.opts.curve ? new Map([...this.headers, [HEADER_PUBLICKEY, this.opts.curve.publicKey]]) : this.headers;
    return { type: 'HELLO', endpoint: this._endpoint, groups: [...this.groups], status: this.status, name: this._name, headers };
  }

  /**
   * The beacon sockets. Receiving: bound to every address on the beacon port, as Zyre C is on Linux (directed
   * broadcasts reach only a socket bound to the wildcard, or to the broadcast address itself). Sending
   * (`address` given): bound to the interface's own address on an ephemeral port, so a beacon's source is the
   * address our inbox listens on even where the interface has several (the wildcard socket's would be the
   * kernel's primary one, and peers would dial an inbox that is not there). Zyre C and pyre take only the
   * source address from a beacon, not its port.
   */
  private openBeaconSocket(address?: string): Promise<UdpSocket> {
    return new Promise((resolve, reject) => {
      const udp = createSocket({ type: 'udp4', reuseAddr: address === undefined, lookup: literalLookup });
      udp.once('error', reject);
      udp.bind(address === undefined ? this.opts.beaconPort : 0, address, () => {
        udp.off('error', reject);
        udp.setBroadcast(true);
        udp.on('error', (e) => this.noteError(`beacon socket: ${e.message}`));
        if (address === undefined) {
          udp.on('message', (buf, rinfo) => {
            try {
              this.onBeacon(buf, rinfo);
            } catch (e) {
              this.counters.internalErrors++;
              this.noteError(`beacon handler: ${(e as Error).message}`);
            }
          });
        }
        resolve(udp);
      });
    });
  }

  /** Both beacon sockets (receiving, then sending from `address`); neither stays open if the other fails. */
  private async openBeaconSockets(address: string): Promise<[UdpSocket, UdpSocket]> {
    const udp = await this.openBeaconSocket();
    try {
      return [udp, await this.openBeaconSocket(address)];
    } catch (e) {
      udp.close();
      throw e;
    }
  }

  private sendBeacon(port: number): void {
    void this.sendBeaconNow(port);
  }

  /** Sends one beacon; a failure (link down, no route) is counted, never thrown. */
  private sendBeaconNow(port: number): Promise<void> {
    const udp = this.udpOut;
    if (!udp || !this._iface) return Promise.resolve();
    const c = this.opts.curve;
    const bytes = c ? encodeBeacon({ version: 3, uuid: this.uuid, port, publicKey: z85Decode(c.publicKey) }) : encodeBeacon({ version: 1, uuid: this.uuid, port });
    return new Promise((resolve) => {
      try {
        udp.send(bytes, this.opts.beaconPort, this._iface!.broadcast, (err) => {
          if (err) {
            this.counters.beaconSendErrors++;
            this.noteError(`beacon send: ${err.message}`);
          } else this.counters.beaconsSent++;
          resolve();
        });
      } catch (e) {
        this.counters.beaconSendErrors++;
        this.noteError(`beacon send: ${(e as Error).message}`);
        resolve();
      }
    });
  }

  /**
   * Every listener hears the event even when one before it throws (EventEmitter would stop at the first throw,
   * and the exception would end in whichever handler of ours emitted): the exception is counted in
   * `internalErrors` and noted, and the next listener is called. Seen: the hub's log follower, out of sockets,
   * threw in its ENTER listener and so kept that ENTER from every listener after it.
   */
  override emit<K extends keyof ZreEvents>(event: K, ...args: ZreEvents[K]): boolean {
    // One listener or none (every WHISPER of a flood, typically): EventEmitter's own path, no copy of the list.
    if (this.listenerCount(event) <= 1) {
      try {
        return (EventEmitter.prototype.emit as (this: unknown, e: string, ...a: unknown[]) => boolean).call(this, event, ...args);
      } catch (e) {
        this.listenerFailed(event, e);
        return true;
      }
    }
    const listeners = this.rawListeners(event) as ((...a: ZreEvents[K]) => void)[];
    for (const listener of listeners) {
      try {
        listener.apply(this, args);
      } catch (e) {
        this.listenerFailed(event, e);
      }
    }
    return true;
  }

  private listenerFailed(event: keyof ZreEvents, e: unknown): void {
    this.counters.internalErrors++;
    this.noteError(`a '${String(event)}' listener: ${(e as Error).message}`, `listener ${String(event)}`);
  }

  /** Keeps the last problem for stats() and logs it through `onProblem`, rate-limited per `key` (kind and source). */
  private noteError(message: string, key = message.split(':')[0]!): void {
    this.counters.lastError = message;
    this.problems.note(key, message);
  }

  /** 36/ZRE "Discovery": a beacon from an unknown peer makes us connect and send HELLO; port 0 means leaving. */
  private onBeacon(buf: Buffer, rinfo: RemoteInfo): void {
    if (!this.running) return;
    const want = this.opts.curve ? 3 : 1;
    // Vectors README rule 6: plain nodes take v1 only, CURVE nodes v3 only; the other is not malformed.
    if (buf.length >= 4 && buf[0] === 0x5a && buf[1] === 0x52 && buf[2] === 0x45 && (buf[3] === 1 || buf[3] === 3) && buf[3] !== want
      && buf.length === (buf[3] === 3 ? 54 : 22)) {
      this.counters.beaconsOtherVersion++;
      return;
    }
    let beacon;
    try {
      beacon = decodeBeacon(buf, want);
    } catch (e) {
      this.counters.beaconsMalformed++;
      this.noteError(`beacon from ${rinfo.address}:${rinfo.port}: ${(e as Error).message}`, `beacon ${rinfo.address}`);
      return;
    }
    if (beacon.uuid.equals(this.uuid)) return; // our own
    this.counters.beaconsReceived++;
    const id = hexId(beacon.uuid);
    const known = this.peers.get(id);
    if (beacon.port === 0) {
      if (known) this.removePeer(known, 'leaving');
      return;
    }
    if (known) {
      // Secure mode: a beacon under a known UUID with another key is a claim on it (refused, counted).
      if (this.opts.curve && known.publicKey && beacon.publicKey && !beacon.publicKey.equals(z85Decode(known.publicKey))) {
        this.keyAcceptable(id, z85Encode(beacon.publicKey), { address: rinfo.address, why: 'beacon' });
        return;
      }
      // 36/ZRE, "The PING Command": a node SHOULD send a PING to any peer it has not received a UDP beacon from
      // within a certain time; PINGs only where a peer is otherwise silent, or their cost rises with the square
      // of the mesh. So a beacon from a ready peer, from the inbox we know it by, counts as hearing from it, as
      // in pyre (Zyre C does not: zyre#691). In a 200-node simulation ZRE messages fell from 61 to 26 a second a node.
      if (known.ready && known.endpoint === `tcp://${rinfo.address}:${beacon.port}`) {
        known.lastHeard = now();
        known.presence = 'alive';
      }
      return;
    }
    const endpoint = `tcp://${rinfo.address}:${beacon.port}`;
    let key: string | undefined;
    if (this.opts.curve) {
      if (beacon.publicKey![0] === 0) {
        this.counters.beaconsBadKey++;
        return;
      }
      key = z85Encode(beacon.publicKey!);
      if (!this.keyAcceptable(id, key, { address: rinfo.address, why: 'beacon' })) return;
    }
    if (!this.admit(rinfo.address, id, endpoint)) return;
    const peer = this.requirePeer(id, endpoint, false, key);
    if (!peer) return;
    peer.source = rinfo.address;
    this.halfOpen++;
    this.halfOpenBySource.set(rinfo.address, (this.halfOpenBySource.get(rinfo.address) ?? 0) + 1);
  }

  /**
   * Admission of a new peer found by a beacon from `source`: bounded in number (`maxPeers`, `maxHalfOpen`) and
   * rate-limited per source address (a token bucket), so a flood of made-up UUIDs costs a few sockets, not
   * one per beacon, and cannot keep real peers out. Refusals are counted.
   */
  private admit(source: string, id: string, endpoint: string): boolean {
    const refuse = (why: string): false => {
      this.counters.peersRefused++;
      this.noteError(`peer ${id} at ${endpoint} refused: ${why}`, `refused ${source}`);
      return false;
    };
    if (this.peers.size >= this.opts.maxPeers) return refuse(`${this.opts.maxPeers} peers known (maxPeers)`);
    if (this.halfOpen >= this.opts.maxHalfOpen) return refuse(`${this.opts.maxHalfOpen} peers are waiting for their HELLO (maxHalfOpen)`);
    const t = now();
    let bucket = this.admission.get(source);
    if (bucket) this.admission.delete(source); // re-inserted below: the Map's order is least recently seen first
    else {
      bucket = { tokens: this.opts.admitBurst, at: t };
      if (this.admission.size >= MAX_SOURCES) this.admission.delete(this.admission.keys().next().value as string);
    }
    bucket.tokens = Math.min(this.opts.admitBurst, bucket.tokens + ((t - bucket.at) / 1000) * this.opts.admitRate);
    bucket.at = t;
    this.admission.set(source, bucket);
    if (bucket.tokens < 1) return refuse(`source ${source} is over its admission rate (admitBurst ${this.opts.admitBurst}, admitRate ${this.opts.admitRate}/s)`);
    bucket.tokens -= 1;
    return true;
  }

  /** Our gossip value: the inbox endpoint, and in secure mode `endpoint|Z85 key` (as Zyre C publishes it). */
  private gossipValue(): string {
    return this.opts.curve ? `${this._endpoint}|${this.opts.curve.publicKey}` : this._endpoint;
  }

  /**
   * A gossip tuple (UUID, inbox endpoint) of another node: like a beacon, we dial it and say HELLO. `fresh`:
   * it just arrived (counted when refused); false when the view is looked at again each beacon tick (a tuple
   * refused once is not counted again every second, but is dialled once its key is trusted).
   */
  private onTuple(key: string, raw: string, fresh = true): void {
    if (!this.running || key === this.id || !/^[0-9A-F]{32}$/.test(key)) return;
    const bar = raw.indexOf('|');
    const value = bar < 0 ? raw : raw.slice(0, bar);
    const peerKey = bar < 0 ? undefined : raw.slice(bar + 1);
    if (Boolean(this.opts.curve) !== (peerKey !== undefined)) {
      // A secure node's tuple in plain mode, or a plain one in secure mode: we could not talk to it.
      if (fresh) this.counters.beaconsOtherVersion++;
      return;
    }
    if (peerKey !== undefined && (!isZ85Key(peerKey) || !this.keyAcceptable(key, peerKey, { address: hostOf(value), why: 'gossip tuple' }, fresh))) return;
    if (!dialable(value)) {
      if (!fresh) return;
      this.counters.messagesMalformed++;
      this.noteError(`gossip tuple for ${key}: ${JSON.stringify(value.slice(0, 80))} is not tcp://IPv4:port`, 'gossip');
      return;
    }
    const known = this.peers.get(key);
    if (known && (known.ready || known.endpoint === value)) return; // a ready peer's HELLO tells us of a move
    if (known) this.removePeer(known, 'leaving');
    this.requirePeer(key, value, false, peerKey);
  }

  /** A gossip lease ran out: the node is gone unless it still talks to us. */
  private onTupleExpired(key: string): void {
    const peer = this.peers.get(key);
    if (peer && now() - peer.lastHeard >= this.opts.evasiveTimeout) this.removePeer(peer, 'expired');
  }

  /** A half-open peer settled (HELLO came) or went: it no longer counts against the half-open bounds. */
  private settle(peer: Peer): void {
    if (peer.source === undefined) return;
    const n = (this.halfOpenBySource.get(peer.source) ?? 1) - 1;
    if (n > 0) this.halfOpenBySource.set(peer.source, n);
    else this.halfOpenBySource.delete(peer.source);
    this.halfOpen--;
    peer.source = undefined;
  }

  /**
   * The peer, other than `id`, whose inbox is `endpoint`. A live one (ready and heard from within the evasive
   * timeout) keeps it: a claim on its endpoint is refused, since a second DEALER to one inbox would take over
   * our connection to it (ROUTER handover) and start a re-HELLO storm. A quiet or half-open holder is stale and
   * goes. Returns false when the claim is refused.
   */
  private claimEndpoint(endpoint: string, id: string | undefined): boolean {
    for (const other of this.peers.values()) {
      if (other.endpoint !== endpoint || other.id === id) continue;
      if (other.ready && now() - other.lastHeard < this.opts.evasiveTimeout) {
        this.counters.endpointConflicts++;
        this.noteError(`${id ?? 'a peer'} claims ${endpoint}, the inbox of live peer ${other.name || other.id}: refused`, `claim ${endpoint}`);
        return false;
      }
      this.removePeer(other, 'leaving');
    }
    return true;
  }

  /**
   * Creates a peer, connects its DEALER and queues our HELLO; undefined when another live peer holds the
   * endpoint (see {@link claimEndpoint}) or `maxPeers` are known.
   */
  private requirePeer(id: string, endpoint: string, isStatic = false, key?: string): Peer | undefined {
    if (!this.claimEndpoint(endpoint, id)) return undefined;
    if (this.peers.size >= this.opts.maxPeers) {
      this.counters.peersRefused++;
      this.noteError(`peer ${id} at ${endpoint} refused: ${this.opts.maxPeers} peers known (maxPeers)`, 'maxPeers');
      return undefined;
    }
    const c = this.opts.curve;
    if (c && key === undefined) return undefined; // secure mode dials only a known key
    const peer: Peer = new Peer({
      id, endpoint, queueLimit: this.opts.sendQueueLimit, byteLimit: this.opts.sendQueueBytes, now: now(), isStatic,
      ...(c && key ? {
        curve: {
          serverKey: key, publicKey: c.publicKey, secretKey: c.secretKey,
          onHandshake: (ok: boolean, why?: string) => {
            if (ok) this.onVerified(peer);
            else {
              this.counters.handshakeFailures++;
              if (why === 'auth') {
                // The peer's ZAP refused our key. libzmq does not retry such a connection: drop the peer, so
                // its next beacon dials afresh (and gets in once it trusts us).
                this.noteError(`${peer.name || id} at ${endpoint} refused our key (not in its allowlist)`, `refused by ${id}`);
                setImmediate(() => {
                  if (this.peers.get(id) === peer) this.removePeer(peer, 'leaving');
                });
              } else this.noteError(`CURVE handshake to ${peer.name || id} at ${endpoint} failed (${why}): it does not hold the key it announced`, `handshake ${id}`);
            }
          },
        },
      } : {}),
    });
    try {
      peer.connect(this.uuid, this.hello(), this.opts.sendHighWaterMark);
    } catch (e) {
      // No socket for it (libzmq's socket limit, or the process's open files): not known, so its next beacon
      // or HELLO tries again, rather than a peer we could never send to.
      peer.close();
      this.counters.peersRefused++;
      this.noteError(`peer ${id} at ${endpoint} refused: no socket to it (${(e as Error).message})`, 'socket');
      return undefined;
    }
    this.peers.set(id, peer);
    return peer;
  }

  /**
   * Secure mode: may `key` speak for UUID `id`? Not when the allowlist lacks it (refused, remembered as
   * pending), nor when `id` is bound to another key (a conflict: refused, the genuine peer untouched).
   */
  private keyAcceptable(id: string, key: string, where: { address?: string; name?: string; why: string }, count = true): boolean {
    const c = this.opts.curve!;
    const bound = this.boundKeys.get(id) ?? this.peers.get(id)?.publicKey;
    if (bound !== undefined && bound !== key) {
      if (!count) return false;
      this.counters.keyConflicts++;
      this.noteError(`${where.why} for ${id} with key ${key.slice(0, 8)}… refused: that UUID belongs to another key`, `conflict ${id}`);
      return false;
    }
    if (!c.allows(key)) {
      if (!count) return false;
      this.counters.keysRefused++;
      c.refused?.({ publicKey: key, ...where });
      return false;
    }
    return true;
  }

  /** Secure mode: remembers the key a UUID was proven with (bounded). */
  private bindKey(id: string, key: string): void {
    if (this.boundKeys.has(id)) return;
    if (this.boundKeys.size >= MAX_BOUND_KEYS) this.boundKeys.delete(this.boundKeys.keys().next().value as string);
    this.boundKeys.set(id, key);
  }

  /** Secure mode: our DEALER to `peer` finished its handshake; what the peer sent meanwhile is handled now. */
  private onVerified(peer: Peer): void {
    if (!this.running || this.peers.get(peer.id ?? '') !== peer) return;
    const held = peer.held;
    if (!held) return;
    peer.held = undefined;
    for (const msg of held) {
      if (this.peers.get(peer.id!) !== peer) return; // dropped on the way (a gap)
      this.deliver(peer, msg);
    }
  }

  /** Dials static endpoints we have no peer for (36/ZRE allows any way of learning an endpoint). */
  private dialStatic(): void {
    // Gossip tuples whose node we do not know (any more): dial them again, as a beacon would make us.
    if (this.gossip) for (const [key, value] of this.gossip.view()) if (!this.peers.has(key)) this.onTuple(key, value, false);
    // Secure mode dials only known keys: static peers are met when they dial us (their HELLO names the key).
    for (const endpoint of this.opts.curve ? [] : this.opts.peers ?? []) {
      if (this.pending.has(endpoint)) continue;
      if ([...this.peers.values()].some((p) => p.endpoint === endpoint)) continue;
      const peer = new Peer({ id: undefined, endpoint, queueLimit: this.opts.sendQueueLimit, byteLimit: this.opts.sendQueueBytes, now: now(), isStatic: true });
      this.pending.set(endpoint, peer);
      peer.connect(this.uuid, this.hello(), this.opts.sendHighWaterMark);
    }
  }

  private removePeer(peer: Peer, reason: ExitReason): void {
    if (peer.id && this.peers.get(peer.id) === peer) this.peers.delete(peer.id);
    this.settle(peer);
    this.counters.sendsDropped += peer.dropped; // keep the count once the peer is gone
    peer.close();
    if (peer.ready) this.emit('exit', { ...this.ref(peer), reason });
  }

  private async receiveLoop(router: Router): Promise<void> {
    // receive() directly rather than `for await`: one promise per message instead of two.
    while (!router.closed) {
      let frames: Buffer[];
      try {
        frames = await router.receive();
      } catch (e) {
        if (this.running && !router.closed) this.noteError(`inbox: ${(e as Error).message}`);
        return;
      }
      try {
        this.onMessage(frames);
      } catch (e) {
        // A bug of ours must not stop the inbox: count it and go on with the next message.
        this.counters.internalErrors++;
        this.noteError(`inbox handler: ${(e as Error).message}`);
      }
    }
  }

  /** One message from our ROUTER inbox: routing id frame, then the ZRE frames. */
  private onMessage(frames: Buffer[]): void {
    this.counters.messagesReceived++;
    const [routingId, ...body] = frames;
    // The reference ignores routing ids that are not 0x01 + 16-byte UUID.
    if (!routingId || routingId.length !== 17 || routingId[0] !== 1) {
      this.counters.badRoutingId++;
      return;
    }
    let msg: ZreMessage;
    try {
      msg = decodeZre(body);
    } catch (e) {
      this.counters.messagesMalformed++;
      this.noteError(`malformed message from ${routingId.toString('hex').toUpperCase().slice(2)}: ${e instanceof ZreDecodeError ? e.message : (e as Error).message}`, 'malformed');
      return;
    }
    // Fast path: consecutive messages mostly come from the same peer; compare bytes before building a key.
    let id: string;
    if (this.lastRoutingId?.equals(routingId)) id = this.lastId;
    else {
      id = hexId(routingId.subarray(1));
      this.lastRoutingId = routingId;
      this.lastId = id;
    }
    let peer = this.peers.get(id);
    if (msg.type === 'HELLO') {
      // We only dial what ZeroMQ can connect to: tcp://IPv4:port (36/ZRE: "endpoint" is the peer's inbox).
      if (!dialable(msg.endpoint)) {
        this.counters.messagesMalformed++;
        this.noteError(`HELLO from ${id}: endpoint ${JSON.stringify(msg.endpoint.slice(0, 80))} is not tcp://IPv4:port`, 'hello');
        return;
      }
      const tooBig = this.helloTooBig(msg);
      if (tooBig) {
        this.counters.helloRefused++;
        this.noteError(`HELLO from ${id} refused: ${tooBig}`, 'hello');
        return;
      }
      let key: string | undefined;
      if (this.opts.curve) {
        // Vectors README rule 9: a secure HELLO names its key; Zyre C ignores one without.
        key = msg.headers.get(HEADER_PUBLICKEY);
        if (key === undefined || !isZ85Key(key)) {
          this.counters.helloWithoutKey++;
          this.noteError(`HELLO from ${id} without a valid ${HEADER_PUBLICKEY} ignored (secure mode)`, `nokey ${id}`);
          return;
        }
        if (!this.keyAcceptable(id, key, { name: msg.name, address: hostOf(msg.endpoint), why: 'HELLO' })) return;
      }
      if (peer?.ready) {
        // A second HELLO from a ready peer: it reset its side of us (36/ZRE: HELLO starts a connection's
        // sequence). Zyre C drops and re-creates the peer, which opens a new DEALER and so makes the other side
        // see a re-HELLO in turn; between two such nodes that loops. Here the DEALER stays when the endpoint is
        // the same; the peer's state is taken afresh (EXIT, then ENTER) and our HELLO goes back on the same
        // connection at most once a second, which is all the other side needs to count us ready again.
        this.counters.rehellos++;
        if (msg.endpoint === peer.endpoint) {
          peer.wantSequence = 0;
          if (!peer.acceptSequence(msg)) return;
          const t = now();
          const answer = t - peer.lastRehello >= REHELLO_INTERVAL_MS;
          peer.lastRehello = t;
          peer.lastHeard = t;
          peer.presence = 'alive';
          if (answer) peer.send(this.hello());
          // A re-HELLO that changes nothing (same name, headers, groups and status) is a reconnect, not a
          // restart we must report: typically the peer timed out its half-open side of us under load and
          // dialled again. Reporting it as EXIT and ENTER would be a false EXIT on a live peer.
          if (sameHello(peer, msg)) {
            this.counters.rehellosQuiet++;
            return;
          }
          this.emit('exit', { ...this.ref(peer), reason: 'rehello' });
          this.dispatch(peer, msg);
          return;
        }
        this.removePeer(peer, 'rehello');
        peer = undefined;
      }
      if (!peer) {
        const adopted = key === undefined ? this.pending.get(msg.endpoint) : undefined;
        if (adopted) {
          if (!this.claimEndpoint(msg.endpoint, id)) return;
          this.pending.delete(msg.endpoint);
          adopted.id = id;
          this.peers.set(id, adopted);
          peer = adopted;
        } else peer = this.requirePeer(id, msg.endpoint, false, key);
        if (!peer) return;
      } else if (peer.endpoint !== msg.endpoint) {
        // A half-open peer whose HELLO names another inbox than its beacon did: dial that one instead.
        this.removePeer(peer, 'leaving');
        peer = this.requirePeer(id, msg.endpoint, false, key);
        if (!peer) return;
      }
      this.settle(peer);
      if (this.opts.curve && !peer.verified) {
        // Beyond Zyre: no ENTER until our DEALER's handshake proves the peer holds the key it names. What it
        // sends meanwhile is held, in order, and handled then (see onVerified).
        peer.held = [msg];
        return;
      }
      peer.held = undefined;
    }
    if (peer?.held) {
      if (peer.held.length >= MAX_HELD) {
        this.counters.heldDropped++;
        this.noteError(`${peer.name || id} sent ${MAX_HELD} messages before our handshake to it completed: dropped`, `held ${id}`);
        this.removePeer(peer, 'leaving');
        return;
      }
      peer.held.push(msg);
      return;
    }
    // 36/ZRE: a peer's commands before its HELLO are ignored.
    if (!peer || (!peer.ready && msg.type !== 'HELLO')) {
      this.counters.beforeHello++;
      return;
    }
    this.deliver(peer, msg);
  }

  /** One message of a peer whose HELLO we have (or this HELLO): sequence check, presence, then its event. */
  private deliver(peer: Peer, msg: ZreMessage): void {
    if (msg.type === 'HELLO') {
      peer.ready = true;
      if (peer.publicKey) this.bindKey(peer.id!, peer.publicKey);
    }
    if (!peer.acceptSequence(msg)) {
      this.counters.sequenceGaps++;
      this.noteError(`sequence gap from ${peer.name || peer.id}: got ${msg.sequence}`, `gap ${peer.id}`);
      this.removePeer(peer, 'sequence-gap');
      return;
    }
    peer.lastHeard = now();
    peer.presence = 'alive';
    this.dispatch(peer, msg);
  }

  /** Why a HELLO is over the node's bounds (`maxHeaders`, `maxHeaderValue`, `maxGroups`), or undefined. */
  private helloTooBig(msg: Extract<ZreMessage, { type: 'HELLO' }>): string | undefined {
    if (msg.headers.size > this.opts.maxHeaders) return `${msg.headers.size} headers (at most ${this.opts.maxHeaders})`;
    for (const [k, v] of msg.headers) {
      if (Buffer.byteLength(v) > this.opts.maxHeaderValue) return `header ${JSON.stringify(k.slice(0, 40))} is ${Buffer.byteLength(v)} bytes (at most ${this.opts.maxHeaderValue})`;
    }
    if (msg.groups.length > this.opts.maxGroups) return `${msg.groups.length} groups (at most ${this.opts.maxGroups})`;
    return undefined;
  }

  private dispatch(peer: Peer, msg: ZreMessage): void {
    switch (msg.type) {
      case 'HELLO': {
        peer.name = msg.name;
        peer.headers = msg.headers;
        peer.status = msg.status;
        peer.groups.clear();
        this.emit('enter', this.info(peer));
        for (const group of msg.groups) {
          peer.groups.add(group);
          this.emit('join', { ...this.ref(peer), group });
        }
        return;
      }
      case 'WHISPER':
        this.emit('whisper', { ...this.ref(peer), content: msg.content });
        return;
      case 'SHOUT':
        this.emit('shout', { ...this.ref(peer), group: msg.group, content: msg.content });
        return;
      case 'JOIN':
      case 'LEAVE': {
        // The status carried must equal our count of their JOIN/LEAVEs (the reference asserts; we drop the peer).
        peer.status = (peer.status + 1) & 0xff;
        if (msg.status !== peer.status) {
          this.counters.statusMismatches++;
          this.noteError(`group status from ${peer.name}: got ${msg.status}, expected ${peer.status}`, `status ${peer.id}`);
          this.removePeer(peer, 'status-mismatch');
          return;
        }
        if (msg.type === 'JOIN') {
          if (!peer.groups.has(msg.group) && peer.groups.size >= this.opts.maxGroups) {
            this.counters.groupsRefused++;
            return;
          }
          peer.groups.add(msg.group);
          this.emit('join', { ...this.ref(peer), group: msg.group });
        } else {
          peer.groups.delete(msg.group);
          this.emit('leave', { ...this.ref(peer), group: msg.group });
        }
        return;
      }
      case 'PING':
        peer.send({ type: 'PING_OK' });
        return;
      case 'GOODBYE':
        // Sent instead of a port-0 beacon where there are no beacons (gossip, static peers).
        this.removePeer(peer, 'goodbye');
        return;
      case 'PING_OK':
        peer.pingAnswered();
        return;
      case 'ELECT':
      case 'LEADER':
        // Leader election is not implemented: parsed and ignored.
        return;
    }
  }

  /** Presence (36/ZRE "Heartbeating"): ping quiet peers, report EVASIVE/SILENT, drop the expired. */
  private checkPresence(): void {
    const t = now();
    for (const peer of [...this.peers.values(), ...this.pending.values()]) {
      const quiet = t - peer.lastHeard;
      if (peer.id && !peer.ready && quiet >= this.opts.handshakeTimeout) {
        // Dialled after its beacon, never sent HELLO: a phantom (or a peer that will beacon again).
        this.counters.handshakeTimeouts++;
        this.removePeer(peer, 'expired');
        continue;
      }
      if (quiet >= this.opts.expiredTimeout) {
        if (!peer.id) {
          // A static endpoint that never answered: dial it afresh on the next beacon tick.
          this.pending.delete(peer.endpoint);
          peer.close();
        } else this.removePeer(peer, 'expired');
        continue;
      }
      // Ping from half the evasive timeout, so an idle healthy peer answers before it would count as evasive.
      if (!peer.ready || quiet < this.opts.evasiveTimeout / 2) continue;
      peer.send({ type: 'PING' });
      if (quiet < this.opts.evasiveTimeout) continue;
      if (quiet >= this.opts.silentTimeout && peer.presence !== 'silent') {
        if (peer.presence === 'alive') this.emit('evasive', this.ref(peer));
        peer.presence = 'silent';
        this.emit('silent', this.ref(peer));
      } else if (peer.presence === 'alive') {
        peer.presence = 'evasive';
        this.emit('evasive', this.ref(peer));
      }
    }
  }
}

/** Whether a HELLO repeats what a ready peer already told us: name, status, groups and headers. */
function sameHello(peer: Peer, msg: Extract<ZreMessage, { type: 'HELLO' }>): boolean {
  if (msg.name !== peer.name || msg.status !== peer.status || msg.groups.length !== peer.groups.size || msg.headers.size !== peer.headers.size) return false;
  for (const g of msg.groups) if (!peer.groups.has(g)) return false;
  for (const [k, v] of msg.headers) if (peer.headers.get(k) !== v) return false;
  return true;
}

const toBuffer = (c: Buffer | string): Buffer => (typeof c === 'string' ? Buffer.from(c, 'utf8') : c);
