/**
 * Soak: one device under steady load for a while, its memory sampled, to show that RSS stays flat (no leak, no
 * creeping heap) with the executable's flags. The device is the single executable (`starling run`) with 50
 * simulated sensors read every 10 ms (5,000 samples/s) onto its telemetry, and its MQTT bridge forwarding
 * every sample to its own embedded broker (QoS 1, spool on disk) — the whole pipeline in one process.
 *
 *   node dist/bench/soak.mjs [--minutes M] [--every SEC] [--warmup SEC] [--bundle] [--flags="…"] [--no-web] [--json]
 *
 * RSS is the private memory (anon) and the pages of the executable's file the process has mapped (shared with
 * every other process that runs it, and given back by the kernel under pressure: about 50–65 MB here under this
 * load, depending on the page cache), so both are shown. Run with MALLOC_ARENA_MAX=2, as the unit runs it.
 *
 * --minutes (default 3), samples every --every (default 10) seconds; the trend (least-squares slope, MB/min) is
 * taken after --warmup (default 30) seconds. --bundle runs dist/starling.cjs on the executable's Node instead,
 * with --flags (default: image/sea-flags.json's), to compare flags. --no-web turns the web view off (it is on by
 * default, on a port of its own here), to see what it holds under this load.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuSecondsOf, embeddedNode, memoryOf, unitEnvironment } from './lib/proc.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const { values: opts } = parseArgs({ options: {
  minutes: { type: 'string' }, every: { type: 'string' }, warmup: { type: 'string' }, bundle: { type: 'boolean' }, flags: { type: 'string' }, 'no-web': { type: 'boolean' }, json: { type: 'boolean' },
} });
const MINUTES = Number(opts.minutes ?? 3);
const EVERY = Number(opts.every ?? 10);
const WARMUP = Number(opts.warmup ?? 30);
const seaFlags = (JSON.parse(readFileSync(join(root, 'image/sea-flags.json'), 'utf8')) as { execArgv: string[] }).execArgv;
const flags = opts.flags !== undefined ? opts.flags.split(/\s+/).filter(Boolean) : seaFlags;
const exe = join(root, 'dist/starling-linux-x64');
let cmd: string[];
if (opts.bundle) {
  cmd = [embeddedNode(root), ...flags, join(root, 'dist/starling.cjs')];
} else {
  if (!existsSync(exe)) throw new Error(`${exe} missing: run npm run image`);
  cmd = [exe];
}

const work = mkdtempSync(join(tmpdir(), 'starling-soak-'));
const mqttPort = 32000 + (process.pid % 1000);
const sensors = Array.from({ length: 50 }, (_, i) => `  - { platform: sim, name: s${i}, waveform: random_walk, min: 0, max: 100, interval: 10ms, seed: ${i + 1} }`);
writeFileSync(join(work, 'soak.yaml'), `simulate: true
node: { name: soak, iface: lo, port: ${33000 + (process.pid % 1000)} }
telemetry: { prefix: soak/ }
sensors:
${sensors.join('\n')}
mqtt: { embedded: true, embedded_listen: "127.0.0.1:${mqttPort}", spool: "${join(work, 'spool')}", discovery: false }
web: { listen: "${opts['no-web'] ? 'off' : `127.0.0.1:${34000 + (process.pid % 1000)}`}" }
`);

const proc = spawn(cmd[0]!, [...cmd.slice(1), 'run', '--config', join(work, 'soak.yaml')], {
  // As the .deb's unit runs it (image/deb/starling.service: MALLOC_ARENA_MAX=2).
  stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, STARLING_NATIVE_DIR: join(work, 'native'), ...unitEnvironment(root) },
});
let errors = 0;
createInterface({ input: proc.stdout! }).on('line', (l) => {
  if (!l.includes('"level":"error"')) return;
  errors++;
  if (errors <= 3) process.stderr.write(`soak: the device logged an error: ${l}\n`);
});
const mb = (kb: number) => Math.round((kb / 1024) * 10) / 10;
const read = () => {
  const m = memoryOf(proc.pid!);
  return { rss: m.rss / 1024, anon: m.anon / 1024, cpu: cpuSecondsOf(proc.pid!) };
};

const rows: { t: number; rssMB: number; anonMB: number; cpuPct: number }[] = [];
await new Promise((r) => setTimeout(r, 2000));
let last = read();
const t0 = performance.now();
for (let t = EVERY; t <= MINUTES * 60; t += EVERY) {
  await new Promise((r) => setTimeout(r, t0 + t * 1000 - performance.now()));
  if (proc.exitCode !== null) throw new Error(`the device exited (${proc.exitCode}) during the soak`);
  const now = read();
  rows.push({ t, rssMB: mb(now.rss), anonMB: mb(now.anon), cpuPct: Math.round(((now.cpu - last.cpu) / EVERY) * 100) });
  last = now;
  if (!opts.json) process.stderr.write(`soak: ${t} s  RSS ${mb(now.rss)} MB  anon ${mb(now.anon)} MB\n`);
}
proc.kill('SIGTERM');
await new Promise((r) => proc.once('exit', r));
rmSync(work, { recursive: true, force: true });

/** Least-squares slope of y over t, per minute. */
function slope(pts: { t: number; y: number }[]): number {
  const n = pts.length;
  const mt = pts.reduce((s, p) => s + p.t, 0) / n;
  const my = pts.reduce((s, p) => s + p.y, 0) / n;
  const num = pts.reduce((s, p) => s + (p.t - mt) * (p.y - my), 0);
  const den = pts.reduce((s, p) => s + (p.t - mt) ** 2, 0);
  return den === 0 ? 0 : (num / den) * 60;
}
const steady = rows.filter((r) => r.t >= WARMUP);
const summary = {
  form: (opts.bundle ? `bundle on Node 24 ${flags.join(' ') || '(no flags)'}` : `executable (execArgv ${seaFlags.join(' ') || 'none'})`) + (opts['no-web'] ? ', no web view' : ''),
  minutes: MINUTES, samplesPerSecond: 5000,
  rssFirstMB: steady[0]?.rssMB, rssLastMB: steady.at(-1)?.rssMB, rssMaxMB: Math.max(...steady.map((r) => r.rssMB)),
  anonMaxMB: Math.max(...steady.map((r) => r.anonMB)),
  rssSlopeMBPerMin: Math.round(slope(steady.map((r) => ({ t: r.t, y: r.rssMB }))) * 100) / 100,
  anonSlopeMBPerMin: Math.round(slope(steady.map((r) => ({ t: r.t, y: r.anonMB }))) * 100) / 100,
  cpuPctMean: Math.round(steady.reduce((s, r) => s + r.cpuPct, 0) / Math.max(1, steady.length)),
  errorLogLines: errors,
};
if (opts.json) console.log(JSON.stringify({ summary, rows }));
else {
  console.table(rows);
  console.table([summary]);
}
