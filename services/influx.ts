/**
 * The Influx sink: every telemetry sample on the mesh (or only this device's, `influx.mesh: false`) written
 * to a time-series database in InfluxDB's line protocol over HTTP — InfluxDB 1.x and VictoriaMetrics
 * (`POST /write?db=`), InfluxDB 2.x (`POST /api/v2/write?org=&bucket=`).
 *
 * One line per sample, millisecond precision:
 *   <measurement>,node=<node>,topic=<topic>[,unit=<unit>] value=<v>[,value_1=<v>…],seq=<n>i,status=<n>i <ts>
 * `node` is the publishing node's name (X-TELEMETRY-ID), `seq` the publisher's sequence number (a reader can
 * see a gap), `status` 0 for a good read; a failed read has no value field. Tag values are escaped as the
 * protocol requires; a topic or unit that cannot be one (a backslash or a control character) is refused and
 * counted, never sent.
 *
 * Nothing is lost while the database is away, as with the MQTT bridge and through the same spool
 * (runtime/spool.ts, a directory of its own):
 * - Samples gather in memory for `interval` (1 s) or `batch` (5,000) lines, then go in one request; one
 *   request at a time.
 * - A request that fails (no connection, a timeout, a 5xx, or 401/403/404: a server not yet set up) puts its
 *   lines and everything gathered behind them into the spool, and every new sample goes there too until the
 *   spool is empty again; the spool is sent in order, `batch` lines a request, retried with the one backoff
 *   helper (0.5 s … 30 s: a request is a cheap probe). The spool survives a restart; only a full spool
 *   drops (counted, oldest first).
 * - A 400 is the server refusing lines it cannot parse or store (a field type conflict): they are given up
 *   (`rejected`, logged), since sending them again would fail again; a 413 halves the batch.
 * - A line is sent at least once: a request whose answer was lost is sent again. InfluxDB keeps one point
 *   per measurement, tag set and timestamp, so the repeat replaces the first; VictoriaMetrics may then hold
 *   the point twice (its `-dedup.minScrapeInterval` folds them).
 * - Write order is sample order, except that lines spilled to the spool while a request was in flight come
 *   before that request's lines when it then fails; every point carries its own timestamp, so the database
 *   orders them.
 */
import type { Agent as HttpAgent, IncomingMessage, request as httpRequest } from 'node:http';
import { capability } from 'zeromq';
import type { Config } from '../runtime/config/load.ts';
import { Backoff } from '../runtime/backoff.ts';
import { Spool } from '../runtime/spool.ts';
import { ProblemLog, type ProblemSink } from '../runtime/problems.ts';
import { counters, ServiceBase, type Counters, type Health } from '../runtime/supervisor/service.ts';
import { Subscriber } from '../runtime/telemetry/subscriber.ts';
import { follow, publisherNames, type Following } from '../runtime/telemetry/mesh.ts';
import type { Batch } from '../runtime/telemetry/sample.ts';
import type { ZreNode } from '../runtime/zre/node.ts';
import { clientCurve, type Security } from '../runtime/security/context.ts';

// node:http and node:https are taken when a sink is made, not imported: importing node:https loads TLS, which
// cost every idle device 1.8 MB of private memory (bench/image.ts: 19.2 → 17.4 MB) whether it had a sink or not.
const http = () => process.getBuiltinModule('node:http') as typeof import('node:http');
const https = () => process.getBuiltinModule('node:https') as typeof import('node:https');

/** The largest request body: a batch is cut here too (InfluxDB's default limit is 25 MB). */
const MAX_BODY_BYTES = 1024 * 1024;

/** What the sink needs of the device it runs beside. */
export interface InfluxDevice {
  readonly node: ZreNode | undefined;
  readonly publisher: { readonly id: Buffer; readonly endpoints: string[]; readonly snapshotEndpoint: string | undefined } | undefined;
}

/** Where and how to write: the parts of `influx:` the writer uses. */
export interface InfluxTarget {
  url: string;
  db?: string;
  bucket?: string;
  org?: string;
  token?: string;
  username?: string;
  password?: string;
  batch: number;
  interval: number;
  timeout: number;
}

/** A tag value or key as line protocol writes it (`,`, `=` and space escaped); undefined when it cannot be one. */
export function tag(v: string): string | undefined {
  if (v === '' || /[\\\u0000-\u001f\u007f]/.test(v)) return undefined;
  return v.replace(/([, =])/g, '\\$1');
}

