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
import { ServiceBase, type Health } from '../../runtime/supervisor/service.ts';
import { Bridge } from './bridge.ts';

export class BridgeService extends ServiceBase {
  readonly name = 'mqtt';
  bridge: Bridge | undefined;
  private sub: Subscriber | undefined;
  private following: Following | undefined;
  /** GPIO outputs of peers, by telemetry topic: who to whisper a command to. */
  private readonly remote = new Map<string, { peer: string; gpio: string }>();
  private onEnter: ((p: PeerInfo) => void) | undefined;

  /** Stores its dependencies; connects nothing. */
  constructor(private readonly config: Config, private readonly device: Device) {
    super();
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
    const sub = new Subscriber();
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
      this.following = follow(node, sub, { pgm: Boolean(capability.pgm) });
      // Peers' GPIO lines become switches and binary sensors too; commands go out by WHISPER.
      this.onEnter = (p: PeerInfo) => {
        const prefixOf = p.headers[HEADER_PREFIX] ?? '';
        for (const gpio of (p.headers[HEADER_OUTPUTS] ?? '').split(',').filter(Boolean)) {
          this.remote.set(prefixOf + gpio, { peer: p.peer, gpio });
          this.bridge?.addEntity(prefixOf + gpio, 'switch');
        }
        for (const gpio of (p.headers[HEADER_INPUTS] ?? '').split(',').filter(Boolean)) this.bridge?.addEntity(prefixOf + gpio, 'binary_sensor');
      };
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
    await this.bridge?.stop();
    await this.sub?.stop();
    this.bridge = undefined;
    this.sub = undefined;
    this.setState('stopped');
  }
}
