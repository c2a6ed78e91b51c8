/**
 * Memory back to the kernel: large message buffers early, and the free pages glibc keeps.
 *
 * Returning large message buffers early. A received ZeroMQ frame is an external buffer (zeromq.js hands over
 * libzmq's memory without a copy), which V8 frees only when it collects the Buffer — and it collects on its
 * own heap's pressure, not on external memory's until tens of MB have piled up. A transfer that receives a
 * 256 KiB chunk after another would so grow by about 40 MB before a collection. `releaseYoung()` runs a
 * young-generation collection (a scavenge: about a millisecond with a small young generation), which frees
 * chunks that are no longer referenced; call it every few MB received. A chunk still referenced at two of them
 * (a write in progress) is promoted to the old generation and waits for a full collection: `full` runs one
 * (a few ms on a node's small heap); call that every few tens of MB.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { loadOptionalNative } from './native.ts';

type Gc = (options?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;
let gc: Gc | undefined | null;

export function releaseYoung(full = false): void {
  if (gc === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      gc = runInNewContext('gc') as Gc;
      // Back as it was: the function is ours now, and V8's flags are part of what a code cache must match
      // (app/sea-main.ts writes one after start-up; made with the flag set, the next start would refuse it).
      setFlagsFromString('--no-expose-gc');
    } catch {
      gc = null; // not allowed here: V8 collects on its own schedule
    }
  }
  gc?.({ type: full ? 'major' : 'minor' });
}

/**
 * Every `intervalMs`, glibc's free pages back to the kernel (`malloc_trim(0)`, through the sd_notify addon;
 * about 1 ms here with a 100 MB process). glibc returns only the top of each heap by itself, so what a burst
 * allocated and freed below a live allocation — ten browsers loading the web view, a backlog the bridge
 * drained — otherwise stays in the RSS for the life of the process. Returns the function that stops it; does
 * nothing where the addon is not in the build (run from TypeScript) or glibc is not the C library.
 */
export function trimFreeMemory(intervalMs = TRIM_INTERVAL_MS, settleMs = SETTLE_MS): () => void {
  const addon = loadOptionalNative('sd_notify') as { trim?: () => boolean } | undefined;
  const trim = addon?.trim;
  if (!trim) return () => {};
  // Once, soon after start-up: a full collection, then a trim. What starting allocated and dropped (the
  // configuration's parse, the modules' evaluation, the first connections) otherwise stays until V8's heap
  // next fills, which an idle device may not do for hours; freed now, it goes back to the kernel at once.
  // The trim waits a second: V8 sweeps and releases the freed pages on helper threads after the collection.
  let settle = setTimeout(() => {
    releaseYoung(true);
    settle = setTimeout(() => trim(), 1000);
    settle.unref();
  }, settleMs);
  settle.unref();
  const timer = setInterval(() => trim(), intervalMs);
  timer.unref();
  return () => {
    clearTimeout(settle);
    clearInterval(timer);
  };
}

/** How long after {@link trimFreeMemory} starts its one full collection runs. */
export const SETTLE_MS = 2_000;

/** How often {@link trimFreeMemory} trims. */
export const TRIM_INTERVAL_MS = 10_000;

/**
 * Small buffers from an 8 KB pool, as before Node 24. `Buffer.allocUnsafe` and `Buffer.from` give a slice of a
 * shared pool to every buffer under half its size, and a slice still referenced keeps its whole pool: Node 24
 * made the pool 64 KB (8 KB before), so a long-lived 16-byte peer UUID or batch frame can hold 64 KB. Under
 * bench/soak.ts's load this keeps 2.6 MB less private memory at the same CPU (two devices side by side, 80 s).
 * Call before the first buffers are kept; the pool already made is used up first.
 */
export function smallBufferPool(size = SMALL_POOL_BYTES): void {
  if (Buffer.poolSize > size) Buffer.poolSize = size;
}

/** The pool {@link smallBufferPool} sets. */
export const SMALL_POOL_BYTES = 8 * 1024;
