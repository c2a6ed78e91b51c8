// Telemetry between two hosts (network namespaces on one bridged segment), found through the mesh:
// over reliable multicast (epgm, a 239.x group) and over tcp. Needs root and a zeromq.js with OpenPGM
// (image/setup.sh builds it); in CI neither may be missing.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { capability } from 'zeromq';
import { Agent, Segment, type Event, CLI, rootTests, requireRootAndBuild } from './netns.ts';

const cli = CLI;
const runHere = rootTests('the network-namespace telemetry tests');

describe.runIf(runHere)('telemetry between two hosts', () => {
  const seg = new Segment();
  const agents: Agent[] = [];
  const agent = (label: string, host: number, command: string[]) => {
    const a = new Agent(label, seg.hosts[host - 1]!, cli, [], command);
    agents.push(a);
    return a;
  };
  const samplesOf = (a: Agent, topic: string) => a.events.filter((e: Event) => e.topic === topic);

  beforeAll(() => {
    if (!capability.pgm) throw new Error('zeromq.js has no OpenPGM here: run `bash image/setup.sh` (it builds zeromq.js against libzmq3-dev)');
    requireRootAndBuild();
    seg.create(2);
  });

  afterAll(async () => {
    for (const a of agents) a.kill('SIGKILL');
    await Promise.all(agents.map((a) => a.exited()));
    seg.destroy();
  });

  it('epgm: samples published on 239.192.7.1 reach a subscriber on the other host, in order', async () => {
    const tail = agent('tail', 2, ['tail', 'room/', '--transport', 'epgm', '--json']);
    const pub = agent('publish', 1, ['publish', 'room/temp', '21.5', '--unit', '°C', '--count', '300', '--interval', '10',
      '--epgm', '239.192.7.1:5555', '--rate', '1000', '--wait', '2', '--json']);
    const done = await pub.waitFor((e) => e.published !== undefined, 30_000, 'the publish summary');
    expect(done).toMatchObject({ published: 300, dropped: 0 });
    await tail.waitFor((e) => e.topic === 'room/temp' && e.seq === 299, 10_000, 'sample #299 over epgm');
    const got = samplesOf(tail, 'room/temp');
    // PGM joins late (the first samples may go before the receiver has joined); from then on nothing is lost.
    expect(got.length).toBeGreaterThan(100);
    const seqs = got.map((e) => e.seq as number);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(new Set(seqs).size).toBe(seqs.length);
    expect(got[0]).toMatchObject({ values: [21.5], unit: '°C', status: 0 });
    expect(tail.events.filter((e) => e.event === 'GAP')).toEqual([]);
    expect(tail.stderr).toMatch(/publishes at epgm:\/\/10\.231\.0\.2;239\.192\.7\.1:5555/);
  }, 60_000);

  it('tcp: a subscriber finds the publisher through its HELLO headers and gets every sample', async () => {
    const tail = agent('tail-tcp', 2, ['tail', 'hall/', '--transport', 'tcp', '--json']);
    const pub = agent('publish-tcp', 1, ['publish', 'hall/door', '1', '--count', '50', '--interval', '2', '--wait', '10', '--json']);
    expect(await pub.waitFor((e) => e.published !== undefined, 30_000, 'the publish summary')).toMatchObject({ published: 50 });
    await tail.waitFor((e) => e.topic === 'hall/door' && e.seq === 49, 10_000, 'sample #49');
    expect(samplesOf(tail, 'hall/door').map((e) => e.seq)).toEqual([...Array(50).keys()]);
    expect(tail.stderr).toMatch(/publishes at tcp:\/\/10\.231\.0\.1:\d+/);
  }, 60_000);
});
