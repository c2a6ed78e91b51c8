/**
 * One remote ZRE peer as this node sees it: the DEALER we talk to it on, the sequence numbers both ways,
 * its groups and group status, and its presence. Owned and driven by {@link ZreNode}; not public API.
 */
import { Dealer } from 'zeromq';
import { BoundedQueue } from '../queue.ts';
import { encodeZre, whisperHeader, type Headers, type ZreMessage } from './codec.ts';

export type Presence = 'alive' | 'evasive' | 'silent';

/** A secure-mode peer's DEALER: a CURVE client of the peer's key, with our key pair. */
export interface PeerCurve {
  serverKey: string;
  publicKey: string;
  secretKey: string;
  /** Our DEALER's handshake succeeded (once), or failed (`why`: protocol, auth, other; may repeat on retries). */
  onHandshake(ok: boolean, why?: string): void;
}

/**
 * How long one TCP connect to a peer's inbox may take before libzmq gives it up and dials again (after its
 * 100 ms reconnect interval): ZMQ_CONNECT_TIMEOUT. Without it a lost SYN waits for the kernel to resend it,
 * which the boards' kernel (Debian's 6.1) does after 1, 3, 7, 15 s: on a lossy Wi-Fi link a peer could wait
 * many seconds for a connection one fresh SYN makes in a round trip. With it a SYN goes out about every
 * 1.1 s (test/net/connect.test.ts: 70 ms from the link healing to ENTER, against 6.4 s without).
 */
export const CONNECT_TIMEOUT_MS = 1000;

/** Distributes a message type over the union so `sequence` can be left to the peer. */
type Unsequenced<M> = M extends unknown ? Omit<M, 'sequence'> : never;
export type OutgoingMessage = Unsequenced<ZreMessage>;

const EMPTY = Buffer.alloc(0);

export class Peer {
  /** Uppercase hex of the 16-byte UUID; undefined only for a static endpoint we have not heard from yet. */
  id: string | undefined;
  endpoint: string;
  name = '';
  headers: Headers = new Map();
  readonly groups = new Set<string>();
  /** Their group status as we track it: set by HELLO, +1 (mod 256) on each JOIN/LEAVE. */
  status = 0;
  /** True once their HELLO arrived; before that their traffic is ignored (36/ZRE: HELLO first). */
  ready = false;
  presence: Presence = 'alive';
  /** When we last heard any message from them (ms, monotonic). Beacons do not count (Zyre C does the same). */
  lastHeard: number;
  /** True when this peer came from the static endpoint list rather than a beacon. */
  readonly isStatic: boolean;
  /** The beacon's source address while the peer is half-open (dialled, no HELLO yet); the node's bookkeeping. */
  source: string | undefined;
  /** When we last answered a re-HELLO with our own (ms, monotonic). */
  lastRehello = -Infinity;
  /** The sequence the next message must carry, minus one (0 before HELLO). */
  wantSequence = 0;

  private dealer: Dealer | undefined;
  private readonly queue: BoundedQueue<Buffer[]>;
  private sentSequence = 0;
  private pumping = false;
  private closed = false;
  private drainWaiters: (() => void)[] = [];
  private pingsSent = 0;
  private pingOks = 0;
  private flushWaiters: { until: number; resolve: (ok: boolean) => void }[] = [];

  private queuedBytes = 0;
  private readonly byteLimit: number;

  /** Secure mode: the peer's CURVE public key (Z85), from its beacon, HELLO or gossip tuple. */
  readonly publicKey: string | undefined;
  /** Secure mode: our DEALER completed its CURVE handshake with {@link publicKey} (the peer holds the secret). */
  verified = false;
  /** Secure mode: the HELLO and what followed it, held until {@link verified} (then handled in order). */
  held: ZreMessage[] | undefined;
  private readonly curve: PeerCurve | undefined;

  constructor(opts: { id: string | undefined; endpoint: string; queueLimit: number; byteLimit: number; now: number; isStatic?: boolean; curve?: PeerCurve }) {
    this.id = opts.id;
    this.endpoint = opts.endpoint;
    this.queue = new BoundedQueue(opts.queueLimit);
    this.byteLimit = opts.byteLimit;
    this.lastHeard = opts.now;
    this.isStatic = opts.isStatic ?? false;
    this.curve = opts.curve;
    this.publicKey = opts.curve?.serverKey;
  }

  /** Messages refused because this peer's send queue was full. */
  get dropped(): number {
    return this.queue.dropped;
  }

  /** Messages waiting in our queue (not yet handed to ZeroMQ). */
  get queued(): number {
    return this.queue.length;
  }

  /**
   * Opens the DEALER (routing id 0x01 + our UUID, linger 0) and queues HELLO with sequence 1 ahead of
   * anything else (36/ZRE: "the first command on any new connection MUST be HELLO").
   */
  connect(ourUuid: Buffer, hello: OutgoingMessage, sendHighWaterMark: number): void {
    const c = this.curve;
    this.dealer = c
      ? new Dealer({ linger: 0, sendHighWaterMark, connectTimeout: CONNECT_TIMEOUT_MS, curveServerKey: c.serverKey, curvePublicKey: c.publicKey, curveSecretKey: c.secretKey })
      : new Dealer({ linger: 0, sendHighWaterMark, connectTimeout: CONNECT_TIMEOUT_MS });
    const mechanism = this.dealer.securityMechanism;
    if (c && mechanism !== 'curve') {
      // As Zyre checks after setting the keys: never talk to a secure peer in the clear.
      this.dealer.close();
      this.dealer = undefined;
      throw new Error(`the DEALER to ${this.endpoint} runs ${mechanism ?? 'no'} security, not CURVE`);
    }
    if (c) {
      // The handshake proves the peer at this endpoint holds the secret of the key we dialled with.
      const events = this.dealer.events;
      const dealer = this.dealer;
      events.on('handshake', () => {
        if (this.dealer !== dealer || this.verified) return;
        this.verified = true;
        c.onHandshake(true);
      });
      for (const kind of ['handshake:error:protocol', 'handshake:error:auth', 'handshake:error:other'] as const) {
        events.on(kind, () => {
          if (this.dealer === dealer) c.onHandshake(false, kind.slice(16));
        });
      }
    }
    this.dealer.routingId = Buffer.concat([Buffer.from([1]), ourUuid]) as unknown as string;
    this.dealer.connect(this.endpoint);
    this.sentSequence = 0;
    this.send(hello);
  }

