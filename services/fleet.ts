/**
 * Status across the mesh. Every node publishes, every `fleet.status_interval` (10 s), a few numbers about
 * itself as ordinary telemetry under its own prefix, `<prefix>@node/<name>` — so the bridge, the Influx sink,
 * /metrics and `starling tail` carry them like any sample, and in secure mode they are pinned to the node's
 * key with the rest of its prefix:
 *
 *   uptime (s)  healthy (1: every service healthy)  rss (MB)  load (1-minute load average)
 *   cpu_temp (°C, when the board has a thermal zone)  spool (messages waiting in every spool)
 *   dropped (the sum of every counter that counts something dropped)
 *
 * and, unless `fleet.follow` is false, follows the same topics of every peer (only those: the subscription is
 * `<peer prefix>@node/`) and every peer's log lines, keeping
 * the last of each node (at most {@link MAX_NODES}). {@link FleetService.mesh} is one row per node: this one,
 * each peer with its presence and version (X-VERSION), and nodes gone from the mesh with when they were last
 * heard — what `starling status --mesh` prints.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { capability } from 'zeromq';
import type { Config } from '../runtime/config/load.ts';
import { counters, ServiceBase, type Counters, type Health } from '../runtime/supervisor/service.ts';
import type { LogEntry, LogRing } from '../runtime/supervisor/log.ts';
import { MeshLogs, type MeshLogLine } from '../runtime/supervisor/logstream.ts';
import type { ServiceStatus } from '../runtime/supervisor/supervisor.ts';
import { Subscriber } from '../runtime/telemetry/subscriber.ts';
import { follow, HEADER_PUBLISHER, STATUS_SEGMENT, type Following } from '../runtime/telemetry/mesh.ts';
import type { ZreNode } from '../runtime/zre/node.ts';
import { HEADER_VERSION } from '../runtime/files/chunks.ts';
import { clientCurve, type Security } from '../runtime/security/context.ts';
import { ProblemLog } from '../runtime/problems.ts';

/** Nodes whose status is kept at most (the one heard from longest ago goes first). */
export const MAX_NODES = 1024;

/** The status numbers, their units. */
export const STATUS_UNITS: Record<string, string> = { uptime: 's', healthy: '', rss: 'MB', load: '', cpu_temp: '°C', spool: '', dropped: '' };

/** What the fleet service shows of the supervisor it runs under (set by the caller once it exists). */
export interface FleetSupervisor {
  list(): ServiceStatus[];
  stats(): Record<string, Counters>;
}

export interface FleetDevice {
  readonly node: ZreNode | undefined;
  readonly publisher: {
    readonly id: Buffer; readonly endpoints: string[]; readonly snapshotEndpoint: string | undefined;
    publish(topic: string, value: number, opts?: { unit?: string }): boolean;
  } | undefined;
  readonly identity: { version?: string };
}

/** One row of `starling status --mesh`. */
export interface MeshRow {
  name: string;
  uuid: string;
  /** `self`, the peer's presence (alive, evasive, …), or `gone` (heard from earlier, not on the mesh now). */
  presence: string;
  version?: string;
  /** ms since the epoch of its last status, by its own clock. */
  updated?: number;
  uptime?: number;
  healthy?: number;
  rss?: number;
  load?: number;
  cpu_temp?: number;
  spool?: number;
  dropped?: number;
}

interface Heard {
  name: string;
  uuid: string;
  version?: string;
  updated: number;
  values: Record<string, number>;
}

/** The sum of every counter that counts something dropped (its name says so), and of every spool's depth. */
export function totals(stats: Record<string, Counters>): { dropped: number; spool: number } {
  let dropped = 0;
  let spool = 0;
  for (const counters of Object.values(stats)) {
    for (const [k, v] of Object.entries(counters)) {
      if (/dropped$/i.test(k)) dropped += v;
      else if (/(^|\.)spool\.queued$/.test(k)) spool += v;
    }
  }
  return { dropped, spool };
}

export class FleetService extends ServiceBase {
  readonly name = 'fleet';
  /** The supervisor whose health and counters are reported; the caller sets it. */
  supervisor: FleetSupervisor | undefined;
  private sub: Subscriber | undefined;
  private following: Following | undefined;
  private timer: NodeJS.Timeout | undefined;
  private followed: FleetDevice['publisher'];
  /** By publisher id. */
  private readonly heard = new Map<string, Heard>();
  private readonly startedAt = Date.now();
  private readonly counters = { published: 0, received: 0, nodesEvicted: 0 };
  private readonly problems = new ProblemLog((m) => this.log?.('warn', m));

