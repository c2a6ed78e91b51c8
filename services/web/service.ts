/**
 * The web view: a small HTTP server (node:http, no framework) serving one page and its live data.
 *
 *   GET  /                 the page (HTML, JS, CSS from the bundle: services/web/assets.ts; works offline)
 *   GET  /api/state        the mesh, the topics with their last values, the services, the recent log (JSON)
 *   GET  /api/history?topic=T   one topic's kept history (JSON: ts in seconds, values)
 *   GET  /events           Server-Sent Events: samples (new points only, every 100 ms), peers, services, log;
 *                          resumes after Last-Event-ID (or ?after=ID), else `reset` (live.ts has the bounds)
 *   GET  /metrics          the Prometheus text exposition of the last samples and the counters (metrics.ts)
 *   POST /api/gpio         {"node": UUID, "gpio": NAME, "set": 0|1}: switches an output, answers with the
 *                          value the device read back after acting (its confirmed state)
 *
 * Who may do what:
 * - Every request's Host header must be an IP address, `localhost` or one of `web.hosts` (a page on another
 *   site resolving its own name to this board — DNS rebinding — is refused).
 * - Listening on a loopback address, viewing needs nothing. Listening elsewhere, every request needs the
 *   token: `?token=T` once (answered with an HttpOnly, SameSite=Strict cookie and a redirect that drops it
 *   from the address bar), the cookie, or `Authorization: Bearer T`.
 * - A POST needs the token in a header (`X-Starling-Token` or `Authorization`), `Content-Type:
 *   application/json` and, when the browser sends one, an Origin of this host: no cross-site request can
 *   carry all three. The page gets the token inside the HTML it is served (only to a viewer allowed to see it;
 *   other sites cannot read it).
 * - A peer's output is switched by the mesh command (runtime/command.ts), so the device applies the same
 *   roles as to any mesh command: in secure mode it refuses unless this node's key has `command`.
 * Every refusal is counted (`refused.*` in `starling status`); the token itself is never logged.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { capability } from 'zeromq';
import type { Config } from '../../runtime/config/load.ts';
import { ServiceBase, type Counters, type Health } from '../../runtime/supervisor/service.ts';
import type { LogEntry, LogRing } from '../../runtime/supervisor/log.ts';
import type { ServiceStatus } from '../../runtime/supervisor/supervisor.ts';
import { Subscriber } from '../../runtime/telemetry/subscriber.ts';
import { follow, HEADER_PREFIX, peerLines, publisherNames, type Following } from '../../runtime/telemetry/mesh.ts';
import type { PeerInfo, ZreNode } from '../../runtime/zre/node.ts';
import { clientCurve, type Security } from '../../runtime/security/context.ts';
import { fingerprint, writeAtomic } from '../../runtime/security/identity.ts';
import { CommandError, parseCommand, sendCommand } from '../../runtime/command.ts';
import { HEADER_VERSION } from '../../runtime/files/chunks.ts';
import { ProblemLog } from '../../runtime/problems.ts';
import type { Device } from '../device.ts';
import { EventLog, Histories } from './live.ts';
import { checkWebAssets, webAssets } from './assets.ts';
import { exposition, METRICS_TYPE } from './metrics.ts';

// node:http and node:zlib are taken when the view first answers, not imported: loading them took about 7 ms of a
// device's start before its mesh node was up, and node:http's modules and parser hold about 0.4 MB that a
// device nobody is looking at does not need (see accept()).
const http = () => process.getBuiltinModule('node:http') as typeof import('node:http');
const zlib = () => process.getBuiltinModule('node:zlib') as typeof import('node:zlib');

/** New samples are sent to the browsers this often, together (one event per interval, not one per sample). */
const SAMPLE_FLUSH_MS = 100;
/** Points waiting for the next flush at most; beyond, counted as dropped (the history still has them). */
const MAX_PENDING_POINTS = 20_000;
/** Log lines sent per flush at most (each flush every 500 ms); beyond, counted. */
const MAX_LOG_LINES = 50;
/** How often services and peers are compared with what was last sent. */
const STATUS_MS = 1000;
const HEARTBEAT_MS = 15_000;
/** The largest POST body read. */
const MAX_BODY = 4096;
/** How long a switched peer may take to answer. */
const COMMAND_TIMEOUT_MS = 5000;
/** How often every peer is asked which peers it sees (the picture of who sees whom). */
const LINKS_MS = 5000;

