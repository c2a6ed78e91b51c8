/**
 * One Starling device as configured: the mesh node, the telemetry publisher it advertises, the drivers and
 * the sampler, and the command handler that lets peers set GPIO outputs by WHISPER. Started in that order
 * (publisher first: its endpoints go into the node's HELLO), stopped in reverse.
 *
 * Mesh commands: runtime/command.ts (`{"gpio": NAME, "set": 0|1}` or `{"gpio": NAME}`, answered by a reply).
 */
import { chooseInterface, InterfaceError } from '../runtime/net/iface.ts';
import { RetryError } from '../runtime/supervisor/supervisor.ts';
import { STATUS_NAMES } from '../drivers/driver.ts';
import { counters, progressHealth, ServiceBase, type Counters, type Health } from '../runtime/supervisor/service.ts';
import type { Config } from '../runtime/config/load.ts';
import { ZreNode } from '../runtime/zre/node.ts';
import { ProblemLog } from '../runtime/problems.ts';
import { CommandError, encodeReply, MAX_PEERS_LISTED, parseCommand, type GpioReply } from '../runtime/command.ts';
import { Publisher } from '../runtime/telemetry/publisher.ts';
import { meshCurve, publisherCurve, type Security } from '../runtime/security/context.ts';
import { telemetryHeaders } from '../runtime/telemetry/mesh.ts';
import { Sampler, type SamplerEntry } from './sampler.ts';
import { createSensor } from '../drivers/sensors/index.ts';
import { createGpio, type GpioDriver } from '../drivers/gpio/gpio.ts';
import { FileServer } from '../runtime/files/server.ts';
import { HEADER_FILES, HEADER_RELEASE, HEADER_VERSION } from '../runtime/files/chunks.ts';
import { FILES_FRAME } from '../runtime/files/messages.ts';
import { HEADER_LOGS, type LogStream } from '../runtime/supervisor/logstream.ts';

export interface DeviceIdentity {
  /** The version running (a release's, or the installed program's). */
  version?: string;
  /** The SHA-256 of the release bundle running, when it is one. */
  release?: string;
}

/** The shortest progress interval health asks of the sampler (reads may run late under load). */
const MIN_PROGRESS_MS = 5000;
/** How often the interface's address is checked (an address change is followed within this and a rebind). */
const ADDRESS_CHECK_MS = 1000;

export class Device extends ServiceBase {
  readonly name = 'device';
  private startedAt: number | undefined;
  node: ZreNode | undefined;
  publisher: Publisher | undefined;
  sampler: Sampler | undefined;
  /** The file server (runtime/files/server.ts): what this node offers its peers, advertised as X-FILES. */
  files: FileServer | undefined;
  readonly gpio = new Map<string, GpioDriver>();
  /** Mesh commands refused (malformed or failed). */
  commandErrors = 0;
  /** Secure mode: mesh commands from peers whose key lacks the command role, refused. */
  commandsUnauthorised = 0;
  private offTrust: (() => void) | undefined;
  private addressTimer: NodeJS.Timeout | undefined;
  private rebinding = false;
  private addressLost = false;
  private readonly problems = new ProblemLog((msg) => this.log?.('warn', msg));

  /**
   * Stores the config, where its problems are logged, and in secure mode its identity and allowlist (see
   * app/compose.ts); opens nothing.
   */
  constructor(
    readonly config: Config, private readonly log?: (level: 'info' | 'warn' | 'error', msg: string) => void, readonly security?: Security, readonly identity: DeviceIdentity = {},
    /** This node's log ring on the mesh (runtime/supervisor/logstream.ts): bound beside the inbox, advertised as X-LOGS. */
    private readonly logStream?: LogStream,
  ) {
    super();
  }

  /** The mesh node's and the publisher's counters, and refused mesh commands. */
  override stats(): Counters {
    return {
      ...counters('mesh', this.node?.stats()), ...counters('telemetry', this.publisher?.stats()), ...counters('files', this.files?.stats()), ...counters('logs', this.logStream?.stats()), commandErrors: this.commandErrors,
      ...(this.security ? { commandsUnauthorised: this.commandsUnauthorised, ...counters('trust', this.security.trust.stats()) } : {}),
    };
  }

