// Shared test helpers: nodes on loopback with a beacon port of their own, and waiting for events.
import { once } from 'node:events';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach } from 'vitest';
import { Spool } from '../runtime/spool.ts';
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

/**
 * Nodes and raw peers for one test file, stopped and closed after each test: call at the top of the file.
 * `nodes` starts them on loopback (see {@link loopbackNodes}); `rawPeer` opens a {@link RawPeer} into a node;
 * `track` stops a node the test made itself.
 */
export function nodeFixture(): { nodes(count: number, opts?: ZreNodeOptions): Promise<ZreNode[]>; rawPeer(node: ZreNode): Promise<RawPeer>; track(...n: ZreNode[]): void } {
  let running: ZreNode[] = [];
  let raws: RawPeer[] = [];
  afterEach(async () => {
    await Promise.all(running.map((n) => n.stop()));
    raws.forEach((r) => r.close());
    running = [];
    raws = [];
  });
  return {
    async nodes(count, opts = {}) {
      const list = await loopbackNodes(count, opts);
      running.push(...list);
      return list;
    },
    track(...n) {
      running.push(...n);
    },
    async rawPeer(node) {
      const raw = new RawPeer();
      raws.push(raw);
      await raw.open(node.endpoint);
      return raw;
    },
  };
}

/** Pids whose command line contains `text` (from /proc). */
export function processesWith(text: string): number[] {
  return readdirSync('/proc').filter((d) => /^\d+$/.test(d)).filter((d) => {
    try {
      return readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(text);
    } catch {
      return false;
    }
  }).map(Number);
}

/** SIGKILLs every process whose command line contains `text` (a test's directory: what it started). */
export function killProcessesWith(text: string): void {
  for (const pid of processesWith(text)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

/**
 * What a (stopped) bridge's spool holds for one state topic: reads a copy made at `copy`, so the original is
 * untouched. Returns the sequence numbers in spool order, the publisher, and the damage the scan found.
 */
export function spooledStates(spool: string, copy: string, topic: string): { seqs: number[]; publisher: string; corrupt: number } {
  cpSync(spool, copy, { recursive: true });
  const reader = new Spool(copy);
  reader.open();
  const seqs: number[] = [];
  let publisher = '';
  for (let m = reader.peek(); m; m = reader.peek()) {
    if (m.topic === topic) {
      const s = JSON.parse(m.payload.toString()) as { seq: number; publisher: string };
      seqs.push(s.seq);
      publisher = s.publisher;
    }
    reader.ack();
  }
  const { corrupt } = reader.stats();
  reader.close();
  return { seqs, publisher, corrupt };
}

/**
 * Child processes and temporary folders for one test file, cleaned up after each test: the processes get
 * SIGKILL, and so does anything whose command line names one of the folders (services run in process groups
 * of their own, so a supervisor that died would leave them). Call at the top of the file.
 */
export function processFixture(prefix: string): { track(p: ChildProcess): ChildProcess; tempDir(): string; lines(p: ChildProcess): string[] } {
  const procs: ChildProcess[] = [];
  const dirs: string[] = [];
  afterEach(() => {
    for (const p of procs.splice(0)) p.kill('SIGKILL');
    for (const d of dirs.splice(0)) {
      killProcessesWith(d);
      rmSync(d, { recursive: true, force: true });
    }
  });
  return {
    track(p) {
      procs.push(p);
      return p;
    },
    tempDir() {
      const d = mkdtempSync(join(tmpdir(), prefix));
      dirs.push(d);
      return d;
    },
    /** The process's stdout lines, collected as they come. */
    lines(p) {
      const out: string[] = [];
      createInterface({ input: p.stdout! }).on('line', (l) => out.push(l));
      return out;
    },
  };
}

/**
 * A datagram socket standing in for systemd's notify socket, with SO_PASSCRED as systemd has it: each line in
 * `got` is the sender's pid, then the message with its newlines shown as '|'. `track` takes the receiver
 * process (a {@link processFixture}'s, so it is killed after the test).
 */
export async function notifyReceiver(sock: string, track: (p: ChildProcess) => ChildProcess): Promise<{ got: string[] }> {
  const { spawn } = await import('node:child_process');
  const receiver = track(spawn('python3', ['-u', '-c', [
    'import socket,struct',
    's=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)',
    's.setsockopt(socket.SOL_SOCKET,socket.SO_PASSCRED,1)',
    `s.bind(${JSON.stringify(sock)})`,
    'print("bound",flush=True)',
    'while True:',
    '  msg,anc,_,_=s.recvmsg(4096,socket.CMSG_SPACE(12))',
    '  pid=[struct.unpack("iII",d)[0] for l,t,d in anc if t==socket.SCM_CREDENTIALS][0]',
    '  print(str(pid)+" "+msg.decode().replace("\\n","|"),flush=True)',
  ].join('\n')], { stdio: ['ignore', 'pipe', 'inherit'] }));
  const got: string[] = [];
  createInterface({ input: receiver.stdout! }).on('line', (l) => got.push(l));
  await until(() => got.includes('bound'), 10_000, 'the receiver');
  return { got };
}
