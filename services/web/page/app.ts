/**
 * The web view's page: plain DOM and uPlot, no framework (the whole page is about 30 KB gzipped).
 *
 * It loads /api/state once, then follows /events (Server-Sent Events) from that state's id; the browser
 * resumes with Last-Event-ID after a drop, and a `reset` (the server no longer holds the missed events) loads
 * the state again. Every update is applied to the DOM once per animation frame, only for what changed, and a
 * chart is drawn only while it is on screen (its history is fetched the first time it is). So 200 topics and 50
 * peers cost what the visible part costs.
 *
 * Switches show the device's confirmed state: the value it read back after acting (the POST's answer), and
 * then its telemetry; while a request is out the switch is marked pending, never shown as already switched.
 *
 * For tests and for the curious, `window.starling` holds render timings: `renders`, and `renderMs` (the time
 * from an event's arrival to the end of the frame that showed it, last 500), and `lagMs` (each point's age when it
 * arrived: the sample's own timestamp to this page, last 5,000).
 */
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './style.css';

interface PeerView {
  uuid: string; name: string; endpoint: string; groups: string[]; presence: string;
  version?: string; fingerprint?: string; prefix: string; outputs: string[]; inputs: string[];
}
interface ServiceRow { name: string; state: string; healthy: boolean; restarts: number; detail?: string }
interface LogEntry { ts: number; level: string; service: string; msg: string }
interface State {
  id: number; self?: PeerView; peers: PeerView[]; links: Record<string, string[]>;
  topics: { topic: string; unit: string; value: number | null; status: number; ts: number }[];
  services: ServiceRow[]; stats: Record<string, Record<string, number>>; logs: LogEntry[];
}

/** Points a chart keeps at most (history and live together). */
const MAX_POINTS = 3000;
const token = document.querySelector<HTMLMetaElement>('meta[name="starling-token"]')?.content ?? '';
const $ = <T extends HTMLElement = HTMLElement>(sel: string): T => document.querySelector<T>(sel)!;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

const fmt = (v: number | null | undefined): string => (v === null || v === undefined ? '–' : Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2));

/** One telemetry topic on the page: its card, and its chart once it has been on screen. */
class Topic {
  readonly card: HTMLElement;
  private readonly valueEl: HTMLElement;
  private readonly chartEl: HTMLElement;
  ts: number[] = [];
  vs: (number | null)[] = [];
  value: number | null = null;
  status = 0;
  chart: uPlot | undefined;
  visible = false;
  private historyAsked = false;
  dirty = true;

  constructor(readonly topic: string, public unit: string) {
    this.valueEl = el('span', { class: 'value' });
    this.chartEl = el('div', { class: 'chart', 'data-points': '0' });
    this.card = el('div', { class: 'topic', 'data-topic': topic }, el('div', { class: 'head' }, el('span', { class: 'name', title: topic }, topic), this.valueEl), this.chartEl);
    charts.observe(this.chartEl);
    byChart.set(this.chartEl, this);
  }

  add(t: number, v: number | null): void {
    this.value = v;
    this.status = v === null ? 1 : 0;
    if (this.ts.length && t < this.ts[this.ts.length - 1]!) return; // an old point (a replay): already shown
    this.ts.push(t);
    this.vs.push(v);
    if (this.ts.length > MAX_POINTS) {
      this.ts.splice(0, this.ts.length - MAX_POINTS);
      this.vs.splice(0, this.vs.length - MAX_POINTS);
    }
    this.dirty = true;
  }

  render(): void {
    this.dirty = false;
    this.valueEl.textContent = this.status === 0 ? `${fmt(this.value)} ${this.unit}` : 'no reading';
    this.valueEl.classList.toggle('bad', this.status !== 0);
    if (!this.visible) return;
    if (!this.chart) {
      const width = Math.max(200, this.chartEl.clientWidth);
      this.chart = new uPlot({
        width, height: 120, legend: { show: false }, cursor: { show: false },
        scales: { x: { time: true } },
        axes: [{ size: 24, font: '10px system-ui', stroke: '#8d98a6' }, { size: 40, font: '10px system-ui', stroke: '#8d98a6' }],
        series: [{}, { stroke: '#2b6cb0', width: 1.5, spanGaps: false, points: { show: false } }],
      }, [this.ts, this.vs], this.chartEl);
      if (!this.historyAsked) void this.loadHistory();
    } else this.chart.setData([this.ts, this.vs]);
    this.chartEl.dataset.points = String(this.ts.length);
  }

