// Time-based logic on fake time (issue 12, point 7): presence at ZRE's real timeouts (5 s evasive, 10 s silent,
// 30 s expired), gossip leases (republished every ttl/3, expired within the ttl once the publisher is gone) and
// the supervisor's backoff over an hour. The clocks and timers are vitest's fakes; the sockets stay real, so
// every step of fake time is followed by a real pause in which the frames it caused are carried and read.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createServer } from 'node:net';
import { ZreNode } from '../../runtime/zre/node.ts';
import { Gossip } from '../../runtime/zre/gossip.ts';
import { decodeZre } from '../../runtime/zre/codec.ts';
import { LogRing } from '../../runtime/supervisor/log.ts';
import { BUILTIN_POLICY, Supervisor } from '../../runtime/supervisor/supervisor.ts';
import { ServiceBase } from '../../runtime/supervisor/service.ts';
import { RawPeer, beaconPort } from '../helpers.ts';

// Real timers, taken before any test fakes them.
const realSetTimeout = globalThis.setTimeout;
const pause = (ms: number) => new Promise<void>((r) => realSetTimeout(r, ms));

/** Waits in real time (the fake clock stands still) until `cond` holds; fails after `ms` real ms. */
async function settle(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  for (let waited = 0; !cond(); waited += 5) {
    if (waited > ms) throw new Error(`timed out waiting for ${what}`);
    await pause(5);
  }
}

/** Moves fake time on by `total` ms in steps of `step`, with a real pause after each for the sockets. */
async function elapse(total: number, step = 100, until?: () => boolean): Promise<void> {
  for (let t = 0; t < total && !until?.(); t += step) {
    await vi.advanceTimersByTimeAsync(step);
    await pause(1);
  }
}

const cleanups: (() => Promise<void> | void)[] = [];
beforeEach(() => {
  // Not setImmediate or nextTick: the node reads its inbox from the next turn and zeromq.js resolves on I/O.
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date', 'performance'] });
});
afterEach(async () => {
  vi.useRealTimers();
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A raw peer that has said HELLO to `node` and reads what the node sends it, answering PINGs if asked. */
async function helloFrom(node: ZreNode, answerPings: boolean): Promise<{ raw: RawPeer; pings: number }> {
  const raw = new RawPeer();
  cleanups.push(() => raw.close());
  await raw.open(node.endpoint);
  const state = { raw, pings: 0 };
  void (async () => {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await raw.inbox.receive();
      } catch {
        return;
      }
      const msg = decodeZre(frames.slice(1));
      if (msg.type !== 'PING') continue;
      state.pings++;
      if (answerPings) await raw.send({ type: 'PING_OK' }).catch(() => {});
    }
  })();
  await raw.hello({ name: answerPings ? 'answers' : 'quiet' });
  return state;
}

describe('presence at ZRE\'s own timeouts, on fake time', () => {
  it('a quiet peer is pinged from 2.5 s, evasive at 5 s, silent at 10 s and expired at 30 s; one that answers stays', async () => {
    const node = new ZreNode({ iface: 'lo', beaconPort: beaconPort(), name: 'watcher' }); // the defaults: 1 s checks
    await node.start();
    cleanups.push(() => node.stop());
    const t0 = Date.now();
    const at: Record<string, Record<string, number>> = { quiet: {}, answers: {} };
    const nameOf = new Map<string, string>();
    node.on('enter', (p) => nameOf.set(p.peer, p.name));
    for (const ev of ['evasive', 'silent', 'exit'] as const) {
      node.on(ev, (p: { peer: string; reason?: string }) => {
        at[nameOf.get(p.peer)!]![ev === 'exit' ? `exit:${p.reason}` : ev] = Date.now() - t0;
      });
    }
    const quiet = await helloFrom(node, false);
    const answers = await helloFrom(node, true);
    await settle(() => nameOf.size === 2, 'both HELLOs');

    await elapse(29_000);
    expect(at.quiet!['exit:expired']).toBeUndefined();
    await elapse(3000, 100, () => at.quiet!['exit:expired'] !== undefined);

    // Checks run every second, so each event comes within a second after its timeout.
    expect(at.quiet!.evasive).toBeGreaterThanOrEqual(5000);
    expect(at.quiet!.evasive).toBeLessThan(6100);
    expect(at.quiet!.silent).toBeGreaterThanOrEqual(10_000);
    expect(at.quiet!.silent).toBeLessThan(11_100);
    expect(at.quiet!['exit:expired']).toBeGreaterThanOrEqual(30_000);
    expect(at.quiet!['exit:expired']).toBeLessThan(31_100);
    // Pinged once a second from half the evasive timeout until it expired: 27 or 28 checks.
    expect(quiet.pings).toBeGreaterThanOrEqual(26);
    expect(quiet.pings).toBeLessThanOrEqual(29);
    // The one that answers is pinged once per quiet spell of 2.5 s, and is never evasive.
    expect(at.answers).toEqual({});
    expect(answers.pings).toBeGreaterThanOrEqual(8);
    expect(node.peerList().map((p) => [p.name, p.presence])).toEqual([['answers', 'alive']]);
  }, 30_000);
});

