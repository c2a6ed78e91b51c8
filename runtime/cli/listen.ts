import { MESH_HELP, MESH_OPTIONS, nodeOptions, parse, printEvents, startNode, untilSignal, type Command } from './common.ts';

export const listen: Command = {
  summary: 'join groups and print mesh events, one per line',
  help: `Usage: starling listen [GROUP...] [mesh options]

Starts a node, joins each GROUP, and prints every event (ENTER, EXIT, JOIN, LEAVE,
WHISPER, SHOUT, EVASIVE, SILENT) as one line until interrupted (Ctrl-C / SIGTERM).
With --json each line is a JSON object; content frames are text when valid UTF-8,
else hex (contentHex).

${MESH_HELP}`,
  async run(argv) {
    const { values, positionals } = parse(argv, MESH_OPTIONS);
    const node = await startNode(nodeOptions(values));
    if (!values.json) process.stderr.write(`listening on ${node.iface!.name} (${node.iface!.address}) as ${node.name} ${node.id}\n`);
    const stopPrinting = printEvents(node, Boolean(values.json));
    for (const g of positionals) node.join(g);
    await untilSignal();
    stopPrinting();
    await node.stop();
    return 0;
  },
};
