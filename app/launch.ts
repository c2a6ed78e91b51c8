/**
 * What runs when `starling run` starts: the installed program, or a release installed by an update
 * (runtime/update/releases.ts). `launchRelease` is the guard — the installed program's part that updates
 * never replace: it counts a trial's starts, rolls back, checks the bundle's hash, then hands over to the
 * release in this same process (no second Node), with a deadline for the release to commit.
 */
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import pkg from '../package.json' with { type: 'json' };
import { chooseRelease, noteTrialFailure, readLink, readState, releasesDir, BUNDLE_FILE } from '../runtime/update/releases.ts';
import type { SignedManifest } from '../runtime/update/release.ts';

/** The installed program's version. */
export const INSTALLED_VERSION: string = pkg.version;

/** The version running: the release handed over to, or the installed program's. */
export function runningVersion(): string {
  return process.env.STARLING_RELEASE_RUNNING || INSTALLED_VERSION;
}

/** The SHA-256 of the release bundle running, when a release runs. */
export function runningRelease(): string | undefined {
  const dir = releasesDir();
  const v = process.env.STARLING_RELEASE_RUNNING;
  if (!dir || !v) return undefined;
  try {
    return (JSON.parse(readFileSync(join(dir, v, 'manifest.json'), 'utf8')) as SignedManifest).manifest.sha256;
  } catch {
    return undefined;
  }
}

/** The installed program's own bundle file, when it runs as one (its chunks seed an update). */
export function baseBundle(): string | undefined {
  const dir = process.env.STARLING_BASE_DIR || (typeof __filename === 'undefined' ? undefined : dirname(__filename));
  const f = dir ? join(dir, BUNDLE_FILE) : undefined;
  return f && existsSync(f) ? f : undefined;
}

const line = (level: string, msg: string) => process.stdout.write(JSON.stringify({ ts: Date.now(), level, service: 'update', msg }) + '\n');

/**
 * For `run`: hands over to the release `current` names, when there is one newer than this program. Returns
 * true when it did (the release's own CLI now runs the command). Never throws: anything wrong means running
 * the installed program.
 */
export function launchRelease(argv: string[]): boolean {
  if (argv[0] !== 'run' || process.env.STARLING_RELEASE_RUNNING) return false;
  const dir = releasesDir();
  if (!dir || !existsSync(dir)) return false;
  const choice = chooseRelease(dir, INSTALLED_VERSION);
  for (const n of choice.notes) line(/restoring|unreadable|does not/.test(n) ? 'warn' : 'info', n);
  if (!choice.bundle || !choice.version) return false;
  process.env.STARLING_RELEASE_RUNNING = choice.version;
  if (typeof __filename !== 'undefined') process.env.STARLING_BASE_DIR = dirname(__filename);
  const trial = choice.trial;
  if (trial) {
    // The release must commit within its deadline; otherwise this start counts as failed.
    const version = choice.version;
    setTimeout(() => {
      const s = readState(dir);
      if (s?.version !== version || s.state !== 'trying' || readLink(dir, 'current') !== version) return;
      const why = `not committed within ${trial.deadlineMs / 1000} s of starting`;
      noteTrialFailure(dir, version, why);
      line('error', `release ${version} ${why}: stopping so the next start counts it`);
      // Stop as on SIGTERM (a working supervisor puts its outputs to their safe level first), but exit 1 so
      // systemd's Restart=on-failure starts again: a SIGTERM death or exit 0 would count as a clean stop.
      process.on('exit', () => {
        process.exitCode = 1;
      });
      process.on('SIGTERM', () => {}); // a release without a handler is not killed by it: the exit below ends it
      process.kill(process.pid, 'SIGTERM');
      setTimeout(() => process.exit(1), 15_000).unref();
    }, trial.deadlineMs).unref();
  }
  line('info', `running release ${choice.version} (${choice.bundle}); the installed program is ${INSTALLED_VERSION}`);
  try {
    createRequire(choice.bundle)(choice.bundle);
  } catch (e) {
    // Throwing while loading is a failed start like any other: the next start counts it.
    noteTrialFailure(dir, choice.version, `failed to load: ${(e as Error).message}`);
    line('error', `release ${choice.version} failed to load: ${(e as Error).message}`);
    process.exit(1);
  }
  return true;
}
