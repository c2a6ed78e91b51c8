/**
 * The bridge as a supervised service: it follows the device's telemetry (or every publisher on the mesh) and
 * forwards it to the configured broker; Home Assistant commands set the device's GPIO outputs. Healthy while
 * running: a broker that is away is a reason to spool, not unhealthiness.
 */
import { readFileSync } from 'node:fs';
import { capability } from 'zeromq';
import type { Config } from '../../runtime/config/load.ts';
import type { Device } from '../../runtime/device.ts';
import { Subscriber } from '../../runtime/telemetry/subscriber.ts';
import { follow, type Following, HEADER_INPUTS, HEADER_OUTPUTS, HEADER_PREFIX } from '../../runtime/telemetry/mesh.ts';
import type { PeerInfo } from '../../runtime/zre/node.ts';
import { counters, ServiceBase, type Counters, type Health } from '../../runtime/supervisor/service.ts';
import { Bridge } from './bridge.ts';
import { ProblemLog } from '../../runtime/problems.ts';

/** GPIO lines one peer may advertise (outputs and inputs each); a HELLO listing more is not bridged. */
export const MAX_PEER_LINES = 64;
const LINE_NAME = /^[a-z0-9_]{1,64}$/;
const PREFIX = /^(?!\$)[^+#\u0000-\u001f\u007f-\u009f]{0,128}$/;

/**
 * A peer's advertised telemetry prefix and GPIO lines, checked as the schema checks our own: names of
 * lower-case letters, digits and _ (at most 64 bytes), at most {@link MAX_PEER_LINES} of each kind, and a
 * prefix that can be part of an MQTT topic. Throws an Error saying what is wrong.
 */
export function peerLines(p: PeerInfo): { prefix: string; outputs: string[]; inputs: string[] } {
  const prefix = p.headers[HEADER_PREFIX] ?? '';
  if (!PREFIX.test(prefix)) throw new Error(`${HEADER_PREFIX} ${JSON.stringify(prefix.slice(0, 60))} cannot be part of an MQTT topic`);
  const list = (header: string): string[] => {
    const names = (p.headers[header] ?? '').split(',').filter(Boolean);
    if (names.length > MAX_PEER_LINES) throw new Error(`${header} lists ${names.length} lines (at most ${MAX_PEER_LINES})`);
    const bad = names.find((n) => !LINE_NAME.test(n));
    if (bad !== undefined) throw new Error(`${header} holds ${JSON.stringify(bad.slice(0, 60))}; expected lower-case letters, digits and _`);
    return names;
  };
  return { prefix, outputs: list(HEADER_OUTPUTS), inputs: list(HEADER_INPUTS) };
}

export class BridgeService extends ServiceBase {
  readonly name = 'mqtt';
  bridge: Bridge | undefined;
  private sub: Subscriber | undefined;
  private following: Following | undefined;
  /** GPIO outputs of peers, by telemetry topic: who to whisper a command to. */
  private readonly remote = new Map<string, { peer: string; gpio: string }>();
  private onEnter: ((p: PeerInfo) => void) | undefined;
  private onExit: ((e: { peer: string }) => void) | undefined;
  /** Peers whose advertised GPIO lines broke the bounds of {@link peerLines}. */
  linesRefused = 0;

  /** Stores its dependencies (and where its problems are logged); connects nothing. */
  constructor(private readonly config: Config, private readonly device: Device, private readonly log?: (level: 'info' | 'warn' | 'error', msg: string) => void) {
    super();
  }



  /** The bridge's, its spool's, its MQTT client's and its subscriber's counters, and what it would not follow. */
  override stats(): Counters {
    const b = this.bridge?.stats();
    const { spool, connected, ...bridge } = b ?? { spool: undefined, connected: false };
    return {
      ...counters('bridge', bridge), connected: connected ? 1 : 0, ...counters('spool', spool),
      ...counters('mqtt', this.bridge?.client.faults), 'mqtt.connectFailures': this.bridge?.client.failures ?? 0,
      ...counters('telemetry', this.sub?.stats()), 'mesh.followRefused': this.following?.refused ?? 0, 'mesh.linesRefused': this.linesRefused,
    };
  }

  override health(): Health {
    return this.state === 'running' ? { healthy: true, detail: this.bridge?.client.isConnected ? 'connected' : 'spooling' } : { healthy: false, detail: this.state };
  }

  async start(): Promise<void> {
    const m = this.config.mqtt;
    const node = this.device.node;
    if (!m.url || !node || !this.device.publisher) throw new Error('the MQTT bridge needs mqtt.url and a running device');
    this.setState('starting');
    const file = (path?: string) => (path ? readFileSync(path) : undefined);
    const warn = (msg: string) => this.log?.('warn', msg);
    const sub = new Subscriber({ onProblem: warn });
    sub.start();
    this.sub = sub;
    const prefix = this.config.telemetry.prefix;
    const outputs = this.config.gpio.filter((g) => g.mode === 'output').map((g) => prefix + g.name);
    const inputs = this.config.gpio.filter((g) => g.mode === 'input').map((g) => prefix + g.name);
    this.bridge = new Bridge({
      mqtt: {
        url: m.url, clientId: m.client_id ?? `starling-${node.name}`, protocolVersion: m.protocol, keepalive: m.keepalive / 1000,
        username: m.username, password: m.password, tls: m.url.startsWith('mqtts:') ? { ca: file(m.ca), cert: file(m.cert), key: file(m.key) } : undefined,
      },
      node: node.name, template: m.topic, discovery: m.discovery, discoveryPrefix: m.discovery_prefix,
      spoolDir: m.spool, spoolBytes: m.spool_max_mb * 1024 * 1024, spoolFsync: m.spool_fsync, switches: outputs, binarySensors: inputs,
      onProblem: warn,
      onCommand: async (topic, value) => {
        const local = topic.startsWith(prefix) ? this.device.gpio.get(topic.slice(prefix.length)) : undefined;
        if (local) {
          await local.write(value);
          this.device.sampler?.noteWrite(local.name, value);
          return;
        }
        // A peer's output: the mesh command of runtime/device.ts, by WHISPER.
        const r = this.remote.get(topic);
        if (!r || !node.whisper(r.peer, JSON.stringify({ gpio: r.gpio, set: value }))) throw new Error(`no GPIO line for ${topic}`);
      },
    }, sub);
    await this.bridge.start();
    if (m.mesh) {
      const problems = new ProblemLog(warn);
      this.following = follow(node, sub, { pgm: Boolean(capability.pgm), onError: (e) => problems.note('follow', e.message) });
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
      };
      node.on('exit', this.onExit);
      node.on('enter', this.onEnter);
      for (const p of node.peerList()) this.onEnter(p);
    }
    // This device's own publisher is not among its peers: connect to it directly.
    await sub.connect(this.device.publisher.endpoints[0]!, this.device.publisher.snapshotEndpoint);
    this.setState('running');
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.setState('stopping');
    this.following?.stop();
    if (this.onEnter) this.device.node?.off('enter', this.onEnter);
    if (this.onExit) this.device.node?.off('exit', this.onExit);
    this.remote.clear();
    await this.bridge?.stop();
    await this.sub?.stop();
    this.bridge = undefined;
    this.sub = undefined;
    this.setState('stopped');
  }
}