  /** Every output to its safe level now (the first step of a shutdown). */
  async safe(): Promise<void> {
    await Promise.all([...this.gpio.values()].map((g) => g.safe()));
  }

  /**
   * Progress is the sampler completing reads (a failing sensor still makes progress: it is reported, not
   * unhealthy); unhealthy when none came within twice the shortest interval (at least 5 s). A network without peers is
   * not unhealthiness.
   */
  override health(): Health {
    const interval = this.sampler?.interval;
    // At least 5 s: a 10 ms sensor read late while the loop serves a burst of commands is not a stuck device.
    return progressHealth(this.state, this.sampler?.lastProgress ?? this.startedAt, interval === undefined ? undefined : Math.max(interval, MIN_PROGRESS_MS));
  }

  async start(): Promise<void> {
    this.setState('starting');
    try {
      await this.open();
      this.startedAt = Date.now();
      this.setState('running');
    } catch (e) {
      await this.close().catch(() => {});
      this.setState('failed');
      throw e;
    }
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.setState('stopping');
    await this.close();
    this.setState('stopped');
  }

  private async open(): Promise<void> {
    const c = this.config;
    let iface;
    try {
      iface = chooseInterface(c.node.iface);
    } catch (e) {
      // Not there yet (Wi-Fi after boot, a USB adapter, DHCP): wait for it, checking every second.
      if (e instanceof InterfaceError) throw new RetryError(`waiting for ${c.node.iface ? `interface ${c.node.iface}` : 'an interface'}: ${e.message}`, 1000);
      throw e;
    }
    const sec = this.security;
    if (sec) {
      sec.trust.start();
      if (sec.trust.list().length === 0) {
        this.log?.('warn', `no trusted keys in ${sec.trust.dir}: this node runs alone until peers are trusted (starling trust add FILE|KEY, or starling trust pending, then starling trust accept FINGERPRINT); our key: ${sec.identity.publicKey}`);
      }
      const onChange = ({ removed }: { removed: unknown[] }) => {
        if (removed.length) void this.dropUntrusted();
      };
      sec.trust.on('change', onChange);
      this.offTrust = () => sec.trust.off('change', onChange);
    }
    const endpoints = [`tcp://${iface.address}:*`];
    if (c.telemetry.epgm) endpoints.push(`epgm://${iface.address};${c.telemetry.epgm}`);
    this.publisher = new Publisher({ endpoints, snapshotEndpoint: `tcp://${iface.address}:*`, rate: c.telemetry.rate, ...(sec ? { curve: publisherCurve(sec) } : {}) });
    await this.publisher.start();
    this.files = new FileServer({
      maxUploads: c.files.max_uploads,
      ...(sec ? { curve: { ...publisherCurve(sec), zapDomain: `${sec.zapDomain}.files` } } : {}),
    });
    await this.files.start(iface.address);
    await this.logStream?.bind(iface.address);
    const entries: SamplerEntry[] = c.sensors.map((s) => ({ driver: createSensor(s, c, c.simulate), interval: s.interval, filters: s.filters }));
    for (const g of c.gpio) {
      const d = createGpio(g, c.sysfs, c.simulate);
      this.gpio.set(g.name, d);
      entries.push({ driver: d, interval: 0, filters: [] });
    }
    this.sampler = new Sampler(entries, this.publisher, c.telemetry.prefix);
    await this.sampler.start();
    this.node = new ZreNode({
      name: c.node.name, iface: iface.address, beaconPort: c.node.port, headers: c.node.headers, peers: c.node.peers,
      evasiveTimeout: c.node.evasive, expiredTimeout: Math.max(c.node.expired, c.node.evasive),
      gossip: c.node.gossip.bind || c.node.gossip.connect.length ? { bind: c.node.gossip.bind, connect: c.node.gossip.connect, ttl: c.node.gossip.ttl / 1000 } : undefined,
      onProblem: (msg) => this.log?.('warn', `mesh: ${msg}`),
      ...(sec ? { curve: meshCurve(sec) } : {}),
    });
    for (const [k, v] of Object.entries(this.headers())) this.node.setHeader(k, v);
    this.node.on('whisper', (m) => {
      if (m.content[0]?.toString() === FILES_FRAME) return; // file transfer and updates: services/files.ts
      void this.command(m.peer, m.content[0]);
    });
    await this.node.start();
    for (const g of c.node.groups) this.node.join(g);
    this.log?.('info', `${this.node.name} on ${iface.name} (${iface.address}); ${c.sensors.length} sensor(s), ${c.gpio.length} GPIO line(s); telemetry at ${this.publisher.endpoints.join(' ')}`);
    for (const s of this.sampler.status()) {
      if (s.status !== 0 || s.error) this.log?.('warn', `${s.name}: ${STATUS_NAMES[s.status]}${s.error ? `: ${s.error}` : ''}`);
    }
    this.addressTimer = setInterval(() => void this.followAddress(), ADDRESS_CHECK_MS);
  }