/** A float field: JavaScript's shortest round-trip form, which line protocol reads as a float. */
const float = (v: number): string | undefined => (Number.isFinite(v) ? String(v) : undefined);

/** The line of sample `i` of `b`; `series` is its start (measurement and tags), made once per batch by {@link seriesOf}. */
export function lineOf(series: string, b: Batch, i: number): string {
  const fields: string[] = [];
  if (b.status(i) === 0) {
    for (let k = 0; k < b.arity; k++) {
      const v = float(b.value(i, k));
      if (v !== undefined) fields.push(`${k === 0 ? 'value' : `value_${k}`}=${v}`);
    }
  }
  fields.push(`seq=${b.seq(i)}i`, `status=${b.status(i)}i`);
  return `${series} ${fields.join(',')} ${Math.round(b.ts(i))}`;
}

/** `measurement,node=…,topic=…[,unit=…]`, or undefined when the topic cannot be a tag value. */
export function seriesOf(measurement: string, node: string, topic: string, unit: string): string | undefined {
  const t = tag(topic);
  if (t === undefined) return undefined;
  const u = unit ? tag(unit) : '';
  if (u === undefined) return undefined;
  // A node name that cannot be a tag value is written as "unnamed" (the topic still says where it came from).
  return `${measurement},node=${tag(node) ?? 'unnamed'},topic=${t}${u ? `,unit=${u}` : ''}`;
}

type Outcome = { ok: true } | { ok: false; status?: number; why: string };

/**
 * Lines → requests, in order, through the spool when the database is away (the rules of the module comment).
 * `add` never blocks and never throws.
 */
export class InfluxWriter {
  private building: string[] = [];
  private buildingBytes = 0;
  /** Lines of the request in flight that came from memory (spilled to the spool if the sink stops first). */
  private inflight: string[] | undefined;
  private busy = false;
  /** Set by a failed request, cleared by a good one: new lines go to the spool meanwhile. */
  private failing = false;
  private retryAt = 0;
  private limit: number;
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  private current: ReturnType<typeof httpRequest> | undefined;
  private readonly backoff = new Backoff({ min: 500, max: 30_000 });
  private readonly problems: ProblemLog;
  private readonly agent: HttpAgent;
  private readonly counters = { received: 0, written: 0, requests: 0, failures: 0, rejected: 0, spooled: 0 };
  private readonly path: string;
  private readonly headers: Record<string, string>;
  private lastError: string | undefined;

  constructor(private readonly t: InfluxTarget, readonly spool: Spool, onProblem?: ProblemSink) {
    this.limit = t.batch;
    this.problems = new ProblemLog(onProblem);
    const secure = t.url.startsWith('https:');
    this.agent = secure ? new (https().Agent)({ keepAlive: true, maxSockets: 1 }) : new (http().Agent)({ keepAlive: true, maxSockets: 1 });
    const base = t.url.replace(/\/$/, '');
    const q = (k: string, v: string) => `${k}=${encodeURIComponent(v)}`;
    this.path = `${base}${t.bucket !== undefined ? `/api/v2/write?${q('org', t.org ?? '')}&${q('bucket', t.bucket)}` : `/write?${q('db', t.db ?? '')}`}&precision=ms`;
    this.headers = { 'content-type': 'text/plain; charset=utf-8' };
    if (t.token) this.headers.authorization = `Token ${t.token}`;
    else if (t.username !== undefined) this.headers.authorization = `Basic ${Buffer.from(`${t.username}:${t.password ?? ''}`).toString('base64')}`;
  }

  start(): void {
    this.stopped = false;
    this.spool.open();
    this.timer = setInterval(() => void this.send(), this.t.interval);
    if (this.spool.length > 0) this.failing = true; // what the last run left: it goes first
    void this.send();
  }

