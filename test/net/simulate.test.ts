// `starling simulate` as a user runs it: 50 nodes in 5 processes (10 to a namespace, each on an address of its
// own), a hub bridging to an embedded broker, a minute at 2 % loss. The full run (200 nodes, 10 minutes) is
// bench/simulate.ts. Also: killed with SIGKILL, it leaves no process (and so no namespace) behind. Needs root.
import { describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { CLI, requireRootAndBuild, rootTests } from './netns.ts';
import { until } from '../helpers.ts';

/** PIDs of the processes a simulation makes: its workers and the bridge's holder. */
function simulationProcesses(): number[] {
  const pids: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').join(' ');
      if (cmd.includes('simulate --worker') || cmd.startsWith('sh -c read _')) pids.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

describe.runIf(rootTests('the simulate test'))('starling simulate', () => {
  it('50 nodes at 2 % loss: a full mesh, no false EXIT, a killed process seen gone within its expiry, every sample at the broker or counted lost', () => {
    requireRootAndBuild();
    const r = spawnSync(process.execPath, [CLI, 'simulate', '--nodes', '50', '--minutes', '1', '--loss', '2%', '--expire', '10', '--json'], { encoding: 'utf8', timeout: 240_000 });
    process.stdout.write(r.stderr.split('\n').filter((l) => / s: /.test(l)).slice(-2).join('\n') + '\n');
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    console.log(`simulate, 50 nodes: ${JSON.stringify({ fullMeshMs: rep.fullMeshMs, falseExits: rep.falseExits, kill: rep.kill, samplesPublished: rep.samplesPublished, samplesLost: rep.samplesLost, samplesLostCounted: rep.samplesLostCounted, rssPerNodeMB: rep.rssPerNodeMB, cpuPerNodePct: rep.cpuPerNodePct, loopDelayMs: rep.loopDelayMs, mesh: rep.mesh })}`);
    expect(rep).toMatchObject({ nodes: 50, processes: 5, started: 51, falseExits: 0, problems: [], topicsNeverArrived: 0 });
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

  it('SIGKILLed, it leaves no process behind, so its namespaces are gone', async () => {
    requireRootAndBuild();
    expect(simulationProcesses()).toEqual([]);
    const sim = spawn(process.execPath, [CLI, 'simulate', '--nodes', '4', '--per-process', '2', '--minutes', '5'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    sim.stderr!.on('data', (d) => (err += String(d)));
    await until(() => / s: /.test(err), 30_000, 'the first progress line');
    expect(simulationProcesses().length).toBe(4); // the hub's, two of nodes, the bridge's holder
    sim.kill('SIGKILL');
    await until(() => simulationProcesses().length === 0, 10_000, 'every simulation process to end');
  }, 60_000);
});