  /** Every HELLO header this device advertises: telemetry, GPIO lines, the file server, the version. */
  private headers(): Record<string, string> {
    const h = telemetryHeaders(this.publisher!, this.config.telemetry.epgm, this.lines());
    if (this.files?.endpoint) h[HEADER_FILES] = this.files.endpoint;
    if (this.logStream?.endpoint) h[HEADER_LOGS] = this.logStream.endpoint;
    if (this.identity.version) h[HEADER_VERSION] = this.identity.version;
    if (this.identity.release) h[HEADER_RELEASE] = this.identity.release;
    return h;
  }

  private lines(): { prefix: string; outputs: string[]; inputs: string[] } {
    const c = this.config;
    return { prefix: c.telemetry.prefix, outputs: c.gpio.filter((g) => g.mode === 'output').map((g) => g.name), inputs: c.gpio.filter((g) => g.mode === 'input').map((g) => g.name) };
  }

  /**
   * The interface's address changed (DHCP, a new network): rebind the publisher and the node there, keeping
   * the UUID, the sensors and the outputs as they are. An address that went away is waited for (logged once).
   */
  private async followAddress(): Promise<void> {
    const node = this.node;
    const publisher = this.publisher;
    if (this.rebinding || !node?.iface || !publisher || this.state !== 'running') return;
    let next;
    try {
      next = chooseInterface(this.config.node.iface);
    } catch (e) {
      if (!this.addressLost) this.log?.('warn', `${(e as Error).message}; keeping ${node.iface.address} until the interface has an address again`);
      this.addressLost = true;
      return;
    }
    this.addressLost = false;
    if (next.address === node.iface.address) return;
    const was = node.iface.address;
    this.rebinding = true;
    try {
      await publisher.rebind(next.address);
      await this.rebindFiles(next.address);
      await this.logStream?.bind(next.address);
      await node.rebind(next, this.headers());
      this.log?.('info', `address changed from ${was} to ${next.address}: inbox at ${node.endpoint}, telemetry at ${publisher.endpoints.join(' ')}`);
    } catch (e) {
      this.log?.('warn', `address changed from ${was} to ${next.address}, but rebinding failed: ${(e as Error).message}; trying again`);
    } finally {
      this.rebinding = false;
    }
  }

  /**
   * Secure mode, a key left the allowlist: its peer leaves, and the inbox and telemetry move to new ports on
   * the same address (announced to the remaining peers), which closes every connection the key still had.
   */
  private async dropUntrusted(): Promise<void> {
    const node = this.node;
    const publisher = this.publisher;
    if (!node?.iface || !publisher || this.rebinding) return;
    const gone = node.dropUntrusted();
    this.rebinding = true;
    try {
      await publisher.rebind(node.iface.address);
      await this.rebindFiles(node.iface.address);
      await this.logStream?.bind(node.iface.address);
      await node.rebind(node.iface, this.headers());
      this.log?.('info', `trusted keys changed: ${gone} peer(s) dropped; inbox now at ${node.endpoint}, telemetry at ${publisher.endpoints.join(' ')}`);
    } catch (e) {
      this.log?.('warn', `trusted keys changed, but moving the inbox failed: ${(e as Error).message}`);
    } finally {
      this.rebinding = false;
    }
  }

