/**
 * The web view's costs, each beside its comparison from the same run (root: everything runs in a network
 * namespace of its own, with only its loopback):
 *   - page weight: the page's HTML + JS + CSS as served gzipped, against the 100 KB aim;
 *   - the hub's RSS and CPU with 0, then 10 browsers (headless Chromium, one page each) following the live view,
 *     then 0 again, while 10 simulated peers publish 1,000 samples/s (10 topics each, every 100 ms); beside it,
 *     on the same timeline, a control mesh alike that no browser sees: the browsers' cost is the browsed hub's
 *     growth beyond the control's, after full collections (the hub's memory grows with time alone: V8's
 *     sawtooth, heap and malloc pages kept);
 *   - sample-to-browser latency (each point's timestamp to its arrival in the page), against the same samples'
 *     latency to `starling tail`, a plain telemetry subscriber on the same mesh.
 *
 *   node dist/bench/web.mjs [--seconds S] [--warmup W] [--json]   (each measuring phase S s, default 20, after W s, default 75)
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { collectGarbage, cpuSecondsOf, memoryOf, openInspector, unitEnvironment, type NodeMemory } from './lib/proc.ts';
import { Browser, type Page } from '../test/browser.ts';
import { TRIM_INTERVAL_MS } from '../runtime/memory.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const { values: opts } = parseArgs({ options: { seconds: { type: 'string' }, warmup: { type: 'string' }, json: { type: 'boolean' } } });
const SECONDS = Number(opts.seconds ?? 20);
// Long enough for every bound to fill before anything is compared: each topic's 600 recent points (60 s at
// 10 samples/s) and the 2 MB of events kept for resumption.
const WARMUP = Number(opts.warmup ?? 75);
const CLIENTS = 10;
if (process.getuid?.() !== 0) throw new Error('bench/web needs root (a network namespace for the hub, the peers and the browser)');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
};
const median = (xs: number[]) => pct(xs, 50);
const mb = (x: number) => (x / 1e6).toFixed(1);
/** What V8 reports inside the hub after the collections: its heap (used of committed) and ArrayBuffers. */
const inside = (m: NodeMemory) => `heap ${mb(m.heapUsed)} of ${mb(m.heapTotal)}, buffers ${mb(m.arrayBuffers)}`;
const signed = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(1)}`;

// Page weight, as served (gzip level 9, services/web/assets.ts).
const webDir = join(root, 'dist/web');
const weights = readdirSync(webDir).map((f) => ({ f, raw: readFileSync(join(webDir, f)).length, gz: gzipSync(readFileSync(join(webDir, f)), { level: 9 }).length }));
const pageGz = weights.reduce((a, w) => a + w.gz, 0);

const dir = mkdtempSync(join(tmpdir(), 'starling-bench-web-'));
const procs: ChildProcess[] = [];
const namespaces: string[] = [];
const lines = (p: ChildProcess, on: (l: string) => void) => createInterface({ input: p.stdout! }).on('line', on);
const browsers: Browser[] = [];

/**
 * One mesh in a namespace of its own: the hub (as it ships: the single executable with its V8 flags inside,
 * else the bundle with those flags; run as the unit runs it: its environment, MALLOC_ARENA_MAX=2) and 10 simulated peers.
 * The bench builds two alike: one the browsers follow, and a control no browser sees, on the same timeline,
 * so what the hub's memory does with time alone (V8's sawtooth, pages malloc keeps) cancels out.
 */
async function mesh(label: string): Promise<{ ns: string; hub: ChildProcess; inNs(cmd: string[]): ChildProcess }> {
  const ns = `stlwebb-${label}-${randomBytes(3).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', ns]);
  namespaces.push(ns);
  execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  let stderr = '';
  const inNs = (cmd: string[]) => {
    const p = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...unitEnvironment(root) } });
    p.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000))); // kept for a failed start
    procs.push(p);
    return p;
  };
  const config = join(dir, `${label}.yaml`);
  writeFileSync(config, `simulate: true
node: { name: hub, iface: lo, port: 5670 }
security: { mode: none }
telemetry: { prefix: hub/ }
web: { listen: "127.0.0.1:8080" }
`);
  const hub = inNs([...hubCmd, 'run', '--config', config]);
  let webUp = false;
  lines(hub, (l) => {
    if (l.includes('web view at')) webUp = true;
  });
  const fleet = inNs(['sh', '-c', `ulimit -n $(ulimit -Hn); exec ${process.execPath} ${join(root, 'dist/bench/web-fleet.mjs')} --nodes 10 --topics 10 --interval-ms 100 --iface lo --port 5670`]);
  let fleetReady = false;
  lines(fleet, (l) => {
    if (l.includes('"ready"')) fleetReady = true;
  });
  const deadline = Date.now() + 60_000;
  while (!(webUp && fleetReady)) {
    if (Date.now() > deadline) throw new Error(`${label}: the hub or the peers did not start within 60 s: ${stderr.trim()}`);
    await sleep(100);
  }
  // The inspector, for the full collections after each phase (opened now, so every phase pays for it alike).
  await openInspector(hub.pid!, ns);
  return { ns, hub, inNs };
}

