/**
 * The telemetry subscriber: one SUB socket connected to any number of publishers (tcp, ipc, epgm), batches
 * decoded in place, loss detected per (publisher, topic) from the sample sequence numbers, and late joining
 * served by each publisher's snapshot (FORMAT.md, "Late joiners").
 *
 * Events fire synchronously from the receive loop:
 *   - `batch` (batch, from): samples `from`..`count-1` of `batch` are new (earlier ones were already
 *     delivered, e.g. by a snapshot); snapshot batches come first for a publisher that was just connected.
 *   - `gap` ({publisher, topic, lost}): `lost` samples of that topic never arrived.
 */
import { EventEmitter } from 'node:events';
import { Dealer, Subscriber as ZmqSubscriber, capability } from 'zeromq';
import { BoundedQueue } from '../queue.ts';
import { Batch } from './sample.ts';

export interface SubscriberOptions {
  /** Topic prefix to receive; '' (default) for everything. */
  prefix?: string;
  /** Live batches held (per snapshot in progress) until the snapshot ends. Default 10000. */
  holdLimit?: number;
  /** Give up on a snapshot after this long. Default 2000 ms. */
  snapshotTimeout?: number;
  /** (publisher, topic) pairs whose sequence is tracked; the least recent is forgotten past it. Default 65536. */
  maxStreams?: number;
  receiveHighWaterMark?: number;
  /** epgm receive rate in kbit/s (ZMQ_RATE), which also sizes PGM's receive window; match the publisher's. Default 10000. */
  rate?: number;
}

export interface SubscriberStats {
  batchesReceived: number;
  samplesReceived: number;
  /** Samples that never arrived (sequence gaps). */
  samplesLost: number;
  gaps: number;
  /** Samples received twice (e.g. both in a snapshot and live), not delivered again. */
  duplicates: number;
  /** Messages that were not valid batches, dropped. */
  malformed: number;
  /** Live batches dropped because the hold queue was full while a snapshot was pending. */
  heldDropped: number;
  snapshots: number;
  snapshotTimeouts: number;
}

export interface SubscriberEvents {
  batch: [Batch, number];
  gap: [{ publisher: string; topic: string; lost: number }];
}

interface Pending {
  dealer: Dealer;
  held: BoundedQueue<Batch>;
}

const DEFAULTS = { prefix: '', holdLimit: 10_000, snapshotTimeout: 2000, maxStreams: 65_536, receiveHighWaterMark: 1000, rate: 10_000 };

export class Subscriber extends EventEmitter<SubscriberEvents> {
  private readonly opts: typeof DEFAULTS & SubscriberOptions;
  private socket: ZmqSubscriber | undefined;
  private loop: Promise<void> | undefined;
  /** Next expected sequence per publisher + '\n' + topic. */
  private readonly expected = new Map<string, number>();
  private readonly pending = new Set<Pending>();
  private readonly connected = new Set<string>();
  private paused: Promise<void> | undefined;
  private resumeFn: (() => void) | undefined;
  private readonly counters: SubscriberStats = {
    batchesReceived: 0, samplesReceived: 0, samplesLost: 0, gaps: 0, duplicates: 0, malformed: 0, heldDropped: 0, snapshots: 0, snapshotTimeouts: 0,
  };

