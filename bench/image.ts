/**
 * The shipped forms side by side, in one run: sizes; start-to-ready and idle RSS of a full device (`starling run`
 * with simulated sensors, its mesh node and telemetry publisher) as the bundle, as the single executable and as
 * tsc's unbundled output, against bare Node; then V8/Node flags on the executable's Node: idle RSS, RSS and CPU
 * under load (5,000 samples/s), and start-to-ready — the measurements image/sea-flags.json is chosen from.
 *
 *   node dist/bench/image.mjs [--runs N] [--idle SEC] [--load SEC] [--only forms|flags] [--json]
 *
 * Needs `npm run image` (executables, .debs) and image/fetch-node.sh x64 (the Node 24 the executable embeds).
 * start-to-ready: spawn → the device's "started" log line (node up, sensors opened, publisher bound), median of
 * --runs (5). Idle RSS: VmRSS (and its private part) averaged over one trim period (10 s, sampled every 0.5 s)
 * from --idle (5) seconds after the start, with sensors sampled every 10 s; median of the runs. One sample would
 * land anywhere on the sawtooth `starling run`'s trim makes (glibc's free pages go back every 10 s: about 2 MB
 * between trims at idle); bare Node is measured the same way. The executable is measured twice: as started
 * here, and with the environment the .deb's unit gives it (MALLOC_ARENA_MAX=2), beside bare Node with the same.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { cpuSecondsOf, embeddedNode, memoryOf, unitEnvironment } from './lib/proc.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const { values: opts } = parseArgs({ options: { runs: { type: 'string' }, idle: { type: 'string' }, load: { type: 'string' }, only: { type: 'string' }, json: { type: 'boolean' } } });
const ONLY = opts.only; // 'forms' or 'flags': one table only
const RUNS = Number(opts.runs ?? 5);
const IDLE_S = Number(opts.idle ?? 5);
const LOAD_S = Number(opts.load ?? 10);
const work = mkdtempSync(join(tmpdir(), 'starling-bench-image-'));
let port = 31000 + (process.pid % 1000) * 4;

const node20 = process.execPath;
const node24 = embeddedNode(root);
const bundle = join(root, 'dist/starling.cjs');
const exe = join(root, 'dist/starling-linux-x64');
for (const f of [bundle, exe]) if (!existsSync(f)) throw new Error(`${f} missing: run npm run build && npm run image`);

const mb = (bytes: number) => Math.round((bytes / 1048576) * 10) / 10;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rssOf = (pid: number) => memoryOf(pid).rss;
const anonOf = (pid: number) => memoryOf(pid).anon;
/** RSS and anonymous memory averaged over one trim period (runtime/memory.ts's 10 s), after the idle wait. */
async function idleMemory(pid: number): Promise<{ rss: number; anon: number }> {
  await sleep(IDLE_S * 1000);
  const samples: { rss: number; anon: number }[] = [];
  for (let i = 0; i < 20; i++) {
    samples.push(memoryOf(pid));
    await sleep(500);
  }
  const mean = (k: 'rss' | 'anon') => samples.reduce((a, m) => a + m[k], 0) / samples.length;
  return { rss: mean('rss'), anon: mean('anon') };
}

/** A device config: `sensors` simulated sensors read every `interval`, on loopback. */
function config(name: string, sensors: number, interval: string): string {
  const file = join(work, `${name}.yaml`);
  const list = Array.from({ length: sensors }, (_, i) => `  - { platform: sim, name: s${i}, waveform: sine, min: 0, max: 100, period: 30s, interval: ${interval}, seed: ${i + 1} }`);
  writeFileSync(file, `simulate: true\nnode: { name: ${name}, iface: lo, port: ${port++} }\ntelemetry: { prefix: ${name}/ }\nsensors:\n${list.join('\n')}\n`);
  return file;
}

interface Started { proc: ChildProcess; ms: number }

/** Spawns `cmd` and resolves when `ready(line)` says so (or at once when there is no ready test). */
function start(cmd: string[], env: NodeJS.ProcessEnv, ready?: (line: string) => boolean): Promise<Started> {
  const t0 = performance.now();
  const proc = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env }, cwd: work });
  let err = '';
  proc.stderr!.on('data', (d) => (err += String(d)));
  return new Promise((resolve, reject) => {
    if (!ready) return resolve({ proc, ms: 0 });
    const rl = createInterface({ input: proc.stdout! });
    rl.on('line', (line) => {
      if (ready(line)) resolve({ proc, ms: performance.now() - t0 });
    });
    proc.once('exit', (code) => reject(new Error(`${cmd.join(' ')} exited (${code}) before it was ready: ${err.trim()}`)));
  });
}