describe('gossip leases, on fake time', () => {
  async function freeEndpoint(): Promise<string> {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const { port } = srv.address() as { port: number };
    await new Promise<void>((r) => srv.close(() => r()));
    return `tcp://127.0.0.1:${port}`;
  }

  it('a tuple lives while its publisher refreshes it every ttl/3, and leaves the view within its ttl once it is gone', async () => {
    const bind = await freeEndpoint();
    const seed = new Gossip({ bind, ttl: 30 });
    await seed.start();
    cleanups.push(() => seed.stop());
    const client = new Gossip({ connect: [bind], ttl: 30 });
    await client.start();
    let clientStopped = false;
    cleanups.push(() => (clientStopped ? undefined : client.stop()));
    const key = 'AB'.repeat(16);
    const refreshes: number[] = [];
    const t0 = Date.now();
    const expired: number[] = [];
    seed.on('expire', (t) => t.key === key && expired.push(Date.now() - t0));
    client.publish(key, 'tcp://127.0.0.1:4242');
    await settle(() => seed.view().get(key) === 'tcp://127.0.0.1:4242', 'the tuple at the seed');
    const received = () => seed.stats().received;

    // Two minutes: four times the lease. The publisher republishes every 10 s and the tuple stays.
    let last = received();
    for (let t = 0; t < 120_000; t += 500) {
      await elapse(500);
      if (received() > last) refreshes.push(Date.now() - t0);
      last = received();
      expect(seed.view().has(key)).toBe(true);
    }
    expect(expired).toEqual([]);
    // Ping/pong is not counted as received; only the PUBLISH refreshes are, about every 10 s.
    expect(refreshes.length).toBeGreaterThanOrEqual(11);
    expect(refreshes.length).toBeLessThanOrEqual(13);

    // The publisher goes without a word: the tuple expires within 30 s of its last refresh.
    const lastRefresh = refreshes.at(-1)!;
    await client.stop();
    clientStopped = true;
    const gone = Date.now() - t0;
    await elapse(40_000, 100, () => expired.length > 0);
    expect(expired).toHaveLength(1);
    expect(expired[0]!).toBeGreaterThanOrEqual(lastRefresh + 29_500);
    expect(expired[0]!).toBeLessThanOrEqual(gone + 30_500);
    expect(seed.view().has(key)).toBe(false);
    expect(seed.stats().expired).toBe(1);
  }, 60_000);
});

describe('the supervisor\'s backoff over an hour, on fake time', () => {
  /** A built-in service that fails to start while `broken`, and can fail while running. */
  class Breakable extends ServiceBase {
    readonly name = 'device';
    broken = true;
    starts: number[] = [];
    async start(): Promise<void> {
      this.starts.push(Date.now());
      if (this.broken) {
        this.setState('failed');
        throw new Error('sensor bus not there');
      }
      this.setState('running');
    }
    async stop(): Promise<void> {
      this.setState('stopped');
    }
    crash(): void {
      this.setState('failed');
    }
  }

  it('a built-in service failing for an hour is tried on the 1 s … 60 s schedule; after a stable minute it starts again from 1 s', async () => {
    const svc = new Breakable();
    const sup = new Supervisor([svc], new LogRing(100, null));
    cleanups.push(() => sup.stop(2000));
    const t0 = Date.now();
    await sup.start();
    await vi.advanceTimersByTimeAsync(3600_000);
    const gaps = svc.starts.slice(1).map((t, i) => t - svc.starts[i]!);
    const nominal = (i: number) => Math.min(BUILTIN_POLICY.backoffMax, BUILTIN_POLICY.backoffMin * 2 ** i);
    gaps.forEach((g, i) => {
      expect(g).toBeLessThanOrEqual(nominal(i));
      expect(g).toBeGreaterThanOrEqual(Math.floor(nominal(i) * 0.8));
    });
    // 1+2+…+32 s ≈ 63 s, then one try a minute (less up to 20 % jitter): about 65 to 80 in the hour.
    expect(svc.starts.length).toBeGreaterThanOrEqual(60);
    expect(svc.starts.length).toBeLessThanOrEqual(80);
    expect(svc.starts.at(-1)! - t0).toBeLessThanOrEqual(3600_000);
    expect(sup.problems()).toEqual([expect.stringMatching(/^device: sensor bus not there \(retry in \d+ s\)$/)]);

    // It comes back: the next try starts it. After a minute of running, a crash is retried after 1 s again.
    svc.broken = false;
    await vi.advanceTimersByTimeAsync(60_000);
    expect(svc.state).toBe('running');
    expect(sup.healthy()).toBe(true);
    await vi.advanceTimersByTimeAsync(BUILTIN_POLICY.stableAfter + 1000);
    const before = svc.starts.length;
    svc.crash();
    await vi.advanceTimersByTimeAsync(790); // the delay is 1 s less up to 20 % jitter
    expect(svc.starts.length).toBe(before);
    await vi.advanceTimersByTimeAsync(210);
    expect(svc.starts.length).toBe(before + 1);
    expect(sup.delays('device').at(-1)).toBeLessThanOrEqual(1000);
    expect(sup.delays('device').at(-1)).toBeGreaterThanOrEqual(800);
  });
});