const exe = join(root, 'dist/starling-linux-x64');
const seaFlags = (JSON.parse(readFileSync(join(root, 'image/sea-flags.json'), 'utf8')) as { execArgv: string[] }).execArgv;
const hubCmd = existsSync(exe) ? [exe] : [process.execPath, ...seaFlags, join(root, 'dist/starling.cjs')];

try {
  const [browsed, control] = await Promise.all([mesh('browsed'), mesh('control')]);
  const { ns, hub, inNs } = browsed;
  // The comparison for latency: a plain subscriber on the same mesh.
  const tailLag: number[] = [];
  const tail = inNs([process.execPath, join(root, 'dist/starling.cjs'), 'tail', '--json', '--iface', 'lo', '--port', '5670', '--no-snapshot']);
  lines(tail, (l) => {
    try {
      const s = JSON.parse(l) as { ts?: number };
      if (typeof s.ts === 'number') tailLag.push(Date.now() - s.ts);
    } catch {
      // a note, not a sample
    }
  });
  await sleep(WARMUP * 1000); // every peer met, every topic's history full, the event log at its bound

  /** The browsed hub's web view counters (/api/state). */
  const webStats = () => (JSON.parse(execFileSync('ip', ['netns', 'exec', ns, process.execPath, '-e', "fetch('http://127.0.0.1:8080/api/state').then(r=>r.text()).then(t=>process.stdout.write(t))"], { encoding: 'utf8' })) as { stats: { web: Record<string, number> } }).stats.web;
  // Each phase: medians of one-second samples, then the RSS after two full collections (what the hub still
  // references, without V8's sawtooth of garbage waiting for its next major collection), of both hubs.
  interface Phase { rss: number; anon: number; cpu: number; gcRss: number; gc: NodeMemory; control: { rss: number; gcRss: number }; queued: number; tail: number[] }
  const phase = async (): Promise<Phase> => {
    const rss: number[] = [];
    const anon: number[] = [];
    const controlRss: number[] = [];
    const cpu0 = cpuSecondsOf(hub.pid!);
    const t0 = Date.now();
    for (let i = 0; i < SECONDS; i++) {
      await sleep(1000);
      const m = memoryOf(hub.pid!);
      rss.push(m.rss);
      anon.push(m.anon);
      controlRss.push(memoryOf(control.hub.pid!).rss);
    }
    const cpu = (cpuSecondsOf(hub.pid!) - cpu0) / ((Date.now() - t0) / 1000);
    // tail's latencies of the phase, taken before anything below blocks this process (which reads its lines)
    const tail = tailLag.splice(0);
    const queued = webStats().clientBytesQueued!;
    const gc = collectGarbage(ns);
    collectGarbage(control.ns);
    // and the hubs' next trim of glibc's free pages (runtime/memory.ts, every 10 s)
    await sleep(TRIM_INTERVAL_MS + 1000);
    return { rss: median(rss), anon: median(anon), cpu, gcRss: memoryOf(hub.pid!).rss, gc, queued, tail, control: { rss: median(controlRss), gcRss: memoryOf(control.hub.pid!).rss } };
  };
  /** The browsed hub's growth from `a` to `b`, less the control hub's over the same time. */
  const beyondControl = (a: Phase, b: Phase, k: 'rss' | 'gcRss') => b[k] - a[k] - (b.control[k] - a.control[k]);
  tailLag.length = 0;
  const idle = await phase();
  const tailLagMs = idle.tail;

  // Latency, seen by one browser: ten headless Chromiums on this 2-core machine take the cores from each other
  // (and from the hub), which a phone and a laptop elsewhere on the network would not.
  const first = new Browser();
  browsers.push(first);
  await first.launch({ netns: ns, width: 1280, height: 1000 });
  const one = await first.open('http://127.0.0.1:8080/');
  await one.waitFor(`document.querySelectorAll('#devices .topic').length >= 100`, 30_000, '100 topics');
  await sleep(3000);
  await one.eval('window.starling.lagMs.length = 0');
  await sleep(SECONDS * 1000);
  const lagOne = await one.eval<number[]>('window.starling.lagMs');
  const renderOne = await one.eval<number[]>('window.starling.renderMs');

  // Ten browsers, not ten tabs: a browser keeps at most six connections to one host, and each page holds one
  // for its event stream.
  const pages: Page[] = [];
  for (let i = 0; i < CLIENTS; i++) {
    if (i === 0) {
      pages.push(one);
      continue;
    }
    const b = new Browser();
    browsers.push(b);
    await b.launch({ netns: ns, width: 1280, height: 1000 });
    pages.push(await b.open('http://127.0.0.1:8080/'));
  }
  for (const p of pages) await p.waitFor(`document.querySelectorAll('#devices .topic').length >= 100`, 30_000, '100 topics');
  await sleep(5000);
  for (const p of pages) await p.eval('window.starling.lagMs.length = 0');
  const live = await phase();
  const lag = (await Promise.all(pages.map((p) => p.eval<number[]>('window.starling.lagMs')))).flat();
  const published = webStats().eventsSent;
  // The hub's memory with none again, after the browsers have gone: what they leave behind.
  await Promise.all(browsers.splice(0).map((b) => b.close()));
  await sleep(5000);
  const after = await phase();

  const rows: [string, string, string, string][] = [
    ['page weight (HTML+JS+CSS, gzip)', `${(pageGz / 1024).toFixed(1)} KB`, 'aim 100 KB', `${((pageGz / 1024 / 100) * 100).toFixed(0)} % of the aim`],
    ['hub RSS, 0 browsers', `${mb(idle.rss)} MB`, `control hub: ${mb(idle.control.rss)} MB`, ''],
    [`hub RSS, ${CLIENTS} browsers (sampled)`, `${mb(live.rss)} MB`, `${signed((live.rss - idle.rss) / 1e6)} MB over none before them; the control hub ${signed((live.control.rss - idle.control.rss) / 1e6)} MB over the same time; **${signed(beyondControl(idle, live, 'rss') / 1e6)} MB beyond the control**`, '(V8 sawtooth included)'],
    [`hub RSS after a full collection, ${CLIENTS} browsers`, `${mb(live.gcRss)} MB (${inside(live.gc)})`, `${signed((live.gcRss - idle.gcRss) / 1e6)} MB over none before them (${inside(idle.gc)}); the control hub ${signed((live.control.gcRss - idle.control.gcRss) / 1e6)} MB over the same time; **${signed(beyondControl(idle, live, 'gcRss') / 1e6)} MB beyond the control**; ${(live.queued / 1e3).toFixed(0)} KB queued for the clients`, 'aim +5 MB'],
    ['hub RSS after a full collection, 0 browsers after them', `${mb(after.gcRss)} MB (${inside(after.gc)})`, `${signed((after.gcRss - idle.gcRss) / 1e6)} MB since before them; the control hub ${signed((after.control.gcRss - idle.control.gcRss) / 1e6)} MB; ${signed(beyondControl(idle, after, 'gcRss') / 1e6)} MB beyond the control (what they leave behind)`, ''],
    ['hub CPU at 1,000 samples/s, 0 browsers', `${(idle.cpu * 100).toFixed(1)} % of a core`, '', ''],
    [`hub CPU at 1,000 samples/s, ${CLIENTS} browsers`, `${(live.cpu * 100).toFixed(1)} % of a core`, `${(live.cpu / idle.cpu).toFixed(2)} × idle`, ''],
    ['sample → browser latency p50 / p99, 1 browser', `${pct(lagOne, 50).toFixed(0)} / ${pct(lagOne, 99).toFixed(0)} ms`, `starling tail: ${pct(tailLagMs, 50).toFixed(0)} / ${pct(tailLagMs, 99).toFixed(0)} ms`, 'aim p99 200 ms'],
    [`sample → browser latency p50 / p99, ${CLIENTS} browsers on this machine`, `${pct(lag, 50).toFixed(0)} / ${pct(lag, 99).toFixed(0)} ms`, '', ''],
    ['render after an update p50 / p99, 1 browser', `${pct(renderOne, 50).toFixed(1)} / ${pct(renderOne, 99).toFixed(1)} ms`, '', ''],
  ];
  if (opts.json) {
    console.log(JSON.stringify({ pageGzipBytes: pageGz, rssIdle: idle.rss, rssLive: live.rss, rssAfter: after.rss, gcRssIdle: idle.gcRss, gcRssLive: live.gcRss, gcRssAfter: after.gcRss, controlRss: [idle.control.rss, live.control.rss, after.control.rss], controlGcRss: [idle.control.gcRss, live.control.gcRss, after.control.gcRss], tenBrowsersBeyondControl: beyondControl(idle, live, 'gcRss'), clientBytesQueued: live.queued, heapIdle: idle.gc.heapUsed, heapLive: live.gc.heapUsed, heapAfter: after.gc.heapUsed, anonIdle: idle.anon, anonLive: live.anon, anonAfter: after.anon, cpuIdle: idle.cpu, cpuLive: live.cpu, latencyP50: pct(lagOne, 50), latencyP99: pct(lagOne, 99), latency10P50: pct(lag, 50), latency10P99: pct(lag, 99), tailP50: pct(tailLagMs, 50), tailP99: pct(tailLagMs, 99), points: lag.length, eventsSent: published }));
  } else {
    console.log(`web view (hub: ${existsSync(exe) ? 'dist/starling-linux-x64' : `node ${seaFlags.join(' ')} dist/starling.cjs`}), ${SECONDS} s per phase, 10 peers × 10 topics every 100 ms; page files: ${weights.map((w) => `${w.f} ${(w.gz / 1024).toFixed(1)} KB`).join(', ')}`);
    console.log('| figure | measured | comparison (same run) | aim |\n|---|---|---|---|');
    for (const r of rows) console.log(`| ${r.join(' | ')} |`);
    console.log(`(${lag.length} points timed in the browsers, ${tailLagMs.length} by tail)`);
  }
} finally {
  await Promise.all(browsers.map((b) => b.close()));
  for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
  await sleep(500);
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
  for (const ns of namespaces) {
    try {
      for (const pid of execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split('\n').filter(Boolean)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone
    }
    execFileSync('ip', ['netns', 'del', ns]);
  }
  rmSync(dir, { recursive: true, force: true });
}