/** What the web view shows of the supervisor it runs under (set by the composition root's caller). */
export interface SupervisorView {
  list(): ServiceStatus[];
  stats(): Record<string, Counters>;
}

type Refusal = 'host' | 'token' | 'post' | 'origin' | 'clients' | 'command' | 'request';

export class WebService extends ServiceBase {
  readonly name = 'web';
  /** The supervisor whose services the page shows; the caller sets it once the supervisor exists. */
  supervisor: SupervisorView | undefined;
  /** Accepts the connections (node:net); `http` serves them, made at the first one. */
  private server: NetServer | undefined;
  private http: Server | undefined;
  private sub: Subscriber | undefined;
  private following: Following | undefined;
  /** `services` and `peers` carry the whole of what they show: the log keeps the latest of each. */
  private readonly events = new EventLog(['services', 'peers']);
  private histories: Histories | undefined;
  private token = '';
  private loopback = true;
  private pending: [string, number, number | null][] = [];
  private units = new Map<string, string>();
  private logLines: LogEntry[] = [];
  private lastServices = '';
  private lastPeers = '';
  private timers: NodeJS.Timeout[] = [];
  private offLog: (() => void) | undefined;
  private offNode: (() => void) | undefined;
  private followed: Device['publisher'];
  /** Each peer's answer to the peers query: whom it sees (runtime/command.ts). */
  private readonly links = new Map<string, string[]>();
  private readonly refused: Record<Refusal, number> = { host: 0, token: 0, post: 0, origin: 0, clients: 0, command: 0, request: 0 };
  private readonly counters = { pointsDropped: 0, logLinesDropped: 0, commands: 0, commandErrors: 0, requests: 0 };
  private readonly problems = new ProblemLog((m) => this.log?.('warn', m));

  /** Stores its dependencies; opens nothing (start() does). */
  constructor(
    private readonly config: Config, private readonly device: Device, private readonly ring: LogRing,
    private readonly log?: (level: 'info' | 'warn' | 'error', msg: string) => void, private readonly security?: Security,
  ) {
    super();
  }

  /** The address it listens on (`http://IP:PORT/`), once started. */
  get url(): string | undefined {
    const a = this.server?.address() as AddressInfo | null | undefined;
    return a ? `http://${a.address}:${a.port}/` : undefined;
  }

  override stats(): Counters {
    const out: Counters = { ...this.events.stats(), topics: this.histories?.size ?? 0, topicsEvicted: this.histories?.evicted ?? 0, ...this.counters };
    for (const [k, v] of Object.entries(this.refused)) out[`refused.${k}`] = v;
    return out;
  }

  /** Unhealthy when the device restarted under it (a new publisher to follow): the supervisor restarts it. */
  override health(): Health {
    if (this.state !== 'running') return { healthy: false, detail: this.state };
    if (this.device.publisher !== this.followed) return { healthy: false, detail: 'the device restarted; following it again' };
    return { healthy: true, detail: this.url };
  }

