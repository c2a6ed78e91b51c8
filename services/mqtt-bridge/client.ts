/**
 * A small MQTT client on mqtt-packet over node:net and node:tls (MQTT 3.1.1 and 5; QoS 0 and 1), written for
 * footprint: it does what the bridge needs and nothing else (MQTT.js would add about 10 times the code).
 *
 * - Persistent sessions by default (clean = false): after a reconnect the broker keeps our subscriptions and
 *   we re-send every unacknowledged QoS 1 PUBLISH with its original packet id and DUP set (MQTT 3.1.1
 *   §4.4, [MQTT-4.4.0-1]).
 * - Keepalive: a PINGREQ when nothing else was sent for `keepalive` s; no answer within the next `keepalive` s
 *   means the link is dead, and we reconnect ([MQTT-3.1.2-24] gives the broker 1.5 ×).
 * - Reconnect with the one backoff helper; a last will for availability; username/password; TLS with a CA
 *   and client certificates.
 * - Failover: `failover` lists more brokers after `url`. A connection lost, or an attempt that fails, moves to
 *   the next one in order (wrapping round), at once while some broker of the list has not failed since the last
 *   good connection, after the backoff's delay once they all have. The client stays on the broker it has
 *   until that one fails. Everything in flight is sent again to the next broker (a QoS 1 message may then
 *   arrive at both: MQTT's at-least-once).
 * - In-flight QoS 1 messages are bounded (`maxInflight`); `publish` waits for room.
 * - Nothing the broker does can wedge or bloat it: a packet whose remaining length passes `maxPacketSize` ends
 *   the connection before it is buffered; no CONNACK within `connackTimeout`, or no PUBACK for the oldest
 *   message within `pubackTimeout`, means reconnect; the backoff is reset only once a connection has lasted
 *   `stableAfter`, so a broker that accepts and then drops us is retried ever more slowly.
 * - A message the broker will not take cannot poison the link. Brokers disconnect on a PUBLISH they reject
 *   (MQTT 3.1.1 has no other way), and which one it was cannot be told while several are in flight; so after a
 *   connection is lost with messages unacknowledged, the next connection re-sends only the oldest and waits
 *   for its PUBACK before the rest (probing). A connection lost while a probe was the only message in flight
 *   counts against that message; at `maxDeliveries` it is given up: its `publish` rejects with
 *   {@link MqttGiveUpError} and the rest go on.
 */
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { Backoff } from '../../runtime/backoff.ts';

type MqttPacket = Record<string, unknown> & { cmd: string };
interface MqttPacketLib {
  parser(opts: { protocolVersion: number }): EventEmitter & { parse(b: Buffer): number };
  generate(packet: MqttPacket, opts: { protocolVersion: number }): Buffer;
}
// mqtt-packet, loaded by the first start(): a device without a bridge never pays for it.
let mqtt: MqttPacketLib;

export interface MqttOptions {
  /** mqtt://host:port or mqtts://host:port */
  url: string;
  /** Brokers to fail over to, in order, after `url` (the same client id, credentials and TLS settings). */
  failover?: string[];
  clientId: string;
  protocolVersion?: 4 | 5;
  /** seconds; 0 disables. Default 30. */
  keepalive?: number;
  /** Default false: a persistent session. */
  clean?: boolean;
  username?: string;
  password?: string;
  will?: { topic: string; payload: string | Buffer; qos?: 0 | 1; retain?: boolean };
  tls?: { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer; rejectUnauthorized?: boolean };
  /** ms. Default 1 s … 60 s. */
  reconnect?: { min: number; max: number };
  /** QoS 1 messages awaiting PUBACK at once. Default 32. */
  maxInflight?: number;
  /** Largest packet taken from the broker, bytes (remaining length). Default 1 MiB. */
  maxPacketSize?: number;
  /** ms from opening the socket to CONNACK. Default 10 s. */
  connackTimeout?: number;
  /** ms the oldest sent QoS 1 message may wait for its PUBACK while connected. Default 30 s. */
  pubackTimeout?: number;
  /** ms a connection must last before the reconnect backoff starts again from its minimum. Default 10 s. */
  stableAfter?: number;
  /** Connections lost while one message was the oldest unacknowledged, before it is given up. Default 5. */
  maxDeliveries?: number;
}