  /** The server's kept history, joined in front of the points that came live. */
  private async loadHistory(): Promise<void> {
    this.historyAsked = true;
    const r = await fetch(`api/history?topic=${encodeURIComponent(this.topic)}`);
    if (!r.ok) return;
    const h = (await r.json()) as { ts: number[]; vs: (number | null)[] };
    const last = h.ts[h.ts.length - 1] ?? 0;
    const keep = this.ts.findIndex((t) => t > last);
    const liveTs = keep < 0 ? [] : this.ts.slice(keep);
    const liveVs = keep < 0 ? [] : this.vs.slice(keep);
    this.ts = [...h.ts, ...liveTs].slice(-MAX_POINTS);
    this.vs = [...h.vs, ...liveVs].slice(-MAX_POINTS);
    this.dirty = true;
    schedule();
  }

  resize(): void {
    if (this.chart) this.chart.setSize({ width: Math.max(200, this.chartEl.clientWidth), height: 120 });
  }
}

/** A GPIO line of a device: a switch (output) or a state (input). */
class Line {
  readonly elem: HTMLElement;
  private readonly button: HTMLButtonElement | undefined;
  private readonly stateEl: HTMLElement;
  private readonly errorEl = el('span', { class: 'error' });
  value: number | null = null;
  pending = false;

  constructor(readonly device: PeerView, readonly name: string, readonly output: boolean) {
    this.stateEl = el('span', { class: 'state' }, '–');
    if (output) {
      this.button = el('button', { class: 'switch', role: 'switch', 'aria-checked': 'false', 'data-gpio': name, 'data-node': device.name });
      this.button.textContent = '–';
      this.button.addEventListener('click', () => void this.toggle());
      this.elem = el('div', { class: 'line' }, el('span', {}, name), this.button, this.errorEl);
    } else this.elem = el('div', { class: 'line' }, el('span', {}, name), this.stateEl);
  }

  /** The device's confirmed value (telemetry or the command's read-back). */
  confirm(v: number | null): void {
    this.value = v;
    this.render();
  }

  render(): void {
    const text = this.value === null ? '–' : this.value ? 'on' : 'off';
    if (this.button) {
      this.button.textContent = this.pending ? '…' : text;
      this.button.setAttribute('aria-checked', String(this.value === 1));
      this.button.classList.toggle('pending', this.pending);
      this.button.dataset.state = this.value === null ? '' : String(this.value);
    } else this.stateEl.textContent = text;
  }

  private async toggle(): Promise<void> {
    if (this.pending) return;
    const want = this.value === 1 ? 0 : 1;
    this.pending = true;
    this.errorEl.textContent = '';
    this.render();
    try {
      const r = await fetch('api/gpio', {
        method: 'POST', headers: { 'content-type': 'application/json', 'x-starling-token': token },
        body: JSON.stringify({ node: this.device.uuid, gpio: this.name, set: want }),
      });
      const body = (await r.json()) as { ok?: boolean; value?: number; error?: string };
      if (!r.ok || !body.ok) this.errorEl.textContent = body.error ?? `HTTP ${r.status}`;
      else if (typeof body.value === 'number') this.value = body.value;
    } catch (e) {
      this.errorEl.textContent = (e as Error).message;
    } finally {
      this.pending = false;
      this.render();
    }
  }
}

/** One device's card: its sensors' topics and its lines. */
interface DeviceCard { view: PeerView; card: HTMLElement; grid: HTMLElement; status: HTMLElement; lines: Map<string, Line>; title: HTMLElement }

const topics = new Map<string, Topic>();
const devices = new Map<string, DeviceCard>();
const other: DeviceCard = makeCard({ uuid: '', name: 'other topics', endpoint: '', groups: [], presence: '', prefix: '', outputs: [], inputs: [] });
let selfView: PeerView | undefined;
let peerViews: PeerView[] = [];
/** Whom each peer says it sees (its answer to the peers query), by UUID. */
let links: Record<string, string[]> = {};
const byChart = new WeakMap<Element, Topic>();
const charts = new IntersectionObserver((entries) => {
  for (const e of entries) {
    const t = byChart.get(e.target);
    if (!t) continue;
    t.visible = e.isIntersecting;
    if (t.visible) t.dirty = true;
  }
  schedule();
}, { rootMargin: '200px' });