  /** The file server on a new address (or new port): what it offered stays offered. */
  private async rebindFiles(address: string): Promise<void> {
    if (!this.files) return;
    await this.files.rebind(address);
  }

  /**
   * Sets one of this device's outputs, as a mesh command would (the MQTT bridge's path for local lines).
   * Throws for a name that is not an output here.
   */
  async setOutput(name: string, value: 0 | 1): Promise<void> {
    const line = this.gpio.get(name);
    if (!line || line.config.mode !== 'output') throw new CommandError(`no GPIO output named '${name}' on ${this.config.node.name ?? 'this device'}`);
    await line.write(value);
    this.sampler?.noteWrite(name, value);
  }

  /** True when `name` is one of this device's outputs. */
  hasOutput(name: string): boolean {
    return this.gpio.get(name)?.config.mode === 'output';
  }

  /** Handles one mesh command (runtime/command.ts); never throws (a bad one is answered with an error and counted). */
  private async command(peer: string, frame: Buffer | undefined): Promise<void> {
    let reply: GpioReply;
    let gpio: string | undefined;
    try {
      const msg = parseCommand(frame);
      if ('reply' in msg) return; // an answer to a command we sent: never answer an answer
      if ('query' in msg) return this.answerPeers(peer);
      gpio = msg.command.gpio;
      if (this.security) {
        // Secure mode: only a key with the command role may read or set a line by mesh command.
        const key = this.node?.peerKey(peer);
        if (!key || !this.security.trust.allows(key, 'command')) {
          this.commandsUnauthorised++;
          if (key) this.security.trust.refused({ publicKey: key, why: `mesh command for ${gpio} (needs the command role)` });
          this.node?.whisper(peer, encodeReply({ ok: false, gpio, error: 'not authorised' }));
          return;
        }
      }
      const line = this.gpio.get(gpio);
      if (!line) throw new CommandError(`no GPIO line named '${gpio}'; lines: ${[...this.gpio.keys()].join(', ') || 'none'}`);
      if (msg.command.set !== undefined) await this.setOutput(gpio, msg.command.set);
      const r = await line.read();
      reply = { ok: r.status === 0, gpio, value: r.values[0], ...(r.error ? { error: r.error } : {}) };
    } catch (e) {
      this.commandErrors++;
      this.problems.note(`command ${peer}`, `mesh command from ${this.node?.findPeer(peer)?.name ?? peer} refused: ${(e as Error).message}`);
      reply = { ok: false, ...(gpio !== undefined ? { gpio } : {}), error: (e as Error).message };
    }
    this.node?.whisper(peer, encodeReply(reply));
  }

  /**
   * A peers query: the UUIDs of the peers this node sees. Secure mode: only for a key with the read role (a
   * key trusted for nothing else learns nothing).
   */
  private answerPeers(peer: string): void {
    const node = this.node;
    if (!node) return;
    if (this.security) {
      const key = node.peerKey(peer);
      if (!key || !this.security.trust.allows(key, 'read')) {
        this.commandsUnauthorised++;
        node.whisper(peer, encodeReply({ ok: false, error: 'not authorised', peers: [] }));
        return;
      }
    }
    node.whisper(peer, encodeReply({ ok: true, peers: node.peerList().slice(0, MAX_PEERS_LISTED).map((p) => p.peer) }));
  }

  private async close(): Promise<void> {
    clearInterval(this.addressTimer);
    this.addressTimer = undefined;
    this.offTrust?.();
    this.offTrust = undefined;
    this.security?.trust.stop();
    await this.node?.stop();
    await this.sampler?.stop(); // closes drivers: outputs go to their safe state
    await this.publisher?.stop();
    await this.files?.stop();
    await this.logStream?.close();
    this.node = this.sampler = this.publisher = this.files = undefined;
    this.gpio.clear();
  }
}
