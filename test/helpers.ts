// Shared test helpers: nodes on loopback with a beacon port of their own, and waiting for events.
import { once } from 'node:events';
import { createServer } from 'node:net';
import { ZreNode, type ZreNodeOptions, type ZreEvents } from '../runtime/zre/node.ts';

let nextPort = 20000 + (process.pid % 2000) * 10;
/** A UDP beacon port no other test file uses at the same time (one range per worker process). */
export function beaconPort(): number {
  return nextPort++;
}

/** A TCP port on 127.0.0.1 that was free a moment ago (for a server a child process will open). */
export async function freeTcpPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as { port: number };
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** Starts nodes on loopback sharing one beacon port, with fast timers. Call `stopAll` in afterEach. */
export async function loopbackNodes(count: number, opts: ZreNodeOptions = {}): Promise<ZreNode[]> {
  const port = beaconPort();
  const nodes: ZreNode[] = [];
  for (let i = 0; i < count; i++) {
    const node = new ZreNode({ iface: 'lo', beaconPort: port, beaconInterval: 100, pingInterval: 100, name: `n${i}`, ...opts });
    nodes.push(node);
  }
  await Promise.all(nodes.map((n) => n.start()));
  return nodes;
}

/** Waits for `event` on `node` matching `pred`, failing after `ms` with a message naming what was awaited. */
export function waitFor<K extends keyof ZreEvents>(
  node: ZreNode, event: K, pred: (...args: ZreEvents[K]) => boolean = () => true, ms = 10_000,
): Promise<ZreEvents[K]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      node.off(event, listener as never);
      reject(new Error(`${node.name}: no '${String(event)}' event within ${ms} ms`));
    }, ms);
    const listener = (...args: ZreEvents[K]) => {
      if (!pred(...args)) return;
      clearTimeout(timer);
      node.off(event, listener as never);
      resolve(args);
    };
    node.on(event, listener as never);
  });
}

/** Waits until every node has every other as a ready peer. */
export async function meshed(nodes: ZreNode[], ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!nodes.every((n) => n.peerList().length >= nodes.length - 1)) {
    if (Date.now() > deadline) throw new Error(`nodes did not all see each other within ${ms} ms: ${nodes.map((n) => `${n.name}:${n.peerList().length}`).join(' ')}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export { once };

import { Dealer, Router } from 'zeromq';
import { randomBytes } from 'node:crypto';
import { encodeZre, type ZreMessage } from '../runtime/zre/codec.ts';

/**
 * A hand-driven ZRE peer on real sockets: a DEALER into the node's inbox (routing id 0x01 + uuid) and a
 * ROUTER inbox of its own that the node connects back to. Lets a test send exactly the frames it wants.
 */
export class RawPeer {
  readonly uuid = randomBytes(16);
  readonly id = this.uuid.toString('hex').toUpperCase();
  readonly dealer = new Dealer({ linger: 0 });
  readonly inbox = new Router({ linger: 0 });
  endpoint = '';
  seq = 0;

  async open(target: string): Promise<void> {
    await this.inbox.bind('tcp://127.0.0.1:*');
    this.endpoint = this.inbox.lastEndpoint!;
    this.dealer.routingId = Buffer.concat([Buffer.from([1]), this.uuid]) as unknown as string;
    this.dealer.connect(target);
  }

  /** Sends raw frames as they are. */
  async raw(frames: Buffer[]): Promise<void> {
    await this.dealer.send(frames);
  }

  /** Encodes and sends a message with the next sequence number (HELLO resets it to 1) unless one is given. */
  async send(msg: Record<string, unknown> & { type: ZreMessage['type'] }): Promise<void> {
    this.seq = msg.type === 'HELLO' ? 1 : (this.seq + 1) & 0xffff;
    const full = { sequence: this.seq, ...msg } as ZreMessage;
    await this.raw(encodeZre(full));
  }

  hello(extra: Record<string, unknown> = {}): Promise<void> {
    return this.send({ type: 'HELLO', endpoint: this.endpoint, groups: [], status: 0, name: 'raw', headers: new Map(), ...extra });
  }

  close(): void {
    this.dealer.close();
    this.inbox.close();
  }
}

/** Polls `cond` every 10 ms until it holds; fails after `ms`, naming what it waited for. */
export async function until(cond: () => boolean, ms = 10_000, what = 'a condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
