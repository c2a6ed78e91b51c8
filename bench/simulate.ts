/**
 * `starling simulate` at several sizes, one after another on this machine, printed as one table (or --json):
 * time to a full mesh, false EXITs, a killed process's nodes gone everywhere, samples lost, and per node CPU,
 * RSS beyond its process's base (measured in the same run, before its nodes start), link bytes and the event
 * loop's delay. Needs root (network namespaces).
 *
 *   node dist/bench/simulate.mjs [--sizes 50,100,200] [--minutes M] [--loss P%] [--delay MS] [--expire SEC] [--json]
 *
 * Loss 2 % and delay 20 ms by default (netem, or the NFQUEUE helper where the kernel has no netem).
 * The issue's aims beside each: a full mesh of 200 within 10 s, no false EXIT over 10 minutes at 2 % loss and 20 ms delay,
 * under 10 MB per node beyond the process's base.
 *
 * Each size is measured twice, one after the other in the same network: Starling, then its floor (`simulate
 * --floor`: bare ZeroMQ sockets making the same links, a ROUTER per node and a DEALER to every other, one
 * HELLO-sized message each way, no discovery). The floor's time to a full mesh and RSS per node are what
 * libzmq and the network cost alone; Starling's are printed as ratios to them.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { sizes: { type: 'string' }, minutes: { type: 'string' }, loss: { type: 'string' }, delay: { type: 'string' }, expire: { type: 'string' }, json: { type: 'boolean' } } });
const sizes = (values.sizes ?? '50,100,200').split(',').map(Number);
const minutes = values.minutes ?? '1';
const loss = values.loss ?? '2%';
const delay = values.delay ?? '20';
const expire = values.expire ?? '30';
const cli = fileURLToPath(new URL('../starling.cjs', import.meta.url));

/** One `starling simulate` run's JSON report, or an error row. */
function simulate(n: number, extra: string[]): Record<string, unknown> {
  const args = [cli, 'simulate', '--nodes', String(n), '--minutes', minutes, '--loss', loss, '--delay', delay, '--expire', expire, ...extra, '--json'];
  process.stderr.write(`bench/simulate: starling ${args.slice(1).join(' ')}\n`);
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: (Number(minutes) * 60 + 600) * 1000 });
  if (r.status !== 0) return { nodes: n, error: `exit ${r.status}` };
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
}

const rows: Record<string, unknown>[] = [];
for (const n of sizes) rows.push({ ...simulate(n, []), floorRun: simulate(n, ['--floor']) });

if (values.json) process.stdout.write(JSON.stringify(rows) + '\n');
else {
  const f = (v: unknown, d = 1) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(d) : '-');
  const table: string[][] = [['nodes', 'procs', 'full mesh s (× floor)', 'floor s', 'EXITs (false)', 'killed: gone everywhere s', 'samples published / lost', 'CPU %/node', 'RSS MB/node (× floor)', 'floor RSS MB/node', 'hub RSS MB', 'loop p99 ms', 'link B/s/node', 'ZRE msg/s/node']];
  for (const r of rows) {
    if (r.error) {
      table.push([String(r.nodes), String(r.error)]);
      continue;
    }
    const kill = r.kill as { goneEverywhereMs?: number; notSeen: number } | null;
    const rss = r.rssPerNodeMB as { mean: number };
    const traffic = r.traffic as { linkBytesPerNodeS: number; zreMessagesPerNodeS: number };
    const fl = r.floorRun as Record<string, unknown>;
    const flMesh = typeof fl.fullMeshMs === 'number' ? fl.fullMeshMs : NaN;
    const flRss = (fl.rssPerNodeMB as { mean: number } | undefined)?.mean ?? NaN;
    const ratio = (a: number, b: number) => (Number.isFinite(a / b) ? ` (${(a / b).toFixed(2)} ×)` : '');
    table.push([
      String(r.nodes), String(r.processes), r.fullMeshMs === null ? `not reached (${r.links}/${r.fullLinks} links)` : f(Number(r.fullMeshMs) / 1000, 2) + ratio(Number(r.fullMeshMs), flMesh),
      fl.error ? String(fl.error) : fl.fullMeshMs === null ? `not reached (${fl.links}/${fl.fullLinks})` : f(flMesh / 1000, 2), `${r.exits} (${r.falseExits})`,
      kill ? (kill.goneEverywhereMs === undefined ? `${kill.notSeen} missing` : `${f(kill.goneEverywhereMs / 1000, 2)} (expiry ${Number(r.expiredMs) / 1000})`) : '-',
      `${r.samplesPublished} / ${r.samplesLost}`, f(r.cpuPerNodePct, 2), f(rss.mean, 1) + ratio(rss.mean, flRss), f(flRss, 1), f(r.hubRssMB, 0),
      f((r.loopDelayMs as { p99: number }).p99, 1), f(traffic.linkBytesPerNodeS, 0), f(traffic.zreMessagesPerNodeS, 1),
    ]);
  }
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => (row[i] ?? '').length)));
  for (const row of table) process.stdout.write(row.map((c, i) => c.padEnd(widths[i]!)).join('  ') + '\n');
  const by = rows.find((r) => r.delayBy)?.delayBy;
  process.stdout.write(`loss ${loss}, delay ${delay} ms${by ? ` (${String(by)})` : ''}, ${minutes} min each, expiry ${expire} s; aims: full mesh of 200 within 10 s, 0 false EXITs, RSS under 10 MB/node beyond the base (base ${f(rows.find((r) => r.rssBaseMB)?.rssBaseMB, 0)} MB); floor: bare ZeroMQ making the same links in the same network\n`);
}
