/**
 * Issue 18's aims in one table, from one run: each with the figure measured now, its comparison and the ratio.
 *   - ZRE (bench/zre.ts; two namespaces over veth as root, else loopback), its nodes run with the executable's
 *     V8 flags (image/sea-flags.json): discovery and one-way whisper at 16 B and 1 KiB against Zyre C 2.0.1's
 *     figures from issue 18 (no Zyre C can be built here) and against the libzmq floor measured in this run;
 *     a receiver's RSS after a 200,000-message flood against the same node idle;
 *   - the executable's start-to-ready and idle private memory (bench/image.ts --only forms) against its own
 *     Node's `node -e 0`;
 *   - the whole-pipeline soak (bench/soak.ts, 5,000 samples/s) for --soak-minutes (default 2; the aim is stated
 *     over 30: `npm run bench:soak -- --minutes 30`).
 * The children's progress goes to stderr; the table, last, to stdout.
 *
 *   node dist/bench/aims.mjs [--soak-minutes M] [--json]      (needs npm run image: the executable)
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ZYRE_C } from './lib/c.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const { values: opts } = parseArgs({ options: { 'soak-minutes': { type: 'string' }, json: { type: 'boolean' } } });
const soakMinutes = opts['soak-minutes'] ?? '2';
const seaFlags = (JSON.parse(readFileSync(join(root, 'image/sea-flags.json'), 'utf8')) as { execArgv: string[] }).execArgv;
const asRoot = process.getuid?.() === 0;

/** Runs a bench with --json and returns its last line, parsed (its other output goes to stderr). */
function bench<T>(name: string, args: string[], env: NodeJS.ProcessEnv = {}): T {
  process.stderr.write(`aims: running ${name} ${args.join(' ')}\n`);
  const out = execFileSync(process.execPath, [join(root, 'dist/bench', `${name}.mjs`), ...args, '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env }, maxBuffer: 64 << 20 });
  return JSON.parse(out.trim().split('\n').at(-1)!) as T;
}

interface Zre { transport: string; discoveryMs: number; discoveryWarmMs: number; whisper16PerSec: number; whisper1kPerSec: number; idleRssBytes: number; receiverRss16: number; receiverRss1k: number; floor16PerSec: number | null; floor1kPerSec: number | null; lost: { small: number; large: number } }
interface Forms { forms: { form: string; startMs: number; idleAnonMB: number; idleRssMB: number }[] }
interface Soak { summary: { rssFirstMB: number; rssLastMB: number; rssMaxMB: number; anonMaxMB: number; rssSlopeMBPerMin: number; cpuPctMean: number } }

const zre = bench<Zre>('zre', asRoot ? ['--netns'] : [], { BENCH_FLAGS: seaFlags.join(' ') });
const { forms } = bench<Forms>('image', ['--only', 'forms']);
const soak = bench<Soak>('soak', ['--minutes', soakMinutes]).summary;

const exe = forms.find((f) => f.form === 'executable x64 (Node 24)')!;
const exeUnit = forms.find((f) => f.form === "executable x64, unit's environment")!;
const bareUnit = forms.find((f) => f.form === "node -e 0 (Node 24), unit's environment")!;
const exeFirst = forms.find((f) => f.form.startsWith('executable x64, first start'));
const bare = forms.find((f) => f.form === 'node -e 0 (Node 24)')!;
const k = (perSec: number) => `${Math.round(perSec / 1000)}k msg/s`;
const x = (r: number) => `${r.toFixed(2)} ×`;
const floor = (mine: number, f: number | null) => (f ? `; libzmq floor now ${k(f)} (${x(mine / f)})` : '');
const receiverRss = Math.max(zre.receiverRss16, zre.receiverRss1k);
const rows: { aim: string; measured: string; comparison: string; ratio: string; met: boolean }[] = [
  { aim: 'whisper 16 B one way ≥ 1.5 × Zyre C', measured: k(zre.whisper16PerSec), comparison: `Zyre C ${k(ZYRE_C.whisper16PerSec)}${floor(zre.whisper16PerSec, zre.floor16PerSec)}`, ratio: x(zre.whisper16PerSec / ZYRE_C.whisper16PerSec), met: zre.whisper16PerSec / ZYRE_C.whisper16PerSec >= 1.5 },
  { aim: 'whisper 1 KiB one way ≥ 1.2 × Zyre C', measured: k(zre.whisper1kPerSec), comparison: `Zyre C ${k(ZYRE_C.whisper1kPerSec)}${floor(zre.whisper1kPerSec, zre.floor1kPerSec)}`, ratio: x(zre.whisper1kPerSec / ZYRE_C.whisper1kPerSec), met: zre.whisper1kPerSec / ZYRE_C.whisper1kPerSec >= 1.2 },
  { aim: 'discovery ≈ Zyre C (2nd node start → ENTER on both; met within 1.25 ×)', measured: `${zre.discoveryMs.toFixed(1)} ms (warm process ${zre.discoveryWarmMs.toFixed(1)} ms)`, comparison: `Zyre C ${ZYRE_C.discoveryMs} ms`, ratio: x(zre.discoveryMs / ZYRE_C.discoveryMs), met: zre.discoveryMs <= ZYRE_C.discoveryMs * 1.25 },
  { aim: 'receiver under a whisper flood < 2 × its idle RSS', measured: `${(receiverRss / 1e6).toFixed(1)} MB`, comparison: `idle ${(zre.idleRssBytes / 1e6).toFixed(1)} MB`, ratio: x(receiverRss / zre.idleRssBytes), met: receiverRss < 2 * zre.idleRssBytes },
  { aim: `pipeline soak at 5,000 samples/s < 100 MB RSS, no upward trend (${soakMinutes} min here; the aim is 30)`, measured: `max ${soak.rssMaxMB} MB (private ${soak.anonMaxMB} MB), trend ${soak.rssSlopeMBPerMin >= 0 ? '+' : ''}${soak.rssSlopeMBPerMin} MB/min`, comparison: '100 MB', ratio: x(soak.rssMaxMB / 100), met: soak.rssMaxMB < 100 && soak.rssSlopeMBPerMin <= 0.1 },
  // As a board runs it: under the .deb's unit (MALLOC_ARENA_MAX=2), bare Node measured the same way; the
  // figure started without that environment is shown beside it.
  { aim: 'idle private memory ≤ bare Node + 8 MB (as the unit runs it)', measured: `${exeUnit.idleAnonMB} MB anon (started without the unit's environment: ${exe.idleAnonMB} MB, +${(exe.idleAnonMB - bare.idleAnonMB).toFixed(1)} MB)`, comparison: `node -e 0 (Node 24) ${bareUnit.idleAnonMB} MB`, ratio: `+${(exeUnit.idleAnonMB - bareUnit.idleAnonMB).toFixed(1)} MB`, met: exeUnit.idleAnonMB - bareUnit.idleAnonMB <= 8 },
  { aim: 'start-to-ready ≤ 1.5 × node -e 0', measured: `${Math.round(exe.startMs)} ms${exeFirst ? ` (a first start, before its code is cached: ${Math.round(exeFirst.startMs)} ms)` : ''}`, comparison: `node -e 0 (Node 24) ${Math.round(bare.startMs)} ms`, ratio: x(exe.startMs / bare.startMs), met: exe.startMs / bare.startMs <= 1.5 },
];
if (opts.json) console.log(JSON.stringify({ zre, forms, soak, rows }));
else {
  console.log(`Issue 18's aims — ZRE over ${zre.transport} with ${seaFlags.join(' ')} (lost: ${zre.lost.small} + ${zre.lost.large}); the executable on this machine`);
  console.log('| aim | measured (this run) | comparison | ratio | met |\n|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.aim} | ${r.measured} | ${r.comparison} | ${r.ratio} | ${r.met ? 'yes' : 'no'} |`);
}