  async start(): Promise<void> {
    const w = this.config.web;
    const node = this.device.node;
    const publisher = this.device.publisher;
    if (!node || !publisher) throw new Error('the web view needs a running device');
    this.setState('starting');
    try {
      checkWebAssets();
      const [host, port] = splitListen(w.listen);
      this.loopback = host.startsWith('127.');
      this.token = this.resolveToken();
      this.histories = new Histories(w.history, w.max_topics);
      const server = createNetServer((socket) => this.accept(socket));
      server.maxConnections = w.max_clients + 16;
      this.server = server;
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      server.on('error', (e) => this.problems.note('server', `web: ${e.message}`));
      const sub = this.follow(node);
      await sub.connect(publisher.endpoints[0]!, publisher.snapshotEndpoint, this.security?.identity.publicKey);
      this.followed = publisher;
      this.offLog = this.ring.follow((e) => {
        if (this.logLines.length < MAX_LOG_LINES) this.logLines.push(e);
        else this.counters.logLinesDropped++;
      });
      this.timers.push(
        setInterval(() => this.flushSamples(), SAMPLE_FLUSH_MS),
        setInterval(() => this.flushLog(), 500),
        setInterval(() => this.publishStatus(), STATUS_MS),
        setInterval(() => this.events.heartbeat(), HEARTBEAT_MS),
        setInterval(() => this.askLinks(), LINKS_MS),
      );
      this.askLinks();
      this.log?.('info', `web view at ${this.url}${this.loopback ? ' (loopback: viewing needs no token)' : ' (the token is needed to view)'}`);
      this.setState('running');
    } catch (e) {
      await this.close().catch(() => {});
      this.setState('failed');
      if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE') throw new Error(`web.listen ${w.listen} is in use (another Starling?); choose another port, or web.listen: off`);
      throw e;
    }
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.setState('stopping');
    await this.close();
    this.setState('stopped');
  }

  private async close(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.offLog?.();
    this.offNode?.();
    this.offLog = this.offNode = undefined;
    this.following?.stop();
    this.following = undefined;
    this.events.close();
    const [server, httpServer] = [this.server, this.http];
    this.server = this.http = undefined;
    // The HTTP server never listened itself: its close() ends its connections and its timeout checks, and
    // reports "not running", which is true of it.
    httpServer?.closeAllConnections();
    httpServer?.close(() => {});
    if (server) await new Promise<void>((r) => server.close(() => r()));
    await this.sub?.stop();
    this.sub = undefined;
  }

  /**
   * A connection to the view. The HTTP server is made at the first one and takes every connection from then on:
   * until someone looks, a device holds only the listening socket. It never listens itself, so it is told it
   * does ('listening'): that starts its check of `headersTimeout` and `requestTimeout` on its connections.
   */
  private accept(socket: Socket): void {
    if (!this.http) {
      const server = http().createServer({ maxHeaderSize: 8192, requestTimeout: 30_000, headersTimeout: 10_000 }, (req, res) => this.handle(req, res));
      server.keepAliveTimeout = 5000;
      server.on('error', (e) => this.problems.note('server', `web: ${e.message}`));
      server.emit('listening');
      this.http = server;
    }
    this.http.emit('connection', socket);
  }

  /**
   * The token: web.token, else the one in web.token_file, else — listening beyond the loopback, where a person
   * must type it — a new one written there (0600) and shown once; on the loopback a new one for this run only
   * (the page carries it; a script reads it from the page, or sets web.token).
   */
  private resolveToken(): string {
    const w = this.config.web;
    if (w.token) return w.token;
    const file = w.token_file;
    if (existsSync(file)) {
      const t = readFileSync(file, 'utf8').trim();
      if (!/^[A-Za-z0-9_-]{16,128}$/.test(t)) throw new Error(`${file}: not a web token (16 to 128 letters, digits, - or _); remove it to have a new one made`);
      return t;
    }
    const t = randomBytes(24).toString('base64url');
    if (this.loopback) return t;
    mkdirSync(dirname(file), { recursive: true });
    writeAtomic(file, `${t}\n`, 0o600);
    // Printed once, to a person at a terminal; never to the log (which journald keeps).
    if (process.stderr.isTTY) process.stderr.write(`starling: the web view's token (shown once; kept in ${file}): ${t}\n`);
    this.log?.('info', `made a web view token in ${file} (readable by this user only)`);
    return t;
  }

