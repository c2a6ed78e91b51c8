// Updates over the mesh on five hosts: four devices (`starling run`, each restarted by a loop standing in for
// systemd's Restart=) in group `fleet`, and a pusher. A release reaches every device, resumes across a 10 s link
// drop, and commits; a release that exits at start and one that never becomes healthy are rolled back on every
// device. Needs root (network namespaces, tc); in CI it may not be skipped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, Segment, CLI, ROOT_DIR, rootTests, requireRootAndBuild } from './netns.ts';
import { killProcessesWith, processesWith } from '../helpers.ts';

const runHere = rootTests('the update test');
const DEVICES = 4;

describe.runIf(runHere)('updates pushed to a group of four devices', () => {
  const seg = new Segment('10.233.0');
  const dir = mkdtempSync(join(tmpdir(), 'starling-update-'));
  const agents: Agent[] = [];
  const devices: Agent[] = [];
  let publicKey = '';
  const node = process.execPath;
  const cli = (ns: string, ...args: string[]) => execFileSync('ip', ['netns', 'exec', ns, node, CLI, ...args], { encoding: 'utf8', cwd: dir });
  const rxBytes = (i: number) => Number(execFileSync('ip', ['netns', 'exec', seg.hosts[i - 1]!, 'cat', '/sys/class/net/eth0/statistics/rx_bytes'], { encoding: 'utf8' }));
  const pusher = () => seg.hosts[DEVICES]!;

  beforeAll(() => {
    requireRootAndBuild();
    seg.create(DEVICES + 1);
    publicKey = JSON.parse(cli(pusher(), 'release', 'keygen', '--dir', join(dir, 'keys'), '--json')).publicKey;
    for (let i = 1; i <= DEVICES; i++) {
      const cfg = join(dir, `d${i}.yaml`);
      writeFileSync(cfg, [
        'simulate: true',
        `node: { name: d${i}, groups: [fleet] }`,
        'security: { mode: none }',
        'sensors:',
        '  - { platform: sim, name: air, interval: 200ms }',
        `update: { keys: ["${publicKey}"], commit_after: 2s, trial_timeout: 8s, max_attempts: 2 }`,
      ].join('\n'));
      // systemd's Restart= in a loop: start again after every exit, whatever the code.
      const loop = `while :; do STARLING_RELEASES=${dir}/rel${i} ${node} ${CLI} run --config ${cfg}; echo "{\\"loop\\":\\"exited\\",\\"code\\":$?}"; sleep 0.3; done`;
      const a = new Agent(`d${i}`, seg.hosts[i - 1]!, ['bash', '-c', loop], [], []);
      agents.push(a);
      devices.push(a);
    }
  });

  afterAll(async () => {
    for (const a of agents) a.kill('SIGKILL');
    killProcessesWith(dir);
    seg.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const sign = (file: string, version: string) => {
    cli(pusher(), 'release', 'sign', file, '--key', join(dir, 'keys', 'release.key'), '--version', version);
    return `${file}.manifest.json`;
  };
  const push = (manifest: string, ...extra: string[]) => {
    const a = new Agent('push', pusher(), [node, CLI], [manifest, '--to', 'fleet', '--json', '--wait', '4', ...extra], ['update', 'push']);
    agents.push(a);
    return a;
  };
  type Row = { node: string; version: string; state: string; target?: string; progress?: number; error?: string };
  const rows = (a: Agent, name: string) => a.events.filter((e) => (e as unknown as Row).node === name) as unknown as Row[];

  it('a release reaches every device, resumes after a 10 s link drop on one (at most 1.1 × the file received), refuses a corrupted chunk and commits', async () => {
    await Promise.all(devices.map((d) => d.waitFor((e) => /^d\d on eth0/.test(String(e.msg)), 20_000, 'the device running')));
    // The release: this bundle with 12 MB more (a comment), so the transfer takes a while on a slow link.
    const file = join(dir, 'starling-0.2.0.cjs');
    writeFileSync(file, Buffer.concat([readFileSync(CLI), Buffer.from(`\n/* ${randomBytes(9 * 1024 * 1024).toString('base64')} */\n`)]));
    const size = readFileSync(file).length;
    const manifest = sign(file, '0.2.0');
    // A peer that claims to run this release (X-RELEASE) and serves it, but corrupts one chunk per fetcher:
    // the devices fetch from it and from the pusher in parallel, refuse the bad chunk and fetch it again.
    const liarFiles = new Agent('liar files', pusher(), [node, join(ROOT_DIR, 'test/net/bad-source.cjs')], [seg.address(DEVICES + 1), file], []);
    agents.push(liarFiles);
    const served = await liarFiles.waitFor((e) => e.event === 'listening', 10_000, 'the liar listening');
    const liar = new Agent('liar', pusher(), CLI, ['--name', 'liar', '--header', `X-FILES=${served.endpoint}`, '--header', `X-RELEASE=${served.sha256}`]);
    agents.push(liar);
    await Promise.all(['d1', 'd2', 'd3', 'd4'].map((n) => liar.waitFor((e) => e.event === 'ENTER' && e.name === n, 20_000, `ENTER ${n}`)));
    // Device 1's link: 12 Mbit/s (1.5 MB/s), so its transfer lasts about 8 s.
    execFileSync('ip', ['netns', 'exec', seg.hub, 'tc', 'qdisc', 'add', 'dev', 'p1', 'root', 'tbf', 'rate', '12mbit', 'burst', '32kbit', 'latency', '400ms']);
    const rx0 = rxBytes(1);
    const p = push(manifest);
    await p.waitFor((e) => (e as unknown as Row).node === 'd1' && (e as unknown as Row).state === 'fetching' && ((e as unknown as Row).progress ?? 0) >= 0.1, 60_000, 'd1 fetching, 10 %');
    seg.link(1, 'down');
    await new Promise((r) => setTimeout(r, 10_000));
    seg.link(1, 'up');
    const exit = await p.exited();
    expect(exit, `push output: ${JSON.stringify(p.events.slice(-8))} ${p.stderr}`).toBe(0);
    const rx = rxBytes(1) - rx0;
    const fetched = String(devices[0]!.events.find((e) => /^release 0\.2\.0 installed/.test(String(e.msg)))?.msg);
    console.log(`release ${size} bytes; device 1 received ${rx} bytes on eth0 across a 10 s drop (${(rx / size).toFixed(3)} × the file); ${fetched}`);
    expect(rx).toBeLessThan(1.1 * size);
    for (let i = 1; i <= DEVICES; i++) {
      const seen = rows(p, `d${i}`).map((r) => r.state);
      expect(seen[0], `d${i}: ${seen.join(' ')}`).toBe('fetching');
      expect(seen.at(-1)).toBe('committed');
      expect(rows(p, `d${i}`).at(-1)).toMatchObject({ version: '0.2.0', target: '0.2.0' });
      expect(readlinkSync(join(dir, `rel${i}`, 'current'))).toBe('0.2.0');
    }
    // Each device got one corrupted chunk from the liar, refused it and fetched it again.
    expect(liarFiles.events.filter((e) => e.event === 'corrupted').length).toBe(DEVICES);
    for (const d of devices) {
      expect(d.events.some((e) => /liar sent chunk \d+ with the wrong hash: refused, asked for again/.test(String(e.msg)))).toBe(true);
    }
    liar.kill();
    liarFiles.kill();
    // The other states on the way, as seen by the pusher's polling (a second apart: not every one is caught).
    console.log(`states seen for d1: ${rows(p, 'd1').map((r) => `${r.state}${r.progress !== undefined ? ` ${r.progress}` : ''}`).join(', ')}`);
    execFileSync('ip', ['netns', 'exec', seg.hub, 'tc', 'qdisc', 'del', 'dev', 'p1', 'root']);
  }, 180_000);

  it('a device killed mid-transfer resumes from the chunks it held when the push sends the update again', async () => {
    const file = join(dir, 'starling-0.2.1.cjs');
    writeFileSync(file, Buffer.concat([readFileSync(CLI), Buffer.from(`\n/* ${randomBytes(6 * 1024 * 1024).toString('base64')} */\n`)]));
    execFileSync('ip', ['netns', 'exec', seg.hub, 'tc', 'qdisc', 'add', 'dev', 'p1', 'root', 'tbf', 'rate', '12mbit', 'burst', '32kbit', 'latency', '400ms']);
    const p = push(sign(file, '0.2.1'));
    await p.waitFor((e) => (e as unknown as Row).node === 'd1' && (e as unknown as Row).state === 'fetching' && ((e as unknown as Row).progress ?? 0) >= 0.3, 60_000, 'd1 fetching, 30 %');
    // SIGKILL d1's supervisor (its loop starts it again, as Restart= would).
    const runs = processesWith(join(dir, 'd1.yaml')).filter((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith(process.execPath));
    expect(runs.length).toBe(1);
    process.kill(runs[0]!, 'SIGKILL');
    expect(await p.exited()).toBe(0);
    execFileSync('ip', ['netns', 'exec', seg.hub, 'tc', 'qdisc', 'del', 'dev', 'p1', 'root']);
    const installed = devices[0]!.events.filter((e) => /^release 0\.2\.1 installed/.test(String(e.msg))).map((e) => String(e.msg));
    console.log(`after SIGKILL at 30 %: ${installed.join('; ')}`);
    const m = /\((\d+) bytes fetched, (\d+) chunk\(s\) reused, (\d+) resumed/.exec(installed[0] ?? '');
    expect(m).not.toBeNull();
    expect(Number(m![3])).toBeGreaterThan(5);
    expect(Number(m![1])).toBeLessThan(0.8 * readFileSync(file).length);
    for (let i = 1; i <= DEVICES; i++) expect(rows(p, `d${i}`).at(-1)).toMatchObject({ version: '0.2.1', state: 'committed' });
  }, 180_000);

  it('a release that exits at start is rolled back on every device after its attempts, and reported as such', async () => {
    const file = join(dir, 'crash-0.3.0.cjs');
    writeFileSync(file, "process.stderr.write('release 0.3.0: exiting at start\\n'); process.exit(3);\n");
    const p = push(sign(file, '0.3.0'));
    expect(await p.exited()).toBe(1);
    for (let i = 1; i <= DEVICES; i++) {
      expect(rows(p, `d${i}`).at(-1)).toMatchObject({ version: '0.2.1', state: 'rolled-back', target: '0.3.0', error: expect.stringMatching(/^release 0\.3\.0 did not become healthy in 2 start\(s\)/) });
      expect(readlinkSync(join(dir, `rel${i}`, 'current'))).toBe('0.2.1');
      expect(devices[i - 1]!.events.filter((e) => e.loop === 'exited' && e.code === 3).length).toBe(2);
    }
  }, 120_000);

  it('a release that runs but never becomes healthy is rolled back too; update status --json shows it on every device', async () => {
    const file = join(dir, 'hang-0.4.0.cjs');
    writeFileSync(file, 'setInterval(() => {}, 1000);\n');
    const p = push(sign(file, '0.4.0'));
    expect(await p.exited()).toBe(1);
    const status = JSON.parse(cli(pusher(), 'update', 'status', '--to', 'fleet', '--json', '--wait', '3')) as Row[];
    expect(status.map((s) => s.node).sort()).toEqual(['d1', 'd2', 'd3', 'd4']);
    for (const s of status) {
      expect(s).toMatchObject({ version: '0.2.1', state: 'rolled-back', target: '0.4.0', error: expect.stringMatching(/did not become healthy in 2 start\(s\) \(last: not committed within 8 s of starting\)/) });
    }
  }, 150_000);

  it('a canary push (--percent 20: d1, by the hash of its name) stops by itself when the canary rolls back', async () => {
    const file = join(dir, 'crash-0.5.0.cjs');
    writeFileSync(file, 'process.exit(4);\n');
    const p = push(sign(file, '0.5.0'), '--percent', '20');
    expect(await p.exited()).toBe(1);
    expect(rows(p, 'd1').at(-1)).toMatchObject({ version: '0.2.1', state: 'rolled-back', target: '0.5.0' });
    expect(p.events.find((e) => e.stopped === true)).toMatchObject({ reason: 'a canary did not commit', waiting: ['d2', 'd3', 'd4'] });
    for (const i of [2, 3, 4]) {
      expect(rows(p, `d${i}`)).toEqual([]);
      expect(JSON.parse(readFileSync(join(dir, `rel${i}`, 'state.json'), 'utf8'))).toMatchObject({ version: '0.4.0', state: 'rolled-back' });
    }
  }, 120_000);
});