  /** Stores the options; opens nothing. */
  constructor(options: SubscriberOptions = {}) {
    super();
    this.opts = { ...DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) } as typeof DEFAULTS & SubscriberOptions;
  }

  /** Opens the SUB socket and subscribes to the prefix; connect publishers with {@link connect}. */
  start(): void {
    this.socket = new ZmqSubscriber({ linger: 0, receiveHighWaterMark: this.opts.receiveHighWaterMark, rate: this.opts.rate });
    this.socket.subscribe(this.opts.prefix);
    this.loop = this.receiveLoop(this.socket);
  }

  /**
   * Connects to a publisher endpoint. With `snapshotEndpoint`, first asks that publisher for the last value of
   * each topic under the prefix; resolves when the snapshot was delivered (or timed out). Connecting an
   * endpoint twice does nothing. epgm endpoints need a zeromq.js with OpenPGM (see image/setup.sh).
   */
  async connect(endpoint: string, snapshotEndpoint?: string): Promise<void> {
    if (!this.socket) throw new Error('subscriber not started');
    if (this.connected.has(endpoint)) return;
    if (/^e?pgm:/.test(endpoint) && !capability.pgm) {
      throw new Error('epgm is not available in this zeromq.js build; run `bash image/setup.sh` to build it against the system libzmq');
    }
    this.connected.add(endpoint);
    // Subscribe to the live stream before asking for the snapshot, so nothing falls between the two.
    this.socket.connect(endpoint);
    if (snapshotEndpoint) await this.requestSnapshot(snapshotEndpoint);
  }

  disconnect(endpoint: string): void {
    if (!this.connected.delete(endpoint)) return;
    try {
      this.socket?.disconnect(endpoint);
    } catch {
      // not connected any more
    }
  }

  /** Stops reading: ZeroMQ then holds messages up to its high-water mark and the publisher goes mute. */
  pause(): void {
    if (!this.paused) this.paused = new Promise((r) => (this.resumeFn = r));
  }

  resume(): void {
    this.resumeFn?.();
    this.paused = undefined;
    this.resumeFn = undefined;
  }

  stats(): SubscriberStats {
    return { ...this.counters };
  }

  async stop(): Promise<void> {
    this.resume();
    for (const p of this.pending) p.dealer.close();
    this.pending.clear();
    this.socket?.close();
    await this.loop;
    this.socket = undefined;
  }

  private async requestSnapshot(endpoint: string): Promise<void> {
    const dealer = new Dealer({ linger: 0, receiveTimeout: this.opts.snapshotTimeout });
    const pending: Pending = { dealer, held: new BoundedQueue(this.opts.holdLimit) };
    this.pending.add(pending);
    const snapshot: Batch[] = [];
    try {
      dealer.connect(endpoint);
      await dealer.send(['SNAPSHOT', this.opts.prefix]);
      for (;;) {
        const [topic, frame] = await dealer.receive();
        if (!frame) break; // [END]
        try {
          snapshot.push(new Batch(topic!.toString('utf8'), frame));
        } catch {
          this.counters.malformed++;
        }
      }
      this.counters.snapshots++;
    } catch {
      this.counters.snapshotTimeouts++; // timed out or closed: carry on with the live stream alone
    } finally {
      dealer.close();
      this.pending.delete(pending);
    }
    for (const b of snapshot) this.deliver(b);
    for (let b = pending.held.shift(); b; b = pending.held.shift()) this.deliver(b);
    this.counters.heldDropped += pending.held.dropped;
  }

  private async receiveLoop(socket: ZmqSubscriber): Promise<void> {
    while (!socket.closed) {
      if (this.paused) await this.paused;
      let topic: Buffer | undefined;
      let frame: Buffer | undefined;
      try {
        [topic, frame] = await socket.receive();
      } catch {
        return; // closed
      }
      let batch: Batch;
      try {
        if (!topic || !frame) throw new Error('not two frames');
        batch = new Batch(topic.toString('utf8'), frame);
      } catch {
        this.counters.malformed++;
        continue;
      }
      this.counters.batchesReceived++;
      if (this.pending.size > 0) {
        for (const p of this.pending) p.held.push(batch);
        continue;
      }
      this.deliver(batch);
    }
  }

  /** Sequence bookkeeping (FORMAT.md "Sequence numbers and loss"), then the `batch` event for what is new. */
  private deliver(batch: Batch): void {
    const key = batch.publisher + '\n' + batch.topic;
    const want = this.expected.get(key);
    let from = 0;
    if (want !== undefined && batch.first !== want) {
      const ahead = (batch.first - want) >>> 0;
      if (ahead < 0x80000000) {
        this.counters.gaps++;
        this.counters.samplesLost += ahead;
        this.emit('gap', { publisher: batch.publisher, topic: batch.topic, lost: ahead });
      } else {
        const behind = (want - batch.first) >>> 0; // samples of this batch already delivered
        if (behind >= batch.count) {
          this.counters.duplicates += batch.count;
          return;
        }
        this.counters.duplicates += behind;
        from = behind;
      }
    }
    if (want === undefined && this.expected.size >= this.opts.maxStreams) this.expected.delete(this.expected.keys().next().value as string);
    this.expected.set(key, (batch.first + batch.count) >>> 0);
    this.counters.samplesReceived += batch.count - from;
    this.emit('batch', batch, from);
  }
}