  /**
   * Follows the mesh's telemetry into the histories (the caller connects the device's own publisher to the
   * subscriber returned), and the node's peer events into `peers` events and the links.
   */
  private follow(node: ZreNode): Subscriber {
    const sub = new Subscriber({ onProblem: (m) => this.problems.note('telemetry', `web: ${m}`), ...(this.security ? { curve: clientCurve(this.security) } : {}) });
    sub.start();
    this.sub = sub;
    sub.on('batch', (b) => {
      const h = this.histories!;
      for (let i = 0; i < b.count; i++) {
        const ts = b.ts(i);
        const status = b.status(i);
        const v = status === 0 ? b.value(i) : NaN;
        if (h.add(b.topic, b.unit, ts, v, status, b.publisher)) this.units.set(b.topic, b.unit);
        if (this.pending.length < MAX_PENDING_POINTS) this.pending.push([b.topic, ts / 1000, Number.isNaN(v) ? null : shown(v)]);
        else this.counters.pointsDropped++;
      }
    });
    this.following = follow(node, sub, { pgm: Boolean(capability.pgm), onError: (e) => this.problems.note('follow', `web: ${e.message}`) });
    const changed = () => this.publishPeers();
    const onExit = (e: { peer: string }) => this.links.delete(e.peer);
    const onEnter = (p: PeerInfo) => p.headers[HEADER_VERSION] && node.whisper(p.peer, PEERS_QUERY);
    // Answers to the peers query (a peer that lists more than the bound is cut there by parseCommand).
    const onWhisper = (m: { peer: string; content: Buffer[] }) => {
      if (!m.content[0] || m.content[0].length > 64 * 1024) return;
      try {
        const msg = parseCommand(m.content[0]);
        if ('reply' in msg && msg.reply.peers && msg.reply.ok) this.links.set(m.peer, msg.reply.peers);
      } catch {
        // not a command: the device and the files service have their own readers
      }
    };
    node.on('exit', onExit);
    node.on('enter', onEnter);
    node.on('whisper', onWhisper);
    for (const ev of ['enter', 'exit', 'join', 'leave', 'evasive'] as const) node.on(ev, changed);
    this.offNode = () => {
      node.off('exit', onExit);
      node.off('enter', onEnter);
      node.off('whisper', onWhisper);
      for (const ev of ['enter', 'exit', 'join', 'leave', 'evasive'] as const) node.off(ev, changed);
    };
    return sub;
  }

  /** Asks every peer whom it sees; the answers arrive as whispers (follow()). */
  private askLinks(): void {
    const node = this.device.node;
    if (!node) return;
    // Only Starling peers (they advertise X-VERSION): a Zyre or pyre application would get the query as a message.
    for (const p of node.peerList()) if (p.headers[HEADER_VERSION]) node.whisper(p.peer, PEERS_QUERY);
  }

  private flushSamples(): void {
    if (!this.pending.length) return;
    const units = this.units.size ? Object.fromEntries(this.units) : undefined;
    this.events.publish('samples', { p: this.pending, ...(units ? { u: units } : {}) });
    this.pending = [];
    this.units = new Map();
  }

  private flushLog(): void {
    if (!this.logLines.length) return;
    this.events.publish('log', this.logLines);
    this.logLines = [];
  }

  private publishStatus(): void {
    const s = JSON.stringify(this.servicesView());
    if (s !== this.lastServices) {
      this.lastServices = s;
      this.events.publishJson('services', s);
    }
    this.publishPeers();
  }

  private publishPeers(): void {
    const s = JSON.stringify(this.peersView());
    if (s === this.lastPeers) return;
    this.lastPeers = s;
    this.events.publishJson('peers', s);
  }

  private servicesView(): { services: ServiceStatus[]; stats: Record<string, Counters> } {
    const sup = this.supervisor;
    return sup ? { services: sup.list().map(({ lastProgress: _, ...s }) => s), stats: sup.stats() } : { services: [], stats: {} };
  }

