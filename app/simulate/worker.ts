/**
 * One process of `starling simulate` (app/cli/simulate.ts): started by the conductor inside a network
 * namespace of its own (`unshare --net`), it runs K simulated Starling nodes — each the whole composition of
 * `starling run` (app/compose.ts) with simulated sensors, on an address of its own on the namespace's one
 * interface — or the hub (a node bridging the mesh to an embedded MQTT broker, and a subscriber on that broker
 * counting what arrives).
 *
 * It speaks JSON lines: commands on stdin (`start`, `seqs`, `stats`, `count`), reports on stdout (`loaded`,
 * `started`, `failed`, `error`, `stats`, `seqs`, `counts`, and `batch`: `enter` and `exit` records gathered). When stdin ends — the conductor finished, or died
 * — it stops its nodes and exits, so nothing outlives the run and its namespace goes with it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { Dealer, Router } from 'zeromq';
import { DEFAULT_MAX_PEERS } from '../../runtime/zre/node.ts';
import { CONNECT_TIMEOUT_MS } from '../../runtime/zre/peer.ts';
import { parseConfig } from '../../runtime/config/load.ts';
import { LogRing } from '../../runtime/supervisor/log.ts';
import { Supervisor } from '../../runtime/supervisor/supervisor.ts';
import { MqttClient } from '../../services/mqtt-bridge/client.ts';
import { servicesFrom, zmqSocketsFor, type Composition } from '../compose.ts';
import { smallBufferPool, trimFreeMemory } from '../../runtime/memory.ts';

/** What the conductor asks of this process. */
export interface WorkerStart {
  cmd: 'start';
  /** The nodes to run: their index in the whole simulation, name and IPv4 address (already on eth0). */
  nodes: { index: number; name: string; address: string }[];
  /** Run the hub (one node) instead: embedded broker on `address`:1883, bridge of the whole mesh. */
  hub?: boolean;
  /** Total nodes in the simulation, hub included (for the sockets this process may need). */
  total: number;
  evasiveMs: number;
  expiredMs: number;
  /** Sample interval of each node's one simulated sensor. */
  sampleMs: number;
  /** fleet.status_interval of each node. */
  statusMs: number;
  /** fleet.follow of each node. */
  followFleet: boolean;
  /**
   * Instead of Starling nodes, the floor: bare ZeroMQ sockets making the links a ZRE mesh makes (see
   * {@link startFloor}), with `all` the address of every node in the simulation, by index.
   */
  floor?: { all: string[] };
}

/** Samples of one topic at the broker: the first and last sequence, the missing ranges between, repeats. */
export interface Arrivals {
  first: number;
  last: number;
  /** [from, to] inclusive, in order; at most MAX_GAPS, the oldest folded into `foldedMissing`. */
  gaps: [number, number][];
  /** Samples missing in gaps folded out of `gaps` (all below any later mark). */
  foldedMissing: number;
  dups: number;
}

/** Gap ranges kept per topic (a flapping link makes one each time it drops). */
const MAX_GAPS = 1024;

/** Counts sequence `seq` of a topic: past the last it extends (a jump is a gap); inside a gap it fills it; else a repeat. */
export function noteArrival(a: Arrivals, seq: number): void {
  if (seq > a.last) {
    if (seq > a.last + 1) {
      a.gaps.push([a.last + 1, seq - 1]);
      if (a.gaps.length > MAX_GAPS) {
        const [from, to] = a.gaps.shift()!;
        a.foldedMissing += to - from + 1;
      }
    }
    a.last = seq;
    return;
  }
  const i = a.gaps.findIndex(([from, to]) => seq >= from && seq <= to);
  if (i < 0) {
    a.dups++;
    return;
  }
  const [from, to] = a.gaps[i]!;
  const parts: [number, number][] = [];
  if (from < seq) parts.push([from, seq - 1]);
  if (seq < to) parts.push([seq + 1, to]);
  a.gaps.splice(i, 1, ...parts);
}