export class MqttError extends Error {
  override name = 'MqttError';
}

/** A QoS 1 message given up after `maxDeliveries` lost connections, or refused by the broker (MQTT 5 PUBACK ≥ 0x80). */
export class MqttGiveUpError extends MqttError {
  override name = 'MqttGiveUpError';
}

interface Inflight {
  packet: MqttPacket;
  /** Connections lost while this message was the probe, alone in flight. */
  failures: number;
  sentAt: number;
  /** The connection it was last sent on (see `connection`). */
  sentOn: number;
  resolve: () => void;
  reject: (e: Error) => void;
}

const CONNACK_REASONS: Record<number, string> = {
  1: 'unacceptable protocol version', 2: 'identifier rejected', 3: 'server unavailable', 4: 'bad user name or password', 5: 'not authorized',
  128: 'unspecified error', 133: 'client identifier not valid', 134: 'bad user name or password', 135: 'not authorized', 136: 'server unavailable',
};

export class MqttClient extends EventEmitter<{
  connect: [{ sessionPresent: boolean }];
  close: [string];
  message: [string, Buffer, { retain: boolean; qos: number }];
}> {
  private socket: Socket | undefined;
  private connected = false;
  private stopped = true;
  private nextId = 1;
  private readonly inflight = new Map<number, Inflight>();
  private readonly subacks = new Map<number, (granted: number[]) => void>();
  private roomWaiters: (() => void)[] = [];
  private readonly backoff: Backoff;
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private lastSent = 0;
  /** A cork is on the socket until the next tick (see send). */
  private corked = false;
  private pingPending = false;
  private readonly version: 4 | 5;
  private connackTimer: NodeJS.Timeout | undefined;
  /** Counts accepted connections; each in-flight message notes the one it was sent on. */
  private connection = 0;
  /** After a connection was lost with messages unacknowledged: send only the oldest until its PUBACK. */
  private probing = false;
  private stableTimer: NodeJS.Timeout | undefined;
  private pubackTimer: NodeJS.Timeout | undefined;
  /** The brokers, `url` first, and which one is in use (or being tried). */
  private readonly urls: string[];
  private at = 0;
  /** Brokers that failed since the last accepted connection: the backoff applies once all have. */
  private failedInRound = 0;
  /** Moves to another broker of the list. */
  failovers = 0;
  /** Connection attempts that failed, and the last reason. */
  failures = 0;
  lastError: string | undefined;
  /** Counters of what the broker did wrong: oversized packets, missing CONNACKs and PUBACKs, messages given up. */
  readonly faults = { oversized: 0, connackTimeouts: 0, pubackTimeouts: 0, givenUp: 0 };

  constructor(readonly options: MqttOptions) {
    super();
    this.version = options.protocolVersion ?? 4;
    this.backoff = new Backoff(options.reconnect ?? { min: 1000, max: 60_000 });
    this.urls = [options.url, ...(options.failover ?? [])];
  }

  /** The broker in use, or being tried. */
  get url(): string {
    return this.urls[this.at]!;
  }

  /** Its place in the list: 0 for `url`, 1 for the first of `failover`, … */
  get broker(): number {
    return this.at;
  }

  get isConnected(): boolean {
    return this.connected;
  }

  /** Starts connecting (and reconnecting); resolves at the first CONNACK accepted. */
  async start(): Promise<void> {
    if (!mqtt) {
      const m = (await import('mqtt-packet')) as unknown as MqttPacketLib & { default?: MqttPacketLib };
      mqtt = m.default ?? m;
    }
    this.stopped = false;
    const first = new Promise<void>((resolve) => this.once('connect', () => resolve()));
    this.open();
    return first;
  }

  /** Sends DISCONNECT (no last will then) and closes; in-flight messages stay in the session. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.keepaliveTimer);
    this.clearConnectionTimers();
    const socket = this.socket;
    if (socket && this.connected) {
      await new Promise<void>((resolve) => socket.write(mqtt.generate({ cmd: 'disconnect' }, { protocolVersion: this.version }), () => resolve()));
    }
    socket?.end();
    socket?.destroy();
    this.connected = false;
    for (const w of this.roomWaiters.splice(0)) w();
  }

  /**
   * Publishes. QoS 0 resolves once written (rejects when not connected); QoS 1 resolves on PUBACK, survives
   * reconnects (re-sent with DUP) and rejects only if the client is stopped first.
   */
  async publish(topic: string, payload: string | Buffer, opts: { qos?: 0 | 1; retain?: boolean } = {}): Promise<void> {
    const qos = opts.qos ?? 0;
    if (qos === 0) {
      if (!this.connected) throw new MqttError(`not connected to ${this.url}`);
      this.send({ cmd: 'publish', topic, payload, qos: 0, retain: opts.retain ?? false, dup: false });
      return;
    }
    while (this.inflight.size >= (this.options.maxInflight ?? 32)) {
      if (this.stopped) throw new MqttError('client stopped');
      await new Promise<void>((r) => this.roomWaiters.push(r));
    }
    const messageId = this.allocateId();
    const packet: MqttPacket = { cmd: 'publish', topic, payload, qos: 1, retain: opts.retain ?? false, dup: false, messageId };
    return new Promise((resolve, reject) => {
      const f: Inflight = { packet, resolve, reject, failures: 0, sentAt: Date.now(), sentOn: 0 };
      this.inflight.set(messageId, f);
      if (this.connected && !this.probing) this.transmit(f);
    });
  }

  /** Subscribes (QoS 0 or 1); resolves with the granted QoS. Needs a connection. */
  subscribe(topic: string, qos: 0 | 1 = 1): Promise<number[]> {
    if (!this.connected) return Promise.reject(new MqttError(`not connected to ${this.url}`));
    const messageId = this.allocateId();
    return new Promise((resolve) => {
      this.subacks.set(messageId, resolve);
      this.send({ cmd: 'subscribe', messageId, subscriptions: [{ topic, qos }] });
    });
  }

  /** QoS 1 messages sent or waiting to be sent that the broker has not acknowledged. */
  get unacknowledged(): number {
    return this.inflight.size;
  }

  private allocateId(): number {
    for (;;) {
      const id = this.nextId;
      this.nextId = this.nextId === 0xffff ? 1 : this.nextId + 1;
      if (!this.inflight.has(id) && !this.subacks.has(id)) return id;
    }
  }

  /**
   * Writes a packet. Packets written in the same tick leave in one write (the socket is corked until the next
   * tick): a burst of PUBLISHes costs one system call, not one each.
   */
  private send(packet: MqttPacket): void {
    const socket = this.socket;
    if (!socket) return;
    if (!this.corked) {
      this.corked = true;
      socket.cork();
      process.nextTick(() => {
        this.corked = false;
        socket.uncork();
      });
    }
    socket.write(packet.cmd === 'publish' ? encodePublish(packet, this.version) : mqtt.generate(packet, { protocolVersion: this.version }));
    this.lastSent = Date.now();
  }

  private open(): void {
    const url = new URL(this.url);
    const port = Number(url.port || (url.protocol === 'mqtts:' ? 8883 : 1883));
    const host = url.hostname;
    const t = this.options.tls;
    const socket = url.protocol === 'mqtts:'
      // net and tls are loaded on first use (tls alone adds ~20 ms to every start of the CLI).
      ? (process.getBuiltinModule('node:tls') as typeof import('node:tls')).connect({ host, port, ca: t?.ca, cert: t?.cert, key: t?.key, rejectUnauthorized: t?.rejectUnauthorized ?? true, servername: host })
      : (process.getBuiltinModule('node:net') as typeof import('node:net')).connect({ host, port, noDelay: true });
    this.socket = socket;
    const parser = mqtt.parser({ protocolVersion: this.version });
    parser.on('packet', (p: MqttPacket) => this.onPacket(p));
    parser.on('error', (e: Error) => this.fail(socket, `malformed packet from the broker: ${e.message}`));
    const limit = this.options.maxPacketSize ?? 1024 * 1024;
    const sizes = new PacketSizes(limit);
    const connackMs = this.options.connackTimeout ?? 10_000;
    this.connackTimer = setTimeout(() => {
      this.faults.connackTimeouts++;
      this.fail(socket, `no CONNACK within ${connackMs / 1000} s`);
    }, connackMs);
    socket.on(url.protocol === 'mqtts:' ? 'secureConnect' : 'connect', () => {
      const o = this.options;
      const will = o.will ? { topic: o.will.topic, payload: Buffer.from(o.will.payload), qos: o.will.qos ?? 1, retain: o.will.retain ?? true } : undefined;
      this.send({
        cmd: 'connect', protocolId: 'MQTT', protocolVersion: this.version, clientId: o.clientId, clean: o.clean ?? false,
        keepalive: o.keepalive ?? 30, username: o.username, password: o.password === undefined ? undefined : Buffer.from(o.password), will,
        // MQTT 5: keep the session when the connection drops (3.1.1 does so whenever clean is false).
        // MQTT 5 also tells the broker the largest packet we take (it must not send larger, [MQTT-3.1.2-24]).
        ...(this.version === 5 ? { properties: { ...(!(o.clean ?? false) ? { sessionExpiryInterval: 0xffffffff } : {}), maximumPacketSize: limit + 5 } } : {}),
      });
    });
    socket.on('data', (d: Buffer) => {
      // The size check runs on the stream before mqtt-packet buffers a packet whole.
      const over = sizes.feed(d);
      if (over !== undefined) {
        this.faults.oversized++;
        this.fail(socket, `the broker sent a packet of ${over} bytes, over the limit of ${limit} (maxPacketSize)`);
        return;
      }
      parser.parse(d);
    });
    socket.on('error', (e) => this.fail(socket, e.message));
    socket.on('close', () => this.fail(socket, 'connection closed'));
  }

  private fail(socket: Socket, reason: string): void {
    if (socket !== this.socket) return;
    this.socket = undefined;
    socket.destroy();
    clearInterval(this.keepaliveTimer);
    this.clearConnectionTimers();
    const was = this.connected;
    this.connected = false;
    if (!was) this.failures++;
    this.lastError = reason;
    if (was) this.blameProbe(reason);
    this.emit('close', reason);
    if (this.stopped) {
      for (const w of this.roomWaiters.splice(0)) w();
      return;
    }
    let delay: number;
    if (this.urls.length > 1) {
      this.failedInRound++;
      this.at = (this.at + 1) % this.urls.length;
      this.failovers++;
      // The next broker at once, while one has not failed in this round; the backoff once all have.
      delay = this.failedInRound < this.urls.length ? 0 : this.backoff.next();
      if (this.failedInRound >= this.urls.length) this.failedInRound = 0;
    } else delay = this.backoff.next();
    this.reconnectTimer = setTimeout(() => this.open(), delay);
  }

  private onPacket(p: MqttPacket): void {
    switch (p.cmd) {
      case 'connack': {
        const code = (p.returnCode ?? p.reasonCode ?? 0) as number;
        if (code !== 0) {
          this.fail(this.socket!, `broker refused the connection: ${CONNACK_REASONS[code] ?? `code ${code}`}`);
          return;
        }
        clearTimeout(this.connackTimer);
        this.connected = true;
        this.failedInRound = 0;
        // Reset the backoff only once this connection has lasted: a broker that accepts and then drops us at
        // once must not be hammered at the minimum delay.
        this.stableTimer = setTimeout(() => this.backoff.reset(), this.options.stableAfter ?? 10_000);
        this.startKeepalive();
        this.startPubackWatch();
        this.connection++;
        // [MQTT-4.4.0-1]: re-send unacknowledged QoS 1 PUBLISHes, with their ids, DUP set, in order; while
        // probing only the oldest, the rest once it is acknowledged.
        if (this.probing) {
          const first = this.inflight.values().next().value;
          if (first) this.transmit(first);
          else this.probing = false;
        } else this.transmitUnsent();
        this.emit('connect', { sessionPresent: Boolean(p.sessionPresent) });
        return;
      }
      case 'puback': {
        const f = this.inflight.get(p.messageId as number);
        if (!f) return;
        this.inflight.delete(p.messageId as number);
        if (this.probing) {
          // The probe went through: the link takes messages; send the rest.
          this.probing = false;
          this.transmitUnsent();
        }
        const reason = (p.reasonCode ?? 0) as number;
        if (reason >= 0x80) {
          // MQTT 5 §3.4.2.1: the broker refused this message; sending it again would not help.
          this.faults.givenUp++;
          f.reject(new MqttGiveUpError(`the broker refused the message to '${String(f.packet.topic).slice(0, 80)}' (PUBACK reason 0x${reason.toString(16)})`));
        } else f.resolve();
        this.roomWaiters.shift()?.();
        return;
      }
      case 'suback':
        this.subacks.get(p.messageId as number)?.(p.granted as number[]);
        this.subacks.delete(p.messageId as number);
        return;
      case 'publish': {
        const qos = (p.qos ?? 0) as number;
        if (qos === 1) this.send({ cmd: 'puback', messageId: p.messageId });
        this.emit('message', p.topic as string, p.payload as Buffer, { retain: Boolean(p.retain), qos });
        return;
      }
      case 'pingresp':
        this.pingPending = false;
        return;
      case 'disconnect':
        this.fail(this.socket!, `broker disconnected us${p.reasonCode ? ` (reason ${p.reasonCode})` : ''}`);
        return;
    }
  }

  private clearConnectionTimers(): void {
    clearTimeout(this.connackTimer);
    clearTimeout(this.stableTimer);
    clearInterval(this.pubackTimer);
  }

  /** Sends one in-flight message on this connection (DUP when it was sent before). */
  private transmit(f: Inflight): void {
    if (f.packet.sent) f.packet.dup = true;
    f.packet.sent = true;
    f.sentAt = Date.now();
    f.sentOn = this.connection;
    this.send(f.packet);
  }

  /** Sends, in order, every in-flight message not yet sent on this connection. */
  private transmitUnsent(): void {
    for (const f of this.inflight.values()) if (f.sentOn !== this.connection) this.transmit(f);
  }

  /**
   * The connection went. With messages unacknowledged, the next connection probes (see the class comment); if
   * this one was already probing, its one message in flight is what the broker choked on, and at
   * `maxDeliveries` such losses it is given up (rejected).
   */
  private blameProbe(reason: string): void {
    const [id, oldest] = this.inflight.entries().next().value ?? [];
    if (id === undefined || !oldest) return;
    const wasProbe = this.probing && oldest.sentOn === this.connection;
    this.probing = true;
    if (!wasProbe) return;
    oldest.failures++;
    const max = this.options.maxDeliveries ?? 5;
    if (oldest.failures < max) return;
    this.inflight.delete(id);
    this.faults.givenUp++;
    oldest.reject(new MqttGiveUpError(`given up on the message to '${String(oldest.packet.topic).slice(0, 80)}': the connection dropped ${max} times before its PUBACK (last: ${reason})`));
    this.roomWaiters.shift()?.();
  }

  /** No PUBACK for the oldest sent message within `pubackTimeout` while connected: the link is stuck; reconnect. */
  private startPubackWatch(): void {
    const ms = this.options.pubackTimeout ?? 30_000;
    this.pubackTimer = setInterval(() => {
      const oldest = this.inflight.values().next().value;
      if (!oldest?.packet.sent || Date.now() - oldest.sentAt < ms || !this.socket) return;
      this.faults.pubackTimeouts++;
      this.fail(this.socket, `no PUBACK within ${ms / 1000} s`);
    }, Math.min(ms, 1000));
  }

  private startKeepalive(): void {
    const k = (this.options.keepalive ?? 30) * 1000;
    if (!k) return;
    this.pingPending = false;
    clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = setInterval(() => {
      if (this.pingPending) {
        this.fail(this.socket!, `no PINGRESP within ${k / 1000} s`);
        return;
      }
      if (Date.now() - this.lastSent >= k / 2) {
        this.pingPending = true;
        this.send({ cmd: 'pingreq' });
      }
    }, k / 2);
  }
}

