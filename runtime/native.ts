/**
 * Where the bundle and the single executable find their native addons (zeromq, epoll, sd_notify).
 *
 * Only built code uses this: image/build.mjs's loader plugin replaces zeromq's and epoll's own loaders with a
 * call to `loadNative`. Run from TypeScript (tests, tsc output), the packages load themselves from node_modules.
 *
 * - Bundle (`dist/starling.cjs`): the addons are files in `native/` beside it.
 * - Single executable: they are SEA assets. An asset is written once to a cache directory under a name made of
 *   its SHA-256 (so versions never mix and a torn write is never loaded: write to a temporary name, rename),
 *   then loaded with `process.dlopen`. The cache directory is, first found: $STARLING_NATIVE_DIR, systemd's
 *   $CACHE_DIRECTORY (CacheDirectory=starling in the unit), $XDG_CACHE_HOME/starling, ~/.cache/starling,
 *   the system's temporary directory — the first that is ours and writable by no one else. Cost per start: a
 *   hash and a comparison of each addon with its cached copy (about 2 ms for the 2.4 MB here).
 *
 * zeromq has two builds, tried in this order, the first that loads wins:
 *   `zeromq-system` — compiled against the system's libzmq (Debian's has OpenPGM: epgm:// works); loads only
 *                     where libzmq.so.5 is installed;
 *   `zeromq`        — zeromq.js's prebuilt addon with libzmq linked in (tcp, ipc, CURVE; no epgm).
 * STARLING_ZEROMQ=prebuilt|system forces one. `nativeReport()` tells which one was loaded and why not the other.
 */
import { existsSync, lstatSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

/** Candidate files per addon, in order of preference. */
const CANDIDATES: Record<string, string[]> = {
  zeromq: ['zeromq-system', 'zeromq'],
  epoll: ['epoll'],
  // systemd notifications from the main process (runtime/supervisor/notify.ts); optional.
  sd_notify: ['sd_notify'],
};

const report: string[] = [];

/** What was loaded from where, and what failed to load, one line each. */
export function nativeReport(): readonly string[] {
  return report;
}

interface Sea {
  isSea(): boolean;
  getRawAsset(key: string): ArrayBuffer;
  getAssetKeys?(): string[];
}

function sea(): Sea | undefined {
  try {
    const s = process.getBuiltinModule('node:sea') as Sea;
    return s.isSea() ? s : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The directory native addons are written to and loaded from (and the executable's compiled code kept in:
 * app/sea-main.ts), made if need be; see the module's comment for the order. Throws when none will do.
 */
export function nativeCacheDir(): string {
  const env = process.env;
  const dirs = [
    env.STARLING_NATIVE_DIR,
    env.CACHE_DIRECTORY?.split(':')[0],
    env.XDG_CACHE_HOME ? join(env.XDG_CACHE_HOME, 'starling') : undefined,
    env.HOME ? join(homedir(), '.cache', 'starling') : undefined,
    join(tmpdir(), `starling-${process.getuid?.() ?? 'user'}`),
  ];
  for (const d of dirs) {
    if (!d) continue;
    const dir = join(d, 'native');
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      // Code is loaded from here: the directory must be ours and writable by no one else (a shared /tmp
      // could hold a directory someone else made, with their addon in it).
      const st = lstatSync(dir);
      if (!st.isDirectory() || st.uid !== process.getuid?.() || (st.mode & 0o022) !== 0) continue;
      return dir;
    } catch {
      // not writable here (a sandboxed service, a read-only home): try the next
    }
  }
  throw new Error(`no writable directory for native addons; tried ${dirs.filter(Boolean).join(', ')}`);
}

/** The path of addon file `file` (without .node), or undefined when this build has no such file. */
function locate(file: string, s: Sea | undefined): string | undefined {
  if (s) {
    let bytes: Buffer;
    try {
      bytes = Buffer.from(s.getRawAsset(`${file}.node`));
    } catch {
      return undefined;
    }
    const digest = (process.getBuiltinModule('node:crypto') as typeof import('node:crypto')).createHash('sha256').update(bytes).digest('hex').slice(0, 16);
    const dir = nativeCacheDir();
    const path = join(dir, `${file}-${digest}.node`);
    // Written once; a file that is there but differs (torn by a full disk, altered) is written again.
    if (!existsSync(path) || !readFileSync(path).equals(bytes)) {
      const tmp = `${path}.${process.pid}.tmp`;
      writeFileSync(tmp, bytes, { mode: 0o500 });
      renameSync(tmp, path);
    }
    return path;
  }
  return besideBundle(`${file}.node`);
}

/** File `name` in the bundle's native/ directory, or undefined when it is not there. */
export function besideBundle(name: string): string | undefined {
  // Run from TypeScript (ESM, no __filename) there is no native/ directory: the packages load themselves.
  if (typeof __filename === 'undefined') return undefined;
  // A release bundle run by the installed one (app/launch.ts) uses the installed program's addons.
  const path = join(process.env.STARLING_BASE_DIR || dirname(__filename), 'native', name);
  return existsSync(path) ? path : undefined;
}

/** An optional addon's exports, or undefined (the reason kept in nativeReport()) when this build cannot load it. */
export function loadOptionalNative(name: string): unknown {
  try {
    return loadNative(name);
  } catch (e) {
    report.push(`${name}: not loaded (${(e as Error).message})`);
    return undefined;
  }
}

const loaded = new Map<string, unknown>();

/** Loads addon `name` ('zeromq', 'epoll', 'sd_notify') once and returns its exports; throws with every attempt's reason. */
export function loadNative(name: string): unknown {
  if (loaded.has(name)) return loaded.get(name);
  let files = CANDIDATES[name];
  if (!files) throw new Error(`unknown native addon '${name}'`);
  const force = process.env.STARLING_ZEROMQ;
  if (name === 'zeromq' && force) {
    if (force !== 'system' && force !== 'prebuilt') throw new Error(`STARLING_ZEROMQ='${force}': expected system or prebuilt`);
    files = force === 'system' ? ['zeromq-system'] : ['zeromq'];
  }
  const s = sea();
  const failures: string[] = [];
  for (const file of files) {
    const path = locate(file, s);
    if (!path) {
      failures.push(`${file}: not in this build`);
      continue;
    }
    const module = { exports: {} as unknown };
    try {
      process.dlopen(module, path);
    } catch (e) {
      failures.push(`${file}: ${(e as Error).message.split('\n')[0]}`);
      continue;
    }
    report.push(`${name}: ${file} from ${path}`, ...failures.map((f) => `${name}: skipped ${f}`));
    loaded.set(name, module.exports);
    return module.exports;
  }
  throw new Error(`cannot load the native addon ${name}: ${failures.join('; ')}`);
}