/** How many of sequences first … below-1 arrived. */
export function arrivedBelow(a: Arrivals, below: number): number {
  const top = Math.min(a.last, below - 1);
  if (top < a.first) return 0;
  let missing = a.foldedMissing;
  for (const [from, to] of a.gaps) if (from <= top) missing += Math.min(to, top) - from + 1;
  return top - a.first + 1 - missing;
}

/** The floor's fixed port: each node has an address of its own. */
const FLOOR_PORT = 5670;
/** A HELLO's size here (a node's name, endpoint, groups and the X-headers telemetry and logs add). */
const FLOOR_HELLO_BYTES = 300;

/**
 * The floor of a mesh forming: what libzmq and the network alone cost to make the links a ZRE mesh of these
 * nodes makes, with no discovery and no protocol. Each node binds a ROUTER (the inbox, with the same listen
 * backlog) and at once opens a DEALER to every other node's (as ZRE does on a beacon: linger 0, the same
 * connect timeout) and sends one HELLO-sized message on it; a node has "entered" at another when its message
 * reaches that ROUTER. Returns the sockets, to close at the end.
 */
async function startFloor(s: WorkerStart): Promise<(Router | Dealer)[]> {
  const all = s.floor!.all;
  const sockets: (Router | Dealer)[] = [];
  await Promise.all(s.nodes.map(async (n) => {
    const inbox = new Router({ linger: 0, backlog: DEFAULT_MAX_PEERS });
    sockets.push(inbox);
    await inbox.bind(`tcp://${n.address}:${FLOOR_PORT}`);
    // Closing the sockets at the end ends this; anything else is a problem of the run, reported as one.
    const problem = (what: string, sock: Router | Dealer) => (e: Error) => {
      if (!sock.closed) emit({ ev: 'error', index: n.index, why: `floor ${what}: ${e.message}` });
    };
    void (async () => {
      const seen = new Set<string>();
      for await (const [, body] of inbox) {
        const from = body!.subarray(0, body!.indexOf(0)).toString();
        if (seen.has(from)) continue;
        seen.add(from);
        emit({ ev: 'enter', index: n.index, peer: from, t: Date.now() });
      }
    })().catch(problem('inbox', inbox));
    const hello = Buffer.alloc(FLOOR_HELLO_BYTES, 0x2a);
    hello.write(n.name + '\0');
    for (const [j, address] of all.entries()) {
      if (j === n.index) continue;
      const out = new Dealer({ linger: 0, connectTimeout: CONNECT_TIMEOUT_MS });
      sockets.push(out);
      out.connect(`tcp://${address}:${FLOOR_PORT}`);
      out.send(hello).catch(problem(`message to ${address}`, out));
    }
    emit({ ev: 'started', index: n.index, t: Date.now() });
  }));
  return sockets;
}

type Board = Composition & { supervisor: Supervisor; index: number; name: string };

/** The event-loop monitor's timer: what is reported is how much later than this it ran. */
const LOOP_RESOLUTION_MS = 10;
const late = (ns: number): number => Math.max(0, ns / 1e6 - LOOP_RESOLUTION_MS);

/** ENTERs and EXITs not written yet: a mesh forming makes tens of thousands, so they go out together. */
let peerEvents: Record<string, unknown>[] = [];
let flushTimer: NodeJS.Timeout | undefined;
/** How long an ENTER or EXIT may wait to be written (each carries its own time, `t`), and how many may wait. */
const PEER_EVENTS_MS = 100;
const PEER_EVENTS_MAX = 1000;

function flushPeerEvents(): void {
  clearTimeout(flushTimer);
  flushTimer = undefined;
  if (peerEvents.length === 0) return;
  process.stdout.write(JSON.stringify({ ev: 'batch', recs: peerEvents }) + '\n');
  peerEvents = [];
}

/**
 * One record to the conductor, as a JSON line. ENTER and EXIT records are gathered for up to
 * {@link PEER_EVENTS_MS} (at most {@link PEER_EVENTS_MAX}) into one `batch` line (one write and one parse instead of one per link: a 200-node
 * mesh makes 40,200 ENTERs in its first seconds); any other record writes them first, so the order holds.
 */
