// `starling simulate`: a mesh of N simulated Starling nodes in network namespaces on one bridge, many nodes per
// process, with a hub bridging it all to an embedded MQTT broker, measured as it runs (README "Simulating a
// fleet"). The network is in app/simulate/lab.ts, each process's nodes in app/simulate/worker.ts.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { CliError, intOption, out, parse, sleep, type Command } from './common.ts';
import { Lab, LabError, simAddress } from '../simulate/lab.ts';
import { arrivedBelow, runWorker, type Arrivals, type WorkerStart } from '../simulate/worker.ts';

/** Sockets (and so file descriptors) one node needs per peer, about: its DEALER, the peer's on its ROUTER, telemetry and log subscribers both ways. */
const FDS_PER_PEER = 8;
/** How long --floor runs on after its mesh is whole: one trim period (runtime/memory.ts) and a little. */
const FLOOR_SETTLE_MS = 12_000;

interface Worker {
  id: number;
  proc: ChildProcess;
  pid: number;
  nodes: number[];
  hub: boolean;
  killed: boolean;
  /** Link-down windows [from, to) in ms since the epoch (to undefined while down). */
  down: { from: number; to: number | undefined }[];
  stats: Record<string, unknown> | undefined;
  cpuMs: number;
  statMs: number;
  waiters: Map<string, (rec: Record<string, unknown>) => void>;
}

type Rec = Record<string, unknown> & { ev: string };

/** CPU and RSS per node of node processes that have reported stats: RSS beyond each process's base, over its live ones. */
function perNode(nodeWorkers: Worker[]): { cpuPerNodePct: number; rssBaseMB: number; rssPerNodeMB: { mean: number; max: number } } {
  const nodes = nodeWorkers.reduce((s, w) => s + w.nodes.length, 0);
  const rss = nodeWorkers.filter((w) => !w.killed).map((w) => ((w.stats!.rss as number) - (w.stats!.base as number)) / w.nodes.length / 1e6);
  return {
    cpuPerNodePct: nodeWorkers.reduce((s, w) => s + (w.statMs ? (w.cpuMs / w.statMs) * 100 : 0), 0) / nodes,
    rssBaseMB: Math.max(0, ...nodeWorkers.map((w) => (w.stats!.base as number) / 1e6)),
    rssPerNodeMB: { mean: rss.reduce((s, v) => s + v, 0) / Math.max(1, rss.length), max: Math.max(0, ...rss) },
  };
}

const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : '-');

function lossOption(value: string | undefined): number {
  if (value === undefined) return 0;
  const m = /^(\d+(?:\.\d+)?)%?$/.exec(value);
  if (!m || Number(m[1]) > 50) throw new CliError(`--loss '${value}': expected a percentage from 0 to 50, e.g. 2%`);
  return Number(m[1]) / 100;
}

function numberOption(flag: string, value: string | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const v = Number(value);
  if (!Number.isFinite(v) || v < min || v > max) throw new CliError(`${flag} '${value}': expected a number from ${min} to ${max}`);
  return v;
}