/**
 * Follows MQTT packet boundaries on the byte stream (a fixed-header byte, then the remaining length as a
 * variable byte integer of 1–4 bytes, MQTT 3.1.1 §2.2.3) and reports the first packet whose remaining length
 * passes the limit, before anything buffers it. Cost: a few integer operations per packet.
 */
export class PacketSizes {
  /** Body bytes of the current packet still to come; -1 while reading a fixed header. */
  private rest = -1;
  private headerBytes = 0;
  private length = 0;
  private multiplier = 1;

  constructor(private readonly limit: number) {}

  /** Feeds one chunk; returns the size of an oversized packet, or undefined. */
  feed(chunk: Buffer): number | undefined {
    let i = 0;
    while (i < chunk.length) {
      if (this.rest > 0) {
        const take = Math.min(this.rest, chunk.length - i);
        this.rest -= take;
        i += take;
        continue;
      }
      const byte = chunk[i++]!;
      if (this.headerBytes === 0) {
        this.headerBytes = 1; // the packet type byte
        this.length = 0;
        this.multiplier = 1;
        continue;
      }
      this.length += (byte & 0x7f) * this.multiplier;
      this.multiplier *= 128;
      this.headerBytes++;
      if (byte & 0x80) {
        if (this.headerBytes > 4) return this.length; // malformed: the parser would reject it; stop here too
        continue;
      }
      if (this.length > this.limit) return this.length;
      this.rest = this.length;
      this.headerBytes = 0;
      if (this.rest === 0) this.rest = -1;
    }
    return undefined;
  }
}