function makeCard(view: PeerView): DeviceCard {
  const title = el('h3');
  const grid = el('div', { class: 'grid' });
  const lineBox = el('div', { class: 'lines' });
  // The node's own status topics (<prefix>@node/…: RSS, uptime, load …), folded away: charts in a closed
  // <details> are not on screen, so they cost nothing until opened.
  const status = el('div', { class: 'grid' });
  const statusBox = el('details', { class: 'node-status' }, el('summary', {}, 'node status'), status);
  statusBox.hidden = true;
  const card = el('div', { class: 'device', 'data-node': view.name }, title, grid, lineBox, statusBox);
  const d: DeviceCard = { view, card, grid, status, lines: new Map(), title };
  updateCard(d, view);
  return d;
}

function updateCard(d: DeviceCard, view: PeerView): void {
  d.view = view;
  d.card.dataset.node = view.name;
  d.title.replaceChildren(el('span', { class: `dot ${view.presence}`, title: view.presence }), view.name, el('small', {}, [view.presence === 'self' ? 'this node' : view.presence, view.version ? `v${view.version}` : ''].filter(Boolean).join(' · ')));
  const box = d.card.querySelector('.lines')!;
  const want = [...view.outputs.map((n) => [n, true] as const), ...view.inputs.map((n) => [n, false] as const)];
  for (const [name, output] of want) {
    if (d.lines.has(name)) continue;
    const line = new Line(view, name, output);
    d.lines.set(name, line);
    box.append(line.elem);
    const t = topics.get(view.prefix + name);
    if (t) line.confirm(t.value);
  }
}

/** The device a topic belongs to: the one with the longest prefix of it. */
function owner(topic: string): DeviceCard {
  let best: DeviceCard | undefined;
  for (const d of devices.values()) {
    if (d.view.prefix && topic.startsWith(d.view.prefix) && (!best || d.view.prefix.length > best.view.prefix.length)) best = d;
  }
  return best ?? other;
}

/** Puts a topic in its device's card: a line's topic updates the line, any other gets a chart. */
function place(t: Topic): void {
  const d = owner(t.topic);
  const line = d.lines.get(t.topic.slice(d.view.prefix.length));
  if (line) {
    t.card.remove();
    line.confirm(t.value);
    return;
  }
  if (t.topic.startsWith(`${d.view.prefix}@node/`)) {
    if (t.card.parentElement !== d.status) {
      d.status.append(t.card);
      d.status.parentElement!.hidden = false;
    }
    return;
  }
  if (t.card.parentElement !== d.grid) {
    d.grid.append(t.card);
    if (d === other) other.card.hidden = false;
  }
}

function topic(name: string, unit: string): Topic {
  let t = topics.get(name);
  if (!t) {
    t = new Topic(name, unit);
    topics.set(name, t);
    place(t);
  } else if (unit) t.unit = unit;
  return t;
}

function renderPeers(self: PeerView | undefined, peers: PeerView[], seen: Record<string, string[]> = {}): void {
  links = seen;
  selfView = self;
  peerViews = peers;
  if (self) $('#self').textContent = self.name;
  const all = [...(self ? [self] : []), ...peers];
  const box = $('#devices');
  const present = new Set<string>();
  for (const v of all) {
    present.add(v.uuid);
    let d = devices.get(v.uuid);
    if (!d) {
      d = makeCard(v);
      devices.set(v.uuid, d);
    } else updateCard(d, v);
  }
  for (const [uuid, d] of devices) {
    if (present.has(uuid)) continue;
    // A peer that left: its card stays, marked gone, until it comes back under a new UUID or the page reloads.
    if (d.view.presence !== 'gone') updateCard(d, { ...d.view, presence: 'gone' });
  }
  const order = [...devices.values()].sort((a, b) => (a.view.presence === 'self' ? -1 : b.view.presence === 'self' ? 1 : a.view.name.localeCompare(b.view.name)));
  for (const d of order) if (d.card.parentElement !== box || box.lastElementChild !== d.card) box.append(d.card);
  box.append(other.card);
  for (const t of topics.values()) place(t);
  other.card.hidden = other.grid.childElementCount === 0;
  renderMesh();
}

