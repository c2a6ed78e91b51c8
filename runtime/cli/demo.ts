import { CliError, intOption, out, parse, printEvents, secondsOption, sleep, untilSignal, type Command } from './common.ts';
import { ZreNode } from '../zre/node.ts';

const NAMES = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india'];

export const demo: Command = {
  summary: 'run a few local nodes that find each other and talk (the default job)',
  help: `Usage: starling demo [--nodes N] [--seconds S] [--iface NAME] [--port N] [--json]

Starts N nodes (default 3) in this process on loopback, so nothing leaves this
machine. They discover each other by UDP beacons, join group 'demo', shout and
whisper, and every event each node sees is printed as one line. After S seconds
(default 10; 0 runs until Ctrl-C) one node leaves cleanly, then the rest stop.

  --nodes N           how many nodes (2 to 9, default 3)
  --seconds S         how long to run (default 10, 0 = until interrupted)
  --iface NAME|IP     interface (default lo)
  --port N            UDP beacon port (default 5670)
  --json              one JSON object per event
  -h, --help          this help`,
  async run(argv) {
    const { values } = parse(argv, {
      nodes: { type: 'string' }, seconds: { type: 'string' }, iface: { type: 'string' }, port: { type: 'string' },
      json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
    }, false);
    const count = values.nodes === undefined ? 3 : intOption('--nodes', values.nodes, 2, NAMES.length);
    const seconds = secondsOption('--seconds', values.seconds, 10);
    const beaconPort = values.port === undefined ? 5670 : intOption('--port', values.port, 1, 65535);
    const json = Boolean(values.json);
    const nodes = NAMES.slice(0, count).map((name, i) => new ZreNode({
      name, iface: values.iface ?? 'lo', beaconPort, headers: { 'X-DEMO': String(i + 1) },
    }));
    const say = (line: string) => out(json ? JSON.stringify({ node: 'demo', note: line }) : `-- ${line}`);
    for (const n of nodes) printEvents(n, json, n.name);
    const started: ZreNode[] = [];
    try {
      for (const n of nodes) {
        await n.start();
        started.push(n);
      }
    } catch (e) {
      await Promise.all(started.map((n) => n.stop()));
      throw new CliError((e as Error).message, 1);
    }
    say(`${count} nodes on ${nodes[0]!.iface!.name} (${nodes[0]!.iface!.address}), beacons on UDP ${beaconPort}`);
    for (const n of nodes) n.join('demo');

    // Talk once everyone has met: each node shouts to the group, then whispers to the next node.
    const talk = (async () => {
      const deadline = Date.now() + 10_000;
      while (!nodes.every((n) => n.peerList().filter((p) => p.groups.includes('demo')).length === count - 1)) {
        if (Date.now() > deadline) return say('not every node met every other within 10 s');
        await sleep(50);
      }
      say('every node sees every other; talking');
      for (const [i, n] of nodes.entries()) {
        n.shout('demo', `hello from ${n.name}`);
        const next = nodes[(i + 1) % count]!;
        n.whisper(next.id, `psst ${next.name}, it's ${n.name}`);
      }
    })();
    await untilSignal(seconds);
    await talk;
    say(`${nodes[0]!.name} leaves; the others see it go at once`);
    await nodes[0]!.stop();
    await sleep(300);
    await Promise.all(nodes.slice(1).map((n) => n.stop()));
    const dropped = nodes.reduce((s, n) => s + n.stats().sendsDropped + n.stats().messagesMalformed, 0);
    say(`stopped; dropped or malformed messages: ${dropped}`);
    return 0;
  },
};
