// The mesh command format (runtime/command.ts): the peers query and its reply, and that a reply to one never
// settles a GPIO command waiting on the same peer.
import { EventEmitter } from 'node:events';
import { expect, it } from 'vitest';
import { encodeReply, MAX_PEERS_LISTED, parseCommand, sendCommand, type CommandNode } from '../../runtime/command.ts';

const uuid = (i: number) => i.toString(16).toUpperCase().padStart(32, '0');

it('reads the peers query, and a reply keeps only UUIDs, at most MAX_PEERS_LISTED', () => {
  expect(parseCommand(Buffer.from('{"peers":1}'))).toEqual({ query: 'peers' });
  const listed = [...Array.from({ length: MAX_PEERS_LISTED + 10 }, (_, i) => uuid(i)), 'not-a-uuid', 42];
  const r = parseCommand(Buffer.from(JSON.stringify({ ok: true, peers: ['x', ...listed] })));
  expect('reply' in r && r.reply.peers!.length).toBe(MAX_PEERS_LISTED - 1);
  expect('reply' in r && r.reply.peers!.every((p) => /^[0-9A-F]{32}$/.test(p))).toBe(true);
  // A GPIO command that also says "peers" is a GPIO command.
  expect(parseCommand(Buffer.from('{"gpio":"fan","peers":1}'))).toEqual({ command: { gpio: 'fan' } });
});

it('a GPIO command waiting for its reply is not settled by a peers reply (or a refused query) from the same peer', async () => {
  const events = new EventEmitter();
  const sent: string[] = [];
  const node = Object.assign(events, {
    whisper: (_peer: string, ...content: string[]) => (sent.push(content[0]!), true),
    findPeer: () => ({ name: 'greenhouse' }),
  }) as unknown as CommandNode;
  const peer = uuid(7);
  const pending = sendCommand(node, peer, { gpio: 'fan', set: 1 }, 2000);
  events.emit('whisper', { peer, content: [Buffer.from(encodeReply({ ok: false, error: 'not authorised', peers: [] }))] });
  events.emit('whisper', { peer, content: [Buffer.from(encodeReply({ ok: true, peers: [uuid(1)] }))] });
  events.emit('whisper', { peer, content: [Buffer.from(encodeReply({ ok: true, gpio: 'fan', value: 1 }))] });
  expect(await pending).toBe(1);
  expect(sent).toEqual(['{"gpio":"fan","set":1}']);
});