function renderMesh(): void {
  const rows = peerViews.map((p) => el('tr', { 'data-node': p.name },
    el('td', {}, el('span', { class: `dot ${p.presence}` }), ' ', p.name), el('td', {}, p.presence), el('td', {}, p.endpoint.replace('tcp://', '')),
    el('td', {}, p.groups.join(', ')), el('td', {}, p.version ?? ''), el('td', {}, el('code', {}, p.fingerprint ?? '–'))));
  $('#peers tbody').replaceChildren(...rows);
  // Who sees whom, from this node: itself in the middle, each peer on a circle, a line per link (its colour the
  // peer's presence).
  const svg = $('#graph');
  const ns = 'http://www.w3.org/2000/svg';
  const parts: Element[] = [];
  const n = peerViews.length;
  const colour = (p: string) => (p === 'alive' ? '#1f9d55' : p === 'evasive' ? '#d9822b' : '#d64545');
  const at = peerViews.map((_, i) => [Math.round(85 * Math.sin((2 * Math.PI * i) / Math.max(n, 1))), Math.round(-85 * Math.cos((2 * Math.PI * i) / Math.max(n, 1)))] as const);
  // Links between peers, as they report them: a grey line for each pair where one says it sees the other.
  const index = new Map(peerViews.map((p, i) => [p.uuid, i]));
  const drawn = new Set<string>();
  let peerLinks = 0;
  peerViews.forEach((p, i) => {
    for (const other of links[p.uuid] ?? []) {
      const j = index.get(other);
      if (j === undefined || drawn.has(`${Math.min(i, j)}-${Math.max(i, j)}`)) continue;
      drawn.add(`${Math.min(i, j)}-${Math.max(i, j)}`);
      const l = document.createElementNS(ns, 'line');
      l.setAttribute('x1', String(at[i]![0])); l.setAttribute('y1', String(at[i]![1])); l.setAttribute('x2', String(at[j]![0])); l.setAttribute('y2', String(at[j]![1]));
      l.setAttribute('stroke', '#8d98a6');
      l.setAttribute('class', 'peer-link');
      parts.push(l);
      peerLinks++;
    }
  });
  svg.dataset.peerLinks = String(peerLinks);
  peerViews.forEach((p, i) => {
    const l = document.createElementNS(ns, 'line');
    l.setAttribute('x1', '0'); l.setAttribute('y1', '0'); l.setAttribute('x2', String(at[i]![0])); l.setAttribute('y2', String(at[i]![1]));
    l.setAttribute('stroke', colour(p.presence));
    parts.push(l);
  });
  const node = (x: number, y: number, label: string, fill: string) => {
    const c = document.createElementNS(ns, 'circle');
    c.setAttribute('cx', String(x)); c.setAttribute('cy', String(y)); c.setAttribute('r', n > 20 ? '3' : '5'); c.setAttribute('fill', fill);
    parts.push(c);
    if (n <= 24) {
      const t = document.createElementNS(ns, 'text');
      t.setAttribute('x', String(x)); t.setAttribute('y', String(y + (y < 0 ? -7 : 12)));
      t.textContent = label;
      parts.push(t);
    }
  };
  peerViews.forEach((p, i) => node(at[i]![0], at[i]![1], p.name, colour(p.presence)));
  node(0, 0, selfView?.name ?? '', '#2b6cb0');
  svg.replaceChildren(...parts);
}

function renderServices(services: ServiceRow[], stats: Record<string, Record<string, number>>): void {
  const rows = services.map((s) => {
    const nonzero = Object.entries(stats[s.name] ?? {}).filter(([, v]) => v !== 0);
    const counters = nonzero.length ? el('details', {}, el('summary', {}, `${nonzero.length} counters`), nonzero.map(([k, v]) => `${k} ${v}`).join(' · ')) : '';
    return el('tr', { 'data-service': s.name }, el('td', {}, s.name), el('td', {}, s.state), el('td', {}, el('span', { class: `dot ${s.healthy ? 'alive' : 'silent'}` }), s.healthy ? ' healthy' : ' unhealthy'),
      el('td', {}, String(s.restarts)), el('td', { class: 'detail' }, s.detail ?? '', counters));
  });
  $('#svc tbody').replaceChildren(...rows);
  const m = stats.mqtt;
  $('#bridge').textContent = m ? `MQTT bridge: ${m.connected ? 'connected' : 'not connected (spooling)'} · spool ${m['spool.queued'] ?? 0} messages, ${Math.round((m['spool.bytes'] ?? 0) / 1024)} KiB · ${m['bridge.forwarded'] ?? 0} forwarded${m['spool.dropped'] ? ` · ${m['spool.dropped']} dropped` : ''}` : 'No MQTT bridge on this node.';
}