async function stop(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

const deviceReady = (line: string) => line.includes('"service":"device"') && line.includes('sensor(s)');

/** Time of `node -e 0` (spawn → exit), median. */
async function bareStart(nodeBin: string): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    execFileSync(nodeBin, ['-e', '0']);
    times.push(performance.now() - t0);
  }
  return median(times);
}

/** Idle RSS and anonymous memory of a Node that does nothing but keep running. */
async function bareRss(nodeBin: string, env: NodeJS.ProcessEnv = {}): Promise<{ rss: number; anon: number }> {
  const rss: number[] = [];
  const anon: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const { proc } = await start([nodeBin, '-e', 'setInterval(() => {}, 1000)'], env);
    const m = await idleMemory(proc.pid!);
    rss.push(m.rss);
    anon.push(m.anon);
    await stop(proc);
  }
  return { rss: median(rss), anon: median(anon) };
}

/**
 * Start-to-ready and idle RSS of a device run by `prefix` (medians over RUNS). The executable keeps its compiled
 * code in the native cache (app/sea-main.ts), written during the first run; `firstStart` removes it before each
 * run, so every run is a first start.
 */
async function device(prefix: string[], env: NodeJS.ProcessEnv = {}, firstStart = false): Promise<{ ms: number; rss: number; anon: number }> {
  const ms: number[] = [];
  const rss: number[] = [];
  const anon: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const cache = join(work, 'native', 'native');
    if (firstStart && existsSync(cache)) for (const f of readdirSync(cache)) if (f.startsWith('code-')) rmSync(join(cache, f));
    const s = await start([...prefix, 'run', '--config', config(`idle${i}`, 3, '10s')], { STARLING_NATIVE_DIR: join(work, 'native'), ...env }, deviceReady);
    ms.push(s.ms);
    const m = await idleMemory(s.proc.pid!);
    rss.push(m.rss);
    anon.push(m.anon);
    await stop(s.proc);
  }
  return { ms: median(ms), rss: median(rss), anon: median(anon) };
}

/** RSS and CPU of a device sampling 50 sensors every 10 ms (5,000 samples/s) for LOAD_S seconds. */
async function loaded(prefix: string[], env: NodeJS.ProcessEnv = {}): Promise<{ rssPeak: number; rssEnd: number; anonEnd: number; cpu: number }> {
  const s = await start([...prefix, 'run', '--config', config('load', 50, '10ms')], { STARLING_NATIVE_DIR: join(work, 'native'), ...env }, deviceReady);
  const c0 = cpuSecondsOf(s.proc.pid!);
  let peak = 0;
  for (let t = 0; t < LOAD_S * 4; t++) {
    await sleep(250);
    peak = Math.max(peak, rssOf(s.proc.pid!));
  }
  const cpu = (cpuSecondsOf(s.proc.pid!) - c0) / LOAD_S;
  const rssEnd = rssOf(s.proc.pid!);
  const anonEnd = anonOf(s.proc.pid!);
  await stop(s.proc);
  return { rssPeak: peak, rssEnd, anonEnd, cpu };
}

// --- sizes -------------------------------------------------------------------------------------------------
const size = (f: string) => (existsSync(f) ? statSync(f).size : NaN);
const dirSize = (d: string) => (existsSync(d) ? Number(execFileSync('du', ['-sb', d], { encoding: 'utf8' }).split('\t')[0]) : NaN);
const version = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version as string;
const sizes = {
  'bundle dist/starling.cjs': size(bundle),
  'bundle native/ (addons)': dirSize(join(root, 'dist/native')),
  'executable x64': size(exe),
  'executable arm64': size(join(root, 'dist/starling-linux-arm64')),
  'Node 24 binary alone (x64)': size(node24),
  [`.deb amd64 (starling_${version})`]: size(join(root, `dist/starling_${version}_amd64.deb`)),
  [`.deb arm64 (starling_${version})`]: size(join(root, `dist/starling_${version}_arm64.deb`)),
};

// --- unbundled tsc output ----------------------------------------------------------------------------------
const tscOut = join(root, 'dist/tsc');
rmSync(tscOut, { recursive: true, force: true });
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.json'), '--noEmit', 'false',
  '--outDir', tscOut, '--rewriteRelativeImportExtensions', '--declaration', 'false', '--sourceMap', 'false'], { stdio: 'inherit' });
const tscMain = join(tscOut, 'app/cli/main.js');

