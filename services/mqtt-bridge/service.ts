/**
 * The bridge as a supervised service: it follows the device's telemetry (or every publisher on the mesh) and
 * forwards it to the configured broker; Home Assistant commands set the device's GPIO outputs. Healthy while
 * running: a broker that is away is a reason to spool, not unhealthiness.
 */
import { readFileSync } from 'node:fs';
import { capability } from 'zeromq';
import type { Config } from '../../runtime/config/load.ts';
import type { ZreNode } from '../../runtime/zre/node.ts';
import { sendCommand } from '../../runtime/command.ts';
import { Subscriber } from '../../runtime/telemetry/subscriber.ts';
import { follow, peerLines, type Following, HEADER_PREFIX } from '../../runtime/telemetry/mesh.ts';
import type { PeerInfo } from '../../runtime/zre/node.ts';
import { clientCurve, type Security } from '../../runtime/security/context.ts';

/** What the bridge needs of the device it runs beside: its node, its publisher's endpoints, its own outputs. */
export interface BridgeDevice {
  /** The running device's mesh node (undefined while it is not running). */
  readonly node: ZreNode | undefined;
  /** Its telemetry publisher (undefined while it is not running). */
  readonly publisher: { readonly endpoints: string[]; readonly snapshotEndpoint: string | undefined } | undefined;
  hasOutput(name: string): boolean;
  /** Sets one of its outputs; throws for a name that is not one. */
  setOutput(name: string, value: 0 | 1): Promise<void>;
}

/** How long a forwarded command waits for the peer's reply. */
const REPLY_TIMEOUT_MS = 5000;
import { counters, ServiceBase, type Counters, type Health } from '../../runtime/supervisor/service.ts';
import { Bridge } from './bridge.ts';
import { ProblemLog } from '../../runtime/problems.ts';

export class BridgeService extends ServiceBase {
  readonly name = 'mqtt';
  bridge: Bridge | undefined;
  private sub: Subscriber | undefined;
  /** The device's publisher this bridge subscribed to; another one means the device restarted under it. */
  private followed: BridgeDevice['publisher'] | undefined;
  private following: Following | undefined;
  /** GPIO outputs of peers, by telemetry topic: who to whisper a command to. */
  private readonly remote = new Map<string, { peer: string; gpio: string }>();
  private onEnter: ((p: PeerInfo) => void) | undefined;
  private onExit: ((e: { peer: string }) => void) | undefined;
  /** Each peer's telemetry prefix, while it is on the mesh (for its availability). */
  private readonly prefixes = new Map<string, string>();
  /** Peers whose advertised GPIO lines broke the bounds of {@link peerLines}. */
  linesRefused = 0;
  /**
   * Secure mode: the key that first announced each telemetry prefix and output topic (pinned, like UUIDs).
   * Another key claiming one is refused; a departed owner's topics wait for that key. Bounded: 4,096 pins.
   */
  private readonly pins = new Map<string, string>();
  /** Secure mode: announcements of a prefix or output pinned to another key, refused. */
  pinsRefused = 0;

  /**
   * Stores its dependencies (and where its problems are logged); connects nothing. `url` is the broker when it
   * is not the configured one (the embedded broker's): the configuration itself is never changed.
   */
  constructor(
    private readonly config: Config, private readonly device: BridgeDevice,
    private readonly log?: (level: 'info' | 'warn' | 'error', msg: string) => void, private readonly url = config.mqtt.url,
    private readonly security?: Security,
  ) {
    super();
  }

  /**
   * Secure mode: whether `key` may own `names` (a prefix and output topics): each is pinned to the first key
   * that announced it. Plain mode: always.
   */
  private owns(key: string | undefined, names: string[]): boolean {
    if (!this.security) return true;
    if (!key) return false;
    if (names.some((n) => (this.pins.get(n) ?? key) !== key)) return false;
    for (const n of names) {
      if (this.pins.has(n)) continue;
      if (this.pins.size >= 4096) this.pins.delete(this.pins.keys().next().value as string);
      this.pins.set(n, key);
    }
    return true;
  }



  /** The bridge's, its spool's, its MQTT client's and its subscriber's counters, and what it would not follow. */
  override stats(): Counters {
    const b = this.bridge?.stats();
    const { spool, connected, ...bridge } = b ?? { spool: undefined, connected: false };
    return {
      ...counters('bridge', bridge), connected: connected ? 1 : 0, ...counters('spool', spool),
      ...counters('mqtt', this.bridge?.client.faults), 'mqtt.connectFailures': this.bridge?.client.failures ?? 0,
      ...(this.config.mqtt.failover.length ? { 'mqtt.broker': this.bridge?.client.broker ?? 0, 'mqtt.failovers': this.bridge?.client.failovers ?? 0 } : {}),
      ...counters('telemetry', this.sub?.stats()), 'mesh.followRefused': this.following?.refused ?? 0, 'mesh.linesRefused': this.linesRefused,
      ...(this.security ? { 'mesh.pinsRefused': this.pinsRefused } : {}),
    };
  }

  /**
   * Unhealthy while the device it bridges is not the one it started on (the device service restarted: a new
   * node and publisher, at a new endpoint): the supervisor then restarts the bridge, which subscribes to the
   * new one. Without this it would stay "running" and forward nothing.
   */
  override health(): Health {
    if (this.state !== 'running') return { healthy: false, detail: this.state };
    if (this.device.publisher !== this.followed) return { healthy: false, detail: 'the device restarted; following it again' };
    const c = this.bridge?.client;
    return { healthy: true, detail: c?.isConnected ? (this.config.mqtt.failover.length ? `connected to ${c.url}` : 'connected') : 'spooling' };
  }

