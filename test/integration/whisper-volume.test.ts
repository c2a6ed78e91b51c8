// 70,000 whispers between two real nodes: all arrive, in order, across the 16-bit sequence wrap.
import { afterAll, expect, it } from 'vitest';
import { loopbackNodes, meshed } from '../helpers.ts';
import type { ZreNode } from '../../runtime/zre/node.ts';

let nodes: ZreNode[] = [];
afterAll(async () => {
  await Promise.all(nodes.map((n) => n.stop()));
});

it('70,000 whispers arrive in order with none lost; the sequence number wraps past 65535', async () => {
  nodes = await loopbackNodes(2);
  const [a, b] = nodes as [ZreNode, ZreNode];
  await meshed([a, b]);
  const TOTAL = 70_000;
  const received: number[] = [];
  let outOfOrder = 0;
  const done = new Promise<void>((resolve) => {
    b.on('whisper', ({ content }) => {
      const n = content[0]!.readUInt32BE(0);
      if (n !== received.length) outOfOrder++;
      received.push(n);
      if (received.length === TOTAL) resolve();
    });
  });
  let refused = 0;
  for (let i = 0; i < TOTAL; i++) {
    const frame = Buffer.allocUnsafe(4);
    frame.writeUInt32BE(i, 0);
    // Back-pressure: when the bounded send queue is full, wait for it to drain and try again.
    while (!a.whisper(b.id, frame)) {
      refused++;
      await a.drained(b.id);
    }
  }
  await done;
  expect(received).toHaveLength(TOTAL);
  expect(outOfOrder).toBe(0);
  expect(received[TOTAL - 1]).toBe(TOTAL - 1);
  // Refusals were counted as drops and each was retried: nothing reached b twice or went missing.
  expect(a.stats().sendsDropped).toBe(refused);
  expect(b.stats().sequenceGaps).toBe(0);
  expect(b.findPeer(a.id)).toBeDefined(); // a gap would have dropped the peer
}, 120_000);