// --- forms -------------------------------------------------------------------------------------------------
const forms: { form: string; startMs: number; idleRssMB: number; idleAnonMB: number; note: string }[] = [];
const b20 = await bareStart(node20);
const b24 = await bareStart(node24);
const r20 = await bareRss(node20);
const r24 = await bareRss(node24);
// As the .deb's unit runs a device (image/deb/starling.service), bare Node measured the same way beside it.
const unitEnv = unitEnvironment(root);
const unitLabel = Object.entries(unitEnv).map(([k, v]) => `${k}=${v}`).join(' ');
const r24unit = await bareRss(node24, unitEnv);
forms.push({ form: 'node -e 0 (Node 20)', startMs: b20, idleRssMB: mb(r20.rss), idleAnonMB: mb(r20.anon), note: 'reference: bare Node, idle' });
forms.push({ form: 'node -e 0 (Node 24)', startMs: b24, idleRssMB: mb(r24.rss), idleAnonMB: mb(r24.anon), note: 'reference: the executable\'s Node' });
forms.push({ form: `node -e 0 (Node 24), unit's environment`, startMs: b24, idleRssMB: mb(r24unit.rss), idleAnonMB: mb(r24unit.anon), note: `reference: ${unitLabel}` });
const seaFlags = (JSON.parse(readFileSync(join(root, 'image/sea-flags.json'), 'utf8')) as { execArgv: string[] }).execArgv;
for (const [form, prefix, ref, refRss, firstStart, env] of ONLY === 'flags' ? [] : [
  ['bundle (Node 20)', [node20, bundle], b20, r20],
  ['bundle (Node 24)', [node24, ...seaFlags, bundle], b24, r24],
  ['executable x64 (Node 24)', [exe], b24, r24],
  ['executable x64, first start (no code cached)', [exe], b24, r24, true],
  [`executable x64, unit's environment`, [exe], b24, r24unit, false, unitEnv],
  ['tsc output, unbundled (Node 20)', [node20, tscMain], b20, r20],
] as [string, string[], number, { rss: number; anon: number }, boolean?, NodeJS.ProcessEnv?][]) {
  const d = await device(prefix, env ?? {}, firstStart);
  forms.push({ form, startMs: d.ms, idleRssMB: mb(d.rss), idleAnonMB: mb(d.anon),
    note: `${(d.ms / ref).toFixed(2)}× its node -e 0; RSS +${mb(d.rss - refRss.rss)} MB (anon +${mb(d.anon - refRss.anon)})` });
}

// --- flags -------------------------------------------------------------------------------------------------
const FLAGS: [string, string[], NodeJS.ProcessEnv][] = [
  ['(none)', [], {}],
  ['--max-semi-space-size=1', ['--max-semi-space-size=1'], {}],
  ['--optimize-for-size', ['--optimize-for-size'], {}],
  ['--no-opt', ['--no-opt'], {}],
  ['--single-threaded-gc', ['--single-threaded-gc'], {}],
  ['--jitless', ['--jitless'], {}],
  ['MALLOC_ARENA_MAX=2 (env)', [], { MALLOC_ARENA_MAX: '2' }],
  ['image/sea-flags.json', seaFlags, {}],
];
const flags: { flags: string; startMs: number; idleRssMB: number; idleAnonMB: number; loadRssPeakMB: number; loadRssEndMB: number; loadAnonEndMB: number; loadCpuPct: number }[] = [];
for (const [label, f, env] of ONLY === 'forms' ? [] : FLAGS) {
  const d = await device([node24, ...f, bundle], env);
  const l = await loaded([node24, ...f, bundle], env);
  flags.push({ flags: label, startMs: d.ms, idleRssMB: mb(d.rss), idleAnonMB: mb(d.anon), loadRssPeakMB: mb(l.rssPeak), loadRssEndMB: mb(l.rssEnd), loadAnonEndMB: mb(l.anonEnd), loadCpuPct: Math.round(l.cpu * 100) });
}
rmSync(work, { recursive: true, force: true });

if (opts.json) {
  console.log(JSON.stringify({ sizes, forms, flags }));
} else {
  console.log('\nSizes');
  console.table(Object.fromEntries(Object.entries(sizes).map(([k, v]) => [k, { MB: mb(v), bytes: v }])));
  console.log(`Start-to-ready and idle RSS of a device (3 simulated sensors; medians of ${RUNS}; idle: the mean over 10 s from ${IDLE_S} s)`);
  console.table(forms.map((f) => ({ ...f, startMs: Math.round(f.startMs) })));
  console.log(`V8/Node flags on Node 24 (the executable's), bundle run by it; load: 50 sensors every 10 ms for ${LOAD_S} s`);
  console.table(flags.map((f) => ({ ...f, startMs: Math.round(f.startMs) })));
}
