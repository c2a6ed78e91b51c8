/**
 * Releases on a device, beside the installed program (never over it):
 *
 *   DIR/                       $STARLING_RELEASES, or $STATE_DIRECTORY/releases (/var/lib/starling/releases)
 *     0.2.0/starling.cjs       a release: the bundle …
 *     0.2.0/manifest.json      … and the signed manifest it was installed from
 *     current -> 0.2.0         what `starling run` runs (a symlink, renamed into place: the swap is atomic)
 *     previous -> 0.1.4        what it ran before (restored on rollback); absent: the installed program
 *     state.json               the update's state: trying | committed | rolled-back, attempts, error
 *     incoming/                transfers in progress (resumed after a restart)
 *
 * The guard (`chooseRelease`, run by the installed program before anything else when it starts `run`) is the
 * part an update never replaces: it counts the starts of a release on trial, restores `previous` after
 * `maxAttempts` failed ones, and checks the release's hash before running it. The installed program runs
 * itself when there is no release, or when it is as new as the release or newer (an `apt install` of a newer
 * .deb wins over an older update).
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { writeDurable } from '../durable.ts';
import type { Manifest, SignedManifest } from './release.ts';

export const BUNDLE_FILE = 'starling.cjs';

export type UpdateState = 'trying' | 'committed' | 'rolled-back';

export interface ReleaseState {
  version: string;
  state: UpdateState;
  /** Starts of this version while on trial. */
  attempts: number;
  maxAttempts: number;
  /** On trial: healthy this long commits it. */
  commitAfterMs: number;
  /** On trial: not committed this long after a start counts as a failed start. */
  deadlineMs: number;
  /** Peers seen when it was installed: with some, committing waits until one is seen again. */
  peers: number;
  /** The version it replaced. */
  from: string;
  error?: string;
  at: string;
}

/** The releases directory of this process, or undefined (a development run: no updates). */
export function releasesDir(env = process.env): string | undefined {
  if (env.STARLING_RELEASES) return env.STARLING_RELEASES;
  const state = env.STATE_DIRECTORY?.split(':')[0];
  return state ? join(state, 'releases') : undefined;
}

const fsyncDir = (dir: string): void => {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
};

/** Points `link` (in `dir`) at `target` atomically: a new symlink renamed over the old one, the directory fsynced. */
function relink(dir: string, link: string, target: string | undefined): void {
  const path = join(dir, link);
  if (target === undefined) rmSync(path, { force: true });
  else {
    const tmp = `${path}.new`;
    rmSync(tmp, { force: true });
    symlinkSync(target, tmp);
    renameSync(tmp, path);
  }
  fsyncDir(dir);
}

export function readLink(dir: string, link: string): string | undefined {
  try {
    return readlinkSync(join(dir, link));
  } catch {
    return undefined;
  }
}

export function readState(dir: string): ReleaseState | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as ReleaseState;
  } catch {
    return undefined;
  }
}

export function writeState(dir: string, s: ReleaseState): void {
  writeDurable(join(dir, 'state.json'), JSON.stringify(s, null, 1) + '\n', 0o640);
  fsyncDir(dir);
}

/** Where transfers of `sha256` are written while they run. */
export function incomingPath(dir: string, sha256: string): string {
  mkdirSync(join(dir, 'incoming'), { recursive: true, mode: 0o750 });
  return join(dir, 'incoming', `${sha256}.part`);
}

/** The running release's bundle (for reusing its chunks), if any. */
export function currentBundle(dir: string): string | undefined {
  const v = readLink(dir, 'current');
  return v ? join(dir, v, BUNDLE_FILE) : undefined;
}

/**
 * Installs a fetched, checked release: `part` becomes DIR/VERSION/starling.cjs beside its manifest (files and
 * directories fsynced), `previous` is pointed at what ran, `current` is swapped to the new version, and the
 * state says `trying` (attempt 0). The caller then restarts. `running` is the version running now.
 */
