// Discovery where broadcast does not pass: two subnets joined by a router namespace, two gossip seeds (one
// on each side, connected to each other), four nodes connected to both seeds, all running the real CLI. They
// meet within 3 s; with one seed killed the rest still see each other and a node started afterwards is found;
// a node SIGKILLed leaves every view within its lease. Needs root; in CI it may not be skipped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, CLI, Segment, rootTests, requireRootAndBuild, type Event } from './netns.ts';

const runHere = rootTests('the gossip test (two routed subnets)');

describe.runIf(runHere)('gossip across two routed subnets', () => {
  const left = new Segment('10.232.1');
  const right = new Segment('10.232.2');
  const agents: Agent[] = [];
  const seeds = ['tcp://10.232.1.1:7000', 'tcp://10.232.2.1:7000'];
  const common = ['--gossip-ttl', '3', '--evasive', '1', '--silent', '2'];

  function agent(name: string, seg: Segment, host: number, extra: string[]): Agent {
    const a = new Agent(name, seg.hosts[host - 1]!, CLI, ['--name', name, ...common, ...extra]);
    agents.push(a);
    return a;
  }
  const sees = (a: Agent, name: string) => (e: Event) => a.events.indexOf(e) >= 0 && e.event === 'ENTER' && e.name === name;

  beforeAll(() => {
    requireRootAndBuild();
    left.create(4);
    right.create(3);
    left.routeTo(right);
  });

  afterAll(async () => {
    for (const a of agents) a.kill('SIGKILL');
    await Promise.all(agents.map((a) => a.exited()));
    left.destroy();
    right.destroy();
  });

  it('meet within 3 s, survive the loss of a seed, find a late node, and drop a killed one within its lease', async () => {
    const seedL = agent('seed-l', left, 1, ['--gossip-bind', seeds[0]!, '--gossip-connect', seeds[1]!]);
    const seedR = agent('seed-r', right, 1, ['--gossip-bind', seeds[1]!, '--gossip-connect', seeds[0]!]);
    await Promise.all([seedL.started, seedR.started]);
    const both = ['--gossip-connect', seeds[0]!, '--gossip-connect', seeds[1]!];
    const t0 = Date.now();
    const nodes = [agent('l2', left, 2, both), agent('l3', left, 3, both), agent('r2', right, 2, both), agent('r3', right, 3, both)];
    await Promise.all(nodes.map((n) => n.started));
    const names = nodes.map((n) => n.label);
    const summary = () => agents.map((a) => `${a.label}: ${a.events.filter((e) => e.event !== 'STARTED').map((e) => `${e.event} ${String(e.name ?? '')}${e.reason ? `(${String(e.reason)})` : ''}`).join(', ')}`).join('\n');
    await Promise.all(nodes.flatMap((n) => names.filter((m) => m !== n.label).map((m) => n.waitFor(sees(n, m), 10_000, `${n.label} sees ${m}`))))
      .catch(async (e: Error) => {
        for (const a of agents) a.command('peers');
        await new Promise((r) => setTimeout(r, 1000));
        const stats = agents.map((a) => `${a.label}: ${JSON.stringify((a.events.filter((x) => x.event === 'PEERS').pop()?.peers as { name: string; presence: string }[] | undefined)?.map((p) => `${p.name}:${p.presence}`))}`).join('\n');
        throw new Error(`${e.message}\nevents so far:\n${summary()}\nstats:\n${stats}`);
      });
    const took = Date.now() - t0;
    console.log(`gossip across a router: four nodes started and met in ${took} ms`);
    expect(took).toBeLessThan(3000);
    // Across the router: a node on the left reached one on the right at its own address (no broadcast here).
    expect(String((await nodes[0]!.waitFor(sees(nodes[0]!, 'r2'))).endpoint)).toMatch(/^tcp:\/\/10\.232\.2\.2:\d+$/);

    // One seed gone: nobody else leaves, and a node started now is still found through the other seed.
    seedL.kill('SIGKILL');
    await seedL.exited();
    const late = agent('late', left, 4, both);
    await late.started;
    await Promise.all(nodes.map((n) => n.waitFor(sees(n, 'late'), 10_000, `${n.label} sees late`)));
    const exits = nodes.flatMap((n) => n.events.filter((e) => e.event === 'EXIT' && names.includes(String(e.name))));
    expect(exits).toEqual([]);

    // A node killed without GOODBYE: gone from every view within its 3 s lease (and a check), not ZRE's 30 s.
    const victim = nodes[3]!;
    victim.kill('SIGKILL');
    const k0 = Date.now();
    await Promise.all([nodes[0]!, nodes[1]!, nodes[2]!, late].map((n) => n.waitFor((e) => e.event === 'EXIT' && e.name === 'r3', 15_000, `${n.label} sees r3 leave`)));
    const gone = Date.now() - k0;
    console.log(`gossip: a SIGKILLed node left every view in ${gone} ms`);
    expect(gone).toBeLessThan(6000);
  }, 90_000);
});
