/**
 * An external service: a child process started from the configuration, stopped with SIGTERM and, after
 * `stopTimeout`, SIGKILL — to its whole process group, so nothing is orphaned. Its output lines go to the log
 * ring. When the child exits the service is `failed` (non-zero, a signal, or it could not start) or `exited`
 * (status 0); the Supervisor restarts it by its `policy` (restart, backoff, stable_after), as it does every
 * service. The supervisor never dies because a child does, and keeps no per-restart state (memory stays flat).
 *
 * Output is cut into lines of at most 4,096 characters as it arrives: a child that writes without newlines
 * costs one bounded buffer, and what passes the bound is counted (`truncatedBytes`), not kept. Once the child
 * has exited, its pipes are closed (after half a second for its last lines), so a grandchild that escaped the
 * process group with setsid cannot hold them — and with them the supervisor's exit. Under systemd the unit's
 * cgroup then ends whatever such a grandchild left running (KillMode=control-group).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { LogRing } from './log.ts';
import { progressHealth, ServiceBase, type Counters, type Health } from './service.ts';
import type { RestartPolicy } from './supervisor.ts';

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
  private lastOutput: number | undefined;
  private startedAt: number | undefined;
  private stopping = false;
  lastExit: { code: number | null; signal: string | null; error?: string } | undefined;
  /** Output characters past MAX_LINE on one line, dropped (not buffered). */
  truncatedBytes = 0;

  constructor(readonly spec: ProcessSpec, private readonly log: LogRing) {
    super();
  }

  get name(): string {
    return this.spec.name;
  }

  /** How the Supervisor restarts it: the spec's restart, backoff and stable_after. */
  get policy(): RestartPolicy {
    const s = this.spec;
    return { restart: s.restart, backoffMin: s.backoffMin, backoffMax: s.backoffMax, stableAfter: s.stableAfter };
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Spawns the child; rejects (state failed) when it cannot be started at all, e.g. a missing command. */
  async start(): Promise<void> {
    if (this.state === 'running' || this.state === 'starting') return;
    this.stopping = false;
    const s = this.spec;
    this.setState('starting');
    let child: ChildProcess;
    try {
      // detached: the child leads its own process group, so stop() can signal everything it started.
      child = spawn(s.command, s.args, { cwd: s.cwd, env: { ...process.env, ...s.env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    } catch (e) {
      this.lastExit = { code: null, signal: null, error: (e as Error).message };
      this.setState('failed');
      throw new Error(`cannot start: ${(e as Error).message}`);
    }
    this.child = child;
    const spawnFailed = new Promise<Error>((resolve) => child.once('error', (e) => child.pid === undefined && resolve(e)));
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.onExit(code, signal);
        resolve();
      });
      void spawnFailed.then((e) => {
        // spawn failure (ENOENT …): 'exit' may not follow
        this.child = undefined;
        this.lastExit = { code: null, signal: null, error: e.message };
        resolve();
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
    // The child is gone but its pipes may live on in an escaped grandchild: close them after a grace period
    // (unless they close by themselves, as they do when nobody else holds them).
    child.once('exit', () => {
      const timer = setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
      }, PIPE_GRACE_MS).unref();
      child.once('close', () => clearTimeout(timer));
    });
    if (child.pid === undefined) {
      const e = await spawnFailed;
      this.setState('failed');
      throw new Error(`cannot start ${s.command}: ${e.message}`);
    }
    this.startedAt = Date.now();
    this.lastOutput = undefined;
    this.setState('running');
    this.log.log('info', 'supervisor', `started ${s.name}`, { pid: child.pid });
  }

  private onExit(code: number | null, signal: string | null): void {
    this.child = undefined;
    this.lastExit = { code, signal };
    if (this.stopping || this.state === 'stopped') {
      this.setState('stopped');
      return;
    }
    this.setState(code === 0 ? 'exited' : 'failed');
  }

  /** SIGTERM to the process group, SIGKILL after stopTimeout; resolves when the child is gone. */
  async stop(): Promise<void> {
    this.stopping = true;
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