  async start(): Promise<void> {
    const m = this.config.mqtt;
    const url = this.url;
    const node = this.device.node;
    const publisher = this.device.publisher;
    if (!url || !node || !publisher) throw new Error('the MQTT bridge needs mqtt.url and a running device');
    this.setState('starting');
    const file = (path?: string) => (path ? readFileSync(path) : undefined);
    const warn = (msg: string) => this.log?.('warn', msg);
    const sub = new Subscriber({ onProblem: warn, ...(this.security ? { curve: clientCurve(this.security) } : {}) });
    sub.start();
    this.sub = sub;
    const prefix = this.config.telemetry.prefix;
    const outputs = this.config.gpio.filter((g) => g.mode === 'output').map((g) => prefix + g.name);
    const inputs = this.config.gpio.filter((g) => g.mode === 'input').map((g) => prefix + g.name);
    this.bridge = new Bridge({
      mqtt: {
        url, failover: url === m.url ? m.failover : [], clientId: m.client_id ?? `starling-${node.name}`, protocolVersion: m.protocol, keepalive: m.keepalive / 1000,
        username: m.username, password: m.password, tls: url.startsWith('mqtts:') ? { ca: file(m.ca), cert: file(m.cert), key: file(m.key) } : undefined,
      },
      node: node.name, template: m.topic, discovery: m.discovery, discoveryPrefix: m.discovery_prefix,
      spoolDir: m.spool, spoolBytes: m.spool_max_mb * 1024 * 1024, spoolFsync: m.spool_fsync, switches: outputs, binarySensors: inputs,
      onProblem: warn, shape: m.shape,
      onCommand: async (topic, value) => {
        const local = topic.startsWith(prefix) ? topic.slice(prefix.length) : undefined;
        if (local !== undefined && this.device.hasOutput(local)) return this.device.setOutput(local, value);
        // A peer's output: the mesh command (runtime/command.ts) by WHISPER, and its reply.
        const r = this.remote.get(topic);
        if (!r) throw new Error(`no GPIO output for ${topic}`);
        await sendCommand(node, r.peer, { gpio: r.gpio, set: value }, REPLY_TIMEOUT_MS);
      },
    }, sub);
    await this.bridge.start();
    if (m.mesh) {
      const problems = new ProblemLog(warn);
      // Secure mode: a peer's telemetry is followed only when its prefix is pinned to its key (or free).
      const accept = (p: PeerInfo): boolean => {
        const prefix = p.headers[HEADER_PREFIX] ?? '';
        if (!prefix || this.owns(node.peerKey(p.peer), [`prefix:${prefix}`])) return true;
        this.pinsRefused++;
        problems.note(`pin ${p.peer}`, `${p.name || p.peer} announces telemetry prefix ${JSON.stringify(prefix)}, which belongs to another key: not followed`);
        return false;
      };
      this.following = follow(node, sub, { pgm: Boolean(capability.pgm), accept, onError: (e) => problems.note('follow', e.message) });
      // Peers' GPIO lines become switches and binary sensors too; commands go out by WHISPER.
      this.onEnter = (p: PeerInfo) => {
        let lines: ReturnType<typeof peerLines>;
        try {
          lines = peerLines(p);
        } catch (e) {
          this.linesRefused++;
          problems.note('lines', `GPIO lines of ${p.name || p.peer} not bridged: ${(e as Error).message}`);
          return;
        }
        const topics = lines.outputs.map((g) => lines.prefix + g);
        if (!this.owns(node.peerKey(p.peer), [...(lines.prefix ? [`prefix:${lines.prefix}`] : []), ...topics.map((t) => `output:${t}`)])) {
          this.pinsRefused++;
          problems.note(`pin ${p.peer}`, `GPIO lines of ${p.name || p.peer} not bridged: its prefix or outputs belong to another key`);
          return;
        }
        if (lines.prefix) {
          this.prefixes.set(p.peer, lines.prefix);
          this.bridge?.setDeviceAvailability(lines.prefix, true);
        }
        for (const gpio of lines.outputs) {
          this.remote.set(lines.prefix + gpio, { peer: p.peer, gpio });
          this.bridge?.addEntity(lines.prefix + gpio, 'switch');
        }
        for (const gpio of lines.inputs) this.bridge?.addEntity(lines.prefix + gpio, 'binary_sensor');
      };
      // A peer that leaves takes its command routes with it: a later peer advertising the same names must not
      // receive Home Assistant's commands meant for this one.
      this.onExit = ({ peer }: { peer: string }) => {
        for (const [topic, r] of this.remote) if (r.peer === peer) this.remote.delete(topic);
        // Its entities become unavailable in Home Assistant, unless another peer here has the same prefix.
        const prefix = this.prefixes.get(peer);
        this.prefixes.delete(peer);
        if (prefix && ![...this.prefixes.values()].includes(prefix)) this.bridge?.setDeviceAvailability(prefix, false);
      };
      node.on('exit', this.onExit);
      node.on('enter', this.onEnter);
      for (const p of node.peerList()) this.onEnter(p);
    }
    // This device's own publisher is not among its peers: connect to it directly.
    await sub.connect(publisher.endpoints[0]!, publisher.snapshotEndpoint, this.security?.identity.publicKey);
    this.followed = publisher;
    this.setState('running');
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.setState('stopping');
    this.following?.stop();
    if (this.onEnter) this.device.node?.off('enter', this.onEnter);
    if (this.onExit) this.device.node?.off('exit', this.onExit);
    this.remote.clear();
    this.prefixes.clear();
    await this.bridge?.stop();
    await this.sub?.stop();
    this.bridge = undefined;
    this.sub = undefined;
    this.setState('stopped');
  }
}