export function install(dir: string, signed: SignedManifest, part: string, running: string, trial: { maxAttempts: number; commitAfterMs: number; deadlineMs: number; peers: number }): void {
  const m: Manifest = signed.manifest;
  const vdir = join(dir, m.version);
  const tmp = `${vdir}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true, mode: 0o750 });
  const bundle = join(tmp, BUNDLE_FILE);
  renameSync(part, bundle);
  const fd = openSync(bundle, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  writeDurable(join(tmp, 'manifest.json'), JSON.stringify(signed, null, 1) + '\n', 0o640);
  fsyncDir(tmp);
  rmSync(vdir, { recursive: true, force: true });
  renameSync(tmp, vdir);
  fsyncDir(dir);
  const was = readLink(dir, 'current');
  // What ran before is what a rollback restores: the release it was, or (no link) the installed program —
  // unless that one was itself still on trial: then the last good one stays `previous`.
  const s = readState(dir);
  const wasOnTrial = s?.version === was && s?.state === 'trying';
  if (was !== m.version && !wasOnTrial) relink(dir, 'previous', was);
  relink(dir, 'current', m.version);
  writeState(dir, { version: m.version, state: 'trying', attempts: 0, ...trial, from: running, at: new Date().toISOString() });
  // Keep only current and previous.
  const keep = new Set([m.version, readLink(dir, 'previous')]);
  for (const v of listVersions(dir)) if (!keep.has(v)) rmSync(join(dir, v), { recursive: true, force: true });
}

function listVersions(dir: string): string[] {
  try {
    return readdirSync(dir).filter((n) => /^\d+\.\d+\.\d+/.test(n) && !n.endsWith('.tmp'));
  } catch {
    return [];
  }
}

/** Marks the release on trial as committed (healthy long enough). */
export function commit(dir: string, version: string): boolean {
  const s = readState(dir);
  if (!s || s.version !== version || s.state !== 'trying') return false;
  writeState(dir, { ...s, state: 'committed', at: new Date().toISOString() });
  return true;
}

/** Restores `previous` as current and records why (the next start runs it). */
export function rollBack(dir: string, why: string): ReleaseState | undefined {
  const s = readState(dir);
  const prev = readLink(dir, 'previous');
  relink(dir, 'current', prev);
  relink(dir, 'previous', undefined);
  if (!s) return undefined;
  const next: ReleaseState = { ...s, state: 'rolled-back', error: why, at: new Date().toISOString() };
  writeState(dir, next);
  return next;
}

export interface Choice {
  /** The bundle to run instead of ourselves, or undefined: run the installed program. */
  bundle?: string;
  version?: string;
  /** On trial: the deadline (ms from now) for committing, after which this start counts as failed. */
  trial?: ReleaseState;
  /** What the guard did, for the log (a rollback, a bad hash, a newer installed program). */
  notes: string[];
}

/**
 * The guard: what `starling run` should run now. `installed` is this program's version. Counts a start of
 * a release on trial; after its `maxAttempts`, or when its bundle does not match its manifest, restores the
 * previous one. Never throws: a damaged releases directory means running the installed program.
 */
export function chooseRelease(dir: string, installed: string): Choice {
  const notes: string[] = [];
  for (let round = 0; round < 3; round++) {
    const v = readLink(dir, 'current');
    if (!v) return { notes };
    if (compareVersions(installed, v) >= 0) {
      notes.push(`the installed program (${installed}) is as new as release ${v} or newer: running it`);
      return { notes };
    }
    const s = readState(dir);
    const bundle = join(dir, v, BUNDLE_FILE);
    let ok: string | undefined;
    try {
      const signed = JSON.parse(readFileSync(join(dir, v, 'manifest.json'), 'utf8')) as SignedManifest;
      const digest = (process.getBuiltinModule('node:crypto') as typeof import('node:crypto')).createHash('sha256').update(readFileSync(bundle)).digest('hex');
      if (digest !== signed.manifest.sha256) ok = `release ${v}: ${BUNDLE_FILE} does not match its manifest`;
    } catch (e) {
      ok = `release ${v} is unreadable: ${(e as Error).message}`;
    }
    if (ok) {
      notes.push(`${ok}; restoring ${readLink(dir, 'previous') ?? 'the installed program'}`);
      rollBack(dir, ok);
      continue;
    }
    if (s?.version === v && s.state === 'trying') {
      if (s.attempts >= s.maxAttempts) {
        const why = `release ${v} did not become healthy in ${s.attempts} start(s)${s.error ? ` (last: ${s.error})` : ''}`;
        notes.push(`${why}; restoring ${readLink(dir, 'previous') ?? 'the installed program'}`);
        rollBack(dir, why);
        continue;
      }
      const next = { ...s, attempts: s.attempts + 1 };
      writeState(dir, next);
      notes.push(`release ${v} on trial: start ${next.attempts} of ${s.maxAttempts}`);
      return { bundle, version: v, trial: next, notes };
    }
    return { bundle, version: v, notes };
  }
  return { notes };
}

/** Records why a start on trial failed (the next start counts it). */
export function noteTrialFailure(dir: string, version: string, why: string): void {
  const s = readState(dir);
  if (s?.version === version && s.state === 'trying') writeState(dir, { ...s, error: why });
}

/** <0, 0, >0 as a is older, equal, newer than b (semver order: a -pre is older than its release). */
export function compareVersions(a: string, b: string): number {
  const [an, ap] = a.split('-', 2) as [string, string | undefined];
  const [bn, bp] = b.split('-', 2) as [string, string | undefined];
  const x = an.split('.').map(Number);
  const y = bn.split('.').map(Number);
  for (let i = 0; i < 3; i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  if (ap === bp) return 0;
  if (ap === undefined) return 1;
  if (bp === undefined) return -1;
  return ap < bp ? -1 : 1;
}