  /**
   * A new DEALER to the same inbox (our address changed: the old connection may be dead without knowing it),
   * HELLO first on it. What was queued for the old one is discarded.
   */
  reconnect(ourUuid: Buffer, hello: OutgoingMessage, sendHighWaterMark: number): void {
    if (this.closed) return;
    const old = this.dealer;
    this.queue.clear();
    this.queuedBytes = 0;
    this.dealer = undefined;
    if (old) {
      old.linger = 0;
      old.close();
    }
    this.connect(ourUuid, hello, sendHighWaterMark);
  }

  /**
   * Queues one message with the next sequence number (HELLO is 1; then +1 mod 65536). Never blocks: when the
   * queue is full (by count, or by bytes unless it is empty) the message is refused before it takes a sequence
   * number (so the peer sees no gap), counted in {@link dropped}, and false is returned.
   * Cost: one encode, one array slot.
   */
  send(msg: OutgoingMessage): boolean {
    if (this.closed || !this.dealer) return false;
    // 36/ZRE allows WHISPER and SHOUT without content, but Zyre C merges such a message with the next one and
    // pyre's node thread dies on it: send one empty frame instead, as Zyre C does (vector whisper-empty-content).
    if ((msg.type === 'WHISPER' || msg.type === 'SHOUT') && msg.content.length === 0) msg = { ...msg, content: [EMPTY] };
    const frames = msg.type === 'WHISPER' ? [whisperHeader(0), ...msg.content] : encodeZre({ ...msg, sequence: 0 } as ZreMessage);
    let bytes = 0;
    for (const f of frames) bytes += f.length;
    if (this.queue.length === this.queue.capacity || (this.queue.length > 0 && this.queuedBytes + bytes > this.byteLimit)) {
      this.queue.dropped++;
      return false;
    }
    const sequence = msg.type === 'HELLO' ? 1 : (this.sentSequence + 1) & 0xffff;
    frames[0]!.writeUInt16BE(sequence, 4); // every ZRE header frame: signature, id, version, then the sequence
    this.sentSequence = sequence;
    if (msg.type === 'PING') this.pingsSent++;
    this.queuedBytes += bytes;
    this.queue.push(frames);
    if (!this.pumping) void this.pump();
    return true;
  }

  /** Resolves when our queue is empty (everything handed to ZeroMQ), or at once if it is. */
  drained(): Promise<void> {
    if (this.queue.length === 0 && !this.pumping) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /**
   * Resolves true once the peer has handled everything sent so far: we PING it and wait for the matching
   * PING_OK (answers come in order on one connection). Resolves false after `timeoutMs` or if the peer goes.
   */
  flush(timeoutMs: number): Promise<boolean> {
    if (!this.send({ type: 'PING' })) return Promise.resolve(false);
    const until = this.pingsSent;
    return new Promise((resolve) => {
      const waiter = { until, resolve: (ok: boolean) => { clearTimeout(timer); resolve(ok); } };
      const timer = setTimeout(() => {
        this.flushWaiters = this.flushWaiters.filter((w) => w !== waiter);
        resolve(false);
      }, timeoutMs);
      this.flushWaiters.push(waiter);
    });
  }

  /** Called for each PING_OK the peer sends. */
  pingAnswered(): void {
    this.pingOks++;
    const done = this.flushWaiters.filter((w) => w.until <= this.pingOks);
    this.flushWaiters = this.flushWaiters.filter((w) => w.until > this.pingOks);
    for (const w of done) w.resolve(true);
  }

  /**
   * Checks an incoming sequence number: HELLO must be 1, anything else the previous +1 mod 65536.
   * Returns false on a gap or repeat; the node then drops the peer, as the reference does.
   */
  acceptSequence(msg: ZreMessage): boolean {
    this.wantSequence = msg.type === 'HELLO' ? 1 : (this.wantSequence + 1) & 0xffff;
    return msg.sequence === this.wantSequence;
  }

  /**
   * Closes the DEALER. Messages still in our queue are discarded; those already handed to ZeroMQ get up to
   * `linger` ms to leave (0: discarded too).
   */
  close(linger = 0): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.clear();
    this.queuedBytes = 0;
    if (this.dealer) this.dealer.linger = linger;
    this.dealer?.close();
    this.dealer = undefined;
    this.resolveDrain();
    for (const w of this.flushWaiters) w.resolve(false);
    this.flushWaiters = [];
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      for (let frames = this.queue.peek(); frames && this.dealer; frames = this.queue.peek()) {
        // Only one send may be in flight per zeromq.js socket; this await is what bounds ZeroMQ's own queue.
        await this.dealer.send(frames);
        this.queue.shift();
        for (const f of frames) this.queuedBytes -= f.length;
      }
    } catch {
      // The socket was closed under us (peer removed); queued messages go with it.
    } finally {
      this.pumping = false;
      if (this.queue.length === 0 || this.closed) this.resolveDrain();
    }
  }

  private resolveDrain(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }
}