/**
 * A PUBLISH packet, encoded here rather than by mqtt-packet: it is the one packet sent per message, and this
 * costs one allocation (mqtt-packet's generate concatenates several and logs through `debug` on each).
 * MQTT 3.1.1 §3.3 / MQTT 5 §3.3: fixed header (type 3, DUP, QoS, RETAIN), remaining length (variable byte
 * integer), topic (u16 length + UTF-8), packet identifier for QoS > 0, MQTT 5 only: properties (none: length 0),
 * then the payload.
 */
export function encodePublish(p: MqttPacket, version: number): Buffer {
  const topic = p.topic as string;
  const payload = typeof p.payload === 'string' ? Buffer.from(p.payload) : (p.payload as Buffer);
  const qos = (p.qos as number | undefined) ?? 0;
  const topicBytes = Buffer.byteLength(topic);
  const remaining = 2 + topicBytes + (qos > 0 ? 2 : 0) + (version === 5 ? 1 : 0) + payload.length;
  if (remaining > 268_435_455) throw new MqttError(`PUBLISH of ${remaining} bytes is over MQTT's limit`);
  const lengthBytes = remaining < 128 ? 1 : remaining < 16_384 ? 2 : remaining < 2_097_152 ? 3 : 4;
  const b = Buffer.allocUnsafe(1 + lengthBytes + remaining);
  b[0] = 0x30 | (p.dup ? 0x08 : 0) | (qos << 1) | (p.retain ? 0x01 : 0);
  let at = 1;
  for (let n = remaining; ; ) {
    const byte = n % 128;
    n = Math.floor(n / 128);
    b[at++] = n > 0 ? byte | 0x80 : byte;
    if (n === 0) break;
  }
  b.writeUInt16BE(topicBytes, at);
  at += 2;
  at += b.write(topic, at, 'utf8');
  if (qos > 0) {
    b.writeUInt16BE(p.messageId as number, at);
    at += 2;
  }
  if (version === 5) b[at++] = 0;
  payload.copy(b, at);
  return b;
}