  /** This node and its peers, each with what the page shows. */
  private peersView(): { self: PeerView | undefined; peers: PeerView[]; links: Record<string, string[]> } {
    const node = this.device.node;
    if (!node) return { self: undefined, peers: [], links: {} };
    const c = this.config;
    const self: PeerView = {
      uuid: node.uuid.toString('hex').toUpperCase(), name: node.name, endpoint: node.endpoint, groups: node.ownGroups(), presence: 'self',
      version: this.device.identity.version, fingerprint: this.security?.identity.fingerprint,
      prefix: c.telemetry.prefix, outputs: c.gpio.filter((g) => g.mode === 'output').map((g) => g.name), inputs: c.gpio.filter((g) => g.mode === 'input').map((g) => g.name),
    };
    const peers = node.peerList().map((p) => this.peerView(node, p)).sort((a, b) => a.name.localeCompare(b.name));
    const links: Record<string, string[]> = {};
    for (const p of peers) {
      const sees = this.links.get(p.uuid);
      if (sees) links[p.uuid] = [...sees].sort();
    }
    return { self, peers, links };
  }

  private peerView(node: ZreNode, p: PeerInfo): PeerView {
    let lines: { prefix: string; outputs: string[]; inputs: string[] } = { prefix: p.headers[HEADER_PREFIX] ?? '', outputs: [], inputs: [] };
    try {
      lines = peerLines(p);
    } catch (e) {
      this.problems.note(`lines ${p.peer}`, `web: ${p.name || p.peer} shown without its GPIO lines: ${(e as Error).message}`);
    }
    const key = node.peerKey(p.peer);
    return {
      uuid: p.peer, name: p.name, endpoint: p.endpoint, groups: p.groups, presence: p.presence,
      version: p.headers[HEADER_VERSION], fingerprint: key ? fingerprint(key) : undefined, ...lines,
    };
  }

  private refuse(res: ServerResponse, why: Refusal, status: number, message: string): void {
    this.refused[why]++;
    send(res, status, { error: message });
  }

