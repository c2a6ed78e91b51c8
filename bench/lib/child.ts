// What the bench scripts share: child processes speaking JSON lines, one role each.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

/** Writes one JSON line to stdout (a child's report to the conductor). */
export const emit = (rec: Record<string, unknown>): void => {
  process.stdout.write(JSON.stringify(rec) + '\n');
};

/** Resolves when the conductor closes our stdin (its way of saying "finish now"). */
export function waitForStdinEnd(): Promise<void> {
  return new Promise((resolve) => {
    process.stdin.on('data', () => {});
    process.stdin.on('end', resolve);
    process.stdin.on('close', resolve);
  });
}

export interface Child {
  /** The next line of the child whose `event` is `event`; earlier lines are skipped. */
  next(event: string): Promise<Record<string, unknown>>;
  /** Closes the child's stdin and waits for it to exit. */
  end(): Promise<void>;
}

/** Starts `cmd`, inside network namespace `ns` when given; its stdout is read as JSON lines. */
export function child(cmd: string[], ns?: string): Child {
  const full = ns ? ['ip', 'netns', 'exec', ns, ...cmd] : cmd;
  const proc = spawn(full[0]!, full.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
  return {
    async next(event) {
      for (;;) {
        const { value, done } = await lines.next();
        if (done) throw new Error(`bench child ${cmd.join(' ')} ended before '${event}'`);
        const rec = JSON.parse(value as string) as Record<string, unknown>;
        if (rec.event === event) return rec;
      }
    },
    end() {
      proc.stdin!.end();
      return new Promise((r) => (proc.exitCode !== null ? r() : proc.once('exit', () => r())));
    },
  };
}
