/**
 * Logs: structured JSON lines to stdout (journald takes them) and a bounded ring in RAM that `starling logs`
 * reads over D-Bus. Nothing is written to the SD card. When the ring is full the oldest entry goes (counted).
 */
import { BoundedQueue } from '../queue.ts';

export type Level = 'debug' | 'info' | 'warn' | 'error';

export interface LogEntry {
  ts: number;
  level: Level;
  /** The service the entry is about ('supervisor' for its own). */
  service: string;
  msg: string;
  [key: string]: unknown;
}

export class LogRing {
  private readonly ring: BoundedQueue<LogEntry>;
  private readonly listeners = new Set<(e: LogEntry) => void>();
  /** Entries pushed out of the full ring. */
  evicted = 0;

  /** `echo`: where each entry also goes as a JSON line (stdout by default; `null` keeps entries in the ring only). */
  constructor(capacity = 2000, private readonly echo: ((line: string) => void) | null = (l) => process.stdout.write(l + '\n')) {
    this.ring = new BoundedQueue(capacity);
  }

  log(level: Level, service: string, msg: string, fields: Record<string, unknown> = {}): void {
    const entry: LogEntry = { ts: Date.now(), level, service, msg, ...fields };
    if (!this.ring.push(entry)) {
      this.ring.shift();
      this.evicted++;
      this.ring.push(entry);
    }
    this.echo?.(JSON.stringify(entry));
    for (const l of this.listeners) l(entry);
  }

  /** The last `count` entries, of one service or all, oldest first. */
  tail(count: number, service?: string): LogEntry[] {
    return [...this.ring].filter((e) => !service || e.service === service).slice(-count);
  }

  /** Calls `listener` for each new entry; returns the function that stops it. */
  follow(listener: (e: LogEntry) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
