/**
 * The single executable's first script: it compiles and runs the bundle (its asset `starling.cjs`) with the
 * best compiled code it has for the command being run.
 *
 * Node's own code cache for a single executable (`useCodeCache`) is made at build time by compiling the bundle
 * without running it, so it holds the top-level code only; every function a start calls is still compiled
 * then, lazily (the configuration parser, the node, the services: about 10 ms of a device's start here). So:
 * - The build makes that same top-level cache, for the executable's Node and flags (`starling.cjs.cache`,
 *   image/build-exe.sh) — what a command runs with the first time.
 * - A command run without a cache of its own writes one once it has done its start-up work: V8's code for
 *   every function compiled by then (`vm.Script.createCachedData`), to `code-DIGEST-COMMAND.bin` in the
 *   directory the native addons are cached in (runtime/native.ts), written to a temporary name and renamed.
 *   `run` writes it 10 s after it started (its device is up by then), a short command when it exits. Later
 *   starts of that command compile nothing they did the first time.
 * DIGEST is the bundle's SHA-256, fixed at build time: V8 checks a cache's version and flags but not the text
 * it was made from, so the name keeps a cache to the bundle it came from. V8 refuses a cache that does not fit
 * (another Node, other flags): the start then compiles as usual and writes the cache again. A cache directory
 * that cannot be written costs nothing but the compiling.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Script } from 'node:vm';
import { nativeCacheDir } from '../runtime/native.ts';
import { writeDurable } from '../runtime/durable.ts';

declare const STARLING_BUNDLE_DIGEST: string;

interface Sea {
  getAsset(key: string, encoding: 'utf8'): string;
  getRawAsset(key: string): ArrayBuffer;
}

/** How long `run` works before its code is cached: its device and services are up well within this. */
const RUN_WARM_MS = 10_000;

const sea = process.getBuiltinModule('node:sea') as Sea;
// The bundle as Node's CommonJS loader wraps a module (image/build.mjs): the text the base cache was made from.
const source = sea.getAsset('starling.cjs', 'utf8');
const command = /^[a-z-]{1,20}$/.test(process.argv[2] ?? '') ? process.argv[2]! : 'none';

let file: string | undefined;
let cached: Buffer | undefined;
try {
  file = join(nativeCacheDir(), `code-${STARLING_BUNDLE_DIGEST.slice(0, 16)}-${command}.bin`);
  cached = readFileSync(file);
} catch {
  // no cache of this command's yet (or nowhere to keep one)
}
const own = cached !== undefined;
if (!own) {
  try {
    cached = Buffer.from(sea.getRawAsset('starling.cjs.cache'));
  } catch {
    // built without one
  }
}
const script = new Script(source, { filename: process.execPath, cachedData: cached });
// What this start compiled with, for `starling version` (app/cli/version.ts).
(globalThis as Record<symbol, unknown>)[Symbol.for('starling.codeCache')] =
  cached === undefined ? 'none' : `${own ? 'own' : 'base'}${script.cachedDataRejected ? ', refused' : ''}`;

if (file && (!own || script.cachedDataRejected)) {
  const path = file;
  let written = false;
  const save = () => {
    if (written) return;
    written = true;
    try {
      // On disk before it has its name: V8 checks a cache's length, not its bytes.
      writeDurable(path, script.createCachedData(), 0o600);
    } catch {
      // a full or read-only disk: the next start compiles again
    }
  };
  // `run` once it is up (not on a failed start's way out); any other command when it has done its work.
  if (command === 'run') setTimeout(save, RUN_WARM_MS).unref();
  else process.once('exit', (code) => code === 0 && save());
}

(script.runInThisContext() as (...args: unknown[]) => void)(module.exports, require, module, process.execPath, dirname(process.execPath));