  /** Every request: the Host check, the token where needed, then the route. Never throws. */
  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.counters.requests++;
    try {
      const url = new URL(req.url ?? '/', 'http://x');
      if (!this.hostAllowed(req.headers.host)) return this.refuse(res, 'host', 421, 'this host name is not one the web view answers to (add it to web.hosts)');
      const presented = this.presentedToken(req, url);
      if (!this.loopback && !presented) {
        if (url.pathname === '/' || url.pathname === '/index.html') return send(res, 401, LOGIN_PAGE, 'text/html; charset=utf-8');
        return this.refuse(res, 'token', 401, 'the token is needed (?token=…, the cookie, or Authorization: Bearer …)');
      }
      if (url.searchParams.has('token') && presented && req.method === 'GET') {
        // The token from a link: keep it in a cookie and take it out of the address bar and history.
        url.searchParams.delete('token');
        res.writeHead(303, {
          location: url.pathname + (url.search || ''),
          'set-cookie': `starling_token=${this.token}; HttpOnly; SameSite=Strict; Path=/`,
          'cache-control': 'no-store',
        });
        return void res.end();
      }
      if (req.method === 'POST' && url.pathname === '/api/gpio') return void this.postGpio(req, res);
      if (req.method !== 'GET' && req.method !== 'HEAD') return this.refuse(res, 'request', 405, `${req.method} is not served here`);
      switch (url.pathname) {
        case '/events': return this.stream(req, res, url);
        case '/api/state': return send(res, 200, this.stateView(), undefined, req);
        case '/metrics': return send(res, 200, this.metrics(), METRICS_TYPE, req);
        case '/api/history': {
          const h = this.histories?.get(url.searchParams.get('topic') ?? '');
          if (!h) return send(res, 404, { error: 'no history for that topic' });
          const [ts, vs] = h.points();
          return send(res, 200, { id: this.events.last, topic: h.topic, unit: h.unit, ts, vs: vs.map((v) => (v === null ? null : shown(v))) }, undefined, req);
        }
        default: return this.asset(req, res, url.pathname);
      }
    } catch (e) {
      this.refuse(res, 'request', 400, `bad request: ${(e as Error).message}`);
    }
  }

  /** True for an IP address, localhost or a name of web.hosts (with any port). */
  private hostAllowed(host: string | undefined): boolean {
    if (!host) return false;
    const name = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.replace(/:\d+$/, '');
    return /^\d{1,3}(\.\d{1,3}){3}$/.test(name) || /^\[[0-9a-fA-F:.]+\]$/.test(name) || name === 'localhost' || this.config.web.hosts.includes(name.toLowerCase());
  }

  /** The token the request carries, when it is the right one (compared in constant time). */
  private presentedToken(req: IncomingMessage, url: URL): boolean {
    const candidates = [
      url.searchParams.get('token'),
      req.headers['x-starling-token'],
      /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1],
      /(?:^|;\s*)starling_token=([^;]+)/.exec(req.headers.cookie ?? '')?.[1],
    ];
    return candidates.some((c) => typeof c === 'string' && this.isToken(c));
  }

  private isToken(c: string): boolean {
    const a = Buffer.from(c);
    const b = Buffer.from(this.token);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  private asset(req: IncomingMessage, res: ServerResponse, path: string): void {
    const a = webAssets().get(path === '/' ? '/index.html' : path);
    if (!a) return send(res, 404, { error: `${path}: not found` });
    if (a.type.startsWith('text/html')) {
      // The page carries the token for its POSTs: only a viewer allowed to see the page gets it.
      const html = a.body.toString('utf8').replace('__STARLING_TOKEN__', this.token);
      return send(res, 200, html, a.type, req, { 'cache-control': 'no-store', 'x-frame-options': 'DENY', 'content-security-policy': CSP });
    }
    if (req.headers['if-none-match'] === a.etag) {
      res.writeHead(304, { etag: a.etag });
      return void res.end();
    }
    const gz = /\bgzip\b/.test(req.headers['accept-encoding'] ?? '');
    res.writeHead(200, { 'content-type': a.type, etag: a.etag, 'cache-control': 'no-cache', ...(gz ? { 'content-encoding': 'gzip' } : {}), 'content-length': (gz ? a.gzip : a.body).length });
    res.end(req.method === 'HEAD' ? undefined : gz ? a.gzip : a.body);
  }

  private stream(req: IncomingMessage, res: ServerResponse, url: URL): void {
    if (this.events.stats().clients >= this.config.web.max_clients) return this.refuse(res, 'clients', 503, `${this.config.web.max_clients} live clients already (web.max_clients)`);
    const raw = req.headers['last-event-id'] ?? url.searchParams.get('after') ?? undefined;
    const after = raw === undefined || raw === '' ? undefined : Number(raw);
    if (after !== undefined && !Number.isSafeInteger(after)) return this.refuse(res, 'request', 400, 'Last-Event-ID must be a number');
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', 'x-accel-buffering': 'no', connection: 'keep-alive' });
    res.socket?.setNoDelay(true);
    const detach = this.events.attach(res, after);
    res.on('close', detach);
  }

  /** `/metrics`: each topic labelled with the name of the node whose publisher sent it (X-TELEMETRY-ID). */
  private metrics(): string {
    const node = this.device.node;
    const names = node ? publisherNames(node, this.device.publisher?.id) : new Map<string, string>();
    const topics = [...(this.histories?.values() ?? [])].map((h) => ({ topic: h.topic, unit: h.unit, value: h.value, status: h.status, updated: h.updated, node: names.get(h.publisher) ?? h.publisher }));
    const { services, stats } = this.servicesView();
    return exposition(topics, services, stats);
  }

  private stateView(): unknown {
    const topics = [...(this.histories?.values() ?? [])].map((h) => ({ topic: h.topic, unit: h.unit, value: h.value ?? null, status: h.status, ts: h.updated / 1000 }));
    return { id: this.events.last, ...this.peersView(), topics, ...this.servicesView(), logs: this.ring.tail(100) };
  }

  /** POST /api/gpio: the checks of the module comment, then the local line or the mesh command. */
  private async postGpio(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const header = req.headers['x-starling-token'];
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (!((typeof header === 'string' && this.isToken(header)) || (bearer && this.isToken(bearer)))) {
      return this.refuse(res, 'token', 403, 'switching needs the token in X-Starling-Token or Authorization: Bearer');
    }
    if (!/^application\/json\b/.test(req.headers['content-type'] ?? '')) return this.refuse(res, 'post', 415, 'Content-Type must be application/json');
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== `http://${req.headers.host}`) return this.refuse(res, 'origin', 403, `Origin ${origin.slice(0, 80)} is not this web view`);
    let body: { node?: unknown; gpio?: unknown; set?: unknown };
    try {
      body = JSON.parse(await readBody(req)) as typeof body;
    } catch (e) {
      return this.refuse(res, 'post', 400, `expected {"node": UUID, "gpio": NAME, "set": 0|1}: ${(e as Error).message}`);
    }
    const { node: target, gpio, set } = body ?? {};
    if (typeof target !== 'string' || typeof gpio !== 'string' || (set !== 0 && set !== 1)) {
      return this.refuse(res, 'post', 400, 'expected {"node": UUID, "gpio": NAME, "set": 0|1}');
    }
    const node = this.device.node;
    if (!node) return send(res, 503, { error: 'the device is not running' });
    this.counters.commands++;
    try {
      let value: number | undefined;
      if (target === node.uuid.toString('hex').toUpperCase()) {
        await this.device.setOutput(gpio, set);
        value = (await this.device.gpio.get(gpio)!.read()).values[0];
      } else {
        const peer = node.peerList().find((p) => p.peer === target);
        if (!peer) return this.refuse(res, 'command', 404, `no peer ${target.slice(0, 40)} on the mesh`);
        if (!this.peerView(node, peer).outputs.includes(gpio)) return this.refuse(res, 'command', 404, `${peer.name} has no output named ${gpio.slice(0, 64)}`);
        value = await sendCommand(node, peer.peer, { gpio, set }, COMMAND_TIMEOUT_MS);
      }
      send(res, 200, { ok: true, value });
    } catch (e) {
      this.counters.commandErrors++;
      const msg = (e as Error).message;
      if (e instanceof CommandError && /not authorised/.test(msg)) return this.refuse(res, 'command', 403, msg);
      this.problems.note('command', `web: switching ${gpio} refused: ${msg}`);
      send(res, e instanceof CommandError ? 502 : 500, { error: msg });
    }
  }
}

