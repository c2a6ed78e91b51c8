// 100 MB sent to three receivers at once over veth, each its own host: memory stays flat on the receivers and
// the sender's upload cap holds. Needs root (network namespaces); in CI it may not be skipped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, openSync, readFileSync, rmSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, Segment, CLI, rootTests, requireRootAndBuild } from './netns.ts';
import { killProcessesWith } from '../helpers.ts';

const runHere = rootTests('the file transfer test');
/** kB of a /proc/PID/status field: VmRSS (all resident), RssAnon (private memory: what a transfer could pile up). */
const statusKb = (pid: number, field: 'VmRSS' | 'RssAnon'): number => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
const sha = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

describe.runIf(runHere)('a large file to three receivers at once', () => {
  const seg = new Segment('10.234.0');
  const dir = mkdtempSync(join(tmpdir(), 'starling-files-net-'));
  const agents: Agent[] = [];

  beforeAll(() => {
    requireRootAndBuild();
    seg.create(4);
  });
  afterAll(async () => {
    for (const a of agents) a.kill('SIGKILL');
    killProcessesWith(dir);
    seg.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('each receiver grows by less than 10 MB RSS; at most two are served at once (--max-uploads 2), the third waits its turn', async () => {
    const file = join(dir, 'big.bin');
    const fd = openSync(file, 'w');
    for (let i = 0; i < 100; i++) writeSync(fd, randomBytes(1024 * 1024));
    closeSync(fd);
    const receivers = [2, 3, 4].map((h) => {
      // As the packaged unit runs it (Environment=MALLOC_ARENA_MAX=2: glibc's per-thread arenas otherwise keep
      // freed chunk memory of libzmq's I/O thread).
      const a = new Agent(`r${h}`, seg.hosts[h - 1]!, ['env', 'MALLOC_ARENA_MAX=2', process.execPath, CLI], ['--dir', join(dir, `inbox${h}`), '--quota-mb', '200', '--join', 'inbox', '--name', `r${h}`, '--json'], ['receive']);
      agents.push(a);
      return a;
    });
    await Promise.all(receivers.map((r) => r.waitFor((e) => e.event === 'STARTED', 15_000, 'STARTED')));
    await new Promise((r) => setTimeout(r, 1000));
    const pids = receivers.map((r) => r.proc.pid!);
    const before = pids.map((p) => statusKb(p, 'VmRSS'));
    const anonBefore = pids.map((p) => statusKb(p, 'RssAnon'));
    const peak = [...before];
    const anonPeak = [...anonBefore];
    const sampler = setInterval(() => pids.forEach((p, i) => {
      peak[i] = Math.max(peak[i]!, statusKb(p, 'VmRSS'));
      anonPeak[i] = Math.max(anonPeak[i]!, statusKb(p, 'RssAnon'));
    }), 50);
    const t0 = Date.now();
    const sender = new Agent('send', seg.hosts[0]!, [process.execPath, CLI], [file, 'inbox', '--max-uploads', '2', '--json', '--wait', '10'], ['send']);
    agents.push(sender);
    const code = await sender.exited();
    clearInterval(sampler);
    const seconds = (Date.now() - t0) / 1000;
    expect(code, sender.stderr).toBe(0);
    const results = sender.events.filter((e) => 'peer' in e);
    expect(results.map((r) => r.peer).sort()).toEqual(['r2', 'r3', 'r4']);
    expect(results.every((r) => r.ok === true)).toBe(true);
    const want = sha(file);
    for (const h of [2, 3, 4]) expect(sha(join(dir, `inbox${h}`, 'big.bin'))).toBe(want);
    const server = sender.events.find((e) => 'server' in e)!.server as { uploadsPeak: number; uploadsBusy: number; bytesServed: number };
    expect(server.uploadsPeak).toBe(2);
    expect(server.uploadsBusy).toBeGreaterThan(0);
    expect(server.bytesServed).toBe(3 * 100 * 1024 * 1024);
    const growth = peak.map((p, i) => (p - before[i]!) / 1024);
    const anon = anonPeak.map((p, i) => (p - anonBefore[i]!) / 1024);
    console.log(`100 MiB to 3 receivers in ${seconds.toFixed(1)} s (upload cap 2): receiver RSS ${before.map((b) => (b / 1024).toFixed(1)).join(' / ')} MB before; peak growth ${growth.map((g) => g.toFixed(1)).join(' / ')} MB RSS, of it private (RssAnon) ${anon.map((g) => g.toFixed(1)).join(' / ')} MB (the rest: pages of the node binary's code touched once); sender: ${JSON.stringify(server)}`);
    // Private memory is what would pile up with the file's size; the file-backed rest is shared, clean code.
    for (const g of anon) expect(g).toBeLessThan(10);
    for (const g of growth) expect(g).toBeLessThan(16);
  }, 180_000);
});
