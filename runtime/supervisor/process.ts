/**
 * An external service: a child process started from the configuration, restarted by its policy with
 * exponential backoff and jitter (reset once it has run `stableAfter` ms), stopped with SIGTERM and, after
 * `stopTimeout`, SIGKILL — to its whole process group, so nothing is orphaned. Its output lines go to the log
 * ring. The supervisor never dies because a child does, and keeps no per-restart state (memory stays flat).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { Backoff } from '../backoff.ts';
import type { LogRing } from './log.ts';
import { progressHealth, ServiceBase, type Health } from './service.ts';

export interface ProcessSpec {
  name: string;
  command: string;
  args: string[];
  env: Record<string, string>;
  cwd?: string;
  restart: 'always' | 'on-failure' | 'never';
  /** ms */
  backoffMin: number;
  backoffMax: number;
  stopTimeout: number;
  /** After running this long, the backoff starts again from backoffMin. */
  stableAfter: number;
  /** When set, the service counts as unhealthy if it printed no line for twice this long (ms). */
  progressInterval?: number;
}

/** Output lines longer than this are cut (the log ring must stay bounded). */
const MAX_LINE = 4096;

export class ProcessService extends ServiceBase {
  private child: ChildProcess | undefined;
  private exited: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stableTimer: NodeJS.Timeout | undefined;
  private readonly backoff: Backoff;
  private lastOutput: number | undefined;
  private startedAt: number | undefined;
  /** The most recent restart delays (ms), newest last; at most 20 kept. */
  readonly recentDelays: number[] = [];
  lastExit: { code: number | null; signal: string | null } | undefined;

  constructor(readonly spec: ProcessSpec, private readonly log: LogRing) {
    super();
    this.backoff = new Backoff({ min: spec.backoffMin, max: spec.backoffMax });
  }

  get name(): string {
    return this.spec.name;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(): Promise<void> {
    if (this.state === 'running' || this.state === 'starting') return;
    clearTimeout(this.timer);
    this.spawn();
  }

  private spawn(): void {
    const s = this.spec;
    this.setState('starting');
    let child: ChildProcess;
    try {
      // detached: the child leads its own process group, so stop() can signal everything it started.
      child = spawn(s.command, s.args, { cwd: s.cwd, env: { ...process.env, ...s.env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    } catch (e) {
      this.log.log('error', s.name, `cannot start: ${(e as Error).message}`);
      this.onExit(null, null, (e as Error).message);
      return;
    }
    this.child = child;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.onExit(code, signal);
        resolve();
      });
      child.once('error', (e) => {
        // spawn failure (ENOENT …): 'exit' may not follow
        if (child.pid === undefined) {
          this.onExit(null, null, e.message);
          resolve();
        }
      });
    });
    for (const [stream, level] of [[child.stdout!, 'info'], [child.stderr!, 'warn']] as const) {
      createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
        this.lastOutput = Date.now();
        this.log.log(level, s.name, line.length > MAX_LINE ? line.slice(0, MAX_LINE) + '…' : line);
      });
    }
    if (child.pid !== undefined) {
      this.startedAt = Date.now();
      this.setState('running');
      this.log.log('info', 'supervisor', `started ${s.name}`, { pid: child.pid });
      this.stableTimer = setTimeout(() => this.backoff.reset(), s.stableAfter);
    }
  }

  private onExit(code: number | null, signal: string | null, error?: string): void {
    clearTimeout(this.stableTimer);
    this.child = undefined;
    this.lastExit = { code, signal };
    if (this.state === 'stopping' || this.state === 'stopped') {
      this.setState('stopped');
      return;
    }
    const failed = error !== undefined || code !== 0;
    const why = error ?? (signal ? `killed by ${signal}` : `exited with ${code}`);
    const again = this.spec.restart === 'always' || (this.spec.restart === 'on-failure' && failed);
    if (!again) {
      this.log.log(failed ? 'error' : 'info', 'supervisor', `${this.spec.name} ${why}; restart policy ${this.spec.restart}: not restarting`);
      this.setState(failed ? 'failed' : 'exited');
      return;
    }
    const delay = this.backoff.next();
    this.recentDelays.push(delay);
    if (this.recentDelays.length > 20) this.recentDelays.shift();
    this.log.log('warn', 'supervisor', `${this.spec.name} ${why}; restarting in ${delay} ms`, { attempt: this.backoff.attempts });
    this.setState('backoff');
    this.timer = setTimeout(() => {
      this.restarts++;
      this.spawn();
    }, delay);
  }

  /** SIGTERM to the process group, SIGKILL after stopTimeout; resolves when the child is gone. */
  async stop(): Promise<void> {
    clearTimeout(this.timer);
    clearTimeout(this.stableTimer);
    const child = this.child;
    if (!child || child.pid === undefined) {
      this.setState('stopped');
      return;
    }
    this.setState('stopping');
    const group = -child.pid;
    const signal = (sig: NodeJS.Signals) => {
      try {
        process.kill(group, sig);
      } catch {
        // already gone
      }
    };
    signal('SIGTERM');
    const killer = setTimeout(() => {
      this.log.log('warn', 'supervisor', `${this.spec.name} did not stop within ${this.spec.stopTimeout} ms: SIGKILL`);
      signal('SIGKILL');
    }, this.spec.stopTimeout);
    await this.exited;
    clearTimeout(killer);
    // Anything the child left behind in its group goes too.
    signal('SIGKILL');
  }

  override health(): Health {
    return progressHealth(this.state, this.lastOutput ?? this.startedAt, this.spec.progressInterval);
  }
}
