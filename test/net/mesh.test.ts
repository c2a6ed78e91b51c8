// Three hosts in network namespaces on one bridged segment, each running the real `starling` CLI.
// Needs root (CI runs as root). Outside CI a non-root run skips this file and says so; in CI it fails instead.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, Segment, type Event, CLI, rootTests, requireRootAndBuild } from './netns.ts';

const cli = CLI;
const runHere = rootTests('the network-namespace tests');

describe.runIf(runHere)('a mesh of three hosts on one Ethernet segment', () => {
  const seg = new Segment();
  const agents: Agent[] = [];
  let a: Agent, b: Agent, c: Agent;
  // a drops quiet peers fast; b keeps them 12 s, longer than the 10 s link outage below.
  const A_ARGS = ['--name', 'alpha', '--evasive', '1', '--silent', '2', '--expire', '4'];
  const B_ARGS = ['--name', 'bravo', '--expire', '12'];
  const C_ARGS = ['--name', 'charlie', '--header', 'X-ROLE=sensor'];

  function agent(label: string, host: number, args: string[]): Agent {
    const ag = new Agent(label, seg.hosts[host - 1]!, cli, args);
    agents.push(ag);
    return ag;
  }
  const isEnter = (name: string) => (e: Event) => e.event === 'ENTER' && e.name === name;
  const isExit = (name: string) => (e: Event) => e.event === 'EXIT' && e.name === name;

  beforeAll(async () => {
    requireRootAndBuild();
    seg.create(3);
    a = agent('alpha', 1, A_ARGS);
    b = agent('bravo', 2, B_ARGS);
    c = agent('charlie', 3, C_ARGS);
    await Promise.all([a.started, b.started, c.started]);
  });

  afterAll(async () => {
    for (const ag of agents) ag.kill('SIGKILL');
    await Promise.all(agents.map((ag) => ag.exited()));
    seg.destroy();
  });

  it('each node picks eth0 by itself and advertises its IPv4 address', async () => {
    for (const [i, ag] of [a, b, c].entries()) {
      const started = await ag.started;
      expect(started.iface).toBe('eth0');
      expect(started.endpoint).toMatch(new RegExp(`^tcp://${seg.address(i + 1).replaceAll('.', '\\.')}:\\d+$`));
    }
  });

  it('discover each other by broadcast beacons; ENTER carries headers', async () => {
    const enter = await a.waitFor(isEnter('charlie'), 15_000, 'ENTER charlie');
    expect(enter.headers).toEqual({ 'X-ROLE': 'sensor' });
    expect(enter.endpoint).toMatch(/^tcp:\/\/10\.231\.0\.3:\d+$/);
    await Promise.all([
      a.waitFor(isEnter('bravo')), b.waitFor(isEnter('alpha')), b.waitFor(isEnter('charlie')),
      c.waitFor(isEnter('alpha')), c.waitFor(isEnter('bravo')),
    ]);
  });

  it('join a group, shout to it and whisper across hosts', async () => {
    const joins = [a.waitFor((e) => e.event === 'JOIN' && e.name === 'bravo' && e.group === 'ROOM'),
      a.waitFor((e) => e.event === 'JOIN' && e.name === 'charlie' && e.group === 'ROOM')];
    b.command('join ROOM');
    c.command('join ROOM');
    await Promise.all(joins);
    const shouts = [b, c].map((ag) => ag.next((e) => e.event === 'SHOUT' && e.group === 'ROOM'));
    a.command('shout ROOM hello room');
    for (const s of await Promise.all(shouts)) expect(s).toMatchObject({ name: 'alpha', content: ['hello room'] });
    const whisper = c.next((e) => e.event === 'WHISPER');
    b.command('whisper charlie just for you');
    expect(await whisper).toMatchObject({ name: 'bravo', content: ['just for you'] });
  });

  it('a node killed with SIGKILL is seen leaving after the expiry, then rejoins when restarted', async () => {
    const exitA = a.next(isExit('charlie'), 20_000, 'EXIT charlie');
    const exitB = b.next(isExit('charlie'), 30_000, 'EXIT charlie');
    const t0 = performance.now();
    c.kill('SIGKILL');
    await c.exited();
    const [ea, eb] = await Promise.all([exitA, exitB]);
    expect(ea.reason).toBe('expired');
    expect(eb.reason).toBe('expired');
    // Not at once (no port-0 beacon from a killed node): only after each side's expiry.
    expect((ea.at as number) - t0).toBeGreaterThan(3_000);
    expect((eb.at as number) - t0).toBeGreaterThan(11_000);
    const back = [a.next(isEnter('charlie')), b.next(isEnter('charlie'))];
    c = agent('charlie-2', 3, C_ARGS);
    await c.started;
    await Promise.all(back);
    await Promise.all([c.waitFor(isEnter('alpha')), c.waitFor(isEnter('bravo'))]);
  }, 60_000);

  it('a link down for 10 s and back brings its peers back without a restart', async () => {
    const aExit = a.next(isExit('charlie'), 15_000, 'EXIT charlie at alpha');
    const bEvasive = b.next((e) => e.event === 'EVASIVE' && e.name === 'charlie', 15_000, 'EVASIVE charlie at bravo');
    seg.link(3, 'down');
    const t0 = performance.now();
    expect((await aExit).reason).toBe('expired'); // alpha's expiry (4 s) is shorter than the outage
    await bEvasive; // bravo's (12 s) is longer: charlie is only evasive there
    const aBack = a.next(isEnter('charlie'), 20_000, 'ENTER charlie at alpha');
    await new Promise((r) => setTimeout(r, Math.max(0, 10_000 - (performance.now() - t0))));
    seg.link(3, 'up');
    await aBack;
    // bravo never dropped charlie: a whisper from charlie arrives with no EXIT in between.
    const bWhisper = b.next((e) => e.event === 'WHISPER' && e.name === 'charlie', 15_000, 'WHISPER from charlie');
    c.command('whisper bravo back again');
    expect((await bWhisper).content).toEqual(['back again']);
    expect(b.events.filter((e) => isExit('charlie')(e) && (e.at as number) > t0)).toEqual([]);
    // alpha and charlie talk again too.
    const aWhisper = a.next((e) => e.event === 'WHISPER' && e.name === 'charlie');
    c.command('whisper alpha hello again');
    expect((await aWhisper).content).toEqual(['hello again']);
  }, 60_000);

  it('a node that stops cleanly is seen leaving at once', async () => {
    const exits = [a.next(isExit('charlie'), 5_000), b.next(isExit('charlie'), 5_000)];
    c.command('quit');
    expect(await c.exited()).toBe(0);
    for (const e of await Promise.all(exits)) expect(e.reason).toBe('leaving');
  });
});
