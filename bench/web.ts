/**
 * The web view's costs, each beside its comparison from the same run (root: everything runs in a network
 * namespace of its own, with only its loopback):
 *   - page weight: the page's HTML + JS + CSS as served gzipped, against the 100 KB aim;
 *   - the hub's RSS and CPU with 0, then 10 browsers (headless Chromium, one page each) following the live view,
 *     then 0 again, while 10 simulated peers publish 1,000 samples/s (10 topics each, every 100 ms); the 10
 *     browsers' cost is shown against both phases without (what they leave behind, and V8's slow sawtooth);
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
import { cpuSecondsOf, memoryOf } from './lib/proc.ts';
import { Browser, type Page } from '../test/browser.ts';

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
const signed = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(1)}`;

// Page weight, as served (gzip level 9, services/web/assets.ts).
const webDir = join(root, 'dist/web');
const weights = readdirSync(webDir).map((f) => ({ f, raw: readFileSync(join(webDir, f)).length, gz: gzipSync(readFileSync(join(webDir, f)), { level: 9 }).length }));
const pageGz = weights.reduce((a, w) => a + w.gz, 0);

const ns = `stlwebb-${randomBytes(3).toString('hex')}`;
const dir = mkdtempSync(join(tmpdir(), 'starling-bench-web-'));
execFileSync('ip', ['netns', 'add', ns]);
execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
const procs: ChildProcess[] = [];
// The hub runs as the unit runs it (image/deb/starling.service: MALLOC_ARENA_MAX=2).
const inNs = (cmd: string[]) => {
  const p = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, MALLOC_ARENA_MAX: '2' } });
  procs.push(p);
  return p;
};
const lines = (p: ChildProcess, on: (l: string) => void) => createInterface({ input: p.stdout! }).on('line', on);
const browsers: Browser[] = [];

try {
  writeFileSync(join(dir, 'hub.yaml'), `simulate: true
node: { name: hub, iface: lo, port: 5670 }
security: { mode: none }
telemetry: { prefix: hub/ }
web: { listen: "127.0.0.1:8080" }
`);
  // The hub as it ships: the single executable (its V8 flags inside), else the bundle with those flags.
  const exe = join(root, 'dist/starling-linux-x64');
  const seaFlags = (JSON.parse(readFileSync(join(root, 'image/sea-flags.json'), 'utf8')) as { execArgv: string[] }).execArgv;
  const hubCmd = existsSync(exe) ? [exe] : [process.execPath, ...seaFlags, join(root, 'dist/starling.cjs')];
  const hub = inNs([...hubCmd, 'run', '--config', join(dir, 'hub.yaml')]);
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
    if (Date.now() > deadline) throw new Error('the hub or the peers did not start within 60 s');
    await sleep(100);
  }
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

  const phase = async (): Promise<{ rss: number; anon: number; cpu: number }> => {
    const rss: number[] = [];
    const anon: number[] = [];
    const cpu0 = cpuSecondsOf(hub.pid!);
    const t0 = Date.now();
    for (let i = 0; i < SECONDS; i++) {
      await sleep(1000);
      const m = memoryOf(hub.pid!);
      rss.push(m.rss);
      anon.push(m.anon);
    }
    return { rss: median(rss), anon: median(anon), cpu: (cpuSecondsOf(hub.pid!) - cpu0) / ((Date.now() - t0) / 1000) };
  };
  tailLag.length = 0;
  const idle = await phase();
  const tailLagMs = [...tailLag];

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
  const state = JSON.parse(execFileSync('ip', ['netns', 'exec', ns, 'node', '-e', "fetch('http://127.0.0.1:8080/api/state').then(r=>r.text()).then(t=>process.stdout.write(t))"], { encoding: 'utf8' })) as { stats: { web: Record<string, number> } };
  const published = state.stats.web.eventsSent;
  // The hub's memory with none again, after the browsers have gone: the hub's heap saws up and down with V8's
  // major collections (old Buffers of the event log and telemetry wait for one), by a few MB over minutes, so
  // the difference to the phase before alone may credit the browsers with that drift (and the one after may
  // hide what they leave behind): both are shown.
  await Promise.all(browsers.splice(0).map((b) => b.close()));
  await sleep(5000);
  const after = await phase();

  const rows: [string, string, string, string][] = [
    ['page weight (HTML+JS+CSS, gzip)', `${(pageGz / 1024).toFixed(1)} KB`, 'aim 100 KB', `${((pageGz / 1024 / 100) * 100).toFixed(0)} % of the aim`],
    ['hub RSS, 0 browsers', `${(idle.rss / 1e6).toFixed(1)} MB`, '', ''],
    [`hub RSS, ${CLIENTS} browsers`, `${(live.rss / 1e6).toFixed(1)} MB`, `${signed((live.rss - idle.rss) / 1e6)} MB over none before them, ${signed((live.rss - after.rss) / 1e6)} MB over none after (private ${signed((live.anon - idle.anon) / 1e6)} / ${signed((live.anon - after.anon) / 1e6)} MB)`, 'aim +5 MB'],
    ['hub RSS, 0 browsers, after them', `${(after.rss / 1e6).toFixed(1)} MB`, `${signed((after.rss - idle.rss) / 1e6)} MB since before them (drift)`, ''],
    ['hub CPU at 1,000 samples/s, 0 browsers', `${(idle.cpu * 100).toFixed(1)} % of a core`, '', ''],
    [`hub CPU at 1,000 samples/s, ${CLIENTS} browsers`, `${(live.cpu * 100).toFixed(1)} % of a core`, `${(live.cpu / idle.cpu).toFixed(2)} × idle`, ''],
    ['sample → browser latency p50 / p99, 1 browser', `${pct(lagOne, 50).toFixed(0)} / ${pct(lagOne, 99).toFixed(0)} ms`, `starling tail: ${pct(tailLagMs, 50).toFixed(0)} / ${pct(tailLagMs, 99).toFixed(0)} ms`, 'aim p99 200 ms'],
    [`sample → browser latency p50 / p99, ${CLIENTS} browsers on this machine`, `${pct(lag, 50).toFixed(0)} / ${pct(lag, 99).toFixed(0)} ms`, '', ''],
    ['render after an update p50 / p99, 1 browser', `${pct(renderOne, 50).toFixed(1)} / ${pct(renderOne, 99).toFixed(1)} ms`, '', ''],
  ];
  if (opts.json) {
    console.log(JSON.stringify({ pageGzipBytes: pageGz, rssIdle: idle.rss, rssLive: live.rss, rssAfter: after.rss, anonIdle: idle.anon, anonLive: live.anon, anonAfter: after.anon, cpuIdle: idle.cpu, cpuLive: live.cpu, latencyP50: pct(lagOne, 50), latencyP99: pct(lagOne, 99), latency10P50: pct(lag, 50), latency10P99: pct(lag, 99), tailP50: pct(tailLagMs, 50), tailP99: pct(tailLagMs, 99), points: lag.length, eventsSent: published }));
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
  try {
    for (const pid of execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split('\n').filter(Boolean)) process.kill(Number(pid), 'SIGKILL');
  } catch {
    // gone
  }
  execFileSync('ip', ['netns', 'del', ns]);
  rmSync(dir, { recursive: true, force: true });
}
