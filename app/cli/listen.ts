import { createInterface } from 'node:readline';
import { MESH_HELP, MESH_OPTIONS, nodeOptions, out, parse, printEvents, startNode, untilSignal, type Command } from './common.ts';
import type { ZreNode } from '../../runtime/zre/node.ts';

export const listen: Command = {
  help: `Usage: starling listen [GROUP...] [--stdin] [mesh options]

Starts a node, joins each GROUP, and prints every event (ENTER, EXIT, JOIN, LEAVE,
WHISPER, SHOUT, EVASIVE, SILENT) as one line until interrupted (Ctrl-C / SIGTERM).
With --json each line is a JSON object; content frames are text when valid UTF-8,
else hex (contentHex).

  --stdin             also take commands from standard input, one per line:
                        join GROUP | leave GROUP | shout GROUP TEXT | whisper NAME|UUID TEXT
                        | peers | stats | quit
                      (end of input stops the node)
${MESH_HELP}`,
  async run(argv) {
    const { values, positionals } = parse(argv, { ...MESH_OPTIONS, stdin: { type: 'boolean' } });
    const node = await startNode(nodeOptions(values));
    const json = Boolean(values.json);
    if (!json) process.stderr.write(`listening on ${node.iface!.name} (${node.iface!.address}) as ${node.name} ${node.id}\n`);
    else out(JSON.stringify({ event: 'STARTED', peer: node.id, name: node.name, endpoint: node.endpoint, iface: node.iface!.name }));
    const stopPrinting = printEvents(node, json);
    for (const g of positionals) node.join(g);
    const stopped = untilSignal();
    await (values.stdin ? Promise.race([stopped, commandsFromStdin(node, json)]) : stopped);
    // A signal while stdin is still open: stop reading it, or the open pipe would keep the process alive.
    if (values.stdin) process.stdin.destroy();
    stopPrinting();
    await node.stop();
    return 0;
  },
};

/** Reads commands from stdin until `quit` or end of input. Mistakes are reported as one line, never fatal. */
async function commandsFromStdin(node: ZreNode, json: boolean): Promise<void> {
  const reply = (rec: Record<string, unknown>, text: string) => out(json ? JSON.stringify(rec) : text);
  const lines = createInterface({ input: process.stdin, terminal: false });
  for await (const line of lines) {
    const [verb, arg, ...restWords] = line.trim().split(/\s+/);
    const text = restWords.join(' ');
    try {
      switch (verb) {
        case undefined:
        case '':
          break;
        case 'join':
        case 'leave':
          if (!arg) throw new Error(`${verb} needs a GROUP`);
          if (verb === 'join') node.join(arg);
          else node.leave(arg);
          reply({ event: 'OK', command: verb, group: arg }, `ok: ${verb} ${arg}`);
          break;
        case 'shout': {
          if (!arg) throw new Error('shout needs GROUP and TEXT');
          const n = node.shout(arg, text);
          reply({ event: 'OK', command: 'shout', group: arg, peers: n }, `ok: shouted to ${n} peer(s)`);
          break;
        }
        case 'whisper': {
          const peer = arg ? node.findPeer(arg) : undefined;
          if (!peer) throw new Error(`no peer named or with UUID '${arg ?? ''}'`);
          // Back-pressure: a command read from stdin waits for room in the peer's send queue rather than be
          // refused (piping 70,000 whispers in must deliver 70,000). The peer may go meanwhile: then it fails.
          while (!node.hasRoom(peer.peer)) {
            if (!node.findPeer(peer.peer)) throw new Error(`${peer.name} left before the whisper could be sent`);
            await node.drained(peer.peer);
          }
          if (!node.whisper(peer.peer, text)) throw new Error(`${peer.name}'s send queue is over its byte bound`);
          reply({ event: 'OK', command: 'whisper', peer: peer.peer }, `ok: whispered to ${peer.name}`);
          break;
        }
        case 'peers':
          reply({ event: 'PEERS', peers: node.peerList() }, node.peerList().map((p) => `${p.peer} ${p.name} ${p.presence}`).join('\n') || '(no peers)');
          break;
        case 'stats':
          reply({ event: 'STATS', ...node.stats() }, JSON.stringify(node.stats()));
          break;
        case 'quit':
          lines.close();
          return;
        default:
          throw new Error(`unknown command '${verb}'`);
      }
    } catch (e) {
      reply({ event: 'ERROR', command: verb, error: (e as Error).message }, `error: ${(e as Error).message}`);
    }
  }
}
