// `starling simulate` as a user runs it: 50 nodes in 5 processes (10 to a namespace, each on an address of its
// own), a hub bridging to an embedded broker, a minute at 2 % loss and 20 ms delay. The full run (200 nodes, 10 minutes) is
// bench/simulate.ts. Also: killed with SIGKILL, it leaves no process (and so no namespace) behind; its --delay
// holds each packet as long as asked (netem, else the NFQUEUE helper on this kernel). Needs root.
import { describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { CLI, ROOT_DIR, requireRootAndBuild, rootTests } from './netns.ts';
import { until } from '../helpers.ts';
import { Lab } from '../../app/simulate/lab.ts';

/** PIDs of the processes a simulation makes: its workers and the bridge's holder. */
function simulationProcesses(): number[] {
  const pids: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').join(' ');
      if (cmd.includes('simulate --worker') || cmd.startsWith('sh -c read _') || cmd.includes('/nfq-delay ')) pids.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** The environment with the NFQUEUE delay helper the build made (used where the kernel has no netem). */
function nfqDelayEnv(): NodeJS.ProcessEnv {
  const helper = `${ROOT_DIR}/dist/native/nfq-delay`;
  return existsSync(helper) ? { ...process.env, STARLING_NFQ_DELAY: helper } : process.env;
}

describe.runIf(rootTests('the simulate test'))('starling simulate', () => {
  it('50 nodes at 2 % loss and 20 ms delay: a full mesh, no false EXIT, a killed process seen gone within its expiry, every sample at the broker or counted lost', () => {
    requireRootAndBuild();
    const r = spawnSync(process.execPath, [CLI, 'simulate', '--nodes', '50', '--minutes', '1', '--loss', '2%', '--delay', '20', '--expire', '10', '--json'], { encoding: 'utf8', timeout: 240_000, env: nfqDelayEnv() });
    process.stdout.write(r.stderr.split('\n').filter((l) => / s: /.test(l)).slice(-2).join('\n') + '\n');
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    console.log(`simulate, 50 nodes: ${JSON.stringify({ fullMeshMs: rep.fullMeshMs, falseExits: rep.falseExits, kill: rep.kill, samplesPublished: rep.samplesPublished, samplesLost: rep.samplesLost, samplesLostCounted: rep.samplesLostCounted, rssPerNodeMB: rep.rssPerNodeMB, cpuPerNodePct: rep.cpuPerNodePct, loopDelayMs: rep.loopDelayMs, mesh: rep.mesh })}`);
    expect(rep).toMatchObject({ nodes: 50, processes: 5, started: 51, falseExits: 0, problems: [], topicsNeverArrived: 0, delayMs: 20 });
    expect(['netem', 'nfqueue']).toContain(rep.delayBy);
    // Every node had every other and the hub (the 10 s aim is for the bench on an idle machine).
    expect(rep.fullMeshMs).toBeGreaterThan(0);
    expect(rep.fullMeshMs).toBeLessThan(40_000);
    // The killed process's 10 nodes, gone at every one of the other 41 within the expiry and the 1 s presence check.
    expect(rep.kill).toMatchObject({ nodes: 10, notSeen: 0 });
    expect(rep.kill.goneEverywhereMs).toBeLessThanOrEqual(10_000 + 1000 + 2000); // + 2 s for a loaded machine
    // Every sample published reached the broker or the hub counted it lost. TCP carries the telemetry across
    // the 2 % loss; what can go is a sample or two of a topic as the hub joins it (published after the snapshot
    // was taken, before the subscription took effect), which its subscriber counts as a gap.
    expect(rep.samplesPublished).toBeGreaterThan(50 * 40);
    expect(rep.samplesLost, JSON.stringify(rep.lostSamples)).toBeLessThanOrEqual(rep.samplesLostCounted);
    expect(rep.samplesLost).toBeLessThan(rep.samplesPublished / 100);
    expect(rep.traffic.beaconsPerNodeS).toBeGreaterThan(0.8);
  }, 300_000);

  it('--floor: bare ZeroMQ sockets make every link of the same mesh (a message from each node at every other), and it ends after its settle period with the figures, leaving nothing behind', async () => {
    requireRootAndBuild();
    const t0 = Date.now();
    const r = spawnSync(process.execPath, [CLI, 'simulate', '--nodes', '12', '--per-process', '4', '--loss', '2%', '--floor', '--json'], { encoding: 'utf8', timeout: 90_000, env: nfqDelayEnv() });
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    console.log(`simulate --floor, 12 nodes: ${JSON.stringify({ fullMeshMs: rep.fullMeshMs, rssPerNodeMB: rep.rssPerNodeMB, cpuPerNodePct: rep.cpuPerNodePct })}`);
    // 13 nodes (the hub's place too), each heard from the 12 others.
    expect(rep).toMatchObject({ floor: true, nodes: 12, processes: 3, started: 13, links: 13 * 12, fullLinks: 13 * 12, problems: [], loss: 0.02 });
    expect(rep.fullMeshMs).toBeGreaterThan(0);
    // It ran on for its settle period (12 s) after the mesh was whole, not for the default minute.
    expect(Date.now() - t0).toBeLessThan(50_000);
    // RSS beyond the base is reported (at 12 links a node it is within the trim's noise: about ±1 MB).
    expect(Number.isFinite(rep.rssPerNodeMB.mean)).toBe(true);
    expect(rep.rssPerNodeMB.max).toBeLessThan(5);
    expect(rep.cpuPerNodePct).toBeGreaterThan(0);
    await until(() => simulationProcesses().length === 0, 10_000, 'every simulation process to end');
  }, 120_000);

  it('SIGKILLed, it leaves no process behind, so its namespaces are gone', async () => {
    requireRootAndBuild();
    expect(simulationProcesses()).toEqual([]);
    const sim = spawn(process.execPath, [CLI, 'simulate', '--nodes', '4', '--per-process', '2', '--minutes', '5', '--delay', '5'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    sim.stderr!.on('data', (d) => (err += String(d)));
    await until(() => / s: /.test(err), 30_000, 'the first progress line');
    // The hub's, two of nodes, the bridge's holder; and a delay helper per host where there is no netem.
    expect(simulationProcesses().length).toBe(err.includes('(nfqueue)') ? 7 : 4);
    sim.kill('SIGKILL');
    await until(() => simulationProcesses().length === 0, 10_000, 'every simulation process to end');
  }, 60_000);

  it('--delay holds what each host sends that long (netem, else the NFQUEUE helper), and the helper ends with its host', async () => {
    requireRootAndBuild();
    process.env.STARLING_NFQ_DELAY ??= nfqDelayEnv().STARLING_NFQ_DELAY;
    const lab = new Lab({ loss: 0, delayMs: 20 });
    const hosts = [0, 1].map(() => spawn('unshare', ['--net', '--', 'sh', '-c', 'read _'], { stdio: ['pipe', 'ignore', 'inherit'] }));
    const listener = { kill: () => {} } as { kill(): unknown };
    try {
      await lab.open();
      const mine = readlinkSync('/proc/self/ns/net');
      await until(() => hosts.every((h) => readlinkSync(`/proc/${h.pid}/ns/net`) !== mine), 5000, 'the hosts in namespaces of their own');
      lab.wire(1, hosts[0]!.pid!, ['10.77.0.1']);
      lab.wire(2, hosts[1]!.pid!, ['10.77.0.2']);
      await lab.delaysReady();
      lab.pinNeighbours();
      expect(['netem', 'nfqueue']).toContain(lab.delayBy);
      const server = spawn('nsenter', ['-t', String(hosts[1]!.pid), '-n', 'python3', '-c',
        "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('10.77.0.2', 7777)); s.listen(64); print('up', flush=True)\nwhile True:\n  c,_=s.accept(); c.close()"], { stdio: ['ignore', 'pipe', 'inherit'] });
      listener.kill = () => server.kill('SIGKILL');
      await new Promise((r) => server.stdout!.once('data', r));
      // A TCP connect from host 1 to host 2 takes the SYN (held at 1) and the SYN-ACK (held at 2): 40 ms.
      const out = execFileSync('nsenter', ['-t', String(hosts[0]!.pid), '-n', 'python3', '-c',
        "import socket, time\nr=[]\nfor i in range(9):\n  s=socket.socket(); t=time.monotonic(); s.connect(('10.77.0.2', 7777)); r.append((time.monotonic()-t)*1000); s.close()\nr.sort(); print(r[4])"], { encoding: 'utf8', timeout: 20_000 });
      const median = Number(out.trim());
      console.log(`simulate --delay 20 (${lab.delayBy}): TCP connect ${median.toFixed(1)} ms`);
      expect(median).toBeGreaterThanOrEqual(40);
      expect(median).toBeLessThan(200);
      if (lab.delayBy === 'nfqueue') {
        // Host 2 ends: its helper goes with it (else it would keep host 2's namespace, and its links, alive).
        const helperOf = (pid: number) => simulationProcesses().some((p) => {
          try {
            return readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').join(' ').endsWith(` 0 20 ${pid} `);
          } catch {
            return false; // ended meanwhile
          }
        });
        expect(helperOf(hosts[1]!.pid!)).toBe(true);
        listener.kill();
        hosts[1]!.kill('SIGKILL');
        await until(() => !helperOf(hosts[1]!.pid!), 5000, "host 2's delay helper to end");
        expect(helperOf(hosts[0]!.pid!)).toBe(true);
      }
    } finally {
      listener.kill();
      lab.close();
      for (const h of hosts) h.kill('SIGKILL');
    }
  }, 60_000);
});