  /** Stores its dependencies; opens nothing. */
  constructor(
    private readonly config: Config, private readonly device: FleetDevice,
    private readonly log?: (level: 'info' | 'warn' | 'error', msg: string) => void, private readonly security?: Security,
    /** This node's own log ring: its lines are part of the mesh's logs. */
    private readonly ring?: LogRing,
  ) {
    super();
  }

  /** Every peer's log lines (runtime/supervisor/logstream.ts), while running. */
  private logs: MeshLogs | undefined;
  private readonly meshListeners = new Set<(l: MeshLogLine) => void>();

  /** The last `count` lines of the mesh's logs (this node's included), by time. */
  meshTail(count: number): MeshLogLine[] {
    const own = (this.ring?.tail(count) ?? []).map((e) => this.ownLine(e));
    return [...own, ...(this.logs?.tail(count) ?? [])].sort((a, b) => a.ts - b.ts).slice(-count);
  }

  /** Calls `listener` for each new line of the mesh's logs (this node's included); returns the function that stops it. */
  meshFollow(listener: (l: MeshLogLine) => void): () => void {
    // Kept here, not on the MeshLogs of one run: a follower stays through a restart of this service.
    const offOwn = this.ring?.follow((e) => listener(this.ownLine(e)));
    this.meshListeners.add(listener);
    return () => {
      offOwn?.();
      this.meshListeners.delete(listener);
    };
  }

  private ownLine(e: LogEntry): MeshLogLine {
    const node = this.device.node;
    return { node: node?.name ?? '', uuid: node?.uuid.toString('hex').toUpperCase() ?? '', seq: -1, ts: e.ts, level: e.level, service: e.service, msg: e.msg };
  }

  override stats(): Counters {
    return { ...this.counters, nodes: this.heard.size, ...counters('logs', this.logs?.stats()) };
  }

  override health(): Health {
    if (this.state !== 'running') return { healthy: false, detail: this.state };
    if (this.device.publisher !== this.followed) return { healthy: false, detail: 'the device restarted; following it again' };
    return { healthy: true };
  }

  async start(): Promise<void> {
    const node = this.device.node;
    const publisher = this.device.publisher;
    if (!node || !publisher) throw new Error('the fleet service needs a running device');
    this.setState('starting');
    const sub = new Subscriber({ onProblem: (m) => this.problems.note('telemetry', `fleet: ${m}`), ...(this.security ? { curve: clientCurve(this.security) } : {}) });
    sub.start();
    this.sub = sub;
    sub.on('batch', (b) => {
      const at = b.topic.lastIndexOf(STATUS_SEGMENT);
      if (at < 0 || b.count === 0) return;
      const metric = b.topic.slice(at + STATUS_SEGMENT.length);
      if (!(metric in STATUS_UNITS)) return;
      this.counters.received += b.count;
      const i = b.count - 1;
      this.note(b.publisher, metric, b.status(i) === 0 ? b.value(i) : NaN, b.ts(i));
    });
    await sub.connect(publisher.endpoints[0]!, publisher.snapshotEndpoint, this.security?.identity.publicKey, this.config.telemetry.prefix + STATUS_SEGMENT);
    this.followed = publisher;
    // fleet.follow false: a leaf of a large fleet keeps no connection to each peer for this (a hub does).
    if (this.config.fleet.follow) {
      this.following = follow(node, sub, { pgm: Boolean(capability.pgm), under: STATUS_SEGMENT, onError: (e) => this.problems.note('follow', `fleet: ${e.message}`) });
      this.logs = new MeshLogs(this.config.fleet.log_lines, this.security ? clientCurve(this.security) : undefined, (m) => this.problems.note('logs', `fleet: ${m}`));
      this.logs.follow((l) => {
        for (const f of this.meshListeners) f(l);
      });
      this.logs.start(node);
    }
    const every = this.config.fleet.status_interval;
    if (every > 0) {
      this.timer = setInterval(() => this.report(), every);
      this.report();
    }
    this.setState('running');
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.setState('stopping');
    clearInterval(this.timer);
    this.logs?.stop();
    this.following?.stop();
    this.following = undefined;
    await this.sub?.stop();
    this.sub = undefined;
    this.setState('stopped');
  }

