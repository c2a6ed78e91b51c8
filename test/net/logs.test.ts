// Logs across the mesh: four `starling run` nodes in network namespaces on one segment; three print a line
// every 100 ms from a supervised service (`ticker`), each of its log ring. On the first, `starling logs --mesh
// --follow --json` (over its private system bus) must show lines from all three, and for the one whose link
// is taken down past its expiry and brought back: a marked gap, then its lines again. Needs root.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, rootTests, requireRootAndBuild, Segment, startSystemBus } from './netns.ts';
import { until } from '../helpers.ts';

interface Line { node: string; service: string; level: string; msg: string; seq: number; ts: number; gap?: number }

describe.runIf(rootTests('the mesh logs test'))('starling logs --mesh', () => {
  const seg = new Segment('10.233.0');
  const dir = mkdtempSync(join(tmpdir(), 'starling-meshlogs-'));
  const address = `unix:path=${dir}/bus`;
  const env = { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: address };
  const procs: ChildProcess[] = [];
  let daemon = 0;
  const names = ['watch', 'alpha', 'bravo', 'charlie'];

  beforeAll(async () => {
    requireRootAndBuild();
    chmodSync(dir, 0o755);
    seg.create(4);
    daemon = startSystemBus(dir, address);
    for (const [i, name] of names.entries()) {
      const ticker = i === 0 ? [] : ['services:', `  - { name: ticker, command: sh, args: ["-c", "n=0; while true; do n=$((n+1)); echo tick $n; sleep 0.1; done"], restart: always }`];
      writeFileSync(join(dir, `${name}.yaml`), [
        'simulate: true',
        // A short expiry: the link drop below outlasts it, so the peer leaves and comes back.
        `node: { name: ${name}, iface: eth0, port: 47700, evasive: 1s, expired: 3s }`,
        'security: { mode: none }',
        `telemetry: { prefix: ${name}/ }`,
        'web: { listen: "off" }',
        `files: { inbox: ${join(dir, `inbox-${name}`)} }`,
        ...ticker,
      ].join('\n'));
      // Only the watching node owns the bus name; the others run without D-Bus control (logged, not fatal).
      const p = spawn('ip', ['netns', 'exec', seg.hosts[i]!, process.execPath, CLI, 'run', '--config', join(dir, `${name}.yaml`)], {
        env: i === 0 ? env : { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent' }, stdio: 'ignore',
      });
      procs.push(p);
    }
  }, 30_000);

  afterAll(async () => {
    for (const p of procs) p.kill('SIGTERM');
    await Promise.all(procs.map((p) => (p.exitCode !== null ? null : new Promise((r) => p.once('exit', r)))));
    if (daemon) process.kill(daemon, 'SIGTERM');
    seg.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('shows lines from three other nodes, and a marked gap for one whose link dropped, then its lines again', async () => {
    const lines: Line[] = [];
    // The watching node's supervisor may take a moment to be on the bus.
    for (const end = Date.now() + 20_000; spawnSync(process.execPath, [CLI, 'status', '--json'], { env, stdio: 'ignore', timeout: 10_000 }).status !== 0;) {
      if (Date.now() > end) throw new Error('the watching node never came on its bus');
      await new Promise((r) => setTimeout(r, 300));
    }
    const follower = spawn(process.execPath, [CLI, 'logs', '--mesh', '--follow', '--json', '-n', '1'], { env, stdio: ['ignore', 'pipe', 'ignore'] });
    createInterface({ input: follower.stdout! }).on('line', (l) => lines.push(JSON.parse(l) as Line));
    procs.push(follower);
    const ticks = (node: string) => lines.filter((l) => l.node === node && l.service === 'ticker' && /^tick \d+$/.test(l.msg));
    await until(() => ['alpha', 'bravo', 'charlie'].every((n) => ticks(n).length >= 10), 30_000, 'ten lines of each of the three');

    // bravo's link goes down past its expiry (3 s) and comes back.
    const before = ticks('bravo').length;
    seg.link(3, 'down');
    await new Promise((r) => setTimeout(r, 6000));
    seg.link(3, 'up');
    await until(() => lines.some((l) => l.node === 'bravo' && l.gap !== undefined) && ticks('bravo').length > before + 10, 30_000, 'a gap of bravo, then its lines again');
    const gapAt = lines.findIndex((l) => l.node === 'bravo' && l.gap !== undefined);
    const gap = lines[gapAt]!;
    // About 6 s of lines at 10 a second (and the supervisor's own lines about the link) were not seen.
    expect(gap.gap!).toBeGreaterThan(20);
    expect(lines.slice(gapAt + 1).some((l) => l.node === 'bravo' && l.service === 'ticker')).toBe(true);
    // The others went on meanwhile, with no gap.
    expect(lines.some((l) => l.node !== 'bravo' && l.gap !== undefined)).toBe(false);
    // Each node's sequence only rises (merged by arrival, each node in its order).
    for (const n of ['alpha', 'bravo', 'charlie']) {
      const seqs = lines.filter((l) => l.node === n && l.gap === undefined).map((l) => l.seq);
      for (let i = 1; i < seqs.length; i++) expect(seqs[i]!).toBeGreaterThan(seqs[i - 1]!);
    }
    follower.kill('SIGTERM');
  }, 120_000);

  it('--node and --level pick lines; without --follow it prints the merged tail by time', async () => {
    const run = (...args: string[]) => new Promise<string>((resolve) => {
      const p = spawn(process.execPath, [CLI, 'logs', '--mesh', ...args], { env, stdio: ['ignore', 'pipe', 'ignore'] });
      let out = '';
      p.stdout!.on('data', (d) => (out += String(d)));
      p.on('exit', () => resolve(out));
    });
    const tail = (await run('--json', '-n', '200')).trim().split('\n').map((l) => JSON.parse(l) as Line);
    expect(tail.length).toBe(200);
    for (let i = 1; i < tail.length; i++) expect(tail[i]!.ts).toBeGreaterThanOrEqual(tail[i - 1]!.ts);
    const alpha = (await run('--json', '--node', 'alpha', '-n', '50')).trim().split('\n').map((l) => JSON.parse(l) as Line);
    expect(alpha.length).toBeGreaterThan(0);
    expect(alpha.every((l) => l.node === 'alpha')).toBe(true);
    const warn = (await run('--json', '--level', 'warn', '-n', '5000')).trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Line);
    expect(warn.every((l) => l.gap !== undefined || l.level === 'warn' || l.level === 'error')).toBe(true);
    const text = await run('-n', '5');
    expect(text).toMatch(/^\d{4}-\d\d-\d\dT\S+Z (info|warn|error|debug|-----) +\S+ /m);
  }, 30_000);
});