  /** Waits up to `ms` for the request in flight, then keeps what was not written in the spool and closes it. */
  async stop(ms = 2000): Promise<void> {
    if (this.stopped) return;
    clearInterval(this.timer);
    const end = Date.now() + ms;
    while (this.busy && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    // A clean stop with the database there writes what gathered, rather than leaving it for the next start.
    if (!this.busy && !this.failing && this.spool.length === 0 && this.building.length > 0) {
      await Promise.race([this.send(), new Promise((r) => setTimeout(r, Math.max(0, end - Date.now())))]);
    }
    this.stopped = true;
    this.current?.destroy();
    // In flight from memory and not answered: kept (it may have arrived: a repeat replaces it).
    if (this.busy && this.inflight) this.spill(this.inflight);
    this.spill(this.building);
    this.building = [];
    this.buildingBytes = 0;
    this.spool.close();
    this.agent.destroy();
  }

  stats(): Counters {
    return { ...this.counters, pending: this.building.length, failing: this.failing ? 1 : 0, ...counters('spool', this.spool.stats()) };
  }

  get health(): { failing: boolean; lastError: string | undefined } {
    return { failing: this.failing, lastError: this.lastError };
  }

  add(line: string): void {
    this.counters.received++;
    if (this.failing || this.spool.length > 0) return this.spill([line]);
    this.building.push(line);
    this.buildingBytes += line.length + 1;
    if (this.building.length >= this.limit || this.buildingBytes >= MAX_BODY_BYTES) {
      if (!this.busy) void this.send();
      else {
        // A batch is ready and the request before it is still out: it waits on disk, in order.
        this.spill(this.building);
        this.building = [];
        this.buildingBytes = 0;
      }
    }
  }

  private spill(lines: string[]): void {
    for (const l of lines) this.spool.append({ topic: '', payload: Buffer.from(l), qos: 1, retain: false });
    this.counters.spooled += lines.length;
  }

  /** Sends what is due: the spool first, then what gathered in memory. One request at a time. */
  private async send(): Promise<void> {
    if (this.busy || this.stopped) return;
    this.busy = true;
    try {
      while (!this.stopped && Date.now() >= this.retryAt) {
        let lines: string[];
        let fromSpool: boolean;
        if (this.spool.length > 0) {
          lines = [];
          let bytes = 0;
          for (let i = 0; i < this.limit && bytes < MAX_BODY_BYTES; i++) {
            const m = this.spool.peek(i);
            if (!m) break;
            lines.push(m.payload.toString());
            bytes += m.payload.length + 1;
          }
          if (lines.length === 0) break; // the spool's disk failed under it; its own retry brings it back
          fromSpool = true;
        } else if (this.building.length > 0) {
          lines = this.building;
          this.building = [];
          this.buildingBytes = 0;
          this.inflight = lines;
          fromSpool = false;
        } else {
          this.failing = false;
          break;
        }
        const r = await this.post(lines.join('\n'));
        this.inflight = undefined;
        if (this.stopped) break; // stop() kept what was in flight
        if (r.ok || r.status === 400) {
          if (!r.ok) {
            this.counters.rejected += lines.length;
            this.problems.note('rejected', `influx: ${lines.length} line(s) refused by the database and given up: ${r.why}`);
          } else this.counters.written += lines.length;
          if (fromSpool) for (let i = 0; i < lines.length; i++) this.spool.ack(!r.ok);
          if (this.failing && this.spool.length === 0) this.problems.note('back', `influx: writing again (${this.t.url})`);
          this.failing = this.spool.length > 0;
          this.lastError = undefined;
          this.backoff.reset();
          this.limit = Math.min(this.t.batch, this.limit * 2);
          if (this.spool.length === 0 && this.building.length < this.limit) break;
          continue;
        }
        if (r.status === 413 && lines.length > 1) {
          this.limit = Math.max(1, Math.floor(lines.length / 2));
          if (!fromSpool) {
            this.building = lines.concat(this.building);
            this.buildingBytes = this.building.reduce((n, l) => n + l.length + 1, 0);
          }
          continue;
        }
        this.counters.failures++;
        this.lastError = r.why;
        if (!fromSpool) {
          this.spill(lines);
          this.spill(this.building);
          this.building = [];
          this.buildingBytes = 0;
        }
        if (!this.failing) this.problems.note('failing', `influx: cannot write to ${this.t.url}: ${r.why}; samples wait in the spool (${this.spool.dir})`);
        this.failing = true;
        this.retryAt = Date.now() + this.backoff.next();
        break;
      }
    } finally {
      this.busy = false;
    }
  }

  private post(body: string): Promise<Outcome> {
    this.counters.requests++;
    const data = Buffer.from(body);
    const send = this.t.url.startsWith('https:') ? https().request : http().request;
    return new Promise((resolve) => {
      let settled = false;
      const done = (o: Outcome) => {
        if (settled) return;
        settled = true;
        this.current = undefined;
        resolve(o);
      };
      const req = send(this.path, { method: 'POST', agent: this.agent, headers: { ...this.headers, 'content-length': data.length }, timeout: this.t.timeout }, (res: IncomingMessage) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          if (text.length < 400) text += c;
        });
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) done({ ok: true });
          else done({ ok: false, status, why: `HTTP ${status}${text ? `: ${text.trim().slice(0, 200)}` : ''}` });
        });
        res.on('error', (e) => done({ ok: false, why: e.message }));
      });
      this.current = req;
      req.on('timeout', () => req.destroy(new Error(`no answer in ${this.t.timeout} ms`)));
      req.on('error', (e: NodeJS.ErrnoException) => done({ ok: false, why: e.code ?? e.message }));
      req.end(data);
    });
  }
}