function emit(rec: Record<string, unknown>): void {
  if (rec.ev === 'enter' || rec.ev === 'exit') {
    peerEvents.push(rec);
    if (peerEvents.length >= PEER_EVENTS_MAX) flushPeerEvents();
    else flushTimer ??= setTimeout(flushPeerEvents, PEER_EVENTS_MS);
    return;
  }
  flushPeerEvents();
  process.stdout.write(JSON.stringify(rec) + '\n');
}

function nodeConfig(n: WorkerStart['nodes'][number], s: WorkerStart, spool: string): string {
  const common = `node: { name: ${n.name}, iface: "${n.address}", evasive: ${s.evasiveMs}ms, expired: ${s.expiredMs}ms }
telemetry: { prefix: ${n.name}/ }
security: { mode: none }
files: { inbox: "${join(spool, `inbox-${n.name}`)}" }
web: { listen: "off" }
fleet: { status_interval: ${s.statusMs}ms, follow: ${s.followFleet} }
logs: { ring: 200 }
`;
  if (s.hub) return `${common}mqtt: { embedded: true, embedded_listen: "${n.address}:1883", mesh: true, spool: "${join(spool, 'spool')}", spool_fsync: never }\n`;
  return `simulate: true
${common}sensors:
  - { platform: sim, name: temp, waveform: sine, min: 15, max: 25, period: 60s, noise: 0.1, unit: "°C", interval: ${s.sampleMs}ms, seed: ${n.index + 1} }
`;
}