  /** This node's numbers now. */
  private own(): Record<string, number> {
    const sup = this.supervisor;
    const stats = sup?.stats() ?? {};
    const { dropped, spool } = totals(stats);
    const out: Record<string, number> = {
      uptime: Math.round((Date.now() - this.startedAt) / 1000),
      healthy: sup ? (sup.list().every((s) => s.state !== 'running' || s.healthy) ? 1 : 0) : 1,
      load: Math.round(loadavg()[0]! * 100) / 100,
      spool, dropped,
    };
    try {
      // Reads /proc/self/stat: fails (EMFILE) when the process has every descriptor it may have in use.
      out.rss = Math.round(process.memoryUsage.rss() / 104857.6) / 10;
    } catch (e) {
      this.problems.note('rss', `fleet: cannot read this process's memory (${(e as Error).message}); its status goes without rss`);
    }
    try {
      const t = Number(readFileSync(join(this.config.sysfs, 'class/thermal/thermal_zone0/temp'), 'utf8')) / 1000;
      if (Number.isFinite(t)) out.cpu_temp = t;
    } catch {
      // no thermal zone on this board (or in this container)
    }
    return out;
  }

  /** Publishes this node's status; on a timer, so nothing it meets may throw out of it (that would end the process). */
  private report(): void {
    const pub = this.device.publisher;
    if (!pub) return;
    const prefix = this.config.telemetry.prefix + STATUS_SEGMENT;
    try {
      for (const [metric, value] of Object.entries(this.own())) {
        if (pub.publish(prefix + metric, value, { unit: STATUS_UNITS[metric] })) this.counters.published++;
      }
    } catch (e) {
      this.problems.note('report', `fleet: this node's status not published: ${(e as Error).message}`);
    }
  }

  private note(publisher: string, metric: string, value: number, ts: number): void {
    let h = this.heard.get(publisher);
    if (!h) {
      if (this.heard.size >= MAX_NODES) {
        let oldest: [string, Heard] | undefined;
        for (const e of this.heard) if (!oldest || e[1].updated < oldest[1].updated) oldest = e;
        if (oldest) this.heard.delete(oldest[0]);
        this.counters.nodesEvicted++;
      }
      h = { name: '', uuid: '', updated: ts, values: {} };
      this.heard.set(publisher, h);
    }
    if (!h.uuid) {
      // Whose it is, while the node is here to say (X-TELEMETRY-ID): kept for when it is gone.
      const p = this.device.node?.peerList().find((x) => x.headers[HEADER_PUBLISHER] === publisher);
      if (p) Object.assign(h, { name: p.name, uuid: p.peer, version: p.headers[HEADER_VERSION] });
    }
    h.updated = Math.max(h.updated, ts);
    if (Number.isNaN(value)) delete h.values[metric];
    else h.values[metric] = value;
  }

  /** One row per node: this one, its peers, and nodes heard from that are gone (sorted by name). */
  mesh(): MeshRow[] {
    const node = this.device.node;
    if (!node) return [];
    const rows: MeshRow[] = [];
    const own = this.device.publisher?.id.toString('hex').toUpperCase();
    const seen = new Set<string>();
    rows.push({ name: node.name, uuid: node.uuid.toString('hex').toUpperCase(), presence: 'self', version: this.device.identity.version, updated: Date.now(), ...this.own() });
    if (own) seen.add(own);
    for (const p of node.peerList()) {
      const id = p.headers[HEADER_PUBLISHER];
      const h = id ? this.heard.get(id) : undefined;
      if (id) seen.add(id);
      if (h) Object.assign(h, { name: p.name, uuid: p.peer, version: p.headers[HEADER_VERSION] });
      rows.push({ name: p.name || p.peer, uuid: p.peer, presence: p.presence, version: p.headers[HEADER_VERSION], ...(h ? { updated: h.updated, ...h.values } : {}) });
    }
    for (const [id, h] of this.heard) {
      if (seen.has(id) || !h.uuid) continue;
      rows.push({ name: h.name || h.uuid, uuid: h.uuid, presence: 'gone', version: h.version, updated: h.updated, ...h.values });
    }
    const [self, ...rest] = rows;
    return [self!, ...rest.sort((a, b) => a.name.localeCompare(b.name))];
  }
}