export interface PeerView {
  uuid: string;
  name: string;
  endpoint: string;
  groups: string[];
  presence: string;
  version?: string;
  fingerprint?: string;
  prefix: string;
  outputs: string[];
  inputs: string[];
}

const PEERS_QUERY = JSON.stringify({ peers: 1 });

/** The only sources the page may use: itself (no inline script, no frames, nothing from elsewhere). */
const CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'";

const LOGIN_PAGE = `<!doctype html><meta charset=utf-8><meta name=viewport content="width=device-width"><title>Starling</title>
<body style="font:16px system-ui;margin:2em"><h1>Starling</h1><p>This web view needs its token.</p>
<form method=get action="/"><input name=token size=40 autocomplete=off placeholder="token"> <button>Open</button></form>
<p>It is in <code>web.token</code> or <code>web.token_file</code> (default /var/lib/starling/web-token) on the board.</p></body>`;

/** A value as the page shows it: 7 significant digits (shorter events; a chart cannot show more). */
const shown = (v: number): number => (Number.isFinite(v) ? Number(v.toPrecision(7)) : v);

function splitListen(listen: string): [string, number] {
  const i = listen.lastIndexOf(':');
  return [listen.slice(0, i), Number(listen.slice(i + 1))];
}

/** Sends JSON (or text), gzipped when the client takes it and it is worth it. */
function send(res: ServerResponse, status: number, body: unknown, type = 'application/json', req?: IncomingMessage, headers: Record<string, string> = {}): void {
  if (res.headersSent) return void res.end();
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  let data = Buffer.from(text);
  const h: Record<string, string | number> = { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...headers };
  if (req && data.length > 1024 && /\bgzip\b/.test(req.headers['accept-encoding'] ?? '')) {
    data = zlib().gzipSync(data, { level: 6 });
    h['content-encoding'] = 'gzip';
  }
  h['content-length'] = data.length;
  res.writeHead(status, h);
  res.end(req?.method === 'HEAD' ? undefined : data);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new Error(`body over ${MAX_BODY} bytes`));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
