import { MESH_HELP, MESH_OPTIONS, nodeOptions, out, parse, secondsOption, sleep, startNode, type Command } from './common.ts';

export const peers: Command = {
  help: `Usage: starling peers [--wait SEC] [mesh options]

Starts a node, waits SEC seconds (default 3) for peers to answer, prints each peer
(uuid, name, endpoint, groups, headers) and leaves.

  --wait SEC          how long to listen (default 3)
${MESH_HELP}`,
  async run(argv) {
    const { values } = parse(argv, { ...MESH_OPTIONS, wait: { type: 'string' } }, false);
    const wait = secondsOption('--wait', values.wait, 3);
    const node = await startNode(nodeOptions(values));
    await sleep(wait * 1000);
    const list = node.peerList();
    await node.stop();
    if (values.json) {
      out(JSON.stringify(list.map(({ presence: _p, ...p }) => p)));
      return 0;
    }
    process.stderr.write(`on ${node.iface!.name} (${node.iface!.address}), as ${node.name} ${node.id}: ${list.length} peer(s)\n`);
    for (const p of list) {
      const headers = Object.keys(p.headers).length ? ' ' + JSON.stringify(p.headers) : '';
      out(`${p.peer}  ${p.name}  ${p.endpoint}  groups=${p.groups.join(',') || '-'}${headers}`);
    }
    return 0;
  },
};