export const simulate: Command = {
  help: `Usage: starling simulate [--nodes N] [--per-process K] [--loss P%] [--delay MS] [--flap SEC]
                        [--minutes M] [--expire SEC] [--interval SEC] [--follow-fleet] [--floor] [--json]

Builds N simulated Starling nodes — each the whole device of 'starling run' with one
simulated sensor — in network namespaces on one bridge, K nodes to a process (each on an
address of its own on its namespace's interface), and a hub bridging the mesh to an
embedded MQTT broker, which a counter subscribes to. Runs M minutes, printing a progress
line to stderr every 5 s; then takes each topic's sequence, checks every sample published
before it reached the broker or counts it lost, kills one process (SIGKILL: its nodes vanish) and times
how long until every other node has seen them go; then reports. Needs root. Nothing
touches this machine's interfaces; the namespaces end with the run, even when it is killed.

  --nodes N           simulated nodes (default 50), besides the hub
  --per-process K     nodes per process (default 10, fewer where 'ulimit -n' would not do)
  --loss P%           each packet a host sends is dropped with this probability (default 0)
  --delay MS          each packet a host sends is delayed (the kernel's netem, else iptables'
                      NFQUEUE and the nfq-delay helper, image/build-nfq-delay.sh)
  --flap SEC          every SEC seconds one process's link goes down (out of range) for the
                      expiry plus 2 s and comes back: its nodes leave and rejoin
  --minutes M         how long the mesh runs before the checks (default 1; decimals allowed)
  --expire SEC        a silent peer has left after this (default 30; evasive is a sixth of it)
  --interval SEC      each sensor's sample interval (default 1)
  --follow-fleet      every node follows every peer's status and logs (fleet.follow: true,
                      two more connections per peer); by default only the hub does, the
                      nodes being leaves (fleet.follow: false)
  --floor             the transport's floor instead of Starling: in the same network, each node
                      a bare ZeroMQ ROUTER and a DEALER to every other node's, each sending one
                      HELLO-sized message (no discovery, no protocol); reports the time to a
                      full mesh and CPU and RSS per node, 12 s after it is whole
  --json              the report as one JSON object (progress lines stay on stderr)
  -h, --help          this help

The report: time to a full mesh (every node has every other and the hub), EXITs and
false EXITs (a peer declared gone while neither side's link was down nor it killed),
re-ENTERs, the kill's time to gone everywhere, samples published, at the broker and lost,
traffic per node (beacons, ZRE messages, telemetry samples, bytes on the link), CPU and
RSS per node beyond each process's base, and the event loop's delay.`,
  async run(argv) {
    if (argv[0] === '--worker') return runWorker();
    const { values } = parse(argv, {
      nodes: { type: 'string' }, 'per-process': { type: 'string' }, loss: { type: 'string' }, delay: { type: 'string' }, flap: { type: 'string' },
      minutes: { type: 'string' }, expire: { type: 'string' }, interval: { type: 'string' }, 'follow-fleet': { type: 'boolean' }, floor: { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
    }, false);
    const n = values.nodes === undefined ? 50 : intOption('--nodes', values.nodes, 1, 2000);
    const autoK = Math.max(1, Math.min(10, Math.floor(nofile() / (FDS_PER_PEER * (n + 1)))));
    const k = values['per-process'] === undefined ? autoK : intOption('--per-process', values['per-process'], 1, 1000);
    const loss = lossOption(values.loss);
    const delayMs = numberOption('--delay', values.delay, 0, 0, 10_000);
    const flapS = numberOption('--flap', values.flap, 0, 0, 3600);
    const minutes = numberOption('--minutes', values.minutes, 1, 0.1, 24 * 60);
    const expiredMs = numberOption('--expire', values.expire, 30, 1, 3600) * 1000;
    const sampleMs = numberOption('--interval', values.interval, 1, 0.05, 3600) * 1000;
    const json = Boolean(values.json);
    const followFleet = Boolean(values['follow-fleet']);
    const floor = Boolean(values.floor);
    const say = (line: string) => process.stderr.write(`simulate: ${line}\n`);
    const limit = nofile();
    if (k * FDS_PER_PEER * (n + 1) > limit) {
      // Seen: 40 nodes to a process of 200 ran out of descriptors at 20,000 (sockets then fail to open).
      say(`warning: ${k} nodes to a process may need up to ${k * FDS_PER_PEER * (n + 1)} open files each (${FDS_PER_PEER} a peer); the limit is ${limit} (ulimit -n), so some of their sockets may fail to open; --per-process ${Math.max(1, Math.floor(limit / (FDS_PER_PEER * (n + 1))))} fits`);
    }

    const lab = new Lab({ loss, delayMs });
    const workers: Worker[] = [];
    const names: string[] = ['hub', ...Array.from({ length: n }, (_, i) => `sim-${String(i + 1).padStart(String(n).length, '0')}`)];
    const indexOf = new Map(names.map((name, i) => [name, i]));
    const workerOf: Worker[] = [];
    let ending = false;
    const cleanup = () => {
      ending = true;
      for (const w of workers) if (w.proc.exitCode === null) w.proc.kill('SIGKILL');
      lab.close();
    };
    const onSignal = () => {
      cleanup();
      process.exit(130);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);

    // What the nodes report.
    const peers = names.map(() => new Set<string>());
    const exited = names.map(() => new Set<string>());
    let links = 0;
    const full = names.length * (names.length - 1);
    let t0 = 0;
    let fullMeshMs: number | undefined;
    let exits = 0;
    let reenters = 0;
    const falseExits: { observer: string; peer: string; at: number; reason: unknown }[] = [];
    const startedNodes = new Set<number>();
    const failures: string[] = [];
    let killedAt = 0;
    const killedNodes = new Set<string>();
    /** For each killed node, the survivors that have seen it go. */
    const goneSeen = new Map<string, Map<number, number>>();
    const downAround = (w: Worker | undefined, t: number) => Boolean(w && (w.killed || w.down.some((d) => d.from <= t && (d.to === undefined || d.to + expiredMs + 3000 >= t))));

    const onRecord = (w: Worker, rec: Rec) => {
      const waiter = w.waiters.get(rec.ev);
      if (waiter) {
        w.waiters.delete(rec.ev);
        waiter(rec);
      }
      if (rec.ev === 'enter' || rec.ev === 'exit') {
        const i = rec.index as number;
        const peer = rec.peer as string;
        if (rec.ev === 'enter') {
          if (!peers[i]!.has(peer)) {
            peers[i]!.add(peer);
            links++;
            if (exited[i]!.delete(peer)) reenters++;
          }
          if (fullMeshMs === undefined && links === full) fullMeshMs = Date.now() - t0;
        } else {
          exits++;
          if (peers[i]!.delete(peer)) links--;
          exited[i]!.add(peer);
          const t = rec.t as number;
          if (killedNodes.has(peer)) {
            const seen = goneSeen.get(peer)!;
            if (!seen.has(i)) seen.set(i, t - killedAt);
          } else if (!downAround(w, t) && !downAround(workerOf[indexOf.get(peer) ?? -1], t)) {
            falseExits.push({ observer: names[i]!, peer, at: Math.round((t - t0) / 100) / 10, reason: rec.reason });
          }
        }
      } else if (rec.ev === 'started') startedNodes.add(rec.index as number);
      else if (rec.ev === 'failed' || rec.ev === 'error') failures.push(`${rec.index === undefined ? `process ${w.id}` : names[rec.index as number]}: ${String(rec.why)}`);
      else if (rec.ev === 'stats') {
        w.stats = rec;
        w.cpuMs += rec.cpuMs as number;
        w.statMs += rec.ms as number;
      }
    };
    const next = (w: Worker, ev: string, ms: number): Promise<Rec> => new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        w.waiters.delete(ev);
        reject(new CliError(`process ${w.id} did not report '${ev}' within ${ms} ms`, 1));
      }, ms);
      w.waiters.set(ev, (rec) => {
        clearTimeout(timer);
        resolve(rec as Rec);
      });
    });
    const send = (w: Worker, msg: object) => w.proc.stdin!.write(JSON.stringify(msg) + '\n');
    /** Every live process's stats, now. */
    const statsNow = () => Promise.all(workers.filter((w) => !w.killed).map((w) => {
      const r = next(w, 'stats', 10_000);
      send(w, { cmd: 'stats' });
      return r;
    }));

    try {
      await lab.open();
      // Processes: the hub's, then ⌈N/K⌉ of K nodes.
      // The same program again: the script, or the single executable alone (which carries it).
      const sea = (process.getBuiltinModule?.('node:sea') as { isSea(): boolean } | undefined)?.isSea() ?? false;
      // From the bundle, with the executable's V8 flags, so a simulated node runs as a shipped one does: at 100
      // nodes, --max-semi-space-size=1 held 8.7 MB per node against 10.9 MB without (one run each).
      const self = sea ? [] : [...shippedExecArgv(), process.argv[1]!];
      const groups: number[][] = [[0]];
      for (let i = 1; i <= n; i += k) groups.push(Array.from({ length: Math.min(k, n + 1 - i) }, (_, j) => i + j));
      say(`${n} nodes in ${groups.length - 1} process(es) of up to ${k}, and a hub; loss ${loss * 100}% (${lab.lossBy}), delay ${delayMs} ms (${lab.delayBy}), flap ${flapS ? `every ${flapS} s` : 'off'}, expiry ${expiredMs / 1000} s, ${minutes} min`);
      for (const [id, nodes] of groups.entries()) {
        const proc = spawn('unshare', ['--net', '--', process.execPath, ...self, 'simulate', '--worker'], { stdio: ['pipe', 'pipe', 'inherit'] });
        const w: Worker = { id, proc, pid: proc.pid!, nodes, hub: id === 0, killed: false, down: [], stats: undefined, cpuMs: 0, statMs: 0, waiters: new Map() };
        workers.push(w);
        for (const i of nodes) workerOf[i] = w;
        createInterface({ input: proc.stdout! }).on('line', (line) => {
          let rec: Rec;
          try {
            rec = JSON.parse(line) as Rec;
          } catch {
            return;
          }
          if (rec.ev === 'batch') for (const r of rec.recs as Rec[]) onRecord(w, r);
          else onRecord(w, rec);
        });
        proc.on('exit', (code, signal) => {
          if (!ending && !w.killed) failures.push(`process ${id} ended (${signal ?? `exit ${code}`})`);
        });
      }
      await Promise.all(workers.map((w) => next(w, 'loaded', 30_000)));
      for (const w of workers) lab.wire(w.id, w.pid, w.nodes.map(simAddress));
      await lab.delaysReady();
      lab.pinNeighbours();
      const before = lab.bytesSent();
      const tBefore = Date.now();
      const startOf = (w: Worker): WorkerStart => ({
        cmd: 'start', hub: w.hub, total: names.length, evasiveMs: Math.max(100, Math.round(expiredMs / 6)), expiredMs, sampleMs, statusMs: 10_000,
        followFleet: Boolean(w.hub) || followFleet, nodes: w.nodes.map((i) => ({ index: i, name: names[i]!, address: simAddress(i) })),
        floor: floor ? { all: names.map((_, i) => simAddress(i)) } : undefined,
      });
      send(workers[0]!, startOf(workers[0]!));
      await next(workers[0]!, 'started', 30_000);
      t0 = Date.now();
      for (const w of workers.slice(1)) send(w, startOf(w));

      // The run, with a progress line every 5 s and the flaps.
      const runMs = minutes * 60_000;
      let nextFlap = flapS > 0 ? t0 + flapS * 1000 : Infinity;
      let flapTurn = 0;
      let nextProgress = t0 + 5000;
      const progress = () => {
        const live = workers.filter((w) => w.stats);
        const rssPerNode = live.filter((w) => !w.hub).map((w) => ((w.stats!.rss as number) - (w.stats!.base as number)) / w.nodes.length / 1e6);
        const p99 = Math.max(0, ...live.map((w) => (w.stats!.loop as { p99: number }).p99));
        say(`${Math.round((Date.now() - t0) / 1000)} s: ${startedNodes.size}/${names.length} started, links ${links}/${full}${fullMeshMs === undefined ? '' : ` (full mesh in ${(fullMeshMs / 1000).toFixed(1)} s)`}, exits ${exits} (false ${falseExits.length}), re-enters ${reenters}, rss +${fmt(Math.max(0, ...rssPerNode))} MB/node, loop p99 ${fmt(p99)} ms${failures.length ? `, problems ${failures.length}: ${failures.at(-1)}` : ''}`);
      };
      while (Date.now() - t0 < runMs) {
        await sleep(200);
        const now = Date.now();
        for (const w of workers) for (const d of w.down) if (d.to === undefined && now - d.from >= expiredMs + 2000) {
          lab.link(w.id, true);
          d.to = now;
        }
        if (now >= nextFlap && workers.length > 1) {
          const w = workers[1 + (flapTurn++ % (workers.length - 1))]!;
          if (!w.down.some((d) => d.to === undefined)) {
            w.down.push({ from: now, to: undefined });
            lab.link(w.id, false);
          }
          nextFlap += flapS * 1000;
        }
        if (now >= nextProgress) {
          progress();
          nextProgress += 5000;
        }
        // The floor ends once its mesh is whole and a trim period (10 s) has passed, so RSS is what stays.
        if (floor && fullMeshMs !== undefined && now - t0 >= fullMeshMs + FLOOR_SETTLE_MS) break;
      }
      if (floor) {
        await statsNow();
        const report = {
          floor: true, nodes: n, perProcess: k, processes: workers.length - 1, loss, lossBy: lab.lossBy, delayMs, delayBy: lab.delayBy,
          fullMeshMs: fullMeshMs ?? null, started: startedNodes.size, links, fullLinks: full,
          ...perNode(workers.slice(1)),
          problems: failures.slice(0, 20),
        };
        if (json) out(JSON.stringify(report));
        else {
          out(`floor: bare ZeroMQ, ${n} nodes in ${report.processes} process(es) of up to ${k}, and the hub's; loss ${loss * 100}% (${lab.lossBy}), delay ${delayMs} ms (${lab.delayBy})`);
          out(`time to a full mesh: ${fullMeshMs === undefined ? `not reached (${links}/${full} links)` : `${fmt(fullMeshMs / 1000, 2)} s`}`);
          out(`per node: ${fmt(report.cpuPerNodePct, 2)} % of a core, RSS beyond base ${fmt(report.rssPerNodeMB.mean, 2)} MB (max ${fmt(report.rssPerNodeMB.max, 2)}; base ${fmt(report.rssBaseMB, 0)} MB)`);
          for (const p of failures.slice(0, 5)) out(`problem: ${p}`);
        }
        return 0;
      }
      // Every link back up; then each topic's sequence now, and every sample below it must reach the broker
      // (or be counted lost): wait until they have, or nothing more comes for 5 s (30 s at most).
      for (const w of workers) for (const d of w.down) if (d.to === undefined) {
        lab.link(w.id, true);
        d.to = Date.now();
      }
      const ranMs = Date.now() - t0;
      const marks = await Promise.all(workers.slice(1).filter((w) => !w.killed).map(async (w) => {
        const r = next(w, 'seqs', 10_000);
        send(w, { cmd: 'seqs' });
        return (await r).seqs as Record<string, number>;
      }));
      const published = Object.assign({}, ...marks) as Record<string, number>;
      let arrived: Record<string, Arrivals> = {};
      let lostCounted: Record<string, number> = {};
      let malformedAtBroker = 0;
      const tally = () => {
        const t = { published: 0, arrived: 0, duplicates: 0, neverArrived: 0, gapSamples: [] as string[] };
        for (const [topic, below] of Object.entries(published)) {
          const a = arrived[topic];
          if (!a) {
            t.published += below;
            t.neverArrived++;
            continue;
          }
          const got = arrivedBelow(a, below);
          t.published += Math.max(0, below - a.first);
          t.arrived += got;
          if (got < below - a.first && t.gapSamples.length < 10) t.gapSamples.push(`${topic}: first ${a.first}, last ${a.last}, published below ${below}, gaps ${JSON.stringify(a.gaps)}`);
          t.duplicates += a.dups;
        }
        return t;
      };
      let counted = tally();
      for (let last = -1, quietSince = Date.now(), t1 = Date.now(); Date.now() - t1 < 30_000;) {
        const r = next(workers[0]!, 'counts', 10_000);
        send(workers[0]!, { cmd: 'count' });
        const counts = await r;
        arrived = counts.arrived as typeof arrived;
        lostCounted = counts.lostCounted as typeof lostCounted;
        malformedAtBroker = counts.malformed as number;
        counted = tally();
        if (counted.arrived === counted.published) break;
        if (counted.arrived !== last) quietSince = Date.now();
        else if (Date.now() - quietSince > 5000) break;
        last = counted.arrived;
        await sleep(500);
      }
      // The figures of the run, before the kill.
      await statsNow();
      const after = lab.bytesSent();
      const tAfter = Date.now();

      // Kill one process: its nodes vanish without a word; every other node must see them go within the expiry.
      const victim = workers.length > 2 ? workers[1]! : undefined;
      let kill: { nodes: number; goneEverywhereMs: number | undefined; notSeen: number } | undefined;
      if (victim) {
        for (const i of victim.nodes) {
          killedNodes.add(names[i]!);
          goneSeen.set(names[i]!, new Map());
        }
        const survivors = names.map((_, i) => i).filter((i) => !victim.nodes.includes(i) && peers[i]!.size > 0);
        const want = (i: number) => victim.nodes.filter((v) => peers[i]!.has(names[v]!)).length;
        const expected = survivors.reduce((s, i) => s + want(i), 0);
        victim.killed = true;
        killedAt = Date.now();
        victim.proc.kill('SIGKILL');
        const seenCount = () => [...goneSeen.values()].reduce((s, m) => s + m.size, 0);
        while (seenCount() < expected && Date.now() - killedAt < expiredMs + 10_000) await sleep(100);
        const times = [...goneSeen.values()].flatMap((m) => [...m.values()]);
        kill = { nodes: victim.nodes.length, goneEverywhereMs: seenCount() >= expected ? Math.max(0, ...times) : undefined, notSeen: expected - seenCount() };
      }

      const nodeWorkers = workers.slice(1).filter((w) => w.stats);
      const sum = (f: (w: Worker) => number) => nodeWorkers.reduce((s, w) => s + f(w), 0);
      const nodesMeasured = sum((w) => w.nodes.length);
      /** A counter of every node's, per node and second (each process's since its nodes started). */
      const rate = (f: (w: Worker) => number) => nodeWorkers.reduce((s, w) => s + f(w) / (((w.stats!.t as number) - (w.stats!.since as number)) / 1000), 0) / nodesMeasured;
      const linkBytes = nodeWorkers.reduce((s, w) => s + (after.get(w.id) ?? 0) - (before.get(w.id) ?? 0), 0);
      const loops = nodeWorkers.map((w) => w.stats!.loop as { p50: number; p99: number; max: number });
      const report = {
        nodes: n, perProcess: k, processes: workers.length - 1, loss, lossBy: lab.lossBy, delayMs, delayBy: lab.delayBy, flapS, expiredMs, minutes, ranMs, followFleet,
        fullMeshMs: fullMeshMs ?? null, started: startedNodes.size, links, fullLinks: full,
        exits, falseExits: falseExits.length, falseExitSamples: falseExits.slice(0, 10), reenters,
        flaps: workers.reduce((s, w) => s + w.down.length, 0),
        kill: kill ?? null,
        mesh: Object.fromEntries(['handshakeTimeouts', 'rehellos', 'rehellosQuiet', 'peersRefused', 'sendsDropped'].map((c) => [c, workers.reduce((s2, w) => s2 + ((w.stats?.[c] as number | undefined) ?? 0), 0)])),
        samplesPublished: counted.published, samplesArrived: counted.arrived, samplesLost: counted.published - counted.arrived, duplicates: counted.duplicates,
        // Lost samples the hub counted itself (its subscriber's gaps, the bridge's drops): what Starling reports.
        samplesLostCounted: Object.values(lostCounted).reduce((a, b) => a + b, 0), lostCountedBy: lostCounted,
        malformedAtBroker, topics: Object.keys(published).length, topicsNeverArrived: counted.neverArrived, lostSamples: counted.gapSamples,
        traffic: {
          beaconsPerNodeS: rate((w) => w.stats!.beaconsSent as number),
          zreMessagesPerNodeS: rate((w) => w.stats!.messagesReceived as number),
          samplesPerNodeS: rate((w) => w.stats!.samplesPublished as number),
          linkBytesPerNodeS: linkBytes / nodesMeasured / ((tAfter - tBefore) / 1000),
        },
        ...perNode(nodeWorkers),
        hubRssMB: workers[0]!.stats ? (workers[0]!.stats.rss as number) / 1e6 : null,
        loopDelayMs: { p50: Math.max(0, ...loops.map((l) => l.p50)), p99: Math.max(0, ...loops.map((l) => l.p99)), max: Math.max(0, ...loops.map((l) => l.max)) },
        problems: failures.slice(0, 20),
      };
      if (json) out(JSON.stringify(report));
      else {
        const rows: [string, string][] = [
          ['nodes (+ hub)', `${n} in ${report.processes} process(es) of up to ${k}`],
          ['network', `loss ${loss * 100}% (${lab.lossBy}), delay ${delayMs} ms (${lab.delayBy}), flaps ${report.flaps}, expiry ${expiredMs / 1000} s`],
          ['time to a full mesh', fullMeshMs === undefined ? `not reached (${links}/${full} links)` : `${fmt(fullMeshMs / 1000, 2)} s`],
          ['EXITs / false EXITs / re-ENTERs', `${exits} / ${falseExits.length} / ${reenters}`],
          ['handshake timeouts / re-HELLOs (quiet) / refused / sends dropped', ((m) => `${m.handshakeTimeouts} / ${m.rehellos} (${m.rehellosQuiet}) / ${m.peersRefused} / ${m.sendsDropped}`)(report.mesh as Record<string, number>)],
          ['killed process: gone everywhere', kill ? (kill.goneEverywhereMs === undefined ? `${kill.notSeen} sighting(s) missing after ${(expiredMs + 10_000) / 1000} s` : `${fmt(kill.goneEverywhereMs / 1000, 2)} s for ${kill.nodes} node(s) (expiry ${expiredMs / 1000} s)`) : '-'],
          ['samples published / at the broker / lost', `${counted.published} / ${counted.arrived} / ${report.samplesLost} (${report.samplesLostCounted} counted by the hub; ${counted.duplicates} repeats${malformedAtBroker ? `; ${malformedAtBroker} unreadable states` : ''})`],
          ['per node: beacons, ZRE messages in, samples /s', `${fmt(report.traffic.beaconsPerNodeS, 2)}, ${fmt(report.traffic.zreMessagesPerNodeS, 1)}, ${fmt(report.traffic.samplesPerNodeS, 2)}`],
          ['per node: bytes sent on the link /s', fmt(report.traffic.linkBytesPerNodeS, 0)],
          ['per node: CPU, RSS beyond base', `${fmt(report.cpuPerNodePct, 2)} % of a core, ${fmt(report.rssPerNodeMB.mean, 2)} MB (max ${fmt(report.rssPerNodeMB.max, 2)}; base ${fmt(report.rssBaseMB, 0)} MB)`],
          ['hub RSS', `${fmt(report.hubRssMB ?? NaN, 1)} MB`],
          ['event loop delay p50 / p99 / max', `${fmt(report.loopDelayMs.p50)} / ${fmt(report.loopDelayMs.p99)} / ${fmt(report.loopDelayMs.max)} ms`],
        ];
        for (const [k2, v] of rows) out(`${k2.padEnd(48)} ${v}`);
        for (const f of falseExits.slice(0, 5)) out(`false EXIT: ${f.observer} saw ${f.peer} go at ${f.at} s (${String(f.reason)})`);
        for (const p of failures.slice(0, 5)) out(`problem: ${p}`);
        for (const g of counted.gapSamples.slice(0, 5)) out(`lost: ${g}`);
      }
      return 0;
    } catch (e) {
      if (e instanceof LabError) throw new CliError(e.message, 1);
      throw e;
    } finally {
      ending = true;
      for (const w of workers) w.proc.stdin?.end();
      await Promise.race([Promise.all(workers.map((w) => (w.proc.exitCode === null && w.proc.signalCode === null ? new Promise((r) => w.proc.once('exit', r)) : undefined))), sleep(5000)]);
      cleanup();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  },
};

declare const STARLING_EXEC_ARGV: string | undefined;

/** The single executable's V8 flags (image/sea-flags.json), which image/build.mjs puts into the bundle; none when run from the sources. */
function shippedExecArgv(): string[] {
  return typeof STARLING_EXEC_ARGV === 'string' ? (JSON.parse(STARLING_EXEC_ARGV) as string[]) : [];
}

/** This process's soft limit on open files (the workers inherit it). */
function nofile(): number {
  try {
    const m = /Max open files\s+(\d+)/.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : 1024;
  } catch {
    return 1024;
  }
}
