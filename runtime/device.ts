/**
 * One Starling device as configured: the mesh node, the telemetry publisher it advertises, the drivers and
 * the sampler, and the command handler that lets peers set GPIO outputs by WHISPER. Started in that order
 * (publisher first: its endpoints go into the node's HELLO), stopped in reverse.
 *
 * Mesh commands: a WHISPER whose first frame is JSON `{"gpio": NAME, "set": 0|1}` or `{"gpio": NAME}` (read);
 * the answer is a WHISPER `{"ok": true, "gpio": NAME, "value": V}` or `{"ok": false, "error": "…"}`.
 */
import { chooseInterface } from './net/iface.ts';
import { counters, progressHealth, ServiceBase, type Counters, type Health } from './supervisor/service.ts';
import type { Config } from './config/load.ts';
import { ZreNode } from './zre/node.ts';
import { ProblemLog } from './problems.ts';
import { Publisher } from './telemetry/publisher.ts';
import { advertise } from './telemetry/mesh.ts';
import { Sampler, type SamplerEntry } from '../services/sampler.ts';
import { createSensor } from '../drivers/sensors/index.ts';
import { createGpio, type GpioDriver } from '../drivers/gpio/gpio.ts';

export class Device extends ServiceBase {
  readonly name = 'device';
  private startedAt: number | undefined;
  node: ZreNode | undefined;
  publisher: Publisher | undefined;
  sampler: Sampler | undefined;
  readonly gpio = new Map<string, GpioDriver>();
  /** Mesh commands refused (malformed or failed). */
  commandErrors = 0;
  private readonly problems = new ProblemLog((msg) => this.log?.('warn', msg));

  /** Stores the config (and where its problems are logged); opens nothing. */
  constructor(readonly config: Config, private readonly log?: (level: 'info' | 'warn' | 'error', msg: string) => void) {
    super();
  }

  /** The mesh node's and the publisher's counters, and refused mesh commands. */
  override stats(): Counters {
    return { ...counters('mesh', this.node?.stats()), ...counters('telemetry', this.publisher?.stats()), commandErrors: this.commandErrors };
  }

  /** Every output to its safe level now (the first step of a shutdown). */
  async safe(): Promise<void> {
    await Promise.all([...this.gpio.values()].map((g) => g.safe()));
  }

  /**
   * Progress is the sampler completing reads (a failing sensor still makes progress: it is reported, not
   * unhealthy); unhealthy when none came within twice the shortest interval. A network without peers is
   * not unhealthiness.
   */
  override health(): Health {
    return progressHealth(this.state, this.sampler?.lastProgress ?? this.startedAt, this.sampler?.interval);
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
    const iface = chooseInterface(c.node.iface);
    const endpoints = [`tcp://${iface.address}:*`];
    if (c.telemetry.epgm) endpoints.push(`epgm://${iface.address};${c.telemetry.epgm}`);
    this.publisher = new Publisher({ endpoints, snapshotEndpoint: `tcp://${iface.address}:*`, rate: c.telemetry.rate });
    await this.publisher.start();
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
      onProblem: (msg) => this.log?.('warn', `mesh: ${msg}`),
    });
    advertise(this.node, this.publisher, c.telemetry.epgm, {
      prefix: c.telemetry.prefix,
      outputs: c.gpio.filter((g) => g.mode === 'output').map((g) => g.name),
      inputs: c.gpio.filter((g) => g.mode === 'input').map((g) => g.name),
    });
    this.node.on('whisper', (m) => void this.command(m.peer, m.content[0]));
    await this.node.start();
  }

  /** Handles one mesh command; never throws (a bad one is answered with an error and counted). */
  private async command(peer: string, frame: Buffer | undefined): Promise<void> {
    let reply: Record<string, unknown>;
    try {
      let cmd: unknown;
      try {
        cmd = JSON.parse(frame?.toString('utf8') ?? '');
      } catch {
        throw new Error('expected a JSON command such as {"gpio":"relay","set":1}');
      }
      // An answer to a command we sent (it carries "ok"): never answer an answer, or two nodes would ping-pong.
      if (cmd && typeof cmd === 'object' && 'ok' in cmd) return;
      const { gpio, set } = (cmd ?? {}) as { gpio?: unknown; set?: unknown };
      if (typeof gpio !== 'string') throw new Error('command needs "gpio": the line name');
      const line = this.gpio.get(gpio);
      if (!line) throw new Error(`no GPIO line named '${gpio}'; lines: ${[...this.gpio.keys()].join(', ') || 'none'}`);
      if (set !== undefined) {
        // Exactly 0 or 1: "1", true or [1] are not commands (JSON.parse gives numbers for 0 and 1).
        if (set !== 0 && set !== 1) throw new Error(`"set" must be 0 or 1, got ${JSON.stringify(set).slice(0, 40)}`);
        await line.write(set);
        this.sampler?.noteWrite(gpio, set);
      }
      const r = await line.read();
      reply = { ok: r.status === 0, gpio, value: r.values[0], ...(r.error ? { error: r.error } : {}) };
    } catch (e) {
      this.commandErrors++;
      this.problems.note(`command ${peer}`, `mesh command from ${this.node?.findPeer(peer)?.name ?? peer} refused: ${(e as Error).message}`);
      reply = { ok: false, error: (e as Error).message };
    }
    this.node?.whisper(peer, JSON.stringify(reply));
  }

  private async close(): Promise<void> {
    await this.node?.stop();
    await this.sampler?.stop(); // closes drivers: outputs go to their safe state
    await this.publisher?.stop();
    this.node = this.sampler = this.publisher = undefined;
    this.gpio.clear();
  }
}