/** The sink as a supervised service: follows the telemetry, names each batch's node, feeds the writer. */
export class InfluxService extends ServiceBase {
  readonly name = 'influx';
  writer: InfluxWriter | undefined;
  private sub: Subscriber | undefined;
  private following: Following | undefined;
  private followed: InfluxDevice['publisher'];
  private names = new Map<string, string>();
  private namesAt = 0;
  /** Samples whose topic or unit cannot be a tag value, refused. */
  private refusedTopics = 0;
  private readonly problems: ProblemLog;

  /** Stores its dependencies; opens nothing. */
  constructor(
    private readonly config: Config, private readonly device: InfluxDevice,
    private readonly log?: (level: 'info' | 'warn' | 'error', msg: string) => void, private readonly security?: Security,
  ) {
    super();
    this.problems = new ProblemLog((m) => this.log?.('warn', m));
  }

  override stats(): Counters {
    return { ...(this.writer?.stats() ?? {}), refusedTopics: this.refusedTopics, ...counters('telemetry', this.sub?.stats()), 'mesh.followRefused': this.following?.refused ?? 0 };
  }

  /** Healthy while running, writing or spooling (a database away is a reason to spool); unhealthy when the device restarted under it. */
  override health(): Health {
    if (this.state !== 'running') return { healthy: false, detail: this.state };
    if (this.device.publisher !== this.followed) return { healthy: false, detail: 'the device restarted; following it again' };
    const h = this.writer?.health;
    return { healthy: true, detail: h?.failing ? `spooling: ${h.lastError ?? 'sending what waits'}` : 'writing' };
  }

  async start(): Promise<void> {
    const c = this.config.influx;
    const node = this.device.node;
    const publisher = this.device.publisher;
    if (!c.url || !node || !publisher) throw new Error('the Influx sink needs influx.url and a running device');
    this.setState('starting');
    const warn = (m: string) => this.log?.('warn', m);
    const writer = new InfluxWriter({ ...c, url: c.url }, new Spool(c.spool, c.spool_max_mb * 1024 * 1024, c.spool_fsync, { onProblem: warn }), warn);
    this.writer = writer;
    writer.start();
    const sub = new Subscriber({ onProblem: warn, ...(this.security ? { curve: clientCurve(this.security) } : {}) });
    sub.start();
    this.sub = sub;
    sub.on('batch', (b, from) => this.onBatch(b, from));
    if (c.mesh) this.following = follow(node, sub, { pgm: Boolean(capability.pgm), onError: (e) => this.problems.note('follow', `influx: ${e.message}`) });
    await sub.connect(publisher.endpoints[0]!, publisher.snapshotEndpoint, this.security?.identity.publicKey);
    this.followed = publisher;
    this.log?.('info', `writing telemetry to ${c.url} (${c.bucket !== undefined ? `bucket ${c.bucket}` : `db ${c.db}`})`);
    this.setState('running');
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.setState('stopping');
    this.following?.stop();
    this.following = undefined;
    await this.sub?.stop();
    this.sub = undefined;
    await this.writer?.stop();
    this.setState('stopped');
  }

  private nodeOf(publisher: string): string {
    // The names change only when peers come and go: looked up again at most once a second.
    const now = Date.now();
    if (now - this.namesAt > (this.names.has(publisher) ? 1000 : 100)) {
      const node = this.device.node;
      if (node) this.names = publisherNames(node, this.device.publisher?.id);
      this.namesAt = now;
    }
    return this.names.get(publisher) ?? publisher;
  }

  private onBatch(b: Batch, from: number): void {
    const writer = this.writer;
    if (!writer || from >= b.count) return;
    const series = seriesOf(this.config.influx.measurement, this.nodeOf(b.publisher), b.topic, b.unit);
    if (series === undefined) {
      this.refusedTopics += b.count - from;
      this.problems.note('topic', `influx: topic ${JSON.stringify(b.topic.slice(0, 80))} (unit ${JSON.stringify(b.unit.slice(0, 20))}) cannot be a line-protocol tag: not written`);
      return;
    }
    for (let i = from; i < b.count; i++) writer.add(lineOf(series, b, i));
  }
}