function addLog(entries: LogEntry[]): void {
  const box = $('#lines');
  for (const e of entries) {
    box.prepend(el('li', { class: e.level }, `${new Date(e.ts).toLocaleTimeString()} ${e.level.padEnd(5)} ${e.service}: ${e.msg}`));
  }
  while (box.childElementCount > 200) box.lastElementChild!.remove();
}

// Rendering: everything that changed, once per frame; the timing of each frame goes to window.starling.
const timing = { renders: 0, renderMs: [] as number[], lagMs: [] as number[], events: 0 };
(window as unknown as { starling: typeof timing }).starling = timing;
let queued = false;
let firstArrival: number | undefined;
function schedule(arrival?: number): void {
  if (arrival !== undefined && firstArrival === undefined) firstArrival = arrival;
  if (queued) return;
  queued = true;
  requestAnimationFrame(() => {
    queued = false;
    for (const t of topics.values()) if (t.dirty) t.render();
    if (firstArrival !== undefined) {
      timing.renderMs.push(performance.now() - firstArrival);
      if (timing.renderMs.length > 500) timing.renderMs.shift();
      firstArrival = undefined;
    }
    timing.renders++;
  });
}

let source: EventSource | undefined;
const conn = $('#conn');
function connected(live: boolean, text: string): void {
  conn.textContent = text;
  conn.className = `badge ${live ? 'live' : 'down'}`;
}

async function load(): Promise<void> {
  source?.close();
  let s: State;
  try {
    const r = await fetch('api/state');
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    s = (await r.json()) as State;
  } catch (e) {
    connected(false, `cannot load: ${(e as Error).message}; retrying`);
    setTimeout(() => void load(), 2000);
    return;
  }
  renderPeers(s.self, s.peers, s.links);
  for (const t of s.topics) {
    const tp = topic(t.topic, t.unit);
    tp.value = t.status === 0 ? t.value : null;
    tp.status = t.status;
    tp.dirty = true;
    place(tp); // again, now with its value: a line's switch shows it
  }
  other.card.hidden = other.grid.childElementCount === 0;
  renderServices(s.services, s.stats);
  $('#lines').replaceChildren();
  addLog(s.logs);
  schedule();
  source = new EventSource(`events?after=${s.id}`);
  source.onopen = () => connected(true, 'live');
  source.onerror = () => connected(false, 'reconnecting…');
  source.addEventListener('reset', () => void load());
  source.addEventListener('samples', (ev) => {
    const arrival = performance.now();
    timing.events++;
    const { p, u } = JSON.parse((ev as MessageEvent<string>).data) as { p: [string, number, number | null][]; u?: Record<string, string> };
    const now = Date.now();
    for (const [name, t, v] of p) {
      timing.lagMs.push(now - t * 1000);
      const tp = topic(name, u?.[name] ?? '');
      tp.add(t, v);
      const d = owner(name);
      d.lines.get(name.slice(d.view.prefix.length))?.confirm(v);
    }
    if (timing.lagMs.length > 5000) timing.lagMs.splice(0, timing.lagMs.length - 5000);
    schedule(arrival);
  });
  source.addEventListener('peers', (ev) => {
    const v = JSON.parse((ev as MessageEvent<string>).data) as { self?: PeerView; peers: PeerView[]; links: Record<string, string[]> };
    renderPeers(v.self, v.peers, v.links);
  });
  source.addEventListener('services', (ev) => {
    const v = JSON.parse((ev as MessageEvent<string>).data) as { services: ServiceRow[]; stats: Record<string, Record<string, number>> };
    renderServices(v.services, v.stats);
  });
  source.addEventListener('log', (ev) => addLog(JSON.parse((ev as MessageEvent<string>).data) as LogEntry[]));
}

let resizeTimer: number | undefined;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = window.setTimeout(() => {
    for (const t of topics.values()) t.resize();
  }, 150);
});
void load();
