// `starling shout` and `starling whisper`: join the mesh, wait until the target is known, send, leave.
import { CliError, MESH_HELP, MESH_OPTIONS, nodeOptions, out, parse, secondsOption, sleep, startNode, waitUntil, type Command } from './common.ts';

const SEND_OPTIONS = { ...MESH_OPTIONS, wait: { type: 'string' } } as const;

export const shout: Command = {
  help: `Usage: starling shout GROUP TEXT [--wait SEC] [mesh options]

Starts a node, waits up to SEC seconds (default 5) until at least one peer has joined
GROUP, shouts TEXT to the group and leaves. Exits 1 if no peer is in the group.

  --wait SEC          how long to wait for a peer in the group (default 5)
${MESH_HELP}`,
  async run(argv) {
    const { values, positionals } = parse(argv, SEND_OPTIONS);
    if (positionals.length !== 2) throw new CliError(`shout takes GROUP and TEXT, got ${positionals.length} argument(s)`);
    const [group, text] = positionals as [string, string];
    const wait = secondsOption('--wait', values.wait, 5);
    const node = await startNode(nodeOptions(values));
    try {
      const inGroup = () => node.peerList().filter((p) => p.groups.includes(group));
      if (!(await waitUntil(wait, () => inGroup().length > 0))) throw new CliError(`no peer joined group '${group}' within ${wait} s`, 1);
      // Give the rest of the group a moment to answer as well.
      await sleep(300);
      const n = node.shout(group, text);
      await Promise.all(inGroup().map((p) => node.drained(p.peer)));
      out(values.json ? JSON.stringify({ group, peers: n }) : `shouted to ${n} peer(s) in ${group}`);
      return 0;
    } finally {
      await node.stop();
    }
  },
};

export const whisper: Command = {
  help: `Usage: starling whisper NAME|UUID TEXT [--wait SEC] [mesh options]

Starts a node, waits up to SEC seconds (default 5) for the peer, whispers TEXT to it
and leaves. Exits 1 if the peer does not appear.

  --wait SEC          how long to wait for the peer (default 5)
${MESH_HELP}`,
  async run(argv) {
    const { values, positionals } = parse(argv, SEND_OPTIONS);
    if (positionals.length !== 2) throw new CliError(`whisper takes NAME|UUID and TEXT, got ${positionals.length} argument(s)`);
    const [target, text] = positionals as [string, string];
    const wait = secondsOption('--wait', values.wait, 5);
    const node = await startNode(nodeOptions(values));
    try {
      if (!(await waitUntil(wait, () => node.findPeer(target) !== undefined))) {
        throw new CliError(`no peer named or with UUID '${target}' within ${wait} s`, 1);
      }
      const peer = node.findPeer(target)!;
      if (!node.whisper(peer.peer, text)) throw new CliError(`could not queue the whisper to ${peer.name}`, 1);
      await node.drained(peer.peer);
      out(values.json ? JSON.stringify({ peer: peer.peer, name: peer.name }) : `whispered to ${peer.name} (${peer.peer})`);
      return 0;
    } finally {
      await node.stop();
    }
  },
};
