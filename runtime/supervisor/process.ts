/**
 * An external service: a child process started from the configuration, restarted by its policy with
 * exponential backoff and jitter (reset once it has run `stableAfter` ms), stopped with SIGTERM and, after
 * `stopTimeout`, SIGKILL — to its whole process group, so nothing is orphaned. Its output lines go to the log
 * ring. The supervisor never dies because a child does, and keeps no per-restart state (memory stays flat).
 *
 * Output is cut into lines of at most 4,096 characters as it arrives: a child that writes without newlines
 * costs one bounded buffer, and what passes the bound is counted (`truncatedBytes`), not kept. Once the child
 * has exited, its pipes are closed (after half a second for its last lines), so a grandchild that escaped the
 * process group with setsid cannot hold them — and with them the supervisor's exit. Under systemd the unit's
 * cgroup then ends whatever such a grandchild left running (KillMode=control-group).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { Backoff } from '../backoff.ts';
import type { LogRing } from './log.ts';
import { progressHealth, ServiceBase, type Counters, type Health } from './service.ts';

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
/** How long a child's pipes stay open after it exited, for its last lines. */
const PIPE_GRACE_MS = 500;

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
  /** Output characters past MAX_LINE on one line, dropped (not buffered). */
  truncatedBytes = 0;

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
      stream.setEncoding('utf8');
      const lines = new LineCutter(MAX_LINE, (line) => {
        this.lastOutput = Date.now();
        this.log.log(level, s.name, line);
      }, (n) => (this.truncatedBytes += n));
      stream.on('data', (chunk: string) => lines.feed(chunk));
      stream.on('end', () => lines.end());
      stream.on('error', () => {});
    }
    // The child is gone but its pipes may live on in an escaped grandchild: close them after a grace period.
    child.once('exit', () => setTimeout(() => {
      child.stdout?.destroy();
      child.stderr?.destroy();
    }, PIPE_GRACE_MS).unref());
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
    // Anything the child left behind in its group goes too; its pipes are closed even if an escapee holds them.
    signal('SIGKILL');
    child.stdout?.destroy();
    child.stderr?.destroy();
  }

  /** SIGKILL to the process group now (the supervisor's shutdown deadline passed). */
  forceStop(): void {
    const pid = this.child?.pid;
    if (pid === undefined) return;
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }

  override stats(): Counters {
    return { 'output.truncatedChars': this.truncatedBytes };
  }

  override health(): Health {
    return progressHealth(this.state, this.lastOutput ?? this.startedAt, this.spec.progressInterval);
  }
}

/**
 * Splits text into lines as it arrives, keeping at most `max` characters of the current line: the rest of a
 * long line (up to its newline) is counted through `dropped`, never buffered; the kept part is emitted with
 * '…' when the newline comes, or at once when the bound is reached.
 */
export class LineCutter {
  private buf = '';
  private cutting = false;

  constructor(private readonly max: number, private readonly emit: (line: string) => void, private readonly dropped: (chars: number) => void) {}

  feed(chunk: string): void {
    let from = 0;
    while (from < chunk.length) {
      const nl = chunk.indexOf('\n', from);
      const end = nl < 0 ? chunk.length : nl;
      if (this.cutting) this.dropped(end - from);
      else {
        const room = this.max - this.buf.length;
        if (end - from > room) {
          this.buf += chunk.slice(from, from + room);
          this.dropped(end - from - room);
          this.emit(this.buf + '…');
          this.buf = '';
          this.cutting = true;
        } else this.buf += chunk.slice(from, end);
      }
      if (nl < 0) return;
      if (!this.cutting) this.emit(this.buf.endsWith('\r') ? this.buf.slice(0, -1) : this.buf);
      this.buf = '';
      this.cutting = false;
      from = nl + 1;
    }
  }

  /** The stream ended: a last line without newline is emitted. */
  end(): void {
    if (this.buf && !this.cutting) this.emit(this.buf);
    this.buf = '';
    this.cutting = false;
  }
}