/** Runs the worker until stdin ends; then exits the process. */
export async function runWorker(): Promise<never> {
  smallBufferPool(); // as `starling run` does
  const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  loop.enable();
  const boards: Board[] = [];
  const spool = mkdtempSync(join(tmpdir(), 'starling-sim-'));
  let watcher: MqttClient | undefined;
  /** At the broker (hub only): per topic, what arrived (runtime order is kept per topic, so gaps stay few). */
  const arrived = new Map<string, Arrivals>();
  let malformed = 0;
  let cpu = process.cpuUsage();
  let at = performance.now();
  const base = process.memoryUsage().rss;
  // As `starling run` does: glibc's free pages back to the kernel every 10 s.
  const stopTrimming = trimFreeMemory();
  let statsTimer: NodeJS.Timeout | undefined;

  let startedAt = Date.now();
  let floorSockets: (Router | Dealer)[] = [];
  const start = async (s: WorkerStart) => {
    startedAt = Date.now();
    // Every node meets every other: DEALERs, telemetry and log subscribers per peer, beyond libzmq's 1,023.
    zmqSocketsFor(s.nodes.length, s.total);
    if (s.floor) {
      floorSockets = await startFloor(s);
      statsTimer = setInterval(report, 5000);
      return;
    }
    // Every node at once, as boards powered on together would.
    await Promise.all(s.nodes.map(async (n) => {
      const config = parseConfig(nodeConfig(n, s, spool), `<simulated ${n.name}>`);
      const log = new LogRing(config.logs.ring, null);
      const composed = servicesFrom(config, log);
      const supervisor = new Supervisor(composed.services, log);
      composed.fleet.supervisor = supervisor;
      const board: Board = { ...composed, supervisor, index: n.index, name: n.name };
      boards.push(board);
      await supervisor.start();
      const node = composed.device.node;
      if (!node) {
        emit({ ev: 'failed', index: n.index, why: log.tail(20).reverse().find((e) => e.level === 'error')?.msg ?? 'the device did not start' });
        return;
      }
      node.on('enter', (p) => emit({ ev: 'enter', index: n.index, peer: p.name, t: Date.now() }));
      node.on('exit', (p) => emit({ ev: 'exit', index: n.index, peer: p.name, t: Date.now(), reason: p.reason }));
      for (const p of node.peerList()) emit({ ev: 'enter', index: n.index, peer: p.name, t: Date.now() });
      emit({ ev: 'started', index: n.index, t: Date.now() });
    }));
    if (s.hub) {
      watcher = new MqttClient({ url: `mqtt://${s.nodes[0]!.address}:1883`, clientId: 'starling-simulate-counter', clean: true, reconnect: { min: 200, max: 1000 }, maxInflight: 256 });
      watcher.on('message', (topic, payload) => {
        if (!topic.startsWith('starling/') || topic.endsWith('/set') || topic.endsWith('/availability')) return;
        let state: { seq?: unknown };
        try {
          state = JSON.parse(payload.toString()) as { seq?: unknown };
        } catch {
          malformed++;
          return;
        }
        if (typeof state.seq !== 'number') return;
        const key = topic.slice('starling/'.length);
        const a = arrived.get(key);
        if (!a) arrived.set(key, { first: state.seq, last: state.seq, gaps: [], foldedMissing: 0, dups: 0 });
        else noteArrival(a, state.seq);
      });
      await watcher.start();
      await watcher.subscribe('starling/#', 1);
    }
    statsTimer = setInterval(report, 5000);
  };

  const report = () => {
    const t = performance.now();
    const used = process.cpuUsage(cpu);
    const mesh = { beaconsSent: 0, beaconsReceived: 0, messagesReceived: 0, knownPeers: 0, samplesPublished: 0, handshakeTimeouts: 0, rehellos: 0, rehellosQuiet: 0, peersRefused: 0, sendsDropped: 0 };
    for (const b of boards) {
      const st = b.device.node?.stats();
      if (st) {
        mesh.beaconsSent += st.beaconsSent;
        mesh.beaconsReceived += st.beaconsReceived;
        mesh.messagesReceived += st.messagesReceived;
        mesh.knownPeers += st.knownPeers;
        mesh.handshakeTimeouts += st.handshakeTimeouts;
        mesh.rehellos += st.rehellos;
        mesh.rehellosQuiet += st.rehellosQuiet;
        mesh.peersRefused += st.peersRefused;
        mesh.sendsDropped += st.sendsDropped;
      }
      mesh.samplesPublished += b.device.publisher?.stats().samplesPublished ?? 0;
    }
    emit({
      ev: 'stats', t: Date.now(), since: startedAt, rss: process.memoryUsage().rss, base, cpuMs: (used.user + used.system) / 1000, ms: t - at,
      loop: { p50: late(loop.percentile(50)), p99: late(loop.percentile(99)), max: late(loop.max) }, ...mesh,
    });
    loop.reset();
    cpu = process.cpuUsage();
    at = t;
  };

  /** Every topic's next sequence now: samples below it are published (the nodes go on publishing). */
  const sequences = () => {
    const seqs: Record<string, number> = {};
    for (const b of boards) {
      for (const [topic, next] of b.device.publisher?.sequences() ?? []) seqs[topic] = next;
    }
    emit({ ev: 'seqs', seqs });
  };

  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    let msg: { cmd?: string };
    try {
      msg = JSON.parse(line) as { cmd?: string };
    } catch {
      return;
    }
    const done = (p: Promise<void>) => p.catch((e: Error) => emit({ ev: 'error', why: e.message }));
    if (msg.cmd === 'start') done(start(msg as WorkerStart));
    else if (msg.cmd === 'seqs') sequences();
    else if (msg.cmd === 'stats') report();
    else if (msg.cmd === 'count') {
      // What the hub itself counted as lost on the way: its subscriber's sequence gaps, the bridge's drops.
      const counted = Object.entries(boards[0]?.bridge?.stats() ?? {}).filter(([k, v]) => typeof v === 'number' && v > 0 && /(samplesLost|dropped|Dropped)$/.test(k));
      emit({ ev: 'counts', arrived: Object.fromEntries(arrived), malformed, lostCounted: Object.fromEntries(counted) });
    }
  });
  emit({ ev: 'loaded', pid: process.pid, rss: base });
  await new Promise<void>((resolve) => lines.once('close', resolve));
  clearInterval(statsTimer);
  stopTrimming();
  // The conductor is done (or gone): leave quietly and quickly.
  for (const z of floorSockets) z.close();
  const stopping = Promise.all([watcher?.stop(), ...boards.map((b) => b.supervisor.stop())]);
  await Promise.race([stopping, new Promise((r) => setTimeout(r, 3000))]);
  rmSync(spool, { recursive: true, force: true });
  flushPeerEvents();
  process.exit(0);
}
